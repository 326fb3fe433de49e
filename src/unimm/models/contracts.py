"""The contracts of the model's parts: ``Writer`` (generation path), ``Reader`` (understanding path) and
``TextObjective``. docs/architecture.md documents them; every kind registers under its config kind
(``settings.py``) and reaches the rest of the model only through a ``ModelContext``.

Every random draw in ``train_inputs``, ``loss`` and ``corrupt`` comes from the step's ``generator``
(seeded by ``(train.seed, step, shard)``), never from the global RNG: that is what makes resume
bit-exact and the result independent of the number of processes. ``Writer.eval_loss`` draws from the
evaluation's generator the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unimm.data.clips import frames_of
from unimm.settings import CODECS, DENOISERS

# ``Writer.eval_loss``'s fixed grid in [0, 1]: the midpoints of five equal slices, so that averaging over it is the
# midpoint rule for the expectation training draws u ~ U(0, 1) for (a flow time, a DDPM step, a mask ratio gamma(u))
EVAL_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)

if TYPE_CHECKING:
    from unimm.config import Config
    from unimm.models.context import ModelContext
    from unimm.objectives.joint import JointMask
    from unimm.sequence import Batch
    from unimm.tasks import ImagePrompt


@dataclass
class PrepareData:
    """What a part may fit itself on before the transformer trains."""

    images: torch.Tensor  # [N, C, H, W] training images (or [N, T, C, H, W] clips) in [-1, 1]
    labels: torch.Tensor | None = None  # [N] class ids (-1 = none)
    captions: list[list[int]] | None = None  # one caption's token ids per image
    seed: int = 0
    progress: bool = True
    lr: float = 1e-3  # train.lr, for parts that pre-train
    cond_drop: float = 0.1  # data.cond_drop, for parts that pre-train a conditional model


class Writer(nn.Module, ABC):
    """A generation path: how a generated image enters the sequence, its loss, and its sampler.

    Its ``codec`` (pixels, VAE or VQ) turns images into what the writer models; it is fitted in
    ``prepare`` and then stays frozen. ``grid`` is the token grid (frames, rows, cols) of a generated image or
    clip. Clips ``[N, T, C, H, W]`` go wherever images ``[N, C, H, W]`` go (the codec codes them frame by
    frame, ``models/frames.py``); what a writer returns has the shape of what it was given.
    """

    codecs: tuple[str, ...] = ("pixels", "vae")  # codec kinds it works on
    denoises = False  # needs a [denoiser] section
    reads = True  # can embed the images it reads (what a ``shared`` reader needs)
    causal = False  # True: the positions of a generated image see only earlier ones
    corrupts_generated = True  # training inputs of a generated span are noised / masked (``model.clean_context``)
    residual = False  # True: an image generated after an image of its grid is made as a difference from it
    starts_from_source = False  # True: sample.edit_strength < 1 starts an edit's sampler from its source image
    keeps_source = False  # True: sample.edit_keep keeps the source cells the grounding head calls unchanged
    joint = False  # can mask every image's codes at given times (``joint_inputs``, what ``text.joint`` needs)
    stepped = True  # ``generate``'s ``steps`` sets how many passes its sampler runs (False: a fixed count)
    extra_vocab = 0  # token ids it adds to the vocabulary
    grid: tuple[int, int, int]
    codec: nn.Module

    def __init__(self, settings: Any) -> None:
        super().__init__()
        self.settings = settings

    @property
    def weight(self) -> float:
        """lambda in L = w_text * L_text + lambda * L_image."""
        return self.settings.weight

    @classmethod
    def samplers(cls, cfg: Config) -> tuple[str, ...]:
        """The samplers that pair with this writer, its default first: by default its denoiser's."""
        return DENOISERS.cls(cfg.denoiser.kind).samplers

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.codec.kind not in cls.codecs:
            raise ValueError(
                f"writer kind {cfg.writer.kind!r} needs codec.kind in {cls.codecs} (got {cfg.codec.kind!r})"
            )

    @staticmethod
    def build_codec(cfg: Config) -> nn.Module:
        """The ``[codec]`` over images, or over clips of ``data.frames`` frames, one frame at a time (``frames.py``)."""
        codec = CODECS.build(cfg.codec, cfg.data.channels, cfg.data.image_size)
        codec.frames = cfg.data.frames
        return codec

    def bind(self, vocab_offset: int) -> None:
        """Learn where its token ids start (writers without token ids ignore it)."""

    def init_weights(self, ctx: ModelContext) -> None:
        """Initialise what it owns of the backbone's (nothing by default)."""

    def preparation(self) -> list[tuple[str, int, str]]:
        """What ``prepare`` will run before the transformer trains: (what, steps, the config key of the steps)."""
        return self.codec.preparation()

    def prepare(self, data: PrepareData) -> dict:
        """Fit the codec on the training images; returns statistics for the run's codec.json (the FLOPs spent,
        counted with ``unimm.flops``, under ``flops.<item>``: the run's ledger reads them)."""
        return self.codec.prepare(frames_of(data.images), seed=data.seed, progress=data.progress)

    def fixed_modules(self) -> list[nn.Module]:
        """What stays frozen while the transformer trains."""
        return [self.codec]

    def kept_cells(self, ctx: ModelContext, prompts: list) -> torch.Tensor:
        """``sample.edit_keep``: [B, n] bool, the cells of each edit's target to keep as its source's: those whose
        change probability by the grounding head (``ctx.source_changes``) is below ``edit_keep``. The source must
        be read on the grid the writer generates (cell i of the one is cell i of the other)."""
        if self.residual:
            raise ValueError("sample.edit_keep keeps source cells; a residual writer samples differences from them")
        if ctx.layout.read_grid != self.grid:
            raise ValueError(
                f"sample.edit_keep needs the source read on the grid the writer generates, {self.grid}; the reader's "
                f"is {ctx.layout.read_grid}"
            )
        return (ctx.source_changes(prompts) < ctx.sample.edit_keep).to(ctx.device)

    @abstractmethod
    def read_inputs(self, ctx: ModelContext, images: torch.Tensor) -> torch.Tensor:
        """Images that are read [N, C, H, W] -> input embeddings [N, n, dim]."""

    def context_inputs(self, ctx: ModelContext, images: torch.Tensor) -> torch.Tensor:
        """Generated images that are finished [N, C, H, W] (made earlier in a conversation or an interleaved
        document) -> the input embeddings [N, n, dim] of their generated spans as later positions see them: clean,
        as ``read_inputs`` embeds them (writers whose span holds no image override it)."""
        return self.read_inputs(ctx, images)

    @abstractmethod
    def train_inputs(
        self,
        ctx: ModelContext,
        images: torch.Tensor,
        generate: torch.Tensor,
        generator: torch.Generator | None,
        bases: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """Training inputs of images [N, C, H, W] (``generate`` [N] bool: generated, else read) ->
        (embeddings [N, n, dim], the targets ``loss`` needs). ``bases`` is passed to a ``residual`` writer only
        (others are called with four arguments): (has [N] bool, images [N, C, H, W]), the image each generated one
        is aligned with (an edit's source)."""

    def joint_inputs(
        self, ctx: ModelContext, images: torch.Tensor, mask: JointMask, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, Any]:
        """Joint masking (``text.joint``): images [N, C, H, W], read and generated alike, corrupted at the times
        ``mask.t`` [N] of their examples -> (embeddings [N, n, dim], the targets ``loss`` needs for all N);
        ``loss`` then gets every image's positions as ``gen_pos``. Only writers with ``joint`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot mask its images jointly with the text")

    @abstractmethod
    def loss(
        self,
        ctx: ModelContext,
        hidden: torch.Tensor,
        gen_pos: torch.Tensor,
        state: Any,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """hidden [B, L, dim], gen_pos [B, L] bool (the generated images' positions) -> (loss, metrics)."""

    @abstractmethod
    def generate(
        self,
        ctx: ModelContext,
        prompts: list[str | ImagePrompt],
        scale: float,
        steps: int,
        sampler: str,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Prompts -> images [B, C, H, W] in [-1, 1], guided with ``scale`` (1 = no guidance). A prompt is a caption
        or an ``ImagePrompt`` (an instruction on a source image: editing); ``ctx.generation_batch`` /
        ``ctx.generation_spans`` lay either out, the source read into its span, which the generated span sees."""

    def eval_loss(
        self, ctx: ModelContext, images: torch.Tensor, prompts: list[str], generator: torch.Generator
    ) -> torch.Tensor:
        """A held-out image loss per image [N]: images [N, C, H, W] in [-1, 1] as generated from ``prompts``, in the
        text-to-image layout of training and sampling (``ctx.generation_batch``; no condition dropped, no
        guidance). It is the writer's training loss made deterministic: exact where the writer has an exact
        likelihood (teacher-forced code NLL), else averaged over ``EVAL_GRID`` (noise levels, mask ratios) with
        every draw (noise, masks, orders) from ``generator`` and shared by the images of the call, so an image's
        loss does not depend on the others. Its unit is the writer's (nats per code, squared error per latent
        element): numbers compare only between models with the same writer kind and codec (and denoiser).
        ``UnifiedModel.image_loss`` calls it in eval mode without gradients. The default raises
        ``NotImplementedError`` (the evaluation then reports None with the reason)."""
        raise NotImplementedError(f"writer kind {self.settings.kind!r} defines no held-out image loss (eval_loss)")


class Reader(nn.Module, ABC):
    """An understanding path: how an image the model reads becomes input embeddings."""

    shared = False  # True: the writer embeds read images together with generated ones
    grid: tuple[int, int, int]  # (frames, rows, cols) of the tokens of an image or clip read

    def __init__(self, settings: Any) -> None:
        super().__init__()
        self.settings = settings

    def preparation(self, labels: torch.Tensor | None) -> list[tuple[str, int, str]]:
        """What ``prepare`` will run on data with ``labels``: (what, steps, the config key of the steps)."""
        return []

    def prepare(self, data: PrepareData) -> dict:
        """Pre-train an encoder before the transformer trains (nothing by default); statistics as ``Writer.prepare``."""
        return {}

    @abstractmethod
    def read(self, ctx: ModelContext, images: torch.Tensor) -> torch.Tensor:
        """images [N, C, H, W] -> input embeddings [N, n, dim]."""


class TextObjective(ABC):
    """How text is trained and decoded: its loss and the caption decoder it pairs with."""

    full_attention = False  # every position sees every other (masked text), else causal
    prompt_loss = True  # the t2i prompt also gets the text loss
    answer_len: int | None = None  # a fixed answer length (padded with <eos>), or None
    extra_vocab = 0

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @property
    def weight(self) -> float:
        return self.settings.weight

    def bind(self, mask_id: int, special_ids: tuple[int, ...] = ()) -> None:
        """Learn the [MASK] id after the vocabulary before it (objectives without ``extra_vocab`` leave it unused)
        and the ids of the tokenizer's special tokens (``<pad>``, ``<bos>``, ``<eos>``, ``<boi>``, ...)."""
        self.mask_id, self.special_ids = mask_id, special_ids

    def joint_mask(self, state: Any) -> JointMask | None:
        """The masking time of each example [B] that the writer masks the codes of every image with (joint
        masking, ``text.joint``), from ``corrupt``'s state; None (the default): each part masks on its own."""
        return None

    @abstractmethod
    def corrupt(self, batch: Batch, generator: torch.Generator | None) -> tuple[torch.Tensor, Any]:
        """Input token ids [B, L] for training and the state ``loss`` needs."""

    @abstractmethod
    def loss(self, ctx: ModelContext, hidden: torch.Tensor, batch: Batch, state: Any) -> torch.Tensor:
        """hidden [B, L, dim] -> the text loss (a scalar)."""

    @abstractmethod
    def caption(
        self,
        ctx: ModelContext,
        images: torch.Tensor,
        question: str | None,
        max_new: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        use_cache: bool,
    ) -> list[str]:
        """Images [B, C, H, W] -> captions, or answers to ``question``."""

    def stream(
        self,
        ctx: ModelContext,
        images: torch.Tensor,
        question: str | None,
        max_new: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        use_cache: bool,
    ) -> Iterator[str]:
        """The caption (or answer) of one image [1, C, H, W] in pieces that join to ``caption``'s text, each
        yielded as soon as it is known. This default decodes the whole answer, then yields it once: right for a
        decoder that fills every position in parallel (masked text); left-to-right decoders yield per token."""
        text = self.caption(ctx, images, question, max_new, temperature, top_k, top_p, generator, use_cache)[0]
        if text:
            yield text

    @abstractmethod
    def score(
        self,
        ctx: ModelContext,
        images: torch.Tensor,
        texts: list[str],
        question: str | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Images [B, C, H, W] x candidate texts -> [B, T] log-likelihoods of each text as the caption (or the
        answer to ``question``) of each image, summed over the text's answer tokens (``tasks.answer_ids``:
        its tokens and ``<eos>``), exact or a documented estimate; ``NotImplementedError`` (with the
        reason) where the objective cannot score texts."""
