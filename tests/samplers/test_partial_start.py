"""SDEdit-style starts (``init`` + ``strength``): a sampler runs only the last int(strength * steps) steps of its
schedule, from ``init`` noised to the first of them with the given noise; strength 1 is the plain sampler."""

import pytest
import torch

from unimm.samplers import DDPMSchedule, sample
from unimm.samplers.diffusion import ddpm_timesteps, kept_steps
from unimm.samplers.schedules import flow_timesteps

SCHEDULE = DDPMSchedule(1000, "cosine")


def _run(name: str, model_fn, noise, init, strength, steps: int = 10):
    kw = {"init": init, "strength": strength} if init is not None else {}
    schedule = None if name.startswith("flow") else SCHEDULE
    gen = torch.Generator().manual_seed(0)
    return sample(name, model_fn, noise, schedule=schedule, num_steps=steps, generator=gen, **kw)


@pytest.mark.parametrize("name", ["flow_euler", "flow_heun", "ddim", "ddpm"])
def test_strength_one_is_the_plain_sampler(name):
    noise, init = torch.randn(2, 3, 4), torch.randn(2, 3, 4)

    def model_fn(x, t):
        return 0.3 * x + 0.01 * t.view(-1, 1, 1)

    torch.testing.assert_close(_run(name, model_fn, noise, init, 1.0), _run(name, model_fn, noise, None, 1.0))


@pytest.mark.parametrize("strength,kept", [(0.35, 3), (0.5, 5), (0.05, 1), (1.0, 10)])
def test_flow_starts_at_the_kept_steps_first_time(strength, kept):
    """A zero velocity leaves the start point as the result: (1 - t0) init + t0 noise, t0 the first kept time."""
    noise, init, times = torch.randn(2, 3, 4), torch.randn(2, 3, 4), []
    out = _run("flow_euler", lambda x, t: times.append(float(t[0])) or torch.zeros_like(x), noise, init, strength)
    t0 = float(flow_timesteps(10)[-kept - 1])
    assert kept_steps(10, strength) == kept and len(times) == kept and times[0] == pytest.approx(t0)
    torch.testing.assert_close(out, (1 - t0) * init + t0 * noise)


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_ddpm_samplers_start_from_the_forward_process_at_the_first_kept_step(name):
    noise, init, seen = torch.randn(2, 3, 4), torch.randn(2, 3, 4), []

    def model_fn(x, t):
        seen.append((int(t[0]), x.clone()))
        return torch.zeros_like(x)

    _run(name, model_fn, noise, init, 0.3)
    first = ddpm_timesteps(1000, 10)[-3]
    assert [t for t, _ in seen] == ddpm_timesteps(1000, 10)[-3:]
    torch.testing.assert_close(seen[0][1], SCHEDULE.add_noise(init, noise, torch.full((2,), first)))


def test_an_ideal_model_still_lands_on_its_data_from_a_part_way_start():
    """Started from another point at strength 0.4, the flow oracle of a point mass returns the point mass."""
    x_star = torch.tensor([[0.8, -0.5, 0.3, 1.2]])
    oracle = lambda x, t: (x - x_star) / t.view(-1, 1, 1)  # noqa: E731
    out = _run("flow_euler", oracle, torch.randn(3, 1, 4), torch.ones(3, 1, 4), 0.4)
    torch.testing.assert_close(out, x_star.expand(3, 1, 4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.5])
def test_a_strength_outside_zero_one_fails(strength):
    with pytest.raises(ValueError, match="strength must be in"):
        _run("flow_euler", lambda x, t: x, torch.randn(1, 2), torch.randn(1, 2), strength)
