"""Each endpoint of the API on a tiny trained run."""

import base64
import io
import json

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.serve import ServeLimits, create_app
from unimm.tokenizers.text import TextTokenizer

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


def _stream_events(client, body: dict) -> list[dict]:
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in r.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_chat_streams_each_decoded_token_as_a_chunk(client):
    whole = client.post("/v1/chat/completions", json=chat_body(png_url())).json()["choices"][0]["message"]["content"]
    chunks = _stream_events(client, chat_body(png_url(), stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert "".join(pieces) == whole
    # one chunk per decoded token whose text shows: what the model's stream yields, not words split afterwards
    runner = client.app.state.runner
    image = runner.model.cfg.data
    expected = list(runner.stream(torch.full((image.channels, image.image_size, image.image_size), -1.0), None))
    assert pieces == expected and len(pieces) > 1


def test_page_and_its_files_are_served_and_need_nothing_remote(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for ident in ("image-file", "canvas", "question", "caption", "prompt", "grid", "model-info", "caption-error"):
        assert f'id="{ident}"' in page.text
    for name in ("page.js", "page.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.text
        assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    assert "http" not in page.text.replace("http-equiv", "")


def test_models_card_names_the_sampling_defaults_the_page_shows(client):
    card = client.get("/v1/models").json()["data"][0]
    s = client.app.state.runner.model.cfg.sample
    assert card["sampling"] == {"steps": 3, "guidance": s.cfg, "max_new_tokens": 6}


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


def test_a_video_model_is_refused_with_the_reason(digits_dir):
    model = UnifiedModel(tiny_preset(digits_dir, "quick", **{"data.frames": 3}), TextTokenizer.train(["a 3"], 300))
    with pytest.raises(ValueError, match="video model .* serving clips is not built"):
        create_app(model)
