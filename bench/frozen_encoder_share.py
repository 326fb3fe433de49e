"""How much of a training step the frozen codec encoder was: the share the atlas ledger stopped charging at every
step (docs/atlas.md, "The ledger").

For each preset at its own quick size, ``atlas.budget.measure_step_cost`` prices a training step with the frozen
encoder measured apart: the rest of the step's FLOPs, the encoder's FLOPs per image and the images a step encodes.
Counted FLOPs only (no timing), so the numbers do not depend on the machine. Results go to
``bench/results/frozen_encoder_share.json`` and ``.md``. Run ``python bench/frozen_encoder_share.py``.
"""

import argparse
import json
from pathlib import Path

from unimm.atlas.budget import measure_step_cost
from unimm.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PRESETS = ("chameleon", "quick")  # a VQ codec (every image read and generated encoded) and the demo's VAE
# the preset's own size, and the quick atlas's "tiny" size (configs/atlas/quick.toml [sizes])
SIZES = {"preset": [], "atlas tiny": ["model.dim=96", "model.depth=3", "model.heads=4"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="counted steps per preset (their mean is reported)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows = []
    for (size, sets), name in ((s, n) for s in SIZES.items() for n in PRESETS):
        cfg = load_config(ROOT / "configs" / f"{name}.toml", ["train.tensorboard=false", *sets])
        cost = measure_step_cost(cfg, steps=args.steps)
        images = cfg.train.batch_size  # a shared reader: the codec encodes every image of the batch
        encoder = cost.encoder_flops_per_input * images
        rows.append({"preset": name, "size": size, "codec": cfg.codec.kind, "rest_of_step_flops": cost.flops,
                     "encoder_flops_per_image": cost.encoder_flops_per_input, "images_per_step": images,
                     "encoder_share": encoder / (encoder + cost.flops)})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frozen_encoder_share.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = ["# The frozen codec encoder's share of a training step (counted FLOPs)", "",
          "| preset | size | codec | rest of step | encoder per image | images per step | encoder share |",
          "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    md += [f"| {r['preset']} | {r['size']} | {r['codec']} | {r['rest_of_step_flops']:.3g} | "
           f"{r['encoder_flops_per_image']:.3g} | {r['images_per_step']} | {r['encoder_share']:.1%} |"
           for r in rows]  # fmt: skip
    (args.out / "frozen_encoder_share.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
