"""The three tasks of a unified model as span layouts (see ``sequence.py``).

- text-to-image: ``<bos> caption <boi> image <eoi> <eos>``; the caption is dropped (only
  ``<bos>``) for classifier-free guidance, and the image gets the image objective's loss.
- caption: ``<bos> <boi> image <eoi> caption <eos>``; loss on the caption.
- vqa: ``<bos> <boi> image <eoi> question <sep> answer <eos>``; loss on the answer.
- edit: ``<bos> instruction <sep> <boi> source <eoi> <boi> target <eoi> <eos>``; the source is read, the
  target generated right after it (each target cell at one fixed offset from its source cell), and only the
  target gets a loss (the image objective's); the target's span sees the source's (causal across spans). For
  classifier-free guidance the instruction is dropped, the source kept. With ``Layout.link_source`` the target
  is ``aligned`` with the source: each target cell's input also gets its source cell's (``sequence.py``); so is
  an image a conversation makes with the image before it (``link_generated``). With ``Layout.ground_source`` a
  training edit's source also carries, per cell, whether the edit changes it (``changed_cells``): the target of
  the grounding loss (``model.edit_grounding``), which the source's read positions, having seen the
  instruction, predict.
- conversation (multi-turn chat, an interleaved document): ``<bos>``, then per turn its parts in order, a user
  turn closed by ``<sep>``, an assistant turn by ``<eos>``: ``<bos> user... <sep> assistant... <eos> user...
  <sep> ...``. The user's text and images are read (no loss); the assistant's text gets the text loss, its
  images are generated (the image objective's loss), each announced by a predicted ``<boi>`` so that decoding
  decides where an image goes; every span sees all earlier ones, images of earlier turns included. VQA is the
  one-turn case. A document is one assistant turn (after an optional user prompt).
The same layouts, cut before the part to produce, are the prompts used by sampling (``ImagePrompt``: what a
generated image conditions on, a caption or an instruction on a source image).

A ``Layout`` holds what the model's parts decide about these layouts: the token grid of an image
that is read (the understanding encoder's) and of one that is generated (the generation
tokenizer's), whether generated image tokens are causal (autoregressive codes), and for masked
text a fixed answer length (the answer is padded with ``<eos>``, as in masked diffusion LMs).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from unimm.sequence import ImageSpan, TextSpan, clip_grid, packed_length
from unimm.tokenizers.text import TextTokenizer

Task = Literal["t2i", "caption", "vqa", "edit", "conversation"]
Role = Literal["user", "assistant"]
Spans = list[TextSpan | ImageSpan]


@dataclass(frozen=True)
class Turn:
    """One turn: text pieces and images [C, H, W] in [-1, 1] (or clips), in order. The user's are read; the
    assistant's are what the model produces (in a prompt an assistant image may be None: a sampler fills it)."""

    role: Role
    parts: tuple[str | torch.Tensor | None, ...]

    def __post_init__(self) -> None:
        if self.role not in ("user", "assistant"):
            raise ValueError(f"a turn's role is 'user' or 'assistant', got {self.role!r}")


@dataclass
class Example:
    task: Task
    text: str = ""  # caption (t2i / caption), question (vqa) or instruction (edit)
    answer: str = ""
    drop_condition: bool = False  # t2i and edit: train the unconditional branch for CFG
    source: torch.Tensor | None = None  # edit only: the image [C, H, W] to edit (the example's image is the target)
    open_place: bool = False  # edit only: the instruction leaves where it draws open (an add; ``changed_cells``)
    turns: tuple[Turn, ...] = ()  # conversation only: the turns, their images included (the example's is unused)


@dataclass
class Layout:
    read_grid: tuple[int, int, int]  # (frames, rows, cols) of an image or clip read
    gen_grid: tuple[int, int, int]  # ... and of one generated
    gen_causal: bool = False
    answer_len: int | None = None  # None: answers end at <eos>; an int: padded with <eos> to this length
    prompt_loss: bool = True  # next-token loss on the t2i prompt too (free language modelling)
    link_source: bool = False  # an edit's target is aligned with its source, cell by cell (``model.source_link``)
    ground_source: bool = False  # a training edit's source carries the cells its edit changes (``changed_cells``)
    ground_open: bool = False  # ... and an open-place edit's also every blank cell (``model.edit_grounding_open``)
    clean_context: bool = False  # a training conversation's generated images get clean copies (``clean_copies``)


def answer_ids(text: str, tok: TextTokenizer, layout: Layout) -> list[int]:
    ids = [*tok.encode(text), tok.eos_id]
    if layout.answer_len is None:
        return ids
    if len(ids) > layout.answer_len:
        raise ValueError(f"answer {text!r} needs {len(ids)} tokens, more than the fixed {layout.answer_len}")
    return ids + [tok.eos_id] * (layout.answer_len - len(ids))


def training_spans(ex: Example, image: torch.Tensor, layout: Layout, tok: TextTokenizer) -> Spans:
    """The spans of one training example; ``image`` is the example's image (an edit's target)."""
    if ex.task == "conversation":
        return training_conversation_spans(ex.turns, layout, tok)
    if ex.task == "edit":
        return edit_spans(ex.source, None if ex.drop_condition else ex.text, image, layout, tok, ex.open_place)
    if ex.task == "t2i":
        prompt = [] if ex.drop_condition else tok.encode(ex.text)
        return [
            TextSpan([tok.bos_id, *prompt], loss=layout.prompt_loss),
            ImageSpan(image, layout.gen_grid, generate=True, causal=layout.gen_causal),
            TextSpan([tok.eos_id], loss=layout.prompt_loss),
        ]
    spans = understanding_prompt(image, layout, tok, ex.text if ex.task == "vqa" else None)
    return [*spans, TextSpan(answer_ids(ex.answer if ex.task == "vqa" else ex.text, tok, layout))]


def quote_prompt(prompt: str, limit: int = 60) -> str:
    """``prompt`` quoted for an error message: in full up to ``limit`` characters, else its start and length."""
    if len(prompt) <= limit:
        return repr(prompt)
    return f"{prompt[:limit]!r}... ({len(prompt):,} characters)"


def generation_prompt(prompt: str | None, layout: Layout, tok: TextTokenizer) -> list[TextSpan | ImageSpan]:
    """The whole t2i layout with the image left to fill in (``prompt=None``: the unconditional branch of
    classifier-free guidance). It ends with ``<eos>`` exactly as in training: under full attention
    (masked text) the image positions see it, and leaving it out shifts what they condition on."""
    ids = [] if prompt is None else tok.encode(prompt)
    return [
        TextSpan([tok.bos_id, *ids]),
        ImageSpan(None, layout.gen_grid, generate=True, causal=layout.gen_causal),
        TextSpan([tok.eos_id], loss=False),
    ]


CHANGE_THRESHOLD = 0.05  # in [-1, 1] units, about 6 of 255 grey levels: a pixel the edit changed


def changed_cells(
    source: torch.Tensor, target: torch.Tensor, grid: tuple[int, ...], open_place: bool = False
) -> torch.Tensor:
    """[h*w] float 0/1 in raster order: 1 at each cell of an image ``grid`` (``(h, w)`` or ``(1, h, w)``) whose
    pixels the edit changes, some channel of source and target [C, H, W] differing by more than
    ``CHANGE_THRESHOLD``; every pixel falls in the cell its position scales to (``adaptive_max_pool2d``).

    ``open_place`` (an edit whose instruction does not say where it draws, "add a red triangle"): also 1 at every
    blank cell of the source, all of whose pixels are the background, where the new object may go; the background
    is the source's per-channel median colour (a scene is mostly background)."""
    _, rows, cols = clip_grid(grid)
    if source.dim() != 3 or source.shape != target.shape or clip_grid(grid)[0] != 1:
        raise ValueError(
            f"changed cells compare two images [C, H, W] of one shape on a one-frame grid, got "
            f"{tuple(source.shape)}, {tuple(target.shape)} on {tuple(grid)}"
        )
    moved = ((source.float() - target.float()).abs().amax(0) > CHANGE_THRESHOLD).float()
    changed = F.adaptive_max_pool2d(moved[None, None], (rows, cols)).flatten()
    if not open_place:
        return changed
    background = source.float().flatten(1).median(1).values[:, None, None]
    drawn = ((source.float() - background).abs().amax(0) > CHANGE_THRESHOLD).float()
    blank = F.adaptive_max_pool2d(drawn[None, None], (rows, cols)).flatten() == 0
    return torch.maximum(changed, blank.float())


def edit_spans(
    source: torch.Tensor | None,
    instruction: str | None,
    target: torch.Tensor | None,
    layout: Layout,
    tok: TextTokenizer,
    open_place: bool = False,
) -> Spans:
    """The edit layout: ``instruction`` (None: dropped, the unconditional branch), ``source`` read, then
    ``target`` generated (None: a sampler fills it in) right after it. Only the target carries a loss.

    The instruction comes first so that the source and the target are adjacent: every target cell then sits
    at the same RoPE offset from its source cell, whatever the instruction's length (a copy is one fixed
    relative position to attend to), and the source is read knowing the instruction. With
    ``layout.ground_source``, an edit with its instruction, source and target carries ``changed_cells`` on the
    source (what the grounding loss predicts there); the unconditional branch, without an instruction, none. With
    ``layout.ground_open`` too, an ``open_place`` edit's blank source cells count as changed (``changed_cells``)."""
    ids = [] if instruction is None else tok.encode(instruction)
    grounded = layout.ground_source and instruction is not None and source is not None and target is not None
    open_cells = open_place and layout.ground_open
    changes = changed_cells(source, target, layout.read_grid, open_cells) if grounded else None
    spans = [
        TextSpan([tok.bos_id, *ids, tok.sep_id], loss=False),
        ImageSpan(source, layout.read_grid, changes=changes),
        ImageSpan(target, layout.gen_grid, generate=True, causal=layout.gen_causal),
        TextSpan([tok.eos_id], loss=False),
    ]
    return link_generated(spans, layout)


def link_generated(spans: Spans, layout: Layout) -> Spans:
    """With ``layout.link_source``: every generated image span that follows an image span of its grid is ``aligned``
    with that image (an edit's target with its source; in a conversation, an image made after an image shown or
    made: "now add a blue square to its right" starts from a copy of the picture before). ``spans`` unchanged
    otherwise; the spans themselves are never modified (aligned copies replace them)."""
    if not layout.link_source:
        return spans
    out, previous = [], None
    for sp in spans:
        if isinstance(sp, ImageSpan):
            if sp.generate and previous == sp.grid and not sp.aligned:
                sp = replace(sp, aligned=True)
            previous = sp.grid
        out.append(sp)
    return out


def training_conversation_spans(turns: Sequence[Turn], layout: Layout, tok: TextTokenizer) -> Spans:
    """A conversation as training packs it: ``conversation_spans`` with the ``clean_copies`` its layout asks for."""
    return clean_copies(conversation_spans(turns, layout, tok), layout, {tok.eos_id, tok.sep_id})


def clean_copies(spans: Spans, layout: Layout, closing: set[int]) -> Spans:
    """With ``layout.clean_context`` (training): every generated, bidirectional image span that something after it
    learns from (a generated image, or text with a loss on more than ``closing`` tokens) takes a clean copy
    (``ImageSpan.clean_copy``), so that what follows conditions on the finished image, as at sampling, not on its
    noised or masked training inputs. ``spans`` unchanged otherwise (copies of the spans replace them)."""
    if not layout.clean_context:
        return spans
    out: Spans = []
    learns_after = False
    for sp in reversed(spans):
        if isinstance(sp, ImageSpan):
            if sp.generate and not sp.causal and learns_after:
                sp = replace(sp, clean_copy=True)
            learns_after = learns_after or sp.generate
        elif sp.loss and any(t not in closing for t in sp.ids):
            learns_after = True
        out.append(sp)
    return out[::-1]


def assistant_image(image: torch.Tensor | None, layout: Layout) -> ImageSpan:
    """An image the model produces in a conversation: generated, announced by a predicted ``<boi>``."""
    return ImageSpan(image, layout.gen_grid, generate=True, causal=layout.gen_causal, announce=True)


def turn_spans(turn: Turn, layout: Layout, tok: TextTokenizer) -> Spans:
    """One turn's spans: a user turn read and closed by ``<sep>``; an assistant turn produced (loss on its text
    and images) and closed by ``<eos>``, its last text piece (or an empty one after a final image) padded as an
    answer is (``answer_ids``: to ``text.answer_len`` for masked text)."""
    user = turn.role == "user"
    parts = list(turn.parts)
    last = "" if user or not parts or not isinstance(parts[-1], str) else parts.pop()
    spans: Spans = []
    for part in parts:
        if isinstance(part, str):
            spans.append(TextSpan(tok.encode(part), loss=not user))
        elif user and part is None:
            raise ValueError("a user turn's image must be given (None is an image left for a sampler)")
        else:
            spans.append(ImageSpan(part, layout.read_grid) if user else assistant_image(part, layout))
    spans.append(TextSpan([tok.sep_id], loss=False) if user else TextSpan(answer_ids(last, tok, layout)))
    return spans


def conversation_spans(turns: Sequence[Turn], layout: Layout, tok: TextTokenizer) -> Spans:
    """``<bos>`` and every turn's spans (``turn_spans``)."""
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    spans = [TextSpan([tok.bos_id], loss=False), *(sp for turn in turns for sp in turn_spans(turn, layout, tok))]
    return link_generated(spans, layout)


@dataclass(frozen=True)
class ImagePrompt:
    """What a generated image conditions on: a caption (text-to-image), an instruction on a ``source`` image
    [C, H, W] (editing), or the ``context`` of a conversation: its spans so far, the image generated next
    (``text`` then only names the prompt in messages)."""

    text: str
    source: torch.Tensor | None = None
    context: tuple[TextSpan | ImageSpan, ...] = ()

    def spans(self, layout: Layout, tok: TextTokenizer, conditional: bool = True) -> Spans:
        """The whole layout with the image to generate left empty; ``conditional=False``: the unconditional branch
        of classifier-free guidance (the caption or instruction dropped, a source image kept; a conversation's
        whole context dropped: the unconditional text-to-image layout)."""
        if self.context:
            if not conditional:
                return generation_prompt(None, layout, tok)
            return link_generated([*self.context, assistant_image(None, layout)], layout)
        text = self.text if conditional else None
        if self.source is None:
            return generation_prompt(text, layout, tok)
        return edit_spans(self.source, text, None, layout, tok)


def as_prompt(prompt: str | ImagePrompt) -> ImagePrompt:
    """A caption as the ``ImagePrompt`` of text-to-image; an ``ImagePrompt`` as it is."""
    return prompt if isinstance(prompt, ImagePrompt) else ImagePrompt(prompt)


def before_generated(spans: Spans, boi_id: int) -> Spans:
    """The spans before the first generated image left to fill (``image`` None), then its ``<boi>``: the prompt
    that autoregressive decoding continues from."""
    first = next(i for i, sp in enumerate(spans) if isinstance(sp, ImageSpan) and sp.generate and sp.image is None)
    return [*spans[:first], TextSpan([boi_id], loss=False)]


def understanding_prompt(
    image: torch.Tensor | None, layout: Layout, tok: TextTokenizer, question: str | None = None
) -> list[TextSpan | ImageSpan]:
    spans: list[TextSpan | ImageSpan] = [TextSpan([tok.bos_id], loss=False), ImageSpan(image, layout.read_grid)]
    if question:
        spans.append(TextSpan([*tok.encode(question), tok.sep_id], loss=False))
    return spans


def longest_sequences(
    layout: Layout,
    tok: TextTokenizer,
    captions: list[str],
    vqa: list[tuple[str, str]],
    decode_len: int,
    instructions: Sequence[str] = (),
) -> dict[str, int]:
    """The longest sequence, in positions, of each use of the model: training on each task and sampling, whose
    prompts leave room for ``decode_len`` text tokens to decode. ``captions``: every caption trained on (also the
    generation prompts); ``vqa``: every (question, answer) pair; ``instructions``: every edit instruction (training
    and sampling an edit take the same positions). A task without texts is left out."""
    lengths = {}
    if instructions:
        longest = max(instructions, key=lambda t: len(tok.encode(t)))
        lengths["editing"] = packed_length(edit_spans(None, longest, None, layout, tok))
    if captions:
        caption = max(captions, key=lambda t: len(tok.encode(t)))
        lengths["text-to-image"] = packed_length(training_spans(Example("t2i", caption), None, layout, tok))
        lengths["captioning"] = packed_length(training_spans(Example("caption", caption), None, layout, tok))
        lengths["caption sampling"] = packed_length(understanding_prompt(None, layout, tok)) + decode_len
    if vqa:
        lengths["VQA"] = max(packed_length(training_spans(Example("vqa", q, a), None, layout, tok)) for q, a in vqa)
        question = max((q for q, _ in vqa), key=lambda t: len(tok.encode(t)))
        lengths["VQA sampling"] = packed_length(understanding_prompt(None, layout, tok, question)) + decode_len
    return lengths
