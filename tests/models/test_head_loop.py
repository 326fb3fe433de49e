"""models/head_loop.py: MAR's head sampler as one C call gives what the PyTorch steps give."""

import pytest
import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel, head_loop
from unimm.models.diffusion_head import DiffusionHead
from unimm.objectives.image_diffusion import DDPMObjective, FlowObjective
from unimm.samplers.affine import coefficients, step_noise
from unimm.samplers.guidance import guide
from unimm.tokenizers.text import TextTokenizer

needs_loop = pytest.mark.skipif(not head_loop.available(), reason="no C compiler built the fused head loop")


def _head(width: int = 32, depth: int = 2, patch: int = 5) -> DiffusionHead:
    torch.manual_seed(0)
    head = DiffusionHead(patch_dim=patch, cond_dim=12, width=width, depth=depth).eval()
    for p in head.parameters():  # the zero-initialised gates and output would hide most of the head
        torch.nn.init.normal_(p, std=0.2)
    return head


def _both(head, objective, sampler, rows, guided, threads, **kw):
    """(PyTorch steps, fused loop) from the same noise, and whether both left the generator in one state."""
    steps = 10
    times = objective.sampler_times(sampler, steps)
    z = torch.randn(2 * rows if guided else rows, 12)
    scale = 2.5 if guided else None
    x = torch.randn(rows, head.out.out_features)
    with torch.no_grad():
        conditioned = head.prepared(objective.level(times)).condition(z)
        assert conditioned.loops

        def fn(x_t, t):
            i = torch.searchsorted(times, t[:1])
            return guide(conditioned.run(torch.cat([x_t, x_t]), i), scale) if guided else conditioned.run(x_t, i)

        g_ref, g_loop = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        expected = objective.run_sampler(sampler, fn, x, steps, g_ref, **kw)
        plan = objective.affine_steps(sampler, steps, **kw)
        index = torch.searchsorted(times, torch.tensor([s.t for s in plan]))
        noise = step_noise(plan, x, g_loop)
        got = head_loop.run(x, conditioned.prepared.loop_weights(), conditioned.table, index, coefficients(plan),
                            noise, scale, threads=threads)  # fmt: skip
    return expected, got, torch.equal(g_ref.get_state(), g_loop.get_state())


@needs_loop
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("guided", "rows"), [(True, 3), (False, 3), (False, 4), (True, 1)])
def test_fused_loop_equals_the_pytorch_steps(guided, rows, threads):
    expected, got, same_draws = _both(_head(), DDPMObjective(), "ddpm", rows, guided, threads, temperature=0.8)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert same_draws


@needs_loop
@pytest.mark.parametrize(("guided", "rows"), [(True, 5), (False, 7)])
def test_fused_loop_gives_the_same_bits_at_any_thread_count(guided, rows):
    """Rows are split over the threads in blocks that share weight loads; a row's sums run in one order whatever its
    block and thread, so every thread count gives the same bits (width 80: both column paths of the products)."""
    outs = []
    for threads in (1, 2, 3, 5):
        expected, got, _ = _both(_head(width=80), DDPMObjective(), "ddpm", rows, guided, threads, temperature=0.8)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        outs.append(got)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])


@needs_loop
@pytest.mark.parametrize(("objective", "sampler"), [(DDPMObjective(prediction="v_prediction"), "ddim"),
                                                    (FlowObjective(), "flow_euler")])  # fmt: skip
def test_fused_loop_runs_other_affine_samplers(objective, sampler):
    expected, got, same_draws = _both(_head(width=48, depth=3, patch=4), objective, sampler, 2, True, 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert same_draws


def test_heads_the_loop_does_not_take_keep_the_pytorch_steps():
    with torch.no_grad():
        odd = _head(width=24).prepared(torch.rand(4)).condition(torch.randn(4, 12))
        assert not odd.loops  # the loop's products need a width that is a multiple of 16
        large = _head().prepared(torch.rand(4)).condition(torch.randn(4, 12), loop_table_limit=0, table_limit=0)
        assert not large.loops and large.table is None  # modulations computed per step (large batches)
        small = _head().prepared(torch.rand(4)).condition(torch.randn(4, 12), onednn_min_rows=1, onednn=True)
        assert small.loops == head_loop.available() and small.onednn != small.loops  # no packing for the loop


def test_without_a_compiler_the_loop_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("UNIMM_KERNEL_CACHE", str(tmp_path / "kernels"))
    head_loop._library.cache_clear()
    try:
        assert not head_loop.available()
        with pytest.raises(RuntimeError, match="not available"):
            head_loop.run(torch.zeros(1, 1), {}, torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), None)
        monkeypatch.delenv("CC")
        monkeypatch.setenv("UNIMM_KERNELS", "0")
        head_loop._library.cache_clear()
        assert not head_loop.available()  # switched off
    finally:
        head_loop._library.cache_clear()


@needs_loop
def test_the_kernel_is_built_once_per_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIMM_KERNEL_CACHE", str(tmp_path))
    head_loop._library.cache_clear()
    try:
        assert head_loop.available()
        built = sorted(tmp_path.glob("head_loop-*.so"))
        assert len(built) == 1 and sorted(tmp_path.glob("*.so")) == built  # no temporary file left behind
        stamp = built[0].stat().st_mtime_ns
        head_loop._library.cache_clear()
        assert head_loop.available() and built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        head_loop._library.cache_clear()


@needs_loop
def test_mar_generate_runs_each_group_in_one_loop_call_and_draws_the_pytorch_images(digits_dir, monkeypatch):
    """A MAR model's images with the fused loop equal (within float rounding) those of the PyTorch steps, from the
    same seed; each group is one loop call."""
    over = {"codec": '{kind = "pixels", patch_size = 2}', "sample.head_steps": 3, "writer.head_dim": 32}
    texts = ["a handwritten seven", "seven", "the digit 7"]
    torch.manual_seed(0)
    model = UnifiedModel(tiny_preset(digits_dir, "mar", **over), TextTokenizer.train(texts, 300))
    model.prepare(torch.rand(16, 1, 8, 8) * 2 - 1, progress=False, captions=texts * 4)
    model.eval()
    calls = []
    run = head_loop.run
    monkeypatch.setattr(head_loop, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    prompts = ["a handwritten seven", "seven"]
    fused = model.generate(prompts, cfg_scale=2.0, steps=3, generator=torch.Generator().manual_seed(4))
    assert len(calls) == 3
    monkeypatch.setattr(head_loop, "_library", lambda: None)  # as without a C compiler
    steps = model.generate(prompts, cfg_scale=2.0, steps=3, generator=torch.Generator().manual_seed(4))
    assert len(calls) == 3
    torch.testing.assert_close(fused, steps, rtol=1e-4, atol=1e-4)


def test_an_unwritable_kernel_cache_leaves_the_pytorch_steps(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("UNIMM_KERNEL_CACHE", str(blocker / "kernels"))  # cannot be created under a file
    head_loop._library.cache_clear()
    try:
        assert not head_loop.available()
    finally:
        head_loop._library.cache_clear()
