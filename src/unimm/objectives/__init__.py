"""Training objectives. Each image objective pairs with samplers in ``unimm.samplers``."""

from unimm.objectives.image_diffusion import (
    DDPMObjective,
    FlowObjective,
    ImageObjective,
    build_image_objective,
)
from unimm.objectives.text_ar import text_ar_loss

__all__ = ["DDPMObjective", "FlowObjective", "ImageObjective", "build_image_objective", "text_ar_loss"]
