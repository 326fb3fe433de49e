"""Each source reader on a tiny fixture of its format, format detection, and skipping broken samples."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_canonical
from unimm.data.sources import (
    TooManySkipsError,
    decode_image,
    detect_format,
    expand_braces,
    open_source,
    shard_paths,
)


def pixels(seed: int, size: tuple[int, int] = (6, 8), grey: bool = False) -> np.ndarray:
    """A random uint8 image ``[H,W]`` or ``[H,W,3]``."""
    shape = size if grey else (*size, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def image_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(array))
    return path


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_webdataset(root: Path) -> list[Path]:
    """Two LAION-style shards: 3 samples with .txt captions, 2 with a .json caption field."""
    root.mkdir(parents=True, exist_ok=True)
    first = [m for i in range(3) for m in ((f"s{i}.png", image_bytes(pixels(i))), (f"s{i}.txt", f"cap {i}".encode()))]
    second = [
        m
        for i in range(3, 5)
        for m in ((f"s{i}.jpg", image_bytes(pixels(i), "JPEG")), (f"s{i}.json", json.dumps({"caption": f"cap {i}"})))
    ]
    second = [(n, d.encode() if isinstance(d, str) else d) for n, d in second]
    return [write_tar(root / "shard-000000.tar", first), write_tar(root / "shard-000001.tar", second)]


def make_coco(root: Path) -> Path:
    """COCO layout: train2017 with 2 images x 2 captions, val2017 with 1 image x 1 caption."""
    for name, ids in (("train2017", [1, 2]), ("val2017", [3])):
        images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
        for i in ids:
            save(root / name / f"{i:012d}.jpg", pixels(i))
        per = 2 if name == "train2017" else 1
        anns = [{"id": 10 * i + k, "image_id": i, "caption": f"image {i} caption {k}"} for i in ids for k in range(per)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        data = {"info": {}, "images": images, "annotations": anns}
        (root / "annotations" / f"captions_{name}.json").write_text(json.dumps(data))
    return root


def make_llava(root: Path) -> Path:
    """A LLaVA list: a two-turn conversation, a one-turn caption and a text-only entry."""
    save(root / "images" / "a.png", pixels(0))
    save(root / "images" / "b.png", pixels(1))
    items = [
        {
            "id": "a",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is this?"},
                {"from": "gpt", "value": "A red square."},
                {"from": "human", "value": "And its colour?"},
                {"from": "gpt", "value": "Red."},
            ],
        },
        {
            "id": "b",
            "image": "b.png",
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "b"}],
        },
        {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ]
    path = root / "llava.json"
    path.write_text(json.dumps(items))
    return path


def make_obelics(root: Path) -> Path:
    save(root / "images" / "x.png", pixels(5))
    save(root / "images" / "y.png", pixels(6))
    docs = [
        {"id": "d0", "texts": ["Intro.", None, "Middle.", None], "images": [None, "x.png", None, "y.png"]},
        {"id": "d1", "texts": ["Only text."], "images": [None]},
    ]
    path = root / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def make_mmc4(root: Path) -> Path:
    save(root / "p.png", pixels(7))
    doc = {"text_list": ["First.", "Second."], "image_info": [{"image_name": "p.png", "matched_text_index": 1}]}
    path = root / "mmc4.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    return path


def make_imagefolder(root: Path, metadata: bool = False) -> Path:
    """Three images with sidecar captions, or a HF-style metadata.jsonl."""
    rows = []
    for i in range(3):
        save(root / f"img{i}.png", pixels(i, grey=i == 2))
        if metadata:
            rows.append(json.dumps({"file_name": f"img{i}.png", "text": f"folder {i}"}) + "\n")
        else:
            (root / f"img{i}.txt").write_text(f"folder {i}\n")
    if metadata:
        (root / "metadata.jsonl").write_text("".join(rows))
    return root


def test_webdataset_dir_file_and_brace_pattern(tmp_path):
    shards = make_webdataset(tmp_path / "wds")
    records = list(open_source(tmp_path / "wds"))
    assert [r.key for r in records] == [f"s{i}" for i in range(5)]
    assert [r.text for r in records] == [f"cap {i}" for i in range(5)]
    np.testing.assert_array_equal(records[0].image, pixels(0))  # PNG is lossless
    assert records[3].image.shape == (6, 8, 3)  # JPEG decoded
    assert len(list(open_source(shards[1]))) == 2
    pattern = str(tmp_path / "wds" / "shard-{000000..000001}.tar")
    assert shard_paths(pattern) == shards
    assert len(list(open_source(pattern))) == 5


def test_coco_one_record_per_caption_with_split(tmp_path):
    records = list(open_source(make_coco(tmp_path)))
    assert [(r.key, r.split, r.group) for r in records] == [
        ("1_10", "train", "1"),
        ("1_11", "train", "1"),
        ("2_20", "train", "2"),
        ("2_21", "train", "2"),
        ("3_30", "val", "3"),
    ]
    assert records[1].text == "image 1 caption 1"
    np.testing.assert_array_equal(records[4].image.shape, (6, 8, 3))
    assert len(list(open_source(tmp_path / "annotations" / "captions_val2017.json"))) == 1


def test_llava_keeps_turns_and_text_only_entries(tmp_path):
    records = list(open_source(make_llava(tmp_path)))
    assert [r.key for r in records] == ["a", "b", "t"]
    a = records[0]
    assert a.turns == [
        ("user", "<image>\nWhat is this?"),
        ("assistant", "A red square."),
        ("user", "And its colour?"),
        ("assistant", "Red."),
    ]
    assert a.text == "A red square."
    np.testing.assert_array_equal(a.image, pixels(0))
    assert records[2].image is None and records[2].text == "hello"


def test_interleaved_obelics_and_mmc4_keep_order(tmp_path):
    d0, d1 = open_source(make_obelics(tmp_path))
    kinds = ["text" if isinstance(s, str) else "image" for s in d0.segments]
    assert kinds == ["text", "image", "text", "image"]
    np.testing.assert_array_equal(d0.segments[3], pixels(6))
    assert d0.text == "Intro. Middle." and d0.image is d0.segments[1]
    assert d1.image is None and d1.segments == ["Only text."]
    (doc,) = open_source(make_mmc4(tmp_path / "mmc4"))
    assert [s if isinstance(s, str) else "<img>" for s in doc.segments] == ["First.", "<img>", "Second."]


@pytest.mark.parametrize("metadata", [False, True])
def test_imagefolder_sidecars_and_metadata(tmp_path, metadata):
    records = list(open_source(make_imagefolder(tmp_path, metadata)))
    assert [(r.key, r.text) for r in records] == [(f"img{i}", f"folder {i}") for i in range(3)]
    assert records[2].image.shape == (6, 8)  # grey stays grey


def test_detect_format(tmp_path):
    make_webdataset(tmp_path / "wds")
    make_coco(tmp_path / "coco")
    llava = make_llava(tmp_path / "llava")
    obelics = make_obelics(tmp_path / "obelics")
    mmc4 = make_mmc4(tmp_path / "mmc4")
    make_imagefolder(tmp_path / "folder")
    make_imagefolder(tmp_path / "meta", metadata=True)
    write_canonical(tmp_path / "mnist", pixels(0, grey=True)[None], np.zeros(1), "train", gz=True)
    expected = {
        tmp_path / "mnist": "mnist-idx",
        tmp_path / "mnist" / "train-images-idx3-ubyte.gz": "mnist-idx",
        tmp_path / "wds": "webdataset",
        tmp_path / "wds" / "shard-000000.tar": "webdataset",
        str(tmp_path / "wds" / "shard-{000000..000001}.tar"): "webdataset",
        tmp_path / "coco": "coco",
        tmp_path / "coco" / "annotations" / "captions_train2017.json": "coco",
        llava: "llava",
        tmp_path / "llava": "llava",
        obelics: "interleaved",
        mmc4: "interleaved",
        tmp_path / "folder": "imagefolder",
        tmp_path / "meta": "imagefolder",
    }
    assert {str(p): detect_format(p) for p in expected} == {str(p): f for p, f in expected.items()}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path / "empty")


def test_expand_braces():
    assert expand_braces("s-{008..010}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar"]
    assert expand_braces("{a,b}-{0..1}") == ["a-0", "a-1", "b-0", "b-1"]


def test_transparent_image_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)  # fully transparent black
    assert (decode_image(image_bytes(rgba)) == 255).all()


def _broken_folder(root: Path) -> Path:
    """imagefolder with 5 good images, a corrupt PNG, a truncated PNG, an empty caption and a missing caption."""
    make_imagefolder(root)
    for i in range(3, 5):
        save(root / f"img{i}.png", pixels(i))
        (root / f"img{i}.txt").write_text(f"folder {i}")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    full = image_bytes(pixels(9, size=(32, 32)))
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    for name in ("corrupt", "truncated"):
        (root / f"{name}.txt").write_text("fine caption")
    save(root / "empty.png", pixels(10))
    (root / "empty.txt").write_text("  \n")
    save(root / "nocaption.png", pixels(11))
    return root


def test_corrupt_truncated_and_empty_are_skipped_and_counted(tmp_path, caplog):
    source = open_source(_broken_folder(tmp_path), max_skip_fraction=0.5)
    records = list(source)
    assert sorted(r.key for r in records) == [f"img{i}" for i in range(5)]
    assert source.stats.reasons == {"bad_image": 2, "empty_text": 1, "missing_text": 1}
    assert source.stats.kept == 5 and source.stats.seen == 9
    assert {key for _, key, _ in source.stats.examples} == {"corrupt", "truncated", "empty", "nocaption"}
    assert "truncated" in caplog.text and "bad_image" in caplog.text


@pytest.mark.parametrize("cut", [4700, 5220])  # inside the 3rd sample's image data / caption header
def test_truncated_shard_is_counted_and_earlier_samples_kept(tmp_path, cut):
    (shard,) = make_webdataset(tmp_path)[:1]
    shard.write_bytes(shard.read_bytes()[:cut])
    source = open_source(shard, max_skip_fraction=1.0)
    assert [r.key for r in source] == ["s0", "s1"]
    assert source.stats.reasons == {"bad_shard": 1}


def test_too_many_skips_stops_with_clear_message(tmp_path):
    root = _broken_folder(tmp_path)
    with pytest.raises(TooManySkipsError) as info:
        list(open_source(root, max_skip_fraction=0.2))
    message = str(info.value)
    assert str(root) in message and "skipped 4 of 9" in message and "max_skip_fraction=0.2" in message
    assert "'corrupt'" in message and "--max-skip-fraction" in message
    # the check fires part way once min_seen samples were seen
    with pytest.raises(TooManySkipsError, match="skipped 1 of 1"):
        next(iter(open_source(root, max_skip_fraction=0.0, min_seen=1)))  # corrupt.png sorts first


def test_bad_caption_bytes_and_json_in_shards_are_counted(tmp_path):
    png = image_bytes(pixels(0))
    members = [("a.png", png), ("a.txt", b"\xff\xfe bad utf-8"), ("b.png", png), ("b.json", b"{not json")]
    members += [("c.png", png), ("c.txt", b"fine"), ("d.txt", b"no image")]
    source = open_source(write_tar(tmp_path / "x.tar", members), max_skip_fraction=1.0)
    assert [r.key for r in source] == ["c"]
    assert source.stats.reasons == {"bad_text": 1, "bad_json": 1, "missing_image": 1}
