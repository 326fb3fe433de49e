"""Caption accuracy of a trained run on its first 1,000 training images and on its first 1,000 test images:
under-fitting (both low) or over-fitting (training far above test)?

    python docs/recipes/train_vs_test_captions.py RUN_DIR
"""

import sys

import torch

from unimm.data import load_split, templates_for
from unimm.models import UnifiedModel

model = UnifiedModel.from_pretrained(sys.argv[1]).eval()
cfg = model.cfg.data
for split in ("train", "test"):
    data = load_split(cfg.path, split, cfg.image_size, cfg.channels)
    templates, n = templates_for(data), min(1000, len(data))
    with torch.no_grad():
        captions = [c for i in range(0, n, 100) for c in model.caption(data.images[i : min(n, i + 100)])]
    right = sum(templates.parse(c) == y for c, y in zip(captions, data.labels[:n].tolist(), strict=True))
    print(f"{split}: caption accuracy {right / n:.3f} ({right} / {n})")
