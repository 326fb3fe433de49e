"""Scaling laws of the atlas: the fit, its seed bootstrap, parity ratios, crossovers, the compute-optimal choice,
the held-out check, curves read from RunResults, and the report's scaling section (all on synthetic data)."""

import math
from pathlib import Path

import numpy as np
import pytest

from unimm.atlas.ledger import RunLedger
from unimm.atlas.plan import PlannedRun
from unimm.atlas.results import RunResult
from unimm.atlas.scaling import (
    Holdout,
    PowerLaw,
    bootstrap_fit,
    compute_optimal,
    crossover,
    curves_from_results,
    fit_power_law,
    holdout_check,
    parity_ratio,
)
from unimm.atlas.scaling_report import holdout_table, scaling_section
from unimm.document import Document

BUDGETS = np.geomspace(1e12, 3e13, 5)  # 5 budgets spanning 30x
LOSS = PowerLaw(m_inf=2.0, A=1.5, alpha=0.4, c_ref=5e12, higher_is_better=False)
ACCURACY = PowerLaw(m_inf=0.9, A=0.4, alpha=0.5, c_ref=5e12, higher_is_better=True)


def _points(law: PowerLaw, seeds: int = 3, noise: float = 0.0, seed: int = 0, budgets=BUDGETS, scale: float = 1.0):
    """(compute, seed, value) of ``law`` at ``budgets`` (``law`` read at ``scale`` x the compute), i.i.d. noise."""
    rng = np.random.default_rng(seed)
    return [(c, s, law.predict(c * scale) + rng.normal(0, noise)) for s in range(seeds) for c in budgets]


@pytest.mark.parametrize("law", [LOSS, ACCURACY], ids=["loss", "accuracy"])
def test_fit_recovers_the_law_and_the_direction(law):
    pts = _points(law, noise=0.005)
    fit = fit_power_law([p[0] for p in pts], [p[2] for p in pts], law.higher_is_better)
    assert fit.alpha == pytest.approx(law.alpha, rel=0.15) and fit.m_inf == pytest.approx(law.m_inf, abs=0.05)
    assert fit.A > 0 and fit.n == 15 and fit.residual < 0.01
    # a higher-is-better metric rises towards its asymptote from below, a loss falls towards it from above
    grows = fit.predict(BUDGETS[-1]) > fit.predict(BUDGETS[0])
    assert grows == law.higher_is_better and (fit.predict(1e30) < fit.m_inf) == law.higher_is_better
    # inverse: back to the compute; a value beyond the asymptote is never reached
    assert fit.inverse(fit.predict(4e12)) == pytest.approx(4e12, rel=1e-9)
    beyond = fit.m_inf + (0.01 if law.higher_is_better else -0.01)
    assert fit.inverse(beyond) == math.inf and math.isnan(fit.inverse(math.nan))


def test_exact_data_gives_the_exact_law_and_a_flat_ladder_a_flat_law():
    pts = _points(LOSS, seeds=1)
    fit = fit_power_law([p[0] for p in pts], [p[2] for p in pts], False)
    assert fit.alpha == pytest.approx(0.4, rel=1e-3) and fit.m_inf == pytest.approx(2.0, rel=1e-3)
    assert np.allclose(fit.predict(BUDGETS), LOSS.predict(BUDGETS), rtol=1e-5)
    flat = fit_power_law(BUDGETS, [1.0, 1.2, 1.0, 1.2, 1.0], False, m_bounds=(0.0, math.inf))
    assert flat.A == 0 and flat.m_inf == pytest.approx(1.08)
    assert flat.inverse(1.1) == 0.0 and flat.inverse(1.0) == math.inf  # reached everywhere / never


def test_bootstrap_interval_covers_the_truth_at_about_the_nominal_rate():
    """100 simulated ladders (3 seeds x 5 budgets, noise 0.02): the 90 % interval of the prediction at the middle
    budget covers the truth in 75-98 % of them. With 3 seeds a plain percentile interval covers ~60 % (seeds
    bootstrap a mean of 3); the widening brings it to ~85 % (300 data sets offline: 85-87 %). The range allows
    that and the binomial noise of 100 draws (sd ~3.5 %), and fails a plain percentile interval or one so wide
    it always covers."""
    middle, hits, plain = BUDGETS[2], 0, 0
    for d in range(100):
        boot = bootstrap_fit(_points(LOSS, noise=0.02, seed=d), False, reps=200, seed=d)
        assert boot.method == "seeds" and boot.widen > 1
        lo, hi = boot.predict_interval(middle)
        hits += bool(lo <= LOSS.predict(middle) <= hi)
        raw = np.quantile(boot.draws(middle), [0.05, 0.95])
        plain += bool(raw[0] <= LOSS.predict(middle) <= raw[1])
    assert 75 <= hits <= 98 and plain < hits


def test_bootstrap_is_seeded_and_one_seed_resamples_residuals():
    pts = _points(ACCURACY, seeds=3, noise=0.01)
    a, b = bootstrap_fit(pts, True, reps=50, seed=3), bootstrap_fit(pts, True, reps=50, seed=3)
    assert np.array_equal(a.alpha, b.alpha) and not np.array_equal(a.alpha, bootstrap_fit(pts, True, 50, seed=4).alpha)
    lo, hi = a.interval("m_inf")
    assert lo <= a.fit.m_inf <= hi
    one = bootstrap_fit(_points(ACCURACY, seeds=1, noise=0.01), True, reps=50)
    assert one.method == "residuals" and one.seeds == (0,) and np.ptp(one.alpha) > 0


def test_parity_ratio_recovers_a_compute_factor():
    # B is A with every budget worth k times more: B reaches A's value at 1/k of A's compute
    k = 4.0
    a = bootstrap_fit(_points(LOSS, seeds=2), False, reps=20)
    b = bootstrap_fit(_points(LOSS, seeds=2, scale=k), False, reps=20)
    parity = parity_ratio(a, b, 1e13)
    assert parity.ratio == pytest.approx(1 / k, rel=1e-3) and parity.reached == 1.0
    assert parity.interval == pytest.approx((1 / k, 1 / k), rel=1e-3)  # noise-free: every draw agrees
    assert parity_ratio(b, a, 1e13).ratio == pytest.approx(k, rel=1e-3)  # and A needs k times B's compute
    assert parity_ratio(a, b, 1e16).ratio == pytest.approx(1 / k, rel=1e-3)  # extrapolated: still the same shift


def test_fits_over_the_same_seeds_are_paired_draw_by_draw():
    # the same noisy ladders for A and B: paired draws agree exactly (ratio 1 in every draw), unpaired ones do not
    pts = _points(LOSS, seeds=3, noise=0.02)
    a, same = bootstrap_fit(pts, False, reps=50, seed=7), bootstrap_fit(pts, False, reps=50, seed=7)
    assert parity_ratio(a, same, 1e13).interval == pytest.approx((1.0, 1.0))
    lo, hi = parity_ratio(a, bootstrap_fit(pts, False, reps=50, seed=8), 1e13).interval
    assert lo < 0.99 and hi > 1.01


def test_parity_ratio_beyond_the_asymptote_is_never():
    a = bootstrap_fit(_points(LOSS, seeds=2), False, reps=20)
    worse = PowerLaw(2.5, 1.5, 0.4, 5e12, False)  # B's floor is above A's values at large compute
    b = bootstrap_fit(_points(worse, seeds=2), False, reps=20)
    parity = parity_ratio(a, b, 1e15)
    assert parity.ratio == math.inf and parity.reached == 0.0 and "never" in parity.text()


def _crossing_pair(c_star: float) -> tuple[PowerLaw, PowerLaw]:
    """Two losses that cross once, at ``c_star``: the first better below it (small A, high floor), the second
    better above it (falls faster to a lower floor)."""
    early = PowerLaw(2.0, 1.0, 0.3, 5e12, False)
    a_late = (early.predict(c_star) - 1.0) / (c_star / 5e12) ** -0.6
    return early, PowerLaw(1.0, a_late, 0.6, 5e12, False)


def test_crossover_found_where_the_curves_cross_and_none_when_they_do_not():
    early, late = _crossing_pair(1e13)
    a = bootstrap_fit(_points(early, seeds=2), False, reps=20)
    b = bootstrap_fit(_points(late, seeds=2), False, reps=20)
    cross = crossover(a, b, (1e12, 1e14))
    assert cross.found and len(cross.crossings) == 1 and cross.crossings[0] == pytest.approx(1e13, rel=1e-3)
    assert cross.share == 1.0 and cross.interval == pytest.approx((1e13, 1e13), rel=0.02)
    assert cross.better_at_low == "a" and crossover(b, a, (1e12, 1e14)).better_at_low == "b"
    parallel = bootstrap_fit(_points(PowerLaw(2.3, 1.5, 0.4, 5e12, False), seeds=2), False, reps=20)
    none = crossover(bootstrap_fit(_points(LOSS, seeds=2), False, reps=20), parallel, (1e12, 1e14))
    assert not none.found and none.share == 0.0 and none.interval is None and "no crossover" in none.text()


def test_compute_optimal_picks_the_best_predicted_strategy_per_budget():
    early, late = _crossing_pair(1e13)
    fits = {name: bootstrap_fit(_points(law, seeds=3, noise=0.001), False, reps=100)
            for name, law in (("early", early), ("late", late))}  # fmt: skip
    low, high = compute_optimal(fits, [1e12, 1e14])
    assert (low.best, high.best) == ("early", "late") and low.probability > 0.9 and high.probability > 0.9
    assert low.value == pytest.approx(min(low.values.values()))


def test_holdout_check_predicts_the_largest_budget():
    # 5 budgets, the law exact but the largest budget measured 10 % above it: error -1/11, outside the interval
    budgets = np.geomspace(1e12, 1e14, 5)
    pts = _points(LOSS, seeds=2, budgets=budgets[:4])
    pts += [(budgets[4] * (1 + 0.01 * s), s, LOSS.predict(budgets[4]) * 1.1) for s in range(2)]
    check = holdout_check(pts, False, reps=20)
    target = math.sqrt(budgets[4] * budgets[4] * 1.01)  # the held-out budget's mean compute (log scale)
    assert check.compute == pytest.approx(target) and check.seeds == 2
    assert check.prediction == pytest.approx(LOSS.predict(target), rel=1e-4)
    assert check.measured == pytest.approx(LOSS.predict(budgets[4]) * 1.1)
    assert check.error == pytest.approx(LOSS.predict(target) / (LOSS.predict(budgets[4]) * 1.1) - 1, rel=1e-3)
    assert not check.inside
    exact = holdout_check(_points(LOSS, seeds=2, noise=0.002, budgets=budgets), False, reps=50)
    assert exact.inside and abs(exact.error) < 0.01
    with pytest.raises(ValueError, match="at least 4 distinct budgets"):
        holdout_check(_points(LOSS, seeds=2, budgets=BUDGETS[:3]), False, reps=5)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(1e12, 0, 1.0), (2e12, 0, 0.9), (1e12, 1, 1.1)], "at least 3 distinct budgets"),
        ([(1e12, 0, 1.0), (1.02e12, 0, 0.9), (1.04e12, 0, 0.8)], "at least 3 distinct budgets"),  # one budget
        ([(1e12, 0, 1.0), (0.0, 0, 0.9), (4e12, 0, 0.8)], "compute must be positive"),
        ([(1e12, 0, 1.0), (2e12, 0, math.nan), (4e12, 0, 0.8)], "value is not finite"),
        ([], "no points"),
    ],
)
def test_bad_input_is_one_clear_error(points, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_fit(points, False, reps=5)


AXES_OF = {  # writer / reader kinds of the synthetic strategies: chameleon-transfusion and chameleon-janus are
    "chameleon": ("ar-codes", "shared"),  # matched pairs (one axis apart), transfusion-janus is not (two)
    "transfusion": ("latent", "shared"),
    "janus": ("ar-codes", "vit"),
}


def _result(strategy: str, budget: float, seed: int, value: float | None, budgeted: float | None, status="done",
            metric: str = "fid"):  # fmt: skip
    writer, reader = AXES_OF.get(strategy, ("latent", "shared"))
    config = {"data": {"path": "data/digits"}, "writer": {"kind": writer}, "reader": {"kind": reader},
              "layers": {"kind": "dense"}, "text": {"kind": "ar"}}  # fmt: skip
    run = PlannedRun(strategy, "dense", "tiny", "flops", budget, seed, "quick", (), config)
    ledger = None
    if budgeted is not None:
        raw = {"preparation": {"vae": 0.0}, "shared": {}, "frozen_encoders": {"flops": 0.0},
               "training_steps": {"flops": budgeted}}  # fmt: skip
        ledger = RunLedger.read(raw, {"regime": "scratch", "shared_tokenizer": "charged"})
    return RunResult(run, Path("."), status, {} if value is None else {metric: value}, {}, ledger=ledger)


def test_curves_from_results_group_runs_by_cell_with_their_counted_compute():
    results = [_result(s, b, seed, 10.0 / (1 + i), b * 1.01) for s in ("chameleon", "transfusion")
               for i, b in enumerate((1e12, 3e12, 1e13, 3e13)) for seed in (0, 1)]  # fmt: skip
    results += [
        _result("chameleon", 1e14, 0, 5.0, None),  # no ledger: the planned budget
        _result("chameleon", 1e14, 1, None, 1e14),  # no FID: left out
        _result("chameleon", 1e14, 2, 4.0, 1e14, status="failed"),
    ]
    curves = curves_from_results(results, "fid")
    assert [c.key for c in curves] == ["chameleon/dense/tiny", "transfusion/dense/tiny"]
    chameleon = curves[0]
    assert chameleon.dataset == "digits" and chameleon.unit == "flops" and not chameleon.higher_is_better
    assert chameleon.budgets == 5 and len(chameleon.points) == 9 and chameleon.m_bounds == (0.0, math.inf)
    assert chameleon.points[0] == (1.01e12, 0, 10.0) and chameleon.points[-1] == (1e14, 0, 5.0)
    assert chameleon.fit(reps=10).method == "seeds"
    with pytest.raises(ValueError, match="unknown metric"):
        curves_from_results(results, "nope")


def _ladder(values_at, budgets=(1e12, 3e12, 1e13, 3e13, 1e14), seeds=(0, 1), metric="fid", noise=0.01):
    rng = np.random.default_rng(0)
    return [_result(name, b, s, law.predict(b) + rng.normal(0, noise), b, metric=metric)
            for name, law in values_at.items() for b in budgets for s in seeds]  # fmt: skip


def test_scaling_section_tables_and_chart(tmp_path):
    early, late = _crossing_pair(1e13)
    scale = PowerLaw(20.0, 30.0, 0.4, 1e13, False)  # a FID-like ladder for a third strategy
    results = _ladder({"chameleon": early, "transfusion": late, "janus": scale})
    doc = Document("t")
    data = scaling_section(doc, results, ["fid"], tmp_path, reps=30)
    assert (tmp_path / "scaling_fid.png").is_file() and set(data) == {"fid", "headlines"}
    assert data["headlines"] == []  # FID answers none of the survey's questions (each has its own metric)
    tables = [v for kind, v in doc.blocks if kind == "table"]
    assert [t[0][0] for t in tables] == ["curve", "curve", "A", "A", "budget"]
    fits, holdout, parity, cross, optimal = (t[1] for t in tables)
    # parity and crossovers of the matched pairs only (chameleon-transfusion, chameleon-janus), both orders for parity
    assert len(fits) == 3 and len(holdout) == 3 and len(parity) == 4 and len(cross) == 2 and len(optimal) == 5
    assert not [r for r in parity if "janus" in r[0] and "transfusion" in r[1]]
    assert fits[0][1:3] == ["5", "10"] and "seeds (2 seeds, 30 draws)" in fits[0][-1]
    x = data["fid"]["crossovers"][0]
    assert (x["a"], x["b"]) == ("chameleon/dense/tiny (digits, scratch)", "transfusion/dense/tiny (digits, scratch)")
    assert x["crossings"] and x["crossings"][0] == pytest.approx(1e13, rel=0.1)
    assert [o["best"].split("/")[0] for o in data["fid"]["optimal"]][:1] == ["chameleon"]
    assert data["fid"]["optimal"][-1]["best"].startswith("transfusion")
    # a one-budget atlas (the quick atlas): no section, the document untouched
    one = Document("t")
    assert scaling_section(one, _ladder({"chameleon": early}, budgets=(1e12,)), ["fid"], tmp_path) is None
    assert one.blocks == []


def test_holdout_table_rows():
    checks = {"a": Holdout(1e14, 2.2, (2.1, 2.3), 2.0, 3), "b": Holdout(1e14, 1.9, (1.8, 2.1), 2.0, 3)}
    header, rows = holdout_table(checks)
    assert header[-2:] == ["error", "inside"]
    assert rows[0][-2:] == ["+10.0%", "**no**"] and rows[1][-2:] == ["-5.0%", "yes"]
    assert rows[0][3] == "2 (3)"


def test_headlines_answer_each_question_with_a_span_a_crossover_or_no_detectable_difference(tmp_path):
    """AR (chameleon) vs diffusion (transfusion) on prompt accuracy: clearly apart, crossing, identical."""
    low = PowerLaw(0.6, 0.3, 0.5, 1e12, True)  # 0.30 at 1e12, 0.57 at 1e14
    high = PowerLaw(0.9, 0.3, 0.5, 1e12, True)  # 0.60 ... 0.87
    budgets = (1e12, 3e12, 1e13, 3e13, 1e14)

    def answer(a: PowerLaw, b: PowerLaw, noise: float = 0.005) -> dict:
        results = _ladder({"chameleon": a, "transfusion": b}, budgets, (0, 1, 2), "prompt_accuracy", noise)
        data = scaling_section(Document("t"), results, ["prompt_accuracy"], tmp_path, reps=200)
        (row,) = [h for h in data["headlines"] if h["question"].startswith("autoregressive")]
        assert (row["a"], row["b"]) == (
            "chameleon/dense/tiny (digits, scratch)",
            "transfusion/dense/tiny (digits, scratch)",
        )
        return row

    apart = answer(low, high)
    assert apart["verdict"] == "b" and apart["a_better"] is None and apart["at_top"][1] > 0
    assert apart["b_better"][0] == pytest.approx(1e12, rel=0.05) and "transfusion" in apart["statement"]
    assert answer(high, low)["verdict"] == "a"
    slow_start = PowerLaw(0.95, 0.75, 0.3, 1e12, True)  # 0.20 at 1e12, 0.76 at 1e14: crosses `low`
    crossing = answer(low, slow_start)
    assert crossing["verdict"] == "crossover" and crossing["crossings"] and "cross" in crossing["statement"]
    same = answer(low, low, noise=0.02)
    assert same["verdict"] == "none" and "no difference detectable up to 1e+14" in same["statement"]
