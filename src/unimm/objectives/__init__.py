"""Training objectives: the denoisers of image writers (``[denoiser]``) and the text objectives (``[text]``)."""

from unimm.objectives.image_diffusion import DDPMObjective, FlowObjective, ImageObjective
from unimm.objectives.text_ar import text_ar_loss

__all__ = ["DDPMObjective", "FlowObjective", "ImageObjective", "text_ar_loss"]
