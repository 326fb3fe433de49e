"""HTTP API over a run: OpenAI-shaped chat (captioning / VQA) and image generation, with a dynamic batcher."""

from unimm.serve.app import create_app
from unimm.serve.limits import ServeLimits

__all__ = ["ServeLimits", "create_app"]
