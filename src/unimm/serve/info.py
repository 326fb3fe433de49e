"""What ``GET /v1/models`` says about a run: its strategy parts, parameter counts and training record."""

import json
from pathlib import Path

from unimm.models import UnifiedModel


def _last_metrics(run_dir: Path | None) -> dict:
    path = run_dir / "metrics.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def model_card(model: UnifiedModel, run_dir: Path | None, created: int) -> dict:
    cfg = model.cfg
    parts = {name: getattr(cfg, name).kind for name in ("writer", "codec", "reader", "text", "layers")}
    parts["denoiser"] = cfg.denoiser.kind if cfg.denoiser is not None else None
    params = {
        "total": sum(p.numel() for p in model.parameters()),
        **{
            name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("backbone", "writer", "reader")
        },
    }
    last = _last_metrics(run_dir)
    training = {"steps": cfg.train.steps, "batch_size": cfg.train.batch_size}
    if "step" in last:
        training["steps_done"] = last["step"]
    training.update({k: v for k, v in last.items() if "flop" in k or "budget" in k})
    return {
        "id": cfg.name,
        "object": "model",
        "created": created,
        "owned_by": "unimm",
        "strategy": parts,
        "parameters": params,
        "training": training,
        "sampling": {
            "steps": cfg.sample.steps,
            "guidance": cfg.sample.cfg,
            "max_new_tokens": cfg.sample.max_new_tokens,
        },
        "image_size": cfg.data.image_size,
        "max_seq_len": cfg.model.max_seq_len,
    }
