"""Image objectives: corruption, targets and noise levels."""

import torch

from unimm.objectives import DDPMObjective, FlowObjective
from unimm.settings import DENOISERS


def test_flow_corrupt_and_target():
    obj = FlowObjective()
    x0, noise, t = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5)
    x_t, v = obj.corrupt(x0, noise, t)
    torch.testing.assert_close(x_t, (1 - t[:, None]) * x0 + t[:, None] * noise)
    torch.testing.assert_close(v, noise - x0)
    torch.testing.assert_close(x_t - t[:, None] * v, x0)  # following v back to t = 0 recovers x0


def test_ddpm_targets_per_prediction_type():
    x0, noise = torch.randn(4, 2), torch.randn(4, 2)
    t = torch.tensor([0, 10, 500, 999])
    eps = DDPMObjective(1000, "linear", "epsilon")
    x_t, target = eps.corrupt(x0, noise, t)
    a = eps.schedule.alphas_cumprod[t][:, None]
    torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    torch.testing.assert_close(target, noise)
    torch.testing.assert_close(DDPMObjective(1000, "linear", "sample").corrupt(x0, noise, t)[1], x0)
    v = DDPMObjective(1000, "linear", "v_prediction").corrupt(x0, noise, t)[1]
    torch.testing.assert_close(v, a.sqrt() * noise - (1 - a).sqrt() * x0)


def test_levels_are_in_unit_interval_and_zero_means_clean():
    ddpm = DDPMObjective(100)
    torch.testing.assert_close(ddpm.level(torch.tensor([0, 99])), torch.tensor([0.01, 1.0]))
    assert ddpm.time_at(torch.tensor([0.0, 1.0])).tolist() == [0, 99]
    assert FlowObjective().level(torch.tensor([0.0, 0.5])).tolist() == [0.0, 0.5]


def test_build_from_config():
    assert isinstance(DENOISERS.build(DENOISERS.validate({"kind": "flow"}, "denoiser")), FlowObjective)
    settings = DENOISERS.validate({"kind": "ddpm", "timesteps": 50, "prediction": "v_prediction"}, "denoiser")
    obj = DENOISERS.build(settings)
    assert isinstance(obj, DDPMObjective) and obj.schedule.num_train_timesteps == 50
    assert obj.prediction == "v_prediction"


def test_flow_time_is_uniform_by_default_or_logit_normal_from_the_config():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    uniform = DENOISERS.build(DENOISERS.validate({"kind": "flow"}, "denoiser"))
    torch.testing.assert_close(uniform.sample_time(8, g()), torch.rand(8, generator=g()))  # the presets' draws
    settings = DENOISERS.validate({"kind": "flow", "time": "logit-normal", "logit_mean": 0.5}, "denoiser")
    t = DENOISERS.build(settings).sample_time(20_000, g())
    torch.testing.assert_close(t, torch.sigmoid(0.5 + torch.randn(20_000, generator=g())))
    assert 0 < t.min() and t.max() < 1 and abs(t.median() - torch.sigmoid(torch.tensor(0.5))) < 0.01
    middle = ((t > 0.25) & (t < 0.75)).float().mean()  # more of the middle than uniform's 50 %
    assert middle > 0.6
