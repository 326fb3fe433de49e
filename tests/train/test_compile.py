"""``train.compile``: torch.compile'd backbone blocks give the eager loss and gradients, leave the state dict and
the cached (decoding) path alone, and ``unimm train`` switches them on. Dynamo's ``aot_eager`` backend captures
the forward and backward graphs as inductor would, without its minutes of C++ compiling on this CPU."""

import json

import pytest
import torch

from conftest import tiny_model_and_batch, tiny_overrides
from unimm.config import load_config
from unimm.nn.backbone import Backbone
from unimm.train import train


@pytest.mark.parametrize("layers", ["dense", "mot"])
def test_compiled_blocks_give_the_eager_loss_and_gradients(digits_dir, layers):
    cfg, model, batch = tiny_model_and_batch(digits_dir, **{"layers.kind": layers})
    keys = list(model.state_dict())

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss, _ = model(batch, torch.Generator().manual_seed(1))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_a, grads_a = loss_and_grads()
    model.backbone.compile_blocks("aot_eager")
    calls = []
    model.backbone._compiled = [_counting(c, calls) for c in model.backbone._compiled]
    loss_b, grads_b = loss_and_grads()
    assert len(calls) == cfg.model.depth  # the compiled blocks ran, not the eager ones
    assert list(model.state_dict()) == keys  # no second copy of the weights
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_b[k], grads_a[k], rtol=1e-4, atol=1e-5)


def _counting(fn, calls: list):
    def run(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return run


def test_decoding_and_evaluation_stay_eager():
    from unimm.nn.backbone import BackboneConfig

    torch.manual_seed(0)
    model = Backbone(BackboneConfig(vocab_size=30, dim=16, depth=2, heads=4, kv_heads=2, hidden_dim=24))
    ids = torch.randint(0, 30, (2, 6))
    model.eval()
    want = model.lm_logits(ids)
    model.compile_blocks("aot_eager")
    calls = []
    model._compiled = [_counting(c, calls) for c in model._compiled]
    cache = model.new_cache(8)
    got = torch.cat([model.lm_logits(ids[:, :3], cache), model.lm_logits(ids[:, 3:], cache)], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    model.train()
    model.lm_logits(ids, model.new_cache(8))  # a cached forward in training mode: eager too
    assert calls == []
    model.lm_logits(ids)
    assert len(calls) == 2


def test_train_compile_switches_the_compiled_blocks_on(digits_dir, tmp_path, monkeypatch):
    seen = []
    original = Backbone.compile_blocks

    def compile_blocks(self, backend="inductor"):
        seen.append(backend)
        original(self, "aot_eager")  # what inductor would run, captured the same way

    monkeypatch.setattr(Backbone, "compile_blocks", compile_blocks)
    cfg = load_config(None, tiny_overrides(digits_dir, **{"train.steps": 2, "train.compile": "true"}))
    out = train(cfg, tmp_path / "r", progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert seen == ["inductor"] and len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    seen.clear()
    plain = load_config(None, tiny_overrides(digits_dir, **{"train.steps": 2}))
    train(plain, tmp_path / "p", progress=False)
    assert seen == []
