"""Quality against compute: a saturating power law per strategy, its seed bootstrap, and what follows from two or
more fitted curves (parity ratios, crossovers, the compute-optimal choice, a held-out prediction checked).

The law is the compute-only form of Hoffmann et al. 2022 / Shukor et al. 2025 (``L = E + A·C^-alpha``):

    m(C) = m_inf + A·(C / C0)^(-alpha)    (lower is better: losses, FID)
    m(C) = m_inf - A·(C / C0)^(-alpha)    (higher is better: accuracies)

with ``A >= 0``, ``alpha`` in ``ALPHA_BOUNDS`` and ``C0`` the geometric mean of the fitted budgets, so that
``A`` is the gap to the asymptote in the middle of the data and does not run to 1e30 for FLOP-sized ``C``. For a
fixed ``alpha`` the law is linear in ``(m_inf, A)``, so the fit is a variable projection: the least-squares
``(m_inf, A)`` in closed form (under the sign and bound constraints) for every ``alpha`` of a log-spaced grid,
then the grid refined around the best ``alpha`` three times. The grid is the "many starting points" of a local
fit made exhaustive: no start can miss the global minimum by more than a grid cell. The same batched solver fits
all bootstrap draws at once, which is what makes a 1,000-draw bootstrap take milliseconds.

Points are ``(compute, seed, value)``: one value per run. A seed is one ladder (the same seed at every budget), so
the bootstrap resamples seeds with replacement, keeping every budget of a seed together; with one seed it
resamples the fit's residuals instead (``method == "residuals"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize, stats

from unimm.atlas.metrics import HIGHER_IS_BETTER, RATES

if TYPE_CHECKING:
    from unimm.atlas.results import RunResult

Point = tuple[float, int, float]  # (counted compute, training seed, metric value)
ALPHA_BOUNDS = (0.02, 3.0)
BUDGET_RTOL = 0.05  # runs of one budget overshoot it by at most a step: computes within 5 % are one budget
_GRID, _REFINE = 64, 3


@dataclass(frozen=True)
class PowerLaw:
    """A fitted ``m(C) = m_inf ± A·(C/c_ref)^(-alpha)`` (minus when higher is better)."""

    m_inf: float
    A: float
    alpha: float
    c_ref: float
    higher_is_better: bool
    residual: float = 0.0  # root mean square of the fit's residuals, in the metric's unit
    n: int = 0  # points fitted

    @property
    def sign(self) -> float:
        return -1.0 if self.higher_is_better else 1.0

    def predict(self, compute: float | np.ndarray) -> float | np.ndarray:
        """The metric at ``compute`` (any shape)."""
        c = np.asarray(compute, dtype=float)
        out = self.m_inf + self.sign * self.A * (c / self.c_ref) ** (-self.alpha)
        return float(out) if out.ndim == 0 else out

    def inverse(self, value: float | np.ndarray) -> float | np.ndarray:
        """The compute at which the curve reaches ``value``. ``inf``: never, the value is at or beyond the
        asymptote ``m_inf`` (or the curve is flat and worse); ``0.0``: a flat curve (``A == 0``) already has it."""
        v = np.asarray(value, dtype=float)
        gap = self.sign * (v - self.m_inf)  # > 0: on the reachable side of the asymptote
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            c = self.c_ref * (self.A / gap) ** (1.0 / self.alpha)
        out = np.where(gap > 0, c, np.inf)
        if self.A == 0:
            out = np.where(gap >= 0, 0.0, np.inf)
        out = np.where(np.isnan(v), np.nan, out)
        return float(out) if out.ndim == 0 else out


def budget_groups(compute: Sequence[float] | np.ndarray, rtol: float = BUDGET_RTOL) -> np.ndarray:
    """A budget index per point (0 = smallest): sorted computes less than ``rtol`` apart are one budget."""
    c = np.asarray(compute, dtype=float)
    order = np.argsort(c)
    steps = np.diff(np.log(c[order])) > math.log1p(rtol)
    groups = np.empty(len(c), dtype=int)
    groups[order] = np.concatenate([[0], np.cumsum(steps)])
    return groups


def budget_levels(compute: Sequence[float] | np.ndarray, rtol: float = BUDGET_RTOL) -> list[float]:
    """The distinct budgets among ``compute``: each group's geometric mean, ascending."""
    c = np.log(np.asarray(compute, dtype=float))
    groups = budget_groups(np.exp(c), rtol)
    return [float(np.exp(c[groups == g].mean())) for g in range(groups.max() + 1)]


def _check(points: Sequence[Point], min_budgets: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``points`` as arrays (compute, seed, value); one ValueError naming the first problem."""
    if len(points) == 0:
        raise ValueError("no points to fit")
    c, s, v = (np.asarray(x, dtype=float) for x in zip(*points, strict=True))
    for name, arr in (("compute", c), ("value", v)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name} is not finite ({arr[bad[0]]}) at point {bad[0]}: {points[bad[0]]}")
    bad = np.flatnonzero(c <= 0)
    if bad.size:
        raise ValueError(f"compute must be positive, got {c[bad[0]]} at point {bad[0]}: {points[bad[0]]}")
    budgets = budget_groups(c).max() + 1
    if budgets < min_budgets:
        raise ValueError(f"need at least {min_budgets} distinct budgets to fit m_inf, A and alpha, got {budgets}")
    return c, s.astype(int), v


@dataclass(frozen=True)
class _Problem:
    """The fit in normalised units: ``x = ln(C/c_ref)``, ``y = sign·(v - center)/scale`` (always decreasing)."""

    x: np.ndarray
    c_ref: float
    center: float
    scale: float
    sign: float
    lo: float  # bounds on the normalised, sign-flipped m_inf
    hi: float

    @classmethod
    def make(cls, c: np.ndarray, v: np.ndarray, higher: bool, m_bounds: tuple[float, float]) -> _Problem:
        c_ref = float(np.exp(np.log(np.unique(c)).mean()))
        center, scale = float(v.mean()), float(v.std()) or 1.0
        sign = -1.0 if higher else 1.0
        lo, hi = sorted(sign * (b - center) / scale for b in m_bounds)
        return cls(np.log(c / c_ref), c_ref, center, scale, sign, lo, hi)

    def y(self, v: np.ndarray) -> np.ndarray:
        return self.sign * (v - self.center) / self.scale

    def law(self, m: float, a: float, alpha: float, higher: bool, residual: float, n: int) -> PowerLaw:
        return PowerLaw(self.center + self.sign * self.scale * m, self.scale * a, alpha, self.c_ref, higher,
                        residual, n)  # fmt: skip


def _solve(z: np.ndarray, y: np.ndarray, w: np.ndarray, lo: float, hi: float):
    """Weighted least squares of ``y ≈ m + b·z`` with ``b >= 0`` and ``lo <= m <= hi`` for every (draw, alpha).

    z: (R, G, n) basis at each draw's alpha grid; y, w: (R, n). Returns m, b, sse, each (R, G). The problem is a
    convex quadratic in two unknowns: its minimum is the unconstrained one when feasible, else on a face."""
    sw = w.sum(-1)[:, None]
    sy, syy = (w * y).sum(-1)[:, None], (w * y * y).sum(-1)[:, None]
    sz, szz, szy = (np.matmul(z_, u[..., None])[..., 0] for z_, u in ((z, w), (z * z, w), (z, w * y)))

    def sse(m, b):
        return syy - 2 * m * sy - 2 * b * szy + m * m * sw + 2 * m * b * sz + b * b * szz

    det = sw * szz - sz * sz
    with np.errstate(divide="ignore", invalid="ignore"):
        b0 = (sw * szy - sz * sy) / det
        m0 = (sy - b0 * sz) / sw
    feasible = (b0 >= 0) & (m0 >= lo) & (m0 <= hi) & np.isfinite(b0)
    candidates = [(m0, b0, np.where(feasible, sse(m0, b0), np.inf))]
    for edge in (lo, hi):
        if math.isfinite(edge):
            m = np.full_like(szy, edge)
            b = np.maximum(0.0, (szy - edge * sz) / szz)
            candidates.append((m, b, sse(m, b)))
    m = np.clip(sy / sw, lo, hi) * np.ones_like(szy)
    candidates.append((m, np.zeros_like(m), sse(m, 0 * m)))
    ms, bs, es = (np.stack(x) for x in zip(*candidates, strict=True))
    best = es.argmin(0)[None]
    return (np.take_along_axis(x, best, 0)[0] for x in (ms, bs, es))


def _fit_batch(x: np.ndarray, y: np.ndarray, w: np.ndarray, lo: float, hi: float):
    """Variable projection over ``alpha`` for R weighted data sets at once. Returns (m, b, alpha, sse), each (R,)."""
    r = y.shape[0]
    log_lo, log_hi = (math.log(a) for a in ALPHA_BOUNDS)
    grid = np.broadcast_to(np.linspace(log_lo, log_hi, _GRID), (r, _GRID))
    for _ in range(_REFINE + 1):
        alpha = np.exp(grid)
        m, b, e = _solve(np.exp(-alpha[..., None] * x), y, w, lo, hi)
        k = e.argmin(1)[:, None]
        best = [np.take_along_axis(a, k, 1)[:, 0] for a in (m, b, alpha, e)]
        step = grid[:, 1:2] - grid[:, 0:1]  # the next grid spans the best point's neighbours, the best included
        grid = np.clip(np.take_along_axis(grid, k, 1) + step * np.linspace(-1, 1, _GRID // 4 + 1), log_lo, log_hi)
    return tuple(best)


def fit_power_law(
    compute: Sequence[float],
    values: Sequence[float],
    higher_is_better: bool,
    m_bounds: tuple[float, float] = (-math.inf, math.inf),
) -> PowerLaw:
    """The least-squares saturating power law through ``(compute, value)`` points (needs 3 budgets or more).

    ``m_bounds`` bounds the asymptote (e.g. (0, 1) for a rate). A curve with no improvement at all is ``A = 0``."""
    c, _, v = _check([(ci, 0, vi) for ci, vi in zip(compute, values, strict=True)])
    problem = _Problem.make(c, v, higher_is_better, m_bounds)
    return _fit_weighted(problem, v[None], np.ones((1, len(v))), higher_is_better)[0]


def _fit_weighted(problem: _Problem, v: np.ndarray, w: np.ndarray, higher: bool) -> list[PowerLaw]:
    m, b, alpha, e = _fit_batch(problem.x, problem.y(v), w, problem.lo, problem.hi)
    rms = problem.scale * np.sqrt(np.maximum(e, 0) / w.sum(1))
    n = v.shape[1]
    return [problem.law(*map(float, row), higher, float(r), n) for *row, r in zip(m, b, alpha, rms, strict=True)]


@dataclass
class BootstrapFit:
    """A fitted law and its bootstrap draws (arrays of length ``reps``).

    Intervals are percentile intervals whose two sides are widened by ``widen`` around the point estimate: a
    percentile bootstrap over few resampling units is too narrow (3 seeds give an interval of a mean ~1.34
    standard errors wide where 2.92 are needed for 90 %), and ``widen = sqrt(k/(k-1))·t(k-1)/z`` for ``k`` seeds
    (``t(n-3)/z`` for ``n`` residuals) makes it the exact t-interval when the statistic is a mean of per-seed
    values. Two fits made with the same ``seed`` over the same seed labels resampled the same seeds in every
    draw: combining them draw by draw is a paired bootstrap."""

    fit: PowerLaw
    m_inf: np.ndarray
    A: np.ndarray
    alpha: np.ndarray
    method: str  # "seeds" | "residuals"
    seeds: tuple[int, ...]
    level: float
    widen: float
    compute: np.ndarray = field(repr=False)  # the fitted points
    values: np.ndarray = field(repr=False)
    point_seeds: np.ndarray = field(repr=False)

    @property
    def reps(self) -> int:
        return len(self.alpha)

    @property
    def higher_is_better(self) -> bool:
        return self.fit.higher_is_better

    def draws(self, compute: float | np.ndarray) -> np.ndarray:
        """Each draw's prediction at ``compute``: (reps, *shape of compute)."""
        c = np.asarray(compute, dtype=float)
        shape = (-1,) + (1,) * c.ndim
        power = (c / self.fit.c_ref)[None] ** (-self.alpha.reshape(shape))
        return self.m_inf.reshape(shape) + self.fit.sign * self.A.reshape(shape) * power

    def interval_of(self, estimate: float | np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The widened percentile interval of ``draws`` (axis 0) around ``estimate``."""
        tail = (1 - self.level) / 2
        with np.errstate(invalid="ignore"):
            lo, hi = np.quantile(draws, [tail, 1 - tail], axis=0)
            lo = estimate - self.widen * np.maximum(estimate - lo, 0)
            hi = estimate + self.widen * np.maximum(hi - estimate, 0)
        return lo, hi

    def interval(self, name: str) -> tuple[float, float]:
        """Interval of a parameter: ``m_inf``, ``A`` or ``alpha``."""
        lo, hi = self.interval_of(getattr(self.fit, name), getattr(self, name))
        return float(lo), float(hi)

    def predict_interval(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.interval_of(self.fit.predict(compute), self.draws(compute))

    def law(self, i: int) -> PowerLaw:
        """Draw ``i`` as a law."""
        f = self.fit
        return PowerLaw(float(self.m_inf[i]), float(self.A[i]), float(self.alpha[i]), f.c_ref, f.higher_is_better)


def _widen(level: float, units: int, seeds: bool) -> float:
    z = stats.norm.ppf(0.5 + level / 2)
    df = units - 1 if seeds else units - 3
    if df < 1:
        return 1.0
    return float(stats.t.ppf(0.5 + level / 2, df) / z * (math.sqrt(units / df) if seeds else 1.0))


def bootstrap_fit(
    points: Sequence[Point],
    higher_is_better: bool,
    reps: int = 1000,
    level: float = 0.9,
    seed: int = 0,
    m_bounds: tuple[float, float] = (-math.inf, math.inf),
    small_sample: bool = True,
) -> BootstrapFit:
    """Fit ``points`` and ``reps`` bootstrap refits: seeds resampled with replacement (every budget of a seed
    together), or with one seed the residuals (leverage-adjusted by ``sqrt(n/(n-3))``). Deterministic in
    ``seed``; ``small_sample`` widens the intervals for few resampling units (see ``BootstrapFit``)."""
    c, s, v = _check(points)
    problem = _Problem.make(c, v, higher_is_better, m_bounds)
    fit = _fit_weighted(problem, v[None], np.ones((1, len(v))), higher_is_better)[0]
    labels = tuple(sorted(set(s.tolist())))
    rng = np.random.default_rng([seed, *labels])  # same seed labels and seed: the same draws (paired)
    if len(labels) > 1:
        method = "seeds"
        counts = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=reps)
        w = counts[:, np.searchsorted(labels, s)].astype(float)
        vs = np.broadcast_to(v, w.shape)
    else:
        method = "residuals"
        fitted = fit.predict(c)
        resid = (v - fitted) * math.sqrt(len(v) / max(len(v) - 3, 1))
        vs = fitted + rng.choice(resid - resid.mean(), size=(reps, len(v)))
        w = np.ones_like(vs)
    m, b, alpha, _ = _fit_batch(problem.x, problem.y(vs), w, problem.lo, problem.hi)
    widen = _widen(level, len(labels) if method == "seeds" else len(v), method == "seeds") if small_sample else 1.0
    return BootstrapFit(fit, problem.center + problem.sign * problem.scale * m, problem.scale * b, alpha, method,
                        labels, level, widen, c, v, s)  # fmt: skip


def _paired(a: BootstrapFit, b: BootstrapFit) -> None:
    if a.reps != b.reps or a.higher_is_better != b.higher_is_better:
        raise ValueError("the two fits need the same number of draws and the same metric direction")


@dataclass(frozen=True)
class Parity:
    """B reaches A's value at ``compute`` with ``ratio`` times A's compute (``ratio < 1``: B needs less)."""

    compute: float
    value: float  # A's predicted value at ``compute``
    ratio: float  # C_b / C_a; inf: B never reaches it
    interval: tuple[float, float]
    reached: float  # share of draws in which B reaches A's value at all

    def text(self) -> str:
        if not math.isfinite(self.ratio):
            return f"never: B's asymptote is beyond {self.value:.4g}"
        lo, hi = self.interval
        return f"{self.ratio:.3g}× [{lo:.3g}, {hi:.3g}]"


def parity_ratio(a: BootstrapFit, b: BootstrapFit, compute: float) -> Parity:
    """The compute ratio ``C_b / C_a`` at which B's curve reaches A's value at budget ``C_a = compute``, with a
    bootstrap interval from the fits' draws combined draw by draw (paired when they resampled the same seeds)."""
    _paired(a, b)
    value = a.fit.predict(compute)
    ratio = b.fit.inverse(value) / compute
    target = a.draws(compute)
    ratios = _inverse_draws(b, target) / compute
    finite = np.isfinite(ratios)
    if 0 < ratio < math.inf and finite.any():
        with np.errstate(divide="ignore"):  # a draw whose B is flat and already there: ratio 0
            log_ratios = np.log(ratios)
        lo, hi = (math.exp(x) for x in _max_widen(a, b).interval_of(math.log(ratio), log_ratios))
    else:
        lo, hi = math.nan, math.nan
    return Parity(compute, value, ratio, (lo, hi), float(finite.mean()))


def _inverse_draws(fit: BootstrapFit, values: np.ndarray) -> np.ndarray:
    """Each draw's compute for its own value ``values[i]`` (the rule of ``PowerLaw.inverse``)."""
    gap = fit.fit.sign * (values - fit.m_inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = fit.fit.c_ref * (fit.A / gap) ** (1.0 / fit.alpha)
    return np.where(fit.A > 0, np.where(gap > 0, c, np.inf), np.where(gap >= 0, 0.0, np.inf))


def _max_widen(a: BootstrapFit, b: BootstrapFit) -> BootstrapFit:
    return a if a.widen >= b.widen else b


def _log_grid(c_range: tuple[float, float], n: int = 256) -> np.ndarray:
    lo, hi = c_range
    if not 0 < lo < hi:
        raise ValueError(f"compute range must satisfy 0 < low < high, got {c_range}")
    return np.geomspace(lo, hi, n)


@dataclass(frozen=True)
class Crossover:
    """Where A's and B's curves cross inside ``c_range``: ``crossings`` of the fitted curves (empty: no crossover
    in range), the interval of the first crossing over the draws that cross, and the share of draws that cross."""

    c_range: tuple[float, float]
    crossings: tuple[float, ...]
    interval: tuple[float, float] | None
    share: float
    better_at_low: str  # "a" | "b": the better side at the range's low end

    @property
    def found(self) -> bool:
        return bool(self.crossings)

    def text(self) -> str:
        lo, hi = self.c_range
        if not self.found:
            return f"no crossover in [{lo:.3g}, {hi:.3g}] ({self.share:.0%} of draws cross)"
        where = ", ".join(f"{c:.3g}" for c in self.crossings)
        ci = f" [{self.interval[0]:.3g}, {self.interval[1]:.3g}]" if self.interval else ""
        return f"at {where}{ci} ({self.share:.0%} of draws cross)"


def _first_crossings(grid: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The first sign change of each row of ``d`` over ``grid`` (log-linear interpolation), NaN where none."""
    change = np.sign(d[:, :-1]) * np.sign(d[:, 1:]) < 0
    has = change.any(1)
    k = change.argmax(1)
    rows = np.arange(len(d))
    x0, x1 = np.log(grid[k]), np.log(grid[k + 1])
    d0, d1 = d[rows, k], d[rows, k + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = x0 + (x1 - x0) * d0 / (d0 - d1)
    return np.where(has, np.exp(x), np.nan)


def crossover(a: BootstrapFit, b: BootstrapFit, c_range: tuple[float, float]) -> Crossover:
    """The budgets in ``c_range`` where the fitted curves of A and B cross (root finding on ``log C``)."""
    _paired(a, b)
    grid = _log_grid(c_range)

    def diff(logc: float) -> float:
        return a.fit.predict(math.exp(logc)) - b.fit.predict(math.exp(logc))

    d = a.fit.predict(grid) - b.fit.predict(grid)
    crossings = tuple(
        math.exp(optimize.brentq(diff, math.log(grid[i]), math.log(grid[i + 1])))
        for i in np.flatnonzero(np.sign(d[:-1]) * np.sign(d[1:]) < 0)
    )
    first = _first_crossings(grid, a.draws(grid) - b.draws(grid))
    crossed = first[np.isfinite(first)]
    interval = None
    if crossings and crossed.size:
        lo, hi = _max_widen(a, b).interval_of(math.log(crossings[0]), np.log(crossed))
        interval = (math.exp(lo), math.exp(hi))
    a_better = (d[0] > 0) == a.higher_is_better
    return Crossover(tuple(c_range), crossings, interval, float(np.isfinite(first).mean()), "a" if a_better else "b")


@dataclass(frozen=True)
class Headline:
    """What two curves say over the measured compute range, in one sentence: where B is better (the paired
    interval of B − A, oriented so that > 0 means better, excludes 0), where A is, a crossover between the two,
    or no difference detectable up to the largest budget."""

    c_range: tuple[float, float]
    b_better: tuple[float, float] | None  # the compute span where B is detectably better (first to last)
    a_better: tuple[float, float] | None
    at_top: tuple[float, float, float]  # B − A (better-oriented) at the largest budget, with its interval
    crossover: Crossover

    @property
    def verdict(self) -> str:
        if self.a_better and self.b_better:
            return "crossover"
        return "b" if self.b_better else "a" if self.a_better else "none"

    def text(self, a: str, b: str) -> str:
        hi = self.c_range[1]
        d, lo_d, hi_d = self.at_top
        top = f"(B − A at {hi:.3g}: {d:+.3g} [{lo_d:+.3g}, {hi_d:+.3g}], positive = B better)"
        span = lambda s: f"{s[0]:.3g}–{s[1]:.3g}"  # noqa: E731
        if self.verdict == "crossover":
            first, second = sorted([(self.a_better, a), (self.b_better, b)], key=lambda x: x[0][0])
            return (f"{first[1]} better at {span(first[0])}, {second[1]} at {span(second[0])}: they cross "
                    f"{self.crossover.text()} {top}")  # fmt: skip
        if self.verdict == "none":
            return f"no difference detectable up to {hi:.3g} {top}"
        win, where = (b, self.b_better) if self.verdict == "b" else (a, self.a_better)
        return f"{win} better at {span(where)}, no crossover ({self.crossover.share:.0%} of draws cross) {top}"


def headline(a: BootstrapFit, b: BootstrapFit, c_range: tuple[float, float]) -> Headline:
    """``Headline`` of A and B over ``c_range``: the better-oriented difference of the fitted curves on a log grid,
    its draws combined draw by draw (paired when the fits resampled the same seeds), widened as the wider fit."""
    _paired(a, b)
    grid = _log_grid(c_range, 64)
    sign = 1.0 if a.higher_is_better else -1.0
    est = sign * (b.fit.predict(grid) - a.fit.predict(grid))
    lo, hi = _max_widen(a, b).interval_of(est, sign * (b.draws(grid) - a.draws(grid)))

    def span(mask: np.ndarray) -> tuple[float, float] | None:
        idx = np.flatnonzero(mask)
        return (float(grid[idx[0]]), float(grid[idx[-1]])) if idx.size else None

    top = (float(est[-1]), float(lo[-1]), float(hi[-1]))
    return Headline(tuple(c_range), span(lo > 0), span(hi < 0), top, crossover(a, b, c_range))


@dataclass(frozen=True)
class Optimal:
    """The strategy with the best predicted value at ``compute`` and the share of draws in which it is best."""

    compute: float
    best: str
    value: float
    probability: float
    values: dict[str, float]


def compute_optimal(fits: dict[str, BootstrapFit], budgets: Sequence[float]) -> list[Optimal]:
    """Per budget, the best strategy by predicted value and its probability of being best over the draws."""
    names = list(fits)
    if not names:
        raise ValueError("no fits to choose from")
    for other in names[1:]:
        _paired(fits[names[0]], fits[other])
    higher = fits[names[0]].higher_is_better
    pick = np.argmax if higher else np.argmin
    c = np.asarray(budgets, dtype=float)
    point = np.stack([fits[n].fit.predict(c) for n in names])  # (strategies, budgets)
    draws = np.stack([fits[n].draws(c) for n in names])  # (strategies, reps, budgets)
    winners = pick(draws, axis=0)  # (reps, budgets)
    out = []
    for j, cj in enumerate(c):
        k = int(pick(point[:, j]))
        out.append(Optimal(float(cj), names[k], float(point[k, j]), float((winners[:, j] == k).mean()),
                           {n: float(point[i, j]) for i, n in enumerate(names)}))  # fmt: skip
    return out


@dataclass(frozen=True)
class Holdout:
    """The largest budget predicted from the others and checked against its measured mean over seeds."""

    compute: float
    prediction: float
    interval: tuple[float, float]
    measured: float
    seeds: int  # runs measured at the held-out budget

    @property
    def error(self) -> float:
        """Relative error of the prediction, ``(predicted - measured) / |measured|``."""
        return (self.prediction - self.measured) / abs(self.measured) if self.measured else math.inf

    @property
    def inside(self) -> bool:
        return self.interval[0] <= self.measured <= self.interval[1]


def holdout_check(points: Sequence[Point], higher_is_better: bool, **bootstrap) -> Holdout:
    """Fit every budget but the largest (needs 4 budgets or more), predict the largest at its mean compute and
    compare with its measured mean over seeds. ``bootstrap``: keyword arguments of ``bootstrap_fit``."""
    c, _, v = _check(points, min_budgets=4)
    groups = budget_groups(c)
    held = groups == groups.max()
    fit = bootstrap_fit([p for p, h in zip(points, held, strict=True) if not h], higher_is_better, **bootstrap)
    target = float(np.exp(np.log(c[held]).mean()))
    lo, hi = fit.predict_interval(target)
    return Holdout(target, fit.fit.predict(target), (float(lo), float(hi)), float(v[held].mean()), int(held.sum()))


@dataclass
class Curve:
    """One strategy's ladder on one metric: the runs of a cell (strategy / layer kind / size) on one dataset, in
    one ledger regime, at every budget and seed. ``unit`` is what compute counts: ``flops`` or ``s``."""

    key: str  # strategy/layers/size
    dataset: str
    regime: str
    unit: str
    metric: str
    points: list[Point] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.key} ({self.dataset}, {self.regime})"

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    @property
    def budgets(self) -> int:
        return int(budget_groups([p[0] for p in self.points]).max()) + 1 if self.points else 0

    @property
    def m_bounds(self) -> tuple[float, float]:
        """Where the asymptote can lie: a rate in [0, 1], every other atlas metric non-negative."""
        return (0.0, 1.0) if self.metric in RATES else (0.0, math.inf)

    def fit(self, **bootstrap) -> BootstrapFit:
        return bootstrap_fit(self.points, self.higher_is_better, m_bounds=self.m_bounds, **bootstrap)


def run_compute(result: RunResult) -> float | None:
    """The compute a run spent, as its budget counts it: the ledger's ``budgeted`` FLOPs (what the main budget
    paid for: the whole total in the scratch regime, encoders and training steps in the pretrained one), else the
    planned FLOP budget; for a wall-time budget the training loop's seconds, else the planned seconds."""
    run = result.run
    if run.budget_kind == "flops":
        counted = result.ledger.budgeted if result.ledger is not None else None
        return counted if counted else run.budget
    return result.info.get("loop_s") or run.budget


def curves_from_results(results: Sequence[RunResult], metric: str) -> list[Curve]:
    """The finished runs with ``metric`` grouped into curves (by cell, dataset, regime and budget kind), in the
    order the runs come."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}")
    curves: dict[tuple[str, str, str, str], Curve] = {}
    for r in results:
        value, compute = r.values.get(metric), run_compute(r)
        if r.status != "done" or value is None or not compute:
            continue
        run = r.run
        unit = "flops" if run.budget_kind == "flops" else "s"
        key = (run.cell, run.dataset, run.regime, unit)
        curves.setdefault(key, Curve(*key, metric)).points.append((float(compute), run.seed, float(value)))
    return list(curves.values())
