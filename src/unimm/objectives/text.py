"""Text objectives, each with the caption decoder it pairs with.

- ``ARText``: next-token cross-entropy; captions decoded left to right with a KV cache
  (greedy / temperature / top-k / top-p), every row stopping at ``<eos>``.
- ``MaskedText`` (UniDisc, masked diffusion LMs): answers have a fixed length (padded with
  ``<eos>``); in training a share ``t ~ Beta(alpha, 1)`` of the answer tokens (``alpha = 1``:
  uniform, as in MDLM / LLaDA) is replaced by ``[MASK]`` and predicted from the whole,
  bidirectionally attended sequence; captions are produced by unmasking all answer positions in
  parallel over ``sample.text_steps`` rounds (MaskGIT's confidence rule).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unimm.nn.decoding import IncrementalDecoder
from unimm.objectives.text_ar import text_ar_loss
from unimm.samplers.masked import maskgit_sample
from unimm.samplers.text import select_next
from unimm.sequence import IGNORE, TEXT, Batch, TextSpan
from unimm.tasks import understanding_prompt


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


class ARText:
    full_attention = False
    prompt_loss = True
    answer_len = None
    extra_vocab = 0

    def bind(self, mask_id: int) -> None:
        """No mask token."""

    def corrupt(self, batch: Batch, generator=None) -> tuple[torch.Tensor, None]:
        return batch.tokens, None

    def loss(self, model, hidden: torch.Tensor, batch: Batch, state: None) -> torch.Tensor:
        has_target = batch.targets != IGNORE
        return text_ar_loss(model.text_logits(hidden[has_target]), batch.targets[has_target])

    @torch.no_grad()
    def caption(self, model, images, question, max_new, temperature, top_k, top_p, generator, use_cache) -> list[str]:
        tok, dev = model.tokenizer, images.device
        batch = model.pack([understanding_prompt(im, model.layout, tok, question) for im in images], left_pad=True)
        model.check_length(batch.tokens.shape[1] + max_new, "question" if question else "caption prompt")
        batch = batch.to(dev)
        dec = IncrementalDecoder(
            model.backbone, model.embed_inputs(batch), batch.positions, batch.modality, batch.attn_mask,
            batch.valid, max_new, use_cache,
        )  # fmt: skip
        out = torch.empty(len(images), 0, dtype=torch.long, device=dev)
        done = torch.zeros(len(images), dtype=torch.bool, device=dev)
        for i in range(max_new):
            nxt = select_next(model.text_logits(dec.last), temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_id), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == tok.eos_id
            if bool(done.all()) or i == max_new - 1:
                break
            dec.step(model.backbone.embed_tokens(nxt), (batch.next_position + i)[:, None].expand(-1, 3), TEXT)
        return [tok.decode(_until_eos(row, tok.eos_id)) for row in out.tolist()]


@dataclass
class MaskedTextState:
    masked: torch.Tensor  # [B, L] bool, answer positions replaced by [MASK]


class MaskedText:
    full_attention = True
    prompt_loss = False  # the t2i prompt is a condition, not something to denoise
    extra_vocab = 1

    def __init__(self, answer_len: int, steps: int | None = None, mask_alpha: float = 1.0) -> None:
        self.answer_len, self.steps, self.mask_id = answer_len, steps or answer_len, -1
        self.mask_alpha = mask_alpha

    def mask_ratio(self, n: int, generator=None) -> torch.Tensor:
        """[n, 1] answer mask ratios t ~ Beta(alpha, 1), drawn by inverting its CDF t**alpha."""
        return torch.rand(n, 1, generator=generator) ** (1.0 / self.mask_alpha)

    def bind(self, mask_id: int) -> None:
        self.mask_id = mask_id

    def corrupt(self, batch: Batch, generator=None) -> tuple[torch.Tensor, MaskedTextState]:
        answer = F.pad(batch.targets[:, :-1] != IGNORE, (1, 0))  # positions whose own token is a target
        t = self.mask_ratio(batch.tokens.shape[0], generator).to(answer.device)
        masked = answer & (torch.rand(answer.shape, generator=generator).to(answer.device) < t)
        return batch.tokens.masked_fill(masked, self.mask_id), MaskedTextState(masked)

    def loss(self, model, hidden: torch.Tensor, batch: Batch, state: MaskedTextState) -> torch.Tensor:
        m = state.masked
        if not bool(m.any()):
            return hidden.sum() * 0.0
        return F.cross_entropy(model.text_logits(hidden[m]).float(), batch.tokens[m])

    @torch.no_grad()
    def caption(self, model, images, question, max_new, temperature, top_k, top_p, generator, use_cache) -> list[str]:
        """Unmask a fixed-length answer; ``max_new``, ``top_k``, ``top_p`` and ``use_cache`` do not apply."""
        tok, dev, n = model.tokenizer, images.device, self.answer_len
        spans = [
            [*understanding_prompt(im, model.layout, tok, question), TextSpan([self.mask_id] * n, loss=False)]
            for im in images
        ]
        batch = model.pack(spans, left_pad=True)
        model.check_length(batch.tokens.shape[1], "question" if question else "caption prompt")
        batch = batch.to(dev)
        base = model.embed_inputs(batch)

        def logits_fn(answer: torch.Tensor) -> torch.Tensor:
            x = torch.cat([base[:, :-n], model.backbone.embed_tokens(answer)], 1)
            hidden, _ = model.backbone(x, batch.positions, batch.modality, batch.attn_mask)
            return model.text_logits(hidden[:, -n:])

        ids = maskgit_sample(logits_fn, len(images), n, self.mask_id, self.steps, temperature, 0.0, generator, dev)
        return [tok.decode(_until_eos(row, tok.eos_id)) for row in ids.tolist()]


def build_text_objective(cfg):
    """From a ``Config``: ``objective.text``."""
    if cfg.objective.text == "masked":
        return MaskedText(cfg.sample.max_new_tokens, cfg.sample.text_steps, cfg.objective.text_mask_alpha)
    return ARText()
