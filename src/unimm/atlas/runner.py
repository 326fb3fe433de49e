"""Run the atlas: shared preparation, then every run as its own processes (train, then eval), ``jobs`` at a time.

A run directory ``OUT/runs/<name>/`` with ``atlas_done.json`` is finished and never redone; any other is
(re)started, and its training resumes from its last checkpoint. A run that fails is recorded in
``atlas_failed.json`` (with the tail of its log) and retried by the next invocation; the others go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unimm.atlas.config import AtlasConfig
from unimm.atlas.plan import PlannedRun, plan_runs
from unimm.atlas.prepare import eval_suite, prepare_evaluators, shared_tokenizers
from unimm.checkpoint import atomic_write_text


@dataclass
class RunOutcome:
    name: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    message: str = ""


def run_dir(out: Path, run: PlannedRun) -> Path:
    return out / "runs" / run.name


def is_finished(out: Path, run: PlannedRun) -> bool:
    return (run_dir(out, run) / "atlas_done.json").is_file()


class _Processes:
    """The worker processes alive now, so that an interrupt can stop them (and nothing else)."""

    def __init__(self) -> None:
        self.lock, self.live = threading.Lock(), set()
        self.stopping = False

    def run(self, cmd: list[str], log: Path, env: dict[str, str]) -> int:
        with open(log, "a") as fh:
            with self.lock:
                if self.stopping:
                    return -1
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
                self.live.add(proc)
            try:
                return proc.wait()
            finally:
                with self.lock:
                    self.live.discard(proc)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.live:
                proc.terminate()
        for proc in list(self.live):
            proc.wait()


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT both stop the sweep the same way (workers stopped, the session closed; nothing saved is
    lost). A sweep started in the background (``nohup ... &``) inherits SIGINT ignored, so Ctrl-C style stops
    would do nothing without this; outside the main thread it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_one(run: PlannedRun, folder: Path, launch: dict[str, Any], procs: _Processes, phase: dict) -> RunOutcome:
    """Train then evaluate one run in worker processes; ``phase[run.name]`` says where it is."""
    t0 = time.perf_counter()
    job_file = folder / "atlas_run.json"
    if job_file.is_file() and json.loads(job_file.read_text())["digest"] != run.digest():
        return RunOutcome(run.name, "failed", 0.0, f"{folder} holds a run made from another spec; move it away")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job_file, json.dumps({"spec": run.spec(), "digest": run.digest(), "launch": launch}, indent=2))
    (folder / "atlas_failed.json").unlink(missing_ok=True)
    env = dict(os.environ)
    if launch.get("threads"):
        env.update(OMP_NUM_THREADS=str(launch["threads"]), MKL_NUM_THREADS=str(launch["threads"]))
    for step in ("train", "eval"):
        train_log = folder / "atlas_train.json"
        if step == "train" and train_log.is_file() and json.loads(train_log.read_text()).get("finished"):
            continue
        phase[run.name] = step
        log = folder / f"atlas_{step}.log"
        rc = procs.run([sys.executable, "-m", "unimm.atlas.worker", step, str(folder)], log, env)
        if rc != 0:
            tail = log.read_text().splitlines()[-15:] if log.is_file() else []
            info = {"phase": step, "returncode": rc, "log": str(log), "tail": tail}
            atomic_write_text(folder / "atlas_failed.json", json.dumps(info, indent=2))
            last = next((line for line in reversed(tail) if line.strip()), "")
            return RunOutcome(run.name, "failed", time.perf_counter() - t0, f"{step} exited with {rc}: {last}")
    seconds = time.perf_counter() - t0
    atomic_write_text(folder / "atlas_done.json", json.dumps({"seconds": round(seconds, 1), "at": time.time()}))
    return RunOutcome(run.name, "done", seconds)


def _steps(folder: Path) -> tuple[int, int | None]:
    """(last logged step, planned steps) of a run in progress."""
    total = json.loads((folder / "budget.json").read_text())["steps"] if (folder / "budget.json").is_file() else None
    metrics = folder / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    try:
        return (json.loads(lines[-1]).get("step", 0) if lines else 0), total
    except json.JSONDecodeError:
        return 0, total


def train_finished(out: Path, name: str) -> bool:
    """Whether run ``name`` has finished training (its evaluation may still be running)."""
    log = out / "runs" / name / "atlas_train.json"
    return log.is_file() and bool(json.loads(log.read_text()).get("finished"))


def launch_order(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Seed by seed (every cell's first seed before any second one), so that a sweep stopped early has whole
    curves rather than whole cells; plan order within a seed."""
    return sorted(runs, key=lambda r: r.seed)


class _Queue:
    """Runs waiting for a worker: a cooldown branch becomes ready once its stable run has trained, and goes
    before any new stable run, so ladders finish one by one."""

    def __init__(self, runs: list[PlannedRun], out: Path) -> None:
        self.waiting, self.out = launch_order(runs), out
        self.failed: set[str] = set()

    def next(self) -> PlannedRun | None:
        ready = [r for r in self.waiting if r.stable is not None and train_finished(self.out, r.stable)]
        ready = ready or [r for r in self.waiting if r.stable is None]
        if ready:
            self.waiting.remove(ready[0])
            return ready[0]
        return None

    def orphans(self) -> list[PlannedRun]:
        """Branches whose stable run failed in this invocation: they cannot start."""
        lost = [r for r in self.waiting if r.stable in self.failed]
        self.waiting = [r for r in self.waiting if r not in lost]
        return lost


def run_launch(base: dict[str, Any], r: PlannedRun, tokenizers: dict) -> dict[str, Any]:
    """What the worker of run ``r`` is launched with: ``base`` (threads, device, eval), its shared tokenizer and
    its strategy's further suites (``atlas/further.py``)."""
    shared = tokenizers.get(r.data_key()) if r.uses_shared_tokenizer() else None
    return {**base, "tokenizer": shared, "suites": list(r.suites)}


def execute(atlas: AtlasConfig, runs: list[PlannedRun], out: Path, jobs: int, console: Console) -> list[RunOutcome]:
    """Run every unfinished run of ``runs``; finished ones are reported as skipped."""
    outcomes = [RunOutcome(r.name, "skipped") for r in runs if is_finished(out, r)]
    remaining = [r for r in runs if not is_finished(out, r)]
    n_left = len(remaining)
    console.print(f"atlas {atlas.name}: {len(runs)} runs, {len(outcomes)} finished, {n_left} to run, jobs {jobs}")
    if not remaining:
        return outcomes
    suite = eval_suite(atlas.eval)
    tokenizers = shared_tokenizers(atlas, remaining, out, console)
    prepare_evaluators(suite, remaining, console)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    base = {
        "threads": threads,
        "device": atlas.device,
        "measure_steps": atlas.budget.measure_steps,
        "checkpoints": atlas.budget.checkpoints,
        "eval": {"suite": atlas.eval.suite, "seed": atlas.eval.seed, "overrides": atlas.eval.overrides()},
    }
    session = start_session(out, jobs, threads, atlas.device)
    procs, phase, queue = _Processes(), {}, _Queue(remaining, out)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        stop_on_signals(),
        Progress(*columns, console=console, disable=not console.is_terminal) as bar,
        ThreadPoolExecutor(jobs) as pool,
    ):
        overall = bar.add_task("runs", total=len(remaining))
        pending: dict[Future, PlannedRun] = {}
        tasks: dict[str, Any] = {}

        def finish(r: PlannedRun, outcome: RunOutcome) -> None:
            outcomes.append(outcome)
            bar.advance(overall)
            if r.name in tasks:
                bar.remove_task(tasks.pop(r.name))
            note = f" ({outcome.message})" if outcome.message else ""
            console.print(f"{outcome.status}: {r.name} in {outcome.seconds:.0f} s{note}")
            if outcome.status == "failed":
                queue.failed.add(r.name)
            end_session(out, session, outcomes)

        try:
            while pending or queue.waiting:
                while len(pending) < jobs and (r := queue.next()) is not None:
                    launch = run_launch(base, r, tokenizers)
                    pending[pool.submit(_run_one, r, run_dir(out, r), launch, procs, phase)] = r
                for r in queue.orphans():
                    finish(r, RunOutcome(r.name, "failed", 0.0, f"its stable run {r.stable} failed"))
                if not pending:
                    if queue.waiting:  # branches whose stable run is neither running nor finished
                        for r in list(queue.waiting):
                            queue.waiting.remove(r)
                            finish(r, RunOutcome(r.name, "failed", 0.0, f"its stable run {r.stable} is not planned"))
                    break
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for f in done:
                    r = pending.pop(f)
                    finish(r, f.result())
                for name, where in list(phase.items()):
                    if name not in {r.name for r in pending.values()}:
                        continue
                    step, total = _steps(out / "runs" / name)
                    task = tasks.setdefault(name, bar.add_task(name, total=None))
                    bar.update(task, description=f"{name} [{where}]", completed=step, total=total)
        except KeyboardInterrupt:
            console.print("interrupted: stopping the workers; run the same command again to resume")
            procs.stop()
            for f in pending:
                f.cancel()
            end_session(out, session, outcomes)
            raise
    return outcomes


def start_session(out: Path, jobs: int, threads: int | None, device: str) -> dict[str, Any]:
    """Open this invocation's entry in ``OUT/sweep.json`` (the sweep's wall time, session by session), with the
    fp32 matmul peak measured now with every core, the yardstick of the sweep's achieved FLOP/s, and the load
    average the machine carried when it was measured (other work makes the peak read low)."""
    from unimm.atlas.throughput import load_average, matmul_peak_gflops

    session = {"start": time.time(), "end": time.time(), "jobs": jobs, "threads_per_job": threads,
               "load_at_start": load_average(),
               "matmul_peak_gflops": matmul_peak_gflops() if device != "cuda" else None, "finished": []}  # fmt: skip
    _write_sessions(out, session)
    return session


def end_session(out: Path, session: dict[str, Any], outcomes: list[RunOutcome]) -> None:
    session["end"] = time.time()
    session["finished"] = [o.name for o in outcomes if o.status == "done"]
    _write_sessions(out, session)


def _write_sessions(out: Path, session: dict[str, Any]) -> None:
    path = out / "sweep.json"
    sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    sessions = [s for s in sessions if s["start"] != session["start"]] + [session]
    atomic_write_text(path, json.dumps({"sessions": sessions}, indent=2))


def run_atlas(
    atlas: AtlasConfig, out: str | Path, jobs: int | None = None, report_only: bool = False, console=None
) -> tuple[list[RunOutcome], Path]:
    """Plan, run what is unfinished (unless ``report_only``), and write the report; returns the outcomes of
    this invocation and the path of ``report.md``."""
    from unimm.atlas.report import write_report

    console = console or Console(soft_wrap=True)
    out = Path(out)
    runs = plan_runs(atlas)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "plan.json", json.dumps([r.spec() for r in runs], indent=2))
    outcomes = [] if report_only else execute(atlas, runs, out, jobs or atlas.jobs, console)
    return outcomes, write_report(atlas, runs, out)
