"""samplers/affine.py: a sampler written as affine steps runs the same trajectory as the sampler itself."""

import pytest
import torch

from unimm.samplers.affine import affine_steps, coefficients, step_noise
from unimm.samplers.diffusion import sample
from unimm.samplers.schedules import DDPMSchedule


def _model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear stand-in for a denoiser (depends on x and t, so each step's output matters)."""
    return torch.tanh(0.7 * x + t[:, None] / 1000) + 0.1 * x.roll(1, -1)


def _run_affine(steps, x, generator):
    noise = step_noise(steps, x, generator)
    for step, (a, b, c), n in zip(steps, coefficients(steps).tolist(), noise, strict=True):
        x = a * x + b * _model(x, torch.full((x.shape[0],), step.t)) + c * n
    return x


CASES = [
    ("ddpm", "epsilon", {"temperature": 1.0}),
    ("ddpm", "epsilon", {"temperature": 0.7}),
    ("ddpm", "v_prediction", {"temperature": 0.9}),
    ("ddpm", "sample", {}),
    ("ddim", "epsilon", {}),
    ("ddim", "v_prediction", {"eta": 0.5}),
    ("flow_euler", None, {}),
    ("flow_euler", None, {"shift": 3.0}),
]


@pytest.mark.parametrize(("name", "prediction", "kw"), CASES)
def test_affine_steps_follow_the_sampler_and_draw_the_same_noise(name, prediction, kw):
    schedule = None if name.startswith("flow") else DDPMSchedule(1000, "cosine")
    extra = {} if prediction is None else {"prediction_type": prediction}
    steps = affine_steps(name, 12, schedule, **extra, **kw)
    assert steps is not None and len(steps) == 12
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    g_ref, g_aff = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = sample(name, _model, x, schedule=schedule, num_steps=12, generator=g_ref, **extra, **kw)
    got = _run_affine(steps, x, g_aff)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the same number of draws in the same shapes: both generators end in the same state
    assert torch.equal(g_ref.get_state(), g_aff.get_state())


def test_samplers_that_are_not_affine_give_none():
    schedule = DDPMSchedule(1000, "cosine")
    assert affine_steps("flow_heun", 8) is None  # two model calls a step
    assert affine_steps("ddpm", 8, schedule, clip_sample=1.0) is None  # x0 clipped
    assert affine_steps("ddpm", 8, None) is None  # no schedule to read
    assert affine_steps("ddim", 8, schedule, temperature=0.5) is None  # an option the sampler does not take


def test_a_runs_steps_are_computed_once():
    schedule = DDPMSchedule(1000, "cosine")
    assert affine_steps("ddpm", 50, schedule, temperature=1.0) is affine_steps("ddpm", 50, schedule, temperature=1.0)
