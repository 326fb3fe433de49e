"""Canonical IDX files (MNIST as distributed) load directly: splits, class names and clear errors."""

import gzip

import numpy as np
import pytest
import torch

from conftest import write_canonical
from unimm.data.canonical import VAL_FRACTION, find_canonical, is_canonical_name, read_ubyte, val_indices
from unimm.data.datasets import load_split, templates_for

NAMES = ["zero", "one", "two"]


def _arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6), dtype=np.uint8), rng.integers(0, 3, n).astype(np.uint8)


def _dataset(root, gz: bool, sep: str = "-", names: list[str] | None = NAMES, n_train: int = 24):
    train, test = _arrays(n_train, 0), _arrays(5, 1)
    write_canonical(root, *train, "train", gz=gz, sep=sep)
    write_canonical(root, *test, "t10k", gz=gz, sep=sep)
    if names is not None:
        (root / "classes.txt").write_text("\n".join(names) + "\n\n")
    return train, test


@pytest.mark.parametrize(("gz", "sep"), [(False, "-"), (True, "-"), (False, "."), (True, ".")])
def test_plain_gzipped_and_dotted_files_load(tmp_path, gz, sep):
    (train_images, train_labels), (test_images, test_labels) = _dataset(tmp_path, gz, sep)
    test = load_split(tmp_path, "test")
    assert torch.equal(test.images, torch.from_numpy(test_images)[:, None].float() / 127.5 - 1)
    assert test.labels.tolist() == test_labels.tolist()
    assert test.class_names == NAMES and test.caption_kind == "generic" and test.captions is None
    assert test.name == tmp_path.name
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    assert len(val) == round(24 * VAL_FRACTION) == 2 and len(train) + len(val) == 24
    held = val_indices(24)
    assert val.labels.tolist() == train_labels[held].tolist()
    kept = np.setdiff1d(np.arange(24), held)  # the rest, in file order
    assert torch.equal(train.images[:, 0], torch.from_numpy(train_images[kept]).float() / 127.5 - 1)
    assert load_split(tmp_path, "train", image_size=12, channels=3).images.shape == (22, 3, 12, 12)


def test_val_is_carved_by_seed_deterministically(tmp_path):
    _dataset(tmp_path / "a", gz=True, n_train=600)
    _dataset(tmp_path / "b", gz=False, n_train=600)
    first, again = load_split(tmp_path / "a", "val"), load_split(tmp_path / "a", "val")
    assert len(first) == 50 and torch.equal(first.images, again.images)
    assert torch.equal(first.images, load_split(tmp_path / "b", "val").images)  # same files, same split
    held = val_indices(600)
    assert held.tolist() == sorted(set(held.tolist())) and held.tolist() != list(range(50))  # random, not a head
    assert val_indices(600, seed=1).tolist() != held.tolist()


def test_class_names_from_classes_txt_config_or_a_clear_error(tmp_path):
    _dataset(tmp_path, gz=True, names=None)
    data = load_split(tmp_path, "train")
    assert data.class_names is None
    with pytest.raises(ValueError, match=r"no class_names.*data.class_names.*classes.txt"):
        templates_for(data)
    named = load_split(tmp_path, "train", class_names=["cat", "dog", "owl"])
    assert templates_for(named).all_captions(2)[1] == "an image of an owl"  # generic templates
    with pytest.raises(ValueError, match="2 class names, but the labels go up to 2"):
        load_split(tmp_path, "train", class_names=["cat", "dog"])
    (tmp_path / "classes.txt").write_text("zero\none\n")
    with pytest.raises(ValueError, match=r"classes.txt: 2 class names"):
        load_split(tmp_path, "train")
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\n")
    assert load_split(tmp_path, "test").class_names == ["zero", "one", "two"]
    assert load_split(tmp_path, "test", class_names=["a", "b", "c"]).class_names == ["a", "b", "c"]  # config wins


def test_plain_file_wins_over_its_gzipped_copy_and_prefix_names_the_dataset(tmp_path):
    images, labels = _arrays(12, 0)
    write_canonical(tmp_path, images, labels, "emnist-letters-train")
    (tmp_path / "emnist-letters-train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    files = find_canonical(tmp_path)
    assert files.name == "emnist-letters" and not files.files[("train", "images")].name.endswith(".gz")
    assert len(load_split(tmp_path, "train")) == 11
    with pytest.raises(ValueError, match="no test files"):
        load_split(tmp_path, "test")
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_ubyte(tmp_path / "emnist-letters-train-images-idx3-ubyte.gz")


def test_incomplete_or_mixed_files_are_clear_errors(tmp_path):
    assert find_canonical(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        load_split(tmp_path, "train")
    images, labels = _arrays(4, 0)
    write_canonical(tmp_path, images, labels, "t10k")
    with pytest.raises(ValueError, match="test files but no train-images"):
        load_split(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="test images without test labels"):
        find_canonical(tmp_path)
    write_canonical(tmp_path / "two", images, labels, "train")
    write_canonical(tmp_path / "two", images, labels, "fashion-train")
    with pytest.raises(ValueError, match="several datasets"):
        find_canonical(tmp_path / "two")
    bad = tmp_path / "bad"
    write_canonical(bad, images, labels[:3], "train")
    with pytest.raises(ValueError, match="expected 4 integer labels"):
        load_split(bad, "train")


def test_canonical_names():
    for name in (
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte.gz",
        "train-images.idx3-ubyte",
        "test-labels.idx1-ubyte",
    ):
        assert is_canonical_name(name), name
    for name in ("train-images.idx", "train-images-idx3-ubyte.zip", "images-idx3-ubyte", "train.gz"):
        assert not is_canonical_name(name), name


def test_gzip_reads_like_plain(tmp_path):
    images, _ = _arrays(3, 2)
    write_canonical(tmp_path, images, np.zeros(3), "train", gz=True)
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert np.array_equal(read_ubyte(tmp_path / "train-images-idx3-ubyte.gz"), images)
