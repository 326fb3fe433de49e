"""A copy of a latent run with its VAE decoder replaced by another tokenizer's (docs/editing.md, seventeenth round).

    python docs/recipes/swap_decoder.py RUN TOKENIZER OUT
    unimm eval OUT [--sample ...]

TOKENIZER is a ``unimm tokenizer train`` directory, or another latent run (its codec's decoder, e.g. one that
``own_latent_decoder.py`` finetuned).

The transformer of a latent run (transfusion layout, ``codec.kind = "vae"``) writes latents; its codec's decoder turns
them into pixels. A decoder trained further with ``tokenizer.train_decoder_only`` (and ``tokenizer.decoder_noise``)
from the run's own tokenizer reads the same latent space, since its encoder is the same; this script checks that (every
encoder weight equal, else it refuses) and writes OUT: the run's files but for ``model.safetensors``, whose
``writer.codec.vae.decoder.*`` come from TOKENIZER, and ``decoder_from.json`` saying so. Checkpoints are not copied.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "writer.codec.vae."


def main(run: str, tokenizer: str, out: str) -> None:
    src, tok, dst = Path(run), Path(tokenizer), Path(out)
    if dst.exists():
        raise SystemExit(f"{dst} exists; choose a new directory")
    weights = load_file(src / "model.safetensors")
    if (tok / "tokenizer.safetensors").exists():
        new = load_file(tok / "tokenizer.safetensors")
    else:  # another run: its codec's VAE
        new = {k[len(PREFIX) :]: v for k, v in load_file(tok / "model.safetensors").items() if k.startswith(PREFIX)}
    encoder = [k for k in new if k.startswith("encoder.")]
    if not encoder or any(PREFIX + k not in weights for k in new):
        raise SystemExit(f"{tok} does not fit {src}'s codec (keys differ): is the run's codec a VAE of this shape?")
    changed = [k for k in encoder if not torch.equal(weights[PREFIX + k], new[k])]
    if changed:
        raise SystemExit(f"{tok}'s encoder differs from {src}'s ({len(changed)} tensors): another latent space")
    for k, v in new.items():
        if k.startswith("decoder."):
            weights[PREFIX + k] = v
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "eval*", "model.safetensors"))
    save_file(weights, dst / "model.safetensors")
    (dst / "decoder_from.json").write_text(json.dumps({"run": str(src), "decoder": str(tok)}, indent=1) + "\n")
    print(f"wrote {dst}: {src} with the decoder of {tok}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
