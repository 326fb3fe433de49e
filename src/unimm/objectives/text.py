"""Text objectives, each with the caption decoder it pairs with.

- ``ARText``: next-token cross-entropy; captions decoded left to right with a KV cache
  (greedy / temperature / top-k / top-p), every row stopping at ``<eos>``.
- ``MaskedText`` (UniDisc, masked diffusion LMs): answers have a fixed length (padded with
  ``<eos>``); in training a share ``t ~ Beta(alpha, 1)`` of the answer tokens (``alpha = 1``:
  uniform, as in MDLM / LLaDA) is replaced by ``[MASK]`` and predicted from the whole,
  bidirectionally attended sequence; captions are produced by unmasking all answer positions in
  parallel over ``sample.text_steps`` rounds (MaskGIT's confidence rule). The answer length is
  ``text.answer_len``, a property of the trained model, not a sampling setting.
  With ``text.joint`` (UniDisc's joint masking, ``objectives/joint.py``) the whole example is noised instead:
  one ``t`` per example (same Beta(alpha, 1), clamped to ``[1e-3, 1]``) masks its answer, its other words
  (t2i prompt, VQA question) and, through the writer, the codes of its images, read or generated; the losses
  of both modalities cover all their masked positions, optionally weighted by ``1 / t`` (``text.elbo_weight``,
  MDLM's ELBO form). Structure is never masked: ``<bos>``, ``<sep>``, ``<boi>`` / ``<eoi>``, the ``<eos>``
  that closes a t2i example, padding (``MaskedText.corruptible``).

Each also scores given texts after an image (``score``, ``text_scoring.py``): the exact log-likelihood for
next-token text, a seeded estimate of the ELBO for masked text.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from unimm.models.contracts import TextObjective
from unimm.objectives.joint import T_MIN, JointMask, masked_loss
from unimm.objectives.text_ar import text_ar_loss
from unimm.objectives.text_scoring import ar_log_likelihood, masked_elbo
from unimm.samplers.masked import maskgit_sample
from unimm.samplers.text import select_next
from unimm.sequence import IGNORE, TEXT, Batch, TextSpan
from unimm.settings import READERS, WRITERS, Settings
from unimm.settings import TEXT as TEXT_OBJECTIVES
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
    joint: bool = Field(
        False,
        description="UniDisc's joint masking: one t per example (t ~ Beta(mask_alpha, 1), clamped to [1e-3, 1]) "
        "masks each of its words (t2i prompt, VQA question, answer; never <bos>, <sep>, image markers or padding) "
        "and each code of its images, read or generated, with probability t; the loss covers every masked "
        "position of both modalities. Needs a writer that can (masked-codes) and reader.kind = 'shared'. "
        "false: only the answer is masked here and the writer masks generated images on its own schedule",
    )
    joint_fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="with joint: the share of examples masked jointly; each other example is masked conditionally "
        "(MMaDA): at its own t only what it produces (an answer, a generated image's codes) is masked, its prompt, "
        "question and read image stay clean, as at sampling. 1 = every example jointly (UniDisc); unused when "
        "joint = false",
    )
    elbo_weight: bool = Field(
        False,
        description="with joint: weight each masked position's loss by 1/t of its example and divide the sum by the "
        "corruptible positions (MDLM's ELBO form, an upper bound on the NLL when mask_alpha = 1), for text and "
        "image codes alike; t >= 1e-3 bounds the weight by 1000. false: the mean over masked positions",
    )

    @model_validator(mode="after")
    def _elbo_needs_joint(self) -> "MaskedTextSettings":
        if self.elbo_weight and not self.joint:
            raise ValueError("text.elbo_weight = true needs text.joint = true (one t per example for both modalities)")
        return self


def answer_positions(batch: Batch) -> torch.Tensor:
    """[B, L] bool: the positions whose own token is a target (an answer's words and its ``<eos>`` padding)."""
    return F.pad(batch.targets[:, :-1] != IGNORE, (1, 0))


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def text_deltas(ids: Iterable[int], decode: Callable[[list[int]], str], eos: int) -> Iterator[str]:
    """Token ids, as a decoder picks them, -> the new text each adds to the decoded prefix (until ``eos``).
    Joined, the pieces are ``decode`` of the ids before ``eos``. A token whose text cannot show yet (whitespace
    that ``decode`` strips at the end, half of a UTF-8 character) comes out with the next token that can."""
    seen: list[int] = []
    shown = ""
    for i in ids:
        if i == eos:
            break
        seen.append(i)
        text = decode(seen)
        if len(text) > len(shown) and text.startswith(shown) and not text.endswith("\ufffd"):
            yield text[len(shown) :]
            shown = text
    rest = decode(seen)
    if len(rest) > len(shown) and rest.startswith(shown):
        yield rest[len(shown) :]


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
    def decode_steps(
        self, ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache
    ) -> Iterator[torch.Tensor]:
        """Left-to-right decoding after images [B, C, H, W], one step per resume: yields each step's token ids [B]
        (``<pad>`` in a row past its ``<eos>``) as soon as they are chosen; ends when every row has ended or after
        ``max_new`` steps."""
        tok, dev = ctx.tokenizer, images.device
        batch = ctx.pack([understanding_prompt(im, ctx.layout, tok, question) for im in images], left_pad=True)
        ctx.check_length(batch.tokens.shape[1] + max_new, "question" if question else "caption prompt")
        batch = batch.to(dev)
        dec = ctx.decoder(ctx.embed_inputs(batch), batch, max_new, use_cache)
        done = torch.zeros(len(images), dtype=torch.bool, device=dev)
        for i in range(max_new):
            nxt = select_next(ctx.text_logits(dec.last), temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_id), nxt)
            yield nxt
            done |= nxt == tok.eos_id
            if bool(done.all()) or i == max_new - 1:
                return
            dec.step(ctx.backbone.embed_tokens(nxt), (batch.next_position + i)[:, None].expand(-1, 3), TEXT)

    @torch.no_grad()
    def caption(self, ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache) -> list[str]:
        steps = self.decode_steps(ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache)
        out = torch.stack(list(steps), 1)
        tok = ctx.tokenizer
        return [tok.decode(_until_eos(row, tok.eos_id)) for row in out.tolist()]

    @torch.no_grad()
    def stream(self, ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache) -> Iterator[str]:
        """The caption of one image [1, C, H, W] as it is decoded: each token's text when the decoder picks it
        (``text_deltas``)."""
        steps = self.decode_steps(ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache)
        eos = ctx.tokenizer.eos_id
        yield from text_deltas((int(nxt[0]) for nxt in steps), ctx.tokenizer.decode, eos)

    @torch.no_grad()
    def score(self, ctx, images, texts, question, generator) -> torch.Tensor:
        """The exact teacher-forced log-likelihood (``generator`` is unused)."""
        return ar_log_likelihood(ctx, images, texts, question)


@dataclass
class MaskedTextState:
    masked: torch.Tensor  # [B, L] bool, positions replaced by [MASK]
    t: torch.Tensor | None = None  # [B] text.joint: each example's masking time, shared with its image codes
    corruptible: torch.Tensor | None = None  # [B, L] bool text.joint: the positions that could be masked
    conditional: torch.Tensor | None = None  # [B] bool text.joint_fraction < 1: examples masked conditionally


@TEXT_OBJECTIVES.register(MaskedTextSettings)
class MaskedText(TextObjective):
    full_attention = True
    prompt_loss = False  # the t2i prompt is a condition, not something to denoise
    extra_vocab = 1

    def __init__(self, settings: MaskedTextSettings) -> None:
        super().__init__(settings)
        self.answer_len, self.mask_id, self.special_ids = settings.answer_len, -1, ()

    def mask_ratio(self, n: int, generator=None) -> torch.Tensor:
        """[n, 1] mask ratios t ~ Beta(alpha, 1), drawn by inverting its CDF t**alpha."""
        return torch.rand(n, 1, generator=generator) ** (1.0 / self.settings.mask_alpha)

    @classmethod
    def check_config(cls, cfg) -> None:
        if not cfg.text.joint:
            return
        problems = []
        if not WRITERS.cls(cfg.writer.kind).joint:
            problems.append(f"writer kind {cfg.writer.kind!r} cannot mask its codes with the text's t")
        if not READERS.cls(cfg.reader.kind).shared:
            problems.append(f"reader kind {cfg.reader.kind!r} does not read images as the writer's codes")
        if problems:
            raise ValueError(
                f"text.joint = true masks every image's codes: {'; '.join(problems)} "
                "(use writer.kind = 'masked-codes' and reader.kind = 'shared', or text.joint = false)"
            )

    def corruptible(self, batch: Batch) -> torch.Tensor:
        """[B, L] bool: the positions ``corrupt`` may replace by [MASK]. The answer (the positions whose own token
        is a target: its words and its ``<eos>`` padding); with ``text.joint`` also every other text token that is
        not a special token, i.e. the t2i prompt and the VQA question. Never ``<bos>``, ``<sep>``, ``<boi>`` /
        ``<eoi>``, the ``<eos>`` closing a t2i example (the sampler gives it, as it gives ``<bos>``), image
        positions (the writer masks those) or padding."""
        answer = answer_positions(batch)
        if not self.settings.joint:
            return answer
        special = torch.tensor(self.special_ids, dtype=batch.tokens.dtype, device=batch.tokens.device)
        words = batch.valid & (batch.modality == TEXT) & ~torch.isin(batch.tokens, special)
        return answer | words

    def corrupt(self, batch: Batch, generator=None) -> tuple[torch.Tensor, MaskedTextState]:
        """Mask the corruptible positions of each example at its time t. With ``text.joint_fraction`` < 1 each
        example is drawn conditional with probability 1 - fraction (one more draw from ``generator``, made only
        then): its corruptible positions shrink to its answer."""
        can = self.corruptible(batch)
        t = self.mask_ratio(batch.tokens.shape[0], generator).to(can.device)
        joint = self.settings.joint
        t = t.clamp_min(T_MIN) if joint else t
        conditional = None
        if joint and self.settings.joint_fraction < 1:
            conditional = (torch.rand(can.shape[0], generator=generator) >= self.settings.joint_fraction).to(can.device)
            can = torch.where(conditional[:, None], answer_positions(batch), can)
        masked = can & (torch.rand(can.shape, generator=generator).to(can.device) < t)
        state = MaskedTextState(masked, t[:, 0], can, conditional) if joint else MaskedTextState(masked)
        return batch.tokens.masked_fill(masked, self.mask_id), state

    def joint_mask(self, state: MaskedTextState) -> JointMask | None:
        if state.t is None:
            return None
        return JointMask(state.t, self.settings.elbo_weight, state.conditional)

    def loss(self, ctx, hidden: torch.Tensor, batch: Batch, state: MaskedTextState) -> torch.Tensor:
        m = state.masked
        if state.t is not None:  # joint masking: mean, or ELBO-weighted sum, over the masked words
            ce = F.cross_entropy(ctx.text_logits(hidden[m]).float(), batch.tokens[m], reduction="none")
            t = state.t[:, None].expand_as(m)[m]
            return masked_loss(ce, t, int(state.corruptible.sum()), self.settings.elbo_weight)
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
