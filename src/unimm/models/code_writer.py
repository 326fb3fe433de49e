"""Discrete generation paths over VQ codes: autoregressive (chameleon, janus) and masked (show-o, unidisc).

A ``VQCodes`` tokenizer turns an image into ``h × w`` code indices. With ``image.vocab = "shared"``
the codes are extra rows of the language model's own vocabulary (embedding and output head, as in
Chameleon: one vocabulary); with ``"separate"`` they get their own embedding and head (Janus's
generation adaptor and head). Either way the image logits cover the ``K`` codes only, so sampling
inside an image span is constrained to image codes, and the span length is the tokenizer's grid.
With ``image.code_features`` a code's input embedding also gets a learned projection of its
(frozen) codebook vector, so codes that decode alike start out embedded alike instead of as
unrelated symbols; this is what lets a small model read VQ codes nearly as well as continuous latents.

- ``ARCodeWriter``: next-code prediction in raster order, causal inside the span; sampled one code
  at a time with a KV cache and classifier-free guidance on the logits.
- ``MaskedCodeWriter``: MaskGIT masked-token prediction, bidirectional inside the span, cosine
  mask-ratio schedule in training; iterative parallel decoding with guidance in sampling.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unimm.config import Config
from unimm.models.vq_codes import VQCodes
from unimm.models.writer import Writer
from unimm.nn.decoding import IncrementalDecoder
from unimm.samplers.masked import maskgit_sample, sample_mask
from unimm.samplers.text import select_next
from unimm.sequence import IMAGE, TextSpan


@dataclass
class CodeTargets:
    codes: torch.Tensor  # [G, n] codes of the generated images
    masked: torch.Tensor | None = None  # [G, n] bool, masked objective: positions that carry the loss


def guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """[2B, ...] logits (conditional half first) -> guided [B, ...]: uncond + scale * (cond - uncond)."""
    if scale == 1.0:
        return logits
    cond, uncond = logits.float().chunk(2)
    return uncond + scale * (cond - uncond)


class CodeWriter(Writer):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        im, d = cfg.image, cfg.data
        self.codec = VQCodes(
            d.channels, d.image_size, im.vq_codebook, im.vq_dim, im.vq_hidden, im.vq_downsample, im.vq_steps,
            im.vq_l2_normalize, im.tokenizer,
        )  # fmt: skip
        self.grid, self.num_codes = self.codec.grid, im.vq_codebook
        self.mask_code = self.num_codes  # one more row: the [MASK] image token
        self.shared = im.vocab == "shared"
        self.extra_vocab = self.num_codes + 1 if self.shared else 0
        if not self.shared:
            self.embed = nn.Embedding(self.num_codes + 1, cfg.model.dim)
            self.head = nn.Linear(cfg.model.dim, self.num_codes, bias=False)
        self.code_proj = nn.Linear(im.vq_dim, cfg.model.dim) if im.code_features else None
        self.offset = 0
        s = cfg.sample
        self.temperature, self.top_k = s.image_temperature, s.image_top_k
        self.choice_temperature = s.choice_temperature

    def bind(self, vocab_offset: int) -> None:
        """Shared vocabulary: code ``c`` is token ``vocab_offset + c``."""
        self.offset = vocab_offset

    def init_weights(self, backbone) -> None:
        """With codebook features, a code's own embedding row starts at zero: at first a code reads as
        the projection of its codebook vector (like a continuous latent), and the row learns the rest."""
        if self.code_proj is None:
            return
        with torch.no_grad():
            rows = backbone.embed_tokens.weight[self.offset :] if self.shared else self.embed.weight
            rows[: self.num_codes].zero_()

    def embed_codes(self, backbone, codes: torch.Tensor) -> torch.Tensor:
        """codes [...] (``mask_code`` allowed) -> input embeddings [..., dim]."""
        emb = backbone.embed_tokens(codes + self.offset) if self.shared else self.embed(codes)
        if self.code_proj is not None:
            is_code = (codes < self.num_codes).unsqueeze(-1)
            vectors = self.codec.vq.quantizer.embed(codes.clamp_max(self.num_codes - 1)) * is_code
            emb = emb + self.code_proj(vectors)
        return emb

    def code_logits(self, backbone, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., dim] -> logits over the K image codes only [..., K]."""
        if self.shared:
            return F.linear(hidden, backbone.lm_head.weight[self.offset : self.offset + self.num_codes])
        return self.head(hidden)

    def read_inputs(self, backbone, images: torch.Tensor) -> torch.Tensor:
        return self.embed_codes(backbone, self.codec.encode(images))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(codes).clamp(-1, 1)


class ARCodeWriter(CodeWriter):
    causal = True

    def train_inputs(self, backbone, images: torch.Tensor, generate: torch.Tensor, generator=None):
        codes = self.codec.encode(images)
        return self.embed_codes(backbone, codes), CodeTargets(codes[generate])

    def loss(self, backbone, hidden: torch.Tensor, gen_pos: torch.Tensor, state: CodeTargets):
        """Code i is predicted from the hidden state one position earlier (``<boi>`` for the first)."""
        prev = F.pad(hidden[:, :-1], (0, 0, 1, 0))
        logits = self.code_logits(backbone, prev[gen_pos])
        loss = F.cross_entropy(logits.float(), state.codes.flatten())
        return loss, {"image_loss": loss.detach()}

    @torch.no_grad()
    def generate(self, model, prompts: list[str], scale: float, steps: int, sampler: str, generator=None,
                 use_cache: bool = True) -> torch.Tensor:  # fmt: skip
        """Raster-order sampling of exactly h*w codes (``steps`` is unused: one step per code)."""
        tok, (h, w) = model.tokenizer, self.grid
        n = h * w
        ids = [[tok.bos_id, *tok.encode(p), tok.boi_id] for p in prompts]
        if scale != 1.0:
            ids += [[tok.bos_id, tok.boi_id]] * len(prompts)
        for p, row in zip(prompts, ids, strict=False):
            model.check_length(len(row) + n + 1, f"prompt {p!r}")
        batch = model.pack([[TextSpan(row, loss=False)] for row in ids], left_pad=True)
        dec = IncrementalDecoder(
            model.backbone, model.backbone.embed_tokens(batch.tokens), batch.positions, batch.modality,
            batch.attn_mask, batch.valid, n, use_cache,
        )  # fmt: skip
        start = batch.next_position
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        rows, cols = rows.flatten().tolist(), cols.flatten().tolist()
        out = []
        for i in range(n):
            logits = guide(self.code_logits(model.backbone, dec.last), scale)
            code = select_next(logits, self.temperature, self.top_k, None, generator)
            out.append(code)
            if i == n - 1:
                break
            code2 = code.repeat(2) if scale != 1.0 else code
            pos = torch.stack([start, start + rows[i], start + cols[i]], 1).to(code.device)
            dec.step(self.embed_codes(model.backbone, code2), pos, IMAGE)
        return self.decode(torch.stack(out, 1))


class MaskedCodeWriter(CodeWriter):
    causal = False

    def train_inputs(self, backbone, images: torch.Tensor, generate: torch.Tensor, generator=None):
        """Generated images: a cosine-schedule share of their codes replaced by [MASK]; read ones clean."""
        codes = self.codec.encode(images)
        mask = sample_mask(codes.shape[0], codes.shape[1], generator).to(codes.device) & generate[:, None]
        inputs = codes.masked_fill(mask, self.mask_code)
        return self.embed_codes(backbone, inputs), CodeTargets(codes[generate], mask[generate])

    def loss(self, backbone, hidden: torch.Tensor, gen_pos: torch.Tensor, state: CodeTargets):
        """Cross-entropy at the masked positions, predicted from their own hidden states."""
        masked = state.masked.flatten()
        logits = self.code_logits(backbone, hidden[gen_pos][masked])
        loss = F.cross_entropy(logits.float(), state.codes.flatten()[masked])
        return loss, {"image_loss": loss.detach()}

    @torch.no_grad()
    def generate(self, model, prompts: list[str], scale: float, steps: int, sampler: str, generator=None,
                 use_cache: bool = True) -> torch.Tensor:  # fmt: skip
        """MaskGIT: ``steps`` rounds of parallel prediction, keeping the most confident codes each round."""
        batch, base = model.generation_batch(prompts, guided=scale != 1.0)
        img = batch.image_id >= 0
        n = self.grid[0] * self.grid[1]

        def logits_fn(codes: torch.Tensor) -> torch.Tensor:
            codes2 = codes.repeat(2, 1) if scale != 1.0 else codes
            x = base.masked_scatter(img.unsqueeze(-1), self.embed_codes(model.backbone, codes2))
            hidden, _ = model.backbone(x, batch.positions, batch.modality, batch.attn_mask)
            return guide(self.code_logits(model.backbone, hidden[img].view(codes2.shape[0], n, -1)), scale)

        codes = maskgit_sample(
            logits_fn, len(prompts), n, self.mask_code, steps, self.temperature, self.choice_temperature,
            generator, base.device,
        )  # fmt: skip
        return self.decode(codes)
