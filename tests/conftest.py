"""Shared fixtures: a tiny labelled IDX dataset (real scikit-learn digits) and tiny configs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from unimm.config import load_config
from unimm.data import make_meta, write_idx_split, write_meta

torch.set_num_threads(1)
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's 8x8 digits in the IDX format: 200 train / 50 val / 50 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images / 16 * 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("digits")
    for split, sl in {"train": slice(0, 200), "val": slice(200, 250), "test": slice(250, 300)}.items():
        write_idx_split(root, split, images[sl], d.target[sl])
    write_meta(root, make_meta("idx", "digits", NAMES, "digit"))
    return root


def write_canonical(
    root: Path, images: np.ndarray, labels: np.ndarray, part: str, gz: bool = False, sep: str = "-"
) -> None:
    """One part (``train`` / ``t10k``) as the canonical MNIST files ``{part}-images{sep}idx3-ubyte[.gz]`` + labels."""
    import gzip

    from unimm.data.formats import encode_idx

    root.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images", images), ("labels", labels.astype(np.uint8))):
        data = encode_idx(array)
        name = f"{part}-{kind}{sep}idx{array.ndim}-ubyte"
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / name).write_bytes(data)


@pytest.fixture(scope="session")
def canonical_digits(tmp_path_factory) -> Path:
    """scikit-learn's 8x8 digits as gzipped canonical IDX files (240 train, 60 t10k) with a classes.txt."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images / 16 * 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("canonical")
    write_canonical(root, images[:240], d.target[:240], "train", gz=True)
    write_canonical(root, images[240:300], d.target[240:300], "t10k", gz=True)
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return root


def tiny_overrides(data_path: Path, **extra) -> list[str]:
    base = {
        "data.path": f'"{data_path}"',
        "data.vocab_size": 300,
        "model.dim": 32,
        "model.depth": 2,
        "model.heads": 2,
        "codec.patch_size": 4,
        "train.batch_size": 8,
        "train.steps": 4,
        "train.warmup": 1,
        "train.log_every": 1,
        "train.save_every": 2,
        "train.tensorboard": "false",
        "sample.steps": 3,
        "sample.max_new_tokens": 6,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_cfg(digits_dir):
    return load_config(None, tiny_overrides(digits_dir))


def tiny_model_and_batch(data_path: Path, **extra):
    """A seeded tiny ``UnifiedModel`` in training mode and its first batch of 8 -> (cfg, model, batch)."""
    from unimm.models import UnifiedModel
    from unimm.train.loop import build_tokenizer, make_batch, resolve_data
    from unimm.train.stream import ExampleStream

    cfg = load_config(None, tiny_overrides(data_path, **extra))
    data, templates = resolve_data(cfg)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates)).train()
    return cfg, model, make_batch(model, *ExampleStream(data, templates, cfg.data, 8, 0).batch(0))


ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "configs").glob("*.toml"))
# what makes each part kind tiny (applied only to the kind a preset picks)
TINY_PARTS = {
    "codec": {
        "vq": {"hidden": 8, "dim": 8, "codebook": 16, "downsample": 2, "steps": 5},
        "vae": {"hidden": 8, "channels": 2, "downsample": 2, "steps": 5},
    },
    "reader": {"vit": {"dim": 32, "depth": 1, "heads": 2, "pretrain_steps": 0}},
    "writer": {
        "mar": {"head_dim": 16, "head_depth": 1},
        "connector": {"queries": 4, "dim": 16, "depth": 1, "heads": 2, "pretrain_steps": 3},
    },
    "layers": {"moe": {"experts": 4, "top_k": 1}, "modality-moe": {"experts": 4, "top_k": 1}},
}


def tiny_preset_overrides(data_path: Path, preset: str, **extra) -> list[str]:
    """``tiny_overrides`` for ``configs/<preset>.toml``: the backbone, data and training made tiny, and each part
    of the kind the preset picks shrunk by ``TINY_PARTS``; ``extra`` (dotted keys) wins."""
    import tomllib

    raw = tomllib.loads((ROOT / "configs" / f"{preset}.toml").read_text())
    parts = {}
    for section, kinds in TINY_PARTS.items():
        for key, value in kinds.get(raw.get(section, {}).get("kind"), {}).items():
            parts[f"{section}.{key}"] = value
    base = {"data.image_size": 8, "data.channels": 1, "model.max_seq_len": 96, **parts}
    if raw.get("text", {}).get("kind") == "masked":
        base["text.answer_len"] = 16
    overrides = tiny_overrides(data_path, **{**base, **extra})
    return [o for o in overrides if not o.startswith("codec.patch_size=") or "codec.patch_size" in extra]


def tiny_preset(data_path: Path, preset: str, **extra):
    """The resolved config of ``configs/<preset>.toml`` at tiny size (see ``tiny_preset_overrides``)."""
    return load_config(ROOT / "configs" / f"{preset}.toml", tiny_preset_overrides(data_path, preset, **extra))


def train_until(cfg, out: Path, stop_after: int) -> None:
    """Run the training loop and kill it (an exception) right after checkpoint ``stop_after`` is written: N steps
    of a longer run (a resumed run keeps its saved ``train.steps`` and so its LR schedule)."""
    import unimm.train.loop as loop

    real = loop.save_checkpoint

    def save_then_die(out_, model, ema, opt, sched, step, extra=None, **kwargs):
        path = real(out_, model, ema, opt, sched, step, extra, **kwargs)
        if step == stop_after:
            raise KeyboardInterrupt
        return path

    loop.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.train(cfg, out, progress=False)
    finally:
        loop.save_checkpoint = real


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory, digits_dir) -> Path:
    """A tiny Moving MNIST of the conftest digits: 60 clips (48/6/6) of 3 frames of 8x8, one digit of side 4
    moving 1 px a frame, no bounces (the shortest clips the generator allows)."""
    from unimm.data.video import VideoConfig, write_moving_mnist

    root = tmp_path_factory.mktemp("clips") / "moving"
    write_moving_mnist(root, digits_dir, 60, VideoConfig(frames=3, size=8, digit_size=4, speeds=(1,), p_bounce=0.0))
    return root


@pytest.fixture(scope="session")
def edits_dir(tmp_path_factory) -> Path:
    """Edit triples (``data/edits.py``) of the first 60 shapes scenes at 32 px, with their splits."""
    from unimm.data.edits import make_edits, write_edits

    root = tmp_path_factory.mktemp("edits") / "shape_edits"
    write_edits(root, make_edits(60, seed=0))
    return root


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """The generated shapes dataset (``data/prepare.py``), 200 scenes at 32 px."""
    from unimm.data.prepare import prepare_shapes

    root = tmp_path_factory.mktemp("shapes") / "shapes"
    prepare_shapes(root, count=200)
    return root


CHAT_TEXTS = ["draw a two", "here it is", "now a zero", "two zero"]
CHAT_SETTINGS = {"sample.image_temperature": 0, "sample.choice_temperature": 0, "sample.steps": 2, "sample.cfg": 1.0}


def tiny_model(digits_dir: Path, preset: str, **extra):
    """A prepared tiny model of ``preset`` in eval mode with deterministic image sampling (conversation tests)."""
    from unimm.models import UnifiedModel
    from unimm.tokenizers.text import TextTokenizer

    cfg = tiny_preset(digits_dir, preset, **{**CHAT_SETTINGS, "model.max_seq_len": 128, **extra})
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(CHAT_TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[CHAT_TEXTS[0]] * 32)
    return model.eval()


def force(model, script: dict[int, int]) -> list[torch.Tensor]:
    """Make the text decoder pick ``script[i]`` at its i-th call (the model's own choice elsewhere); returns the
    list the logits of every call are recorded in."""
    seen: list[torch.Tensor] = []
    real = model.ctx.text_logits

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = real(hidden)
        seen.append(out.clone())
        if len(seen) - 1 in script:
            out = torch.full_like(out, -1e4)
            out[:, script[len(seen) - 1]] = 0.0
        return out

    model.ctx.text_logits = logits
    return seen
