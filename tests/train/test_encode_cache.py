"""train.encode_cache_mib: a frozen codec encodes each distinct training image once; the cache gives the codec's own
values, stays in its memory bound, resumes exactly, and leaves the FLOP ledger as it was."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_preset, train_until
from unimm.checkpoint import load_weights
from unimm.config import load_config
from unimm.models.encode_cache import EncodeCache, cached_encodes
from unimm.models.vae import VAEPatches
from unimm.models.vq_codes import VQCodes
from unimm.train import train


def _counting(encode):
    calls = []

    def one(x):
        calls.append(x.shape[0])
        return encode(x)

    return one, calls


def test_cache_returns_each_items_encoding_and_encodes_it_once():
    cache = EncodeCache(max_bytes=2**20)
    encode, calls = _counting(lambda x: x.flatten(1) * 2)
    images = torch.randn(6, 3, 4, 4)
    first = cache.encode(images, encode)
    assert torch.equal(first, images.flatten(1) * 2) and calls == [1] * 6  # each miss alone, a batch of one
    again = cache.encode(images[[4, 0, 4]], encode)  # repeats within a batch and across batches
    assert torch.equal(again, first[[4, 0, 4]]) and len(calls) == 6
    assert (cache.hits, cache.misses) == (3, 6) and "33.3% of 9 encodes reused" in cache.summary()


def test_cache_stops_keeping_at_its_bound_and_still_encodes_right():
    item_bytes = 3 * 4 * 4 * 4
    cache = EncodeCache(max_bytes=2 * item_bytes)
    encode, calls = _counting(lambda x: x.flatten(1) + 1)
    images = torch.randn(4, 3, 4, 4)
    assert torch.equal(cache.encode(images, encode), images.flatten(1) + 1)
    assert len(cache.items) == 2 and cache.bytes == 2 * item_bytes
    assert torch.equal(cache.encode(images, encode), images.flatten(1) + 1)
    assert len(calls) == 6  # the two kept ones were reused, the two others encoded again


def test_cache_refuses_inputs_with_gradients():
    with pytest.raises(ValueError, match="without gradients"):
        EncodeCache(2**20).encode(torch.randn(2, 3, 4, 4, requires_grad=True), lambda x: x)


@pytest.mark.parametrize("codec", [VAEPatches(3, 8, 2, hidden=8), VQCodes(3, 8, codebook=16, hidden=8)])
def test_a_cached_codec_gives_its_batched_values(codec):
    codec.eval().requires_grad_(False)
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    batched = codec.encode(images)
    with cached_encodes(codec, 2**20) as cache:
        cached = codec.encode(images)
        assert torch.equal(codec.encode(images[[2, 1]]), cached[[2, 1]])
    assert codec.encode_cache is None and cache.hits == 2  # detached on exit
    if cached.is_floating_point():
        torch.testing.assert_close(cached, batched, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(cached, batched)


def test_no_cache_for_a_codec_without_weights():
    from unimm.models.image_io import PixelPatches

    with cached_encodes(PixelPatches(3, 8, 2), 2**20) as cache:
        assert cache is None


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_cached_run_reuses_encodes_resumes_exactly_and_keeps_the_ledger(edits_dir, tmp_path, capsys):
    """quick (a VAE codec) on edits, 8 steps of batch 8 over 40 training edits: images recur, so encodes are
    reused; killed after step 4 and resumed (an empty cache) it ends with the same losses and weights; the
    ledger counts the encoder as without the cache (the meter sets the cache aside on counted steps)."""
    extra = {"train.steps": 8, "train.save_every": 4, "train.flops_every": 3, "train.threads": 1,
             "model.max_seq_len": 144, "data.shift": 0}  # fmt: skip
    cached = tiny_preset(edits_dir, "quick", **extra, **{"train.encode_cache_mib": 16})
    straight = train(cached, tmp_path / "a", progress=False)
    reused = float(capsys.readouterr().out.split("MiB), ")[1].split("%")[0])
    assert reused > 20
    train_until(tiny_preset(edits_dir, "quick", **extra, **{"train.encode_cache_mib": 16}), tmp_path / "b", 4)
    resumed = train(cached, tmp_path / "b", resume=True, progress=False)
    assert _losses(straight) == _losses(resumed)
    a, b = load_weights(straight / "model.safetensors"), load_weights(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = train(tiny_preset(edits_dir, "quick", **extra), tmp_path / "c", progress=False)
    ledgers = [json.loads((run / "ledger.json").read_text()) for run in (straight, plain)]
    assert ledgers[0]["frozen_encoders"] == ledgers[1]["frozen_encoders"]
    assert ledgers[0]["training_steps"] == ledgers[1]["training_steps"]
    torch.testing.assert_close(torch.tensor(_losses(straight)), torch.tensor(_losses(plain)), rtol=1e-4, atol=1e-5)


def test_encode_cache_is_refused_under_bf16(digits_dir):
    from conftest import tiny_overrides

    with pytest.raises(ValueError, match="train.encode_cache_mib"):
        load_config(None, tiny_overrides(digits_dir, **{"train.encode_cache_mib": 64, "train.precision": '"bf16"'}))
