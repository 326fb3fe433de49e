"""Packing of text and image spans into one sequence, shared by training and sampling.

A sequence is a list of spans. Text spans carry token ids; image spans carry patch vectors
(continuous latents) on an ``h × w`` grid and are bracketed by ``<boi>``/``<eoi>`` tokens.
Packing yields, per position: token id, modality (0 text / 1 image), a 3-axis position
``(t, row, col)`` for RoPE, the next-token target, and the span it belongs to. The attention
mask is causal across the sequence and bidirectional inside each image span.

Text positions advance by one per token with all three axes equal; an image span placed at
running position ``p`` gets ``(p, p + row, p + col)`` and the next span starts at
``p + max(h, w)`` (the layout of Qwen2-VL's multi-axis RoPE). A video span would add a time
axis to the same scheme.
"""

from dataclasses import dataclass, field

import torch

TEXT, IMAGE = 0, 1
IGNORE = -100


@dataclass
class TextSpan:
    ids: list[int]
    loss: bool = True  # predict these tokens (their targets sit one position earlier)


@dataclass
class ImageSpan:
    patches: torch.Tensor  # [h*w, P] clean latent patches (zeros when sampling fills them in later)
    grid: tuple[int, int]
    generate: bool = False  # True: the image objective's loss applies; False: the model reads it


@dataclass
class SpecialIds:
    pad: int
    boi: int
    eoi: int
    img: int


@dataclass
class Packed:
    """One packed sequence (unbatched); ``collate`` stacks several with padding."""

    tokens: torch.Tensor  # [L] long
    modality: torch.Tensor  # [L] long
    positions: torch.Tensor  # [3, L] long
    targets: torch.Tensor  # [L] long, next-token ids or IGNORE
    span: torch.Tensor  # [L] long, span index (boi/eoi belong to the text around the image)
    patches: torch.Tensor  # [L, P] float, zeros at text positions
    image_index: torch.Tensor  # [L] long, index of the image in this sequence, -1 at text
    image_generate: list[bool] = field(default_factory=list)
    next_position: int = 0


def pack(spans: list[TextSpan | ImageSpan], special: SpecialIds, patch_dim: int) -> Packed:
    tokens: list[int] = []
    modality: list[int] = []
    pos: list[tuple[int, int, int]] = []
    span_of: list[int] = []
    image_index: list[int] = []
    predict: list[bool] = []  # does this position's token get a loss as a target?
    patch_rows: list[torch.Tensor] = []
    generate: list[bool] = []
    p = 0

    def add_text(tok: int, s: int, loss: bool) -> None:
        nonlocal p
        tokens.append(tok), modality.append(TEXT), pos.append((p, p, p))
        span_of.append(s), image_index.append(-1), predict.append(loss)
        patch_rows.append(torch.zeros(1, patch_dim))
        p += 1

    for s, sp in enumerate(spans):
        if isinstance(sp, TextSpan):
            for tok in sp.ids:
                add_text(tok, s, sp.loss)
            continue
        h, w = sp.grid
        if sp.patches.shape != (h * w, patch_dim):
            raise ValueError(f"image span patches {tuple(sp.patches.shape)} != ({h * w}, {patch_dim})")
        add_text(special.boi, s, False)
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        for r, c in zip(rows.flatten().tolist(), cols.flatten().tolist(), strict=True):
            tokens.append(special.img), modality.append(IMAGE), pos.append((p, p + r, p + c))
            span_of.append(s), image_index.append(len(generate)), predict.append(False)
        patch_rows.append(sp.patches.float())
        generate.append(sp.generate)
        p += max(h, w)
        add_text(special.eoi, s, False)

    tok = torch.tensor(tokens)
    targets = torch.full_like(tok, IGNORE)
    want = torch.tensor(predict)
    targets[:-1] = torch.where(want[1:], tok[1:], IGNORE)
    return Packed(
        tokens=tok,
        modality=torch.tensor(modality),
        positions=torch.tensor(pos).T.contiguous(),
        targets=targets,
        span=torch.tensor(span_of),
        patches=torch.cat(patch_rows),
        image_index=torch.tensor(image_index),
        image_generate=generate,
        next_position=p,
    )


@dataclass
class Batch:
    """Padded batch of packed sequences; image tensors are flattened across the batch."""

    tokens: torch.Tensor  # [B, L]
    modality: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B, 3, L]
    targets: torch.Tensor  # [B, L]
    attn_mask: torch.Tensor  # [B, L, L] bool, True = may attend
    patches: torch.Tensor  # [B, L, P]
    image_id: torch.Tensor  # [B, L] index into the batch's images, -1 at text/padding
    image_generate: torch.Tensor  # [num_images] bool
    next_position: torch.Tensor  # [B]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})


def attention_mask(span: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    """span, modality: [B, L] -> bool [B, L, L]: causal, plus full attention within an image span."""
    length = span.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=span.device).tril()
    is_img = modality == IMAGE
    same = (span.unsqueeze(-1) == span.unsqueeze(-2)) & is_img.unsqueeze(-1) & is_img.unsqueeze(-2)
    return causal | same


def collate(seqs: list[Packed], pad_id: int) -> Batch:
    """Right-pad to the longest sequence. Padding is text, ignored by the loss and never attended
    to by real positions (it comes after them and attention is causal)."""
    length = max(len(s.tokens) for s in seqs)
    bsz, patch_dim = len(seqs), seqs[0].patches.shape[1]
    tokens = torch.full((bsz, length), pad_id, dtype=torch.long)
    modality = torch.zeros(bsz, length, dtype=torch.long)
    positions = torch.zeros(bsz, 3, length, dtype=torch.long)
    targets = torch.full((bsz, length), IGNORE, dtype=torch.long)
    span = torch.full((bsz, length), -1, dtype=torch.long)
    patches = torch.zeros(bsz, length, patch_dim)
    image_id = torch.full((bsz, length), -1, dtype=torch.long)
    generate: list[bool] = []
    for b, s in enumerate(seqs):
        n = len(s.tokens)
        tokens[b, :n], modality[b, :n], positions[b, :, :n] = s.tokens, s.modality, s.positions
        targets[b, :n], span[b, :n], patches[b, :n] = s.targets, s.span, s.patches
        image_id[b, :n] = torch.where(s.image_index >= 0, s.image_index + len(generate), -1)
        generate += s.image_generate
    return Batch(
        tokens=tokens,
        modality=modality,
        positions=positions,
        targets=targets,
        attn_mask=attention_mask(span, modality),
        patches=patches,
        image_id=image_id,
        image_generate=torch.tensor(generate, dtype=torch.bool),
        next_position=torch.tensor([s.next_position for s in seqs]),
    )
