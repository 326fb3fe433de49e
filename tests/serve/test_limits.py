"""Bad input gets a 4xx JSON error naming the problem, and the next good request still succeeds."""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from unimm.serve import ServeLimits, create_app

from .conftest import chat_body, png_url

LIMITS = ServeLimits(max_image_bytes=20_000, max_image_side=64, max_n=4, max_prompt_chars=100, max_wait_ms=1)


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(run_dir, LIMITS)) as c:
        yield c


def _noise_png(side: int) -> str:
    buf = io.BytesIO()
    Image.effect_noise((side, side), 64).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


CHAT = "/v1/chat/completions"
IMAGES = "/v1/images/generations"
BAD = {
    "over-large image": (CHAT, chat_body(_noise_png(300)), "max_image_bytes"),
    "image side": (CHAT, chat_body(png_url(size=100)), "max_image_side"),
    "non-image": (
        CHAT,
        chat_body("data:image/png;base64," + base64.b64encode(b"not a png").decode()),
        "not a readable",
    ),
    "bad base64": (CHAT, chat_body(png_url()[:-5] + "!!"), "invalid or truncated base64"),
    "remote url": (CHAT, chat_body("http://example.com/x.png"), "data:image"),
    "long question": (CHAT, chat_body(png_url(), "seven " * 30), "max_prompt_chars"),
    "too many tokens": (CHAT, chat_body(png_url(), "7" * 99), "max_seq_len"),
    "no image": (CHAT, {"messages": [{"role": "user", "content": "hello"}]}, "exactly one image_url"),
    "long prompt": (IMAGES, {"prompt": "x" * 101}, "max_prompt_chars"),
    "prompt tokens": (IMAGES, {"prompt": "7 " * 49}, "max_seq_len"),
    "n=10000": (IMAGES, {"prompt": "seven", "n": 10000}, "max_n"),
    "steps": (IMAGES, {"prompt": "seven", "steps": 10**6}, "max_steps"),
    "wrong type": (IMAGES, {"prompt": "seven", "n": "many"}, "'n'"),
    "unknown field": (IMAGES, {"prompt": "seven", "size": "1024x1024"}, "'size'"),
    "response format": (IMAGES, {"prompt": "seven", "response_format": "url"}, "'response_format'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_4xx_naming_the_problem(client, case):
    path, body, named = BAD[case]
    r = client.post(path, json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    error = r.json()["error"]
    assert named in error["message"] and error["type"] and "\n" not in error["message"], error
    good = client.post(IMAGES, json={"prompt": "seven", "steps": 1}) if path == IMAGES else None
    good = good or client.post(CHAT, json=chat_body(png_url()))
    assert good.status_code == 200, good.text
