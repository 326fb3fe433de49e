"""Request bodies, in OpenAI's shapes; an unknown field is an error (nothing is silently ignored)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Body):
    url: str


class ContentPart(_Body):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class Message(_Body):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(_Body):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False


class ImageRequest(_Body):
    model: str | None = None
    prompt: str = Field(min_length=1)
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=1, description="sampling steps (default: the run's sample.steps)")
    guidance: float | None = Field(None, ge=0, description="classifier-free guidance scale (default: the run's)")
    response_format: Literal["b64_json"] = "b64_json"
