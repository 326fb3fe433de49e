"""Noise schedules and samplers (DDPM, DDIM, flow Euler/Heun) over model callables; no weights."""

from unimm.samplers.diffusion import (
    SAMPLER_OBJECTIVES,
    SAMPLERS,
    ddim_sample,
    ddim_step,
    ddpm_sample,
    ddpm_step,
    ddpm_timesteps,
    flow_euler_sample,
    flow_euler_step,
    flow_heun_sample,
    flow_heun_step,
    sample,
)
from unimm.samplers.guidance import classifier_free_guidance
from unimm.samplers.schedules import (
    PREDICTION_TYPES,
    DDPMSchedule,
    flow_interpolate,
    flow_timesteps,
    flow_velocity,
    shift_sigmas,
)

__all__ = [
    "DDPMSchedule",
    "PREDICTION_TYPES",
    "SAMPLERS",
    "SAMPLER_OBJECTIVES",
    "classifier_free_guidance",
    "ddim_sample",
    "ddim_step",
    "ddpm_sample",
    "ddpm_step",
    "ddpm_timesteps",
    "flow_euler_sample",
    "flow_euler_step",
    "flow_heun_sample",
    "flow_heun_step",
    "flow_interpolate",
    "flow_timesteps",
    "flow_velocity",
    "sample",
    "shift_sigmas",
]
