"""Packing of text and image / clip spans into one sequence, shared by training and sampling.

A sequence is a list of spans. Text spans carry token ids; an image span stands for one image or one
clip and occupies ``T × h × w`` placeholder positions (its ``grid``: frames, rows, cols) bracketed by
``<boi>``/``<eoi>`` tokens. An image is a one-frame clip: a ``(h, w)`` grid means ``(1, h, w)``, and
every image layout below is the ``T = 1`` case of the clip layout, not a second one. What fills those
positions (latent patches, VQ code embeddings, ViT features) is the model's business: the batch
carries the images (``[C, H, W]``) or clips (``[T, C, H, W]``) themselves, and ``image_id`` says which
one each position belongs to. Packing yields, per position: token id, modality (0 text / 1 image), a
3-axis position ``(t, row, col)`` for RoPE, the next-token target and the attention block it belongs
to. The attention mask is causal across the sequence and bidirectional inside each span (every frame
of a clip sees every other: diffusion and masked writers) unless the span is ``causal``
(autoregressive codes, which come in raster-in-time order: frame by frame, each frame row by row);
``collate(..., full_attention=True)`` makes every real position see every other (masked diffusion
over the whole sequence). An image span ``aligned`` with the image span before it (an edit's target with its
source, same grid) gives ``link``: the source position whose input each of its positions also gets, through a
learned projection, when the model has one (``model.source_link``, ``ModelContext.linked``). A read span may
carry ``changes``, per cell 1 where the edit after it changes that cell, else 0: ``ground`` puts it at the
span's positions, the target of the model's grounding loss (``model.edit_grounding``).

A generated span with ``clean_copy`` (training only, ``model.clean_context``) is packed twice at the same positions:
its corrupted cells (noised or masked, the ones with the loss), then a clean copy of the same image, a block of its
own that does not see them. No position outside the corrupted cells' own block attends to them, so the text and
images after it condition on the clean image, as they do at sampling, where a finished image sits in its span
(BAGEL's clean copy of a generated image for what follows it). The copy is a context image (``image_context``):
embedded as a finished image is (``Writer.context_inputs``), no loss.

RoPE layout (Qwen2-VL's multi-axis scheme, with its time axis used): text positions advance by one
per token with all three axes equal; the cell (frame f, row r, col c) of a span placed at running
position ``p`` gets ``(p + f, p + r, p + c)`` and the next span starts at ``p + max(T, h, w)``, one past
the largest index the span used. A one-frame image thus keeps ``(p, p + row, p + col)`` and advances by
``max(h, w)``, as before clips existed; frames of a clip differ on the time axis only, and a frame's
cells share their row / col positions with the same cell of every other frame.
"""

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

TEXT, IMAGE = 0, 1
IGNORE = -100


def squarest_grid(count: int) -> tuple[int, int]:
    """The (rows, cols) grid closest to square that holds exactly ``count`` tokens (e.g. 16 query tokens)."""
    rows = max(r for r in range(1, math.isqrt(count) + 1) if count % r == 0)
    return rows, count // rows


@dataclass
class TextSpan:
    ids: list[int]
    loss: bool = True  # predict these tokens (their targets sit one position earlier)


def clip_grid(grid: tuple[int, ...]) -> tuple[int, int, int]:
    """A span's token layout as (frames, rows, cols): an image's ``(h, w)`` is the one-frame ``(1, h, w)``."""
    if len(grid) == 2:
        return (1, *grid)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"a span's grid is (rows, cols) or (frames, rows, cols) of positive sizes, got {grid}")
    return tuple(grid)


@dataclass
class ImageSpan:
    """One image or clip. ``grid`` is its token layout (frames, rows, cols); ``(h, w)`` is read as ``(1, h, w)``."""

    image: torch.Tensor | None  # [C, H, W] image or [T, C, H, W] clip in [-1, 1]; None when a sampler fills it in
    grid: tuple[int, ...]  # the span's token layout in the sequence, (T, h, w) once constructed
    generate: bool = False  # True: the image objective's loss applies; False: the model reads it
    causal: bool = False  # attention inside the span: bidirectional, or causal in raster-in-time order
    announce: bool = False  # its ``<boi>`` is a next-token target: the text decides where an image starts
    aligned: bool = False  # cell by cell with the image span before it (an edit's target with its source): ``link``
    changes: torch.Tensor | None = None  # [T*h*w] 0/1: a read span's grounding target per cell (``ground``)
    clean_copy: bool = False  # a generated span later spans see: packed again, clean, for them (training only)

    def __post_init__(self) -> None:
        self.grid = clip_grid(self.grid)
        if self.clean_copy and (not self.generate or self.causal):
            raise ValueError(
                "only a generated, bidirectional image span takes a clean copy (an autoregressive span's inputs are "
                "its true codes already)"
            )
        if self.changes is not None and self.changes.shape != (math.prod(self.grid),):
            raise ValueError(
                f"an image span's changes hold one value per cell, {math.prod(self.grid)}, "
                f"got shape {tuple(self.changes.shape)}"
            )


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
    block: torch.Tensor  # [L] long, bidirectional block (the image span's index) or -1 (causal only)
    image_index: torch.Tensor  # [L] long, index of the image in this sequence, -1 at text
    link: torch.Tensor  # [L] long, the position whose input this one's is linked to (``link_positions``), or -1
    ground: torch.Tensor  # [L] float, a read cell's grounding target (``ImageSpan.changes``), or -1
    hidden: torch.Tensor  # [L] bool, the corrupted cells of a span with a clean copy: seen only by their own block
    copy_of: torch.Tensor  # [L] long, at a clean copy's cells the block of the cells it copies, else -1
    images: list[torch.Tensor | None] = field(default_factory=list)
    image_generate: list[bool] = field(default_factory=list)
    next_position: int = 0
    image_base: list[int] = field(default_factory=list)  # per image: the image it is aligned with, or -1
    image_context: list[bool] = field(default_factory=list)  # per image: a clean copy (``ImageSpan.clean_copy``)


def span_cells(grid: tuple[int, ...]) -> torch.Tensor:
    """[T*h*w, 3] long: the (frame, row, col) of each cell of a span, in raster-in-time order (the order of its
    positions in the sequence and of autoregressive codes)."""
    axes = torch.meshgrid(*(torch.arange(n) for n in clip_grid(grid)), indexing="ij")
    return torch.stack([a.flatten() for a in axes], 1)


def _tensor(values: list, dtype: type) -> torch.Tensor:
    """A tensor of a Python list, through numpy (several times faster than ``torch.tensor`` on a list)."""
    return torch.from_numpy(np.asarray(values, dtype=dtype))


@functools.lru_cache(maxsize=64)
def _cells(grid: tuple[int, int, int]) -> tuple[tuple[int, int, int], ...]:
    """``span_cells(grid)`` as tuples, computed once per grid (``pack`` runs for every example of every step)."""
    return tuple(map(tuple, span_cells(grid).tolist()))


def link_positions(source: int, target: int, cells: int, causal: bool, length: int) -> torch.Tensor:
    """[length] long: for an image span aligned with an earlier one of the same grid (``ImageSpan.aligned``), the
    source position each position takes its link from, else -1. The spans' first cells sit at ``source`` and
    ``target``. Each target cell is linked to the source cell where it is: what a denoised or masked cell
    becomes is read at that cell. A causal (next-code) span predicts cell k from the position before it, so that
    position (``<boi>`` for the first cell) is linked to source cell k instead."""
    link = torch.full((length,), -1, dtype=torch.long)
    at = torch.arange(cells) + target - int(causal)
    link[at] = torch.arange(cells) + source
    return link


def packed_length(spans: list[TextSpan | ImageSpan]) -> int:
    """The number of positions ``pack`` gives ``spans``: one per text token, ``<boi>`` + T*h*w + ``<eoi>`` per
    image or clip, and T*h*w more for a clean copy."""
    return sum(
        len(sp.ids) if isinstance(sp, TextSpan) else math.prod(sp.grid) * (1 + sp.clean_copy) + 2 for sp in spans
    )


def pack(spans: list[TextSpan | ImageSpan], special: SpecialIds) -> Packed:
    tokens: list[int] = []
    modality: list[int] = []
    pos: list[tuple[int, int, int]] = []
    block: list[int] = []
    image_index: list[int] = []
    predict: list[bool] = []  # does this position's token get a loss as a target?
    images: list[torch.Tensor | None] = []
    generate: list[bool] = []
    links: list[tuple[int, int, int, bool]] = []  # (source first cell, target first cell, cells, causal)
    bases: list[int] = []  # per image span: the index of the image span it is aligned with, or -1
    ground: list[float] = []  # per position: the grounding target, or -1
    hidden: list[bool] = []  # per position: a corrupted cell that has a clean copy
    copy_of: list[int] = []  # per position: the block a clean copy's cell copies, or -1
    context: list[bool] = []  # per image: a clean copy
    previous: tuple[int, tuple[int, int, int]] | None = None  # the last image span's first cell and grid
    p = 0

    def add_text(tok: int, loss: bool) -> None:
        nonlocal p
        tokens.append(tok), modality.append(TEXT), pos.append((p, p, p))
        block.append(-1), image_index.append(-1), predict.append(loss), ground.append(-1.0)
        hidden.append(False), copy_of.append(-1)
        p += 1

    def add_cells(grid: tuple[int, int, int], at: int, blk: int, hide: bool, copies: int) -> None:
        cells = _cells(grid)  # raster-in-time order
        n = len(cells)
        tokens.extend([special.img] * n), modality.extend([IMAGE] * n)
        pos.extend([(at + f, at + r, at + c) for f, r, c in cells])
        block.extend([blk] * n), image_index.extend([len(generate)] * n), predict.extend([False] * n)
        hidden.extend([hide] * n), copy_of.extend([copies] * n)

    for s, sp in enumerate(spans):
        if isinstance(sp, TextSpan):
            for tok in sp.ids:
                add_text(tok, sp.loss)
            continue
        add_text(special.boi, sp.announce)
        if sp.aligned:
            if previous is None or previous[1] != sp.grid:
                raise ValueError(
                    f"an aligned image span needs an image span of the same grid {sp.grid} before it, "
                    f"got {'none' if previous is None else previous[1]}"
                )
            links.append((previous[0], len(tokens), math.prod(sp.grid), sp.causal))
        bases.append(len(generate) - 1 if sp.aligned else -1)
        previous = (len(tokens), sp.grid)
        add_cells(sp.grid, p, -1 if sp.causal else s, sp.clean_copy, -1)
        ground.extend([-1.0] * math.prod(sp.grid) if sp.changes is None else sp.changes.float().tolist())
        images.append(sp.image)
        generate.append(sp.generate)
        context.append(False)
        if sp.clean_copy:  # the same image again at the same positions, its own block (past every span index)
            bases.append(-1)
            previous = (len(tokens), sp.grid)  # what an image aligned with this one links to: the clean cells
            add_cells(sp.grid, p, len(spans) + s, False, s)
            ground.extend([-1.0] * math.prod(sp.grid))
            images.append(sp.image)
            generate.append(True)
            context.append(True)
        p += max(sp.grid)
        add_text(special.eoi, False)

    tok = _tensor(tokens, np.int64)
    targets = torch.full_like(tok, IGNORE)
    want = _tensor(predict, np.bool_)
    targets[:-1] = torch.where(want[1:], tok[1:], IGNORE)
    link = torch.full_like(tok, -1)
    for source, target, cells, causal in links:
        link = torch.maximum(link, link_positions(source, target, cells, causal, len(tok)))
    return Packed(
        tokens=tok,
        modality=_tensor(modality, np.int64),
        positions=_tensor(pos, np.int64).T.contiguous(),
        targets=targets,
        block=_tensor(block, np.int64),
        image_index=_tensor(image_index, np.int64),
        link=link,
        ground=_tensor(ground, np.float32),
        hidden=_tensor(hidden, np.bool_),
        copy_of=_tensor(copy_of, np.int64),
        images=images,
        image_generate=generate,
        next_position=p,
        image_base=bases,
        image_context=context,
    )


@dataclass
class Batch:
    """Padded batch of packed sequences; the images (or clips) of all sequences are stacked in order."""

    tokens: torch.Tensor  # [B, L]
    modality: torch.Tensor  # [B, L]
    positions: torch.Tensor  # [B, 3, L]
    targets: torch.Tensor  # [B, L]
    attn_mask: torch.Tensor  # [B, L, L] bool, True = may attend
    valid: torch.Tensor  # [B, L] bool, False at padding
    images: torch.Tensor  # [num_images, (T,) C, H, W] (zeros for spans a sampler fills in; [N, 0] if none given)
    image_id: torch.Tensor  # [B, L] index into the batch's images, -1 at text/padding
    image_generate: torch.Tensor  # [num_images] bool
    next_position: torch.Tensor  # [B]
    image_given: torch.Tensor  # [num_images] bool: False for an image a sampler fills in (its span held None)
    link: torch.Tensor  # [B, L] long: the position (same row) whose input embedding this one's is linked to, or -1
    ground: torch.Tensor  # [B, L] float: a read cell's grounding target (``ImageSpan.changes``), or -1
    image_base: torch.Tensor  # [num_images] long: the image each one is aligned with (an edit's source), or -1
    image_context: torch.Tensor  # [num_images] bool: a clean copy of a generated image (``ImageSpan.clean_copy``)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def generated(self) -> torch.Tensor:
        """[B, L] bool: the positions of the images being generated; False at text, at images read and at clean
        copies."""
        if self.image_generate.numel() == 0:
            return torch.zeros_like(self.valid)
        return (self.image_id >= 0) & (self.image_generate & ~self.image_context)[self.image_id.clamp_min(0)]

    def copies(self) -> torch.Tensor:
        """[B, L] bool: the positions of clean copies of generated images (``ImageSpan.clean_copy``)."""
        if self.image_context.numel() == 0:
            return torch.zeros_like(self.valid)
        return (self.image_id >= 0) & self.image_context[self.image_id.clamp_min(0)]

    def to_fill(self) -> torch.Tensor:
        """[B, L] bool: the positions of the generated images a sampler fills in (no image given); a generated image
        that is given (made earlier in a conversation) is context, not one of them."""
        if self.image_generate.numel() == 0:
            return torch.zeros_like(self.valid)
        return self.generated() & ~self.image_given[self.image_id.clamp_min(0)]

    def image_rows(self) -> torch.Tensor:
        """[num_images] long: the row (example) each image sits in."""
        img = self.image_id >= 0
        rows = torch.arange(self.image_id.shape[0], device=self.image_id.device)[:, None].expand_as(self.image_id)
        out = torch.zeros(self.image_generate.numel(), dtype=torch.long, device=self.image_id.device)
        return out.scatter(0, self.image_id[img], rows[img])


def attention_mask(
    block: torch.Tensor,
    valid: torch.Tensor,
    full_attention: bool = False,
    hidden: torch.Tensor | None = None,
    copy_of: torch.Tensor | None = None,
) -> torch.Tensor:
    """block, valid: [B, L] -> bool [B, L, L] (True = may attend).

    Causal, plus full attention within each block >= 0, or among all valid positions when
    ``full_attention``. No position attends to padding (``valid`` False) other than itself. With ``hidden`` [B, L]
    (corrupted cells that have a clean copy) and ``copy_of`` [B, L] (the block a clean copy's cell copies, else -1),
    only a hidden cell's own block sees it, and no block sees its own clean copy (under ``full_attention`` it would
    otherwise read its answer).
    """
    length = block.shape[-1]
    eye = torch.eye(length, dtype=torch.bool, device=block.device)
    causal = torch.ones(length, length, dtype=torch.bool, device=block.device).tril()
    same = block.unsqueeze(-1) == block.unsqueeze(-2)
    mask = causal | (same & (block >= 0).unsqueeze(-1))
    if full_attention:
        mask = mask | (valid.unsqueeze(-1) & valid.unsqueeze(-2))
    if hidden is not None and bool(hidden.any()):
        mask = mask & ~(hidden.unsqueeze(-2) & ~same)
        mask = mask & ~((copy_of.unsqueeze(-2) == block.unsqueeze(-1)) & (copy_of >= 0).unsqueeze(-2))
    return mask & (valid.unsqueeze(-2) | eye)


def _stack_images(images: list[torch.Tensor | None]) -> torch.Tensor:
    given = [im for im in images if im is not None]
    if not given:
        return torch.zeros(len(images), 0)
    blank = torch.zeros_like(given[0])
    return torch.stack([blank if im is None else im.float() for im in images])


def collate(seqs: list[Packed], pad_id: int, full_attention: bool = False, left_pad: bool = False) -> Batch:
    """Pad to the longest sequence, on the right (training) or on the left (so that every row of a
    prompt batch ends at its last real token, as incremental decoding needs). Padding is text,
    ignored by the loss and masked out of attention; positions count from each row's first real token."""
    length = max(len(s.tokens) for s in seqs)
    bsz = len(seqs)
    tokens = torch.full((bsz, length), pad_id, dtype=torch.long)
    modality = torch.zeros(bsz, length, dtype=torch.long)
    positions = torch.zeros(bsz, 3, length, dtype=torch.long)
    targets = torch.full((bsz, length), IGNORE, dtype=torch.long)
    block = torch.full((bsz, length), -1, dtype=torch.long)
    valid = torch.zeros(bsz, length, dtype=torch.bool)
    image_id = torch.full((bsz, length), -1, dtype=torch.long)
    link = torch.full((bsz, length), -1, dtype=torch.long)
    ground = torch.full((bsz, length), -1.0)
    hidden = torch.zeros(bsz, length, dtype=torch.bool)
    copy_of = torch.full((bsz, length), -1, dtype=torch.long)
    images: list[torch.Tensor | None] = []
    generate: list[bool] = []
    bases: list[int] = []
    context: list[bool] = []
    for b, s in enumerate(seqs):
        n = len(s.tokens)
        sl = slice(length - n, length) if left_pad else slice(0, n)
        tokens[b, sl], modality[b, sl], positions[b, :, sl] = s.tokens, s.modality, s.positions
        targets[b, sl], valid[b, sl] = s.targets, True
        block[b, sl] = s.block
        link[b, sl] = torch.where(s.link >= 0, s.link + sl.start, -1)
        ground[b, sl] = s.ground
        hidden[b, sl], copy_of[b, sl] = s.hidden, s.copy_of
        image_id[b, sl] = torch.where(s.image_index >= 0, s.image_index + len(generate), -1)
        bases += [i + len(generate) if i >= 0 else -1 for i in s.image_base]
        images += s.images
        generate += s.image_generate
        context += s.image_context
    return Batch(
        tokens=tokens,
        modality=modality,
        positions=positions,
        targets=targets,
        attn_mask=attention_mask(block, valid, full_attention, hidden, copy_of),
        valid=valid,
        images=_stack_images(images),
        image_id=image_id,
        image_generate=torch.tensor(generate, dtype=torch.bool),
        next_position=torch.tensor([s.next_position for s in seqs]),
        image_given=torch.tensor([im is not None for im in images], dtype=torch.bool),
        link=link,
        ground=ground,
        image_base=torch.tensor(bases, dtype=torch.long),
        image_context=torch.tensor(context, dtype=torch.bool),
    )
