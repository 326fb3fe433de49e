"""Discrete generation paths over VQ codes: autoregressive (chameleon, janus) and masked (show-o, unidisc).

A ``VQCodes`` tokenizer (``codec.kind = "vq"``) turns an image into ``h × w`` code indices. With
``writer.vocab = "shared"``
the codes are extra rows of the language model's own vocabulary (embedding and output head, as in
Chameleon: one vocabulary); with ``"separate"`` they get their own embedding and head (Janus's
generation adaptor and head). Either way the image logits cover the ``K`` codes only, so sampling
inside an image span is constrained to image codes, and the span length is the tokenizer's grid.
With ``writer.code_features`` a code's input embedding also gets a learned projection of its
(frozen) codebook vector, so codes that decode alike start out embedded alike instead of as
unrelated symbols; this is what lets a small model read VQ codes nearly as well as continuous latents.

- ``ARCodeWriter``: next-code prediction in raster order, causal inside the span; sampled one code
  at a time with a KV cache and classifier-free guidance on the logits. A clip's codes come frame after
  frame (raster-in-time), so each frame is predicted from the frames before it.
- ``MaskedCodeWriter``: MaskGIT masked-token prediction, bidirectional inside the span, cosine
  mask-ratio schedule in training; iterative parallel decoding with guidance in sampling. Under joint
  masking (``text.joint``, UniDisc) it masks the codes of every image, read or generated, at the time the
  text objective drew for the image's example instead (``joint_inputs``, ``objectives/joint.py``).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from unimm.config import Config
from unimm.models.contracts import EVAL_GRID, Writer
from unimm.objectives.joint import JointMask, bernoulli_mask, masked_loss
from unimm.samplers.guidance import guide
from unimm.samplers.masked import cosine_mask_ratio, maskgit_sample, ratio_mask, sample_mask
from unimm.samplers.text import select_next
from unimm.sequence import IMAGE, span_cells
from unimm.settings import WRITERS, Settings
from unimm.tasks import ImagePrompt, as_prompt, before_generated


class CodeSettings(Settings):
    weight: float = Field(0.5, ge=0, description="lambda in L = w_text * L_text + lambda * L_image")
    vocab: Literal["shared", "separate"] = Field(
        "shared", description="codes share the text vocabulary and head (Chameleon) or get their own (Janus)"
    )
    code_features: bool = Field(
        True, description="add a learned projection of each code's codebook vector to its token embedding"
    )


class ARCodeSettings(CodeSettings):
    """``writer.kind = "ar-codes"``: VQ codes predicted next-token in raster order (Chameleon, Janus)."""

    kind: Literal["ar-codes"] = "ar-codes"


class MaskedCodeSettings(CodeSettings):
    """``writer.kind = "masked-codes"``: VQ codes predicted by masked-token modelling (Show-o, UniDisc)."""

    kind: Literal["masked-codes"] = "masked-codes"


@dataclass
class CodeTargets:
    codes: torch.Tensor  # [G, n] codes of the generated images (joint masking: of every image)
    masked: torch.Tensor | None = None  # [G, n] bool, masked objective: positions that carry the loss
    joint: JointMask | None = None  # joint masking: each image's masking time [G] and the loss's weighting


class CodeWriter(Writer):
    codecs = ("vq",)
    keeps_source = True

    def __init__(self, settings: CodeSettings, cfg: Config) -> None:
        super().__init__(settings)
        self.codec = self.build_codec(cfg)
        self.grid, self.num_codes = self.codec.grid, self.codec.num_codes
        self.mask_code = self.num_codes  # one more row: the [MASK] image token
        self.shared = settings.vocab == "shared"
        self.extra_vocab = self.num_codes + 1 if self.shared else 0
        if not self.shared:
            self.embed = nn.Embedding(self.num_codes + 1, cfg.model.dim)
            self.head = nn.Linear(cfg.model.dim, self.num_codes, bias=False)
        self.code_proj = nn.Linear(cfg.codec.dim, cfg.model.dim) if settings.code_features else None
        self.offset = 0

    def bind(self, vocab_offset: int) -> None:
        """Shared vocabulary: code ``c`` is token ``vocab_offset + c``."""
        self.offset = vocab_offset

    def init_weights(self, ctx) -> None:
        """With codebook features, a code's own embedding row starts at zero: at first a code reads as
        the projection of its codebook vector (like a continuous latent), and the row learns the rest."""
        if self.code_proj is None:
            return
        with torch.no_grad():
            rows = ctx.backbone.embed_tokens.weight[self.offset :] if self.shared else self.embed.weight
            rows[: self.num_codes].zero_()

    def embed_codes(self, ctx, codes: torch.Tensor) -> torch.Tensor:
        """codes [...] (``mask_code`` allowed) -> input embeddings [..., dim]."""
        emb = ctx.backbone.embed_tokens(codes + self.offset) if self.shared else self.embed(codes)
        if self.code_proj is not None:
            is_code = (codes < self.num_codes).unsqueeze(-1)
            vectors = self.codec.code_vectors(codes.clamp_max(self.num_codes - 1)) * is_code
            emb = emb + self.code_proj(vectors)
        return emb

    def code_logits(self, ctx, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., dim] -> logits over the K image codes only [..., K]."""
        if self.shared:
            return F.linear(hidden, ctx.backbone.lm_head.weight[self.offset : self.offset + self.num_codes])
        return self.head(hidden)

    def read_inputs(self, ctx, images: torch.Tensor) -> torch.Tensor:
        return self.embed_codes(ctx, self.codec.encode(images))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(codes).clamp(-1, 1)

    def kept_codes(self, ctx, prompts: list[str | ImagePrompt]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``sample.edit_keep`` (None when 0): (the cells to keep [B, n] bool, the sources' codes [B, n])."""
        if ctx.sample.edit_keep == 0:
            return None
        keep = self.kept_cells(ctx, prompts)
        return keep, self.codec.encode(torch.stack([as_prompt(p).source for p in prompts]).to(ctx.device))


@WRITERS.register(ARCodeSettings)
class ARCodeWriter(CodeWriter):
    causal = True
    corrupts_generated = False  # teacher forcing: a generated span's inputs are its true codes
    stepped = False  # one backbone pass per code, whatever ``steps`` says

    @classmethod
    def samplers(cls, cfg: Config) -> tuple[str, ...]:
        return ("ar",)

    def train_inputs(self, ctx, images: torch.Tensor, generate: torch.Tensor, generator=None):
        codes = self.codec.encode(images)
        return self.embed_codes(ctx, codes), CodeTargets(codes[generate])

    def next_code_logits(self, ctx, hidden: torch.Tensor, gen_pos: torch.Tensor) -> torch.Tensor:
        """Logits [G * n, K] of the generated codes in order: code i from the hidden state one position earlier
        (``<boi>`` for the first)."""
        prev = F.pad(hidden[:, :-1], (0, 0, 1, 0))
        return self.code_logits(ctx, prev[gen_pos])

    def loss(self, ctx, hidden: torch.Tensor, gen_pos: torch.Tensor, state: CodeTargets, generator=None):
        logits = self.next_code_logits(ctx, hidden, gen_pos)
        loss = F.cross_entropy(logits.float(), state.codes.flatten())
        return loss, {"image_loss": loss.detach()}

    @torch.no_grad()
    def eval_loss(self, ctx, images: torch.Tensor, prompts: list[str], generator=None) -> torch.Tensor:
        """The exact negative log-likelihood of each image's VQ codes given its prompt, teacher-forced in raster
        order: nats per code (the mean over the h*w codes), the training loss of one image. Nothing is drawn
        (``generator`` is unused); it compares only between models with the same VQ codec."""
        batch, base = ctx.generation_batch(prompts, guided=False)
        emb, state = self.train_inputs(ctx, images, torch.ones(len(images), dtype=torch.bool, device=images.device))
        hidden, _ = ctx.run(base.masked_scatter(batch.generated().unsqueeze(-1), emb.to(base.dtype)), batch)
        logits = self.next_code_logits(ctx, hidden, batch.generated())
        return F.cross_entropy(logits.float(), state.codes.flatten(), reduction="none").view_as(state.codes).mean(1)

    @torch.no_grad()
    def generate(
        self,
        ctx,
        prompts: list[str | ImagePrompt],
        scale: float,
        steps: int,
        sampler: str,
        generator=None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Raster-order sampling of exactly T*h*w codes, frame after frame (``steps`` is unused: one step per code),
        continuing each prompt's layout up to the generated image's ``<boi>`` (an edit's source read in it)."""
        s = ctx.sample
        cells = span_cells(self.grid).tolist()
        n = len(cells)
        seqs = ctx.generation_spans(prompts, guided=scale != 1.0)
        batch = ctx.pack([before_generated(sp, ctx.tokenizer.boi_id) for sp in seqs], left_pad=True).to(ctx.device)
        x = ctx.embed_inputs(batch)
        links = self.source_links(ctx, seqs, batch, x)
        if links is not None:  # the prompt's last position, <boi>, predicts the first code
            x = torch.cat([x[:, :-1], x[:, -1:] + links[:, :1]], 1)
        dec = ctx.decoder(x, batch, n, use_cache)
        start = batch.next_position
        kept = self.kept_codes(ctx, prompts)  # sample.edit_keep: a kept cell's code is its source's
        out = []
        for i in range(n):
            logits = self.code_logits(ctx, dec.last)
            logits = guide(logits, scale) if scale != 1.0 else logits
            code = select_next(logits, s.image_temperature, s.image_top_k, None, generator)
            if kept is not None:
                code = torch.where(kept[0][:, i], kept[1][:, i], code)
            out.append(code)
            if i == n - 1:
                break
            code2 = code.repeat(2) if scale != 1.0 else code
            frame, row, col = cells[i]
            pos = torch.stack([start + frame, start + row, start + col], 1).to(code.device)
            emb = self.embed_codes(ctx, code2)
            dec.step(emb if links is None else emb + links[:, i + 1], pos, IMAGE)
        return self.decode(torch.stack(out, 1))

    def source_links(self, ctx, seqs: list, batch, x: torch.Tensor) -> torch.Tensor | None:
        """What ``ctx.linked`` adds to the position that predicts each code of an aligned target (``model.source_link``:
        the prompt's ``<boi>`` for code 0, code i for code i + 1), [B, n, dim], zero in rows without one; None when
        no row's target is aligned. The prompt ``batch`` (embeddings ``x``) ends at the target's ``<boi>``, right
        after its source: the last image of each row."""
        targets = [next(sp for sp in spans if getattr(sp, "generate", False) and sp.image is None) for spans in seqs]
        if ctx.link is None or not any(sp.aligned for sp in targets):
            return None
        src = x.new_zeros(len(targets), math.prod(self.grid), x.shape[-1])
        for b, sp in enumerate(targets):
            if sp.aligned:
                src[b] = x[b, batch.image_id[b] == batch.image_id[b].max()]
        return ctx.link(src)


@WRITERS.register(MaskedCodeSettings)
class MaskedCodeWriter(CodeWriter):
    causal = False
    joint = True

    @classmethod
    def samplers(cls, cfg: Config) -> tuple[str, ...]:
        return ("maskgit",)

    def train_inputs(self, ctx, images: torch.Tensor, generate: torch.Tensor, generator=None):
        """Generated images: a cosine-schedule share of their codes replaced by [MASK]; read ones clean."""
        codes = self.codec.encode(images)
        mask = sample_mask(codes.shape[0], codes.shape[1], generator).to(codes.device) & generate[:, None]
        inputs = codes.masked_fill(mask, self.mask_code)
        return self.embed_codes(ctx, inputs), CodeTargets(codes[generate], mask[generate])

    def joint_inputs(self, ctx, images: torch.Tensor, mask: JointMask, generator=None):
        """Every image's codes, read or generated, replaced by [MASK] independently with its example's
        probability ``mask.t`` (0 for an image that a conditionally masked example reads: it stays clean)."""
        codes = self.codec.encode(images)
        masked = bernoulli_mask(mask.t.to(codes.device), codes.shape[1], generator)
        inputs = codes.masked_fill(masked, self.mask_code)
        return self.embed_codes(ctx, inputs), CodeTargets(codes, masked, mask)

    def loss(self, ctx, hidden: torch.Tensor, gen_pos: torch.Tensor, state: CodeTargets, generator=None):
        """Cross-entropy at the masked positions, predicted from their own hidden states (joint masking: mean or
        ELBO-weighted, ``objectives/joint.masked_loss``)."""
        masked = state.masked.flatten()
        logits = self.code_logits(ctx, hidden[gen_pos][masked])
        if state.joint is not None:
            ce = F.cross_entropy(logits.float(), state.codes.flatten()[masked], reduction="none")
            t = state.joint.t[:, None].expand_as(state.masked).flatten()[masked]
            loss = masked_loss(ce, t, state.joint.corruptible_codes(state.masked.shape[1]), state.joint.elbo)
        else:
            loss = F.cross_entropy(logits.float(), state.codes.flatten()[masked])
        return loss, {"image_loss": loss.detach()}

    @torch.no_grad()
    def eval_loss(self, ctx, images: torch.Tensor, prompts: list[str], generator=None) -> torch.Tensor:
        """The masked-code cross-entropy of each image given its prompt, nats per masked code: at each mask ratio
        gamma(u), u in ``EVAL_GRID`` (0.99, 0.89, 0.71, 0.45, 0.16 of the codes, as training's cosine schedule
        draws them), one mask of uniformly random positions from ``generator``, shared by the images; the mean
        over the masked codes, then over the five ratios. It compares only between models with the same VQ codec."""
        batch, base = ctx.generation_batch(prompts, guided=False)
        codes = self.codec.encode(images)
        ratios = cosine_mask_ratio(torch.tensor(EVAL_GRID))
        per_ratio = []
        for mask in ratio_mask(ratios, codes.shape[1], generator).to(codes.device):
            mask = mask.expand_as(codes)
            hidden = ctx.run_with_images(base, batch, self.embed_codes(ctx, codes.masked_fill(mask, self.mask_code)))
            nll = F.cross_entropy(self.code_logits(ctx, hidden[mask]).float(), codes[mask], reduction="none")
            per_ratio.append(nll.view(len(codes), -1).mean(1))
        return torch.stack(per_ratio).mean(0)

    @torch.no_grad()
    def generate(
        self,
        ctx,
        prompts: list[str | ImagePrompt],
        scale: float,
        steps: int,
        sampler: str,
        generator=None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """MaskGIT: ``steps`` rounds of parallel prediction, keeping the most confident codes each round."""
        guided, s = scale != 1.0, ctx.sample
        batch, base = ctx.generation_batch(prompts, guided=guided)
        n = math.prod(self.grid)

        kept = self.kept_codes(ctx, prompts)  # sample.edit_keep: seen from the first round, drawn with certainty

        def logits_fn(codes: torch.Tensor) -> torch.Tensor:
            if kept is not None:
                codes = torch.where(kept[0], kept[1], codes)
            codes2 = codes.repeat(2, 1) if guided else codes
            logits = self.code_logits(ctx, ctx.run_with_images(base, batch, self.embed_codes(ctx, codes2)))
            logits = guide(logits, scale) if guided else logits
            if kept is not None:
                certain = torch.full_like(logits, float("-inf")).scatter(-1, kept[1][..., None], 0.0)
                logits = torch.where(kept[0][..., None], certain, logits)
            return logits

        codes = maskgit_sample(
            logits_fn,
            len(prompts),
            n,
            mask_id=self.mask_code,
            steps=steps,
            temperature=s.image_temperature,
            choice_temperature=s.choice_temperature,
            generator=generator,
            device=base.device,
        )
        return self.decode(codes)
