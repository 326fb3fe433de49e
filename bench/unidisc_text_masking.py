"""Why does masked-diffusion captioning (``unidisc``) learn more slowly than next-token captioning?

Trains short runs of the ``unidisc`` preset that differ only in the masked text objective, plus ``show-o``
(identical but for next-token text) as the reference, and measures each run's **class word**: the share
of test digits whose class word the model predicts when the rest of a caption ("handwritten digit ___")
is given. Masked objectives predict it at a [MASK] in that slot; next-token text at the slot before it.
Also the sampled captions' accuracy (``model.caption``), except for the prefix-mask variant, whose
attention ``caption`` does not reproduce.

Variants of the text objective (each a small subclass of ``MaskedText`` swapped in for the run):

- ``uniform``: t ~ U(0, 1), the MDLM / LLaDA answer mask ratio (``text_mask_alpha = 1``);
- ``elbo``: the same with each masked token's loss weighted 1/t, summed over the answer / its length;
- ``prefix``: the prompt and image cannot attend to the answer;
- ``joint``: the t2i prompt is masked and denoised too (a part of UniDisc's corruption of both modalities, which
  the preset's ``text.joint`` now does in full);
- ``all``: the whole answer is always masked (t = 1);
- ``beta2``: t ~ Beta(2, 1) (``text_mask_alpha = 2``).

Results go to ``bench/results/unidisc_text_masking.{json,md}``. Needs the shared VQ tokenizer
(``unimm tokenizer train configs/tok/vq.toml --out runs/tok/vq``) and ``make data``. At the default
1,000 steps each run takes ~4 min on the idle 2-core CPU (~35 min in all); ``--steps 20 --n 50`` is a
smoke run.
"""

import argparse
import contextlib
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from unimm.config import load_config
from unimm.data import load_split, templates_for
from unimm.models import UnifiedModel
from unimm.objectives.text import MaskedText, MaskedTextState
from unimm.sequence import IGNORE, Batch, TextSpan
from unimm.settings import TEXT
from unimm.tasks import answer_ids, understanding_prompt
from unimm.train.loop import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "handwritten digit {}"


def _answer(batch: Batch) -> torch.Tensor:
    return F.pad(batch.targets[:, :-1] != IGNORE, (1, 0))


def prefix_mask(mask: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """[B, L, L] attention mask with the non-answer positions kept from attending to the answer."""
    return mask & ~((~answer)[:, :, None] & answer[:, None, :])


class ElboText(MaskedText):
    """Masked-token loss weighted 1/t, normalised by the answer length, averaged over answers."""

    def corrupt(self, batch: Batch, generator=None):
        answer = _answer(batch)
        t = self.mask_ratio(batch.tokens.shape[0], generator).to(answer.device).clamp_min(1e-3)
        masked = answer & (torch.rand(answer.shape, generator=generator).to(answer.device) < t)
        state = MaskedTextState(masked)
        state.weight = (1.0 / (t * answer.sum(1, keepdim=True).clamp_min(1))).expand_as(masked)[masked]
        state.rows = max(1, int(answer.any(1).sum()))
        return batch.tokens.masked_fill(masked, self.mask_id), state

    def loss(self, ctx, hidden, batch, state):
        m = state.masked
        if not bool(m.any()):
            return hidden.sum() * 0.0
        ce = F.cross_entropy(ctx.text_logits(hidden[m]).float(), batch.tokens[m], reduction="none")
        return (ce * state.weight).sum() / state.rows


class PrefixText(MaskedText):
    """Nothing outside the answer attends to it (set on the batch the forward pass then reads)."""

    def corrupt(self, batch: Batch, generator=None):
        batch.attn_mask = prefix_mask(batch.attn_mask, _answer(batch))
        return super().corrupt(batch, generator)


class JointText(MaskedText):
    prompt_loss = True  # the t2i prompt becomes a masked, denoised span too


class AllMaskedText(MaskedText):
    def mask_ratio(self, n: int, generator=None) -> torch.Tensor:
        return torch.ones(n, 1)


# the variants are of answer-only masking, as when the results were committed (the preset now masks jointly)
ANSWER_ONLY = ["text.joint=false", "text.weight=1"]
# name -> (preset, overrides, text objective class or None for the preset's own)
VARIANTS: dict[str, tuple[str, list[str], type[MaskedText] | None]] = {
    "show-o": ("show-o", [], None),
    "uniform": ("unidisc", ["text.mask_alpha=1", *ANSWER_ONLY], MaskedText),
    "elbo": ("unidisc", ["text.mask_alpha=1", *ANSWER_ONLY], ElboText),
    "prefix": ("unidisc", ["text.mask_alpha=1", *ANSWER_ONLY], PrefixText),
    "joint": ("unidisc", ["text.mask_alpha=1", *ANSWER_ONLY], JointText),
    "all": ("unidisc", ANSWER_ONLY, AllMaskedText),
    "beta2": ("unidisc", ["text.mask_alpha=2", *ANSWER_ONLY], MaskedText),
}


def objective_swap(cls: type[MaskedText] | None):
    """Context in which models are built with ``cls`` as their masked text objective."""
    if cls is None:
        return contextlib.nullcontext()

    return mock.patch.object(TEXT, "build", lambda settings: cls(settings))


@torch.no_grad()
def class_word_accuracy(model: UnifiedModel, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                        prefix: bool = False, batch_size: int = 100) -> float:  # fmt: skip
    """Share of ``images`` whose class word the model predicts with the rest of ``TEMPLATE`` given."""
    tok, masked = model.tokenizer, model.text.full_attention
    ids = [answer_ids(TEMPLATE.format(n), tok, model.layout) for n in names]
    if len({len(i) for i in ids}) != 1:
        raise ValueError("class words of different token lengths; pick a fixed answer length")
    slot = next(j for j in range(len(ids[0])) if len({i[j] for i in ids}) > 1)
    candidates = torch.tensor([i[slot] for i in ids])
    hits = 0
    for s in range(0, len(images), batch_size):
        spans = []
        for im, y in zip(images[s : s + batch_size], labels[s : s + batch_size].tolist(), strict=True):
            answer = list(ids[y])
            if masked:
                answer[slot] = model.text.mask_id
            spans.append([*understanding_prompt(im, model.layout, tok), TextSpan(answer, loss=False)])
        batch = model.pack(spans)  # every row has the same length: no padding
        if prefix:
            tail = torch.zeros_like(batch.valid)
            tail[:, -len(ids[0]) :] = True
            batch.attn_mask = prefix_mask(batch.attn_mask, tail)
        hidden, _ = model.ctx.run(model.ctx.embed_inputs(batch), batch)
        at = batch.tokens.shape[1] - len(ids[0]) + slot - (0 if masked else 1)
        pred = model.ctx.text_logits(hidden[:, at]).argmax(-1)
        hits += int((pred == candidates[labels[s : s + batch_size]]).sum())
    return hits / len(images)


def run_variant(name: str, args: argparse.Namespace) -> dict:
    preset, sets, cls = VARIANTS[name]
    overrides = [
        f"codec.tokenizer={str(args.tokenizer)!r}", f"data.path={str(args.data)!r}", f"train.threads={args.threads}",
        f"train.steps={args.steps}", f"train.save_every={args.steps}", *sets,
    ]  # fmt: skip
    cfg = load_config(ROOT / "configs" / f"{preset}.toml", overrides)
    out = args.runs / name
    with objective_swap(cls):
        t0 = time.perf_counter()
        train(cfg, out, progress=True)
        wall = time.perf_counter() - t0
        model = UnifiedModel.from_pretrained(out).eval()
    if cls is not None and type(model.text) is not cls:
        raise RuntimeError(f"{name}: the model was built with {type(model.text).__name__}, not {cls.__name__}")
    test = load_split(cfg.data.path, "test")
    templates = templates_for(test)
    images, labels = test.images[: args.n], test.labels[: args.n]
    word = class_word_accuracy(model, images, labels, templates.class_names, prefix=cls is PrefixText)
    sampled = None
    if cls is not PrefixText:
        captions = [c for s in range(0, args.n, 100) for c in model.caption(images[s : s + 100])]
        sampled = sum(templates.parse(c) == y for c, y in zip(captions, labels.tolist(), strict=True)) / args.n
    return {
        "variant": name, "preset": preset, "overrides": sets, "objective": type(model.text).__name__,
        "class_word_accuracy": word, "sampled_caption_accuracy": sampled, "train_wall_s": round(wall, 1),
    }  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        "# Masked-text ablation: class-word accuracy of short runs",
        "",
        f"{result['steps']} steps each, seed of the presets, {result['n']} test digits; "
        f"{result['threads']} thread(s), {result['cpu']}, {result['date']}. "
        "Written by `bench/unidisc_text_masking.py`.",
        "",
        "| variant | preset | text objective | class word | sampled captions | train s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        sampled = "n/a" if r["sampled_caption_accuracy"] is None else f"{100 * r['sampled_caption_accuracy']:.1f} %"
        lines.append(
            f"| `{r['variant']}` | `{r['preset']}` {' '.join(r['overrides'])} | `{r['objective']}` | "
            f"{100 * r['class_word_accuracy']:.1f} % | {sampled} | {r['train_wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--n", type=int, default=500, help="test digits scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokenizer", type=Path, default=ROOT / "runs" / "tok" / "vq")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "mnist")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench_text_masking")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if not (args.tokenizer / "config.toml").is_file():
        p.error(f"no VQ tokenizer at {args.tokenizer}: run `unimm tokenizer train configs/tok/vq.toml --out DIR`")
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, args))
        log(json.dumps(rows[-1]))
    result = {
        "steps": args.steps, "n": args.n, "threads": args.threads, "cpu": cpu_model(), "torch": torch.__version__,
        "date": datetime.date.today().isoformat(), "rows": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "unidisc_text_masking.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "unidisc_text_masking.md").write_text(markdown(result))
    return result


if __name__ == "__main__":
    main()
