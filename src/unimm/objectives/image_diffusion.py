"""Continuous image objectives on latent patches: DDPM (epsilon / v / x0 prediction) and flow matching.

Each objective draws a noise level per image, corrupts the clean patches, names the regression
target, maps its native time to a noise level ``s`` in [0, 1] for the timestep embedding, and
runs its paired sampler. ``s = 0`` always means a clean image (what the model reads when it
captions).
"""

from typing import Literal, Protocol

import torch
from pydantic import Field

from unimm.samplers.affine import AffineStep, affine_steps
from unimm.samplers.diffusion import model_times, sample
from unimm.samplers.schedules import DDPMSchedule, flow_interpolate, flow_velocity
from unimm.settings import DENOISERS, Settings


class ImageObjective(Protocol):
    """The denoiser contract: what latent / mar / connector writers call."""

    name: str
    samplers: tuple[str, ...]  # the samplers that pair with it, the default first

    def sample_time(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def time_at(self, fraction: torch.Tensor) -> torch.Tensor: ...
    def corrupt(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def level(self, t: torch.Tensor) -> torch.Tensor: ...
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def row_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def run_sampler(self, sampler: str, model_fn, noise: torch.Tensor, steps: int, generator=None, **kw): ...
    def sampler_times(self, sampler: str, steps: int, **kw) -> torch.Tensor: ...
    def affine_steps(self, sampler: str, steps: int, **kw) -> tuple[AffineStep, ...] | None: ...


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean squared error over every generated patch element (fp32), and its metric."""
    loss = torch.nn.functional.mse_loss(pred.float(), target.float())
    return loss, {"image_loss": loss.detach()}


def regression_row_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target [M, ...] -> [M]: the squared error of each row, averaged over its elements (fp32); for rows
    of one size their mean is ``regression_loss``."""
    return (pred.float() - target.float()).square().flatten(1).mean(1)


class DDPMSettings(Settings):
    """``denoiser.kind = "ddpm"``: a discrete noise schedule (DDPM; sampled by DDIM or DDPM)."""

    kind: Literal["ddpm"] = "ddpm"
    prediction: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    timesteps: int = Field(1000, gt=0)
    beta_schedule: Literal["linear", "cosine", "scaled_linear"] = "cosine"


class FlowSettings(Settings):
    """``denoiser.kind = "flow"``: rectified flow (sampled by Euler or Heun). ``time`` is how training draws t:
    ``uniform`` on [0, 1], or ``logit-normal``, t = sigmoid(m + s * n) with n ~ N(0, 1) (Esser et al. 2024,
    Stable Diffusion 3, section 3.1: m = 0, s = 1 was among their best), which trains the middle times more often."""

    kind: Literal["flow"] = "flow"
    time: Literal["uniform", "logit-normal"] = "uniform"
    logit_mean: float = Field(0.0, description="m of the logit-normal time")
    logit_std: float = Field(1.0, gt=0, description="s of the logit-normal time")


@DENOISERS.register(DDPMSettings)
class DDPMObjective:
    """DDPM with a discrete schedule; ``prediction`` picks the target (epsilon, v_prediction or sample)."""

    name = "diffusion"
    samplers = ("ddim", "ddpm")

    @classmethod
    def from_settings(cls, s: DDPMSettings) -> "DDPMObjective":
        return cls(s.timesteps, s.beta_schedule, s.prediction)

    def __init__(self, timesteps: int = 1000, beta_schedule: str = "cosine", prediction: str = "epsilon") -> None:
        self.schedule = DDPMSchedule(timesteps, beta_schedule)
        self.prediction = prediction

    def sample_time(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.schedule.num_train_timesteps, (n,), generator=generator)

    def time_at(self, fraction: torch.Tensor) -> torch.Tensor:
        return (fraction * (self.schedule.num_train_timesteps - 1)).round().long()

    def corrupt(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x0, noise: [M, P]; t: [M] integer steps -> (x_t, target)."""
        self.schedule = self.schedule.to(x0.device)
        x_t = self.schedule.add_noise(x0, noise, t)
        if self.prediction == "epsilon":
            return x_t, noise
        if self.prediction == "v_prediction":
            return x_t, self.schedule.velocity(x0, noise, t)
        return x_t, x0

    def level(self, t: torch.Tensor) -> torch.Tensor:
        return (t.float() + 1) / self.schedule.num_train_timesteps

    loss = staticmethod(regression_loss)
    row_loss = staticmethod(regression_row_loss)

    def run_sampler(
        self, sampler: str, model_fn, noise: torch.Tensor, steps: int, generator=None, **kw
    ) -> torch.Tensor:
        return sample(
            sampler,
            model_fn,
            noise,
            schedule=self.schedule.to(noise.device),
            num_steps=steps,
            generator=generator,
            objective=self.name,
            prediction_type=self.prediction,
            **kw,
        )

    def sampler_times(self, sampler: str, steps: int, **kw) -> torch.Tensor:
        """The times ``run_sampler`` passes to its model, ascending (``samplers.diffusion.model_times``)."""
        return model_times(sampler, steps, self.schedule)

    def affine_steps(self, sampler: str, steps: int, **kw) -> tuple[AffineStep, ...] | None:
        """``run_sampler``'s steps as affine updates (``samplers/affine.py``), or None where they are not."""
        return affine_steps(sampler, steps, self.schedule, self.prediction, **kw)


@DENOISERS.register(FlowSettings)
class FlowObjective:
    """Rectified flow: x_t = (1 - t) x0 + t noise, the model predicts v = noise - x0."""

    name = "flow"
    samplers = ("flow_euler", "flow_heun")

    @classmethod
    def from_settings(cls, s: FlowSettings | None = None) -> "FlowObjective":
        s = s or FlowSettings()
        return cls(s.time, s.logit_mean, s.logit_std)

    def __init__(self, time: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        self.time, self.logit_mean, self.logit_std = time, logit_mean, logit_std

    def sample_time(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.time == "logit-normal":
            return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, generator=generator))
        return torch.rand(n, generator=generator)

    def time_at(self, fraction: torch.Tensor) -> torch.Tensor:
        return fraction.float()

    def corrupt(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return flow_interpolate(x0, noise, t.unsqueeze(-1)), flow_velocity(x0, noise)

    def level(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    loss = staticmethod(regression_loss)
    row_loss = staticmethod(regression_row_loss)

    def run_sampler(
        self, sampler: str, model_fn, noise: torch.Tensor, steps: int, generator=None, **kw
    ) -> torch.Tensor:
        return sample(sampler, model_fn, noise, num_steps=steps, objective=self.name, **kw)

    def sampler_times(self, sampler: str, steps: int, shift: float = 1.0, **kw) -> torch.Tensor:
        """The times ``run_sampler`` passes to its model, ascending (``samplers.diffusion.model_times``)."""
        return model_times(sampler, steps, shift=shift)

    def affine_steps(self, sampler: str, steps: int, **kw) -> tuple[AffineStep, ...] | None:
        """``run_sampler``'s steps as affine updates (``samplers/affine.py``), or None where they are not."""
        return affine_steps(sampler, steps, **kw)
