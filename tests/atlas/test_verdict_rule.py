"""The atlas's verdict rule as a statistical test: its p-values, Holm's correction, its false-verdict rate under
the null (simulated) and its power on a large difference."""

import math

import numpy as np
import pytest
from scipy import stats

from unimm.atlas.comparison import Comparison, adjust, holm, t_test
from unimm.atlas.findings import verdict
from unimm.atlas.null_rates import CHECKS, FALSE
from unimm.atlas.null_rates import draw as _draw
from unimm.atlas.null_rates import verdicts as _verdicts
from unimm.atlas.results import Stat


def test_holm_matches_the_textbook_example():
    """Holm (1979) as on Wikipedia: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects H4 and H1 only."""
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []  # capped at 1


def test_t_tests_match_scipy():
    rng = np.random.default_rng(7)
    for n in (2, 3, 5):
        a, b = rng.normal(1.0, 0.3, n), rng.normal(1.2, 0.5, n)
        paired = t_test(Stat(a.tolist(), list(range(n))), Stat(b.tolist(), list(range(n))))
        ref = stats.ttest_rel(b, a)
        assert paired.kind == "paired" and paired.df == n - 1
        assert (paired.t, paired.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-9)
        assert paired.ci() == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
        welch = t_test(Stat(a.tolist(), list(range(n))), Stat(b.tolist(), list(range(n, 2 * n))))
        ref = stats.ttest_ind(b, a, equal_var=False)
        assert welch.kind == "welch" and (welch.t, welch.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-9)
        assert welch.df == pytest.approx(ref.df, rel=1e-9)
        assert welch.ci() == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert t_test(Stat([1.0]), Stat([2.0, 3.0])) is None  # one seed on a side: no test


@pytest.mark.parametrize("dist", ["normal", "binomial"])
def test_false_verdict_rate_under_the_null_is_at_most_five_percent(dist):
    """Two identical strategies, three checks per report, 2 / 3 / 5 seeds, paired and unpaired: the share of
    reports with any agrees / disagrees. Paired tests are exact at 5 % (4.9 % for three independent checks under
    Holm), so a per-setting rate is allowed its Monte-Carlo error (3 standard errors); the rate over all settings
    must be at most 5 %. The screening rule this replaces (|d| > 2 SE, same sign in each seed) fails both."""
    rng, reps = np.random.default_rng(2024), 1500
    rates = {}
    for paired in (True, False):
        for n in (2, 3, 5):
            false = sum(
                any(v in FALSE for v in _verdicts([_draw(rng, dist, n, paired) for _ in range(CHECKS)]))
                for _ in range(reps)
            )
            rates[(paired, n)] = false / reps
    slack = 3 * math.sqrt(0.05 * 0.95 / reps)
    assert all(r <= 0.05 + slack for r in rates.values()), rates
    assert sum(rates.values()) / len(rates) <= 0.05, rates


@pytest.mark.parametrize("paired", [True, False])
def test_a_large_difference_with_five_seeds_is_found_in_its_direction(paired):
    """B's loss 2.0 lower (about 5 seed-to-seed standard deviations) next to two null checks: agrees when the
    literature says B is better, disagrees when it says A is, nearly always; never the wrong way."""
    rng, reps = np.random.default_rng(11), 200
    for expects_b, right in ((True, "agrees"), (False, "disagrees")):
        found = []
        for _ in range(reps):
            family = [_draw(rng, "normal", 5, paired, shift=-2.0)] + [_draw(rng, "normal", 5, paired) for _ in "xy"]
            found.append(_verdicts(family, expects_b)[0])
        assert found.count(right) >= 0.95 * reps and not any(v in FALSE and v != right for v in found), found


def test_a_pair_that_differs_beyond_the_axis_gets_no_verdict():
    """Issue 16 item 4: a large, significant difference between cells that also differ in another setting is
    shown with its test but judged neither way, and it does not enlarge the Holm family of the real tests."""
    seeds = [0, 1, 2, 3, 4]
    a, b = Stat([0.50, 0.52, 0.49, 0.51, 0.50], seeds), Stat([0.70, 0.71, 0.69, 0.72, 0.70], seeds)
    confounded = Comparison("caption_accuracy", a, b, confounds="train.lr (0.002 vs 0.003)")
    matched = Comparison("caption_accuracy", a, Stat([0.60, 0.63, 0.58, 0.62, 0.61], seeds))
    adjust([confounded, matched])
    assert confounded.test.p < 1e-4 and confounded.outcome == "confounded" and confounded.p_adjusted is None
    assert matched.family == 1 and matched.outcome == "b"  # a family of one: the confounded one is not in it
    line = confounded.sentence("A", "B")
    assert "paired t-test" in line and "also differ in train.lr (0.002 vs 0.003): no verdict" in line
    assert verdict(True, [confounded])[0] == "no verdict"
    assert verdict(True, [confounded, matched])[0] == "agrees"  # judged on the matched pair alone


def test_the_replaced_screening_rule_fires_often_under_the_null():
    """What the t-test replaced: |d| > 2 SE with the same sign in every seed pair claims a difference between
    identical strategies in most reports at two paired seeds (docs/atlas.md: 65 % over 20 000 reports)."""
    from unimm.atlas.null_rates import rates

    today, screening = rates("normal", reps=400)[(True, 2)]
    assert today <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400) and screening > 0.4


def test_the_report_states_its_own_families_false_verdict_rate():
    """The checks section simulates the rule for the report's family (its tests, its fewest seeds): near the nominal
    5 % on a continuous metric, and says so; nothing is simulated when nothing was tested."""
    from unimm.atlas.findings import ClaimCheck
    from unimm.atlas.null_rates import false_verdict_rate
    from unimm.atlas.report import _null_rate

    rate = false_verdict_rate("normal", 2, True, 11, reps=1000)
    assert 0.02 <= rate <= 0.08 and rate == false_verdict_rate("normal", 2, True, 11, reps=1000)  # seeded
    family = [Comparison("task_loss", Stat([1.0, 1.2], [0, 1]), Stat([1.1, 1.25], [0, 1])) for _ in range(4)]
    adjust(family)
    checks = [ClaimCheck(None, "inconclusive", "", [(None, c)]) for c in family]
    null = _null_rate(checks, reps=200)
    assert (null["tests"], null["seeds"], null["reps"]) == (4, 2, 200) and 0 <= null["normal"] <= 0.2
    low, high = null["normal_ci"]  # the simulation's own Monte-Carlo interval, around its rate
    assert low <= null["normal"] <= high and 0.01 < high - low < 0.2
    assert _null_rate([ClaimCheck(None, "not tested", "", [])]) is None
