"""IDX and captioned-folder round trips, and clear errors on broken files."""

import numpy as np
import pytest
from PIL import Image

from unimm.data.formats import (
    FolderWriter,
    decode_idx,
    encode_idx,
    iter_folder_rows,
    read_idx,
    read_idx_split,
    read_png,
    write_idx,
    write_idx_split,
)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4),
        np.random.default_rng(0).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8),  # RGB
        np.array([3, -1, 70000], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
    ],
)
def test_idx_round_trip(tmp_path, array):
    write_idx(tmp_path / "a.idx", array)
    back = read_idx(tmp_path / "a.idx")
    assert back.dtype == array.dtype.newbyteorder("=") and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_mnist_layout():
    data = encode_idx(np.zeros((2, 28, 28), dtype=np.uint8))
    assert data[:4] == bytes([0, 0, 0x08, 3])
    assert data[4:16] == (2).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    assert len(data) == 16 + 2 * 28 * 28


def test_int64_labels_are_stored_as_int32():
    back = decode_idx(encode_idx(np.array([1, -1, 5], dtype=np.int64)))
    assert back.dtype == np.int32 and back.tolist() == [1, -1, 5]


def test_truncated_idx_raises_value_error_naming_file(tmp_path):
    path = tmp_path / "train-images.idx"
    path.write_bytes(encode_idx(np.ones((4, 3, 3), dtype=np.uint8))[:-5])
    with pytest.raises(ValueError, match="train-images.idx.*truncated"):
        read_idx(path)
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(path)


def test_idx_split_round_trip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (6, 4, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5])
    write_idx_split(tmp_path, "val", images, labels)
    got_images, got_labels = read_idx_split(tmp_path, "val")
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == labels.tolist()
    with pytest.raises(ValueError):
        write_idx_split(tmp_path, "val", images.astype(np.float32), labels)


def test_folder_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    with FolderWriter(tmp_path) as writer:
        writer.add(rgb, "woman surfing", "train", label=3, meta={"category": "people"})
        writer.add(Image.fromarray(grey), "café", "test")
    rows = list(iter_folder_rows(tmp_path))
    assert [r["file"] for r in rows] == ["images/000000.png", "images/000001.png"]
    assert rows[0] == {
        "file": "images/000000.png",
        "caption": "woman surfing",
        "split": "train",
        "label": 3,
        "meta": {"category": "people"},
    }
    assert "label" not in rows[1] and rows[1]["caption"] == "café"
    assert [r["caption"] for r in iter_folder_rows(tmp_path, "test")] == ["café"]
    np.testing.assert_array_equal(read_png(tmp_path / rows[0]["file"]), rgb)
    np.testing.assert_array_equal(read_png(tmp_path / rows[1]["file"]), grey)
    with pytest.raises(ValueError, match="split"):
        FolderWriter(tmp_path / "x").add(rgb, "c", "training")


def test_corrupt_png_raises_value_error_naming_file(tmp_path):
    path = tmp_path / "broken.png"
    with FolderWriter(tmp_path) as writer:
        writer.add(np.zeros((8, 8, 3), dtype=np.uint8), "x", "train")
    path.write_bytes((tmp_path / "images/000000.png").read_bytes()[:30])
    with pytest.raises(ValueError, match="broken.png"):
        read_png(path)
