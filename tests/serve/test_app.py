"""Each endpoint of the API on a tiny trained run."""

import base64
import io
import json

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from unimm.serve import ServeLimits, create_app

from .conftest import chat_body, png_url


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(run_dir, ServeLimits(max_wait_ms=1))) as c:
        yield c


def test_health_and_models(client):
    assert client.get("/health").json()["status"] == "ok"
    card = client.get("/v1/models").json()["data"][0]
    assert card["strategy"]["writer"] and card["strategy"]["text"] in ("ar", "masked")
    assert card["parameters"]["total"] >= card["parameters"]["backbone"] > 0
    assert card["training"]["steps"] == 4 and card["training"]["steps_done"] == 4


def test_chat_caption_and_question(client):
    for text in (None, "what digit is this?"):
        r = client.post("/v1/chat/completions", json=chat_body(png_url(), text))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert body["choices"][0]["finish_reason"] == "stop"
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_streams_sse_chunks(client):
    whole = client.post("/v1/chat/completions", json=chat_body(png_url())).json()["choices"][0]["message"]["content"]
    r = client.post("/v1/chat/completions", json=chat_body(png_url(), stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in r.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole


def _decode(item: dict) -> torch.Tensor:
    with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as im:
        assert im.format == "PNG"
        return torch.tensor(list(im.getdata()))


def test_image_generation_is_deterministic_given_seed(client):
    body = {"prompt": "a handwritten seven", "n": 2, "seed": 3, "steps": 2}
    a = client.post("/v1/images/generations", json=body)
    assert a.status_code == 200, a.text
    assert len(a.json()["data"]) == 2
    b = client.post("/v1/images/generations", json=body).json()
    assert all(torch.equal(_decode(x), _decode(y)) for x, y in zip(a.json()["data"], b["data"], strict=True))


def test_serve_binds_loopback_by_default_and_its_limits_are_servelimits_defaults():
    import inspect

    from unimm.cli import serve

    params = inspect.signature(serve).parameters
    assert params["host"].default == "127.0.0.1"
    names = {"timeout": "timeout_s"}
    cli = {names.get(k, k): p.default for k, p in params.items() if k not in ("run", "host", "port")}
    assert cli == ServeLimits().model_dump()
