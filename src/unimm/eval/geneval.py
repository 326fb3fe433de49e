"""GenEval-style prompt following on the shapes data, computed exactly from the rendering rules.

A shapes prompt names one object ("a red circle"), two identical ones ("two green squares") or two in
a relation ("a red circle left of a blue square"). ``detect_objects`` reads the objects back from the
generated pixels and each check asks one question of GenEval (Ghosh et al. 2023):
- ``object``: every named (colour, shape) is there (as a multiset);
- ``count``: exactly as many objects as named;
- ``colour``: every named colour is there, whatever the shapes;
- ``position``: for relation prompts, a detected pair with the named objects stands in the relation
  (``relation_holds``, the rule the data was drawn with); not applicable otherwise;
- ``overall``: every applicable check passes.
"""

from __future__ import annotations

from collections import Counter
from itertools import permutations
from typing import Any

import numpy as np
import torch

from unimm.data.shapes import detect_objects, parse_caption, relation_holds

CHECKS = ("object", "count", "colour", "position", "overall")


def _contains(found: Counter, wanted: Counter) -> bool:
    return all(found[k] >= n for k, n in wanted.items())


def check_image(image: np.ndarray, prompt: str) -> dict[str, bool | None]:
    """One uint8 ``[H, W, 3]`` image against its shapes prompt -> {check: passed (None = not applicable)}."""
    wanted, relation = parse_caption(prompt)
    found = detect_objects(image)
    pairs = Counter((o.colour, o.shape) for o in found)
    result: dict[str, bool | None] = {
        "object": _contains(pairs, Counter(wanted)),
        "count": len(found) == len(wanted),
        "colour": _contains(Counter(o.colour for o in found), Counter(c for c, _ in wanted)),
        "position": None,
    }
    if relation is not None:
        result["position"] = any(
            (a.colour, a.shape) == wanted[0] and (b.colour, b.shape) == wanted[1] and relation_holds(a, b, relation)
            for a, b in permutations(found, 2)
        )
    result["overall"] = all(v for v in result.values() if v is not None)
    return result


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] images ``[N, 3, H, W]`` -> uint8 ``[N, H, W, 3]``."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def geneval_scores(images: torch.Tensor, prompts: list[str]) -> dict[str, Any]:
    """Share of images passing each check (over the prompts where it applies), with the counts."""
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
    if images.shape[1] != 3:
        raise ValueError("GenEval checks read colours: the images must be RGB")
    rows = [check_image(im, p) for im, p in zip(to_uint8(images), prompts, strict=True)]
    out: dict[str, Any] = {}
    for check in CHECKS:
        applicable = [r[check] for r in rows if r[check] is not None]
        out[check] = sum(applicable) / len(applicable) if applicable else None
        out[f"{check}_n"] = len(applicable)
    return out
