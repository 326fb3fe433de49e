"""The README's result tables are generated from the committed reports, and a hand-edited number fails."""

import json
import shutil
from pathlib import Path

from unimm.reports.tables import (
    PAGES,
    _blocks,
    demo_table,
    rewrite_tables,
    seeds_table,
    stale_tables,
    strategies_table,
)

ROOT = Path(__file__).resolve().parents[2]
PROVENANCE = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False, "date": "2030-01-02T03:04:05+00:00",
              "wall_s": {"train": 420.0, "evaluate": 50.0, "this_call": 480.0}, "config_sha256": "ab" * 32}  # fmt: skip
REPORT = {  # the keys of today's report.json that the tables read
    "training": {"steps": 1800, "tokens_per_s": 17750.4, "final_loss": 2.3061},
    "eval": {
        "suite": {"name": "demo", "per_class": 100},
        "evaluators": {"classifier_test_accuracy": 0.982},
        "understanding": {"n": 1000, "caption_accuracy": 0.962, "vqa_n": 1000, "vqa_accuracy": 0.958,
                          "vqa_question": "which digit is in the image?"},
        "generation": {"prompt_accuracy": 0.991, "prompt_accuracy_n": 1000},
    },
    "provenance": PROVENANCE,
}  # fmt: skip
EVAL = {
    "understanding": {"caption_accuracy": 0.95, "vqa_accuracy": 0.934, "caption_bleu_4": 0.9861, "caption_cider": 2.683,
                      "samples_per_s": 153.2},
    "generation": {"prompt_accuracy": 1.0, "fid": 73.31, "kid_mean": 0.2881, "precision": 0.92, "recall": 0.13,
                   "clip_score": 80.44, "samples_per_s": 4.81, "latency_s": 0.2213},
    "cost": {"params": {"total": 2_910_000, "active": 1_300_000}},
    "provenance": PROVENANCE,
}  # fmt: skip
OLD = {"caption": {"caption_accuracy": 0.9}, "vqa": {}, "generation": {}, "classifier": {}}  # before `make reports`


def _publish(root: Path, docs: str, report: dict, evaluation: dict | None = None) -> None:
    (root / docs / "eval").mkdir(parents=True, exist_ok=True)
    (root / docs / "report.json").write_text(json.dumps(report))
    if evaluation is not None:
        (root / docs / "eval" / "eval.json").write_text(json.dumps(evaluation))


def test_tables_render_a_known_report(tmp_path):
    _publish(tmp_path, "docs/demo", REPORT)
    _publish(tmp_path, "docs/strategies/chameleon", REPORT)
    _publish(tmp_path, "docs/strategies/janus", OLD)  # old format: not read, flagged
    assert demo_table(tmp_path, Path(".")) == [
        "| what | result |",
        "|---|---:|",
        "| caption names the right class, 1,000 held-out test images | **96.2 %** (962 / 1000) |",
        '| VQA "which digit is in the image?", same images | **95.8 %** (958 / 1000) |',
        "| generated images recognised as the prompted class, 100 per class | **99.1 %** (991 / 1000), by a CNN "
        "trained on real images (98.2 % on real test images) |",
        "| training | 1,800 steps in 7.0 min (about 17,750 tokens/s), final loss 2.306 |",
        "| produced | commit `0123456`, 2030-01-02, 8.0 min for `unimm demo` ([report](docs/demo/report.md)) |",
    ]
    rows = strategies_table(tmp_path, Path("docs/strategies"))
    assert rows[2] == (
        "| `chameleon` | VQ codes in the text vocabulary, next-token both ways | 1,800 | 7.0 min | **96.2 %** | 95.8 % "
        "| **99.1 %** | [report](chameleon/report.md), commit `0123456` |"
    )
    assert rows[3].endswith("| – | – | – | – | – | not regenerated yet (produced before `make reports`): "
                            "[report](janus/report.md) |")  # fmt: skip
    assert all("not regenerated yet" in row for row in rows[4:])  # no report.json at all


def test_seeds_table_gives_each_seed_and_mean_sd(tmp_path):
    _publish(tmp_path, "docs/demo", REPORT)
    assert seeds_table(tmp_path, Path("."))[4].startswith("| 2 | – | – | – | – | not regenerated yet")
    assert len(seeds_table(tmp_path, Path("."))) == 5  # one seed published: no spread row
    low = {**REPORT, "eval": {**REPORT["eval"], "understanding": {**REPORT["eval"]["understanding"],
                                                                   "caption_accuracy": 0.958}}}  # fmt: skip
    _publish(tmp_path, "docs/demo/seeds/seed1", low)
    _publish(tmp_path, "docs/demo/seeds/seed2", REPORT)
    rows = seeds_table(tmp_path, Path("."))
    assert rows[2] == "| 0 | 96.2 % | 95.8 % | 99.1 % | 7.8 min | [report](docs/demo/report.md), commit `0123456` |"
    assert rows[3].startswith("| 1 | 95.8 % | 95.8 % |")
    # caption 96.2, 95.8, 96.2: mean 96.07, sample s.d. 0.23
    mean = "| mean ± s.d. (3 seeds) | **96.1 ± 0.2 %** | **95.8 ± 0.0 %** | **99.1 ± 0.0 %** | 7.8 ± 0.0 min |  |"
    assert rows[5] == mean


def test_committed_tables_match_the_committed_reports():
    """The issue's check: every marked table of README.md and docs/strategies/README.md is what the committed
    report.json / eval.json files render; run `unimm reports --tables-only` after publishing reports."""
    names = {page: [m["name"] for m in _blocks((ROOT / page).read_text(), page)] for page in PAGES}
    assert names == {
        "README.md": ["demo", "demo-seeds", "strategies", "eval", "decode", "sampling"],
        "docs/strategies/README.md": ["strategies"],
    }
    assert stale_tables(ROOT) == []


def test_a_number_edited_by_hand_fails_the_check(tmp_path):
    for page in PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    _publish(tmp_path, "docs/demo", REPORT, EVAL)
    _publish(tmp_path, "docs/strategies/ar-moe", REPORT)
    assert rewrite_tables(tmp_path) == list(PAGES) and stale_tables(tmp_path) == []
    readme = tmp_path / "README.md"
    text = readme.read_text()
    assert text.count("| **96.2 %** (962 / 1000) |") == 1 and text.count("| 2.91 M (1.30 M) |") == 1
    readme.write_text(text.replace("| **96.2 %** (962 / 1000) |", "| **96.3 %** (963 / 1000) |"))
    assert stale_tables(tmp_path) == ["README.md: reports:demo"]
    readme.write_text(text.replace("| 2.91 M (1.30 M) |", "| 2.90 M (1.30 M) |"))
    assert stale_tables(tmp_path) == ["README.md: reports:eval"]
    readme.write_text(text)  # a report published without its tables being rewritten fails as well
    _publish(tmp_path, "docs/strategies/ar-moe", {**REPORT, "training": {**REPORT["training"], "steps": 2000}})
    assert stale_tables(tmp_path) == ["README.md: reports:strategies", "docs/strategies/README.md: reports:strategies"]


def test_speed_tables_follow_the_bench_results(tmp_path):
    """The decode and sampling tables render the committed bench JSON; a rerun that moves a number makes the
    README stale until the tables are rewritten, and a missing result says so."""
    for page in PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    for name in ("decode.json", "sampling.json"):
        shutil.copy(ROOT / "bench" / "results" / name, results / name)
    rewrite_tables(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "no bench/results/sampling*.json" not in text and "`StaticDecoder`, compiled step" in text
    decode = json.loads((results / "decode.json").read_text())
    decode["table"][0]["unimm-compiled"]["new_tokens_per_s"] *= 1.1
    (results / "decode.json").write_text(json.dumps(decode))
    assert stale_tables(tmp_path) == ["README.md: reports:decode"]
    (results / "sampling.json").unlink()
    assert stale_tables(tmp_path) == ["README.md: reports:decode", "README.md: reports:sampling"]
    rewrite_tables(tmp_path)
    assert "no bench/results/sampling*.json" in (tmp_path / "README.md").read_text()
