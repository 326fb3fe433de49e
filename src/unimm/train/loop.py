"""The training loop: one readable function from a config to a run directory.

Run directory layout: ``config.toml`` (resolved), ``tokenizer/``, ``image_stats.json`` (pixel statistics of
the training images, to judge inputs), ``model.safetensors`` (latest weights, EMA weights when EMA is on),
``checkpoints/step_NNNNNNN/`` (``model.safetensors``, ``ema.safetensors``, ``train_state.pt``; or a sharded
``dcp/`` under FSDP2), ``checkpoints/latest`` (name of the newest complete checkpoint), ``metrics.jsonl``,
tensorboard events under ``tb/``, ``codec.json`` (what preparation fitted, its FLOPs by item and wall seconds) and
``init.json`` (what ``model.init`` loaded, when set: ``models/init_from.py``) and
``ledger.json`` (every FLOP that went into the model, by item: ``train/ledger.py``; training steps are counted
without the frozen codec encoder, which is charged once per distinct input: ``train/frozen.py``), and in a
cooldown branch ``fork.json`` (the stable run and step it was forked from: ``train/fork.py``). Data
parallelism (``train.parallel``), the shard layout and checkpoint formats are in ``distributed.py`` and
``checkpoints.py``.
"""

import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unimm.checkpoint import atomic_write_text
from unimm.config import Config, TokenizerConfig, TrainSection, dump_toml, load_config
from unimm.data import load_split, templates_for
from unimm.data.image_stats import ImageStats
from unimm.models import UnifiedModel
from unimm.models.adapters import add_adapters
from unimm.models.encode_cache import cached_encodes
from unimm.models.init_from import apply_init, init_tokenizer
from unimm.nn.lora import seed_dropout
from unimm.optim import EMA, build_optimizer, warmup_cosine, warmup_stable_decay
from unimm.provenance import code_state, record_training_code
from unimm.tasks import longest_sequences
from unimm.tokenizers.text import TextTokenizer
from unimm.train.bad_steps import BadSteps, describe_batch
from unimm.train.checkpoints import (
    load_resumable,
    point_latest,
    remove_leftovers,
    resume_candidates,
    save_checkpoint,
    set_aside,
)
from unimm.train.conversations import StoredConversations, conversation_source
from unimm.train.distributed import (
    DistEnv,
    grad_norm_and_clip,
    grad_sync,
    local_shards,
    replica_quiet,
    resolve_shards,
    setup_distributed,
    wrap_model,
)
from unimm.train.finetune import adopt_base, base_tokenizer, load_base, publish_adapter
from unimm.train.frozen import EncoderInputs, StepFlops, codec_inputs
from unimm.train.kernels import compute
from unimm.train.ledger import build_ledger, read_fork, write_ledger
from unimm.train.stream import ExampleStream, make_batch, one_caption_each
from unimm.train.validation import Validation


def resolve_data(cfg: Config):
    """Load the train split and fill ``data.image_size`` / ``data.channels`` / ``data.frames`` from it when unset;
    ``ValueError`` when it has neither captions nor class names for the labels (nothing to caption with), or when
    ``data.frames`` is not the dataset's (images: None; a video dataset: its clips' frames)."""
    try:
        data = load_split(cfg.data.path, "train", cfg.data.image_size, cfg.data.channels, cfg.data.class_names)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"data.path = {str(cfg.data.path)!r}: {err}") from None
    if cfg.data.frames is not None and cfg.data.frames != data.frames:
        found = "images, not clips" if data.frames is None else f"clips of {data.frames} frames"
        raise ValueError(
            f"data.frames = {cfg.data.frames}, but {cfg.data.path} holds {found}: data.frames is set from the "
            "dataset (leave it unset)"
        )
    cfg.data.channels = int(data.images.shape[-3])
    cfg.data.image_size = int(data.images.shape[-1])
    cfg.data.frames = data.frames
    if data.captions is None:
        templates_for(data)  # raises, saying where class names come from
    templates = templates_for(data) if data.class_names and data.labels.ge(0).any() else None
    return data, templates


def build_tokenizer(cfg: Config, data, templates) -> TextTokenizer:
    """The run's text tokenizer: ``model.init``'s (``model.text_tokenizer = "init"``) or a BPE trained on its texts."""
    if cfg.model.text_tokenizer == "init":
        return init_tokenizer(cfg.model)
    texts = list(templates.all_texts()) if templates is not None else []
    texts += data.stored_texts()
    if cfg.data.interleaved_fraction:
        texts += conversation_source(data, templates).texts()
    return TextTokenizer.train(texts, vocab_size=cfg.data.vocab_size, split_digits=cfg.data.split_digits)


def check_answer_length(model: UnifiedModel, data, templates) -> None:
    """Fixed-length answers (masked text) must hold the longest caption or answer plus ``<eos>``."""
    n = model.layout.answer_len
    if n is None:
        return
    texts = list(templates.all_texts()) if templates is not None else []
    if model.cfg.data.interleaved_fraction and data.conversations is not None:
        texts += StoredConversations(data).answers()
    longest = max((len(model.tokenizer.encode(t)) + 1 for t in texts + data.stored_texts()), default=0)
    if longest > n:
        raise ValueError(
            f"text.answer_len = {n} is the fixed answer length of masked text, but the longest "
            f"caption or answer needs {longest} tokens with <eos>; set text.answer_len >= {longest}"
        )


def check_sequence_length(model: UnifiedModel, data, templates) -> None:
    """The longest sequence of training and of sampling (image tokens, the longest caption, question and answer,
    the special tokens, the text decoded) must fit ``model.max_seq_len``: checked before anything trains, since
    a run past it would train and then neither caption nor generate."""
    captions = data.captions
    if captions is None and templates is not None:
        captions = [c for label in range(templates.num_classes) for c in templates.all_captions(label)]
    vqa = (templates.all_vqa() if templates is not None else []) + data.all_qa()
    decode = model.layout.answer_len or model.cfg.sample.max_new_tokens
    instructions = data.instructions or []
    lengths = longest_sequences(model.layout, model.tokenizer, captions or [], vqa, decode, instructions)
    if model.cfg.data.interleaved_fraction:
        lengths["interleaved"] = conversation_source(data, templates).longest(model.layout, model.tokenizer)
    limit = model.cfg.model.max_seq_len
    if lengths and max(lengths.values()) > limit:
        what, need = max(lengths.items(), key=lambda kv: kv[1])
        decoded = "text.answer_len" if model.layout.answer_len else "sample.max_new_tokens"
        every = ", ".join(f"{k} {v}" for k, v in lengths.items())
        frames = model.cfg.data.frames
        clips = "" if frames is None else f"; a generated clip of {frames} frames: {math.prod(model.layout.gen_grid)}"
        raise ValueError(
            f"model.max_seq_len = {limit} is too short: {what} needs {need} positions (longest sequence of each "
            f"use, image tokens and special tokens included, sampling with {decoded} = {decode}: {every}{clips}); "
            f"set model.max_seq_len >= {need}"
        )


def resolve_image_tokenizer(cfg: Config) -> None:
    """``codec.tokenizer`` names a trained VQ or KL-VAE tokenizer: take its geometry into the ``[codec]`` section."""
    path = getattr(cfg.codec, "tokenizer", None)
    if path is None:
        return
    path = Path(path)
    if not (path / "config.toml").is_file() or not (path / "tokenizer.safetensors").is_file():
        raise ValueError(f"codec.tokenizer = {str(path)!r} is not a 'unimm tokenizer train' output directory")
    t = load_config(path / "config.toml", schema=TokenizerConfig).tokenizer
    if t.kind != cfg.codec.kind:
        raise ValueError(f"codec.tokenizer: a {t.kind!r} tokenizer cannot serve codec.kind = {cfg.codec.kind!r}")
    c = cfg.codec
    if t.kind == "vae":
        c.channels, c.hidden, c.downsample, c.kl = t.code_dim, t.hidden, t.downsample, t.kl_weight
        return
    c.codebook, c.dim, c.hidden, c.downsample = t.codebook_size, t.code_dim, t.hidden, t.downsample
    c.l2_normalize = t.l2_normalize


@dataclass
class FlopTally:
    """Training FLOPs: counted exactly on every ``train.flops_every``-th step, and extended to the steps in
    between by their token counts (a step's FLOPs are close to proportional to its packed tokens). Each process
    counts its own shards and the step's counts are summed over the processes, so the tally is the run's. The
    frozen codec's encoder is measured apart on the counted steps (``train/frozen.py``): ``train_flops`` leaves it
    out, and ``encoder_flops`` charges it once per distinct input."""

    counted_flops: int = 0
    counted_tokens: int = 0
    tokens: int = 0
    encoder_flops: int = 0  # the frozen encoder's FLOPs on the counted steps (not in counted_flops)
    encoder_inputs: int = 0  # the images it encoded there

    def add(self, tokens: int, flops: int | None, encoder_flops: int = 0, encoder_inputs: int = 0) -> None:
        self.tokens += tokens
        if flops is not None:
            self.counted_flops += flops
            self.counted_tokens += tokens
            self.encoder_flops += encoder_flops
            self.encoder_inputs += encoder_inputs

    @property
    def per_input(self) -> float:
        """The frozen encoder's FLOPs per encoded image."""
        return self.encoder_flops / self.encoder_inputs if self.encoder_inputs else 0.0

    def train_flops(self) -> int | None:
        if not self.counted_tokens:
            return None
        return round(self.counted_flops / self.counted_tokens * self.tokens)

    def row(self, distinct_inputs: int | None = None) -> dict:
        if not self.counted_tokens:
            return {}
        out = {"train_flops": self.train_flops(), "tokens": self.tokens}
        if distinct_inputs is not None:
            out["encoder_flops"] = round(self.per_input * distinct_inputs)
        return out


Plan = Callable[[Config, dict], None]  # (config, preparation record) -> None: may set cfg.train's steps


# --resume takes these anew
LAUNCH_SETTINGS = ("parallel", "activation_checkpointing", "compile", "threads", "max_bad_steps")


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, plan: Plan | None = None) -> Path:
    """Train ``cfg`` into run directory ``out``; with ``resume`` continue from its latest checkpoint (or extend
    a run to a new ``train.steps``). Under torchrun every process calls this (``train.parallel`` = ddp / fsdp;
    ddp when left at none); rank 0 alone writes the logs. ``plan`` (a fresh run only) is called after
    preparation, on every process with rank 0's preparation record, and may set ``cfg.train``'s steps and
    schedule from what preparation cost (the atlas's budgets)."""
    code = code_state()  # the code this process loaded, before a preparation of minutes
    env = setup_distributed(cfg.train.parallel)
    if env.parallel != cfg.train.parallel:
        if env.main:
            print(f"note: launched as {env.world} processes with train.parallel = 'none': training with ddp")
        cfg.train.parallel = env.parallel
    try:
        run = _train(cfg, Path(out), resume, progress and env.main, env, plan, code)
        env.barrier()  # no process tears the group down while another still talks to it (gloo aborts at exit)
        return run
    except KeyboardInterrupt:
        if env.main:
            print(resume_hint(Path(out), env.world), file=sys.stderr, flush=True)
        raise
    finally:
        env.close()


def resume_hint(out: Path, world: int = 1) -> str:
    """What to run after an interrupt: the last checkpoint and the command that continues from it."""
    pointer = out / "checkpoints" / "latest"
    if not pointer.is_file():
        return (
            f"interrupted before the first checkpoint of {out}: nothing to resume; run the same command to start over"
        )
    name = pointer.read_text().strip()
    args = sys.argv[1:]
    if world > 1:
        command = "the same torchrun command with --resume"
    elif args[:1] == ["train"]:  # the command line of `unimm train`
        command = shlex.join(["unimm", *args, *([] if "--resume" in args else ["--resume"])])
    else:
        command = f"unimm train CONFIG --out {shlex.quote(str(out))} --resume"
    step = int(name.removeprefix("step_")) if name.removeprefix("step_").isdigit() else name
    return f"interrupted: the last checkpoint is step {step} ({out / 'checkpoints' / name}); continue with: {command}"


def _train(
    cfg: Config, out: Path, resume: bool, progress: bool, env: DistEnv, plan: Plan | None, code: dict | None = None
) -> Path:
    t_cfg = cfg.train
    if t_cfg.threads:
        torch.set_num_threads(t_cfg.threads)
    if resume and not resume_candidates(out):
        raise FileNotFoundError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    if not resume and (out / "checkpoints" / "latest").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    saved_steps = None
    if resume:
        given, cfg = cfg, load_config(out / "config.toml")  # the run's own resolved config wins
        for key in LAUNCH_SETTINGS:  # except how this launch runs it
            setattr(cfg.train, key, getattr(given.train, key))
        saved_steps, cfg.train.steps = cfg.train.steps, given.train.steps  # and how long it runs
        ignored = _differences(_effective(given), cfg)
        if ignored and env.main:
            print(f"note: --resume continues with {out / 'config.toml'}; ignoring {', '.join(ignored)}")
    if env.main and out.is_dir():
        remove_leftovers(out)  # half-written files of a killed run: never read, only cleared
    if cfg.train.init_from is not None and not resume:
        cfg = adopt_base(cfg)  # the base run's model, image size and channels (a resumed run has them already)
    t_cfg = cfg.train
    t_cfg.batch_shards = resolve_shards(t_cfg.batch_size, t_cfg.batch_shards, env.world)
    data, templates = resolve_data(cfg)
    if not resume and t_cfg.init_from is None:
        resolve_image_tokenizer(cfg)
    torch.manual_seed(t_cfg.seed)
    if resume:
        tok = TextTokenizer.load(out / "tokenizer")
    else:
        tok = base_tokenizer(cfg) if t_cfg.init_from else build_tokenizer(cfg, data, templates)
    core = UnifiedModel(cfg, tok)
    core.image_stats = ImageStats.of(data.images)  # what inputs to caption look like (no effect on training)
    # model.init once, at a fresh start: a resumed run loads its own checkpoint, a fine-tune its base run
    if not resume and cfg.model.init is not None and t_cfg.init_from is None:
        started = apply_init(core, torch.Generator().manual_seed(t_cfg.seed))
        if env.main:
            print(
                f"note: backbone initialised from {started['source']} {started['init']} ({started['layers']} "
                f"layers; {started['kept_rows']} embedding rows kept, {started['new_rows']} new)",
                flush=True,
            )
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "init.json", json.dumps(started, indent=2))
    check_answer_length(core, data, templates)
    check_sequence_length(core, data, templates)
    if t_cfg.init_from is not None and not resume and env.main:  # fine-tuning: the base run's weights, nothing prepared
        load_base(core, cfg)
        prep = {}
    elif not resume and env.main:  # a learned image tokenizer (VAE / VQ) trains first, then stays frozen
        for what, steps, key in core.preparation(data.labels):
            print(f"{what} first: {steps} steps ({key}); set {key}=N to shorten it for a smoke test", flush=True)
        captions = one_caption_each(data, templates, t_cfg.seed)
        t_prep = time.perf_counter()
        prep = core.prepare(data.images, data.labels, t_cfg.seed, progress, captions)
        if prep:
            prep["prep_wall_s"] = round(time.perf_counter() - t_prep, 2)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "codec.json", json.dumps(prep, indent=2))
    else:  # resumed, or another rank: the weights come from the checkpoint or from rank 0
        core.freeze_fixed()
        prep = json.loads((out / "codec.json").read_text()) if resume and (out / "codec.json").is_file() else {}
    if plan is not None and not resume:
        plan(cfg, env.gather(prep)[0])
    adapters = add_adapters(core, t_cfg.lora, t_cfg.seed) if t_cfg.lora is not None else None
    if adapters is not None and env.main:
        print(f"LoRA: adapters on {len(adapters['layers'])} layers, {len(adapters['trained'])} modules trained in "
              f"full; {adapters['trainable']:,} of {adapters['total']:,} parameters train", flush=True)  # fmt: skip
    core.backbone.activation_checkpointing = t_cfg.activation_checkpointing
    if t_cfg.compile:
        core.backbone.compile_blocks()
    model = wrap_model(core, env, t_cfg.precision)
    opt = build_optimizer(core, t_cfg.lr, t_cfg.weight_decay, t_cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(t_cfg))
    ema = EMA(core, t_cfg.ema) if t_cfg.ema > 0 else None
    start, flops = 0, FlopTally()
    if resume:
        start, flops = _resume(out, cfg, saved_steps, core, ema, opt, sched, env)
    elif env.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.toml", dump_toml(cfg))
        tok.save(out / "tokenizer")
    if env.main:
        core.image_stats.save(out)  # also into a run resumed from before the file was kept
        _trim_metrics(out / "metrics.jsonl", start)
        record_training_code(out, start, code)  # reports name the code that trained, not the code that reports
    env.barrier()

    shards = t_cfg.batch_shards
    stream = ExampleStream(data, templates, cfg.data, t_cfg.batch_size // shards, t_cfg.seed)
    validation = Validation.build(cfg, templates, env)
    board = _tensorboard(out, purge_step=start + 1 if start else None) if t_cfg.tensorboard and env.main else None
    n_params = sum(p.numel() for p in core.parameters())
    bar = tqdm(total=t_cfg.steps, initial=start, disable=not progress, desc=f"train {cfg.name}", unit="step")
    bad_steps = BadSteps(core, t_cfg.max_bad_steps)
    encoded = (
        EncoderInputs(stream, t_cfg.grad_accum * shards, codec_inputs(core.reader.shared)).advance(start)
        if env.main
        else None
    )

    fork = read_fork(out) if env.main else None  # a cooldown branch: what it inherited (train/fork.py)
    keep = t_cfg.fork_steps()  # checkpoints that cooldown branches will fork from

    def ledger(steps: int) -> dict:
        tokenizer = getattr(cfg.codec, "tokenizer", None)
        return build_ledger(prep, tokenizer, steps, flops.train_flops(), flops.per_input, encoded.distinct,
                            encoded.inputs, fork)  # fmt: skip

    model.train()
    tokens_seen, t0 = 0, time.perf_counter()
    if t_cfg.encode_cache_mib and env.device.type != "cpu" and env.main:
        print(f"note: train.encode_cache_mib is for CPU runs; off on {env.device.type}", file=sys.stderr)
    cache_bytes = t_cfg.encode_cache_mib * 2**20 if env.device.type == "cpu" else 0
    log_file = open(out / "metrics.jsonl", "a") if env.main else nullcontext()  # noqa: SIM115 (closed by the with)
    with bar, log_file as log, cached_encodes(core.writer.codec, cache_bytes) as cache:  # the bar closed also on ^C
        for step in range(start, t_cfg.steps):
            done = step + 1
            counting = bool(t_cfg.flops_every) and step % t_cfg.flops_every == 0
            mine = local_shards(step, t_cfg.grad_accum, shards, env)
            sums: dict[str, float] = {}
            tokens, bad_here = 0, []
            meter = StepFlops(core.writer.codec)  # the step's FLOPs, the frozen encoder measured apart
            routing: dict[str, torch.Tensor] = {}
            for i, k in enumerate(mine):
                images, examples = stream.batch(k)
                batch = make_batch(core, images, examples)
                if env.device.type != "cpu":
                    batch = batch.to(env.device)
                gen = torch.Generator().manual_seed(t_cfg.seed * 7_919 + k)
                if adapters is not None:  # adapter dropout: its own stream, a function of (seed, k) too
                    seed_dropout(core, 2**32 + t_cfg.seed * 7_919 + k, env.device)
                with grad_sync(model, sync=i == len(mine) - 1), meter.count() if counting else nullcontext():
                    with compute(t_cfg, env.device):
                        with replica_quiet(env):
                            loss, metrics = model(batch, gen)
                    (loss / len(mine)).backward()
                tokens += batch.tokens.numel()
                routing = _add(routing, core.routing_counts())
                values = {name: float(v) for name, v in metrics.items()}
                if not all(map(_finite, values.values())):
                    bad_here.append(describe_batch(k, examples))
                for name, v in values.items():
                    sums[name] = sums.get(name, 0.0) + v / len(mine)
            counts = (meter.flops, meter.encoder_flops, meter.encoder_inputs)
            sums, tokens, counted, enc_flops, enc_inputs, n_bad = _reduce(env, sums, tokens, *counts, len(bad_here))
            flops.add(tokens, counted if counting else None, enc_flops, enc_inputs)
            tokens_seen += tokens
            if encoded is not None:
                encoded.advance(done)
            grad_norm = grad_norm_and_clip(model, t_cfg.grad_clip)
            bad_loss = n_bad > 0 or not all(map(_finite, sums.values()))  # the same verdict on every rank
            if bad_loss or not _finite(grad_norm):
                opt.zero_grad(set_to_none=True)
                sched.step()  # the step counts as taken; its batch is skipped
                reason = "non-finite loss" if bad_loss else "non-finite gradient"
                batches = [b for rank in env.gather(bad_here) for b in rank]
                msg = bad_steps.bad(done, reason, batches)
                if env.main:
                    print(f"warning: {msg}", file=sys.stderr)
                    log.write(json.dumps({"step": done, "skipped": reason, "bad_batches": batches, "message": msg}))
                    log.write("\n")
                    log.flush()
            else:
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(core)
                bad_steps.good()
                validating = validation is not None and validation.due(done, t_cfg.steps)
                val = validation(core) if validating else {}  # every process: its val shards
                logging = done % t_cfg.log_every == 0 or done == t_cfg.steps or validating
                if logging and routing:  # every process's shards: the step's routing, whatever the process count
                    routing = {k: env.sum(v.clone()).reshape(v.shape) for k, v in routing.items()}
                if env.main and logging:
                    elapsed = time.perf_counter() - t0
                    row = {
                        "step": done,
                        **{k: round(v, 5) for k, v in sums.items()},
                        "grad_norm": round(grad_norm, 4),
                        "lr": sched.get_last_lr()[0],
                        "tokens_per_s": round(tokens_seen / elapsed, 1),
                        "params": n_params,
                        **flops.row(encoded.distinct),
                        **core.routing_stats(routing),
                        **val,
                    }
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{sums['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                    if board is not None:
                        for k_, v in row.items():
                            if k_ not in ("step", "params") and isinstance(v, (int, float)):
                                tag = f"val/{k_.removeprefix('val_')}" if k_ in val else f"train/{k_}"
                                board.add_scalar(tag, v, done)
            bar.update(1)
            if done % t_cfg.save_every == 0 or done == t_cfg.steps or done in keep:
                extra = {"flops": asdict(flops)}
                if env.main:  # a branch forked here inherits the FLOPs counted so far
                    extra["ledger"] = ledger(done)
                save_checkpoint(out, core, ema, opt, sched, done, extra, keep=keep)
                if env.main:
                    write_ledger(out, extra["ledger"])
                    if adapters is not None:
                        publish_adapter(out, cfg, adapters)
    if board is not None:
        board.close()
    if cache is not None and env.main:
        print(cache.summary(), flush=True)
    return out


def _resume(out: Path, cfg: Config, saved_steps: int, core, ema, opt, sched, env: DistEnv) -> tuple[int, FlopTally]:
    """Load the newest checkpoint that loads (a damaged newer one is set aside with a warning) and apply a new
    ``train.steps``: the LR schedule is then recomputed over the new total. Returns (step, FLOP tally)."""
    ckpt, state, failed = load_resumable(out, core, ema, opt, sched)
    if len(set(env.gather(ckpt.name))) > 1:
        raise ValueError(f"the processes could not load the same checkpoint of {out / 'checkpoints'}")
    start, steps = state["step"], cfg.train.steps
    if env.main:
        for bad, why in failed:
            kept = set_aside(bad)
            where = f"kept as {kept}" if kept != bad else "missing"
            print(f"warning: {bad} does not load ({why}); resuming from {ckpt} instead ({where})", file=sys.stderr)
        if failed:
            point_latest(out, ckpt)
    if steps < start:
        raise ValueError(f"train.steps = {steps} is below step {start} of {ckpt}: pass --set train.steps >= {start}")
    if steps != saved_steps:
        # LambdaLR keeps its step count from the checkpoint and its new lambda: the next steps follow the new
        # schedule; this step's LR, which the optimizer carried over, is recomputed too.
        for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
            group["lr"] = base * factor(sched.last_epoch)
        if env.main:
            saved = load_config(out / "config.toml")
            saved.train.steps = steps
            atomic_write_text(out / "config.toml", dump_toml(saved))
            print(
                f"note: --resume changes train.steps from {saved_steps} to {steps}: the run continues from step "
                f"{start} to {steps}, its LR schedule ({_SCHEDULE_NAMES[cfg.train.schedule]}) recomputed over "
                f"{steps} steps"
            )
    return start, FlopTally(**state.get("flops", {}))


_SCHEDULE_NAMES = {"cosine": "warmup + cosine", "wsd": "warmup-stable-decay"}


def lr_factor(t: TrainSection) -> Callable[[int], float]:
    """The LR multiplier of step ``i`` (0-based) for ``train.schedule``, over ``train.steps``."""
    if t.schedule == "wsd":
        return warmup_stable_decay(t.warmup, t.steps, t.cooldown, t.cooldown_shape, t.min_lr_ratio)
    return warmup_cosine(t.warmup, t.steps, t.min_lr_ratio)


def _reduce(env: DistEnv, sums: dict[str, float], *counts: int) -> tuple:
    """Metric means and counts summed over the processes (metrics divided by the number of processes)."""
    if env.world == 1:
        return (sums, *counts)
    names = sorted(sums)
    total = env.sum(torch.tensor([sums[n] for n in names] + list(counts), dtype=torch.float64))
    means = {n: float(v) / env.world for n, v in zip(names, total[: len(names)].tolist(), strict=True)}
    return (means, *(int(c) for c in total[len(names) :].tolist()))


def _effective(given: Config) -> Config:
    """``given`` as a run would resolve it (``codec.tokenizer``'s geometry adopted), to compare with a saved run."""
    given = given.model_copy(deep=True)
    try:
        resolve_image_tokenizer(given)
    except ValueError:  # the tokenizer directory is gone: compare what was given
        pass
    return given


def _differences(given: Config, saved: Config) -> list[str]:
    """Keys whose value in ``given`` differs from the run's saved config (unset data sizes excepted)."""
    a, b = _flat(given.model_dump()), _flat(saved.model_dump())
    resolved = ("data.image_size", "data.channels", "data.frames", "train.batch_shards")  # filled in when None
    return [
        f"{k} ({a.get(k)!r} != {b.get(k)!r})"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and not (k in resolved and a.get(k) is None)
    ]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _add(total: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Routing counts summed over a step's forwards."""
    return {k: total[k] + v for k, v in counts.items()} if total else counts


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _trim_metrics(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written by a run that was interrupted after its last checkpoint)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                rows.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short when the process was killed
    atomic_write_text(path, "".join(r + "\n" for r in rows))


def _tensorboard(out: Path, purge_step: int | None = None):
    """The run's SummaryWriter; on resume ``purge_step`` (the first step to log again) makes readers drop the
    events an interrupted run logged from that step on, so no step appears twice."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; tolerate a slim install
        return None
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)
