"""The result tables of README.md and docs/strategies/README.md, generated from the committed reports.

A table sits between the lines ``<!-- reports:NAME -->`` and ``<!-- /reports:NAME -->``; ``rewrite_tables`` replaces
what is between them with ``TABLES[NAME]`` rendered from ``docs/**/report.json`` and ``eval/eval.json``, and
``stale_tables`` names every block that differs from its rendering (a number edited by hand, or a report
committed without its tables). Only results that carry a ``provenance`` block (written by ``unimm demo`` /
``unimm eval`` since ``make reports`` exists) are read; an older file's format differs, so its row says it
has not been regenerated and links to it instead.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unimm.checkpoint import atomic_write_text
from unimm.document import markdown_table
from unimm.reports.bench_tables import decode_table, sampling_table
from unimm.reports.targets import DEMO_SEEDS, STRATEGIES, TARGETS, Target

PAGES = ("README.md", "docs/strategies/README.md")
NOT_YET = "not regenerated yet (produced before `make reports`)"
# a marker is a line of its own (so that prose can quote one in backticks)
_OPEN = re.compile(r"^<!-- reports:([\w-]+) -->$", re.M)
_BLOCK = re.compile(r"^(<!-- reports:(?P<name>[\w-]+) -->\n)(?P<body>.*?)^(<!-- /reports:(?P=name) -->)$", re.S | re.M)


def published(path: Path, needs: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The result at ``path`` when it has a provenance block (and the keys ``needs``); None otherwise."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if all(k in result for k in ("provenance", *needs)) else None


def _report(root: Path, t: Target) -> dict[str, Any] | None:
    return published(root / t.docs / "report.json", ("eval",))


def _link(root: Path, page_dir: Path, t: Target, name: str = "report.md") -> str:
    return Path(os.path.relpath(root / t.docs / name, root / page_dir)).as_posix()


def _pct(x: float | None, space: str = " ") -> str:
    return "–" if x is None else f"{100 * x:.1f}{space}%"


def _num(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def _commit(p: dict[str, Any]) -> str:
    return f"`{p['commit'][:7]}`" + (" + local changes" if p["dirty"] else "")


def demo_table(root: Path, page_dir: Path) -> list[str]:
    """The demo's headline numbers: understanding and generation on the whole test split, training, origin."""
    t = TARGETS[0]
    r = _report(root, t)
    if r is None:
        return markdown_table(["what", "result"], [[f"`{t.name}`", f"{NOT_YET}: [report]({_link(root, page_dir, t)})"]])
    e, tr, p = r["eval"], r["training"], r["provenance"]
    u, g = e["understanding"], e["generation"]
    caption, vqa, gen = u["caption_accuracy"], u["vqa_accuracy"], g["prompt_accuracy"]
    rows = [
        [f"caption names the right class, {u['n']:,} held-out test images",
         f"**{_pct(caption)}** ({round(caption * u['n'])} / {u['n']})"],
        [f'VQA "{u["vqa_question"]}", same images', f"**{_pct(vqa)}** ({round(vqa * u['vqa_n'])} / {u['vqa_n']})"],
        [f"generated images recognised as the prompted class, {e['suite']['per_class']} per class",
         f"**{_pct(gen)}** ({round(gen * g['prompt_accuracy_n'])} / {g['prompt_accuracy_n']}), by a CNN trained on "
         f"real images ({_pct(e['evaluators']['classifier_test_accuracy'])} on real test images)"],
        ["training", f"{tr['steps']:,} steps in {_minutes(p['wall_s']['train'])} "
         f"(about {_num(tr['tokens_per_s'], ',.0f')} tokens/s), final loss {_num(tr['final_loss'], '.3f')}"],
        ["produced", f"commit {_commit(p)}, {p['date'][:10]}, {_minutes(p['wall_s']['this_call'])} for "
         f"`unimm demo` ([report]({_link(root, page_dir, t)}))"],
    ]  # fmt: skip
    return markdown_table(["what", "result"], rows, "lr")


def _seed(t: Target) -> int:
    return next((int(o.split("=", 1)[1]) for o in t.overrides if o.startswith("train.seed=")), 0)


def seeds_table(root: Path, page_dir: Path) -> list[str]:
    """The demo rerun with training seeds 0, 1, 2: its accuracies, its time (training incl. the VAE fit, plus
    evaluation) and origin, then mean ± s.d. (sample) over the seeds published."""
    rows, values = [], []
    for t in DEMO_SEEDS:
        r, link = _report(root, t), _link(root, page_dir, t)
        if r is None:
            rows.append([str(_seed(t)), *["–"] * 4, f"{NOT_YET}: [report]({link})"])
            continue
        u, g, p = r["eval"]["understanding"], r["eval"]["generation"], r["provenance"]
        wall = p["wall_s"]["train"] + p["wall_s"]["evaluate"]
        values.append((u["caption_accuracy"], u["vqa_accuracy"], g["prompt_accuracy"], wall))
        rows.append([str(_seed(t)), _pct(u["caption_accuracy"]), _pct(u["vqa_accuracy"]), _pct(g["prompt_accuracy"]),
                     _minutes(wall), f"[report]({link}), commit {_commit(p)}"])  # fmt: skip
    if len(values) > 1:
        cols = list(zip(*values, strict=True))

        def spread(xs: tuple[float, ...], scale: float, unit: str) -> str:
            return f"{scale * statistics.mean(xs):.1f} ± {scale * statistics.stdev(xs):.1f}{unit}"

        rows.append([f"mean ± s.d. ({len(values)} seeds)", *(f"**{spread(c, 100, ' %')}**" for c in cols[:3]),
                     spread(cols[3], 1 / 60, " min"), ""])  # fmt: skip
    header = ["train.seed", "caption", "VQA", "generated", "train + evaluate", "report"]
    return markdown_table(header, rows, "lrrrrl")


def strategies_table(root: Path, page_dir: Path) -> list[str]:
    """One row per strategy preset: its quick-size run's steps, training time and demo-suite accuracies."""
    rows = []
    for t in STRATEGIES:
        r, link = _report(root, t), _link(root, page_dir, t)
        if r is None:
            rows.append([f"`{t.name}`", t.about, *["–"] * 5, f"{NOT_YET}: [report]({link})"])
            continue
        u, g, p = r["eval"]["understanding"], r["eval"]["generation"], r["provenance"]
        rows.append([
            f"`{t.name}`", t.about, f"{r['training']['steps']:,}", _minutes(p["wall_s"]["train"]),
            f"**{_pct(u['caption_accuracy'])}**", _pct(u["vqa_accuracy"]), f"**{_pct(g['prompt_accuracy'])}**",
            f"[report]({link}), commit {_commit(p)}",
        ])  # fmt: skip
    header = ["preset", "how it reads / writes images", "steps", "train time", "caption", "VQA", "generated", "report"]
    return markdown_table(header, rows, "llrrrrrl")


def _params(c: dict[str, Any]) -> str:
    total, active = c["params"]["total"], c["params"]["active"]
    return f"{total / 1e6:.2f} M" + (f" ({active / 1e6:.2f} M)" if active != total else "")


def eval_table(root: Path, page_dir: Path) -> list[str]:
    """Every target's ``unimm eval --suite quick`` result: understanding, generation, speed and size."""
    header = ["run", "caption", "VQA", "BLEU-4", "CIDEr", "prompt acc.", "FID", "KID", "precision", "recall",
              "CLIP score", "captions/s", "images/s", "image latency s", "params (active)", "produced"]  # fmt: skip
    rows = []
    for t in (t for t in TARGETS if t.evaluate):
        e = published(root / t.docs / "eval" / "eval.json")
        link = _link(root, page_dir, t, "eval/eval.md")
        if e is None:
            rows.append([f"`{t.name}`", *["–"] * 14, f"{NOT_YET}: [eval]({link})"])
            continue
        u, g = e["understanding"], e["generation"]
        rows.append([
            f"`{t.name}`", _pct(u.get("caption_accuracy"), ""), _pct(u.get("vqa_accuracy"), ""),
            _num(u.get("caption_bleu_4"), ".3f"), _num(u.get("caption_cider"), ".2f"),
            _pct(g.get("prompt_accuracy"), ""), _num(g.get("fid"), ".1f"), _num(g.get("kid_mean"), ".3f"),
            _num(g.get("precision"), ".2f"), _num(g.get("recall"), ".2f"), _num(g.get("clip_score"), ".1f"),
            _num(u["samples_per_s"], ".0f"), _num(g["samples_per_s"], ".1f"), _num(g["latency_s"], ".2f"),
            _params(e["cost"]), f"[eval]({link}), commit {_commit(e['provenance'])}",
        ])  # fmt: skip
    return markdown_table(header, rows, "l" + "r" * 14 + "l")


TABLES: dict[str, Callable[[Path, Path], list[str]]] = {
    "demo": demo_table,
    "demo-seeds": seeds_table,
    "strategies": strategies_table,
    "eval": eval_table,
    "decode": decode_table,
    "sampling": sampling_table,
}


def _blocks(text: str, page: str) -> list[re.Match]:
    """The marker blocks of a page; an unknown table or an unclosed marker is an error."""
    blocks = list(_BLOCK.finditer(text))
    unclosed = set(_OPEN.findall(text)) - {m["name"] for m in blocks}
    unknown = {m["name"] for m in blocks} - set(TABLES)
    if unclosed or unknown:
        bad = ", ".join(f"reports:{n}" for n in sorted(unclosed | unknown))
        raise ValueError(f"{page}: {bad} is {'not closed' if unclosed else 'no table'} (tables: {', '.join(TABLES)})")
    return blocks


def _body(name: str, root: Path, page: str) -> str:
    # the blank line ends the table: GitHub would read the closing marker line as one more row
    return "\n".join(TABLES[name](root, Path(page).parent)) + "\n\n"


def render_page(root: Path, page: str) -> str:
    """``page`` (relative to ``root``) with every marker block re-rendered from the committed reports."""
    text = (root / page).read_text()
    _blocks(text, page)
    return _BLOCK.sub(lambda m: m[1] + _body(m["name"], root, page) + m[4], text)


def stale_tables(root: Path) -> list[str]:
    """``PAGE: reports:NAME`` for every block whose text differs from its rendering."""
    stale = []
    for page in PAGES:
        if not (root / page).is_file():
            continue
        text = (root / page).read_text()
        for m in _blocks(text, page):
            if m["body"] != _body(m["name"], root, page):
                stale.append(f"{page}: reports:{m['name']}")
    return stale


def rewrite_tables(root: Path) -> list[str]:
    """Re-render every marker block of ``PAGES``; returns the pages that changed."""
    changed = []
    for page in PAGES:
        if (root / page).is_file():
            text = render_page(root, page)
            if text != (root / page).read_text():
                atomic_write_text(root / page, text)
                changed.append(page)
    return changed
