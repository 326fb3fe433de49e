"""``unimm reports``: rerun every report the docs quote and publish it into docs/, then regenerate the tables.

Each target trains (``unimm demo``: train, evaluate with the demo suite, report) in a run directory under
``$UNIMM_CACHE/reports/`` named by the target and a hash of the code and the resolved config, so an interrupted
``make reports`` resumes where it stopped, a finished target is only published again, and a change of code or
settings starts afresh instead of reusing an older run. Then ``unimm eval --suite quick`` on the same run, and
the report, the run's resolved config and the evaluation are copied into the target's docs folder.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from unimm.config import TokenizerConfig, dump_toml, load_config
from unimm.demo import run_demo
from unimm.eval.cache import default_cache
from unimm.eval.harness import evaluate
from unimm.eval.report import write_eval
from unimm.models import UnifiedModel
from unimm.provenance import provenance, source_hash, text_hash
from unimm.reports.tables import rewrite_tables
from unimm.reports.targets import TOKENIZER_CONFIG, Target
from unimm.tokenizers.train import train_tokenizer

console = Console()
EVAL_SUITE = "quick"


@dataclass(frozen=True)
class Plan:
    """One target resolved: its overrides, run directory and the demo command it amounts to."""

    target: Target
    overrides: list[str]
    run_dir: Path

    @property
    def done(self) -> bool:
        evaluated = not self.target.evaluate or (self.run_dir / "eval" / "eval.json").is_file()
        return (self.run_dir / "report" / "report.json").is_file() and evaluated

    def command(self) -> str:
        sets = [a for o in self.overrides for a in ("--set", o)]
        return shlex.join(["unimm", "demo", "--config", self.target.config, "--out", str(self.run_dir), *sets])


def _key(text: str) -> str:
    """12 hex digits of the code and ``text`` (a resolved config): a run directory's identity."""
    return text_hash(source_hash() + text)[:12]


def tokenizer_dir(root: Path, cache: Path) -> Path:
    """Where the shared VQ tokenizer of this code and ``TOKENIZER_CONFIG`` is (or will be) trained."""
    return cache / "reports" / f"tok-vq-{_key(dump_toml(load_config(root / TOKENIZER_CONFIG, schema=TokenizerConfig)))}"


def plan(target: Target, root: Path, cache: Path) -> Plan:
    overrides = [f'codec.tokenizer="{tokenizer_dir(root, cache)}"'] if target.vq else []
    overrides += list(target.overrides)
    cfg = load_config(root / target.config, overrides)
    return Plan(target, overrides, cache / "reports" / f"{target.name}-{_key(dump_toml(cfg))}")


def ensure_tokenizer(root: Path, cache: Path, progress: bool) -> Path:
    """Train the shared VQ tokenizer unless a finished one is there (it is not resumable: a partial one restarts)."""
    out = tokenizer_dir(root, cache)
    if not ((out / "tokenizer.safetensors").is_file() and (out / "metrics.json").is_file()):
        console.rule(f"[bold]VQ tokenizer ({TOKENIZER_CONFIG}) -> {out}")
        val = train_tokenizer(load_config(root / TOKENIZER_CONFIG, schema=TokenizerConfig), out, progress)["val"]
        console.print(f"VQ tokenizer: validation PSNR {val['psnr']:.2f} dB, code usage {val['usage']:.2f}")
    return out


def run_target(p: Plan, root: Path, cache: Path, progress: bool) -> None:
    """Demo run + quick-suite evaluation of one target in its run directory (skipped when both are there)."""
    if p.done:
        console.print(f"{p.target.name}: finished in {p.run_dir}; publishing it again")
        return
    if p.target.vq:
        ensure_tokenizer(root, cache, progress)
    cfg = load_config(root / p.target.config, p.overrides)
    run_demo(cfg, p.run_dir, cache_dir=cache, progress=progress, command=p.command())
    if not p.target.evaluate:
        return
    t0 = time.perf_counter()
    result = evaluate(UnifiedModel.from_pretrained(p.run_dir), EVAL_SUITE, cache_dir=cache, run_dir=p.run_dir,
                      progress=progress)  # fmt: skip
    wall = {"evaluate": round(time.perf_counter() - t0, 2)}
    command = shlex.join(["unimm", "eval", str(p.run_dir), "--suite", EVAL_SUITE])
    result["provenance"] = provenance(p.run_dir / "config.toml", wall, command)
    write_eval(result, p.run_dir / "eval", title=f"{cfg.name} ({p.target.name})")


def publish(p: Plan, root: Path) -> Path:
    """Replace the target's docs folder's report files and ``eval/`` with the run's; other subfolders (earlier
    development runs kept for the record) stay."""
    docs = root / p.target.docs
    docs.mkdir(parents=True, exist_ok=True)
    for f in docs.iterdir():
        if f.is_file():
            f.unlink()
    shutil.rmtree(docs / "eval", ignore_errors=True)
    report = p.run_dir / "report"
    for f in [report / "report.md", report / "report.json", *sorted(report.glob("*.png")), p.run_dir / "config.toml",
              p.run_dir / "codec.json"]:  # fmt: skip
        if f.is_file():
            shutil.copy2(f, docs / f.name)
    if p.target.evaluate:
        (docs / "eval").mkdir()
        for name in ("eval.json", "eval.md", "samples.png"):  # eval.md links only the overview grid
            shutil.copy2(p.run_dir / "eval" / name, docs / "eval" / name)
    return docs


def run_reports(targets: list[Target], root: Path, cache: Path | None = None, progress: bool = True) -> list[Path]:
    """Run, publish and tabulate ``targets`` in order; the tables are rewritten after each target, so an
    interrupted run leaves the docs consistent with what it published. Returns the docs folders written."""
    cache = default_cache() if cache is None else Path(cache)
    written = []
    for i, target in enumerate(targets, 1):
        p = plan(target, root, cache)
        console.rule(f"[bold]report {i}/{len(targets)}: {target.name} ({target.config} -> {target.docs})")
        run_target(p, root, cache, progress)
        written.append(publish(p, root))
        for page in rewrite_tables(root):
            console.print(f"rewrote the tables of {page}")
    return written


def describe(targets: list[Target], root: Path, cache: Path | None = None) -> list[str]:
    """What ``run_reports`` would do, one line per step (``--dry-run``)."""
    cache = default_cache() if cache is None else Path(cache)
    lines, tok = [], tokenizer_dir(root, cache)
    if any(t.vq for t in targets):
        state = "trained" if (tok / "tokenizer.safetensors").is_file() else "to train"
        lines.append(f"tokenizer: unimm tokenizer train {TOKENIZER_CONFIG} --out {tok}  [{state}]")
    for t in targets:
        p = plan(t, root, cache)
        state = "finished; publish only" if p.done else "to run"
        then = f" ; unimm eval --suite {EVAL_SUITE}" if t.evaluate else ""
        lines.append(f"{t.name}: {p.command()}{then} -> {t.docs}  [{state}]")
    lines.append("then: rewrite the marked tables of README.md and docs/strategies/README.md")
    return lines
