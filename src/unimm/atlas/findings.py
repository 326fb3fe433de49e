"""What the numbers show on the survey's questions, and how they stand next to published directional claims.

A question compares *matched pairs* of cells: same size and budget, the four strategy axes of
docs/architecture.md (the kinds of writer, reader, layers and text objective) equal except the one in
question. Presets may still differ in other settings (loss weights, vocabulary, augmentation); every pair
lists those beyond what the axis itself entails. What the axis entails is read off the part sections, not
kept by hand: the axis's own section, every other part section whose kind differs between the two (with
the other axes equal, only the axis can have changed it, e.g. the codec a writer needs) and the sampler
(each writer names its own). Differences are judged by ``comparison.py``'s rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unimm.atlas.comparison import Comparison
from unimm.atlas.results import Cell

AXES = ("writer.kind", "reader.kind", "layers.kind", "text.kind")
PART_SECTIONS = ("layers", "codec", "writer", "denoiser", "reader", "reader.connector", "text")
IGNORED = ("name", "train.seed", "train.steps", "train.warmup", "train.save_every", "train.log_every",
           "train.threads", "train.parallel", "codec.tokenizer", "sample.sampler")  # fmt: skip
PRIMARY = {
    "generation": ("prompt_accuracy", "clip_score"),
    "understanding": ("caption_accuracy", "exact_match", "caption_cider"),
    "task_loss": ("task_loss",),
}
SECONDARY = {"generation": ("fid",), "understanding": ("vqa_accuracy", "rank_accuracy"), "task_loss": ()}


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


@dataclass(frozen=True)
class Claim:
    source: str
    statement: str
    question: str
    kind: str  # the metric kind the claim is about; it says B beats A
    b_values: frozenset[str] | None = None  # restrict side B (None: the question's)


CLAIMS = (
    Claim("Transfusion (Zhou et al. 2024, arXiv 2408.11039)",
          "diffusion images beat discrete autoregressive images at equal compute", "ar-vs-diffusion", "generation"),
    Claim("Mixture-of-Transformers (Liang et al. 2024, arXiv 2411.04996)",
          "modality-untied weights (MoT) reach the dense model's loss with fewer FLOPs", "dense-vs-moe", "task_loss",
          frozenset({"mot"})),
    Claim("Janus (Wu et al. 2024, arXiv 2410.13848)",
          "decoupling the understanding encoder from the generation tokenizer helps understanding",
          "shared-vs-decoupled", "understanding"),
)  # fmt: skip


@dataclass
class Pair:
    question: Question
    a: Cell
    b: Cell

    def value(self, cell: Cell) -> str:
        return config_value(cell.first.run.config, self.question.axis)

    def differences(self, limit: int = 8) -> str:
        """Config keys in which the two cells differ besides the axis and what it entails (the confounds)."""
        ca, cb = self.a.first.run.config, self.b.first.run.config
        fa, fb = flatten(ca), flatten(cb)
        skip = entailed_sections(self.question.axis, ca, cb)
        keys = sorted(fa.keys() | fb.keys(), key=lambda k: (list(fa) + list(fb)).index(k))
        diff = [k for k in keys if k not in IGNORED and k.rsplit(".", 1)[0] not in skip and fa.get(k) != fb.get(k)]
        shown = ", ".join(f"{k} ({fa.get(k)} vs {fb.get(k)})" for k in diff[:limit])
        return shown + (f" and {len(diff) - limit} more" if len(diff) > limit else "") if diff else "nothing"


def matched_pairs(question: Question, cells: list[Cell], b_values: frozenset[str] | None = None) -> list[Pair]:
    b_values = b_values or question.b_values
    others = [k for k in AXES if k != question.axis]
    pairs = []
    for a in cells:
        ra = a.first.run
        if config_value(ra.config, question.axis) not in question.a_values:
            continue
        for b in cells:
            rb = b.first.run
            same = (ra.size, ra.budget_name) == (rb.size, rb.budget_name) and all(
                config_value(ra.config, k) == config_value(rb.config, k) for k in others
            )
            if same and config_value(rb.config, question.axis) in b_values:
                pairs.append(Pair(question, a, b))
    return pairs


def compare(pair: Pair, kind: str) -> Comparison | None:
    """The pair's comparison on the first metric of ``kind`` both cells have."""
    for metric in PRIMARY[kind] + SECONDARY[kind]:
        a, b = pair.a.stat(metric), pair.b.stat(metric)
        if a is not None and b is not None:
            return Comparison(metric, a, b)
    return None


def comparisons(pair: Pair, kind: str) -> list[Comparison]:
    """The primary comparison of ``kind`` and its secondary metrics."""
    first = compare(pair, kind)
    out = [first] if first else []
    for metric in SECONDARY[kind]:
        a, b = pair.a.stat(metric), pair.b.stat(metric)
        if a is not None and b is not None and (first is None or metric != first.metric):
            out.append(Comparison(metric, a, b))
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
class Summary:
    question: Question
    pairs: list[tuple[str, list[str]]] = field(default_factory=list)  # (heading sentence, comparisons)
    note: str | None = None


def summarise(question: Question, cells: list[Cell]) -> Summary:
    """For each matched pair: a heading sentence, then one sentence per metric, and the confounds."""
    pairs = matched_pairs(question, cells)
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
        lines = [c.sentence(a, b) for kind in question.kinds for c in comparisons(p, kind)]
        if question.key == "dense-vs-moe" and (reach := _reach_sentence(p)):
            lines.append(reach)
        lines.append(f"Other settings that differ: {p.differences()}.")
        out.pairs.append((head, lines))
    return out


@dataclass
class ClaimCheck:
    claim: Claim
    verdict: str  # agrees | disagrees | inconclusive | not tested
    reason: str
    evidence: list[str]


def check_claim(claim: Claim, cells: list[Cell]) -> ClaimCheck:
    """Agrees / disagrees when matched pairs show the claimed side better / worse beyond the seed spread and
    none shows the opposite; inconclusive otherwise; not tested without a matched pair."""
    question = next(q for q in QUESTIONS if q.key == claim.question)
    pairs = matched_pairs(question, cells, claim.b_values)
    found = [(p, c) for p in pairs if (c := compare(p, claim.kind)) is not None]
    if not found:
        return ClaimCheck(claim, "not tested", "no matched pair of finished runs in this atlas", [])
    evidence = [c.sentence(p.a.key, p.b.key) for p, c in found]
    outcomes = [c.outcome for _, c in found]
    n, n_b, n_a = len(outcomes), outcomes.count("b"), outcomes.count("a")
    if n_b and n_a:
        return ClaimCheck(
            claim, "inconclusive", f"the {n} comparisons point both ways beyond the seed spread", evidence
        )
    if n_b or n_a:
        rest = f"; {n - n_b - n_a} other(s) within the seed spread or single-seed" if n > n_b + n_a else ""
        reason = f"{n_b + n_a} of {n} comparison(s) beyond the seed spread{rest}"
        return ClaimCheck(claim, "agrees" if n_b else "disagrees", reason, evidence)
    single, within = outcomes.count("one-seed"), outcomes.count("within")
    parts = [f"{single} with a single seed on a side (no spread)" if single else "",
             f"{within} within the seed spread" if within else ""]  # fmt: skip
    return ClaimCheck(claim, "inconclusive", f"of {n} comparison(s): " + ", ".join(p for p in parts if p), evidence)
