"""The modules that define the built-in part kinds; importing them registers every kind (``settings.py``).
Writers are discovered from their package; a new writer kind needs no line here."""

import unimm.models.image_io  # noqa: F401  codec: pixels
import unimm.models.readers  # noqa: F401  reader: shared, vit; connector: linear, mlp, resampler, qformer
import unimm.models.vae  # noqa: F401  codec: vae
import unimm.models.vq_codes  # noqa: F401  codec: vq
import unimm.models.writers  # noqa: F401  writer: latent, ar-codes, masked-codes, mar, connector
import unimm.nn.layers  # noqa: F401  layers: dense, moe, modality-moe, mot
import unimm.objectives.image_diffusion  # noqa: F401  denoiser: ddpm, flow
import unimm.objectives.text  # noqa: F401  text: ar, masked
