"""Every sampler driven by the ideal model for a point mass (all data = x_star) returns x_star."""

import pytest
import torch

from unimm.samplers import SAMPLER_OBJECTIVES, SAMPLERS, DDPMSchedule, classifier_free_guidance, sample

X_STAR = torch.tensor([[0.8, -0.5, 0.3, 1.2], [0.0, 0.4, -0.9, 0.1]])  # [C=2, N=4]


def diffusion_oracle(schedule: DDPMSchedule, prediction_type: str):
    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = schedule.alphas_cumprod[t.long()].view(-1, 1, 1)
        eps = (x_t - a.sqrt() * X_STAR) / (1 - a).sqrt()
        if prediction_type == "epsilon":
            return eps
        if prediction_type == "sample":
            return X_STAR.expand_as(x_t)
        return a.sqrt() * eps - (1 - a).sqrt() * X_STAR

    return model_fn


def flow_oracle(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # x_t = (1 - t) x* + t * noise  =>  v = noise - x* = (x_t - x*) / t
    return (x_t - X_STAR) / t.view(-1, 1, 1)


@pytest.fixture
def noise() -> torch.Tensor:
    return torch.randn(3, *X_STAR.shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,num_steps", [("ddpm", None), ("ddpm", 30), ("ddim", 10), ("ddim", 1)])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_diffusion_samplers_recover_point_mass(name, num_steps, prediction_type, beta_schedule, noise):
    schedule = DDPMSchedule(1000, beta_schedule)
    out = sample(
        name,
        diffusion_oracle(schedule, prediction_type),
        noise,
        schedule=schedule,
        num_steps=num_steps,
        generator=torch.Generator().manual_seed(1),
        prediction_type=prediction_type,
    )
    assert out.shape == noise.shape
    torch.testing.assert_close(out, X_STAR.expand_as(out), rtol=0, atol=2e-3)


def test_ddim_with_eta_recovers_point_mass(noise):
    schedule = DDPMSchedule(1000, "cosine")
    out = sample(
        "ddim", diffusion_oracle(schedule, "epsilon"), noise, schedule=schedule, num_steps=20,
        generator=torch.Generator().manual_seed(2), eta=1.0,
    )  # fmt: skip
    torch.testing.assert_close(out, X_STAR.expand_as(out), rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", ["flow_euler", "flow_heun"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("num_steps", [1, 8])
def test_flow_samplers_recover_point_mass(name, shift, num_steps, noise):
    out = sample(name, flow_oracle, noise, num_steps=num_steps, shift=shift)
    torch.testing.assert_close(out, X_STAR.expand_as(out), rtol=0, atol=1e-5)


def test_cfg_wrapped_oracle_still_recovers(noise):
    """Guidance on a model whose cond and uncond halves agree is a no-op, at any scale."""
    doubled = lambda x, t: flow_oracle(x, t)
    out = sample("flow_heun", classifier_free_guidance(doubled, 5.0), noise, num_steps=6)
    torch.testing.assert_close(out, X_STAR.expand_as(out), rtol=0, atol=1e-5)


def test_registry_and_errors(noise):
    assert set(SAMPLERS) == {"ddpm", "ddim", "flow_euler", "flow_heun"}
    assert SAMPLER_OBJECTIVES == {
        "ddpm": "diffusion",
        "ddim": "diffusion",
        "flow_euler": "flow",
        "flow_heun": "flow",
    }
    with pytest.raises(ValueError, match="allowed.*ddim"):
        sample("euler_a", flow_oracle, noise, num_steps=4)
    with pytest.raises(ValueError, match="needs a DDPMSchedule"):
        sample("ddim", flow_oracle, noise, num_steps=4)
    with pytest.raises(ValueError, match="takes no DDPMSchedule"):
        sample("flow_euler", flow_oracle, noise, schedule=DDPMSchedule(), num_steps=4)
    with pytest.raises(ValueError, match="pairs with objective 'flow'"):
        sample("flow_euler", flow_oracle, noise, num_steps=4, objective="diffusion")
    out = sample("flow_euler", flow_oracle, noise, num_steps=4, objective="flow")
    assert out.shape == noise.shape


def test_progress_bar_runs(noise, capsys):
    schedule = DDPMSchedule(100)
    out = sample("ddim", diffusion_oracle(schedule, "epsilon"), noise, schedule=schedule, num_steps=5, progress=True)
    assert out.shape == noise.shape
