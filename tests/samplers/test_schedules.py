import pytest
import torch
from diffusers import DDPMScheduler

from unimm.samplers import DDPMSchedule, flow_interpolate, flow_timesteps, flow_velocity

CASES = [
    ("linear", "linear", 1e-4, 0.02),
    ("scaled_linear", "scaled_linear", 0.00085, 0.012),
    ("cosine", "squaredcos_cap_v2", 1e-4, 0.02),
]


@pytest.mark.parametrize("ours,theirs,beta_start,beta_end", CASES)
def test_betas_match_diffusers(ours, theirs, beta_start, beta_end):
    s = DDPMSchedule(1000, ours, beta_start, beta_end)
    ref = DDPMScheduler(1000, beta_start=beta_start, beta_end=beta_end, beta_schedule=theirs)
    assert s.betas.dtype == s.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(s.betas, ref.betas, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s.alphas, ref.alphas, rtol=1e-6, atol=1e-7)
    # diffusers accumulates the product in float32; ours in float64.
    torch.testing.assert_close(s.alphas_cumprod, ref.alphas_cumprod, rtol=2e-5, atol=1e-7)


def test_cosine_beta_cap():
    s = DDPMSchedule(1000, "cosine")
    assert s.betas.max().item() == pytest.approx(0.999)
    assert s.alphas_cumprod[-1] < 1e-6


def test_unknown_beta_schedule():
    with pytest.raises(ValueError, match="beta_schedule"):
        DDPMSchedule(beta_schedule="sigmoid")


@pytest.mark.parametrize("ours,theirs,beta_start,beta_end", CASES)
def test_add_noise_and_velocity_match_diffusers(ours, theirs, beta_start, beta_end):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 5, 6, generator=g), torch.randn(4, 3, 5, 6, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    s = DDPMSchedule(1000, ours, beta_start, beta_end)
    ref = DDPMScheduler(1000, beta_start=beta_start, beta_end=beta_end, beta_schedule=theirs)
    torch.testing.assert_close(s.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.velocity(x0, noise, t), ref.get_velocity(x0, noise, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_predict_x0_inverts_targets(prediction_type):
    s = DDPMSchedule(1000, "cosine")
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    t = torch.tensor([1, 300, 900])
    x_t = s.add_noise(x0, noise, t)
    target = {"epsilon": noise, "sample": x0, "v_prediction": s.velocity(x0, noise, t)}[prediction_type]
    torch.testing.assert_close(s.predict_x0(x_t, target, t, prediction_type), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.predict_eps(x_t, target, t, prediction_type), noise, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="prediction_type"):
        s.predict_x0(x_t, target, t, "x0")


def test_flow_interpolate_and_velocity():
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    t = torch.tensor([0.0, 0.25, 1.0])
    x_t = flow_interpolate(x0, noise, t)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[1], 0.75 * x0[1] + 0.25 * noise[1])
    torch.testing.assert_close(x_t[2], noise[2])
    # v is the time derivative of the interpolation path.
    dt = 1e-3
    fd = (flow_interpolate(x0, noise, t[1] + dt) - flow_interpolate(x0, noise, t[1] - dt)) / (2 * dt)
    torch.testing.assert_close(fd, flow_velocity(x0, noise), rtol=1e-3, atol=1e-3)


def test_flow_timesteps_shift():
    base = flow_timesteps(10)
    assert base.shape == (11,) and base.dtype == torch.float32
    torch.testing.assert_close(base, torch.linspace(1, 0, 11))
    shifted = flow_timesteps(10, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0
    assert torch.all(shifted[1:] < shifted[:-1])
    # shift > 1 keeps every interior step at higher noise; shift < 1 at lower noise.
    assert torch.all(shifted[1:-1] > base[1:-1])
    assert torch.all(flow_timesteps(10, shift=0.5)[1:-1] < base[1:-1])
    assert shifted[5].item() == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
