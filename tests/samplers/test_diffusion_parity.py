"""Per-step and whole-trajectory numerics against diffusers' schedulers (the reference implementation)."""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)

from unimm.samplers import (
    DDPMSchedule,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    ddpm_step,
    ddpm_timesteps,
    flow_euler_sample,
    flow_heun_sample,
    flow_heun_step,
    flow_timesteps,
)

T = 1000
SHAPE = (2, 3, 4, 4)


def ref_ddpm(prediction_type="epsilon", beta_schedule="linear"):
    return DDPMScheduler(
        T,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        variance_type="fixed_small",
    )


def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Fixed fake model: smooth in x and t, batch-dependent through t."""
    return 0.5 * x + 0.1 * torch.sin(t / 100.0).view(-1, *[1] * (x.dim() - 1))


@pytest.mark.parametrize("num_inference_steps", [T, 50, 7])
def test_ddpm_timesteps_match_diffusers(num_inference_steps):
    for cls in (DDPMScheduler, DDIMScheduler):
        ref = cls(T)
        ref.set_timesteps(num_inference_steps)
        assert ddpm_timesteps(T, num_inference_steps) == ref.timesteps.tolist()


def as_float64(ref):
    """Make a diffusers scheduler compute in float64 on our float64 alphas_cumprod (formula-level parity).

    Single-step DDPM coefficients use ``1 - a_t / a_{t-1}``, which float32 cumprods get wrong by ~1e-4
    (relative) near t = 0 (diffusers' own float32 values included), so exact parity is checked in float64.
    """
    ref.alphas_cumprod = DDPMSchedule(T, REF_NAMES_INV[ref.config.beta_schedule]).alphas_cumprod_f64
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    return ref


REF_NAMES_INV = {"linear": "linear", "squaredcos_cap_v2": "cosine"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("num_inference_steps", [None, T, 50])
def test_ddpm_step_matches_diffusers(prediction_type, num_inference_steps, dtype):
    cosine = prediction_type == "v_prediction"
    ref = ref_ddpm(prediction_type, "squaredcos_cap_v2" if cosine else "linear")
    s = DDPMSchedule(T, "cosine" if cosine else "linear")
    if num_inference_steps is None:  # no set_timesteps: diffusers steps t -> t - 1
        pairs = [(999, 998), (500, 499), (1, 0), (0, -1)]
    else:
        ref.set_timesteps(num_inference_steps)
        ts = ref.timesteps.tolist() + [-1]
        pairs = [(ts[i], ts[i + 1]) for i in (0, 1, len(ts) // 2, len(ts) - 3, len(ts) - 2)]
    if dtype == torch.float64:
        ref, tol = as_float64(ref), 1e-10
    else:  # stock float32 diffusers, where its coefficients are well conditioned
        pairs, tol = [(t, p) for t, p in pairs if t >= 100], 1e-5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g, dtype=dtype)
    for t, prev_t in pairs:
        out = eps_model(x, torch.full((SHAPE[0],), float(t), dtype=dtype))
        # Same seed on both sides: diffusers draws its variance noise as torch.randn(shape, generator).
        expected = ref.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        got = ddpm_step(
            s,
            out,
            t,
            x,
            prev_t=prev_t,
            prediction_type=prediction_type,
            generator=torch.Generator().manual_seed(t),
        )
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)

        # Deterministic mean and the noise scale separately.
        z = torch.randn(SHAPE, generator=g, dtype=dtype)
        mean = ddpm_step(s, out, t, x, prev_t=prev_t, prediction_type=prediction_type, noise=torch.zeros_like(z))
        noisy = ddpm_step(s, out, t, x, prev_t=prev_t, prediction_type=prediction_type, noise=z)
        if t > 0:
            std = (ref._get_variance(t) ** 0.5).item()
            torch.testing.assert_close(noisy - mean, std * z, rtol=1e-4, atol=1e-6)
        else:
            torch.testing.assert_close(noisy, mean)


def test_ddpm_clip_sample_matches_diffusers():
    ref = DDPMScheduler(T, clip_sample=True, clip_sample_range=1.0)
    s = DDPMSchedule(T)
    x = 3 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    out = eps_model(x, torch.full((SHAPE[0],), 400.0))
    expected = ref.step(out, 400, x, generator=torch.Generator().manual_seed(5)).prev_sample
    got = ddpm_step(s, out, 400, x, clip_sample=1.0, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(got, ddpm_step(s, out, 400, x, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ddpm_sample_trajectory_matches_diffusers():
    ref = ref_ddpm()
    ref.set_timesteps(25)
    s = DDPMSchedule(T)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    g_ref = torch.Generator().manual_seed(3)
    x = noise
    for t in ref.timesteps:
        x = ref.step(eps_model(x, t.float().expand(SHAPE[0])), t, x, generator=g_ref).prev_sample
    got = ddpm_sample(eps_model, noise, s, num_steps=25, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_trajectory_matches_diffusers(prediction_type):
    ref = DDIMScheduler(T, clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type=prediction_type)
    ref.set_timesteps(20)
    s = DDPMSchedule(T)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    x = noise
    for t in ref.timesteps:
        x = ref.step(eps_model(x, t.float().expand(SHAPE[0])), t, x, eta=0.0).prev_sample
    got = ddim_sample(eps_model, noise, s, num_steps=20, eta=0.0, prediction_type=prediction_type)
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_ddim_eta_step_matches_diffusers():
    ref = DDIMScheduler(T, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    ref.set_timesteps(20)
    s = DDPMSchedule(T)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(6))
    out = eps_model(x, torch.full((SHAPE[0],), 450.0))
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    expected = ref.step(out, 450, x, eta=0.7, variance_noise=z).prev_sample
    torch.testing.assert_close(ddim_step(s, out, 450, 400, x, eta=0.7, noise=z), expected, rtol=1e-5, atol=1e-5)


A = torch.tensor([[0.3, -0.2, 0.1], [0.05, 0.4, -0.3], [0.2, 0.1, -0.5]])


def linear_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Fixed fake flow model linear in x and t. ``x: [B, 3, N]``, ``t: [B]`` in [0, 1]."""
    return torch.einsum("ij,bjn->bin", A, x) + 0.7 * t.view(-1, 1, 1) - 0.2


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_euler_trajectory_matches_diffusers(shift):
    n = 12
    ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=shift)
    # Our grid is linspace(1, 0) shifted; hand diffusers the same unshifted sigmas (it shifts them itself).
    ref.set_timesteps(sigmas=np.linspace(1.0, 0.0, n + 1)[:-1].tolist())
    torch.testing.assert_close(ref.sigmas, flow_timesteps(n, shift), rtol=1e-6, atol=1e-6)

    noise = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(8))
    x = noise
    for t in ref.timesteps:
        x = ref.step(linear_velocity(x, (t / T).expand(4)), t, x).prev_sample
    got = flow_euler_sample(linear_velocity, noise, num_steps=n, shift=shift)
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_heun_trajectory_matches_diffusers(shift):
    n = 10
    ref = FlowMatchHeunDiscreteScheduler(num_train_timesteps=T, shift=shift)
    ref.set_timesteps(n)
    noise = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(9))
    x = noise
    for t in ref.timesteps:
        x = ref.step(linear_velocity(x, (t / T).expand(4)), t, x).prev_sample
    # diffusers stores each interior sigma twice (Heun's two stages); walk the same distinct grid.
    sigmas = torch.cat([ref.sigmas[:1], ref.sigmas[1:-1:2], ref.sigmas[-1:]]).tolist()
    assert len(sigmas) == n + 1 and sigmas[-1] == 0.0
    got = noise
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        got = flow_heun_step(linear_velocity, got, sigma, sigma_next)
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_flow_heun_exact_for_linear_in_time_velocity():
    """For v = a + b*t the solution is quadratic in t: Heun (trapezoid) steps are exact, Euler's are not."""
    a, b = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 3.0]])
    model = lambda x, t: a + b * t.view(-1, 1)
    exact = lambda x1, t: x1 - a * (1 - t) - 0.5 * b * (1 - t**2)  # x(1) = x1
    x1 = torch.tensor([[0.3, 0.1]])
    x = x1
    for sigma, sigma_next in [(1.0, 0.6), (0.6, 0.25)]:
        x = flow_heun_step(model, x, sigma, sigma_next)
    torch.testing.assert_close(x, exact(x1, 0.25), rtol=1e-6, atol=1e-6)
    euler = flow_euler_sample(model, x1, num_steps=4)
    assert (euler - exact(x1, 0.0)).abs().max() > 1e-2
    # Full sampler: exact until the last step, which is Euler to 0 (one model call at sigma_last).
    n = 4
    last = flow_timesteps(n)[-2].item()
    expected = exact(x1, last) - last * (a + b * last)
    torch.testing.assert_close(flow_heun_sample(model, x1, num_steps=n), expected, rtol=1e-6, atol=1e-6)
