"""The web page at ``/`` in a real headless Chromium against uvicorn on a tiny trained run: upload a digit, read its
caption from the DOM, generate a grid, see an API error. Skipped (with the reason) without Chromium/chromedriver."""

import base64
import io
import json
import urllib.request

import numpy as np
import pytest
from PIL import Image

from unimm.serve import ServeLimits, create_app

from .browser import chromium, live_server, missing_browser
from .conftest import chat_body

pytestmark = [pytest.mark.browser, pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")]
WAIT_S = 120


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        return json.load(response)


def _digit_png(path) -> bytes:
    """A real handwritten digit (scikit-learn's 8x8 digits, white on black as MNIST) as a PNG file."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    Image.fromarray(np.round(digits.images[7] / 16 * 255).astype(np.uint8)).save(path)
    return path.read_bytes()


def _png_size(src: str) -> tuple[int, int]:
    assert src.startswith("data:image/png;base64,"), src[:40]
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_page_captions_an_upload_generates_a_grid_and_shows_errors(run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    png = _digit_png(tmp_path / "digit.png")
    with live_server(create_app(run_dir, ServeLimits(max_wait_ms=1))) as url:
        url_png = "data:image/png;base64," + base64.b64encode(png).decode()
        expected = _post(f"{url}/v1/chat/completions", chat_body(url_png))["choices"][0]["message"]["content"]
        gen_body = {"prompt": "a handwritten seven", "n": 4, "seed": 5, "steps": 2}
        expected_images = [d["b64_json"] for d in _post(f"{url}/v1/images/generations", gen_body)["data"]]
        driver = chromium()
        try:
            driver.get(f"{url}/")
            wait = WebDriverWait(driver, WAIT_S)
            el = lambda ident: driver.find_element(By.ID, ident)
            state = lambda ident: el(ident).get_attribute("data-state")
            wait.until(lambda _: el("model-info").text)
            info = el("model-info").text
            assert "strategy" in info and "writer" in info and "parameters" in info, info

            el("image-file").send_keys(str(tmp_path / "digit.png"))
            wait.until(lambda _: el("canvas").get_attribute("data-source") == "upload")
            el("read").click()  # streamed (the box is checked by default): token by token into #caption
            wait.until(lambda _: state("caption") in ("done", "error"))
            assert state("caption") == "done", el("caption-error").text
            caption = el("caption").get_property("textContent")
            assert caption and caption == expected

            for ident, value in {"prompt": gen_body["prompt"], "n": "4", "seed": "5", "steps": "2"}.items():
                el(ident).clear()
                el(ident).send_keys(value)
            el("write").click()
            wait.until(lambda _: state("grid") in ("done", "error"))
            assert state("grid") == "done", el("generate-error").text
            sources = [img.get_attribute("src") for img in el("grid").find_elements(By.TAG_NAME, "img")]
            assert [_png_size(s) for s in sources] == [(8, 8)] * 4
            assert [s.split(",", 1)[1] for s in sources] == expected_images  # the same seed: the API's images
            driver.save_screenshot(str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").read_bytes()[:4] == b"\x89PNG"

            el("n").clear()
            el("n").send_keys("999")
            el("write").click()
            wait.until(lambda _: state("grid") == "error")
            assert el("generate-error").text == "400: n = 999 is over max_n = 16"
        finally:
            driver.quit()
