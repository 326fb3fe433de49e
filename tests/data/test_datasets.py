"""load_split reads both formats, resizes, converts channels and explains missing data."""

import numpy as np
import pytest
import torch

from unimm.data.datasets import load_split, templates_for
from unimm.data.formats import FolderWriter, make_meta, write_idx_split, write_meta

NAMES = ["zero", "one", "two"]


@pytest.fixture
def idx_dir(tmp_path):
    root = tmp_path / "tiny_idx"
    root.mkdir()
    for split, n in [("train", 4), ("val", 2), ("test", 2)]:
        images = np.full((n, 6, 6), 255, dtype=np.uint8)
        images[:, :, :3] = 0  # left half black, right half white
        write_idx_split(root, split, images, np.arange(n) % 3)
    write_meta(root, make_meta("idx", "tiny", NAMES, "digit"))
    return root


@pytest.fixture
def folder_dir(tmp_path):
    root = tmp_path / "tiny_folder"
    with FolderWriter(root) as writer:
        for i, split in enumerate(["train", "train", "val", "test"]):
            image = np.zeros((8, 8, 3), dtype=np.uint8)
            image[..., i % 3] = 255  # pure red, green, blue, red
            writer.add(image, f"caption {i}", split, label=i if i < 2 else None)
    write_meta(root, make_meta("folder", "tinyf", None, "generic"))
    return root


def test_idx_split(idx_dir):
    data = load_split(idx_dir, "train")
    assert data.images.shape == (4, 1, 6, 6) and data.images.dtype == torch.float32
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    assert data.labels.dtype == torch.long and data.labels.tolist() == [0, 1, 2, 0]
    assert data.captions is None and data.caption_kind == "digit" and data.name == "tiny"
    assert templates_for(data).parse("a handwritten two") == 2


def test_folder_split(folder_dir):
    train = load_split(folder_dir, "train")
    assert train.images.shape == (2, 3, 8, 8)
    assert train.captions == ["caption 0", "caption 1"] and train.labels.tolist() == [0, 1]
    assert torch.equal(train.images[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert load_split(folder_dir, "val").labels.tolist() == [-1]
    with pytest.raises(ValueError, match="no class_names"):
        templates_for(train)


def test_resize_and_channels(idx_dir, folder_dir):
    big = load_split(idx_dir, "val", image_size=12, channels=3)
    assert big.images.shape == (2, 3, 12, 12)
    assert torch.equal(big.images[:, 0], big.images[:, 2])
    assert big.images[0, 0, 5, 0] == -1.0 and big.images[0, 0, 5, 11] == 1.0
    small = load_split(folder_dir, "test", image_size=4, channels=1)
    assert small.images.shape == (1, 1, 4, 4)
    red_luma = 0.299 * 1.0 + (0.587 + 0.114) * -1.0
    assert torch.allclose(small.images, torch.full_like(small.images, red_luma), atol=1e-5)


def test_missing_dir_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing_here.*make data"):
        load_split(tmp_path / "nothing_here", "train")


def test_truncated_idx_in_dataset_names_file(idx_dir):
    path = idx_dir / "test-images.idx"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="test-images.idx"):
        load_split(idx_dir, "test")


def test_corrupt_png_in_dataset_names_file(folder_dir):
    (folder_dir / "images/000002.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="000002.png"):
        load_split(folder_dir, "val")
