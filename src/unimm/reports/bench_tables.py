"""README's speed tables, generated from the committed benchmark results (``bench/results/*.json``).

Registered in :data:`unimm.reports.tables.TABLES` beside the result tables, so the same check fails when a
speed number in the README differs from the JSON that ``make bench`` (or ``bench/sampling.py --device cuda`` on a
lent GPU) wrote. A missing file renders as a row that says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unimm.document import markdown_table

RESULTS = Path("bench") / "results"
DECODE_SYSTEMS = (("unimm", "eager loop, growing KV cache", "speed_ratio"),
                  ("unimm-compiled", "`StaticDecoder`, compiled step", "compiled_speed_ratio"))  # fmt: skip


def _load(root: Path, name: str) -> dict[str, Any] | None:
    path = root / RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def decode_table(root: Path, page_dir: Path) -> list[str]:
    """Greedy decoding tokens/s per batch: unimm's two decoders against transformers' ``generate``."""
    header = ["batch", *(title for _, title, _ in DECODE_SYSTEMS), "transformers `generate`", "same tokens"]
    d = _load(root, "decode.json")
    if d is None:
        return markdown_table(header, [["–", "–", "–", "–", "no bench/results/decode.json"]], "rrrrl")
    rows = []
    for r in d["table"]:
        cells = [f"{r[key]['new_tokens_per_s']:,.0f} tokens/s ({r[ratio]:.2f}×)" for key, _, ratio in DECODE_SYSTEMS]
        same = "yes" if r["tokens_match"] and r["compiled_tokens_match"] else "**no**"
        rows.append([str(r["batch"]), *cells, f"{r['transformers']['new_tokens_per_s']:,.0f} tokens/s", same])
    return markdown_table(header, rows, "rrrrl")


def sampling_table(root: Path, page_dir: Path) -> list[str]:
    """Per preset: images/s and wall time over transformer time at batch 1 and 32, on this CPU and a lent GPU."""
    cpu, gpu = _load(root, "sampling.json"), _load(root, "sampling_gpu.json")
    b1, bn = (str(b) for b in ((cpu or gpu or {}).get("batches") or [1, 32])[:2])
    header = ["preset", "writer", "steps", f"CPU images/s b{b1} / b{bn}", f"CPU total / transformer b{b1} / b{bn}",
              f"GPU images/s b{b1} / b{bn}", f"GPU total / transformer b{b1} / b{bn}"]  # fmt: skip
    presets = list(dict.fromkeys([*(cpu or {}).get("presets", {}), *(gpu or {}).get("presets", {})]))

    def cells(result: dict[str, Any] | None, name: str) -> list[str]:
        p = (result or {}).get("presets", {}).get(name)
        if p is None:
            return ["–", "–"]
        r1, rn = p["batches"][b1], p["batches"][bn]
        return [f"{r1['images_per_s']:.1f} / {rn['images_per_s']:.1f}",
                f"{r1['over_transformer']:.2f}× / {rn['over_transformer']:.2f}×"]  # fmt: skip

    rows = []
    for name in presets:
        p = (cpu or {}).get("presets", {}).get(name) or (gpu or {}).get("presets", {})[name]
        rows.append([f"`{name}`", p["writer"], str(p["steps"]), *cells(cpu, name), *cells(gpu, name)])
    if not rows:
        rows.append(["–", "–", "–", "–", "–", "–", "no bench/results/sampling*.json"])
    return markdown_table(header, rows, "llrrrrr")
