"""Text objectives, each with the caption decoder it pairs with.

- ``ARText``: next-token cross-entropy; captions decoded left to right with a KV cache
  (greedy / temperature / top-k / top-p), every row stopping at ``<eos>``.
- ``MaskedText`` (UniDisc, masked diffusion LMs): answers have a fixed length (padded with
  ``<eos>``); in training a share ``t ~ Beta(alpha, 1)`` of the answer tokens (``alpha = 1``:
  uniform, as in MDLM / LLaDA) is replaced by ``[MASK]`` and predicted from the whole,
  bidirectionally attended sequence; captions are produced by unmasking all answer positions in
  parallel over ``sample.text_steps`` rounds (MaskGIT's confidence rule). The answer length is
  ``text.answer_len``, a property of the trained model, not a sampling setting.

Each also scores given texts after an image (``score``, ``text_scoring.py``): the exact log-likelihood for
next-token text, a seeded estimate of the ELBO for masked text.
"""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from unimm.models.contracts import TextObjective
from unimm.objectives.text_ar import text_ar_loss
from unimm.objectives.text_scoring import ar_log_likelihood, masked_elbo
from unimm.samplers.masked import maskgit_sample
from unimm.samplers.text import select_next
from unimm.sequence import IGNORE, TEXT, Batch, TextSpan
from unimm.settings import TEXT as TEXT_OBJECTIVES
from unimm.settings import Settings
from unimm.tasks import understanding_prompt


class ARTextSettings(Settings):
    """``text.kind = "ar"``: next-token prediction, decoded left to right."""

    kind: Literal["ar"] = "ar"
    weight: float = Field(1.0, ge=0, description="w_text in L = w_text * L_text + lambda * L_image")


class MaskedTextSettings(Settings):
    """``text.kind = "masked"``: masked diffusion over fixed-length answers (UniDisc, MMaDA)."""

    kind: Literal["masked"] = "masked"
    weight: float = Field(1.0, ge=0, description="w_text in L = w_text * L_text + lambda * L_image")
    mask_alpha: float = Field(
        1.0,
        gt=0,
        description="answer mask ratio t ~ Beta(alpha, 1); 1 = uniform (MDLM, LLaDA), > 1 masks more of the "
        "answer more often (more steps predict the answer from the image alone)",
    )
    answer_len: int = Field(16, gt=0, description="fixed answer length in tokens (padded with <eos>)")


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


@TEXT_OBJECTIVES.register(ARTextSettings)
class ARText(TextObjective):
    def __init__(self, settings: ARTextSettings | None = None) -> None:
        super().__init__(settings or ARTextSettings())

    def corrupt(self, batch: Batch, generator=None) -> tuple[torch.Tensor, None]:
        return batch.tokens, None

    def loss(self, ctx, hidden: torch.Tensor, batch: Batch, state: None) -> torch.Tensor:
        has_target = batch.targets != IGNORE
        return text_ar_loss(ctx.text_logits(hidden[has_target]), batch.targets[has_target])

    @torch.no_grad()
    def caption(self, ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache) -> list[str]:
        tok, dev = ctx.tokenizer, images.device
        batch = ctx.pack([understanding_prompt(im, ctx.layout, tok, question) for im in images], left_pad=True)
        ctx.check_length(batch.tokens.shape[1] + max_new, "question" if question else "caption prompt")
        batch = batch.to(dev)
        dec = ctx.decoder(ctx.embed_inputs(batch), batch, max_new, use_cache)
        out = torch.empty(len(images), 0, dtype=torch.long, device=dev)
        done = torch.zeros(len(images), dtype=torch.bool, device=dev)
        for i in range(max_new):
            nxt = select_next(ctx.text_logits(dec.last), temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_id), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == tok.eos_id
            if bool(done.all()) or i == max_new - 1:
                break
            dec.step(ctx.backbone.embed_tokens(nxt), (batch.next_position + i)[:, None].expand(-1, 3), TEXT)
        return [tok.decode(_until_eos(row, tok.eos_id)) for row in out.tolist()]

    @torch.no_grad()
    def score(self, ctx, images, texts, question, generator) -> torch.Tensor:
        """The exact teacher-forced log-likelihood (``generator`` is unused)."""
        return ar_log_likelihood(ctx, images, texts, question)


@dataclass
class MaskedTextState:
    masked: torch.Tensor  # [B, L] bool, answer positions replaced by [MASK]


@TEXT_OBJECTIVES.register(MaskedTextSettings)
class MaskedText(TextObjective):
    full_attention = True
    prompt_loss = False  # the t2i prompt is a condition, not something to denoise
    extra_vocab = 1

    def __init__(self, settings: MaskedTextSettings) -> None:
        super().__init__(settings)
        self.answer_len, self.mask_id = settings.answer_len, -1

    def mask_ratio(self, n: int, generator=None) -> torch.Tensor:
        """[n, 1] answer mask ratios t ~ Beta(alpha, 1), drawn by inverting its CDF t**alpha."""
        return torch.rand(n, 1, generator=generator) ** (1.0 / self.settings.mask_alpha)

    def corrupt(self, batch: Batch, generator=None) -> tuple[torch.Tensor, MaskedTextState]:
        answer = F.pad(batch.targets[:, :-1] != IGNORE, (1, 0))  # positions whose own token is a target
        t = self.mask_ratio(batch.tokens.shape[0], generator).to(answer.device)
        masked = answer & (torch.rand(answer.shape, generator=generator).to(answer.device) < t)
        return batch.tokens.masked_fill(masked, self.mask_id), MaskedTextState(masked)

    def loss(self, ctx, hidden: torch.Tensor, batch: Batch, state: MaskedTextState) -> torch.Tensor:
        m = state.masked
        if not bool(m.any()):
            return hidden.sum() * 0.0
        return F.cross_entropy(ctx.text_logits(hidden[m]).float(), batch.tokens[m])

    @torch.no_grad()
    def caption(self, ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache) -> list[str]:
        """Unmask a fixed-length answer in ``sample.text_steps`` rounds (None = one per token); ``max_new``,
        ``top_k``, ``top_p`` and ``use_cache`` do not apply."""
        tok, dev, n = ctx.tokenizer, images.device, self.answer_len
        spans = [
            [*understanding_prompt(im, ctx.layout, tok, question), TextSpan([self.mask_id] * n, loss=False)]
            for im in images
        ]
        batch = ctx.pack(spans, left_pad=True)
        ctx.check_length(batch.tokens.shape[1], "question" if question else "caption prompt")
        batch = batch.to(dev)
        base = ctx.embed_inputs(batch)

        def logits_fn(answer: torch.Tensor) -> torch.Tensor:
            x = torch.cat([base[:, :-n], ctx.backbone.embed_tokens(answer)], 1)
            hidden, _ = ctx.run(x, batch)
            return ctx.text_logits(hidden[:, -n:])

        ids = maskgit_sample(
            logits_fn,
            len(images),
            n,
            mask_id=self.mask_id,
            steps=ctx.sample.text_steps or n,
            temperature=temperature,
            choice_temperature=0.0,
            generator=generator,
            device=dev,
        )
        return [tok.decode(_until_eos(row, tok.eos_id)) for row in ids.tolist()]

    @torch.no_grad()
    def score(self, ctx, images, texts, question, generator) -> torch.Tensor:
        """A lower bound on the log-likelihood, estimated with ``sample.score_draws`` random masks (None: one of
        each size) drawn from ``generator`` (``text_scoring.masked_elbo``)."""
        return masked_elbo(ctx, images, texts, question, self.mask_id, ctx.sample.score_draws, generator)
