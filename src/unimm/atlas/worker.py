"""One atlas run in its own process: ``python -m unimm.atlas.worker train|eval RUN_DIR``.

``RUN_DIR/atlas_run.json`` (written by the runner) holds the run's spec and its launch settings. ``train``
sets the steps of the parts it prepares from the side budget (pretrained regime, ``atlas/side.py``), prices a
training step, prepares, and then fixes the training steps once from what is left of the budget
(``budget.json``, written after preparation: ``atlas/budget.py``, ``atlas/charges.py``); then it trains, resuming
an interrupted run and skipping a finished one. Its wall time (preparation included) and peak memory go to
``atlas_train.json`` and ``report/training_time.json`` (read by the eval harness); training writes the run's
FLOP ledger, ``ledger.json``. ``eval`` runs ``unimm eval``'s harness and
writes ``eval/``, plus ``eval/strip.png`` + ``strip.json``: the first generated image of each class, the
same prompts for every run, for the report's side-by-side grid.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch

from unimm.checkpoint import atomic_write, atomic_write_text, load_state
from unimm.config import Config, load_config
from unimm.train.checkpoints import latest_checkpoint


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def trained_steps(run_dir: Path) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    ckpt = latest_checkpoint(run_dir)
    return None if ckpt is None else int(load_state(ckpt / "train_state.pt")["step"])


def peak_rss_mib() -> float:
    """Peak resident memory of this process image. ``ru_maxrss`` would do, but Linux carries it over from the
    parent through fork + exec, so a worker started by a large runner would report the runner's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def _device(launch: dict[str, Any]) -> str:
    want = launch.get("device", "auto")
    return ("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else want


def _join_one_process_group() -> None:
    """``train.parallel = "none"`` trains on the CPU; on a GPU the run is a one-process DDP group instead."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def _launch_overrides(launch: dict[str, Any], device: str) -> list[str]:
    extra = [f"train.threads={launch['threads']}"] if launch.get("threads") else []
    extra += [f"codec.tokenizer={json.dumps(launch['tokenizer'])}"] if launch.get("tokenizer") else []
    return extra + (["train.parallel=ddp"] if device == "cuda" else [])


def _schedule(plan: dict[str, Any]) -> list[str]:
    branches = [f"train.branches={plan['branch_steps']}"] if plan.get("branch_steps") else []
    return [f"train.{k}={plan[k]}" for k in ("steps", "warmup", "save_every", "log_every")] + branches


def ladder_plan(
    name: str, spec: dict[str, Any], cfg: Config, charged: dict[str, float], cost, checkpoints: int, record: dict
) -> None:
    """A stable run's cooldown branches: each smaller budget's steps at the same price per step and the same
    charges (``record["ladder"]``, keyed by budget name); the stable run keeps a checkpoint at each fork step,
    and its warm-up and log interval are the smallest budget's, since every branch shares them."""
    from unimm.atlas.budget import BudgetError, budget_plan, check_left
    from unimm.atlas.plan import budget_label

    kind, ladder, plans = spec["budget"]["kind"], {}, []
    for value in spec["ladder"]["branches"]:
        try:
            left = check_left(f"{name} (branch {budget_label(kind, value)})", kind, value, charged,
                              spec["ledger"]["regime"])  # fmt: skip
        except BudgetError as err:
            ladder[budget_label(kind, value)] = {"budget": value, "error": str(err)}
            continue
        p = budget_plan(cfg, kind, left, cost, checkpoints)
        plans.append(p)
        keep = ("left", "steps", "expected_flops", "expected_encoder_flops")
        ladder[budget_label(kind, value)] = {"budget": value, **{k: p[k] for k in keep}}
    record["ladder"] = ladder
    record["branch_steps"] = sorted(p["steps"] for p in plans)
    record["warmup"] = min([record["warmup"], *(p["warmup"] for p in plans)])
    record["log_every"] = min([record["log_every"], *(p["log_every"] for p in plans)])


def _planner(run_dir: Path, spec: dict[str, Any], launch: dict[str, Any], overrides: list[str], device: str):
    """A fresh run: its parts' side steps (when the atlas has a side budget), the price of a training step, and the
    callback that sets the steps after preparation from what is left of the budget and writes ``budget.json``."""
    from unimm.atlas.budget import budget_plan, check_left, measure_step_cost
    from unimm.atlas.charges import preparation_charge, settings, shared_charge
    from unimm.atlas.side import preparation_prices, side_steps

    ledger, b = settings(spec), spec["budget"]
    side: dict[str, Any] = {"side_flops": ledger["side_flops"], "prices": {}, "steps": {}, "overrides": []}
    if ledger["side_flops"] is not None:  # pretrained, or scratch beside it: the same parts, paid by the budget
        side["prices"] = preparation_prices(load_config(spec["preset"], overrides))
        side["steps"] = side_steps(side["prices"], ledger["side_flops"])
        side["overrides"] = [f"{k}={v}" for k, v in side["steps"].items()]
    cfg = load_config(spec["preset"], [*overrides, *side["overrides"]])
    shared = shared_charge(spec, launch.get("tokenizer"), b["kind"])
    check_left(run_dir.name, b["kind"], b["value"], shared, ledger["regime"])  # before preparing anything
    cost = measure_step_cost(cfg, launch["measure_steps"], timed=b["kind"] == "wall_s", device=device)

    def plan(cfg: Config, prep: dict[str, Any]) -> None:
        charged = {**preparation_charge(spec, prep, b["kind"]), **shared}
        left = check_left(run_dir.name, b["kind"], b["value"], charged, ledger["regime"])
        steps = budget_plan(cfg, b["kind"], left, cost, launch["checkpoints"])
        record = {"kind": b["kind"], "budget": b["value"], **ledger, "charged": charged, "side": side, **steps}
        if spec.get("ladder", {}).get("branches"):
            ladder_plan(run_dir.name, spec, cfg, charged, cost, launch["checkpoints"], record)
        atomic_write_text(run_dir / "budget.json", json.dumps(record, indent=2))
        for key in ("steps", "warmup", "save_every", "log_every"):
            setattr(cfg.train, key, record[key])
        if "branch_steps" in record:  # validated on assignment: after the warm-up that every fork must follow
            cfg.train.branches = record["branch_steps"]

    return cfg, plan


def train_run(run_dir: Path) -> None:
    from unimm.train import train

    job = json.loads((run_dir / "atlas_run.json").read_text())
    spec, launch = job["spec"], job["launch"]
    device = _device(launch)
    if spec.get("ladder", {}).get("stable"):
        return train_branch(run_dir, spec, launch, device)
    overrides = [*spec["overrides"], *_launch_overrides(launch, device)]
    planned = read_json(run_dir / "budget.json")  # fixed once: a resumed run keeps its steps and side steps
    log = read_json(run_dir / "atlas_train.json") or {"sessions": [], "wall_s": 0.0, "peak_rss_mib": 0.0}
    done = trained_steps(run_dir)
    if (
        planned is not None
        and done is not None
        and done >= planned["steps"]
        and (run_dir / "model.safetensors").is_file()
    ):
        print(f"{run_dir.name}: already trained ({done} steps)")
        log["finished"] = True
        atomic_write_text(run_dir / "atlas_train.json", json.dumps(log, indent=2))
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if planned is None:
        cfg, plan = _planner(run_dir, spec, launch, overrides, device)
    else:
        cfg, plan = load_config(spec["preset"], [*overrides, *planned["side"]["overrides"], *_schedule(planned)]), None
    if device == "cuda":
        _join_one_process_group()
    steps = f"{planned['steps']} steps" if planned else "its budget after preparation"
    print(f"{run_dir.name}: training {steps}" + (f", resuming from {done}" if done else ""), flush=True)
    t0 = time.perf_counter()
    train(cfg, run_dir, resume=done is not None, progress=False, plan=plan)
    wall = time.perf_counter() - t0
    log["sessions"].append({"resumed_from": done, "wall_s": round(wall, 2)})
    log["wall_s"] = round(log["wall_s"] + wall, 2)
    log["peak_rss_mib"] = round(max(log["peak_rss_mib"], peak_rss_mib()), 1)
    if device == "cuda":
        log["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    log["finished"] = True
    atomic_write_text(run_dir / "report" / "training_time.json", json.dumps({"wall_s": log["wall_s"]}))
    atomic_write_text(run_dir / "atlas_train.json", json.dumps(log, indent=2))
    print(f"{run_dir.name}: trained in {wall:.1f} s", flush=True)


def branch_plan(run_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """A cooldown branch's ``budget.json``: its stable run's record with this budget's steps, and the fork."""
    from unimm.atlas.budget import BudgetError
    from unimm.optim import fork_step

    stable = run_dir.parent / spec["ladder"]["stable"]
    sb = read_json(stable / "budget.json")
    if sb is None:
        raise FileNotFoundError(f"{run_dir.name}: its stable run {stable} has not planned its budget yet")
    from unimm.atlas.plan import budget_label

    label = budget_label(spec["budget"]["kind"], spec["budget"]["value"])
    entry = sb["ladder"].get(label)
    if entry is None:
        raise KeyError(f"{run_dir.name}: the stable run {stable.name} plans no branch {label}")
    if "error" in entry:
        raise BudgetError(entry["error"])
    cooldown = load_config(stable / "config.toml").train.cooldown
    shared = {k: sb[k] for k in ("regime", "side_flops", "shared_tokenizer", "charged", "side", "step_cost")}
    own = {k: v for k, v in entry.items() if k != "budget"}
    return {"kind": sb["kind"], "budget": entry["budget"], **shared, **own,
            "warmup": sb["warmup"], "save_every": sb["save_every"], "log_every": sb["log_every"],
            "fork": {"stable": stable.name, "step": fork_step(entry["steps"], cooldown)}}  # fmt: skip


def train_branch(run_dir: Path, spec: dict[str, Any], launch: dict[str, Any], device: str) -> None:
    """Fork the stable run at this budget's fork step and train the cooldown (``unimm fork``); an interrupted
    branch resumes from its own last checkpoint."""
    from unimm.train import train
    from unimm.train.fork import fork
    from unimm.train.ledger import FORK

    run_dir.mkdir(parents=True, exist_ok=True)
    planned = read_json(run_dir / "budget.json")
    if planned is None:
        planned = branch_plan(run_dir, spec)
        atomic_write_text(run_dir / "budget.json", json.dumps(planned, indent=2))
    log = read_json(run_dir / "atlas_train.json") or {"sessions": [], "wall_s": 0.0, "peak_rss_mib": 0.0}
    launched = [f"train.threads={launch['threads']}"] if launch.get("threads") else []
    launched += ["train.parallel=ddp"] if device == "cuda" else []
    if device == "cuda":
        _join_one_process_group()
    done = trained_steps(run_dir) if (run_dir / FORK).is_file() else None
    t0 = time.perf_counter()
    if done is not None and done >= planned["steps"] and (run_dir / "model.safetensors").is_file():
        print(f"{run_dir.name}: already trained ({done} steps)")
    elif done is not None:
        print(f"{run_dir.name}: resuming the branch from step {done}", flush=True)
        train(load_config(run_dir / "config.toml", launched), run_dir, resume=True, progress=False)
    else:
        for leftover in ("checkpoints", "model.safetensors", "config.toml"):  # a fork killed while copying
            path = run_dir / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        at = planned["fork"]
        print(f"{run_dir.name}: forking {at['stable']} at step {at['step']}, cooling down to {planned['steps']}",
              flush=True)  # fmt: skip
        fork(run_dir.parent / at["stable"], run_dir, planned["steps"], launched, progress=False)
    wall = time.perf_counter() - t0
    log["sessions"].append({"resumed_from": done, "wall_s": round(wall, 2), "fork": planned["fork"]})
    log["wall_s"] = round(log["wall_s"] + wall, 2)
    log["peak_rss_mib"] = round(max(log["peak_rss_mib"], peak_rss_mib()), 1)
    log["finished"] = True
    atomic_write_text(run_dir / "report" / "training_time.json", json.dumps({"wall_s": log["wall_s"]}))
    atomic_write_text(run_dir / "atlas_train.json", json.dumps(log, indent=2))
    print(f"{run_dir.name}: trained its cooldown in {wall:.1f} s", flush=True)


def eval_run(run_dir: Path) -> None:
    from unimm.atlas.further import further_sections
    from unimm.atlas.prepare import eval_suite
    from unimm.data import load_split
    from unimm.eval.harness import evaluate, generation_jobs
    from unimm.eval.report import write_eval
    from unimm.models import UnifiedModel

    launch = json.loads((run_dir / "atlas_run.json").read_text())["launch"]
    ev = launch["eval"]
    suite = eval_suite(ev)
    model = UnifiedModel.from_pretrained(run_dir).to(_device(launch))
    print(f"{run_dir.name}: evaluating (suite {suite.name}, seed {ev['seed']})", flush=True)
    if model.cfg.data.frames:  # a video run: eval/video.py's numbers (atlas/metrics.py reads them)
        result = eval_video_run(model, run_dir, suite, ev["seed"])
    else:
        result = evaluate(model, suite, seed=ev["seed"], run_dir=run_dir)
        if launch.get("suites"):  # a strategy's further suites: their sections beside the harness's
            print(f"{run_dir.name}: evaluating {', '.join(launch['suites'])}", flush=True)
            result.update(further_sections(model, launch["suites"], suite, ev["seed"]))
        write_eval(result, run_dir / "eval", title=f"{model.cfg.name} ({run_dir.name})")
        cfg = model.cfg
        test = load_split(cfg.data.path, "test", cfg.data.image_size, cfg.data.channels, cfg.data.class_names)
        labels = [label for _, label in generation_jobs(test, suite)]  # the harness's prompt order
        write_strip(result["_images"], result["_prompts"], labels, run_dir)
    on_gpu = next(model.parameters()).is_cuda  # the harness reads the CUDA allocator there
    peak_gpu = result["cost"].get("peak_memory_mib") if on_gpu else None
    peak = {"peak_mib": round(peak_gpu if peak_gpu is not None else peak_rss_mib(), 1)}
    atomic_write_text(run_dir / "eval" / "atlas_eval.json", json.dumps(peak))
    print(f"{run_dir.name}: evaluated", flush=True)


def eval_video_run(model, run_dir: Path, suite, seed: int) -> dict[str, Any]:
    """eval/video.py on a video run: eval.json, eval.md, samples.gif, strips.png, and the atlas's strip of each
    generated clip's first frame; returns the evaluation."""
    from unimm.eval.video import evaluate_video
    from unimm.eval.video_report import write_video_eval

    result = evaluate_video(model, suite, seed=seed)
    write_video_eval(result, run_dir / "eval", title=f"{model.cfg.name} ({run_dir.name})")
    clips = result["_clips"]
    write_strip(clips[:, 0], result["_prompts"], [-1] * len(clips), run_dir)  # no class grouping: the first clips
    return result


def write_strip(images: torch.Tensor, prompts: list[str], labels: list[int], run_dir: Path, limit: int = 10) -> None:
    """The first image of each prompted class (else of the first prompts) side by side, without padding."""
    from unimm.io import grid_image

    first: dict[int, int] = {}
    for i, label in enumerate(labels):
        first.setdefault(label if label >= 0 else -1 - i, i)
    picks = list(first.values())[:limit]
    strip = grid_image(images[picks], len(picks), pad=0)
    atomic_write(run_dir / "eval" / "strip.png", lambda tmp: strip.save(tmp, format="png"))
    atomic_write_text(run_dir / "eval" / "strip.json", json.dumps({"prompts": [prompts[i] for i in picks]}))


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in ("train", "eval"):
        sys.exit("usage: python -m unimm.atlas.worker train|eval RUN_DIR")
    threads = json.loads((Path(argv[1]) / "atlas_run.json").read_text())["launch"].get("threads")
    if threads:
        torch.set_num_threads(threads)
    (train_run if argv[0] == "train" else eval_run)(Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
