"""Samplers whose every step is affine in the state, the model's output and a fresh noise draw.

A DDPM step (any prediction type, any temperature, no clipping), a DDIM step and a flow Euler step all have the form
``x_next = a * x + b * model(x, t) + c * noise``, with ``a, b, c`` fixed by the schedule. ``affine_steps`` writes a
sampler's whole run as that list, so that a fused loop (``models/head_loop.py``) can run it without a Python
call per step, drawing the same noise in the same order as ``samplers/diffusion.py``: one draw of the state's
shape at each step whose ``noisy`` is set. The coefficients are computed in float64 from the same quantities
as the per-step functions there, so the two agree up to float32 rounding; a run's steps are computed once and
kept (a MAR generate asks for the same ones at every group). No weights, no model imports.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from unimm.samplers.diffusion import _randn_like, ddpm_timesteps
from unimm.samplers.schedules import DDPMSchedule, PredictionType, flow_timesteps


@dataclass(frozen=True)
class AffineStep:
    """One sampler step: call the model at time ``t``, then ``x = a * x + b * out + c * noise``; a noise draw of
    the state's shape is taken only when ``noisy`` (``c`` is then its scale, else 0)."""

    t: float
    a: float
    b: float
    c: float
    noisy: bool


def _x0_eps(schedule: DDPMSchedule, t: int, prediction_type: PredictionType) -> tuple[tuple[float, float], ...]:
    """The x0 and epsilon estimates at step ``t`` as (coefficient of x_t, coefficient of the model output)."""
    a_t = schedule.alpha_cumprod(t)
    sa, s1 = a_t**0.5, (1 - a_t) ** 0.5
    if prediction_type == "epsilon":
        return (1 / sa, -s1 / sa), (0.0, 1.0)
    if prediction_type == "sample":
        return (0.0, 1.0), (1 / s1, -sa / s1)
    if prediction_type == "v_prediction":
        return (sa, -s1), (s1, sa)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


@functools.lru_cache(maxsize=64)
def ddpm_affine(
    schedule: DDPMSchedule, num_steps: int, prediction_type: PredictionType = "epsilon", temperature: float = 1.0
) -> tuple[AffineStep, ...]:
    """``ddpm_sample``'s steps (posterior mean of ``ddpm_step``, "fixed_small" variance, noise times
    ``temperature``; no noise at t = 0)."""
    timesteps = ddpm_timesteps(schedule.num_train_timesteps, num_steps)
    steps = []
    for i, t in enumerate(timesteps):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        a_t, a_prev = schedule.alpha_cumprod(t), schedule.alpha_cumprod(prev_t)
        beta = 1.0 - a_t / a_prev
        k0, k1 = a_prev**0.5 * beta / (1 - a_t), (1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)
        (xa, xb), _ = _x0_eps(schedule, t, prediction_type)
        noisy = t > 0
        c = max((1 - a_prev) / (1 - a_t) * beta, 1e-20) ** 0.5 * temperature if noisy else 0.0
        steps.append(AffineStep(float(t), k0 * xa + k1, k0 * xb, c, noisy))
    return tuple(steps)


@functools.lru_cache(maxsize=64)
def ddim_affine(
    schedule: DDPMSchedule, num_steps: int, prediction_type: PredictionType = "epsilon", eta: float = 0.0
) -> tuple[AffineStep, ...]:
    """``ddim_sample``'s steps (a noise draw at every step when ``eta`` > 0)."""
    timesteps = ddpm_timesteps(schedule.num_train_timesteps, num_steps)
    steps = []
    for i, t in enumerate(timesteps):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        a_t, a_prev = schedule.alpha_cumprod(t), schedule.alpha_cumprod(prev_t)
        (xa, xb), (ea, eb) = _x0_eps(schedule, t, prediction_type)
        std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        k0, k1 = a_prev**0.5, max(1 - a_prev - std**2, 0.0) ** 0.5
        steps.append(AffineStep(float(t), k0 * xa + k1 * ea, k0 * xb + k1 * eb, std if eta > 0 else 0.0, eta > 0))
    return tuple(steps)


@functools.lru_cache(maxsize=64)
def flow_euler_affine(num_steps: int, shift: float = 1.0) -> tuple[AffineStep, ...]:
    """``flow_euler_sample``'s steps (deterministic)."""
    sigmas = flow_timesteps(num_steps, shift).tolist()
    return tuple(AffineStep(s, 1.0, s_next - s, 0.0, False) for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True))


def affine_steps(
    name: str,
    num_steps: int,
    schedule: DDPMSchedule | None = None,
    prediction_type: PredictionType = "epsilon",
    **kw: float,
) -> tuple[AffineStep, ...] | None:
    """Sampler ``name``'s run of ``num_steps`` steps as affine steps, or None where it is not of that form
    (Heun's two calls a step, clipping of x0, an unknown option). ``kw``: ``temperature`` (ddpm), ``eta`` (ddim),
    ``shift`` (flow_euler), as ``samplers.diffusion.sample`` takes them."""
    if kw.get("clip_sample") is not None:
        return None
    if name == "ddpm" and schedule is not None and set(kw) <= {"temperature", "clip_sample"}:
        return ddpm_affine(schedule, num_steps, prediction_type, kw.get("temperature", 1.0))
    if name == "ddim" and schedule is not None and set(kw) <= {"eta", "clip_sample"}:
        return ddim_affine(schedule, num_steps, prediction_type, kw.get("eta", 0.0))
    if name == "flow_euler" and set(kw) <= {"shift"}:
        return flow_euler_affine(num_steps, kw.get("shift", 1.0))
    return None


def step_noise(
    steps: tuple[AffineStep, ...], like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[S, *like.shape]: the noise each step adds, drawn from ``generator`` exactly as the samplers in
    ``samplers/diffusion.py`` draw it (one draw of ``like``'s shape per noisy step, in order), zero elsewhere."""
    noise = torch.zeros(len(steps), *like.shape, dtype=like.dtype, device=like.device)
    for k, step in enumerate(steps):
        if step.noisy:
            noise[k] = _randn_like(like, generator)
    return noise


def coefficients(steps: tuple[AffineStep, ...]) -> torch.Tensor:
    """[S, 3] float32: each step's (a, b, c)."""
    return torch.tensor([[s.a, s.b, s.c] for s in steps], dtype=torch.float32)
