"""What one request may ask of the server: safe defaults, each configurable (``unimm serve --help``)."""

from pydantic import BaseModel, ConfigDict, Field


class ServeLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_image_bytes: int = Field(4_000_000, gt=0, description="largest decoded image upload, in bytes")
    max_image_side: int = Field(2048, gt=0, description="longest image side, in pixels")
    max_n: int = Field(16, gt=0, description="most images one generation request may ask for")
    max_steps: int = Field(200, gt=0, description="most sampling steps one generation request may ask for")
    max_prompt_chars: int = Field(2000, gt=0, description="longest prompt or question, in characters")
    timeout_s: float = Field(120.0, gt=0, description="seconds a request may wait for its result (504 past it)")
    max_concurrent: int = Field(64, gt=0, description="requests in flight at once (429 past it)")
    max_batch: int = Field(16, gt=0, description="requests the batcher runs through the model at once")
    max_wait_ms: float = Field(10.0, ge=0, description="how long the batcher waits to fill a batch")
