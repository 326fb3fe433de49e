"""UnifiedModel: one transformer that reads and writes text and images.

Assembled from parts picked by the config (design: docs/architecture.md):
``backbone`` (nn/), image in/out (``models/image_io.py``), the image objective and its
sampler (``objectives/``, ``samplers/``). ``forward`` is the training loss on a packed batch;
``caption`` and ``generate`` are the two directions of use.
"""

from pathlib import Path

import torch
from torch import nn

from unimm.checkpoint import atomic_write_text, load_weights, save_weights
from unimm.config import Config, dump_toml, load_config
from unimm.models.image_io import PatchEmbed, PatchHead, PixelPatches
from unimm.models.vae import VAEPatches
from unimm.nn.backbone import Backbone, BackboneConfig
from unimm.nn.kv_cache import KVCache
from unimm.objectives import build_image_objective, text_ar_loss
from unimm.samplers.guidance import classifier_free_guidance
from unimm.samplers.text import select_next
from unimm.sequence import IGNORE, Batch, SpecialIds, TextSpan, collate, pack
from unimm.tasks import generation_prompt, understanding_prompt
from unimm.tokenizers.text import TextTokenizer


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


def build_image_codec(cfg: Config) -> nn.Module:
    """The continuous latent named by ``image.latent``: raw pixel patches or a small VAE's latent patches."""
    im, d = cfg.image, cfg.data
    if im.latent == "vae":
        return VAEPatches(
            d.channels,
            d.image_size,
            im.patch_size,
            im.vae_channels,
            im.vae_downsample,
            im.vae_hidden,
            im.vae_steps,
            im.vae_kl,
        )
    return PixelPatches(d.channels, d.image_size, im.patch_size)


class UnifiedModel(nn.Module):
    def __init__(self, cfg: Config, tokenizer: TextTokenizer) -> None:
        super().__init__()
        if cfg.data.image_size is None or cfg.data.channels is None:
            raise ValueError("data.image_size and data.channels must be resolved (set from the dataset) first")
        self.cfg, self.tokenizer = cfg, tokenizer
        self.backbone = Backbone(backbone_config(cfg, tokenizer.vocab_size))
        self.image_codec = build_image_codec(cfg)
        self.image_in = PatchEmbed(self.image_codec.patch_dim, cfg.model.dim)
        self.image_out = PatchHead(cfg.model.dim, self.image_codec.patch_dim)
        self.objective = build_image_objective(cfg.objective)
        self.special = SpecialIds(tokenizer.pad_id, tokenizer.boi_id, tokenizer.eoi_id, tokenizer.img_id)

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: TextTokenizer) -> "UnifiedModel":
        return cls(cfg, tokenizer)

    # ----------------------------------------------------------------------------- training
    @property
    def grid(self) -> tuple[int, int]:
        return self.image_codec.grid

    def pack(self, spans) -> "Batch":
        return collate([pack(s, self.special, self.image_codec.patch_dim) for s in spans], self.special.pad)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss L = w_text * L_text + w_image * L_image + aux, and named metrics."""
        obj_cfg, dev = self.cfg.objective, batch.tokens.device
        x = self.backbone.embed_tokens(batch.tokens)
        img = batch.image_id >= 0
        image_loss = x.new_zeros(())
        gen_pos = torch.zeros_like(img)
        if img.any():
            ids = batch.image_id[img]
            x0 = batch.patches[img]
            gen = batch.image_generate.to(dev)
            n = gen.numel()
            t = self.objective.sample_time(n, generator).to(dev)
            # images the model reads are clean, or noised up to a cap (Transfusion's noise capping)
            t_read = self.objective.time_at(torch.rand(n, generator=generator).to(dev) * obj_cfg.understand_max_noise)
            t = torch.where(gen, t, t_read)
            noise = torch.randn(x0.shape, generator=generator).to(dev)
            x_t, target = self.objective.corrupt(x0, noise, t[ids])
            level = self.objective.level(t)
            if obj_cfg.understand_max_noise == 0:
                level = torch.where(gen, level, torch.zeros_like(level))
                x_t = torch.where(gen[ids, None], x_t, x0)
            x = x.masked_scatter(img.unsqueeze(-1), self.image_in(x_t, level[ids]).to(x.dtype))
            gen_pos = img.clone()
            gen_pos[img] = gen[ids]
        hidden, aux = self.backbone(x, batch.positions, batch.modality, batch.attn_mask)
        has_target = batch.targets != IGNORE
        text_loss = text_ar_loss(self.backbone.lm_head(hidden[has_target]), batch.targets[has_target])
        if gen_pos.any():
            pred = self.image_out(hidden[gen_pos])
            image_loss, _ = self.objective.loss(pred, target[gen_pos[img]])
        loss = obj_cfg.text_weight * text_loss + obj_cfg.image_weight * image_loss
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
    ) -> torch.Tensor:
        """Text -> images [B, C, H, W] in [-1, 1]."""
        s = self.cfg.sample
        scale = s.cfg if cfg_scale is None else cfg_scale
        n_patch, patch_dim = self.grid[0] * self.grid[1], self.image_codec.patch_dim
        dev = next(self.parameters()).device
        blank = torch.zeros(n_patch, patch_dim)
        for p in prompts:
            self._check_length(len(self.tokenizer.encode(p)) + n_patch + 3, f"prompt {p!r}")
        seqs = [generation_prompt(p, blank, self.grid, self.tokenizer) for p in prompts]
        if scale != 1.0:
            seqs += [generation_prompt(None, blank, self.grid, self.tokenizer) for _ in prompts]
        batch = self.pack(seqs).to(dev)
        img = batch.image_id >= 0
        base = self.backbone.embed_tokens(batch.tokens)

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            level = self.objective.level(t).repeat_interleave(n_patch)
            emb = self.image_in(x_t.reshape(-1, patch_dim), level)
            hidden, _ = self.backbone(
                base.masked_scatter(img.unsqueeze(-1), emb), batch.positions, batch.modality, batch.attn_mask
            )
            return self.image_out(hidden[img]).view(x_t.shape)

        fn = classifier_free_guidance(model_fn, scale) if scale != 1.0 else model_fn
        noise = torch.randn(len(prompts), n_patch, patch_dim, generator=generator).to(dev)
        x0 = self.objective.run_sampler(sampler or s.sampler, fn, noise, steps or s.steps, generator)
        return self.image_codec.decode(x0).clamp(-1, 1)

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
        """Images [B, C, H, W] in [-1, 1] -> captions (or answers to ``question``).

        Decoding uses a KV cache; ``use_cache=False`` re-runs the whole sequence at every step
        (the reference the cached path is tested against).
        """
        s, tok = self.cfg.sample, self.tokenizer
        max_new = max_new_tokens or s.max_new_tokens
        temperature = s.temperature if temperature is None else temperature
        dev = next(self.parameters()).device
        patches = self.image_codec.encode(images.to(dev).float())
        prompts = [understanding_prompt(p, self.grid, tok, question) for p in patches.cpu()]
        batch = self.pack(prompts).to(dev)
        self._check_length(batch.tokens.shape[1] + max_new, "question" if question else "caption prompt")
        cache = self.backbone.new_cache(batch.tokens.shape[1] + max_new) if use_cache else None
        logits = self._last_logits(batch, cache)
        out = torch.empty(len(images), 0, dtype=torch.long, device=dev)
        done = torch.zeros(len(images), dtype=torch.bool, device=dev)
        pos = batch.next_position.to(dev)
        for i in range(max_new):
            nxt = select_next(logits, temperature, top_k or s.top_k, top_p or s.top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_id), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == tok.eos_id
            if bool(done.all()) or i == max_new - 1:
                break
            if cache is not None:
                p = (pos + i).view(-1, 1, 1).expand(-1, 3, 1)
                hidden, _ = self.backbone(self.backbone.embed_tokens(nxt[:, None]), p, cache=cache)
                logits = self.backbone.lm_head(hidden[:, -1])
            else:
                spans = [[*sp, TextSpan(row, loss=False)] for sp, row in zip(prompts, out.tolist(), strict=True)]
                logits = self._last_logits(self.pack(spans).to(dev), None)
        return [tok.decode(self._until_eos(row)) for row in out.tolist()]

    def _last_logits(self, batch: Batch, cache: KVCache | None) -> torch.Tensor:
        """Forward a packed prompt whose images are read clean; next-token logits at the last position [B, V]."""
        img = batch.image_id >= 0
        x = self.backbone.embed_tokens(batch.tokens)
        if img.any():
            level = torch.zeros(int(img.sum()), device=x.device)
            x = x.masked_scatter(img.unsqueeze(-1), self.image_in(batch.patches[img], level))
        hidden, _ = self.backbone(x, batch.positions, batch.modality, batch.attn_mask, cache)
        return self.backbone.lm_head(hidden[:, -1])

    def _until_eos(self, ids: list[int]) -> list[int]:
        eos = self.tokenizer.eos_id
        return ids[: ids.index(eos)] if eos in ids else ids

    def _check_length(self, length: int, what: str) -> None:
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
        state = load_weights(directory / weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{directory / weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.eval()
