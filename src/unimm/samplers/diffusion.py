"""Diffusion and flow-matching samplers over a model callable. No weights, no training/model imports.

A model callable is ``model_fn(x_t: Tensor[B, ...], t: Tensor[B]) -> Tensor[B, ...]`` with ``t`` float32:
- DDPM / DDIM: ``t`` holds the integer training timestep (as float); the output is an epsilon, sample or
  v prediction (``prediction_type``).
- Flow: ``t`` holds the continuous time in ``[0, 1]`` (1 = noise); the output is the velocity ``noise - x0``.

Per-step functions are pure; each ``*_sample`` loop is written out in full and returns the ``x0`` estimate.
Every sampler can start part-way (SDEdit, Meng et al. 2022; diffusers' image-to-image ``strength``): given
``init`` and ``strength`` < 1 it runs only the last ``int(strength * num_steps)`` steps of its schedule, from
``init`` noised to the first of them with the same ``noise``.
DDPM / DDIM numerics match diffusers' ``DDPMScheduler`` (variance "fixed_small") and ``DDIMScheduler``
(``set_alpha_to_one=True``, ``steps_offset=0``, "leading" spacing); flow steps match
``FlowMatchEulerDiscreteScheduler`` / ``FlowMatchHeunDiscreteScheduler`` on the same sigmas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from unimm.samplers.schedules import DDPMSchedule, PredictionType, flow_timesteps

ModelFn = Callable[[Tensor, Tensor], Tensor]


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # Draw on the generator's device (as diffusers' randn_tensor does) so seeded runs agree across devices.
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _times(value: float, like: Tensor) -> Tensor:
    return torch.full((like.shape[0],), float(value), device=like.device, dtype=torch.float32)


def kept_steps(num_steps: int, strength: float) -> int:
    """How many of a sampler's ``num_steps`` steps a start at ``strength`` runs: ``int(strength * num_steps)``
    (diffusers' image-to-image rule), at least 1; ``strength`` must be in (0, 1]."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1]; got {strength}")
    return max(1, min(num_steps, int(strength * num_steps)))


def _flow_start(sigmas: list[float], noise: Tensor, init: Tensor | None, strength: float) -> tuple[list[float], Tensor]:
    """The grid a flow sampler runs (descending, ending at 0) and its first x: ``noise`` at t = 1, or, with
    ``init``, the last ``kept_steps`` steps from ``init`` noised to their first time, ``(1 - t) init + t noise``."""
    if init is None:
        return sigmas, noise
    kept = kept_steps(len(sigmas) - 1, strength)
    if strength == 1:  # the whole schedule, from the noise alone
        return sigmas, noise
    sigmas = sigmas[-kept - 1 :]
    return sigmas, (1 - sigmas[0]) * init + sigmas[0] * noise


def _ddpm_start(
    schedule: DDPMSchedule, timesteps: list[int], noise: Tensor, init: Tensor | None, strength: float
) -> tuple[list[int], Tensor]:
    """The timesteps a DDPM / DDIM sampler runs (descending) and its first x: ``noise``, or, with ``init``, the
    last ``kept_steps`` steps from ``init`` noised to the first of them by the forward process."""
    if init is None:
        return timesteps, noise
    kept = kept_steps(len(timesteps), strength)
    if strength == 1:  # the whole schedule, from the noise alone
        return timesteps, noise
    timesteps = timesteps[-kept:]
    t = torch.full((noise.shape[0],), timesteps[0], dtype=torch.long)
    return timesteps, schedule.add_noise(init, noise, t)


def ddpm_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """Decreasing timesteps, diffusers' "leading" spacing: ``[k * (T // n) for k in range(n)]`` reversed."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}]; got {num_steps}")
    ratio = num_train_timesteps // num_steps
    return [k * ratio for k in reversed(range(num_steps))]


def ddpm_step(
    schedule: DDPMSchedule,
    model_out: Tensor,
    t: int,
    x_t: Tensor,
    prev_t: int | None = None,
    prediction_type: PredictionType = "epsilon",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    clip_sample: float | None = None,
) -> Tensor:
    """One ancestral DDPM step ``x_t -> x_prev_t``: posterior q(x_prev | x_t, x0_hat), "fixed_small" variance.

    ``model_out, x_t: [B, ...]``. ``prev_t`` defaults to ``t - 1``; a larger jump (``t - T // num_steps``)
    treats ``t -> prev_t`` as a single step with ``beta = 1 - a_t / a_prev``; ``prev_t < 0`` means clean.
    ``noise`` (else drawn from ``generator``) is added only for ``t > 0``. ``clip_sample`` clamps x0_hat to
    ``[-c, c]``. Returns ``x_prev: [B, ...]``.
    """
    t, prev_t = int(t), int(t - 1 if prev_t is None else prev_t)
    a_t, a_prev = schedule.alpha_cumprod(t), schedule.alpha_cumprod(prev_t)
    beta_t = 1.0 - a_t / a_prev

    x0 = schedule.predict_x0(x_t, model_out, t, prediction_type)
    if clip_sample is not None:
        x0 = x0.clamp(-clip_sample, clip_sample)
    # Posterior mean (DDPM eq. 7) written with cumulative products so that skipped steps work.
    mean = (a_prev**0.5 * beta_t / (1 - a_t)) * x0 + ((1 - beta_t) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x_t
    if t == 0:
        return mean
    variance = max((1 - a_prev) / (1 - a_t) * beta_t, 1e-20)
    noise = _randn_like(x_t, generator) if noise is None else noise
    return mean + variance**0.5 * noise


def ddim_step(
    schedule: DDPMSchedule,
    model_out: Tensor,
    t: int,
    prev_t: int,
    x_t: Tensor,
    eta: float = 0.0,
    prediction_type: PredictionType = "epsilon",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    clip_sample: float | None = None,
) -> Tensor:
    """One DDIM step ``x_t -> x_prev_t`` (deterministic for ``eta = 0``; ``eta = 1`` ~ DDPM variance).

    ``model_out, x_t: [B, ...]``; ``prev_t < 0`` means ``a_prev = 1``. Returns ``x_prev: [B, ...]``.
    """
    # float64 coefficients; prev_t < 0 means "after the last step": a_prev = 1 (set_alpha_to_one=True).
    t, prev_t = int(t), int(prev_t)
    a_t, a_prev = schedule.alpha_cumprod(t), schedule.alpha_cumprod(prev_t)

    x0 = schedule.predict_x0(x_t, model_out, t, prediction_type)
    eps = schedule.predict_eps(x_t, model_out, t, prediction_type)
    if clip_sample is not None:
        x0 = x0.clamp(-clip_sample, clip_sample)
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    x_prev = a_prev**0.5 * x0 + max(1 - a_prev - std**2, 0.0) ** 0.5 * eps
    if eta > 0:
        noise = _randn_like(x_t, generator) if noise is None else noise
        x_prev = x_prev + std * noise
    return x_prev


def flow_euler_step(v: Tensor, sigma: float, sigma_next: float, x: Tensor) -> Tensor:
    """Euler step of ``dx/dsigma = v`` from ``sigma`` to ``sigma_next``. Shapes ``[B, ...]``."""
    return x + (sigma_next - sigma) * v


def flow_heun_step(model_fn: ModelFn, x: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """Heun (trapezoidal) step; two model calls, one when ``sigma_next == 0`` (Euler, as in Karras et al.).

    ``x: [B, ...]`` at time ``sigma``; returns ``x`` at ``sigma_next``.
    """
    v = model_fn(x, _times(sigma, x))
    x_euler = flow_euler_step(v, sigma, sigma_next, x)
    if sigma_next == 0:
        return x_euler
    v_next = model_fn(x_euler, _times(sigma_next, x))
    return flow_euler_step(0.5 * (v + v_next), sigma, sigma_next, x)


def ddpm_sample(
    model_fn: ModelFn,
    noise: Tensor,
    schedule: DDPMSchedule,
    num_steps: int | None = None,
    prediction_type: PredictionType = "epsilon",
    generator: torch.Generator | None = None,
    clip_sample: float | None = None,
    progress: bool = False,
    temperature: float = 1.0,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Tensor:
    """Ancestral DDPM from ``noise: [B, ...]`` (``num_steps=None``: all T steps). Returns x0 ``[B, ...]``.
    ``temperature`` scales the noise added at each step (MAR's sampling temperature; 1 = plain DDPM); ``init``
    and ``strength`` start part-way (module docstring)."""
    timesteps = ddpm_timesteps(schedule.num_train_timesteps, num_steps or schedule.num_train_timesteps)
    timesteps, x = _ddpm_start(schedule, timesteps, noise, init, strength)
    for i, t in enumerate(tqdm(timesteps, desc="ddpm", disable=not progress)):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        model_out = model_fn(x, _times(t, x))
        step_noise = _randn_like(x, generator) * temperature if temperature != 1.0 and t > 0 else None
        x = ddpm_step(
            schedule,
            model_out,
            t,
            x,
            prev_t=prev_t,
            prediction_type=prediction_type,
            generator=generator,
            noise=step_noise,
            clip_sample=clip_sample,
        )
    return x


def ddim_sample(
    model_fn: ModelFn,
    noise: Tensor,
    schedule: DDPMSchedule,
    num_steps: int = 50,
    eta: float = 0.0,
    prediction_type: PredictionType = "epsilon",
    generator: torch.Generator | None = None,
    clip_sample: float | None = None,
    progress: bool = False,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Tensor:
    """DDIM sampling from ``noise: [B, ...]`` over "leading" timesteps. Returns x0 ``[B, ...]``. ``init`` and
    ``strength`` start part-way (module docstring)."""
    timesteps = ddpm_timesteps(schedule.num_train_timesteps, num_steps)
    timesteps, x = _ddpm_start(schedule, timesteps, noise, init, strength)
    for i, t in enumerate(tqdm(timesteps, desc="ddim", disable=not progress)):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        model_out = model_fn(x, _times(t, x))
        x = ddim_step(
            schedule,
            model_out,
            t,
            prev_t,
            x,
            eta=eta,
            prediction_type=prediction_type,
            generator=generator,
            clip_sample=clip_sample,
        )
    return x


def flow_euler_sample(
    model_fn: ModelFn,
    noise: Tensor,
    num_steps: int = 25,
    shift: float = 1.0,
    progress: bool = False,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Tensor:
    """Euler ODE integration from ``t=1`` (``noise: [B, ...]``) to ``t=0``. Returns x0 ``[B, ...]``. ``init`` and
    ``strength`` start part-way (module docstring)."""
    sigmas, x = _flow_start(flow_timesteps(num_steps, shift).tolist(), noise, init, strength)
    for sigma, sigma_next in tqdm(
        zip(sigmas[:-1], sigmas[1:], strict=True), total=len(sigmas) - 1, desc="flow_euler", disable=not progress
    ):
        v = model_fn(x, _times(sigma, x))
        x = flow_euler_step(v, sigma, sigma_next, x)
    return x


def flow_heun_sample(
    model_fn: ModelFn,
    noise: Tensor,
    num_steps: int = 25,
    shift: float = 1.0,
    progress: bool = False,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Tensor:
    """Heun ODE integration from ``t=1`` to ``t=0`` (2 * num_steps - 1 calls). Returns x0 ``[B, ...]``. ``init``
    and ``strength`` start part-way (module docstring)."""
    sigmas, x = _flow_start(flow_timesteps(num_steps, shift).tolist(), noise, init, strength)
    for sigma, sigma_next in tqdm(
        zip(sigmas[:-1], sigmas[1:], strict=True), total=len(sigmas) - 1, desc="flow_heun", disable=not progress
    ):
        x = flow_heun_step(model_fn, x, sigma, sigma_next)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "flow_euler": flow_euler_sample,
    "flow_heun": flow_heun_sample,
}
# Which training objective each sampler pairs with ("diffusion": DDPM loss; "flow": rectified flow loss).
SAMPLER_OBJECTIVES: dict[str, str] = {
    "ddpm": "diffusion",
    "ddim": "diffusion",
    "flow_euler": "flow",
    "flow_heun": "flow",
}


def model_times(name: str, num_steps: int, schedule: DDPMSchedule | None = None, shift: float = 1.0) -> Tensor:
    """The distinct times sampler ``name`` passes to its model callable in ``num_steps`` steps, float32 ascending
    (exactly the values of its ``t`` tensors): lets a model precompute what depends on the time alone."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {sorted(SAMPLERS)}")
    if SAMPLER_OBJECTIVES[name] == "flow":
        return flow_timesteps(num_steps, shift)[:-1].flip(0)  # t = 0 is never evaluated
    if schedule is None:
        raise ValueError(f"diffusion sampler {name!r} needs a DDPMSchedule")
    return torch.tensor(sorted(ddpm_timesteps(schedule.num_train_timesteps, num_steps)), dtype=torch.float32)


def sample(
    name: str,
    model_fn: ModelFn,
    noise: Tensor,
    *,
    schedule: DDPMSchedule | None = None,
    num_steps: int | None,
    generator: torch.Generator | None = None,
    objective: str | None = None,
    **kw: Any,
) -> Tensor:
    """Run sampler ``name`` from ``noise: [B, ...]``; returns x0 ``[B, ...]``.

    Diffusion samplers need ``schedule``; flow samplers take none and are deterministic (``generator`` is
    ignored). ``objective``, if given, must be the one ``name`` pairs with. ``kw`` goes to the sampler
    (``prediction_type``, ``eta``, ``clip_sample``, ``shift``, ``progress``).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {sorted(SAMPLERS)}")
    paired = SAMPLER_OBJECTIVES[name]
    if objective is not None and objective != paired:
        allowed = sorted(k for k, v in SAMPLER_OBJECTIVES.items() if v == objective)
        raise ValueError(f"sampler {name!r} pairs with objective {paired!r}, not {objective!r}; use one of {allowed}")
    if paired == "flow":
        if schedule is not None:
            raise ValueError(f"flow sampler {name!r} takes no DDPMSchedule")
        if num_steps is not None:
            kw["num_steps"] = num_steps
        return SAMPLERS[name](model_fn, noise, **kw)
    if schedule is None:
        raise ValueError(f"diffusion sampler {name!r} needs a DDPMSchedule")
    if num_steps is not None:
        kw["num_steps"] = num_steps
    return SAMPLERS[name](model_fn, noise, schedule, generator=generator, **kw)
