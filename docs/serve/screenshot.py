"""The screenshot of `unimm serve`'s web page in docs/serve.md: a trained run served read-only, a real held-out MNIST
test digit uploaded and captioned, a grid generated, the page saved by headless Chromium.

    python docs/serve/screenshot.py RUN [--out docs/serve/page.png] [--digit 0]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the browser helpers the browser test uses

from serve.browser import chromium, live_server  # noqa: E402
from unimm.data.formats import read_idx_split  # noqa: E402
from unimm.serve import ServeLimits, create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serve" / "page.png")
    parser.add_argument("--digit", type=int, default=0, help="index into data/mnist's test split")
    parser.add_argument("--prompt", default="a handwritten seven")
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    images, _ = read_idx_split(ROOT / "data" / "mnist", "test")
    with tempfile.TemporaryDirectory() as tmp, live_server(create_app(args.run, ServeLimits())) as url:
        digit = Path(tmp) / "digit.png"
        Image.fromarray(images[args.digit]).save(digit)
        driver = chromium(1100, 1000)
        try:
            driver.get(f"{url}/")
            wait = WebDriverWait(driver, 300)
            el = lambda ident: driver.find_element(By.ID, ident)
            wait.until(lambda _: el("model-info").text)
            el("image-file").send_keys(str(digit))
            wait.until(lambda _: el("canvas").get_attribute("data-source") == "upload")
            el("read").click()
            wait.until(lambda _: el("caption").get_attribute("data-state") in ("done", "error"))
            for ident, value in {"prompt": args.prompt, "n": "8", "seed": "0"}.items():
                el(ident).clear()
                el(ident).send_keys(value)
            el("write").click()
            wait.until(lambda _: el("grid").get_attribute("data-state") in ("done", "error"))
            errors = [el(i).text for i in ("caption-error", "generate-error") if el(i).text]
            if errors:
                raise SystemExit(f"the page shows an error: {errors}")
            driver.execute_script("window.scrollTo(0, 0)")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            shown = len(el("grid").find_elements(By.TAG_NAME, "img"))
            print(f"{args.out}: caption {el('caption').text!r}, {shown} images")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
