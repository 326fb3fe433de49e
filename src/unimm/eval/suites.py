"""The evaluation suites by name: how many images ``evaluate`` understands and generates. Kept apart from the
harness so that ``unimm eval --help`` can list them without importing it."""

from __future__ import annotations

from dataclasses import dataclass

# images per set (generated, real test) that FID / KID / precision-recall should see: docs/eval.md. Every
# suite with distribution metrics generates at least this many for a 10-class dataset; fewer are reported with
# a ``distribution_note``.
MIN_DISTRIBUTION_SAMPLES = 1000


@dataclass(frozen=True)
class Suite:
    name: str
    understand_n: int | None  # held-out images captioned and questioned (None: the whole test split)
    per_class: int  # generated images per class (class-template datasets)
    prompts_n: int  # generated images for datasets with free captions (one per test caption)
    batch_size: int = 100
    classifier_steps: int = 600  # training steps of the evaluator networks (cached once trained)
    clip_steps: int = 300
    distribution: bool = True  # FID / KID / precision-recall and CLIP score (needs the CLIP evaluator)
    rank: bool = True  # rank the class captions of the understood images by likelihood (rank_accuracy, caption_nll)
    heldout: bool = True  # the writer's held-out loss of the understood images after their prompts (heldout_image_loss)
    # quality per inference step: sampler step counts to generate at again (generation.step_sweep); () = off
    step_sweep: tuple[int, ...] = ()
    step_sweep_per_class: int = 5  # images per class at each step count (the first prompts of generation's order)
    bootstrap_reps: int = 200  # resamples of both image sets behind each distribution metric's interval
    clips_n: int = 100  # video models: held-out clips understood, and clips generated (eval/video.py)
    edits_n: int = 500  # editing models: held-out edits applied and scored (eval/editing.py)
    interleaved_n: int = 60  # interleaved tasks answered and scored (eval/interleaving.py)
    interleaved_tokens: int = 48  # text tokens per interleaved reply at most


# The generated images serve both prompt accuracy and the distribution metrics (one set of samples).
SUITES = {
    "quick": Suite("quick", understand_n=500, per_class=100, prompts_n=1000),
    "full": Suite("full", understand_n=None, per_class=100, prompts_n=1000),
    "atlas": Suite("atlas", understand_n=200, per_class=100, prompts_n=1000),
    # `unimm demo`: full's counts without the distribution metrics (their CLIP would add minutes of training on a
    # CPU) and the held-out image loss (3.2x captioning's time: five backbone passes per image,
    # bench/results/heldout_loss.md)
    "demo": Suite("demo", understand_n=None, per_class=100, prompts_n=1000, distribution=False, heldout=False),
    # interleaved generation only (eval/interleaving.py): text and images answered in slots, scored exactly
    "interleaved": Suite(
        "interleaved", understand_n=0, per_class=0, prompts_n=0, distribution=False, rank=False, heldout=False
    ),
}
SUITE_NAMES = " | ".join(SUITES)  # as help and errors list them


def suite_by_name(name: str) -> Suite:
    """``SUITES[name]``; ``ValueError`` naming every suite for an unknown one."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; use one of {SUITE_NAMES}")
    return SUITES[name]
