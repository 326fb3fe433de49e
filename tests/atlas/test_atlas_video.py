"""The atlas on a video dataset: a tiny plan on Moving MNIST clips plans, trains, evaluates with eval/video.py and
reads per-frame prompt accuracy, motion accuracy and the direction question back as atlas metrics."""

import json
from pathlib import Path

import pytest

from conftest import tiny_overrides
from unimm.atlas import load_atlas, plan_runs, run_atlas
from unimm.atlas.metrics import HIGHER_IS_BETTER, RATES
from unimm.atlas.results import load_result
from unimm.config import ConfigError

CONFIGS = Path(__file__).parents[2] / "configs"
VIDEO_METRICS = ("frame_prompt_accuracy", "motion_accuracy", "temporal_consistency", "direction_vqa_accuracy")


def _atlas(tmp_path: Path, clips: Path, suites: str = "[]") -> Path:
    common = [o for o in tiny_overrides(clips, **{"sample.steps": 2}) if not o.startswith(("data.path", "codec."))]
    text = f"""name = "video"\ndata = "{clips}"\nset = {json.dumps([*common, "model.max_seq_len=128"])}
[budget]\nflops = 2e8\n[eval]\nsuite = "atlas"\nclips_n = 6\nclassifier_steps = 20\n[[strategies]]
name = "transfusion"\npreset = "{CONFIGS / "quick.toml"}"\nsuites = {suites}
set = ["codec.steps=5", "codec.hidden=8", "codec.downsample=2"]\n"""
    (tmp_path / "atlas.toml").write_text(text)
    return tmp_path / "atlas.toml"


def test_a_video_atlas_plans_trains_and_reads_the_video_metrics(clips_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    atlas = load_atlas(_atlas(tmp_path, clips_dir))
    (run,) = plan_runs(atlas)
    outcomes, md = run_atlas(atlas, tmp_path / "out", jobs=1)
    assert [o.status for o in outcomes] == ["done"], outcomes
    folder = tmp_path / "out" / "runs" / run.name
    ev = json.loads((folder / "eval" / "eval.json").read_text())
    assert ev["dataset"]["frames"] == 3 and ev["generation"]["n"] == 6
    values = load_result(run, folder).values
    for metric in VIDEO_METRICS:
        assert HIGHER_IS_BETTER[metric] and metric in RATES
        assert 0 <= values[metric] <= 1, metric
    assert values["frame_prompt_accuracy"] == ev["generation"]["frame_prompt_accuracy"]
    assert values["motion_accuracy"] == ev["generation"]["motion_accuracy"]
    assert (folder / "eval" / "samples.gif").is_file() and (folder / "eval" / "strip.png").is_file()
    text = md.read_text()
    assert run.name in text and f"{values['frame_prompt_accuracy']:.3f} (clips)" in text  # the analogue, marked


def test_image_suites_are_refused_on_a_video_dataset(clips_dir, tmp_path):
    with pytest.raises(ConfigError, match="is a video dataset"):
        plan_runs(load_atlas(_atlas(tmp_path, clips_dir, '["interleaved"]')))


def test_the_shared_vq_tokenizer_of_a_video_dataset_is_priced_on_its_frames(clips_dir):
    """The side budget's price of a tokenizer step on clips is one step over frames, as ``train_tokenizer`` fits
    the shared tokenizer (a clip batch handed to the VQ's 2-D convolutions failed)."""
    from unimm.atlas.side import tokenizer_step_price
    from unimm.config import TokenizerConfig, load_config

    sets = [f"data.path={json.dumps(str(clips_dir))}", "train.batch_size=4", "tokenizer.hidden=8",
            "tokenizer.code_dim=4", "tokenizer.codebook_size=8", "tokenizer.downsample=2"]  # fmt: skip
    cfg = load_config(CONFIGS / "tok" / "vq.toml", sets, schema=TokenizerConfig)
    assert tokenizer_step_price(cfg) > 0
