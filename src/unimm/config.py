"""Run configuration: TOML presets validated by pydantic, with ``--set a.b=c`` overrides.

Every section forbids unknown keys, so a typo is an error that names the key instead of a
silently ignored setting. The four strategy axes of ../docs/architecture.md are plain fields.
"""

from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    dim: int = Field(128, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    kv_heads: int | None = Field(None, gt=0, description="None = heads (no grouped-query attention)")
    hidden_dim: int | None = Field(None, gt=0, description="SwiGLU width; None = 8/3 * dim rounded to 16")
    layers: Literal["dense", "moe", "modality-moe", "mot"] = Field(
        "dense", description="dense | moe (top-k routed) | modality-moe (MoMa) | mot (Mixture-of-Transformers)"
    )
    experts: int = Field(8, gt=0, description="moe / modality-moe: routed experts per layer")
    top_k: int = Field(2, gt=0, description="moe / modality-moe: experts per token (inside its group for modality-moe)")
    shared_experts: int = Field(0, ge=0, description="moe: always-on shared experts (DeepSeekMoE)")
    expert_hidden_dim: int | None = Field(
        None, gt=0, description="SwiGLU width of one expert; None = hidden_dim // top_k (dense-equal active params)"
    )
    capacity_factor: float | None = Field(None, gt=0, description="moe: expert capacity in training; None = no limit")
    moe_aux_weight: float = Field(0.01, ge=0, description="weight of the load-balancing loss (Switch)")
    moe_z_weight: float = Field(1e-3, ge=0, description="weight of the router z-loss (ST-MoE)")
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSection":
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        if self.heads % (self.kv_heads or self.heads):
            raise ValueError(f"model.heads ({self.heads}) must be divisible by model.kv_heads")
        group = self.experts // 2 if self.layers == "modality-moe" else self.experts
        if self.layers in ("moe", "modality-moe") and self.top_k > group:
            raise ValueError(f"model.top_k ({self.top_k}) exceeds the {group} experts a token can route to")
        if self.layers == "modality-moe" and self.experts % 2:
            raise ValueError(f"model.experts ({self.experts}) must be even for modality-moe (text / image halves)")
        return self


class ImageSection(_Section):
    understand: Literal["shared", "vit"] = Field(
        "shared", description="shared: read the generation tokens/latents; vit: a ViT + connector (decoupled)"
    )
    generate: Literal["latent", "vq"] = Field("latent", description="continuous latent patches or VQ codes")
    latent: Literal["pixels", "vae"] = "pixels"
    patch_size: int = Field(4, gt=0, description="patch side in pixels, or in latent cells with the VAE")
    vae_channels: int = Field(4, gt=0, description="latent channels of the optional VAE")
    vae_downsample: int = Field(2, gt=0, description="spatial downsampling of the optional VAE (power of 2)")
    vae_hidden: int = Field(64, gt=0)
    vae_steps: int = Field(1500, gt=0, description="VAE training steps before the transformer trains")
    vae_kl: float = Field(1e-4, ge=0, description="KL weight of the VAE")
    tokenizer: str | None = Field(
        None, description="directory of a 'unimm tokenizer train' output to use (frozen) instead of fitting one"
    )
    vq_codebook: int = Field(256, gt=1, description="codes of the VQ tokenizer fitted in-run")
    vq_dim: int = Field(16, gt=0)
    vq_hidden: int = Field(64, gt=0)
    vq_downsample: int = Field(4, gt=0)
    vq_steps: int = Field(2000, gt=0, description="VQ tokenizer training steps before the transformer trains")
    vq_l2_normalize: bool = False
    code_features: bool = Field(
        True, description="vq: add a learned projection of each code's codebook vector to its token embedding"
    )
    vocab: Literal["shared", "separate"] = Field(
        "shared", description="vq: codes share the text vocabulary/head (Chameleon) or get their own (Janus)"
    )
    vit_patch: int = Field(4, gt=0, description="vit: patch side in pixels")
    vit_dim: int = Field(128, gt=0)
    vit_depth: int = Field(2, gt=0)
    vit_heads: int = Field(4, gt=0)
    vit_pretrain_steps: int = Field(
        0, ge=0, description="vit: classification pre-training steps on the dataset's labels before the LLM trains"
    )
    connector: Literal["linear", "mlp", "resampler", "qformer"] = "mlp"
    connector_queries: int = Field(16, gt=0, description="resampler / qformer: image tokens the LLM reads")
    gen_queries: int = Field(16, gt=0, description="connector: query tokens whose states condition the decoder")
    decoder_dim: int = Field(128, gt=0, description="connector: width of the separate DiT decoder")
    decoder_depth: int = Field(4, gt=0)
    decoder_heads: int = Field(4, gt=0)
    decoder_conditioning: Literal["cross", "in-context"] = Field(
        "cross", description="connector: the decoder reads its condition by cross-attention or in context"
    )
    decoder_train: Literal["joint", "frozen"] = Field(
        "joint", description="connector: decoder trained with the LLM, or pre-trained alone then frozen"
    )
    decoder_pretrain_steps: int = Field(
        0, ge=0, description="connector: the decoder's own caption->image pre-training steps (frozen needs > 0)"
    )
    mar_order: Literal["raster", "random"] = Field("random", description="mar: order in which patches are generated")
    head_dim: int = Field(256, gt=0, description="mar: width of the per-patch MLP diffusion head")
    head_depth: int = Field(3, gt=0, description="mar: residual AdaLN blocks of the diffusion head")


class ObjectiveSection(_Section):
    image: Literal["diffusion", "flow", "ar", "masked", "mar", "connector"] = Field(
        "flow",
        description="diffusion / flow on latents; ar (next code) / masked (MaskGIT) on VQ codes; mar (masked "
        "autoregression + per-patch diffusion head); connector (query tokens -> a separate diffusion decoder)",
    )
    denoiser: Literal["diffusion", "flow"] = Field(
        "diffusion", description="mar head / connector decoder: DDPM (timesteps, beta_schedule, prediction) or flow"
    )
    denoise_batch: int = Field(4, gt=0, description="mar / connector: noise draws per target (MAR's batch multiplier)")
    text: Literal["ar", "masked"] = Field("ar", description="next-token, or masked diffusion (UniDisc)")
    text_mask_alpha: float = Field(
        1.0,
        gt=0,
        description="masked text: answer mask ratio t ~ Beta(alpha, 1); 1 = uniform (MDLM, LLaDA), "
        "> 1 masks more of the answer more often (more steps predict the answer from the image alone)",
    )
    image_weight: float = Field(5.0, ge=0, description="lambda in L = L_text + lambda * L_image")
    text_weight: float = Field(1.0, ge=0)
    prediction: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    timesteps: int = Field(1000, gt=0)
    beta_schedule: Literal["linear", "cosine", "scaled_linear"] = "cosine"
    cond_drop: float = Field(0.1, ge=0, le=1, description="caption dropout for classifier-free guidance")
    understand_fraction: float = Field(0.5, ge=0, le=1, description="share of image->text examples")
    understand_max_noise: float = Field(0.0, ge=0, le=1, description="noise cap (fraction of t) when reading")
    vqa_fraction: float = Field(0.3, ge=0, le=1, description="share of understanding examples posed as VQA")


class DataSection(_Section):
    path: str = "data/mnist"
    image_size: int | None = Field(None, gt=0, description="resize to this side; None = native")
    channels: int | None = Field(None, gt=0)
    vocab_size: int = Field(512, gt=0)
    shift: int = Field(
        0, ge=0, description="augmentation: random translation of the images read (not generated), up to this many px"
    )


class TrainSection(_Section):
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup: int = Field(100, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)
    ema: float = Field(0.0, ge=0, lt=1, description="EMA decay of weights; 0 = off")
    seed: int = 0
    save_every: int = Field(500, gt=0)
    log_every: int = Field(10, gt=0)
    flops_every: int = Field(
        10, ge=0, description="count FLOPs (torch FlopCounterMode) on every n-th step, scaled by tokens; 0 = off"
    )
    threads: int | None = Field(None, gt=0)
    tensorboard: bool = True
    parallel: Literal["none", "ddp", "fsdp"] = Field(
        "none",
        description="none (one process) | ddp (DistributedDataParallel) | fsdp (FSDP2 fully_shard); ddp / fsdp "
        "need torchrun, e.g. torchrun --nproc-per-node 2 -m unimm train CONFIG --set train.parallel=ddp",
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
    activation_checkpointing: bool = Field(
        False, description="recompute each backbone block in backward instead of keeping its activations"
    )
    max_bad_steps: int = Field(
        3, gt=0, description="stop after this many consecutive steps with a non-finite loss (each is skipped)"
    )

    @model_validator(mode="after")
    def _shards_divide_batch(self) -> "TrainSection":
        if self.batch_shards is not None and self.batch_size % self.batch_shards:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be divisible by train.batch_shards ({self.batch_shards})"
            )
        return self


class SampleSection(_Section):
    sampler: Literal["ddpm", "ddim", "flow_euler", "flow_heun", "ar", "maskgit"] | None = Field(
        None, description="None = the image objective's default (ddim, flow_euler, ar, maskgit)"
    )
    steps: int = Field(25, gt=0, description="denoising / unmasking steps of the image sampler")
    image_temperature: float = Field(1.0, ge=0, description="vq codes: sampling temperature (0 = greedy)")
    image_top_k: int | None = Field(None, gt=0, description="ar codes: keep the k most likely codes")
    choice_temperature: float = Field(4.5, ge=0, description="maskgit: Gumbel noise on confidences, annealed")
    text_steps: int | None = Field(None, gt=0, description="masked text: unmasking steps; None = one per token")
    head_steps: int = Field(50, gt=0, description="mar: denoising steps of the per-patch head (sample.steps = groups)")
    cfg: float = Field(3.0, ge=0)
    temperature: float = Field(0.0, ge=0, description="0 = greedy text decoding")
    top_k: int | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)


class Config(_Section):
    name: str = "unimm"
    model: ModelSection = ModelSection()
    image: ImageSection = ImageSection()
    objective: ObjectiveSection = ObjectiveSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    sample: SampleSection = SampleSection()

    @model_validator(mode="after")
    def _sampler_matches_objective(self) -> "Config":
        denoiser = ("ddim", "ddpm") if self.objective.denoiser == "diffusion" else ("flow_euler", "flow_heun")
        pairs = {
            "diffusion": ("ddim", "ddpm"),
            "flow": ("flow_euler", "flow_heun"),
            "ar": ("ar",),
            "masked": ("maskgit",),
            "mar": denoiser,
            "connector": denoiser,
        }
        wants = {"ar": "vq", "masked": "vq"}.get(self.objective.image, "latent")
        if self.objective.image == "connector" and self.image.understand != "vit":
            raise ValueError("objective.image = 'connector' reads images through a ViT: set image.understand = 'vit'")
        if self.image.decoder_train == "frozen" and self.image.decoder_pretrain_steps == 0:
            raise ValueError("image.decoder_train = 'frozen' needs image.decoder_pretrain_steps > 0")
        if self.image.generate != wants:
            raise ValueError(
                f"objective.image = {self.objective.image!r} needs image.generate = {wants!r} "
                f"(got {self.image.generate!r})"
            )
        if self.sample.sampler is None:
            self.sample.sampler = pairs[self.objective.image][0]
        if self.sample.sampler not in pairs[self.objective.image]:
            raise ValueError(
                f"sample.sampler = {self.sample.sampler!r} does not pair with objective.image = "
                f"{self.objective.image!r}; use one of {pairs[self.objective.image]}"
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
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            section = _section_at(e["loc"][:-1], root)
            allowed = ", ".join(section.model_fields) if section else ""
            lines.append(f"unknown config key '{key}' (allowed here: {allowed})")
        elif e["type"] == "literal_error":
            lines.append(f"bad value for '{key}': {e['input']!r} — allowed: {e['ctx']['expected']}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"bad value for '{key}': {msg}" if key != "config" else msg)
    return "\n".join(lines)


def _section_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string such as flow_euler


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=c`` strings (values parsed as TOML, else taken as strings) to a nested dict."""
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
        node[leaf] = _parse_value(value.strip())
    return raw


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
    """Serialise a resolved config to TOML (None values are omitted: they are the defaults)."""
    out = [f"name = {_toml(cfg.name)}"]
    for section, values in cfg.model_dump(exclude={"name"}).items():
        out.append(f"\n[{section}]")
        out += [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
    return "\n".join(out) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)
