"""How well a run's grounding head finds the cells an edit changes (docs/editing.md, thirteenth round).

    OMP_NUM_THREADS=1 python docs/recipes/grounding_probe.py RUN [--split val|test] [--n 500]

For a run trained with ``model.edit_grounding``: each of the first ``n`` edits of the split is laid out as sampling
lays it out (instruction, source read, target left empty), one backbone pass, and the grounding head's verdict at
every source cell (``ctx.source_changes`` > 0.5: "the edit changes this cell") is compared with the truth
(``tasks.changed_cells`` of the stored source and target, with an add's blank cells counted as changed for a run
trained with ``model.edit_grounding_open``: what its head was taught). Prints per edit kind: the share of cells
the edit changes (the truth's base rate), the share of cells right, the intersection over union of the changed
cells, and the share of edits with every cell right. This measures what the source's read positions know about
which object the instruction names; sampling uses the head only with ``sample.edit_keep``.
"""

from __future__ import annotations

import argparse
import collections

import torch

from unimm.data.edits import OPEN_PLACE_KINDS, load_edits
from unimm.eval.editing import _to_pixels
from unimm.models import UnifiedModel
from unimm.tasks import ImagePrompt, changed_cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--n", type=int, default=500)
    args = p.parse_args()
    model = UnifiedModel.from_pretrained(args.run).eval()
    if model.grounding is None:
        raise SystemExit(f"{args.run} was trained without model.edit_grounding: it has no grounding head")
    edits = load_edits(model.cfg.data.path, args.split)[: args.n]
    sources = _to_pixels(torch.stack([torch.from_numpy(e.source) for e in edits]).numpy(), model)
    targets = _to_pixels(torch.stack([torch.from_numpy(e.target) for e in edits]).numpy(), model)
    grid = model.layout.read_grid
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for start in range(0, len(edits), 50):
        chunk = edits[start : start + 50]
        prompts = [ImagePrompt(e.edit.instruction, source=src) for e, src in zip(chunk, sources[start:], strict=False)]
        said = model.ctx.source_changes(prompts) > 0.5
        for i, loaded in enumerate(chunk):
            open_place = model.layout.ground_open and loaded.edit.kind in OPEN_PLACE_KINDS
            truth = changed_cells(sources[start + i], targets[start + i], grid, open_place).bool()
            guess = said[i]
            for kind in (loaded.edit.kind, "all"):
                s = stats[kind]
                s["edits"] += 1
                s["cells"] += truth.numel()
                s["changed"] += int(truth.sum())
                s["right"] += int((guess == truth).sum())
                s["both"] += int((guess & truth).sum())
                s["either"] += int((guess | truth).sum())
                s["exact"] += int(torch.equal(guess, truth))
    print(f"{args.run}: the grounding head on the first {len(edits)} {args.split} edits\n")
    print("| edit kind | edits | cells changed | cells right | IoU of changed cells | every cell right |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in [k for k in stats if k != "all"] + ["all"]:
        s = stats[kind]
        shares = (
            s["changed"] / s["cells"],
            s["right"] / s["cells"],
            s["both"] / max(s["either"], 1),
            s["exact"] / s["edits"],
        )
        print(f"| {kind} | {s['edits']} | " + " | ".join(f"{100 * x:.1f} %" for x in shares) + " |")


if __name__ == "__main__":
    main()
