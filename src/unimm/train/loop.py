"""The training loop: one readable function from a config to a run directory.

Run directory layout: ``config.toml`` (resolved), ``tokenizer/``, ``model.safetensors`` (latest
weights, EMA weights when EMA is on), ``checkpoints/step_NNNNNNN/`` (``model.safetensors``,
``ema.safetensors``, ``train_state.pt``), ``checkpoints/latest`` (name of the newest complete
checkpoint), ``metrics.jsonl``, tensorboard events under ``tb/``.
"""

import json
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from unimm.checkpoint import atomic_write_text, load_state, load_weights, save_state, save_weights
from unimm.config import Config, TokenizerConfig, dump_toml, load_config
from unimm.data import load_split, templates_for
from unimm.models import UnifiedModel
from unimm.optim import EMA, build_optimizer, warmup_cosine
from unimm.sequence import Batch
from unimm.tasks import training_spans
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import ExampleStream

KEEP_CHECKPOINTS = 2


def resolve_data(cfg: Config):
    """Load the train split and fill ``data.image_size`` / ``data.channels`` from it when unset."""
    data = load_split(cfg.data.path, "train", cfg.data.image_size, cfg.data.channels)
    cfg.data.channels = int(data.images.shape[1])
    cfg.data.image_size = int(data.images.shape[-1])
    templates = templates_for(data) if data.class_names and data.labels.ge(0).any() else None
    return data, templates


def build_tokenizer(cfg: Config, data, templates) -> TextTokenizer:
    texts = list(templates.all_texts()) if templates is not None else []
    texts += data.captions or []
    return TextTokenizer.train(texts, vocab_size=cfg.data.vocab_size)


def check_answer_length(model: UnifiedModel, data, templates) -> None:
    """Fixed-length answers (masked text) must hold the longest caption or answer plus ``<eos>``."""
    n = model.layout.answer_len
    if n is None:
        return
    texts = list(templates.all_texts()) if templates is not None else []
    longest = max((len(model.tokenizer.encode(t)) + 1 for t in texts + (data.captions or [])), default=0)
    if longest > n:
        raise ValueError(
            f"sample.max_new_tokens = {n} is the fixed answer length of masked text, but the longest "
            f"caption or answer needs {longest} tokens with <eos>; set sample.max_new_tokens >= {longest}"
        )


def resolve_image_tokenizer(cfg: Config) -> None:
    """``image.tokenizer`` names a trained tokenizer: take its geometry into ``image.vq_*``."""
    if cfg.image.tokenizer is None:
        return
    path = Path(cfg.image.tokenizer)
    if not (path / "config.toml").is_file() or not (path / "tokenizer.safetensors").is_file():
        raise ValueError(f"image.tokenizer = {str(path)!r} is not a 'unimm tokenizer train' output directory")
    t = load_config(path / "config.toml", schema=TokenizerConfig).tokenizer
    if cfg.image.generate != "vq" or t.kind != "vq":
        raise ValueError(
            f"image.tokenizer: a {t.kind!r} tokenizer cannot serve image.generate = {cfg.image.generate!r}"
        )
    im = cfg.image
    im.vq_codebook, im.vq_dim, im.vq_hidden, im.vq_downsample = t.codebook_size, t.code_dim, t.hidden, t.downsample
    im.vq_l2_normalize = t.l2_normalize


def make_batch(model: UnifiedModel, images: torch.Tensor, examples) -> Batch:
    return model.pack(
        [training_spans(ex, im, model.layout, model.tokenizer) for ex, im in zip(examples, images, strict=True)]
    )


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    ckpt = out / "checkpoints" / pointer.read_text().strip()
    if not (ckpt / "train_state.pt").is_file():
        raise ValueError(f"{pointer} names {ckpt.name}, which is incomplete; remove it to start over")
    return ckpt


def save_checkpoint(out: Path, model: UnifiedModel, ema: EMA | None, opt, sched, step: int) -> Path:
    """Write a complete checkpoint directory, then point ``latest`` at it (atomic rename + write)."""
    root = out / "checkpoints"
    name = f"step_{step:07d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model.state_dict(), tmp / "model.safetensors")
    if ema is not None:
        save_weights(ema.state_dict(model), tmp / "ema.safetensors")
    save_state({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "train_state.pt")
    shutil.rmtree(root / name, ignore_errors=True)
    tmp.rename(root / name)
    atomic_write_text(root / "latest", name)
    save_weights(ema.state_dict(model) if ema is not None else model.state_dict(), out / "model.safetensors")
    old = sorted(p for p in root.glob("step_*") if p.name != name)
    for p in old[: max(0, len(old) - (KEEP_CHECKPOINTS - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return root / name


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train ``cfg`` into run directory ``out``; with ``resume`` continue from its latest checkpoint."""
    out = Path(out)
    t_cfg = cfg.train
    if t_cfg.threads:
        torch.set_num_threads(t_cfg.threads)
    ckpt = latest_checkpoint(out) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    if ckpt is None and (out / "checkpoints" / "latest").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if ckpt is not None:
        given, cfg = cfg, load_config(out / "config.toml")  # the run's own resolved config wins
        t_cfg = cfg.train
        ignored = _differences(given, cfg)
        if ignored:
            print(f"note: --resume continues with {out / 'config.toml'}; ignoring {', '.join(ignored)}")
    data, templates = resolve_data(cfg)
    if ckpt is None:
        resolve_image_tokenizer(cfg)
    torch.manual_seed(t_cfg.seed)
    tok = TextTokenizer.load(out / "tokenizer") if ckpt else build_tokenizer(cfg, data, templates)
    model = UnifiedModel(cfg, tok)
    check_answer_length(model, data, templates)
    if ckpt is None:  # a learned image tokenizer (VAE / VQ) trains first, then stays frozen
        codec_stats = model.prepare(data.images, data.labels, seed=t_cfg.seed, progress=progress)
        if codec_stats:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "codec.json", json.dumps(codec_stats, indent=2))
    else:
        model.writer.codec.requires_grad_(False)
    opt = build_optimizer(model, t_cfg.lr, t_cfg.weight_decay, t_cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(t_cfg.warmup, t_cfg.steps, t_cfg.min_lr_ratio))
    ema = EMA(model, t_cfg.ema) if t_cfg.ema > 0 else None
    start = 0
    if ckpt is not None:
        model.load_state_dict(load_weights(ckpt / "model.safetensors"))
        state = load_state(ckpt / "train_state.pt")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["step"]
        if ema is not None:
            ema.shadow = {k: v for k, v in load_weights(ckpt / "ema.safetensors").items() if k in ema.shadow}
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.toml", dump_toml(cfg))
        tok.save(out / "tokenizer")
    _trim_metrics(out / "metrics.jsonl", start)

    stream = ExampleStream(data, templates, cfg.objective, t_cfg.batch_size, t_cfg.seed, cfg.data.shift)
    writer = _tensorboard(out) if t_cfg.tensorboard else None
    n_params = sum(p.numel() for p in model.parameters())
    bar = tqdm(total=t_cfg.steps, initial=start, disable=not progress, desc=f"train {cfg.name}", unit="step")
    model.train()
    tokens_seen, t0 = 0, time.perf_counter()
    with open(out / "metrics.jsonl", "a") as log:
        for step in range(start, t_cfg.steps):
            sums: dict[str, float] = {}
            for micro in range(t_cfg.grad_accum):
                k = step * t_cfg.grad_accum + micro
                images, examples = stream.batch(k)
                batch = make_batch(model, images, examples)
                gen = torch.Generator().manual_seed(t_cfg.seed * 7_919 + k)
                loss, metrics = model(batch, gen)
                (loss / t_cfg.grad_accum).backward()
                tokens_seen += batch.tokens.numel()
                for name, v in metrics.items():
                    sums[name] = sums.get(name, 0.0) + float(v) / t_cfg.grad_accum
            if not all(map(_finite, sums.values())):
                raise FloatingPointError(f"non-finite loss at step {step + 1}: {sums}; last checkpoint is intact")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg.grad_clip or float("inf"))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            done = step + 1
            bar.update(1)
            if done % t_cfg.log_every == 0 or done == t_cfg.steps:
                elapsed = time.perf_counter() - t0
                row = {
                    "step": done,
                    **{k: round(v, 5) for k, v in sums.items()},
                    "grad_norm": round(float(grad_norm), 4),
                    "lr": sched.get_last_lr()[0],
                    "tokens_per_s": round(tokens_seen / elapsed, 1),
                    "params": n_params,
                    **model.routing_stats(),
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{sums['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
                if writer is not None:
                    for k_, v in row.items():
                        if k_ not in ("step", "params") and isinstance(v, (int, float)):
                            writer.add_scalar(f"train/{k_}", v, done)
            if done % t_cfg.save_every == 0 or done == t_cfg.steps:
                save_checkpoint(out, model, ema, opt, sched, done)
    bar.close()
    if writer is not None:
        writer.close()
    return out


def _differences(given: Config, saved: Config) -> list[str]:
    """Keys whose value in ``given`` differs from the run's saved config (unset data sizes excepted)."""
    a, b = given.model_dump(), saved.model_dump()
    out = []
    for section, values in a.items():
        if not isinstance(values, dict):
            if values != b[section]:
                out.append(f"{section} ({values!r} != {b[section]!r})")
            continue
        for k, v in values.items():
            if v != b[section][k] and not (section == "data" and v is None):
                out.append(f"{section}.{k} ({v!r} != {b[section][k]!r})")
    return out


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


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; tolerate a slim install
        return None
    return SummaryWriter(str(out / "tb"))
