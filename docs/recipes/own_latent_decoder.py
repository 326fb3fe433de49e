"""A latent run's VAE decoder finetuned on the latents its own transformer writes (docs/editing.md, eighteenth round).

    OMP_NUM_THREADS=1 python docs/recipes/own_latent_decoder.py RUN OUT [--n 1024] [--steps 600] \
        [--own-share 0.5] [--noise 0.5] [--pairs PAIRS.pt] [--sample edit_keep=0.1 ...]
    unimm eval OUT [--sample ...]

``tokenizer.decoder_noise`` teaches a decoder to draw clean shapes from latents that are off by Gaussian noise, a
guess at how a generator's latents are off. This script uses the generator's real errors. It edits the first ``n``
*training* edits of RUN's dataset as ``unimm eval`` edits (seed 0, the run's sampling settings and the overrides),
keeps the latent each edit hands to the decoder, and reads its objects back (``detect_objects``). An edit that shows
the true target's objects, each in its colour within 2 pixels of its place and no other, gives a pair (its latent,
the true target image), whatever shapes it drew; the others (an object missing, extra, recoloured or elsewhere,
including an add drawn at another free place than the target's, which the edit scorer accepts) are left out, since
their latents hold another scene and a decoder taught to draw the true one from them would learn to move objects.
``--only-right`` keeps only the edits scored right (edit and preservation, shapes included).
The decoder alone (the encoder, the latent space and the transformer stay as they are) then trains ``steps`` steps
of batch 64: ``own-share`` of each batch are own pairs, the rest the pairs' true targets' latents plus Gaussian
noise of s times the latent std, s ~ U(0, noise), as ``decoder_noise`` trains (``--own-share 0`` is the control: the
same steps, no own latents).
Adam, lr 5e-4 decayed linearly to 0. Validation and test edits are never used.

OUT is a copy of RUN with the new decoder (as ``swap_decoder.py`` writes it, no checkpoints, no evaluations) and
``decoder_from.json`` saying how it was made, with the decoder's MSE on the held-out tenth of the own pairs before
and after. ``--pairs`` keeps the sampled pairs in a file (reused when it exists, so the control costs no sampling).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from unimm.config import with_sampling
from unimm.data.edits import load_edits
from unimm.data.shapes import ShapeScene, detect_objects
from unimm.eval.editing import _to_pixels, _to_stored
from unimm.eval.edits import TOLERANCE, _offset, score_edits
from unimm.models import UnifiedModel

PREFIX = "writer.codec.vae."


def same_scene_but_shapes(image: np.ndarray, target: ShapeScene, tolerance: int = TOLERANCE) -> bool:
    """Whether a uint8 image shows ``target``'s objects, each in its colour within ``tolerance`` pixels of its place,
    and no other object; the shapes drawn are not compared."""
    found = detect_objects(image)
    if len(found) != len(target.objects):
        return False
    for want in target.objects:
        near = [o for o in found if o.colour == want.colour and _offset(o, want) <= tolerance]
        if not near:
            return False
        found.remove(near[0])
    return True


@torch.no_grad()
def own_pairs(model: UnifiedModel, n: int, batch: int = 50) -> dict:
    """Edit the first ``n`` training edits; return the latents handed to the decoder, the true targets and the
    edits' scores."""
    vae = model.writer.codec.vae
    edits = load_edits(model.cfg.data.path, "train")[:n]
    sources = _to_pixels(np.stack([e.source for e in edits]), model)
    targets = _to_pixels(np.stack([e.target for e in edits]), model)
    seen: list[torch.Tensor] = []
    decode = vae.decode
    vae.decode = lambda z: (seen.append(z.detach().clone()), decode(z))[1]  # record what the decoder is given
    gen, latents, images = torch.Generator().manual_seed(0), [], []
    try:
        for i in range(0, len(edits), batch):
            seen.clear()
            part = [e.edit.instruction for e in edits[i : i + batch]]
            images.append(model.edit(sources[i : i + batch], part, generator=gen).cpu())
            if not seen or len(seen[-1]) != len(part):
                raise RuntimeError("the edit did not end in one decoder call for its batch; cannot pair latents")
            latents.append(seen[-1])
            print(f"edited {i + len(part)}/{len(edits)}", flush=True)
    finally:
        vae.decode = decode
    scores = score_edits(list(_to_stored(torch.cat(images), edits[0].target.shape[0])), [e.edit for e in edits])
    return {
        "latents": torch.cat(latents),
        "targets": targets,
        "edit": scores["edit"]["rate"],
        "preservation": scores["preservation"]["rate"],
    }


@torch.no_grad()
def usable(model: UnifiedModel, latents: torch.Tensor, only_right: bool = False) -> torch.Tensor:
    """Which of the first ``len(latents)`` training edits' latents, decoded by the run's decoder (the images its
    edits gave), show their true target scene but for shapes (``same_scene_but_shapes``); with ``only_right`` also
    scored right in edit and preservation (``score_edits``), shapes included."""
    edits = load_edits(model.cfg.data.path, "train")[: len(latents)]
    images = torch.cat([model.writer.codec.vae.decode(latents[i : i + 256]) for i in range(0, len(latents), 256)])
    stored = _to_stored(images.clamp(-1, 1), edits[0].target.shape[0])
    ok = [same_scene_but_shapes(im, e.edit.target) for im, e in zip(stored, edits, strict=True)]
    if only_right:
        scores = score_edits(list(stored), [e.edit for e in edits])["results"]
        ok = [o and r["edit"] and r["preservation"] for o, r in zip(ok, scores, strict=True)]
    return torch.tensor(ok)


def finetune(vae, z_own, x_own, steps: int, own_share: float, noise: float, seed: int = 0) -> None:
    """Train ``vae.decoder`` in place (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z_true = vae.encode(x_own)[0]
    std = z_true.std()
    decoder = vae.decoder.train().requires_grad_(True)
    opt = torch.optim.Adam(decoder.parameters(), lr=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    n_own = round(64 * own_share)
    for step in range(steps):
        i = torch.randint(len(z_own), (n_own,), generator=gen)
        j = torch.randint(len(z_true), (64 - n_own,), generator=gen)
        s = torch.rand(len(j), 1, 1, 1, generator=gen) * noise * std
        z = torch.cat([z_own[i], z_true[j] + s * torch.randn(z_true[j].shape, generator=gen)])
        loss = F.mse_loss(decoder(z), torch.cat([x_own[i], x_own[j]]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} mse {loss.item():.5f}", flush=True)
    decoder.eval().requires_grad_(False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=1024, help="training edits to sample")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--own-share", type=float, default=0.5, help="share of each batch that is own pairs (0: control)")
    p.add_argument("--noise", type=float, default=0.5, help="the noised true latents' noise, times the latent std")
    p.add_argument("--only-right", action="store_true", help="pair only the edits scored right, shapes included")
    p.add_argument("--pairs", default=None, help="file keeping the sampled pairs (reused when it exists)")
    p.add_argument("--sample", action="append", default=[], help="KEY=VALUE sampling overrides, as unimm eval's")
    args = p.parse_args()
    run, out = Path(args.run), Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; choose a new directory")
    if not 0 <= args.own_share <= 1:
        raise SystemExit(f"--own-share {args.own_share}: expected a share in [0, 1]")
    model = UnifiedModel.from_pretrained(run).eval()
    if getattr(getattr(model.writer, "codec", None), "vae", None) is None:
        raise SystemExit(f"{run}: its writer has no VAE codec (codec.kind = 'vae'); nothing to finetune")
    with_sampling(model.cfg, args.sample)
    t0 = time.perf_counter()
    if args.pairs and Path(args.pairs).exists():
        pairs = torch.load(args.pairs)
        if pairs["run"] != str(run) or pairs["n"] != args.n or pairs["sample"] != args.sample:
            raise SystemExit(f"{args.pairs} holds pairs of {pairs['run']} (n {pairs['n']}, {pairs['sample']})")
    else:
        pairs = {**own_pairs(model, args.n), "run": str(run), "n": args.n, "sample": args.sample}
        if args.pairs:
            torch.save(pairs, args.pairs)
    sampled = time.perf_counter() - t0
    keep = usable(model, pairs["latents"], args.only_right).nonzero().squeeze(1)
    if len(keep) < 2:
        raise SystemExit(f"{len(keep)} of {len(pairs['latents'])} sampled edits are usable pairs; sample more (--n)")
    held = keep[::10]  # every tenth usable pair is held out to measure the decoder on
    train = keep[~torch.isin(keep, held)]
    z, x = pairs["latents"], pairs["targets"]
    vae = model.writer.codec.vae

    def held_mse() -> float:
        with torch.no_grad():
            return float(F.mse_loss(vae.decoder(z[held]), x[held]))

    before = held_mse()
    t1 = time.perf_counter()
    finetune(vae, z[train], x[train], args.steps, args.own_share, args.noise)
    trained = time.perf_counter() - t1
    after = held_mse()
    print(f"{len(keep)} of {len(z)} edits usable; held-out own-latent MSE {before:.5f} -> {after:.5f}")

    weights = load_file(run / "model.safetensors")
    new = {PREFIX + "decoder." + k: v.contiguous() for k, v in vae.decoder.state_dict().items()}
    if any(k not in weights for k in new):
        raise SystemExit(f"{run}'s weights do not hold its decoder under {PREFIX}decoder.*")
    weights.update(new)
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoints", "eval*", "model.safetensors"))
    save_file(weights, out / "model.safetensors")
    made = {
        "run": str(run),
        "decoder": "finetuned on the run's own latents (docs/recipes/own_latent_decoder.py)",
        "settings": {k: getattr(args, k) for k in ("n", "steps", "own_share", "noise", "only_right", "sample")},
        "training_edits_sampled": len(z),
        "pairs_used": len(train),
        "pairs_held_out": len(held),
        "sampled_edit_rate": pairs["edit"],
        "sampled_preservation_rate": pairs["preservation"],
        "held_out_own_latent_mse": {"before": before, "after": after},
        "wall_s": {"sampling": round(sampled, 1), "training": round(trained, 1)},
    }
    (out / "decoder_from.json").write_text(json.dumps(made, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
