"""What the numbers show on the survey's questions, and how they stand next to published directional claims.

A question compares *matched pairs* of cells: same size and budget, the four strategy axes of
docs/architecture.md (the kinds of writer, reader, layers and text objective) equal except the one in
question. Presets may still differ in other settings (loss weights, vocabulary, augmentation); every pair
lists those beyond what the axis itself entails, and a pair with any of them gets no verdict (its comparisons
are shown, outside the Holm family, as "not a matched pair"). What the axis entails is read off the part sections, not
kept by hand: the axis's own section, every other part section whose kind differs between the two (with
the other axes equal, only the axis can have changed it, e.g. the codec a writer needs) and the sampler
(each writer names its own). Differences are judged by ``comparison.py``'s rule; the comparisons of the
survey's questions form one Holm family, the checks of published findings (declared in the atlas TOML,
``[[checks]]``) another.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from unimm.atlas.comparison import ALPHA, Comparison, adjust
from unimm.atlas.config import AXES, CheckEntry
from unimm.atlas.metrics import VIDEO_ANALOGUE, WRITER_UNITS
from unimm.atlas.results import Cell

PART_SECTIONS = ("layers", "codec", "writer", "denoiser", "reader", "reader.connector", "text")
IGNORED = ("name", "train.seed", "train.steps", "train.branches", "train.warmup", "train.save_every", "train.log_every",
           "train.threads", "train.parallel", "codec.tokenizer", "sample.sampler")  # fmt: skip
PRIMARY = {  # the first a pair has; the last of each: a video dataset's (VIDEO_ANALOGUE)
    "generation": ("prompt_accuracy", "clip_score", "frame_prompt_accuracy"),
    "understanding": ("caption_accuracy", "exact_match", "caption_cider", "caption_exact_match"),
    "task_loss": ("task_loss",),
}
SECONDARY = {
    "generation": ("fid", "motion_accuracy"),
    "understanding": ("vqa_accuracy", "rank_accuracy", "direction_vqa_accuracy"),
    "task_loss": (),
}


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """A config dict -> {dotted key: value}; a missing part section (no denoiser) is the key with value None."""
    out: dict[str, object] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def entailed_sections(axis: str, ca: dict, cb: dict) -> list[str]:
    """The axis's part section, every other part section whose kind differs between the two configs, and the
    sampling settings when the two sample with different samplers (they configure different algorithms)."""
    axis_section = axis.rsplit(".", 1)[0]
    differ = [s for s in PART_SECTIONS if config_value(ca, f"{s}.kind") != config_value(cb, f"{s}.kind")]
    samplers = config_value(ca, "sample.sampler") != config_value(cb, "sample.sampler")
    return list(dict.fromkeys([axis_section, *differ, *(["sample"] if samplers else [])]))


@dataclass(frozen=True)
class Question:
    key: str
    title: str
    axis: str
    a_label: str
    a_values: frozenset[str]
    b_label: str
    b_values: frozenset[str]
    kinds: tuple[str, ...]  # metric kinds summarised, first = the one the question is about


QUESTIONS = (
    Question("ar-vs-diffusion", "Autoregressive vs diffusion image generation", "writer.kind",
             "discrete AR codes", frozenset({"ar-codes"}), "continuous diffusion / flow", frozenset({"latent"}),
             ("generation", "understanding")),
    Question("dense-vs-moe", "Dense vs mixture-of-experts layers", "layers.kind", "dense", frozenset({"dense"}),
             "experts / modality-untied", frozenset({"moe", "modality-moe", "mot"}),
             ("task_loss", "understanding", "generation")),
    Question("shared-vs-decoupled", "Shared vs decoupled image encoders", "reader.kind",
             "shared (the generation tokenizer's tokens)", frozenset({"shared"}), "decoupled (a ViT encoder)",
             frozenset({"vit"}), ("understanding", "generation")),
)  # fmt: skip


@dataclass
class Pair:
    axis: str
    a: Cell
    b: Cell

    def value(self, cell: Cell) -> str:
        return config_value(cell.first.run.config, self.axis)

    def differences(self, limit: int = 8) -> str:
        """Config keys in which the two cells differ besides the axis and what it entails (the confounds)."""
        return self.confounds(limit) or "nothing"

    def confounds(self, limit: int = 8, metric: str | None = None) -> str | None:
        """``differences``, or None for a matched pair: one that differs only on the axis (and what it entails). For a
        ``metric`` in the writer's own unit (``WRITER_UNITS``) the writer, codec and denoiser are never entailed."""
        ca, cb = self.a.first.run.config, self.b.first.run.config
        fa, fb = flatten(ca), flatten(cb)
        skip = entailed_sections(self.axis, ca, cb)
        if metric in WRITER_UNITS:
            skip = [s for s in skip if s not in ("writer", "codec", "denoiser")]
        keys = sorted(fa.keys() | fb.keys(), key=lambda k: (list(fa) + list(fb)).index(k))
        diff = [k for k in keys if k not in IGNORED and k.rsplit(".", 1)[0] not in skip and fa.get(k) != fb.get(k)]
        if not diff:
            return None
        shown = ", ".join(f"{k} ({fa.get(k)} vs {fb.get(k)})" for k in diff[:limit])
        return shown + (f" and {len(diff) - limit} more" if len(diff) > limit else "")


def matched_pairs(axis: str, a_values: Collection[str], b_values: Collection[str], cells: list[Cell]) -> list[Pair]:
    """Every (A, B) of cells with the same data, size, budget and regime and the other strategy axes equal, A's
    ``axis`` in ``a_values`` and B's in ``b_values``."""
    others = [k for k in AXES if k != axis]
    pairs = []
    for a in cells:
        ra = a.first.run
        if config_value(ra.config, axis) not in a_values:
            continue
        for b in cells:
            rb = b.first.run
            same = (ra.dataset, ra.size, ra.budget_name, ra.regime) == (
                rb.dataset,
                rb.size,
                rb.budget_name,
                rb.regime,
            ) and all(config_value(ra.config, k) == config_value(rb.config, k) for k in others)
            if same and config_value(rb.config, axis) in b_values:
                pairs.append(Pair(axis, a, b))
    return pairs


def compare(pair: Pair, kind: str) -> Comparison | None:
    """The pair's comparison on the first metric of ``kind`` both cells have."""
    for metric in PRIMARY[kind] + SECONDARY[kind]:
        a, b = pair.a.stat(metric), pair.b.stat(metric)
        if a is not None and b is not None:
            return Comparison(metric, a, b, confounds=pair.confounds())
    return None


def comparisons(pair: Pair, kind: str) -> list[Comparison]:
    """The primary comparison of ``kind`` and its secondary metrics."""
    first = compare(pair, kind)
    out = [first] if first else []
    for metric in SECONDARY[kind]:
        a, b = pair.a.stat(metric), pair.b.stat(metric)
        if a is not None and b is not None and (first is None or metric != first.metric):
            out.append(Comparison(metric, a, b, confounds=pair.confounds()))
    return out


def flops_to_reach(pair: Pair, window: int = 5) -> list[float | None]:
    """Per seed run on both sides: the share of A's final FLOPs from which on B's loss (mean of ``window`` logged
    rows) stays at or below A's final loss (same smoothing); None when B does not get there within its budget."""
    b_by_seed = {r.run.seed: r for r in pair.b.results}
    out = []
    for ra in pair.a.results:
        rb = b_by_seed.get(ra.run.seed)
        if rb is None or len(ra.curve) < window or len(rb.curve) < window:
            continue
        target = sum(v for _, v in ra.curve[-window:]) / window
        smooth = [(rb.curve[i][0], sum(v for _, v in rb.curve[i - window + 1 : i + 1]) / window)
                  for i in range(window - 1, len(rb.curve))]  # fmt: skip
        hit = None
        for f, v in reversed(smooth):  # walk back while B stays below the target
            if v > target:
                break
            hit = f
        out.append(None if hit is None else hit / ra.curve[-1][0])
    return out


def _reach_sentence(pair: Pair) -> str | None:
    shares = flops_to_reach(pair)
    if not shares:
        return None
    text = ", ".join("not within its budget" if s is None else f"{s:.0%}" for s in shares)
    return (f"Share of {pair.a.key}'s FLOPs from which {pair.b.key}'s training loss (mean of 5 logged steps) stays at "
            f"or below {pair.a.key}'s final loss, per seed: {text} (single training curves: noisy).")  # fmt: skip


@dataclass
class PairSummary:
    pair: Pair
    head: str  # the heading sentence
    comparisons: list[Comparison]
    notes: list[str]  # after the comparisons: FLOPs to reach the dense loss, the confounds

    def lines(self) -> list[str]:
        return [c.sentence(self.pair.a.key, self.pair.b.key) for c in self.comparisons] + self.notes


@dataclass
class Summary:
    question: Question
    pairs: list[PairSummary] = field(default_factory=list)
    note: str | None = None


def summarise(question: Question, cells: list[Cell]) -> Summary:
    """For each matched pair: a heading sentence, one comparison per metric, and the confounds (p-values not
    adjusted: ``summarise_all`` adjusts them over every question)."""
    pairs = matched_pairs(question.axis, question.a_values, question.b_values, cells)
    if not pairs:
        return Summary(question, note=(
            f"No two finished cells differ only in `{question.axis}` (same size and budget, the other strategy "
            "axes equal), so this atlas does not answer this question."
        ))  # fmt: skip
    out = Summary(question)
    for p in pairs:
        a, b = p.a.key, p.b.key
        sizes = []
        for c in (p.a, p.b):
            total, active = c.info_mean("params_total"), c.info_mean("params_active")
            if total is not None and active is not None:
                sizes.append(f"{c.key} {total / 1e6:.2f} M parameters ({active / 1e6:.2f} M active)")
        head = (f"**{a} vs {b}** at {p.a.budget} (`{question.axis}` = {p.value(p.a)} vs {p.value(p.b)}). "
                + "; ".join(sizes) + ".")  # fmt: skip
        notes = []
        if question.key == "dense-vs-moe" and (reach := _reach_sentence(p)):
            notes.append(reach)
        notes.append(f"Other settings that differ: {p.differences()}.")
        found = [c for kind in question.kinds for c in comparisons(p, kind)]
        out.pairs.append(PairSummary(p, head, found, notes))
    return out


def summarise_all(cells: list[Cell]) -> list[Summary]:
    """Every question's summary; all their comparisons form one Holm family."""
    out = [summarise(q, cells) for q in QUESTIONS]
    adjust([c for s in out for p in s.pairs for c in p.comparisons])
    return out


@dataclass
class ClaimCheck:
    check: CheckEntry
    verdict: str  # agrees | disagrees | inconclusive | not enough seeds | no verdict (confounded) | not tested
    reason: str
    tests: list[tuple[Pair, Comparison]]  # every matched pair with the check's metric on both sides

    @property
    def evidence(self) -> list[str]:
        return [c.sentence(p.a.key, p.b.key) for p, c in self.tests]


def claim_tests(check: CheckEntry, cells: list[Cell]) -> list[tuple[Pair, Comparison]]:
    """The check's comparisons: every matched pair of its sides on its declared metric."""
    out = []
    for p in matched_pairs(check.axis, check.a, check.b, cells):
        metric = pair_metric(p, check.metric)
        if metric is not None:
            a, b = p.a.stat(metric), p.b.stat(metric)
            out.append((p, Comparison(metric, a, b, confounds=p.confounds(metric=metric))))
    return out


def pair_metric(pair: Pair, metric: str) -> str | None:
    """``metric`` when both cells have it, else its video analogue when both have that (clips), else None."""
    for m in (metric, VIDEO_ANALOGUE.get(metric)):
        if m is not None and pair.a.stat(m) is not None and pair.b.stat(m) is not None:
            return m
    return None


def verdict(expects_b: bool, found: Sequence[Comparison]) -> tuple[str, str]:
    """A check's verdict and why, from its comparisons (p-values already adjusted over the family): *agrees*
    (*disagrees*) when a test is significant with the declared side better (worse) and none the other way."""
    if not found:
        return "not tested", "no matched pair of finished runs in this atlas"
    judged = [c for c in found if c.confounds is None]
    if not judged:
        return "no verdict", (f"every pair of its sides also differs outside the axis (e.g. {found[0].confounds}): "
                              "only a pair that differs on the axis alone is judged")  # fmt: skip
    found = judged
    tested = [c for c in found if c.test is not None]
    if not tested:
        return "not enough seeds", f"{len(found)} comparison(s), each with one seed on a side: no t-test"
    side = "b" if expects_b else "a"
    outcomes = [c.outcome for c in tested]
    n_for, n_against = outcomes.count(side), sum(o in ("a", "b") and o != side for o in outcomes)
    rule = f"Holm-adjusted p < {ALPHA} over the report's checks"
    rest = f"; {len(found) - len(tested)} more with one seed on a side (no test)" if len(found) > len(tested) else ""
    if n_for and n_against:
        return "inconclusive", f"significant both ways ({n_for} for, {n_against} against; {rule}){rest}"
    if n_for or n_against:
        which = "in" if n_for else "against"
        reason = f"{n_for + n_against} of {len(tested)} test(s) significant {which} the declared direction ({rule})"
        return ("agrees" if n_for else "disagrees"), reason + rest
    small = outcomes.count("small")
    floor = f"; {small} significant but below the difference that matters" if small else ""
    return "inconclusive", f"none of {len(tested)} test(s) significant ({rule}){floor}{rest}"


def check_claims(checks: Sequence[CheckEntry], cells: list[Cell]) -> list[ClaimCheck]:
    """Every check's verdict; the tests of all checks form one Holm family."""
    found = [claim_tests(check, cells) for check in checks]
    adjust([c for tests in found for _, c in tests])
    return [
        ClaimCheck(check, *verdict(check.expects_b, [c for _, c in tests]), tests)
        for check, tests in zip(checks, found, strict=True)
    ]
