"""The dynamic batcher batches concurrent requests, and the server refuses requests past max_concurrent."""

import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from unimm.serve import ServeLimits, create_app

from .conftest import chat_body, png_url


def _counting(app, delay: float = 0.0) -> list[int]:
    """Wrap the batcher's model call: record each call's batch size (after ``delay`` seconds)."""
    sizes, run = [], app.state.batcher.run

    def counted(key, items):
        time.sleep(delay)
        sizes.append(len(items))
        return run(key, items)

    app.state.batcher.run = counted
    return sizes


def test_concurrent_captions_share_model_calls(run_dir):
    app = create_app(run_dir, ServeLimits(max_batch=8, max_wait_ms=300))
    sizes = _counting(app)
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: client.post("/v1/chat/completions", json=chat_body(png_url())), range(8)))
    assert all(r.status_code == 200 for r in replies)
    assert sum(sizes) == 8 and len(sizes) < 8, sizes


def test_unseeded_generations_with_equal_settings_share_model_calls(run_dir):
    app = create_app(run_dir, ServeLimits(max_batch=8, max_wait_ms=300))
    sizes = _counting(app)
    body = {"prompt": "seven", "n": 2, "steps": 1}
    with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: client.post("/v1/images/generations", json=body), range(6)))
    assert all(r.status_code == 200 and len(r.json()["data"]) == 2 for r in replies)
    assert sum(sizes) == 6 and len(sizes) < 6, sizes


def test_past_max_concurrent_is_429_then_serving_resumes(run_dir):
    app = create_app(run_dir, ServeLimits(max_concurrent=1, max_wait_ms=0))
    _counting(app, delay=1.0)
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/v1/chat/completions", json=chat_body(png_url()))
        time.sleep(0.3)
        refused = client.post("/v1/chat/completions", json=chat_body(png_url()))
        assert refused.status_code == 429 and "max_concurrent" in refused.json()["error"]["message"]
        assert first.result().status_code == 200
        assert client.post("/v1/chat/completions", json=chat_body(png_url())).status_code == 200
