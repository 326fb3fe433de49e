"""The per-frame prompt accuracy a video run's codec allows: the eval's frame classifier (the one `unimm eval`
trains and caches) on the first 200 test clips as they are and as the run's frozen codec encodes and decodes them.
A generated frame is a decoded latent, so the reconstruction figure caps the generated per-frame accuracy.

    python docs/recipes/video_codec_ceiling.py RUN_DIR

A run of `unimm train ... --set train.steps=1` fits the codec alone (its first step is all the rest costs).
"""

import sys

import torch

from unimm.data import load_split
from unimm.data.clips import frames_of
from unimm.eval.cache import default_cache
from unimm.eval.classifier import load_or_train_classifier
from unimm.eval.suites import suite_by_name
from unimm.models import UnifiedModel

model = UnifiedModel.from_pretrained(sys.argv[1]).eval()
cfg = model.cfg.data
test = load_split(cfg.path, "test", cfg.image_size, cfg.channels)
steps = suite_by_name("quick").classifier_steps
cache = default_cache() / "classifiers"
clf, _ = load_or_train_classifier(cfg.path, "train", cfg.image_size, cfg.channels, cache, steps=steps)
codec = model.writer.codec
clips = test.images[:200]
with torch.no_grad():
    decoded = codec.decode(codec.encode(clips))
n, frames = clips.shape[:2]
labels = test.labels[:n][:, None].expand(n, frames).flatten()
for name, c in (("real test frames", clips), ("the same through the codec", decoded)):
    right = (clf.predict(frames_of(c)) == labels).float().mean()
    print(f"{name}: per-frame accuracy {float(right):.3f} ({n} clips x {frames} frames)")
