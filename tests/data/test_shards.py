"""Tar shards: deterministic bytes, record round trips, convert -> load_split, and failed converts leave nothing."""

import json
import tarfile

import numpy as np
import pytest
import torch
from test_sources import make_coco, make_imagefolder, make_llava, make_obelics, make_webdataset, pixels, save

from unimm.data import load_split
from unimm.data.shards import convert_to_shards, split_for, to_image_text_data, write_shards
from unimm.data.sources import Record, TooManySkipsError, open_source


def _mixed_records() -> list[Record]:
    return [
        Record("a/b.c", pixels(0), "a caption"),
        Record("conv", pixels(1, grey=True), "Red.", turns=[("user", "<image>\nWhat?"), ("assistant", "Red.")]),
        Record("text-only", None, "hello", turns=[("user", "hi"), ("assistant", "hello")]),
        Record("doc", pixels(2), "one two", segments=["one", pixels(2), "two", pixels(3)]),
        Record("a/b.c", pixels(4), "same key again"),
    ]


def test_write_shards_is_deterministic_and_atomic(tmp_path):
    first = write_shards(_mixed_records(), tmp_path / "a", samples_per_shard=2)
    second = write_shards(_mixed_records(), tmp_path / "b", samples_per_shard=2)
    assert [p.name for p in first] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in first]  # no temp files left
    with tarfile.open(first[0]) as tar:
        names = tar.getnames()
        assert {(m.mtime, m.uid, m.uname) for m in tar.getmembers()} == {(0, 0, "")}
    assert names == ["a_b_c.json", "a_b_c.png", "conv.json", "conv.png"]


def test_records_round_trip_through_shards(tmp_path):
    write_shards(_mixed_records(), tmp_path, samples_per_shard=2)
    back = list(open_source(tmp_path))
    original = _mixed_records()
    assert [r.key for r in back] == [r.key for r in original]
    for got, want in zip(back, original, strict=True):
        assert (got.text, got.turns) == (want.text, want.turns)
        if want.image is None:
            assert got.image is None
        else:
            np.testing.assert_array_equal(got.image, want.image)
    doc = back[3]
    assert [s if isinstance(s, str) else "<img>" for s in doc.segments] == ["one", "<img>", "two", "<img>"]
    np.testing.assert_array_equal(doc.segments[3], pixels(3))


def test_split_for_is_stable_and_follows_fractions():
    keys = [f"k{i}" for i in range(2000)]
    splits = [split_for(k, 0.1, 0.2, seed=0) for k in keys]
    assert splits == [split_for(k, 0.1, 0.2, seed=0) for k in keys]
    assert abs(splits.count("val") / 2000 - 0.1) < 0.03 and abs(splits.count("test") / 2000 - 0.2) < 0.03
    assert splits != [split_for(k, 0.1, 0.2, seed=1) for k in keys]


def test_convert_then_load_split_matches_source(tmp_path):
    src = make_imagefolder(tmp_path / "src")
    for i in range(3, 12):
        save(src / f"img{i}.png", pixels(i))
        (src / f"img{i}.txt").write_text(f"folder {i}")
    meta = convert_to_shards(
        open_source(src), tmp_path / "out", samples_per_shard=3, val_fraction=0.3, test_fraction=0.2
    )
    assert meta["format"] == "shards" and sum(meta["counts"].values()) == 12
    records = list(open_source(src))
    for split in ("train", "val", "test"):
        if not meta["counts"][split]:
            continue
        data = load_split(tmp_path / "out", split, image_size=4, channels=3)
        want = to_image_text_data([r for r in records if split_for(r.key, 0.3, 0.2) == split], 4, 3)
        assert data.captions == want.captions
        torch.testing.assert_close(data.images, want.images)
        assert data.images.shape[1:] == (3, 4, 4) and (data.labels == -1).all()


def test_convert_keeps_source_splits_and_resizes(tmp_path):
    meta = convert_to_shards(open_source(make_coco(tmp_path / "coco")), tmp_path / "out", image_size=4)
    assert meta["counts"] == {"train": 4, "val": 1, "test": 0}
    train = load_split(tmp_path / "out", "train")
    assert train.images.shape == (4, 3, 4, 4) and train.captions[0] == "image 1 caption 0"
    with pytest.raises(ValueError, match="'test' has no shards"):
        load_split(tmp_path / "out", "test")
    with pytest.raises(FileExistsError, match="--force"):
        convert_to_shards(open_source(tmp_path / "coco"), tmp_path / "out")
    convert_to_shards(open_source(tmp_path / "coco"), tmp_path / "out", force=True)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["image_size"] is None


def test_conversations_and_documents_convert(tmp_path):
    for make, name in ((make_llava, "llava"), (make_obelics, "obelics")):
        src = make(tmp_path / name)
        meta = convert_to_shards(open_source(src), tmp_path / f"{name}-out", val_fraction=0, test_fraction=0)
        assert meta["source_format"] in ("llava", "interleaved")
        back = list(open_source(tmp_path / f"{name}-out"))
        assert [(r.key, r.text, r.turns) for r in back] == [(r.key, r.text, r.turns) for r in open_source(src)]
        assert all(r.split == "train" for r in back)


def test_failed_convert_leaves_no_shards(tmp_path):
    src = make_webdataset(tmp_path / "wds")[0].parent
    (src / "shard-000001.tar").write_bytes(b"")  # unreadable second shard
    with pytest.raises(TooManySkipsError):
        convert_to_shards(open_source(src, max_skip_fraction=0.0), tmp_path / "out", samples_per_shard=1)
    assert not (tmp_path / "out" / "meta.json").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_to_image_text_data_sizes_and_channels():
    records = [Record("a", pixels(0, size=(4, 4), grey=True), "a"), Record("b", pixels(1, size=(6, 8)), "b")]
    with pytest.raises(ValueError, match="pass image_size"):
        to_image_text_data(records)
    data = to_image_text_data(records + [Record("t", None, "text only")], image_size=5)
    assert data.images.shape == (2, 3, 5, 5) and data.captions == ["a", "b"]
    assert to_image_text_data(records[:1]).images.shape == (1, 1, 4, 4)
