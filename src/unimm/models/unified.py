"""UnifiedModel: one transformer that reads and writes text and images (or clips: a model trained on a video
dataset reads and writes ``[B, T, C, H, W]`` clips wherever an image model takes ``[B, C, H, W]`` images;
an image is the one-frame case of every part, ``data/clips.py``).

Assembled from parts picked by the config (design: docs/architecture.md), never by strategy name; each
section names a kind registered in ``settings.py``:
- ``backbone`` (nn/): the Llama-style trunk, shared by every strategy, its blocks of kind ``[layers]``;
- ``writer`` (``[writer]``, ``models/writers/``): the generation path, with its ``[codec]`` and, when it
  denoises, its ``[denoiser]``;
- ``reader`` (``[reader]``): the understanding path, ``shared`` (the writer embeds what is read) or a
  ViT + connector;
- ``text`` (``[text]``): the text objective with its caption decoder, next-token or masked.
The parts reach the model only through ``ctx`` (``ModelContext``). ``forward`` is the training loss on
a packed batch; ``caption`` and ``generate`` are the two directions of use, each delegated to the part
that owns the algorithm (``edit`` is ``generate`` with a source image read before the instruction);
``score_texts`` (the likelihood of given texts after an image) is the text objective's,
``image_loss`` (a held-out loss of given images after their prompts) the writer's.
"""

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unimm.checkpoint import atomic_write_text, load_weights, save_weights
from unimm.config import Config, dump_toml, load_config
from unimm.data.image_stats import ImageStats
from unimm.data.transparency import assumed_background
from unimm.models.adapters import add_adapters
from unimm.models.context import ModelContext
from unimm.models.continuation import Continuation, DecodeSettings, Reply
from unimm.models.contracts import PrepareData, Reader, TextObjective, Writer
from unimm.models.inputs import check_images, unusual_message
from unimm.nn.backbone import Backbone, BackboneConfig
from unimm.nn.layers import Layers
from unimm.sequence import Batch, SpecialIds
from unimm.settings import LAYERS, READERS, TEXT, WRITERS
from unimm.tasks import ImagePrompt, Layout, Turn, answer_ids, conversation_spans
from unimm.tokenizers.text import TextTokenizer


def backbone_config(cfg: Config, vocab_size: int) -> BackboneConfig:
    m = cfg.model
    return BackboneConfig(
        vocab_size=vocab_size,
        dim=m.dim,
        depth=m.depth,
        heads=m.heads,
        kv_heads=m.kv_heads or m.heads,
        hidden_dim=m.ffn_dim,
        norm_eps=m.norm_eps,
        rope_theta=m.rope_theta,
        qkv_bias=m.qkv_bias,
    )


class UnifiedModel(nn.Module):
    def __init__(self, cfg: Config, tokenizer: TextTokenizer) -> None:
        super().__init__()
        if cfg.data.image_size is None or cfg.data.channels is None:
            raise ValueError("data.image_size and data.channels must be resolved (set from the dataset) first")
        self.cfg, self.tokenizer = cfg, tokenizer
        self.writer: Writer = WRITERS.build(cfg.writer, cfg)
        self.reader: Reader = READERS.build(cfg.reader, cfg, self.writer.grid)
        self.text: TextObjective = TEXT.build(cfg.text)
        # vocabulary: text tokens, then the writer's image codes (shared vocabulary), then [MASK] for text
        self.text_vocab = tokenizer.vocab_size
        self.writer.bind(self.text_vocab)
        self.text.bind(self.text_vocab + self.writer.extra_vocab, tokenizer.special_ids)
        vocab = self.text_vocab + self.writer.extra_vocab + self.text.extra_vocab
        self.layers: Layers = LAYERS.build(cfg.layers)  # the block factory, and the ids its blocks route by
        self.backbone = Backbone(backbone_config(cfg, vocab), make_block=self.layers)
        self.special = SpecialIds(tokenizer.pad_id, tokenizer.boi_id, tokenizer.eoi_id, tokenizer.img_id)
        self.layout = Layout(
            read_grid=self.reader.grid,
            gen_grid=self.writer.grid,
            gen_causal=self.writer.causal,
            answer_len=self.text.answer_len,
            prompt_loss=self.text.prompt_loss,
            link_source=cfg.model.source_link or self.writer.residual,  # residual images need their base aligned
            ground_source=cfg.model.edit_grounding > 0,
            ground_open=cfg.model.edit_grounding_open,
            clean_context=cfg.model.clean_context,
        )
        if cfg.model.clean_context:
            self._check_clean_context(cfg)
        self.source_link = self._source_link(cfg) if cfg.model.source_link else None
        # ``model.edit_grounding``: dim -> 1, does the edit change this source cell (a logit; ``sample.edit_keep``)
        self.grounding = nn.Linear(cfg.model.dim, 1) if cfg.model.edit_grounding > 0 else None
        self.ctx = ModelContext(
            backbone=self.backbone,
            layers=self.layers,
            tokenizer=tokenizer,
            layout=self.layout,
            special=self.special,
            text_vocab=self.text_vocab,
            config=cfg,
            writer=self.writer,
            reader=self.reader,
            text=self.text,
            link=self.source_link,
            grounding=self.grounding,
        )
        self.writer.init_weights(self.ctx)
        self.image_stats: ImageStats | None = None  # of the training images: set by training, saved with the model
        self._warned_unusual = False

    def _check_clean_context(self, cfg: Config) -> None:
        """``model.clean_context`` needs a writer whose generated spans are corrupted in training (else a copy
        changes nothing) and conditional masking (joint masking corrupts every image, read ones too)."""
        if not self.writer.corrupts_generated:
            raise ValueError(
                f"model.clean_context copies generated images whose training inputs are noised or masked; writer "
                f"{cfg.writer.kind!r} trains on inputs later positions may see as they are: turn it off"
            )
        if getattr(cfg.text, "joint", False):
            raise ValueError("model.clean_context cannot be used with text.joint (joint masking corrupts every image)")

    def _source_link(self, cfg: Config) -> nn.Linear:
        """``model.source_link``: dim -> dim, zero at the start (an edit's target begins as without the link)."""
        if self.reader.grid != self.writer.grid:
            raise ValueError(
                f"model.source_link aligns an edit's target with its source cell by cell, but the reader's grid "
                f"{self.reader.grid} differs from the writer's {self.writer.grid} (reader.kind = {cfg.reader.kind!r})"
            )
        link = nn.Linear(cfg.model.dim, cfg.model.dim, bias=False)
        nn.init.zeros_(link.weight)
        return link

    @property
    def background(self) -> tuple[float, ...]:
        """Per channel in [-1, 1]: what transparent pixels of an input become (the training images' background,
        else ``assumed_background``: black for one channel, white for RGB)."""
        if self.image_stats is not None:
            return self.image_stats.background
        return assumed_background(self.cfg.data.channels)

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
        data = PrepareData(images, labels, ids, seed, progress, self.cfg.train.lr, self.cfg.data.cond_drop)
        stats = self.writer.prepare(data)
        self.freeze_fixed()
        stats.update(self.reader.prepare(data))
        return stats

    def preparation(self, labels: torch.Tensor | None = None) -> list[tuple[str, int, str]]:
        """What ``prepare`` will run on data with ``labels``: (what, steps, the config key of the steps) each."""
        return self.writer.preparation() + self.reader.preparation(labels)

    def freeze_fixed(self) -> None:
        """Stop gradients into the parts that stay fixed while the transformer trains (image tokenizer,
        a frozen decoder)."""
        for module in self.writer.fixed_modules():
            module.requires_grad_(False)

    def pack(self, spans: list[list], left_pad: bool = False) -> Batch:
        return self.ctx.pack(spans, left_pad)

    # ----------------------------------------------------------------------------- training
    def routed_layers(self) -> list[nn.Module]:
        """The feed-forwards that route tokens (MoE kinds), in layer order."""
        return [b.mlp for b in self.backbone.layers if hasattr(getattr(b, "mlp", None), "last_stats")]

    def routing_counts(self) -> dict[str, torch.Tensor]:
        """Routing of the last forward as counts that add up over forwards, shards and processes (empty for
        layers without a router): ``tokens`` [layer, expert], ``dropped`` [layer], ``entropy`` [layer] (mean
        router entropy, nats), ``forwards`` (1), and ``by_modality`` [modality, expert] summed over layers."""
        stats = [m.last_stats for m in self.routed_layers() if m.last_stats]
        if not stats:
            return {}
        out = {
            "tokens": torch.stack([s["tokens_per_expert"].double() for s in stats]),
            "dropped": torch.stack([s["dropped"].double() for s in stats]),
            "entropy": torch.stack([s["router_entropy"].double() for s in stats]),
            "forwards": torch.ones((), dtype=torch.float64),
        }
        if all("tokens_per_expert_by_modality" in s for s in stats):
            out["by_modality"] = sum(s["tokens_per_expert_by_modality"].double() for s in stats)
        return {k: v.cpu() for k, v in out.items()}

    def routing_stats(self, counts: dict[str, torch.Tensor] | None = None) -> dict:
        """Routing for the training log from ``counts`` (``routing_counts``, possibly summed over a step's shards
        and processes; default: the last forward): ``expert_tokens`` [layer][expert],
        ``expert_tokens_by_modality`` [modality][expert] summed over layers, ``router_entropy`` (mean over layers
        and forwards, nats), ``dropped_tokens`` and ``expert_load_ratio`` (the largest max/min ratio of tokens
        per expert inside a routing group, over layers; None when an expert got none)."""
        counts = self.routing_counts() if counts is None else counts
        if not counts:
            return {}
        ratio = 0.0
        for m, load in zip(self.routed_layers(), counts["tokens"], strict=True):
            for group in m.groups or [list(range(load.numel()))]:
                g = load[group]
                ratio = max(ratio, float(g.max() / g.min()) if g.min() > 0 else float("inf"))
        forwards = float(counts["forwards"])
        out = {
            "expert_tokens": counts["tokens"].round().long().tolist(),
            "router_entropy": round(float(counts["entropy"].mean()) / forwards, 5),
            "dropped_tokens": int(counts["dropped"].sum()),
            "expert_load_ratio": round(ratio, 4) if ratio != float("inf") else None,
        }
        if "by_modality" in counts:
            out["expert_tokens_by_modality"] = counts["by_modality"].round().long().tolist()
        return out

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss L = w_text * L_text + w_image * L_image + aux, and named metrics. Every random draw
        (text masks, diffusion time and noise, code masks) comes from ``generator``. Under joint masking
        (``text.joint``: the text objective returns a ``joint_mask``) every image, read or generated, is masked
        at its example's time by the writer and carries the image loss."""
        ctx = self.ctx
        tokens, text_state = self.text.corrupt(batch, generator)
        joint = self.text.joint_mask(text_state)
        x = self.backbone.embed_tokens(tokens)
        img = batch.image_id >= 0
        gen = batch.image_generate.to(x.device)
        gen_pos = batch.generated()
        state = None
        if img.any():
            images = batch.images.to(x.device)
            bases = self._bases(batch, images)
            copies = batch.image_context.to(x.device)
            if copies.any():  # clean copies of generated images (``model.clean_context``): embedded as finished ones
                copy_pos = batch.copies()
                x = x.masked_scatter(
                    copy_pos.unsqueeze(-1), self.writer.context_inputs(ctx, images[copies]).to(x.dtype)
                )
                own = ~copies
                img, images, gen = img & ~copy_pos, images[own], gen[own]
                bases = None if bases is None else (bases[0][own], bases[1][own])
            if joint is not None:  # one pass over all images, each denoised at its example's time
                per_image = joint.for_images(batch.image_rows().to(joint.t.device), gen)
                emb, state = self.writer.joint_inputs(ctx, images, per_image, generator)
                x = x.masked_scatter(img.unsqueeze(-1), emb.to(x.dtype))
                gen_pos = img
            elif self.reader.shared:  # the writer embeds read and generated images alike, in one pass
                emb, state = self._train_inputs(images, gen, generator, bases)
                x = x.masked_scatter(img.unsqueeze(-1), emb.to(x.dtype))
            else:
                if gen.any():
                    bases = None if bases is None else (bases[0][gen], bases[1][gen])
                    emb, state = self._train_inputs(images[gen], gen[gen], generator, bases)
                    x = x.masked_scatter(gen_pos.unsqueeze(-1), emb.to(x.dtype))
                if not gen.all():
                    read = self.reader.read(ctx, images[~gen]).to(x.dtype)
                    x = x.masked_scatter((img & ~gen_pos).unsqueeze(-1), read)
        hidden, aux = ctx.run(x, batch)
        text_loss = self.text.loss(ctx, hidden, batch, text_state)
        image_loss = x.new_zeros(())
        if gen_pos.any():
            image_loss, _ = self.writer.loss(ctx, hidden, gen_pos, state, generator)
        loss = self.text.weight * text_loss + self.writer.weight * image_loss
        metrics = {"text_loss": text_loss.detach(), "image_loss": image_loss.detach()}
        if self.grounding is not None:
            ground_loss, metrics["ground_acc"] = self._grounding_loss(hidden, batch.ground.to(hidden.device))
            aux = {**aux, "ground_loss": self.cfg.model.edit_grounding * ground_loss}
        for v in aux.values():
            loss = loss + v
        metrics = {"loss": loss.detach(), **metrics}
        metrics.update({k: v.detach() for k, v in aux.items()})
        return loss, metrics

    def _grounding_loss(self, hidden: torch.Tensor, ground: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``model.edit_grounding``: binary cross-entropy of the grounding head at the read cells that carry a target
        (``batch.ground`` >= 0), averaged over them, and the share of them it gets right. With none (no edit in the
        batch) the loss is 0, still through the head, so that every process of a distributed step uses it."""
        at = ground >= 0
        logits = self.grounding(hidden[at]).squeeze(-1)
        target = ground[at].to(logits.dtype)
        count = max(int(at.sum()), 1)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / count
        correct = ((logits.detach() > 0) == (target > 0.5)).sum() / count
        return loss, correct

    def _train_inputs(self, images: torch.Tensor, gen: torch.Tensor, generator, bases) -> tuple[torch.Tensor, object]:
        """``writer.train_inputs``, with ``bases`` only for a ``residual`` writer (a writer written against the
        four-argument contract, docs/architecture.md, keeps working)."""
        if bases is None:
            return self.writer.train_inputs(self.ctx, images, gen, generator)
        return self.writer.train_inputs(self.ctx, images, gen, generator, bases)

    def _bases(self, batch: Batch, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a ``residual`` writer: (has [N] bool, the image each of ``images`` is aligned with [N, C, H, W]);
        None for other writers."""
        if not self.writer.residual:
            return None
        idx = batch.image_base.to(images.device)
        return idx >= 0, images[idx.clamp_min(0)]

    # ----------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        prompts: str | ImagePrompt | list[str | ImagePrompt],
        cfg_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Text -> images [B, C, H, W] in [-1, 1], one per prompt (a str is one prompt; an ``ImagePrompt`` may hold
        an edit's source or a conversation's context, ``tasks.py``), by the writer's sampler (with guidance when
        cfg != 1). Unset (None) arguments are read from ``cfg.sample`` now; ``steps`` must be >= 1.
        ``use_cache=False`` makes autoregressive codes re-run the whole sequence at every step (reference)."""
        prompts = [prompts] if isinstance(prompts, str | ImagePrompt) else list(prompts)
        if not prompts:
            raise ValueError("no prompts to generate from")
        return self._sample_images(prompts, cfg_scale, steps, sampler, generator, use_cache)

    @torch.no_grad()
    def edit(
        self,
        images: torch.Tensor,
        instructions: str | list[str],
        cfg_scale: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Source images [B, C, H, W] in [-1, 1] + one instruction each (a str: the same for all) -> the edited
        images [B, C, H, W] in [-1, 1], generated by the writer's sampler in the edit layout (``tasks.py``: the
        source read, then the instruction, then the image generated, seeing the source). Guidance (cfg != 1)
        contrasts with the instruction dropped, the source kept. Images are checked as ``caption`` checks them;
        the other arguments are ``generate``'s."""
        images = self._images_to_read(images, "edit")
        instructions = [instructions] * len(images) if isinstance(instructions, str) else list(instructions)
        if len(instructions) != len(images) or not all(isinstance(t, str) for t in instructions):
            raise ValueError(
                f"edit expects one instruction (a str) per image: {len(images)} images, {instructions!r:.60}"
            )
        prompts = [ImagePrompt(t, source=im) for t, im in zip(instructions, images, strict=True)]
        return self._sample_images(prompts, cfg_scale, steps, sampler, generator, use_cache)

    @torch.no_grad()
    def interleave(
        self,
        prompt: str | Sequence[Turn],
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        **settings,
    ) -> Reply:
        """Continue a conversation (a str: one user turn; else ``Turn``s, the last usually the user's) with the model's
        turn: text decoded left to right and, where the text picks ``<boi>``, an image generated in place seeing
        everything before it, text resuming after it, until ``<eos>`` or a limit (``settings``: the fields of
        ``DecodeSettings``, e.g. ``max_images``, ``max_new_tokens``, ``temperature``, ``cfg_scale``). The user's
        images are checked as ``caption`` checks them. Left-to-right text only (``models/continuation.py``)."""
        turns = [Turn("user", (prompt,))] if isinstance(prompt, str) else list(prompt)
        for turn in turns:
            for part in turn.parts:
                if isinstance(part, torch.Tensor):
                    self._images_to_read(part[None], "interleave")
        cont = Continuation(self, use_cache)
        cont.append(conversation_spans(turns, self.layout, self.tokenizer))
        return cont.reply(DecodeSettings(**settings), generator)

    def _sample_images(
        self,
        prompts: list[str | ImagePrompt],
        cfg_scale: float | None,
        steps: int | None,
        sampler: str | None,
        generator: torch.Generator | None,
        use_cache: bool,
    ) -> torch.Tensor:
        """``generate`` / ``edit`` after their checks: unset settings read from ``cfg.sample``, the writer samples."""
        s = self.cfg.sample
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1 (None: sample.steps = {s.steps}), got {steps}")
        scale = s.cfg if cfg_scale is None else cfg_scale
        sampler = sampler or s.sampler
        allowed = self.writer.samplers(self.cfg)
        if sampler not in allowed:
            raise ValueError(f"sampler {sampler!r} does not pair with writer kind {self.cfg.writer.kind!r}: {allowed}")
        steps = s.steps if steps is None else steps
        return self.writer.generate(self.ctx, prompts, scale, steps, sampler, generator, use_cache)

    @torch.no_grad()
    def image_loss(
        self, images: torch.Tensor, prompts: list[str], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1], each with the prompt it would be generated from -> [B] float: the writer's
        held-out image loss of each (``Writer.eval_loss``: exact teacher-forced NLL of VQ codes, else the loss at a
        fixed grid of noise levels / mask ratios; nats per code or squared error per latent element, comparable
        only between models with the same writer kind and codec). In eval mode (the mode is restored after),
        without gradients or guidance; every draw from ``generator`` (None: seed 0). Images are checked as
        ``caption`` checks them; ``NotImplementedError`` for a writer without one."""
        images = self._images_to_read(images, "image_loss")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(images) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"image_loss expects one prompt (a str) per image: {len(images)} images, {prompts!r:.80}")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        was_training = self.training
        self.eval()
        try:
            return self.writer.eval_loss(self.ctx, images, prompts, generator).float()
        finally:
            self.train(was_training)

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
        """Images [B, C, H, W], float in [-1, 1] -> captions (or answers to ``question``), by the text objective's
        decoder; unset arguments are read from ``cfg.sample`` now. Next-token decoding uses a KV cache;
        ``use_cache=False`` re-runs the whole sequence at every step (the reference the cached path is
        tested against). ``ValueError`` for another dtype, shape or value range (``models/inputs.py``); a
        warning, once per model, for images far from the training images (``image_stats``)."""
        s = self.cfg.sample
        images = self._images_to_read(images, "caption")
        temperature = s.temperature if temperature is None else temperature
        max_new = max_new_tokens or s.max_new_tokens
        return self.text.caption(
            self.ctx, images, question, max_new, temperature, top_k or s.top_k, top_p or s.top_p, generator, use_cache
        )

    @torch.no_grad()
    def caption_stream(
        self,
        image: torch.Tensor,
        question: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[str]:
        """One image [1, C, H, W] (checked as ``caption`` checks) -> its caption (or answer) in pieces, each yielded
        as the decoder produces it: a next-token decoder yields each token's text after its step, a masked one the
        whole answer at the end. Joined, the pieces are ``caption``'s text for the same arguments and generator."""
        if image.ndim < 4 or image.shape[0] != 1:
            raise ValueError(f"caption_stream takes one image [1, C, H, W] (or clip), got shape {tuple(image.shape)}")
        s = self.cfg.sample
        image = self._images_to_read(image, "caption_stream")
        temperature = s.temperature if temperature is None else temperature
        max_new = max_new_tokens or s.max_new_tokens
        yield from self.text.stream(
            self.ctx, image, question, max_new, temperature, top_k or s.top_k, top_p or s.top_p, generator, True
        )

    @torch.no_grad()
    def score_texts(
        self,
        images: torch.Tensor,
        texts: list[str],
        question: str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] x texts -> [B, T] float: log p(text | image), or the answer to
        ``question``, summed over the tokens the text objective would produce for it (``text_token_counts``:
        its tokens and ``<eos>``, for masked text padded with ``<eos>`` to ``text.answer_len``). Next-token text:
        exact; masked text: an ELBO estimated with masks drawn from ``generator`` (None: seed 0). Batched, no
        gradients; images are checked as ``caption`` checks them, texts must be a non-empty list of str."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"score_texts expects a non-empty list of str, got {texts!r:.80}")
        images = self._images_to_read(images, "score_texts")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        return self.text.score(self.ctx, images, list(texts), question, generator).float()

    def text_token_counts(self, texts: list[str]) -> list[int]:
        """How many tokens ``score_texts`` sums over for each text."""
        return [len(answer_ids(t, self.tokenizer, self.layout)) for t in texts]

    def _images_to_read(self, images: torch.Tensor, what: str) -> torch.Tensor:
        """``ValueError`` for another dtype, shape or value range, a warning (once per model) for images far
        from the training images; the images as float on the model's device."""
        d = self.cfg.data
        check_images(images, d.channels, d.image_size, self.image_stats, what, d.frames)
        if self.image_stats is not None and not self._warned_unusual:
            message = unusual_message(images, self.image_stats)
            if message is not None:
                self._warned_unusual = True
                warnings.warn(message, UserWarning, stacklevel=4)  # the caller, past no_grad's wrapper
        return images.to(self.ctx.device).float()

    def check_length(self, length: int, what: str) -> None:
        self.ctx.check_length(length, what)

    # ----------------------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path, state_dict: dict | None = None) -> Path:
        """Write config.toml, model.safetensors, tokenizer/ and, when known, image_stats.json (each atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(directory / "tokenizer")
        if self.image_stats is not None:
            self.image_stats.save(directory)
        atomic_write_text(directory / "config.toml", dump_toml(self.cfg))
        save_weights(state_dict if state_dict is not None else self.state_dict(), directory / "model.safetensors")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, weights: str = "model.safetensors") -> "UnifiedModel":
        directory = Path(directory)
        if not (directory / "config.toml").is_file():
            raise FileNotFoundError(f"{directory} is not a unimm model directory (no config.toml)")
        model = cls(load_config(directory / "config.toml"), TextTokenizer.load(directory / "tokenizer"))
        if model.cfg.train.lora is not None:  # a LoRA fine-tune: its weights hold the adapters, unmerged
            add_adapters(model, model.cfg.train.lora)
        state = load_weights(directory / weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{directory / weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.freeze_fixed()
        model.image_stats = ImageStats.load(directory)
        return model.eval()
