"""One tiny quick-preset run (4 steps), trained once for every serve test, and request builders."""

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from conftest import tiny_preset_overrides
from unimm.config import load_config
from unimm.train import train

QUICK = Path(__file__).parents[2] / "configs" / "quick.toml"


@pytest.fixture(scope="session")
def run_dir(digits_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve_run")
    train(load_config(QUICK, tiny_preset_overrides(digits_dir, "quick")), out, progress=False)
    return out


def png_url(size: int = 8, mode: str = "L") -> str:
    buf = io.BytesIO()
    Image.new(mode, (size, size), 0).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat_body(url: str, text: str | None = None, **extra) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": parts}], **extra}
