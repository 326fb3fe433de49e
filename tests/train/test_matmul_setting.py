"""train.matmul = "onednn": the linear layers of training and validation run through oneDNN, a run resumes bit for
bit, and settings it cannot serve are refused by name."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides, train_until
from unimm.checkpoint import load_weights
from unimm.config import load_config
from unimm.nn import onednn_linear
from unimm.train import train

pytestmark = pytest.mark.skipif(not onednn_linear.available(), reason="this torch build has no oneDNN")


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_onednn_training_runs_through_onednn_and_resumes_exactly(digits_dir, tmp_path, monkeypatch):
    calls = []
    real = onednn_linear.OneDNNLinear.apply
    monkeypatch.setattr(onednn_linear.OneDNNLinear, "apply", lambda *a: calls.append(1) or real(*a))
    overrides = tiny_overrides(digits_dir, **{"train.matmul": '"onednn"', "train.val_every": 2, "train.threads": 1})
    straight = train(load_config(None, overrides), tmp_path / "a", progress=False)
    assert calls  # the wiring: without train.matmul's context no product would go through oneDNN
    train_until(load_config(None, overrides), tmp_path / "b", stop_after=2)
    resumed = train(load_config(None, overrides), tmp_path / "b", resume=True, progress=False)
    assert _losses(straight) == _losses(resumed)
    a, b = load_weights(straight / "model.safetensors"), load_weights(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "setting", ['train.precision="bf16"', "train.compile=true", "train.activation_checkpointing=true"]
)
def test_onednn_refuses_what_it_cannot_route(digits_dir, setting):
    with pytest.raises(ValueError, match="train.matmul = 'onednn'"):
        load_config(None, [*tiny_overrides(digits_dir, **{"train.matmul": '"onednn"'}), setting])
