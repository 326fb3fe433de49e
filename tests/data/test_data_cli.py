"""``unimm data inspect`` / ``unimm data convert`` through typer's CliRunner."""

import shutil

import torch
from test_sources import make_llava, make_webdataset
from typer.testing import CliRunner

from unimm.cli import app
from unimm.data import CaptionTemplates, load_split

runner = CliRunner()


def test_inspect_reports_format_counts_skips_and_examples(tmp_path):
    make_webdataset(tmp_path)
    (tmp_path / "shard-000001.tar").write_bytes(b"")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--examples", "2"])
    assert result.exit_code == 0, result.output
    for text in ("webdataset", "records", "3", "bad_shard=1", "e.g. s0", "cap 0", "height 6..6", "rgb=3"):
        assert text in result.output, text
    assert "warning" in result.output  # 1 of 4 broken is over the 1% convert would allow


def test_inspect_shows_turns_and_limit(tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(make_llava(tmp_path)), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "llava" in result.output and "limit reached" in result.output
    assert "user: <image> What is this? | assistant: A red square." in result.output


def test_convert_writes_loadable_shards(tmp_path):
    make_webdataset(tmp_path / "src")
    out = tmp_path / "out"
    args = ["data", "convert", str(tmp_path / "src"), str(out), "--samples-per-shard", "2", "--image-size", "4"]
    result = runner.invoke(app, [*args, "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert "train=5" in result.output and "3 shards" in result.output and "skipped 0 of 5" in result.output
    data = load_split(out, "train")
    assert data.images.shape == (5, 3, 4, 4) and data.captions == [f"cap {i}" for i in range(5)]


def test_convert_stops_on_too_many_broken_samples(tmp_path):
    make_webdataset(tmp_path / "src")
    (tmp_path / "src" / "shard-000001.tar").write_bytes(b"")
    result = runner.invoke(app, ["data", "convert", str(tmp_path / "src"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "skipped 1 of 4" in result.output and "--max-skip-fraction" in result.output
    result = runner.invoke(
        app, ["data", "convert", str(tmp_path / "src"), str(tmp_path / "out"), "--max-skip-fraction", "0.5"]
    )
    assert result.exit_code == 0, result.output


def test_unknown_or_undetectable_format_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 2 and "--format" in result.output
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--format", "parquet"])
    assert result.exit_code == 2 and "unknown format 'parquet'" in result.output


def test_inspect_and_convert_canonical_idx_files(canonical_digits, tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(canonical_digits)])
    assert result.exit_code == 0, result.output
    for text in ("mnist-idx", "300", "test=60", "train=220", "val=20", "10 from classes.txt: zero, one", "grey=300"):
        assert text in result.output, text
    out = tmp_path / "shards"
    result = runner.invoke(app, ["data", "convert", str(canonical_digits / "t10k-images-idx3-ubyte.gz"), str(out)])
    assert result.exit_code == 0, result.output
    assert "mnist-idx" in result.output and "train=220, val=20, test=60" in result.output
    direct, shards = load_split(canonical_digits, "val"), load_split(out, "val")
    assert torch.equal(direct.images, shards.images)  # the same split, the same pixels
    templates = CaptionTemplates(direct.class_names, "generic")
    assert all(c in templates.all_captions(y) for c, y in zip(shards.captions, direct.labels.tolist(), strict=True))


def test_convert_of_canonical_idx_needs_class_names(canonical_digits, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(canonical_digits, src)
    (src / "classes.txt").unlink()
    result = runner.invoke(app, ["data", "inspect", str(src)])
    assert result.exit_code == 0 and "label " in result.output and "none: write classes.txt" in result.output
    result = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "out")])
    assert result.exit_code == 2 and "no classes.txt" in result.output and "printf" in result.output
    assert not (tmp_path / "out").exists()
