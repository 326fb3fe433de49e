"""What a newcomer meets first (issue 22): help that reads plainly, cheap checks before expensive work, bounded
generation, one-line errors, a str prompt taken as one prompt, and the README's Python example running."""

import re
import struct
import zlib
from importlib.metadata import version
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import ROOT, tiny_preset_overrides
from unimm.cli import app

runner = CliRunner()
QUICK = str(ROOT / "configs" / "quick.toml")


@pytest.fixture(scope="module")
def run_dir(digits_dir, tmp_path_factory) -> Path:
    """A tiny trained quick run (8x8 grey digits)."""
    run = tmp_path_factory.mktemp("newcomer") / "run"
    sets = [a for o in tiny_preset_overrides(digits_dir, "quick") for a in ("--set", o)]
    result = runner.invoke(app, ["train", QUICK, "--out", str(run), *sets])
    assert result.exit_code == 0, result.output
    return run


def _digit(path: Path) -> Path:
    Image.new("L", (8, 8), 0).save(path)
    return path


def _flat(output: str) -> str:
    """Help or a usage error as one line of words (rich panels wrap and draw borders)."""
    return " ".join(output.replace("│", " ").split())


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


# ------------------------------------------------------------------------------------------ 1: --set and help


def test_help_shows_key_value_and_no_bool_or_list_types():
    for command in (["train", "--help"], ["demo", "--help"], ["generate", "--help"], ["--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output and "<list[" not in result.output, result.output
    assert "KEY=VALUE" in runner.invoke(app, ["train", "--help"]).output
    assert "<str>..." in runner.invoke(app, ["generate", "--help"]).output


def test_h_is_help_everywhere():
    for command in (["-h"], ["train", "-h"], ["data", "convert", "-h"], ["config", "upgrade", "-h"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "Usage:" in result.output, (command, result.output)


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"unimm {version('unimm')}"


def test_extra_key_value_arguments_point_at_set(tmp_path):
    result = runner.invoke(app, ["train", QUICK, "--out", str(tmp_path / "r"), "--set", "a=1", "b=2", "c.d=3"])
    assert result.exit_code == 2
    assert "use --set once per KEY=VALUE: --set b=2 --set c.d=3" in _flat(result.output), result.output


# ------------------------------------------------------------------------------- 3: output paths checked first


@pytest.fixture
def no_training(monkeypatch):
    """Make any training or demo run fail loudly: the checks must stop the command before."""

    def refuse(*args, **kwargs):
        raise AssertionError("expensive work started before the output path was checked")

    monkeypatch.setattr("unimm.train.train", refuse)
    monkeypatch.setattr("unimm.demo.run_demo", refuse)


def test_train_refuses_a_file_as_out_before_training(tmp_path, no_training):
    existing = tmp_path / "file"
    existing.write_text("x")
    assert "is a file" in _one_line_error(runner.invoke(app, ["train", QUICK, "--out", str(existing)]))
    below = _one_line_error(runner.invoke(app, ["train", QUICK, "--out", str(existing / "run")]))
    assert "no directory can be made under it" in below


def test_demo_refuses_a_file_as_out_before_training(tmp_path, no_training):
    existing = tmp_path / "file"
    existing.write_text("x")
    assert "is a file" in _one_line_error(runner.invoke(app, ["demo", "--out", str(existing)]))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report").write_text("x")
    assert "report" in _one_line_error(runner.invoke(app, ["demo", "--out", str(tmp_path / "run")]))


def test_eval_checks_suite_and_out_before_loading(tmp_path):
    from unimm.eval.suites import SUITE_NAMES, SUITES

    existing = tmp_path / "file"
    existing.write_text("x")
    missing_run = str(tmp_path / "no-run")  # loading it would fail: the checks must come first
    assert "is a file" in _one_line_error(runner.invoke(app, ["eval", missing_run, "--out", str(existing)]))
    error = _one_line_error(runner.invoke(app, ["eval", missing_run, "--suite", "bogus"]))
    assert error.endswith(f"use one of {SUITE_NAMES}")
    helped = _flat(runner.invoke(app, ["eval", "--help"]).output)
    assert SUITE_NAMES in helped and all(name in SUITE_NAMES for name in SUITES)


def test_generate_refuses_an_unknown_suffix_before_loading(tmp_path):
    error = _one_line_error(runner.invoke(app, ["generate", str(tmp_path / "no-run"), "a seven", "--out", "x.foo"]))
    assert "'.foo'" in error and ".png" in error


def test_generate_writes_the_format_its_suffix_names(run_dir, tmp_path):
    out = tmp_path / "grid.jpg"
    result = runner.invoke(app, ["generate", str(run_dir), "a handwritten seven", "--n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.format == "JPEG"


def test_generate_into_a_directory_writes_one_file_per_image(run_dir, tmp_path):
    out = tmp_path / "samples"
    out.mkdir()  # an existing directory (a path without suffix would be made)
    args = ["generate", str(run_dir), "a handwritten seven", "the digit 1", "--n", "3", "--batch-size", "4"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == [
        "0-0.png",
        "0-1.png",
        "0-2.png",
        "1-0.png",
        "1-1.png",
        "1-2.png",
    ]
    assert (out / "prompts.txt").read_text() == "0\ta handwritten seven\n1\tthe digit 1\n"
    with Image.open(out / "1-2.png") as im:
        assert im.format == "PNG" and im.size == (16, 16)  # 8x8 at scale 2


# ----------------------------------------------------------------------------------- 4: generate --n, --steps


def test_generate_refuses_non_positive_n_and_steps(run_dir, tmp_path):
    for flag in ("--n", "--steps", "--batch-size"):
        for value in ("0", "-3"):
            args = ["generate", str(run_dir), "a seven", flag, value, "--out", str(tmp_path / "g.png")]
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (flag, value, result.output)
            assert f"Invalid value for '{flag}'" in _flat(result.output), result.output
    assert not (tmp_path / "g.png").exists()


def test_model_generate_refuses_zero_steps(run_dir):
    from unimm.models import UnifiedModel

    model = UnifiedModel.from_pretrained(run_dir)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.generate(["a handwritten seven"], steps=0)
    with pytest.raises(ValueError, match="no prompts"):
        model.generate([])


def test_generate_samples_in_bounded_batches(run_dir, tmp_path, monkeypatch):
    from unimm.models import UnifiedModel

    sizes, real = [], UnifiedModel.generate

    def counted(self, prompts, **kwargs):
        sizes.append(len(prompts))
        return real(self, prompts, **kwargs)

    monkeypatch.setattr(UnifiedModel, "generate", counted)
    args = ["generate", str(run_dir), "a handwritten seven", "--n", "5", "--batch-size", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert sizes == [2, 2, 1]
    with Image.open(tmp_path / "g.png") as g:
        assert g.width == 5 * (2 * 8 + 4) + 4  # one row of five 8x8 images, padded 2 px, at scale 2


def test_a_grid_too_large_is_refused_before_loading(tmp_path):
    error = _one_line_error(runner.invoke(app, ["generate", str(tmp_path / "no-run"), "seven", "--n", "100000"]))
    assert "at most 1,024" in error and "directory" in error


# ------------------------------------------------------------------------------------- 5: one-line errors


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (no pixels): what PIL sees before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_huge_image_is_a_one_line_error(run_dir, tmp_path):
    bomb = _png_claiming(tmp_path / "huge.png", 14000, 14000)
    error = _one_line_error(runner.invoke(app, ["caption", str(run_dir), str(bomb)]))
    assert "huge.png" in error and "MAX_IMAGE_PIXELS" in error


def test_image_size_limit_is_explicit(tmp_path, monkeypatch):
    import unimm.io

    monkeypatch.setattr(unimm.io, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"is 28x28 pixels, more than unimm.io.MAX_IMAGE_PIXELS = 100"):
        unimm.io.load_images([_digit_28(tmp_path)], 8, 1)


def _digit_28(tmp_path: Path) -> Path:
    path = tmp_path / "d28.png"
    Image.new("L", (28, 28), 0).save(path)
    return path


def test_error_while_captioning_is_one_line(run_dir, tmp_path):
    question = " ".join(["which"] * 5000)  # too long for the model: raised inside model.caption
    result = runner.invoke(app, ["caption", str(run_dir), str(_digit(tmp_path / "d.png")), "--question", question])
    assert "model.max_seq_len" in _one_line_error(result)


# ------------------------------------------------------------------------------------------ 7: str prompts


def test_a_str_prompt_is_one_prompt(run_dir, tmp_path):
    import torch

    from unimm.io import load_images
    from unimm.models import UnifiedModel

    model = UnifiedModel.from_pretrained(run_dir)
    gen = torch.Generator().manual_seed(0)
    assert model.generate("a handwritten seven", generator=gen).shape[0] == 1
    one = load_images(str(_digit(tmp_path / "d.png")), model.cfg.data.image_size, model.cfg.data.channels)
    assert one.shape == (1, 1, 8, 8)


def test_readme_python_example_runs(run_dir, tmp_path, monkeypatch):
    """The README's Python block, run as written in a folder holding runs/x and digit.png."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "from_pretrained" in b)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x").symlink_to(run_dir)
    _digit(tmp_path / "digit.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "exported" / "config.toml").is_file()


# ---------------------------------------------------------------------------------- 10: error text and help


def test_a_long_prompt_is_not_echoed_in_full(run_dir):
    prompt = " ".join(["seven"] * 5000)
    error = _one_line_error(runner.invoke(app, ["generate", str(run_dir), prompt, "--n", "1"]))
    assert len(error) < 300 and f"({len(prompt):,} characters)" in error, error


def test_missing_dataset_names_data_path_and_a_sensible_fix(tmp_path):
    import unimm.train.loop
    from unimm.config import load_config
    from unimm.data import load_split

    cfg = load_config(QUICK, ['data.path="/nonexistent"'])
    with pytest.raises(FileNotFoundError) as err:
        unimm.train.loop.resolve_data(cfg)
    message = str(err.value)
    assert message.startswith("data.path = '/nonexistent': dataset not found")
    assert "--out /" not in message and "unimm data convert SOURCE /nonexistent" in message
    with pytest.raises(FileNotFoundError, match=r"prepare --out \S+ --only mnist"):
        load_split(tmp_path / "mnist", "train")


def test_data_convert_help_names_no_internal_function():
    result = runner.invoke(app, ["data", "convert", "--help"])
    assert result.exit_code == 0 and "load_split" not in result.output
    assert "data.path" in result.output
