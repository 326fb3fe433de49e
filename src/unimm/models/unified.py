"""UnifiedModel: one transformer that reads and writes text and images.

Assembled from parts picked by the config (design: docs/architecture.md), never by strategy name:
- ``backbone`` (nn/): the Llama-style trunk, shared by every strategy;
- ``writer``: the generation path named by ``image.generate`` + ``objective.image``: continuous
  latent patches with diffusion / flow (``LatentWriter``), VQ codes predicted autoregressively
  (``ARCodeWriter``) or by masked-token prediction (``MaskedCodeWriter``), continuous patches
  produced group by group through a per-patch diffusion head (``MARWriter``), or query tokens that
  condition a separate diffusion decoder (``ConnectorWriter``);
- ``reader``: the understanding path, ``image.understand``: None (``shared``: the writer embeds the
  images it reads) or a ViT + connector (``vit``, decoupled encoders);
- ``text``: the text objective with its caption decoder, ``objective.text``: next-token or masked.
``forward`` is the training loss on a packed batch; ``caption`` and ``generate`` are the two
directions of use, each delegated to the part that owns the algorithm.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unimm.checkpoint import atomic_write_text, load_weights, save_weights
from unimm.config import Config, dump_toml, load_config
from unimm.models.code_writer import ARCodeWriter, MaskedCodeWriter
from unimm.models.connector_writer import ConnectorWriter
from unimm.models.latent_writer import LatentWriter
from unimm.models.mar_writer import MARWriter
from unimm.models.readers import build_reader
from unimm.nn.backbone import Backbone, BackboneConfig
from unimm.nn.layers import ExpertSpec, make_block_factory
from unimm.objectives.text import build_text_objective
from unimm.sequence import Batch, SpecialIds, collate, pack
from unimm.tasks import Layout, generation_prompt
from unimm.tokenizers.text import TextTokenizer

# parameter-name prefixes of runs saved before the writer/reader split (2026-11) -> today's names
_RENAMED = {"image_codec.": "writer.codec.", "image_in.": "writer.embed.", "image_out.": "writer.head."}


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the parameters of older runs so that they load into today's model."""
    out = {}
    for k, v in state.items():
        for old, new in _RENAMED.items():
            if k.startswith(old):
                k = new + k[len(old) :]
        out[k] = v
    return out


WRITERS = {
    "diffusion": LatentWriter,
    "flow": LatentWriter,
    "ar": ARCodeWriter,
    "masked": MaskedCodeWriter,
    "mar": MARWriter,
    "connector": ConnectorWriter,
}


def backbone_config(cfg: Config, vocab_size: int) -> BackboneConfig:
    m = cfg.model
    hidden = m.hidden_dim or 16 * round(8 * m.dim / 3 / 16)
    return BackboneConfig(
        vocab_size=vocab_size,
        dim=m.dim,
        depth=m.depth,
        heads=m.heads,
        kv_heads=m.kv_heads or m.heads,
        hidden_dim=hidden,
        norm_eps=m.norm_eps,
        rope_theta=m.rope_theta,
    )


def layer_factory(cfg: Config):
    """The block factory of ``model.layers`` (dense, moe, modality-moe, mot)."""
    m = cfg.model
    spec = ExpertSpec(
        m.experts, m.top_k, m.shared_experts, m.expert_hidden_dim, m.capacity_factor, m.moe_aux_weight, m.moe_z_weight
    )
    return make_block_factory(m.layers, spec)


class UnifiedModel(nn.Module):
    def __init__(self, cfg: Config, tokenizer: TextTokenizer) -> None:
        super().__init__()
        if cfg.data.image_size is None or cfg.data.channels is None:
            raise ValueError("data.image_size and data.channels must be resolved (set from the dataset) first")
        self.cfg, self.tokenizer = cfg, tokenizer
        self.writer = WRITERS[cfg.objective.image](cfg)
        self.reader = build_reader(cfg)
        self.text = build_text_objective(cfg)
        # vocabulary: text tokens, then the writer's image codes (shared vocabulary), then [MASK] for text
        self.text_vocab = tokenizer.vocab_size
        self.writer.bind(self.text_vocab)
        self.text.bind(self.text_vocab + self.writer.extra_vocab)
        vocab = self.text_vocab + self.writer.extra_vocab + self.text.extra_vocab
        self.backbone = Backbone(backbone_config(cfg, vocab), make_block=layer_factory(cfg))
        self.writer.init_weights(self.backbone)
        self.special = SpecialIds(tokenizer.pad_id, tokenizer.boi_id, tokenizer.eoi_id, tokenizer.img_id)
        read_grid = self.reader.grid if self.reader is not None else self.writer.grid
        self.layout = Layout(
            read_grid, self.writer.grid, self.writer.causal, self.text.answer_len, self.text.prompt_loss
        )

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: TextTokenizer) -> "UnifiedModel":
        return cls(cfg, tokenizer)

    # ----------------------------------------------------------------------------- parts
    def prepare(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        seed: int = 0,
        progress: bool = True,
        captions: list[str] | None = None,
    ) -> dict:
        """Before the transformer trains: fit the writer's image tokenizer (VAE / VQ) on the training
        images (and pre-train a separate decoder on ``captions``, one per image, when configured),
        then freeze what stays fixed; pre-train the reader's encoder when configured."""
        ids = [self.tokenizer.encode(c) for c in captions] if captions is not None else None
        stats = self.writer.prepare(images, seed=seed, progress=progress, captions=ids)
        self.freeze_fixed()
        if self.reader is not None:
            stats.update(self.reader.prepare(images, labels, seed=seed, progress=progress))
        return stats

    def freeze_fixed(self) -> None:
        """Stop gradients into the parts that stay fixed while the transformer trains (image tokenizer,
        a frozen decoder)."""
        for module in self.writer.fixed_modules():
            module.requires_grad_(False)

    def pack(self, spans: list[list], left_pad: bool = False) -> Batch:
        seqs = [pack(s, self.special) for s in spans]
        return collate(seqs, self.special.pad, self.text.full_attention, left_pad)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the text vocabulary only (image codes and [MASK] are never text)."""
        return F.linear(hidden, self.backbone.lm_head.weight[: self.text_vocab])

    def embed_inputs(self, batch: Batch) -> torch.Tensor:
        """Token embeddings with every image of ``batch`` read (clean) into its positions."""
        x = self.backbone.embed_tokens(batch.tokens)
        img = batch.image_id >= 0
        if img.any():
            images = batch.images.to(x.device)
            emb = self.reader(images) if self.reader is not None else self.writer.read_inputs(self.backbone, images)
            x = x.masked_scatter(img.unsqueeze(-1), emb.to(x.dtype))
        return x

    # ----------------------------------------------------------------------------- training
    def routing_stats(self) -> dict:
        """Routing of the last forward, for the training log (empty for layers without a router):
        ``expert_tokens`` [layer][expert], ``expert_tokens_by_modality`` [modality][expert] summed over layers,
        ``router_entropy`` (mean over layers, nats), ``dropped_tokens`` and ``expert_load_ratio`` (the largest
        max/min ratio of tokens per expert inside a routing group, over layers; inf when an expert got none)."""
        layers = [b.mlp for b in self.backbone.layers if hasattr(getattr(b, "mlp", None), "last_stats")]
        layers = [m for m in layers if getattr(m, "last_stats", None) is not None]
        if not layers:
            return {}
        loads = [m.last_stats["tokens_per_expert"].float() for m in layers]
        ratio = 0.0
        for m, load in zip(layers, loads, strict=True):
            for group in m.groups or [list(range(load.numel()))]:
                g = load[group]
                ratio = max(ratio, float(g.max() / g.min()) if g.min() > 0 else float("inf"))
        out = {
            "expert_tokens": [load.long().tolist() for load in loads],
            "router_entropy": round(sum(float(m.last_stats["router_entropy"]) for m in layers) / len(layers), 5),
            "dropped_tokens": int(sum(int(m.last_stats["dropped"]) for m in layers)),
            "expert_load_ratio": round(ratio, 4) if ratio != float("inf") else None,
        }
        by_mod = [m.last_stats.get("tokens_per_expert_by_modality") for m in layers]
        if all(b is not None for b in by_mod):
            out["expert_tokens_by_modality"] = sum(by_mod).tolist()
        return out

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss L = w_text * L_text + w_image * L_image + aux, and named metrics."""
        obj = self.cfg.objective
        tokens, text_state = self.text.corrupt(batch, generator)
        x = self.backbone.embed_tokens(tokens)
        img = batch.image_id >= 0
        gen = batch.image_generate.to(x.device)
        gen_pos = img & gen[batch.image_id.clamp_min(0)] if gen.numel() else img
        state = None
        if img.any():
            images = batch.images.to(x.device)
            if self.reader is None:  # shared: the writer embeds read and generated images alike
                emb, state = self.writer.train_inputs(self.backbone, images, gen, generator)
                x = x.masked_scatter(img.unsqueeze(-1), emb.to(x.dtype))
            else:
                if gen.any():
                    emb, state = self.writer.train_inputs(self.backbone, images[gen], gen[gen], generator)
                    x = x.masked_scatter(gen_pos.unsqueeze(-1), emb.to(x.dtype))
                if not gen.all():
                    x = x.masked_scatter((img & ~gen_pos).unsqueeze(-1), self.reader(images[~gen]).to(x.dtype))
        hidden, aux = self.backbone(x, batch.positions, batch.modality, batch.attn_mask)
        text_loss = self.text.loss(self, hidden, batch, text_state)
        image_loss = x.new_zeros(())
        if gen_pos.any():
            image_loss, _ = self.writer.loss(self.backbone, hidden, gen_pos, state)
        loss = obj.text_weight * text_loss + obj.image_weight * image_loss
        for v in aux.values():
            loss = loss + v
        metrics = {"loss": loss.detach(), "text_loss": text_loss.detach(), "image_loss": image_loss.detach()}
        metrics.update({k: v.detach() for k, v in aux.items()})
        return loss, metrics

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        cfg_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Text -> images [B, C, H, W] in [-1, 1], by the writer's sampler (with guidance when cfg != 1).
        ``use_cache=False`` makes autoregressive codes re-run the whole sequence at every step (reference)."""
        s = self.cfg.sample
        scale = s.cfg if cfg_scale is None else cfg_scale
        return self.writer.generate(self, prompts, scale, steps or s.steps, sampler or s.sampler, generator, use_cache)

    def generation_batch(self, prompts: list[str], guided: bool) -> tuple[Batch, torch.Tensor]:
        """The packed t2i prompts (then their unconditional twins when ``guided``) and their token embeddings."""
        n = self.writer.grid[0] * self.writer.grid[1]
        for p in prompts:
            self.check_length(len(self.tokenizer.encode(p)) + n + 4, f"prompt {p!r}")  # bos boi eoi eos
        seqs = [generation_prompt(p, self.layout, self.tokenizer) for p in prompts]
        if guided:
            seqs += [generation_prompt(None, self.layout, self.tokenizer) for _ in prompts]
        batch = self.pack(seqs).to(next(self.parameters()).device)
        return batch, self.backbone.embed_tokens(batch.tokens)

    # ----------------------------------------------------------------------------- understanding
    @torch.no_grad()
    def caption(
        self,
        images: torch.Tensor,
        question: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> list[str]:
        """Images [B, C, H, W] in [-1, 1] -> captions (or answers to ``question``), by the text objective's
        decoder. Next-token decoding uses a KV cache; ``use_cache=False`` re-runs the whole sequence at
        every step (the reference the cached path is tested against)."""
        s = self.cfg.sample
        images = images.to(next(self.parameters()).device).float()
        temperature = s.temperature if temperature is None else temperature
        max_new = max_new_tokens or s.max_new_tokens
        return self.text.caption(
            self, images, question, max_new, temperature, top_k or s.top_k, top_p or s.top_p, generator, use_cache
        )

    def check_length(self, length: int, what: str) -> None:
        if length > self.cfg.model.max_seq_len:
            raise ValueError(
                f"{what} needs {length} positions, more than model.max_seq_len = {self.cfg.model.max_seq_len}"
            )

    # ----------------------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> Path:
        """Write config.toml, model.safetensors and tokenizer/ (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(directory / "tokenizer")
        atomic_write_text(directory / "config.toml", dump_toml(self.cfg))
        save_weights(state_dict if state_dict is not None else self.state_dict(), directory / "model.safetensors")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, weights: str = "model.safetensors") -> "UnifiedModel":
        directory = Path(directory)
        if not (directory / "config.toml").is_file():
            raise FileNotFoundError(f"{directory} is not a unimm model directory (no config.toml)")
        model = cls(load_config(directory / "config.toml"), TextTokenizer.load(directory / "tokenizer"))
        state = upgrade_state_dict(load_weights(directory / weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{directory / weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.freeze_fixed()
        return model.eval()
