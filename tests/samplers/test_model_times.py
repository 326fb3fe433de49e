"""model_times: the times a sampler will pass to its model, known before it runs (MAR's head precomputes on them)."""

import pytest
import torch

from unimm.samplers.diffusion import model_times, sample
from unimm.samplers.schedules import DDPMSchedule


@pytest.mark.parametrize("name", ["ddpm", "ddim", "flow_euler", "flow_heun"])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_model_times_are_exactly_the_times_each_sampler_passes(name, steps):
    seen = []

    def model_fn(x, t):
        seen.extend(t.tolist())
        return torch.zeros_like(x)

    schedule = None if name.startswith("flow") else DDPMSchedule(1000, "cosine")
    kw = {"schedule": schedule} if schedule is not None else {}
    sample(name, model_fn, torch.randn(3, 4), num_steps=steps, generator=torch.Generator().manual_seed(0), **kw)
    times = model_times(name, steps, schedule)
    assert times.dtype == torch.float32 and bool((times[1:] > times[:-1]).all())
    assert sorted(set(seen)) == times.tolist()
