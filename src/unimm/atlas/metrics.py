"""The metrics the atlas reads from every run: where each lives in ``eval.json`` and which direction is better."""

from __future__ import annotations

# flat metric name -> (section of eval.json, key (dotted: nested), higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "caption_accuracy": ("understanding", "caption_accuracy", True),
    "rank_accuracy": ("understanding", "rank_accuracy", True),
    "caption_nll": ("understanding", "caption_nll", False),
    "vqa_accuracy": ("understanding", "vqa_accuracy", True),
    "exact_match": ("understanding", "exact_match", True),
    "caption_bleu_4": ("understanding", "caption_bleu_4", True),
    "caption_cider": ("understanding", "caption_cider", True),
    "prompt_accuracy": ("generation", "prompt_accuracy", True),
    "fid": ("generation", "fid", False),
    "kid_mean": ("generation", "kid_mean", False),
    "precision": ("generation", "precision", True),
    "recall": ("generation", "recall", True),
    "clip_score": ("generation", "clip_score", True),
    # GenEval-style checks on the shapes data (eval/geneval.py): share of images passing, read from the pixels
    **{
        f"geneval_{c}": ("generation", f"geneval.{c}", True)
        for c in ("object", "count", "colour", "position", "overall")
    },
    # the writer's loss of held-out images (Writer.eval_loss): compare only runs with the same writer kind and codec
    "heldout_image_loss": ("generation", "heldout_image_loss", False),
    # a strategy's further suites (atlas/further.py): exact edit scores on an edit dataset, slot scores of
    # interleaved replies on digits or shapes
    "edit_accuracy": ("editing", "edit.rate", True),
    "edit_preservation": ("editing", "preservation.rate", True),
    "edit_both": ("editing", "both.rate", True),
    "slot_accuracy": ("interleaved", "slot_accuracy.rate", True),
    "interleaved_task_accuracy": ("interleaved", "task_accuracy.rate", True),
    "interleaved_consistency": ("interleaved", "consistency.rate", True),
    # a video dataset (eval/video.py): per-frame prompt accuracy, motion from pixels, one class in every frame,
    # caption exact match and the direction question on held-out clips
    "frame_prompt_accuracy": ("generation", "frame_prompt_accuracy", True),
    "motion_accuracy": ("generation", "motion_accuracy", True),
    "temporal_consistency": ("generation", "same_class_every_frame", True),
    "caption_exact_match": ("understanding", "caption_exact_match", True),
    "direction_vqa_accuracy": ("understanding", "direction_vqa_accuracy", True),
    "caption_latency_s": ("understanding", "latency_s", False),
    "gen_latency_s": ("generation", "latency_s", False),
}
# on a video dataset: the metric that asks an image metric's question of clips (eval/video.py). A declared check, a
# survey question or a headline on the image metric reads a pair of video cells on its analogue (both cells must
# lack the image metric and have the analogue), and the report names the metric it used
VIDEO_ANALOGUE: dict[str, str] = {
    "prompt_accuracy": "frame_prompt_accuracy",
    "caption_accuracy": "caption_exact_match",
}
# every metric a comparison can use: the evaluation's and the final training loss (read from metrics.jsonl)
HIGHER_IS_BETTER: dict[str, bool] = {k: v[2] for k, v in METRICS.items()} | {"task_loss": False}
# metrics in the writer's own unit (Writer.eval_loss): compared only between runs with the same writer, codec and
# denoiser settings, so never on the writer.kind axis
WRITER_UNITS = frozenset({"heldout_image_loss"})
# metrics that are rates in [0, 1]: a difference below 0.005 does not matter
RATES = frozenset(
    {
        "caption_accuracy",
        "rank_accuracy",
        "vqa_accuracy",
        "exact_match",
        "caption_bleu_4",
        "prompt_accuracy",
        "precision",
        "recall",
        *(f"geneval_{c}" for c in ("object", "count", "colour", "position", "overall")),
        "edit_accuracy",
        "edit_preservation",
        "edit_both",
        "slot_accuracy",
        "interleaved_task_accuracy",
        "interleaved_consistency",
        "frame_prompt_accuracy",
        "motion_accuracy",
        "temporal_consistency",
        "caption_exact_match",
        "direction_vqa_accuracy",
    }
)


def metric_value(evaluation: dict, name: str) -> float | None:
    """Metric ``name`` of an ``eval.json`` dict, or None where the run has no such number."""
    section, key, _ = METRICS[name]
    node = evaluation.get(section, {})
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None
