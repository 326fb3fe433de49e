"""Run configuration: TOML presets validated by pydantic, with ``--set a.b=c`` overrides.

A preset picks one kind per *part* (docs/architecture.md): ``[writer]``, ``[codec]``, ``[reader]``,
``[text]``, ``[layers]`` and, for writers that denoise, ``[denoiser]``; each section holds ``kind = ...``
and only that kind's fields, whose settings model sits beside the class that uses them (``settings.py``).
The sections here are the ones that belong to no part: the backbone (``model``), data and task mix,
training and sampling. Every section forbids unknown keys, so a typo is an error that names the key.
"""

from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from unimm.optim import fork_step
from unimm.settings import Section, Settings, format_errors
from unimm.settings import registry as _registry

_Section = Section


def rope_head_dim(dim_key: str, dim: int, heads_key: str, heads: int) -> None:
    """RoPE (``nn/rope.py``) rotates pairs of a head's channels, one frequency per pair: a head needs an even
    size. (The 3-axis positions spread the frequencies over the axes in turn, so any number of pairs works.)"""
    head = dim // heads
    if head % 2:
        raise ValueError(
            f"{dim_key} / {heads_key} = {dim} / {heads} = {head}, an odd head size: RoPE rotates pairs of channels; "
            f"choose {dim_key} and {heads_key} so that {dim_key} / {heads_key} is even"
        )


class ModelSection(_Section):
    """The backbone: a Llama-style transformer (the layer kind is its own part, ``[layers]``)."""

    dim: int = Field(128, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int | None = Field(None, gt=0, description="None = heads (no grouped-query attention)")
    hidden_dim: int | None = Field(None, gt=0, description="SwiGLU width; None = 8/3 * dim rounded to 16")
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = Field(256, gt=0)
    qkv_bias: bool = Field(False, description="biases on the q/k/v projections (Qwen2 has them)")
    source_link: bool = Field(
        False,
        description="editing: each cell of the target image's input also gets a learned, zero-initialised projection "
        "of its source cell's input (InstructPix2Pix's channel concatenation, in sequence form: unchanged cells "
        "become a copy at their own position); needs the reader's grid equal to the writer's",
    )
    edit_grounding: float = Field(
        0.0,
        ge=0,
        description="editing: weight of a grounding loss on the source image's read cells, each predicting from its "
        "last hidden state (it has seen the instruction) whether the edit changes it (source and target pixels "
        "differ; tasks.changed_cells): which object the instruction names, and where; 0 = off",
    )
    edit_grounding_open: bool = Field(
        False,
        description="with model.edit_grounding: an edit whose instruction leaves the place open (an add: 'add a red "
        "triangle') marks as changed every blank cell of its source, where the new object may go, not only the cells "
        "it happens to cover in the target (which the instruction does not tell); the object cells stay unchanged",
    )
    clean_context: bool = Field(
        False,
        description="interleaved / chat training: a generated image that later text or images learn from is packed "
        "twice, its noised or masked cells (the loss) and a clean copy at the same positions that everything after "
        "it sees instead (BAGEL's clean copy), so that what follows conditions on the finished image as at sampling; "
        "writers whose generated inputs are corrupted only (latent, MAR, masked codes)",
    )
    init: str | None = Field(
        None,
        description="start a fresh run's backbone from this checkpoint: a local Hugging Face Llama / Qwen2 directory "
        "or a unimm run directory (dense weights upcycle into moe / mot layers; docs/finetune.md); None = random",
    )
    text_tokenizer: Literal["train", "init"] = Field(
        "train",
        description="train: a BPE trained on the run's texts (data.vocab_size; the init's embedding rows are not "
        "kept); init: model.init's tokenizer.json, whose ids keep their embedding and LM-head rows",
    )

    @property
    def ffn_dim(self) -> int:
        """The SwiGLU width: ``hidden_dim``, or 8/3 * dim rounded to 16."""
        return self.hidden_dim or 16 * round(8 * self.dim / 3 / 16)

    @model_validator(mode="after")
    def _init_tokenizer(self) -> "ModelSection":
        if self.text_tokenizer == "init" and self.init is None:
            raise ValueError("model.text_tokenizer = 'init' needs model.init (the checkpoint whose tokenizer to use)")
        return self

    @model_validator(mode="after")
    def _grounding_open(self) -> "ModelSection":
        if self.edit_grounding_open and self.edit_grounding == 0:
            raise ValueError(
                "model.edit_grounding_open changes the grounding loss's targets: it needs model.edit_grounding > 0"
            )
        return self

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSection":
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        rope_head_dim("model.dim", self.dim, "model.heads", self.heads)
        if self.heads % (self.kv_heads or self.heads):
            raise ValueError(f"model.heads ({self.heads}) must be divisible by model.kv_heads")
        return self


class DataSection(_Section):
    """The dataset and the task mix drawn from it."""

    path: str = "data/mnist"
    image_size: int | None = Field(None, gt=0, description="resize to this side; None = native")
    channels: int | None = Field(None, gt=0)
    frames: int | None = Field(
        None,
        gt=0,
        description="frames per clip of a video dataset, set from the dataset (None: images, no time axis); a "
        "value that differs from the dataset's is an error",
    )
    class_names: list[str] | None = Field(
        None,
        min_length=1,
        description="names of labels 0, 1, ... (captions use them); None = the dataset's own "
        "(meta.json, or classes.txt beside canonical IDX files)",
    )
    vocab_size: int = Field(512, gt=0)
    split_digits: bool = Field(
        False, description="the trained BPE keeps every digit its own token (numbers stay readable digit by digit)"
    )
    shift: int = Field(
        0, ge=0, description="augmentation: random translation of the images read (not generated), up to this many px"
    )
    rotate: float = Field(
        0.0, ge=0, le=45, description="augmentation: random rotation of the images read, up to +/- this many degrees"
    )
    scale: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="augmentation: random zoom of the images read by a factor in [1 - scale, 1 + scale]",
    )
    understand_fraction: float = Field(0.5, ge=0, le=1, description="share of image->text examples")
    vqa_fraction: float = Field(0.3, ge=0, le=1, description="share of understanding examples posed as VQA")
    cond_drop: float = Field(
        0.1, ge=0, le=1, description="caption dropout of text-to-image examples, instruction dropout of edits (CFG)"
    )
    edit_fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="on an edit dataset (data/edits.py): share of edit examples; the others follow the task mix "
        "above on the edits' targets and their captions. Unused on other datasets",
    )
    multi_object_repeat: int = Field(
        1,
        ge=1,
        description="on an edit dataset: training draws each edit whose source scene has two or more objects (where "
        "the instruction must pick one out) this many times per epoch; 1 = every edit once. Validation is unchanged",
    )
    edit_kind_repeat: dict[str, int] = Field(
        default_factory=dict,
        description="on an edit dataset: training draws each edit of a kind named here this many times per epoch, "
        "e.g. {swap = 3} (times multi_object_repeat where both apply); unnamed kinds once. Validation is unchanged",
    )
    interleaved_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of interleaved examples (train/interleaved.py): on a digit dataset 'write the digits of "
        "2024, one image each' and counting tasks, on the shapes dataset 'draw a red circle. Now add a blue square "
        "to its right.', answered with text and images from the dataset; on a dataset converted from LLaVA "
        "conversations or interleaved documents, the item's own turns (train/conversations.py); the others follow "
        "the task mix above. 0 = none (the stream is as without it)",
    )

    @field_validator("edit_kind_repeat")
    @classmethod
    def _edit_kinds(cls, repeat: dict[str, int]) -> dict[str, int]:
        from unimm.data.edits import EDIT_KINDS

        for kind, times in repeat.items():
            if kind not in EDIT_KINDS:
                raise ValueError(f"data.edit_kind_repeat: {kind!r} is not an edit kind ({', '.join(EDIT_KINDS)})")
            if times < 1:
                raise ValueError(f"data.edit_kind_repeat.{kind} = {times}: expected a count >= 1")
        return repeat

    @field_validator("class_names")
    @classmethod
    def _names_distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        stripped = [n.strip() for n in names]
        if not all(stripped):
            raise ValueError("a name is empty")
        if len({n.lower() for n in stripped}) != len(stripped):
            raise ValueError("names must be distinct (ignoring case)")
        return stripped


LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")  # every projection of a backbone block


class LoRASection(_Section):
    """``[train.lora]``: train low-rank adapters on named linear layers of the ``train.init_from`` model, the rest
    frozen (``models/adapters.py``)."""

    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input (seeded per step)")
    targets: list[str] = Field(
        list(LORA_TARGETS),
        min_length=1,
        description="linear layers that get an adapter, by name or dotted suffix: qkv_proj (fused q/k/v), o_proj, "
        "gate_up_proj (fused gate/up), down_proj, lm_head, backbone.layers.3.self_attn.o_proj, ...",
    )
    train: list[str] = Field(
        [],
        description="modules trained in full beside the adapters, by name or dotted suffix (e.g. "
        "backbone.embed_tokens, backbone.lm_head)",
    )


class TrainSection(_Section):
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup: int = Field(100, ge=0)
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine", description="cosine: warmup + cosine decay | wsd: warmup, constant LR, then train.cooldown decay"
    )
    cooldown: float = Field(0.2, gt=0, le=1, description="wsd: the fraction of train.steps spent decaying")
    cooldown_shape: Literal["linear", "sqrt"] = Field("sqrt", description="wsd decay: 1 - p (linear) or 1 - sqrt(p)")
    branches: list[int] = Field(
        [],
        description="wsd: budgets (total steps) of cooldown branches to fork from this run (`unimm fork`); it "
        "keeps the checkpoint at each one's fork step, steps * (1 - cooldown)",
    )
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)
    ema: float = Field(
        0.0, ge=0, lt=1, description="EMA decay of weights (bias-corrected: the init carries no weight); 0 = off"
    )
    seed: int = 0
    save_every: int = Field(500, gt=0)
    log_every: int = Field(10, gt=0)
    flops_every: int = Field(
        50,
        ge=0,
        description="count FLOPs (torch FlopCounterMode: a counted step is 1.3x slower on an idle 2-core CPU, "
        "bench/flop_counting.py) on every n-th step, scaled by tokens; 0 = off",
    )
    val_every: int = Field(
        250, ge=0, description="held-out loss on the val split (val_loss) every n-th step and at the last; 0 = off"
    )
    val_batches: int = Field(4, gt=0, description="val batches of train.batch_size examples per val_loss")
    threads: int | None = Field(None, gt=0)
    tensorboard: bool = True
    parallel: Literal["none", "ddp", "fsdp"] = Field(
        "none",
        description="none (one process; ddp when launched by torchrun as several) | ddp (DistributedDataParallel) | "
        "fsdp (FSDP2 fully_shard); ddp / fsdp need torchrun, e.g. torchrun --nproc-per-node 2 -m unimm train CONFIG",
    )
    batch_shards: int | None = Field(
        None,
        gt=0,
        description="pieces each micro-batch is cut into, each a loss mean of its own (the processes share them); "
        "None = the number of processes at the start; fixed for the run so a resume on another number continues "
        "the same computation",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: forward under bf16 autocast (on fsdp also a bf16 MixedPrecisionPolicy)"
    )
    matmul: Literal["blas", "onednn"] = Field(
        "blas",
        description="library of the fp32 CPU linear layers of training and validation: blas (torch's default; MKL, "
        "which runs AVX2 code on AMD CPUs) | onednn (oneDNN's inner product, AVX-512 where the CPU has it: on this "
        "AMD EPYC 1.3x the training step at dim 256, 1.18-1.27x at dims 96-128, bench/results/train_step*.md); the "
        "two round differently in the last bits, so a run is reproducible with its own setting; eager fp32 only",
    )
    encode_cache_mib: int = Field(
        0,
        ge=0,
        description="keep what the frozen image codec (a VAE's or a VQ's encoder) made of each training image, up to "
        "this many MiB, so that an image drawn again is not encoded again (models/encode_cache.py); each image is "
        "then encoded alone, which can differ in the last bits from inside a batch, so a run is reproducible with "
        "its own setting; CPU fp32 runs; 0 = off",
    )
    activation_checkpointing: bool = Field(
        False, description="recompute each backbone block in backward instead of keeping its activations"
    )
    compile: bool = Field(
        False,
        description="torch.compile each backbone block for the training forward (on a GPU: 1.9x the eager bf16 step "
        "at dim 1024, bench/results/gpu_mfu.json; on a 2-core Xeon: 1.33x the eager oneDNN step of the editing "
        "recipe, bench/results/xeon/compile_step_edits; bench/compile_step.py measures a run's own); decoding stays "
        "eager",
    )
    max_bad_steps: int = Field(
        3, gt=0, description="stop after this many consecutive steps with a non-finite loss (each is skipped)"
    )
    init_from: str | None = Field(
        None,
        description="a run directory to fine-tune: its weights, tokenizer and model sections start this run "
        "(`unimm finetune RUN` sets it); None = train from scratch",
    )
    lora: LoRASection | None = Field(None, description="low-rank adapters on the init_from model; None = full")

    @model_validator(mode="after")
    def _shards_divide_batch(self) -> "TrainSection":
        if self.batch_shards is not None and self.batch_size % self.batch_shards:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by train.batch_shards ({self.batch_shards})"
            )
        return self

    @model_validator(mode="after")
    def _encode_cache_fp32(self) -> "TrainSection":
        if self.encode_cache_mib and self.precision != "fp32":
            raise ValueError(
                f"train.encode_cache_mib keeps fp32 encoder outputs; under train.precision = '{self.precision}' set it "
                "to 0"
            )
        return self

    @model_validator(mode="after")
    def _onednn_fp32_eager(self) -> "TrainSection":
        if self.matmul != "onednn":
            return self
        if self.precision != "fp32" or self.compile:
            raise ValueError(
                "train.matmul = 'onednn' routes the eager fp32 linear layers; it does nothing under "
                f"train.precision = '{self.precision}' or train.compile = {str(self.compile).lower()}: use 'blas' there"
            )
        if self.activation_checkpointing:
            raise ValueError(
                "train.matmul = 'onednn' and train.activation_checkpointing: the recomputation in backward runs "
                "outside the forward's context and would not match what the forward saved; use one of them"
            )
        return self

    @model_validator(mode="after")
    def _wsd_phases(self) -> "TrainSection":
        if self.schedule != "wsd":
            if self.branches:
                raise ValueError("train.branches needs train.schedule = 'wsd' (branches fork a stable LR phase)")
            return self
        stable_end = fork_step(self.steps, self.cooldown)
        if self.warmup > stable_end:
            raise ValueError(
                f"train.warmup ({self.warmup}) must end before the decay of train.cooldown = {self.cooldown} starts "
                f"at step {stable_end} of train.steps = {self.steps}"
            )
        for budget in self.branches:
            at = fork_step(budget, self.cooldown)
            if not max(1, self.warmup) <= at <= stable_end:
                raise ValueError(
                    f"train.branches: budget {budget} forks at step {at}, outside this run's stable phase "
                    f"(steps {max(1, self.warmup)}..{stable_end}: after train.warmup, before the decay of "
                    f"train.steps = {self.steps})"
                )
        return self

    def fork_steps(self) -> list[int]:
        """The steps this run keeps a checkpoint at for ``train.branches`` (sorted, distinct)."""
        return sorted({fork_step(b, self.cooldown) for b in self.branches})


class SampleSection(_Section):
    sampler: Literal["ddpm", "ddim", "flow_euler", "flow_heun", "ar", "maskgit"] | None = Field(
        None, description="None = the writer's first (ddim / flow_euler by denoiser, ar, maskgit)"
    )
    steps: int = Field(25, gt=0, description="denoising / unmasking steps of the image sampler")
    image_temperature: float = Field(1.0, ge=0, description="vq codes: sampling temperature (0 = greedy)")
    image_top_k: int | None = Field(None, gt=0, description="ar codes: keep the k most likely codes")
    choice_temperature: float = Field(4.5, ge=0, description="maskgit: Gumbel noise on confidences, annealed")
    text_steps: int | None = Field(None, gt=0, description="masked text: unmasking steps; None = one per token")
    score_draws: int | None = Field(
        None, gt=0, description="masked text: mask draws per text when scoring texts (ELBO); None = one per token"
    )
    head_steps: int = Field(50, gt=0, description="mar: denoising steps of the per-patch head (sample.steps = groups)")
    edit_strength: float = Field(
        1.0,
        gt=0,
        le=1,
        description="edits, latent writers: run only the last int(s * steps) sampler steps, starting from the source "
        "image's latent noised to the first of them (SDEdit; diffusers' image-to-image strength); 1 = from noise",
    )
    edit_keep: float = Field(
        0.0,
        ge=0,
        le=1,
        description="edits, by a model trained with model.edit_grounding (latent and code writers): keep each "
        "cell whose change probability by the grounding head is below this as the source's (the model sees the "
        "source there at every step, noised to the step's time for a latent writer, and outputs the source's latent "
        "or code there); 0 = off",
    )
    cfg: float = Field(3.0, ge=0)
    temperature: float = Field(0.0, ge=0, description="0 = greedy text decoding")
    top_k: int | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)


PARTS = ("layers", "codec", "writer", "denoiser", "reader", "text")  # one section each, ``kind = ...``
PART_SECTIONS = (*PARTS, "reader.connector")


class _SampleOnly(_Section):
    sample: SampleSection


def _part(name: str):
    """A field holding the settings of one part, validated by that part's registry."""
    return Field(default_factory=lambda: _registry(name).validate({}, name))


class Config(_Section):
    name: str = "unimm"
    model: ModelSection = ModelSection()
    layers: SerializeAsAny[Settings] = _part("layers")
    codec: SerializeAsAny[Settings] = _part("codec")
    writer: SerializeAsAny[Settings] = _part("writer")
    denoiser: SerializeAsAny[Settings] | None = Field(
        None, description="for writers that denoise (None = flow); 'none' removes it"
    )
    reader: SerializeAsAny[Settings] = _part("reader")
    text: SerializeAsAny[Settings] = _part("text")
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    sample: SampleSection = SampleSection()

    @model_validator(mode="before")
    @classmethod
    def _not_old_style(cls, raw: Any) -> Any:
        from unimm.config_upgrade import is_old_style

        if isinstance(raw, dict) and is_old_style(raw):
            raise ValueError(
                "this is an old-style config ([image] / [objective] sections, layer settings under [model]): parts "
                "now have sections of their own; convert it with `unimm config upgrade OLD.toml --out NEW.toml`"
            )
        return raw

    @field_validator(*PARTS, mode="before")
    @classmethod
    def _kind(cls, value: Any, info) -> Settings | None:
        if info.field_name == "denoiser" and value in (None, "none"):
            return None
        return _registry(info.field_name).validate(value, info.field_name)

    @model_validator(mode="after")
    def _lora_needs_a_base(self) -> "Config":
        """Adapters train on pretrained weights: a run to fine-tune (``train.init_from``) or a pretrained backbone
        (``model.init``). With ``train.init_from`` the base run's weights are loaded and ``model.init`` (how the
        base itself started) is not applied again."""
        if self.train.lora is not None and self.train.init_from is None and self.model.init is None:
            raise ValueError(
                "train.lora trains adapters on a trained model, and neither train.init_from nor model.init names "
                "one: start from a run with `unimm finetune RUN --out NEW` (or set train.init_from = RUN), or from "
                "a pretrained backbone with model.init = DIR"
            )
        return self

    @model_validator(mode="after")
    def _parts_fit(self) -> "Config":
        """Each part checks what it needs of the others (the writer: its codec, denoiser, reader, sampler);
        every problem is one line of the error."""
        writer = _registry("writer").cls(self.writer.kind)
        problems = []
        if writer.denoises and self.denoiser is None:
            self.denoiser = _registry("denoiser").validate({}, "denoiser")
        if not writer.denoises and self.denoiser is not None:
            remove = "remove the [denoiser] section (--set denoiser=none)"
            problems.append(f"writer kind {self.writer.kind!r} does not denoise: {remove}")
        for name in PARTS:
            settings = getattr(self, name)
            check = getattr(_registry(name).cls(settings.kind), "check_config", None) if settings else None
            try:
                if check is not None:
                    check(self)
            except ValueError as err:
                problems.append(str(err))
        if problems:
            raise ValueError("\n".join(problems))
        if (problem := _sampling_misfit(self)) is not None:
            raise ValueError(problem)
        samplers = writer.samplers(self)
        if self.sample.sampler is None:
            self.sample.sampler = samplers[0]
        if self.sample.sampler not in samplers:
            raise ValueError(
                f"sample.sampler = {self.sample.sampler!r} does not pair with writer kind {self.writer.kind!r}"
                + (f" and denoiser kind {self.denoiser.kind!r}" if self.denoiser is not None else "")
                + f"; use one of {samplers}"
            )
        return self


class TokenizerSection(_Section):
    kind: Literal["vq", "vae"] = "vq"
    codebook_size: int = Field(256, gt=1, description="vq: number of codes")
    code_dim: int = Field(16, gt=0, description="vq: code vector size; vae: latent channels")
    hidden: int = Field(64, gt=0)
    downsample: int = Field(4, gt=0, description="spatial downsampling (power of two)")
    beta: float = Field(0.25, ge=0, description="vq: commitment loss weight")
    l2_normalize: bool = False
    ema_decay: float = Field(0.99, ge=0, lt=1, description="vq: EMA codebook decay; 0 = learn codes by gradient")
    kl_weight: float = Field(1e-4, ge=0, description="vae: KL weight")
    adversarial_weight: float = Field(0.0, ge=0, description="hinge-GAN term of a patch discriminator; 0 = off")
    adversarial_start: int = Field(0, ge=0, description="steps before the discriminator term starts")
    perceptual_weight: float = Field(0.0, ge=0, description="random-conv-feature perceptual loss; 0 = off")
    decoder_noise: float = Field(
        0.0,
        ge=0,
        description="vae: the decoder reconstructs each image from its latent plus Gaussian noise of s times the "
        "batch's latent std, s ~ U(0, decoder_noise) per image, so that it draws clean images from a generator's "
        "imprecise latents; 0 = off",
    )
    init_from: str | None = Field(None, description="directory of a trained tokenizer of the same shape to start from")
    train_decoder_only: bool = Field(
        False,
        description="vae: keep the encoder (and so the latent space every model trained on it uses) fixed; needs "
        "init_from",
    )


class TokenizerTrainSection(_Section):
    steps: int = Field(2000, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0
    log_every: int = Field(50, gt=0)


class TokenizerConfig(_Section):
    """``unimm tokenizer train``: an image tokenizer trained on its own (configs/tok/*.toml)."""

    name: str = "tokenizer"
    tokenizer: TokenizerSection = TokenizerSection()
    data: DataSection = DataSection()
    train: TokenizerTrainSection = TokenizerTrainSection()


class ConfigError(ValueError):
    """A config that failed validation; the message is one line per problem, naming the key."""


def _format(err: ValidationError, root: type[BaseModel] = Config) -> str:
    return format_errors(err, root)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string such as flow_euler


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=c`` strings (values parsed as TOML, else taken as strings) to a nested dict.

    Setting a part's ``kind`` to another kind starts that section afresh (the new kind's defaults), since the
    old kind's fields mean nothing to it; later overrides of the section apply on top: ``--set layers.kind=moe
    --set layers.experts=4``. A whole section can also be given inline: ``--set 'layers={kind = "moe"}'``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        node = raw
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{p}' is not a section")
        parsed = _parse_value(value.strip())
        section = ".".join(parents)
        if leaf == "kind" and section in PART_SECTIONS:
            part = "connector" if section == "reader.connector" else section
            if node.get("kind", _registry(part).default) != parsed:
                node.clear()
        node[leaf] = parsed
    return raw


def _sampling_misfit(cfg: Config) -> str | None:
    """What in ``cfg.sample`` the writer cannot do, as one line (None: nothing)."""
    if cfg.sample.edit_strength < 1 and not _registry("writer").cls(cfg.writer.kind).starts_from_source:
        return (
            f"sample.edit_strength = {cfg.sample.edit_strength} starts an edit from its source image, which writer "
            f"kind {cfg.writer.kind!r} cannot: only a latent writer can (set it back to 1)"
        )
    if cfg.sample.edit_keep > 0:
        if not _registry("writer").cls(cfg.writer.kind).keeps_source:
            return (
                f"sample.edit_keep = {cfg.sample.edit_keep} keeps an edit's unchanged cells as its source's, which "
                f"writer kind {cfg.writer.kind!r} cannot: latent, ar-codes and masked-codes writers can (set it back "
                "to 0)"
            )
        if cfg.model.edit_grounding == 0:
            return (
                f"sample.edit_keep = {cfg.sample.edit_keep} keeps the cells the grounding head calls unchanged, and "
                "this model has none (trained with model.edit_grounding = 0; set edit_keep back to 0)"
            )
    return None


def with_sampling(cfg: Config, overrides: list[str]) -> Config:
    """``cfg`` with its ``[sample]`` settings overridden in place by ``key=value`` strings (``cfg=2``,
    ``image_temperature=0``): sampling settings are read at every call, so a trained model samples with them
    from then on. A key outside ``[sample]`` or a bad value fails naming it, and nothing changes."""
    raw = {"sample": cfg.sample.model_dump(exclude_unset=False)}
    apply_overrides(raw, [f"sample.{o.removeprefix('sample.')}" for o in overrides])
    sample = validate(raw, _SampleOnly).sample
    if (problem := _sampling_misfit(cfg.model_copy(update={"sample": sample}))) is not None:
        raise ConfigError(problem)
    cfg.sample = sample
    return cfg


def validate(raw: dict, schema: type[BaseModel] = Config):
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err, schema)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, schema: type[BaseModel] = Config):
    """Read a TOML preset (or the defaults when ``path`` is None), apply overrides, validate against
    ``schema`` (a training run's ``Config`` by default, or ``TokenizerConfig``)."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    return validate(apply_overrides(raw, overrides or []), schema)


def dump_toml(cfg: BaseModel) -> str:
    """Serialise a resolved config to TOML (see ``toml_text``)."""
    return toml_text(cfg.model_dump())


def toml_text(raw: dict) -> str:
    """A config dict as TOML: top-level values first, then one table per section; None values are omitted
    (they are the defaults) and a nested section (``reader.connector``) becomes its own table."""
    out = [f"{k} = {_toml(v)}" for k, v in raw.items() if v is not None and not isinstance(v, dict)]
    for section, values in raw.items():
        if isinstance(values, dict):
            out += _table(section, values)
    return "\n".join(out).lstrip("\n") + "\n"


def _table(name: str, values: dict) -> list[str]:
    lines = [f"\n[{name}]"]
    lines += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None and not isinstance(v, dict)]
    for k, v in values.items():
        if isinstance(v, dict) and v:  # an empty mapping (data.edit_kind_repeat = {}) is the default: left out
            lines += _table(f"{name}.{k}", v)
    return lines


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)
