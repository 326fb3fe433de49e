"""The fixed-shape decoder (static cache, compiled step) gives the growing-cache decoder's tokens."""

from pathlib import Path

import pytest
import torch

from unimm.nn import onednn_linear, packed_linear
from unimm.nn.backbone import Backbone, BackboneConfig
from unimm.nn.kv_cache import StaticKVCache
from unimm.nn.static_decoding import StaticDecoder
from unimm.samplers.text import select_next


def _model(seed: int) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(BackboneConfig(vocab_size=61, dim=32, depth=2, heads=4, kv_heads=2, hidden_dim=48)).eval()


def _reference(model: Backbone, prompt: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy decoding with the growing KVCache (itself tested against uncached decoding)."""
    cache = model.new_cache(prompt.shape[1] + n)
    out = [select_next(model.lm_logits(prompt, cache)[:, -1])]
    for _ in range(n - 1):
        out.append(select_next(model.lm_logits(out[-1][:, None], cache)[:, -1]))
    return torch.stack(out, 1)


@pytest.mark.parametrize("compile", [False, True])
def test_static_decoder_gives_the_cached_tokens(compile):
    model, prompt = _model(0), torch.randint(0, 61, (3, 5), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = _reference(model, prompt, 12)
        dec = StaticDecoder(model, 3, 17, compile=compile)
        assert torch.equal(dec.generate(prompt, 12), expected)
        assert torch.equal(dec.generate(prompt, 12), expected)  # reused after a reset: nothing left over


def test_compiled_step_follows_the_weights():
    """The compiled step is shared by decoders of one shape: it must read each model's current weights, not a
    copy frozen at compile time (another model, or the same one after an update, would decode wrongly)."""
    prompt = torch.randint(0, 61, (3, 5), generator=torch.Generator().manual_seed(2))  # the shape above: one compile
    a, b = _model(0), _model(1)
    with torch.inference_mode():
        dec_a = StaticDecoder(a, 3, 17)
        for model, dec in ((a, dec_a), (b, StaticDecoder(b, 3, 17))):
            assert torch.equal(dec.generate(prompt, 12), _reference(model, prompt, 12))
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(-1.5)
    with torch.inference_mode():
        expected = _reference(a, prompt, 12)
        assert torch.equal(dec_a.generate(prompt, 12), expected)  # the decoder's weight copies are refreshed
        assert torch.equal(StaticDecoder(a, 3, 17).generate(prompt, 12), expected)


def test_static_decoder_refuses_overflow():
    model = _model(0)
    dec = StaticDecoder(model, 1, 6, compile=False)
    with torch.inference_mode():
        dec.prefill(torch.zeros(1, 5, dtype=torch.long))
        dec.step(torch.zeros(1, dtype=torch.long))
        with pytest.raises(ValueError, match="full"):
            dec.step(torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed max_len"):
        dec.generate(torch.zeros(1, 4, dtype=torch.long), 3)


def test_static_cache_has_no_int_length():
    cache = StaticKVCache(2, 8)
    with pytest.raises(AttributeError, match="attention mask"):
        _ = cache.length


def test_one_query_attention_is_sdpa_over_the_written_slots():
    """The static step's written-out attention equals SDPA with grouped heads and a mask of written slots."""
    import torch.nn.functional as F

    from unimm.nn.attention import one_query_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(3, 8, 1, 16, generator=g),
        torch.randn(3, 2, 10, 16, generator=g),
        torch.randn(3, 2, 10, 16, generator=g),
    )
    mask = torch.arange(10)[None, None, :] < torch.tensor([4, 7, 10])[:, None, None]  # [B, 1, S]: slots written
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=True)
    torch.testing.assert_close(one_query_attention(q, k, v, mask), want)


def test_packed_step_gives_the_cached_tokens():
    """Batch 3 packs its weights for oneDNN (the default from PACKED_MIN_ROWS rows); forced off, MKL's products:
    both decode the reference tokens."""
    model, prompt = _model(0), torch.randint(0, 61, (3, 5), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = _reference(model, prompt, 12)
        for packed in (True, False):
            dec = StaticDecoder(model, 3, 17, packed=packed)
            assert dec.packed == (packed and packed_linear.available())
            assert torch.equal(dec.generate(prompt, 12), expected)


@pytest.mark.skipif(not packed_linear.available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize(
    "vendor, capability, packs",
    [("AuthenticAMD", "AVX512", True), ("GenuineIntel", "AVX512", False), ("AuthenticAMD", "AVX2", False)],
)
def test_default_packs_only_where_onednn_beats_blas(monkeypatch, vendor, capability, packs):
    """The default: oneDNN's packed products from PACKED_MIN_ROWS rows where the CPU has AVX-512 that MKL leaves
    unused (not an Intel CPU), MKL's elsewhere; batch 1 never packs."""
    monkeypatch.setattr(onednn_linear, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    onednn_linear.beats_blas.cache_clear()
    try:
        model = _model(0)
        assert StaticDecoder(model, 3, 17, compile=False).packed == (packs and packed_linear.available())
        assert not StaticDecoder(model, 1, 17, compile=False).packed
    finally:
        onednn_linear.beats_blas.cache_clear()


def test_cpu_vendor_reads_proc_cpuinfo():
    vendor = onednn_linear.cpu_vendor()
    assert isinstance(vendor, str) and (vendor or not Path("/proc/cpuinfo").exists())


@pytest.mark.skipif(not packed_linear.available(), reason="this torch build has no oneDNN")
def test_the_compiled_packed_step_finds_its_packs(monkeypatch):
    """Inside the compiled step each product looks its pack up by the weight it is handed: every lookup must hit
    (a miss falls back to MKL silently, same tokens, no speed-up)."""

    class Counting(dict):
        hits = misses = 0

        def get(self, key, default=None):
            found = super().get(key, default)
            if found is None:
                Counting.misses += 1
            else:
                Counting.hits += 1
            return found

    monkeypatch.setattr(packed_linear, "_PACKS", Counting())
    model, prompt = _model(0), torch.randint(0, 61, (3, 5), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        StaticDecoder(model, 3, 17, packed=True).generate(prompt, 4)
    assert Counting.misses == 0 and Counting.hits == 3 * (2 * 4 + 1)  # 3 steps x (4 products a layer + the head)


def test_row_linears_rewrite_only_one_row_products():
    """Under RowLinears a one-row ``F.linear`` is the multiply-and-sum (same values, bias or not); two rows go
    to ``F.linear`` untouched."""
    import torch.nn.functional as F

    from unimm.nn.row_linear import RowLinears

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(24, 40, generator=g), torch.randn(24, generator=g)
    calls = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    for shape in ((1, 40), (1, 1, 40), (2, 40)):
        x = torch.randn(*shape, generator=g)
        for bias in (None, b):
            calls.clear()
            with Spy(), RowLinears():
                got = F.linear(x, w, bias)
            torch.testing.assert_close(got, F.linear(x, w, bias))
            assert (F.linear in calls) == (shape == (2, 40))  # the inner mode sees F.linear only where left alone


def test_one_row_compiled_step_gives_the_cached_tokens():
    """Batch 1, compiled: the products run as RowLinears' multiply-and-sum (the default); forced off, MKL's
    ``sgemv``: both decode the reference tokens."""
    model, prompt = _model(0), torch.randint(0, 61, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = _reference(model, prompt, 12)
        for rows in (None, False):
            dec = StaticDecoder(model, 1, 17, rows=rows)
            assert dec.linears == ("mm" if rows is False else "rows")
            assert torch.equal(dec.generate(prompt, 12), expected)
        assert StaticDecoder(model, 1, 17, compile=False).linears == "mm"  # eager would materialise x * Wt


def test_more_decoder_shapes_than_dynamo_default_limit():
    """Each (batch, max_len) is one more compiled graph of the same step: a process may meet more than dynamo's
    default 8 without the ninth failing (the step compiles with fullgraph)."""
    model = _model(0)
    with torch.inference_mode():
        for max_len in range(9, 19):  # 10 shapes of their own, on top of the others of this process
            prompt = torch.randint(0, 61, (1, 5), generator=torch.Generator().manual_seed(max_len))
            assert torch.equal(StaticDecoder(model, 1, max_len).generate(prompt, 3), _reference(model, prompt, 3))


def test_steps_after_the_first_skip_guards_yet_decoders_of_other_shapes_interleave(monkeypatch):
    """After a decoder's first step, steps in the same state run with dynamo's guards skipped (only those telling
    the compiled graphs apart): decoders of three shapes stepping in turn still decode their own tokens; a step in
    another grad mode runs every guard again."""
    stances = []
    set_stance = torch.compiler.set_stance
    monkeypatch.setattr(torch.compiler, "set_stance", lambda *a, **k: stances.append(k) or set_stance(*a, **k))
    model = _model(0)
    shapes = [(1, 19), (2, 19), (1, 23)]  # lengths of their own: graphs compiled here, after the others
    prompts = [torch.randint(0, 61, (b, 5), generator=torch.Generator().manual_seed(b + n)) for b, n in shapes]
    with torch.inference_mode():
        decoders = [StaticDecoder(model, b, n) for b, n in shapes]
        tokens = [[dec.prefill(p).argmax(-1)] for dec, p in zip(decoders, prompts, strict=True)]
        for _ in range(9):
            for dec, out in zip(decoders, tokens, strict=True):
                out.append(dec.step(out[-1]).argmax(-1))
        for p, out in zip(prompts, tokens, strict=True):
            assert torch.equal(torch.stack(out, 1), _reference(model, p, 10))
    assert len(stances) == 3 * 8 and all(k == {"skip_guard_eval_unsafe": True} for k in stances)
    dec = decoders[0]
    with torch.no_grad():  # not the state the last full-guard step saw
        before = len(stances)
        dec.step(tokens[0][-1])
        assert len(stances) == before and dec.guarded == dec._state(tokens[0][-1])
