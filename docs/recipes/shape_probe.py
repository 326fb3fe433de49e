"""Why edited objects are read as the wrong shape (docs/editing.md, sixteenth round).

    OMP_NUM_THREADS=1 python docs/recipes/shape_probe.py RUN [--split val|test] [--n 200] [--sample KEY=VALUE ...]
    OMP_NUM_THREADS=1 python docs/recipes/shape_probe.py RUN --latent-noise 0,0.1,0.2,0.3,0.5 [--n 300]

``detect_objects`` gives each pixel the nearest palette colour within a distance of 60 (else the background), and
calls a region of one colour a square when it fills more than 90 % of its box, a circle above 65 %. A drawn square
can fail that in two ways: its outline is off (rounded corners, a bulge), or its inside is speckled, pixels of it
read as the background or another colour, leaving holes. This script edits the first ``n`` edits of the split as
``unimm eval`` does (seed 0, the run's sampling settings and the overrides), reads every object back, and for each
detected object whose shape differs from the true target object of its colour at its place, measures its fill as
detected and with its holes filled (``scipy.ndimage.binary_fill_holes``). A misread that is right once its holes are
filled came from speckle inside the object, the rest from its outline. The codec's own reconstructions of the true
targets (what the ceiling scores) are probed the same way, for comparison. ``--latent-noise`` instead decodes the true
targets' latents plus Gaussian noise of each given multiple of the latents' standard deviation (one draw, seed 1),
no model sampling: how far off a latent may be before the codec's decoder misdraws the shapes.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from scipy import ndimage

from unimm.config import with_sampling
from unimm.data.edits import load_edits
from unimm.data.shapes import COLOURS, palette_indices
from unimm.data.shapes import shape_of_fill as shape_of
from unimm.eval.editing import _to_pixels, _to_stored
from unimm.models import UnifiedModel


def regions(image: np.ndarray) -> list[dict]:
    """Each region of one palette colour (as ``detect_objects`` labels them): colour, centre, box, fill as read and
    with holes filled, and the share of its box's pixels that read as the background or another colour."""
    nearest = palette_indices(image)  # as detect_objects reads it
    out = []
    for index, colour in enumerate(COLOURS, start=1):
        labels, count = ndimage.label(nearest == index)
        for region in range(1, count + 1):
            mask = labels == region
            ys, xs = np.nonzero(mask)
            if len(xs) < 4:
                continue
            box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            area = mask[box].size
            filled = ndimage.binary_fill_holes(mask[box])
            out.append(
                {
                    "colour": colour,
                    "centre": ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2),
                    "fill": len(xs) / area,
                    "filled": float(filled.sum()) / area,
                    "off": float((~mask[box]).sum()) / area,
                }
            )
    return out


def probe(images: np.ndarray, targets: list, tally: collections.Counter, fills: dict[str, list[float]]) -> None:
    for image, scene in zip(images, targets, strict=True):
        for r in regions(image):
            truth = [o for o in scene.objects if o.colour == r["colour"]]
            near = [o for o in truth if max(abs(o.centre[0] - r["centre"][0]), abs(o.centre[1] - r["centre"][1])) <= 3]
            if not near:
                continue
            want = near[0].shape
            tally[f"{want} objects read"] += 1
            read = shape_of(r["fill"])
            if read == want:
                continue
            tally[f"{want} read as {read}"] += 1
            fills.setdefault(want, []).append(r["fill"])
            tally[
                f"{want} misread, right with holes filled"
                if shape_of(r["filled"]) == want
                else f"{want} misread, outline"
            ] += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--sample", action="append", default=[])
    p.add_argument("--latent-noise", default=None, help="comma-separated multiples of the latent std")
    args = p.parse_args()
    model = UnifiedModel.from_pretrained(args.run).eval()
    with_sampling(model.cfg, args.sample)
    edits = load_edits(model.cfg.data.path, args.split)[: args.n]
    size = edits[0].target.shape[0]
    sources = _to_pixels(np.stack([e.source for e in edits]), model)
    targets = _to_pixels(np.stack([e.target for e in edits]), model)
    scenes = [e.edit.target for e in edits]
    if args.latent_noise is not None:
        codec = model.writer.codec
        with torch.no_grad():
            z = codec.encode(targets)
            print(f"{args.run}: the true targets' latents plus noise, first {len(edits)} {args.split} edits\n")
            print("| noise (x latent std) | circles misread | squares misread | triangles misread |")
            print("|---:|---:|---:|---:|")
            for sigma in (float(v) for v in args.latent_noise.split(",")):
                noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
                images = codec.decode(z + sigma * z.std() * noise).clamp(-1, 1)
                tally: collections.Counter = collections.Counter()
                probe(_to_stored(images, size), scenes, tally, {})
                cells = [
                    f"{sum(tally[f'{s} read as {o}'] for o in ('circle', 'square', 'triangle'))} / "
                    f"{tally[f'{s} objects read']}"
                    for s in ("circle", "square", "triangle")
                ]
                print(f"| {sigma:g} | " + " | ".join(cells) + " |")
        return
    gen = torch.Generator().manual_seed(0)
    chunks = []
    with torch.no_grad():
        for i in range(0, len(edits), 50):
            chunks.append(
                model.edit(sources[i : i + 50], [e.edit.instruction for e in edits[i : i + 50]], generator=gen)
            )
        codec = getattr(model.writer, "codec", None)
        recon = codec.decode(codec.encode(targets)).clamp(-1, 1) if codec is not None else None
    for name, images in (("edited", torch.cat(chunks)), ("codec round trip of the true targets", recon)):
        if images is None:
            continue
        tally: collections.Counter = collections.Counter()
        fills: dict[str, list[float]] = {}
        probe(_to_stored(images.cpu(), size), scenes, tally, fills)
        print(f"\n{args.run}, {name}, first {len(edits)} {args.split} edits:\n")
        print(
            "| shape | objects read | misread | as circle | as square | as triangle | right with holes filled "
            "| outline | misread fills (median, range) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for shape in ("circle", "square", "triangle"):
            n = tally[f"{shape} objects read"]
            wrong = sum(tally[f"{shape} read as {s}"] for s in ("circle", "square", "triangle"))
            cells = [tally[f"{shape} read as {s}"] if s != shape else "" for s in ("circle", "square", "triangle")]
            print(
                f"| {shape} | {n} | {wrong} | " + " | ".join(map(str, cells)) + f" | "
                f"{tally[f'{shape} misread, right with holes filled']} | {tally[f'{shape} misread, outline']} | "
                + (
                    f"{np.median(fills[shape]):.2f} ({min(fills[shape]):.2f}-{max(fills[shape]):.2f})"
                    if shape in fills
                    else ""
                )
                + " |"
            )


if __name__ == "__main__":
    main()
