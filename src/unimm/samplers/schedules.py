"""Noise schedules: discrete-time DDPM (betas / alphas_cumprod) and continuous-time flow matching.

Conventions
- DDPM: integer timestep ``t`` in ``[0, T)``; ``x_t = sqrt(a_t) * x0 + sqrt(1 - a_t) * noise`` with
  ``a_t = alphas_cumprod[t]``. Values match diffusers' ``DDPMScheduler`` for the same settings.
- Flow matching (rectified flow): continuous ``t`` in ``[0, 1]``, ``x_t = (1 - t) * x0 + t * noise``
  (``t = 1`` is pure noise) and the model predicts the velocity ``v = noise - x0``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

BetaSchedule = Literal["linear", "cosine", "scaled_linear"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction")


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Glide / improved-DDPM cosine betas (diffusers' ``squaredcos_cap_v2``), float64 ``[T]``."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    betas = [min(1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


class DDPMSchedule:
    """Discrete DDPM noise schedule. Holds no weights.

    ``betas``, ``alphas``, ``alphas_cumprod``: float32 ``[T]`` (computed in float64); they serve the
    batched training path (``t: LongTensor[B]``). ``alphas_cumprod_f64`` (CPU, float64) serves the sampler
    steps (``t: int``): per-step ratios such as ``1 - a_t / a_prev`` are ill-conditioned at small ``t``.
    ``beta_schedule="cosine"`` is diffusers' ``squaredcos_cap_v2`` (betas capped at 0.999; ``beta_start`` and
    ``beta_end`` unused); ``"scaled_linear"`` is linear in ``sqrt(beta)`` (latent-diffusion style).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaSchedule = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        T = num_train_timesteps
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
        elif beta_schedule == "cosine":
            betas = _cosine_betas(T)
        else:
            raise ValueError(f"beta_schedule must be one of 'linear', 'cosine', 'scaled_linear'; got {beta_schedule!r}")
        self.num_train_timesteps = T
        self.beta_schedule = beta_schedule
        self.beta_start = beta_start
        self.beta_end = beta_end
        alphas = 1.0 - betas
        self.betas = betas.float()
        self.alphas = alphas.float()
        self.alphas_cumprod_f64 = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod = self.alphas_cumprod_f64.float()
        self._a_list = self.alphas_cumprod_f64.tolist()  # the same float64 values, read without a tensor op

    def to(self, device: torch.device | str) -> DDPMSchedule:
        """Move the float32 tensors to ``device`` (in place; the float64 copy stays on CPU); returns self."""
        self.betas = self.betas.to(device)
        self.alphas = self.alphas.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def alpha_cumprod(self, t: int) -> float:
        """``a_t`` as a Python float (float64 precision); ``t < 0`` gives 1.0 (fully clean)."""
        return self._a_list[t] if t >= 0 else 1.0

    def _sqrt_alphas(self, t: int | Tensor, like: Tensor) -> tuple[float | Tensor, float | Tensor]:
        """``(sqrt(a_t), sqrt(1 - a_t))``: floats for an int ``t``, ``[B, 1, ..]`` tensors for ``t: [B]``."""
        if isinstance(t, int):
            a = self.alpha_cumprod(t)
            return a**0.5, (1 - a) ** 0.5
        a = self.alphas_cumprod.to(like.device)[t.to(like.device).long()].to(like.dtype)
        a = a.reshape(a.shape + (1,) * (like.dim() - a.dim()))
        return a.sqrt(), (1 - a).sqrt()

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Forward process. ``x0, noise: [B, ...]``, ``t: LongTensor[B]`` -> ``x_t: [B, ...]``."""
        sqrt_a, sqrt_1ma = self._sqrt_alphas(t, x0)
        return sqrt_a * x0 + sqrt_1ma * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v-prediction target ``sqrt(a_t) * noise - sqrt(1 - a_t) * x0``, shape ``[B, ...]``."""
        sqrt_a, sqrt_1ma = self._sqrt_alphas(t, x0)
        return sqrt_a * noise - sqrt_1ma * x0

    def predict_x0(
        self, x_t: Tensor, model_out: Tensor, t: int | Tensor, prediction_type: PredictionType = "epsilon"
    ) -> Tensor:
        """x0 estimate from a model output; ``t``: int or ``LongTensor[B]``. Returns ``[B, ...]``."""
        sqrt_a, sqrt_1ma = self._sqrt_alphas(t, x_t)
        if prediction_type == "epsilon":
            return (x_t - sqrt_1ma * model_out) / sqrt_a
        if prediction_type == "sample":
            return model_out
        if prediction_type == "v_prediction":
            return sqrt_a * x_t - sqrt_1ma * model_out
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")

    def predict_eps(
        self, x_t: Tensor, model_out: Tensor, t: int | Tensor, prediction_type: PredictionType = "epsilon"
    ) -> Tensor:
        """Noise estimate from a model output. ``t``: int or ``LongTensor[B]``; returns ``[B, ...]``."""
        sqrt_a, sqrt_1ma = self._sqrt_alphas(t, x_t)
        if prediction_type == "epsilon":
            return model_out
        if prediction_type == "sample":
            return (x_t - sqrt_a * model_out) / sqrt_1ma
        if prediction_type == "v_prediction":
            return sqrt_a * model_out + sqrt_1ma * x_t
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")


def _broadcast_time(t: float | Tensor, like: Tensor) -> float | Tensor:
    if isinstance(t, Tensor) and t.dim() > 0:
        t = t.to(device=like.device, dtype=like.dtype)
        return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))
    return t


def flow_interpolate(x0: Tensor, noise: Tensor, t: float | Tensor) -> Tensor:
    """``x_t = (1 - t) * x0 + t * noise``; ``t``: float or ``Tensor[B]`` in ``[0, 1]``. -> ``[B, ...]``."""
    t = _broadcast_time(t, x0)
    return (1 - t) * x0 + t * noise


def flow_velocity(x0: Tensor, noise: Tensor) -> Tensor:
    """Flow-matching target ``v = noise - x0 = d x_t / d t``, shape ``[B, ...]``."""
    return noise - x0


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """SD3 time shift ``shift * s / (1 + (shift - 1) * s)``; ``shift > 1`` spends more steps at high noise."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_timesteps(num_steps: int, shift: float = 1.0) -> Tensor:
    """Sampling grid: float32 ``[num_steps + 1]`` from 1 (noise) down to 0 (data), uniform then shifted."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return shift_sigmas(sigmas, shift).float()
