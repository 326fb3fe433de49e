"""The decision atlas: budget -> steps, the verdict rule, the declared checks, resuming, and a two-strategy micro
atlas end to end (the rule as a statistical test: test_verdict_rule.py)."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_overrides, tiny_preset_overrides
from unimm.atlas import load_atlas, plan_runs, run_atlas
from unimm.atlas.budget import StepCost, measure_step_cost, steps_for_budget
from unimm.atlas.comparison import Comparison, adjust
from unimm.atlas.config import AtlasConfig
from unimm.atlas.findings import check_claims, summarise_all
from unimm.atlas.metrics import HIGHER_IS_BETTER
from unimm.atlas.plots import plot_quality_vs_flops
from unimm.atlas.prepare import eval_suite
from unimm.atlas.results import Cell, RunResult, Stat, load_result
from unimm.atlas.runner import _Processes, _run_one
from unimm.atlas.worker import train_run, trained_steps
from unimm.cli import app
from unimm.config import ConfigError, load_config
from unimm.eval.suites import SUITES
from unimm.train import train

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = {"sample.max_new_tokens": 16, "train.ema": 0, "train.flops_every": 10}
TINY_VQ = ["tokenizer.hidden=8", "tokenizer.code_dim=8", "tokenizer.codebook_size=16", "tokenizer.downsample=2"]
QUICK = (CONFIGS / "atlas" / "quick.toml").read_text()
CHECKS = QUICK[QUICK.index("\n[[checks]]") + 1 :]  # the checks the quick atlas declares (the last tables of its file)


def _atlas_toml(digits_dir: Path, flops: float | str = 2e9, seeds: str = "[0]") -> str:
    skip = ("data.path", "train.steps", "codec.")  # the codec is each preset's own kind (shrunk below)
    common = [o for o in tiny_overrides(digits_dir, **TINY) if not o.startswith(skip)]
    return f"""
name = "micro"
seeds = {seeds}
data = "{digits_dir}"
set = {json.dumps(common)}
[budget]
flops = {flops}
[eval]
suite = "atlas"
understand_n = 12
per_class = 2
classifier_steps = 60
clip_steps = 40
[tokenizer]
steps = 20
set = {json.dumps(TINY_VQ)}
[[strategies]]
name = "transfusion"
preset = "{CONFIGS / "quick.toml"}"
set = ["train.lr=0.002", "data.understand_fraction=0.7", "codec.steps=5", "codec.hidden=8", "codec.downsample=2"]
[[strategies]]
name = "chameleon"
preset = "{CONFIGS / "chameleon.toml"}"
{CHECKS}"""


def _load(tmp_path: Path, text: str) -> AtlasConfig:
    path = tmp_path / "atlas.toml"
    path.write_text(text)
    return load_atlas(path)


def test_steps_spend_the_budget_and_the_price_is_what_training_counts(digits_dir, tmp_path):
    cost = StepCost(flops=3e9, tokens=100, seconds=0.5, measured_steps=3)
    assert steps_for_budget("flops", 3e10, cost) == 10 and steps_for_budget("flops", 3.1e10, cost) == 11
    assert steps_for_budget("wall_s", 60, cost) == 120 and steps_for_budget("flops", 1, cost) == 1
    # one measured step = the FLOPs training logs for the same step (same batch, same counter)
    cfg = load_config(None, tiny_overrides(digits_dir, **{"train.steps": 1, "train.flops_every": 1}))
    measured = measure_step_cost(cfg, steps=1, timed=True)
    out = train(cfg, tmp_path / "run", progress=False)
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert measured.flops == logged["train_flops"] > 0 and measured.seconds > 0


def test_a_step_on_edits_is_priced_with_both_images_encoded(edits_dir):
    """Under a shared reader an edit's source goes through the codec too: the price check (the codec's count against
    ``train/frozen.py``'s rule) holds, and the encoder's FLOPs stay out of the step's."""
    sets = {"train.steps": 1, "train.flops_every": 1, "model.max_seq_len": 160, "codec.patch_size": 1}
    cfg = load_config(CONFIGS / "quick.toml", tiny_preset_overrides(edits_dir, "quick", **sets))
    cost = measure_step_cost(cfg, steps=1)
    assert cost.flops > 0 and cost.encoder_flops_per_input > 0


def _cell(run, values: dict[str, list[float]]) -> Cell:
    results = []
    for i in range(max(len(v) for v in values.values())):
        results.append(RunResult(run, Path("."), "done", {k: v[i] for k, v in values.items() if i < len(v)}))
    return Cell(run.cell, run.budget_name, results)


def test_verdicts_follow_the_t_test_rule(digits_dir, tmp_path):
    assert Comparison("prompt_accuracy", Stat([0.5]), Stat([0.9])).outcome == "few-seeds"
    assert Comparison("prompt_accuracy", Stat([0.5, 0.7]), Stat([0.6, 0.8])).outcome == "within"  # overlap
    welch = Comparison("prompt_accuracy", Stat([0.50, 0.52]), Stat([0.80, 0.83]))  # Welch: t = 16.9 on 1.8 df
    assert welch.outcome == "b" and welch.test.kind == "welch" and welch.test.p < 0.01
    assert Comparison("fid", Stat([10.0, 11.0]), Stat([30.0, 31.0])).outcome == "a"  # lower FID is better
    # the same seeds pair up: +0.10 and +0.11 (t = 21 on 1 df, p = 0.03), a difference Welch's test cannot see
    paired = Comparison("prompt_accuracy", Stat([0.5, 0.7], [0, 1]), Stat([0.6, 0.81], [0, 1]))
    assert paired.test.kind == "paired" and paired.test.p == pytest.approx(0.0303, abs=1e-4)
    assert paired.outcome == "b" and "paired t-test over seeds 0, 1, per-seed differences +0.100, +0.110" in (
        paired.sentence("A", "B")
    )
    assert "95 % CI [+0.041, +0.169]" in paired.sentence("A", "B")
    assert Comparison("prompt_accuracy", Stat([0.5, 0.7], [0, 1]), Stat([0.6, 0.65], [0, 1])).outcome == "within"
    # changed on purpose: +0.10 and +0.05 in the two seeds passed the screening rule (|d| > 2 SE, same sign);
    # as a t-test it is t = 3 on 1 df, p = 0.2
    assert Comparison("prompt_accuracy", Stat([0.3, 0.4], [0, 1]), Stat([0.4, 0.45], [0, 1])).outcome == "within"
    tiny = Comparison("prompt_accuracy", Stat([0.5, 0.7], [0, 1]), Stat([0.503, 0.7031], [0, 1]))
    assert tiny.test.p < 0.05 and tiny.outcome == "small"  # significant, below the difference that matters
    tied = Comparison("prompt_accuracy", Stat([0.5, 0.7], [0, 1]), Stat([0.6, 0.8], [0, 1]))  # no spread at all
    assert tied.test.p == 1.0 and tied.outcome == "within" and "undefined" in tied.sentence("A", "B")
    # a family: Holm multiplies the smallest p by the number of tests
    family = [paired, Comparison("prompt_accuracy", Stat([0.5, 0.7], [0, 1]), Stat([0.6, 0.65], [0, 1]))]
    adjust(family)
    assert paired.p_adjusted == pytest.approx(2 * paired.test.p) and paired.outcome == "within"
    assert "Holm-adjusted p = 0.061 over 2 tests" in paired.sentence("A", "B")

    atlas = _load(tmp_path, _atlas_toml(digits_dir))
    ar, diffusion = {r.strategy: r for r in plan_runs(atlas)}["chameleon"], plan_runs(atlas)[0]

    def transfusion(ar_values: list[float], diffusion_values: list[float]):
        cells = [_cell(ar, {"prompt_accuracy": ar_values}), _cell(diffusion, {"prompt_accuracy": diffusion_values})]
        return check_claims(atlas.checks, cells)[0]

    agree = transfusion([0.30, 0.33], [0.60, 0.62])
    assert agree.verdict == "agrees" and "significant, transfusion/dense/preset is better" in agree.evidence[0]
    assert transfusion([0.60, 0.62], [0.30, 0.33]).verdict == "disagrees"
    assert transfusion([0.30, 0.40], [0.45, 0.50]).verdict == "inconclusive"
    one = transfusion([0.3], [0.9])
    assert one.verdict == "not enough seeds" and "one seed on a side" in one.reason
    # the same numbers for a pair that also differs in the learning rate (the preset's own): no verdict
    unmatched = _load(tmp_path, _atlas_toml(digits_dir).replace('"train.lr=0.002", ', ""))
    runs = plan_runs(unmatched)
    cells = [_cell({r.strategy: r for r in runs}["chameleon"], {"prompt_accuracy": [0.30, 0.33]}),
             _cell(runs[0], {"prompt_accuracy": [0.60, 0.62]})]  # fmt: skip
    confounded = check_claims(unmatched.checks, cells)[0]
    assert confounded.verdict == "no verdict" and "train.lr (0.002 vs 0.003)" in confounded.reason
    assert [c.verdict for c in check_claims(atlas.checks, [_cell(ar, {"caption_accuracy": [0.5]})])] == [
        "not tested"
    ] * len(atlas.checks)
    # the comparisons under the survey's questions are their own Holm family
    both = [_cell(ar, {"prompt_accuracy": [0.30, 0.33], "fid": [40.0, 44.0]}),
            _cell(diffusion, {"prompt_accuracy": [0.60, 0.62], "fid": [41.0, 43.0]})]  # fmt: skip
    (pair,) = summarise_all(both)[0].pairs
    prompt, fid = pair.comparisons
    assert (prompt.family, fid.family) == (2, 2) and prompt.p_adjusted == pytest.approx(2 * prompt.test.p)
    assert "Holm-adjusted p" in pair.lines()[0] and prompt.outcome == "b" and fid.outcome == "within"


def test_clips_answer_a_check_on_an_image_metric_through_its_video_analogue(digits_dir, tmp_path):
    """A pair of video cells has no prompt accuracy: the Transfusion check and the survey's question read the
    per-frame prompt accuracy instead (VIDEO_ANALOGUE), and motion accuracy joins the question's comparisons."""
    atlas = _load(tmp_path, _atlas_toml(digits_dir))
    ar, diffusion = {r.strategy: r for r in plan_runs(atlas)}["chameleon"], plan_runs(atlas)[0]
    cells = [_cell(ar, {"frame_prompt_accuracy": [0.30, 0.33], "motion_accuracy": [0.5, 0.6]}),
             _cell(diffusion, {"frame_prompt_accuracy": [0.60, 0.62], "motion_accuracy": [0.9, 0.95]})]  # fmt: skip
    check = check_claims(atlas.checks, cells)[0]
    assert check.verdict == "agrees" and [c.metric for _, c in check.tests] == ["frame_prompt_accuracy"]
    (pair,) = summarise_all(cells)[0].pairs
    assert [c.metric for c in pair.comparisons] == ["frame_prompt_accuracy", "motion_accuracy"]
    # an image pair keeps the declared metric even when it also has the analogue
    image = [_cell(ar, {"prompt_accuracy": [0.6, 0.62], "frame_prompt_accuracy": [0.3, 0.33]}),
             _cell(diffusion, {"prompt_accuracy": [0.3, 0.33], "frame_prompt_accuracy": [0.6, 0.62]})]  # fmt: skip
    assert check_claims(atlas.checks, image)[0].verdict == "disagrees"


def test_checks_are_declared_in_the_atlas_toml(tmp_path):
    """The same five checks in both presets, each with its metric and the side the literature says is better."""
    quick, full = load_atlas(CONFIGS / "atlas" / "quick.toml"), load_atlas(CONFIGS / "atlas" / "full.toml")
    assert quick.checks == full.checks
    declared = [(c.source.split(" (")[0], c.axis, c.a, c.b, c.metric, c.better) for c in quick.checks]
    assert declared == [
        ("Transfusion", "writer.kind", ["ar-codes"], ["latent"], "prompt_accuracy", "b"),
        ("Mixture-of-Transformers", "layers.kind", ["dense"], ["mot"], "task_loss", "b"),
        ("Janus", "reader.kind", ["shared"], ["vit"], "caption_accuracy", "b"),
        ("Shukor et al. 2025, Scaling Laws for Native Multimodal Models", "reader.kind", ["shared"], ["vit"],
         "caption_nll", "a"),
        ("Shukor et al. 2025", "layers.kind", ["moe"], ["modality-moe"], "task_loss", "a"),
    ]  # fmt: skip


def test_quality_vs_flops_is_drawn_when_there_are_several_budgets(digits_dir, tmp_path):
    runs = plan_runs(_load(tmp_path, _atlas_toml(digits_dir, flops="[1e9, 2e9]")))
    assert [r.budget_name for r in runs] == ["1e09flops", "2e09flops"] * 2
    cells = []
    for i, run in enumerate(runs):
        cell = _cell(run, {"caption_accuracy": [0.1 * i], "prompt_accuracy": [0.2 * i]})
        cell.first.info["train_flops"] = run.budget
        cells.append(cell)
    assert plot_quality_vs_flops(cells[::2], ["caption_accuracy"], tmp_path / "one.png") is None  # one budget each
    path = plot_quality_vs_flops(cells, ["caption_accuracy", "prompt_accuracy"], tmp_path / "curves.png")
    assert path.stat().st_size > 1000


def test_an_interrupted_run_resumes_and_another_spec_is_refused(digits_dir, tmp_path):
    atlas = _load(tmp_path, _atlas_toml(digits_dir, flops=4e8))
    run = plan_runs(atlas)[0]  # transfusion: no tokenizer to share
    folder = tmp_path / "runs" / run.name
    folder.mkdir(parents=True)
    launch = {"threads": 1, "device": "cpu", "measure_steps": 2, "checkpoints": 4, "eval": {}}
    (folder / "atlas_run.json").write_text(json.dumps({"spec": run.spec(), "digest": run.digest(), "launch": launch}))
    train_run(folder)
    steps = json.loads((folder / "budget.json").read_text())["steps"]
    assert trained_steps(folder) == steps >= 4
    # as if killed after the second checkpoint: the worker resumes from it and keeps the planned steps
    ckpts = sorted((folder / "checkpoints").glob("step_*"))
    (folder / "checkpoints" / "latest").write_text(ckpts[0].name)
    log = json.loads((folder / "atlas_train.json").read_text())
    (folder / "atlas_train.json").write_text(json.dumps({**log, "finished": False}))
    train_run(folder)
    log = json.loads((folder / "atlas_train.json").read_text())
    assert log["sessions"][-1]["resumed_from"] == int(ckpts[0].name.split("_")[1]) and trained_steps(folder) == steps
    other = plan_runs(atlas)[1]
    outcome = _run_one(other, folder, launch, _Processes(), {})
    assert outcome.status == "failed" and "another spec" in outcome.message


def test_micro_atlas_end_to_end_then_nothing_is_redone(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIMM_CACHE", str(tmp_path / "cache"))
    atlas, out = _load(tmp_path, _atlas_toml(digits_dir)), tmp_path / "atlas"
    outcomes, md = run_atlas(atlas, out, jobs=2)
    assert sorted(o.status for o in outcomes) == ["done", "done"], outcomes
    names = [r.name for r in plan_runs(atlas)]
    assert names == ["transfusion.dense.preset.2e09flops.s0", "chameleon.dense.preset.2e09flops.s0"]
    report = json.loads((out / "report.json").read_text())
    ledgers = {r["name"]: r for r in report["ledger"]["runs"]}
    for name in names:  # everything counted, the shared tokenizer charged to the VQ run: lands on the budget
        ledger = json.loads((out / "runs" / name / "ledger.json").read_text())
        assert ledgers[name]["total"] == ledger["total_with_shared"] == sum(ledgers[name]["parts"].values())
        assert abs(ledger["total_with_shared"] / 2e9 - 1) < 0.1, (name, ledger)
    assert (
        "shared: codec.tokenizer" in ledgers[names[1]]["parts"]
        and ledgers[names[0]]["parts"]["preparation: codec.steps"]
    )
    text = md.read_text()
    assert "**The ledger: regime `scratch`.**" in text and "**charged in full to every run that uses it**" in text
    assert "## The FLOP ledger" in text and "codec.tokenizer" in text and "(charged)" in text
    for name in names:  # a table row per run with its metrics filled in
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` | {digits_dir.name} | done |"))
        assert len(re.findall(r"\d\.\d{3}", row)) >= 5, row
        assert 0 <= load_result(plan_runs(atlas)[names.index(name)], out / "runs" / name).values["rank_accuracy"] <= 1
    assert "| caption acc | rank acc | VQA acc |" in text
    assert "**chameleon/dense/preset vs transfusion/dense/preset** at 2e09flops" in text
    assert "`prompt_accuracy` (higher is better)" in text and "no difference is claimed" in text
    # the confounds: settings outside the part sections the writer axis entails (writer.weight, the codec, ...)
    assert "Other settings that differ: nothing." in text  # transfusion runs at chameleon's lr: a matched pair
    assert "| Transfusion (Zhou et al. 2024, arXiv 2408.11039) |" in text and "**not enough seeds**" in text
    assert "Mixture-of-Transformers" in text and "**not tested**" in text and "Janus" in text
    assert "does not answer this question" in text  # no dense / MoE pair in this atlas
    for fig in ("pareto.png", "loss_vs_flops.png", "samples.png"):
        assert (out / "figures" / fig).stat().st_size > 1000 and f"figures/{fig}" in text
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "http" not in html and 'src="figures' not in html
    assert "chameleon.dense.preset.2e09flops.s0" in html and "not enough seeds" in html
    assert [c["verdict"] for c in report["claims"]] == ["not enough seeds"] + ["not tested"] * 4
    assert report["claims"][0]["tests"][0]["p"] is None and report["claims"][1]["declared"]["metric"] == "task_loss"

    stamps = {n: (out / "runs" / n / "eval" / "eval.json").stat().st_mtime_ns for n in names}
    result = CliRunner().invoke(app, ["atlas", str(tmp_path / "atlas.toml"), "--out", str(out), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "2 finished, 0 to run" in result.output and "report.html" in result.output
    assert stamps == {n: (out / "runs" / n / "eval" / "eval.json").stat().st_mtime_ns for n in names}


def test_rank_accuracy_is_on_in_the_atlas_suite_and_can_be_switched_off(tmp_path):
    atlas = _load(tmp_path, "[budget]\nflops = 1e9\n[eval]\nrank = false\n[[strategies]]\nname = 'a'\npreset = 'x'\n")
    assert SUITES["atlas"].rank and eval_suite(atlas.eval).rank is False
    assert HIGHER_IS_BETTER["rank_accuracy"] and not HIGHER_IS_BETTER["caption_nll"]


def test_atlas_presets_plan_every_strategy(monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)  # presets are named relative to the repository root
    quick, full = load_atlas(CONFIGS / "atlas" / "quick.toml"), load_atlas(CONFIGS / "atlas" / "full.toml")
    presets = {p.stem for p in CONFIGS.glob("*.toml")} - {"transfusion"}  # quick.toml is the transfusion layout
    assert {Path(s.preset).stem for s in quick.strategies} == presets == {Path(s.preset).stem for s in full.strategies}
    runs = plan_runs(quick)
    assert len(runs) == 30 and {r.config["model"]["dim"] for r in runs} == {96}
    assert {r.dataset for r in runs} == {"mnist", "shapes"}  # shapes beside MNIST: the transfusion check again
    assert (
        sorted(r.strategy for r in runs if r.dataset == "shapes")
        == ["chameleon-shapes"] * 2 + ["transfusion-shapes"] * 2
    )
    scratch = {r.strategy for r in runs if r.regime == "scratch"}  # the parts' cost paid from the budget, beside
    assert scratch == {"chameleon-scratch", "janus-scratch", "bagel-scratch", "connector-scratch"}
    full_runs = plan_runs(full)
    assert len(full_runs) == 264 and full.seeds == [0, 1, 2] and len(full.budget.values) == 4 and full.budget.ladder
    assert sum(bool(r.branches) for r in full_runs) == 66 and max(full.budget.values) / min(full.budget.values) >= 30
    medium = load_atlas(CONFIGS / "atlas" / "medium.toml")
    medium_runs = plan_runs(medium)
    assert medium.checks == quick.checks and {Path(s.preset).stem for s in medium.strategies} == presets
    assert {r.dataset for r in medium_runs} == {"mnist", "shapes", "moving_mnist_16"} and len(medium.budget.values) >= 4
    video = sorted({r.strategy for r in medium_runs if r.dataset == "moving_mnist_16"})  # the video column (issue 18)
    assert video == ["chameleon-video", "show-o-video", "transfusion-video"]
    assert max(medium.budget.values) / min(medium.budget.values) >= 30
    for s in medium.strategies:  # every strategy has a curve: a ladder of every budget, or a control of one
        assert s.control_of or medium.ladder_of(s) and s.budgets is None, s.name
    checked = {"transfusion", "transfusion-vit", "chameleon", "ar-moe", "janus"}  # the cells the checks use
    assert all(len(s.seeds) >= 3 for s in medium.strategies if s.name in checked)
    assert {r.size for r in medium_runs if r.config["layers"]["kind"] in ("dense", "moe", "mot")} >= {"tiny", "base"}
    # quick: an equal side budget per prepared part; full: everything inside the budget, the presets' preparation
    assert (quick.budget.regime, quick.budget.side_flops, quick.budget.shared_tokenizer) == (
        "pretrained",
        2e12,
        "charged",
    )
    assert runs[0].spec()["ledger"] == {"regime": "pretrained", "side_flops": 2e12, "shared_tokenizer": "charged"}
    assert (full.budget.regime, full.budget.shared_tokenizer) == ("scratch", "charged")
    assert not [s.set for s in full.strategies if any("pretrain_steps" in o or "writer.train" in o for o in s.set)]


def test_only_runs_a_column_of_the_atlas_and_the_report_says_so(monkeypatch, tmp_path):
    monkeypatch.chdir(CONFIGS.parent)
    medium = load_atlas(CONFIGS / "atlas" / "medium.toml")
    names = ["transfusion-video", "chameleon-video", "show-o-video"]
    column = medium.only(names)
    assert [s.name for s in column.strategies] == ["transfusion-video", "chameleon-video", "show-o-video"]
    assert len(column.left_out) == len(medium.strategies) - 3 and column.checks == medium.checks
    assert {r.dataset for r in plan_runs(column)} == {"moving_mnist_16"} and len(plan_runs(column)) == 36
    with pytest.raises(ValueError, match="unknown strategy name"):
        medium.only(["transfusion-vidoe"])
    with pytest.raises(ValueError, match="control"):  # a control without the strategy it controls
        medium.only(["transfusion-cosine"])
    args = ["atlas", str(CONFIGS / "atlas" / "medium.toml"), "--plan", "--only", ",".join(names)]
    plan = CliRunner().invoke(app, args)
    assert plan.exit_code == 0 and "36 runs" in plan.output and "chameleon.dense" not in plan.output, plan.output


GOOD_CHECK = CHECKS[: CHECKS.index("[[checks]]", 1)]  # the first declared check
ONE_STRATEGY = '[[strategies]]\nname = "x"\npreset = "configs/quick.toml"\n'


@pytest.mark.parametrize(
    "bad, message",
    [
        ("[budget]\nflops = 1e9\nwall_s = 10\n" + ONE_STRATEGY, "budget"),
        ("[budget]\nflops = 1e9\n" + ONE_STRATEGY + 'layers = ["sparse"]', "layer kind"),
        (GOOD_CHECK.replace('"prompt_accuracy"', '"prompt_acc"'), "'checks.0.metric': unknown metric 'prompt_acc'"),
        (GOOD_CHECK.replace('better = "b"', 'better = "latent"'), "'checks.0.better': 'latent' — allowed: 'a' or 'b'"),
        (GOOD_CHECK.replace('b = ["latent"]', 'b = ["diffusion"]'), "unknown writer.kind value(s) ['diffusion']"),
    ],
)  # fmt: skip
def test_bad_atlas_configs_are_one_line_errors(tmp_path, bad, message):
    from unimm.config import ConfigError

    text = bad if bad.startswith("[budget]") else "[budget]\nflops = 1e9\n" + ONE_STRATEGY + bad
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        _load(tmp_path, text)
    assert len(str(err.value).splitlines()) == 1, err.value


def test_confounds_are_what_differs_outside_the_entailed_part_sections():
    """A pair lists the settings that differ beyond the axis's part section and the part sections whose kind
    the axis changed (read off the configs, no hand-kept list)."""
    from types import SimpleNamespace

    from unimm.atlas.findings import QUESTIONS, Pair, entailed_sections

    def cell(preset: str) -> Cell:
        run = SimpleNamespace(config=load_config(CONFIGS / f"{preset}.toml").model_dump(), seed=0)
        return Cell(preset, "b", [RunResult(run, Path("."), "done")])

    ar_vs_diffusion, _, shared_vs_decoupled = QUESTIONS
    chameleon, quick, janus = cell("chameleon"), cell("quick"), cell("janus")
    ca, cq = chameleon.first.run.config, quick.first.run.config
    assert set(entailed_sections("writer.kind", ca, cq)) == {"writer", "codec", "denoiser", "sample"}
    # writer.weight, the codec, the denoiser and the settings of another sampler come with the writer
    expected = "data.understand_fraction (0.7 vs 0.8), train.lr (0.002 vs 0.003)"  # the demo's recipe (README)
    assert Pair(ar_vs_diffusion.axis, chameleon, quick).differences() == expected
    assert "sample" not in entailed_sections("writer.kind", ca, ca)
    # same writer kind: its own settings are confounds of the reader axis (janus's codes get their own vocabulary)
    confounds = Pair(shared_vs_decoupled.axis, chameleon, janus).differences()
    assert "writer.vocab (shared vs separate)" in confounds and "reader." not in confounds


def test_heldout_image_loss_is_an_atlas_metric_of_one_writer_and_codec(tmp_path):
    """``heldout_image_loss`` (lower is better) is read from eval.json's generation section; a check may declare it
    on any axis but writer.kind, and a pair whose codec differs gets no verdict on it (elsewhere the codec a part
    kind entails is no confound)."""
    from types import SimpleNamespace

    from unimm.atlas.findings import Pair
    from unimm.atlas.metrics import METRICS
    from unimm.config import ConfigError

    assert METRICS["heldout_image_loss"] == ("generation", "heldout_image_loss", False)
    folder = tmp_path / "run"
    (folder / "eval").mkdir(parents=True)
    ev = {"generation": {"heldout_image_loss": 0.25}, "cost": {"params": {"total": 1, "active": 1}}}
    (folder / "eval" / "eval.json").write_text(json.dumps(ev))
    assert load_result(SimpleNamespace(config={}), folder).values["heldout_image_loss"] == 0.25
    mot = CHECKS[CHECKS.index("[[checks]]", 1) :].split("\n\n")[0].replace('"task_loss"', '"heldout_image_loss"')
    assert _load(tmp_path, "[budget]\nflops = 1e9\n" + ONE_STRATEGY + mot).checks[0].metric == "heldout_image_loss"
    on_writer = GOOD_CHECK.replace('"prompt_accuracy"', '"heldout_image_loss"')
    with pytest.raises(ConfigError, match="heldout_image_loss is in each writer's own unit"):
        _load(tmp_path, "[budget]\nflops = 1e9\n" + ONE_STRATEGY + on_writer)

    def cell(*sets: str) -> Cell:
        run = SimpleNamespace(config=load_config(CONFIGS / "quick.toml", list(sets)).model_dump(), seed=0)
        return Cell("quick", "b", [RunResult(run, Path("."), "done")])

    dense, mot_pixels = cell(), cell('layers={kind = "mot"}', 'codec={kind = "pixels", patch_size = 4}')
    pair = Pair("layers.kind", dense, mot_pixels)
    assert pair.confounds() is None  # the codec's kind changed: entailed, a matched pair for other metrics
    assert "codec.kind (vae vs pixels)" in pair.confounds(metric="heldout_image_loss")


def test_step_sweep_is_an_eval_option_of_sorted_unique_positive_counts(tmp_path):
    """``[eval] step_sweep`` reaches the harness's suite as a tuple (off by default); bad lists are one-line errors."""
    from unimm.config import ConfigError

    base = "[budget]\nflops = 1e9\n" + ONE_STRATEGY + "[eval]\n"
    atlas = _load(tmp_path, base + "step_sweep = [2, 4, 8]\nstep_sweep_per_class = 3\n")
    suite = eval_suite(atlas.eval)
    assert (suite.step_sweep, suite.step_sweep_per_class) == ((2, 4, 8), 3) and SUITES["atlas"].step_sweep == ()
    assert eval_suite({"suite": "atlas", "overrides": atlas.eval.overrides()}).step_sweep == (2, 4, 8)  # via JSON
    for bad, message in [("[4, 2]", "sorted and unique"), ("[2, 2]", "sorted and unique"), ("[0, 2]", "greater than 0"),
                         ("[]", "at least one"), ("[2.5]", "valid integer")]:  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            _load(tmp_path, base + f"step_sweep = {bad}\n")
        assert len(str(err.value).splitlines()) == 1, err.value
    assert "step_sweep = [2, 4, 8, 16]" in QUICK and load_atlas(CONFIGS / "atlas" / "quick.toml").eval.step_sweep


def _swept(name: str, kind: str, points: list[tuple], regime: str = "pretrained") -> Cell:
    """A cell of two seeds whose runs swept (steps, passes, hits per seed out of 50)."""
    from types import SimpleNamespace

    run = SimpleNamespace(config={"writer": {"kind": kind}}, seed=0, regime=regime, cell=f"{name}/preset/tiny")
    results = []
    for seed in (0, 1):
        sweep = [{"steps": s, "passes": p, "prompt_accuracy": h[seed] / 50, "n": 50, "s_per_image": 0.01 * p}
                 for s, p, h in points]  # fmt: skip
        results.append(RunResult(run, Path("."), "done", {}, {"step_sweep": sweep}))
    return Cell(run.cell, "6e12flops", results)


def test_quality_per_step_section_says_where_masked_reaches_ar(tmp_path):
    """From synthetic sweeps: show-o passes chameleon's 0.50 (49 passes) first at 8 passes, unidisc never does; the
    figure, table, Wilson intervals and the descriptive caveat are written; a scratch-regime AR cell is not paired."""
    from unimm.atlas.report import _steps
    from unimm.atlas.steps import masked_vs_ar, wilson
    from unimm.document import Document

    lo, hi = wilson(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962) and wilson(0, 10)[0] == 0.0  # Wilson (1927)
    chameleon = _swept("chameleon", "ar-codes", [(None, 49, (24, 26))])
    show_o = _swept(
        "show-o", "masked-codes", [(2, 2, (10, 12)), (4, 4, (20, 22)), (8, 8, (25, 26)), (16, 16, (30, 30))]
    )
    unidisc = _swept("unidisc", "masked-codes", [(2, 2, (5, 5)), (16, 16, (20, 21))])
    scratch = _swept("chameleon-scratch", "ar-codes", [(None, 49, (1, 1))], regime="scratch")
    cells = [chameleon, show_o, unidisc, scratch]
    reaches = masked_vs_ar(cells)
    assert [(r.masked.key, r.ar.key, r.at.passes if r.at else None) for r in reaches] == [
        ("show-o/preset/tiny", "chameleon/preset/tiny", 8),
        ("unidisc/preset/tiny", "chameleon/preset/tiny", None),
    ]
    doc = Document("t")
    data = _steps(doc, cells, tmp_path)
    md = doc.markdown(tmp_path)
    assert (tmp_path / "quality_per_step.png").stat().st_size > 1000 and "quality_per_step.png" in md
    assert "## Quality per inference step" in md and "not a verdict" in md and "Holm family" in md
    assert "reaches it at 8 passes (8 steps): 0.510 [" in md and "6.12x fewer passes" in md
    assert "does not reach it within 16 passes (not reached" in md
    assert "is 0.500 [0.404, 0.596]" in md  # chameleon: 50 of 100 images over two seeds
    assert data["masked_vs_ar"][0]["reached_at_passes"] == 8 and len(data["cells"]) == 4
    unswept = Cell("x", "b", [RunResult(chameleon.first.run, Path("."), "done", {"fid": 1.0})])
    assert _steps(Document("t"), [unswept], tmp_path) == {"cells": [], "masked_vs_ar": []}


def test_the_run_table_shows_fid_with_its_bootstrap_interval(tmp_path):
    from unimm.atlas.report import RUN_HEADER, _run_row

    atlas = _load(tmp_path, f"[budget]\nflops = 1e9\n[[strategies]]\nname = 'a'\npreset = '{CONFIGS / 'quick.toml'}'\n")
    folder = tmp_path / "runs" / "a"
    (folder / "eval").mkdir(parents=True)
    (folder / "atlas_done.json").write_text("{}")
    ev = {"generation": {"fid": 12.345, "fid_ci": [10.0, 15.5]}, "cost": {"params": {"total": 1, "active": 1}}}
    (folder / "eval" / "eval.json").write_text(json.dumps(ev))
    result = load_result(plan_runs(atlas)[0], folder)
    assert result.values["fid"] == 12.345 and result.info["fid_ci"] == [10.0, 15.5]
    assert dict(zip(RUN_HEADER, _run_row(result), strict=True))["FID [95 % CI]"] == "12.35 [10.00, 15.50]"


def test_a_second_dataset_plans_its_own_runs_pairs_only_with_itself_and_reports_geneval(tmp_path):
    """A strategy's ``data`` sets data.path for its runs only; a check pairs cells of one dataset (the shapes pair
    is tested beside the MNIST one, never MNIST against shapes); GenEval-style and exact-match numbers are read from
    eval.json and get a section of their own."""
    from unimm.atlas.findings import matched_pairs
    from unimm.atlas.report import _compositional
    from unimm.document import Document

    quick, chameleon = CONFIGS / "quick.toml", CONFIGS / "chameleon.toml"
    text = f"""[budget]\nflops = 1e9\n[[strategies]]\nname = "t"\npreset = "{quick}"\n[[strategies]]
name = "c"\npreset = "{chameleon}"\n[[strategies]]\nname = "t-shapes"\npreset = "{quick}"\ndata = "data/shapes"
[[strategies]]\nname = "c-shapes"\npreset = "{chameleon}"\ndata = "data/shapes"\n"""
    runs = plan_runs(_load(tmp_path, text))
    assert [(r.strategy, r.dataset) for r in runs] == [("t", "mnist"), ("c", "mnist"), ("t-shapes", "shapes"),
                                                       ("c-shapes", "shapes")]  # fmt: skip
    assert runs[2].config["data"]["path"] == "data/shapes" and runs[2].data_key() != runs[0].data_key()
    cells = [Cell(r.cell, r.budget_name, [RunResult(r, Path("."), "done")]) for r in runs]
    pairs = matched_pairs("writer.kind", ["ar-codes"], ["latent"], cells)
    assert sorted((p.a.key, p.b.key) for p in pairs) == [("c-shapes/dense/preset", "t-shapes/dense/preset"),
                                                         ("c/dense/preset", "t/dense/preset")]  # fmt: skip
    folder = tmp_path / "runs" / "t-shapes"
    (folder / "eval").mkdir(parents=True)
    (folder / "atlas_done.json").write_text("{}")
    geneval = {"object": 0.9, "object_n": 10, "count": 0.5, "colour": 0.75, "position": None, "overall": 0.25}
    ev = {"understanding": {"exact_match": 0.125}, "generation": {"geneval": geneval},
          "cost": {"params": {"total": 1, "active": 1}}}  # fmt: skip
    (folder / "eval" / "eval.json").write_text(json.dumps(ev))
    result = load_result(runs[2], folder)
    assert result.values["geneval_overall"] == 0.25 and result.values["exact_match"] == 0.125
    assert "geneval_position" not in result.values and "geneval_object_n" not in result.values
    doc = Document("t")
    rows = _compositional(doc, [load_result(runs[0], tmp_path / "runs" / "t"), result])
    md = doc.markdown(tmp_path)
    assert [r["name"] for r in rows] == [runs[2].name] and rows[0]["geneval_colour"] == 0.75
    assert "GenEval-style" in md and f"| `{runs[2].name}` | shapes | 0.125 |" in md
    assert _compositional(Document("t"), [load_result(runs[0], tmp_path / "runs" / "t")]) == []


def _ladder_toml(digits_dir: Path) -> str:
    """The micro atlas's transfusion as a ladder of three budgets, and a cosine control at the middle one."""
    text = _atlas_toml(digits_dir, flops="[1e9, 2e9, 4e9]")
    text = text[: text.index('[[strategies]]\nname = "chameleon"')]  # transfusion alone (no shared tokenizer)
    text = text.replace("[budget]\n", "[budget]\nladder = true\n")
    text = text.replace('"codec.steps=5"', '"codec.steps=5", "train.warmup=40"')  # longer than the smallest budget
    control = text[text.index("[[strategies]]") :].replace('name = "transfusion"', 'name = "transfusion-cosine"')
    return text + control + 'ladder = false\nbudgets = [2e9]\ncontrol_of = "transfusion"\n'


def test_a_ladder_trains_one_stable_run_and_forks_a_cooldown_branch_per_smaller_budget(digits_dir, tmp_path):
    from unimm.optim import fork_step

    atlas = _load(tmp_path, _ladder_toml(digits_dir))
    runs = {r.name: r for r in plan_runs(atlas)}
    stable, small, middle = (f"transfusion.dense.preset.{b}flops.s0" for b in ("4e09", "1e09", "2e09"))
    control = "transfusion-cosine.dense.preset.2e09flops.s0"
    assert sorted(runs) == sorted([stable, small, middle, control])
    assert runs[stable].branches == (1e9, 2e9) and runs[stable].stable is None
    assert runs[small].stable == runs[middle].stable == stable and runs[control].stable is None
    assert 'train.schedule="wsd"' in runs[small].overrides and 'train.schedule="wsd"' not in runs[control].overrides
    assert runs[small].digest() != runs[control].digest() and "ladder" not in runs[control].spec()

    out = tmp_path / "atlas"
    outcomes, md = run_atlas(atlas, out, jobs=2)
    assert sorted(o.status for o in outcomes) == ["done"] * 4, outcomes
    plan = json.loads((out / "runs" / stable / "budget.json").read_text())
    ladder = plan["ladder"]
    assert plan["branch_steps"] == sorted(ladder[b]["steps"] for b in ("1e09flops", "2e09flops"))
    assert ladder["1e09flops"]["steps"] < ladder["2e09flops"]["steps"] < plan["steps"]
    stable_cfg = load_config(out / "runs" / stable / "config.toml")
    assert stable_cfg.train.schedule == "wsd" and stable_cfg.train.branches == plan["branch_steps"]
    for name, label in ((small, "1e09flops"), (middle, "2e09flops")):
        folder = out / "runs" / name
        steps = ladder[label]["steps"]
        fork = json.loads((folder / "fork.json").read_text())
        assert fork["step"] == fork_step(steps, 0.2) and trained_steps(folder) == steps
        ledger = json.loads((folder / "ledger.json").read_text())
        assert ledger["fork"]["inherited"] + ledger["fork"]["own"] == ledger["total"]
        assert abs(ledger["total"] / float(label.removesuffix("flops")) - 1) < 0.15, ledger
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["step"] == steps and rows[-1]["lr"] == pytest.approx(0.002 * stable_cfg.train.min_lr_ratio)
    report = json.loads((out / "report.json").read_text())
    assert report["sweep"]["runs_counted"] == 4 and 0 < report["sweep"]["branching_saves"] < 0.5
    assert report["sweep"]["computed_flops"] < report["sweep"]["dedicated_flops"]
    assert report["sweep"]["matmul_peak_gflops"] > 0 and report["sweep"]["achieved_gflops"] > 0
    controls = report["schedule_controls"]
    assert {c["branch"] for c in controls} == {"transfusion/dense/preset"} and controls[0]["budget"] == "2e09flops"
    assert all(c["seeds"] == [0] and c["within_noise"] is None for c in controls)  # one seed: no noise estimate
    text = md.read_text()
    assert "## Cooldown branches against dedicated runs" in text and "## The sweep itself" in text

    # a branch killed after its fork resumes from its own checkpoint and ends where it would have
    folder = out / "runs" / middle
    fork_ckpt = f"step_{fork_step(ladder['2e09flops']['steps'], 0.2):07d}"
    (folder / "checkpoints" / "latest").write_text(fork_ckpt)
    before = (folder / "model.safetensors").read_bytes()
    train_run(folder)
    log = json.loads((folder / "atlas_train.json").read_text())
    assert log["sessions"][-1]["resumed_from"] == int(fork_ckpt.split("_")[1])
    assert trained_steps(folder) == ladder["2e09flops"]["steps"]
    assert (folder / "model.safetensors").read_bytes() == before  # the same weights, resumed exactly


def test_the_plan_prices_each_run_and_a_branch_only_its_cooldown(digits_dir, tmp_path):
    atlas = _load(tmp_path, _ladder_toml(digits_dir))
    result = CliRunner().invoke(app, ["atlas", str(tmp_path / "atlas.toml"), "--plan", "--rate", "0.001"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:-2]}
    assert lines["transfusion.dense.preset.4e09flops.s0"][1:4] == ["stable", "4e+09", "4e+09"]
    assert lines["transfusion.dense.preset.1e09flops.s0"][1:4] == ["branch", "1e+09", "2e+08"]  # 20 % cooldown
    assert lines["transfusion-cosine.dense.preset.2e09flops.s0"][1:4] == ["dedicated", "2e+09", "2e+09"]
    total = 4e9 + 0.2 * (1e9 + 2e9) + 2e9
    assert f"4 runs: {total:.3g} training FLOPs computed" in result.output
    assert f"{total / 1e6 / 3600:.2f} h at 0.001 GFLOP/s" in result.output
    assert not (tmp_path / "runs").exists() and len(plan_runs(atlas)) == 4  # nothing ran


def test_ladder_settings_are_checked(tmp_path):
    base = "[budget]\nflops = [1e9, 2e9]\nladder = true\n" + ONE_STRATEGY
    assert _load(tmp_path, base).ladder_of(_load(tmp_path, base).strategies[0])
    with pytest.raises(ConfigError, match="budgets"):
        _load(tmp_path, base + "budgets = [3e9]\n")
    with pytest.raises(ConfigError, match="size"):
        _load(tmp_path, base + 'sizes = ["huge"]\n')
    control = "[[strategies]]\nname = 'c'\npreset = 'configs/quick.toml'\nladder = false\ncontrol_of = "
    with pytest.raises(ConfigError, match="names no strategy"):
        _load(tmp_path, base + control + "'nope'\n")
    with pytest.raises(ConfigError, match="differ only in its schedule"):
        _load(tmp_path, base + control + "'x'\nset = ['train.lr=0.1']\n")
    with pytest.raises(ConfigError, match="distinct"):
        _load(tmp_path, "[budget]\nflops = [1e9, 1e9]\n" + ONE_STRATEGY)


def test_sigterm_and_an_ignored_sigint_both_stop_a_sweep():
    """A sweep started with ``nohup ... &`` inherits SIGINT ignored: both signals must still raise the
    KeyboardInterrupt that stops the workers and closes the session, and the old handlers come back after."""
    import os
    import signal
    import time

    from unimm.atlas.runner import stop_on_signals

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(KeyboardInterrupt, match=signal.Signals(sig).name), stop_on_signals():
                os.kill(os.getpid(), sig)
                time.sleep(1)  # the handler runs between bytecodes; never reached
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)
