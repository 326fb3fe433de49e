"""Confidence intervals of proportions, shared by the evaluation scorers and the atlas report."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``hits / n`` (95 % by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(hits: int, n: int) -> dict[str, float | int | list[float] | None]:
    """``{rate, n, ci}``: the proportion (None when n is 0), its count and its Wilson 95 % interval."""
    return {"rate": hits / n if n else None, "n": n, "ci": list(wilson(hits, n))}
