"""A real browser against a real server: the Debian Chromium + chromedriver under Selenium, and uvicorn on a free
loopback port in a thread. Shared by the browser test and docs/serve/screenshot.py."""

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def missing_browser() -> str | None:
    """Why no browser test can run here (None when Chromium, chromedriver and selenium are all present)."""
    if not any(shutil.which(b) for b in BROWSERS):
        return "no Chromium on PATH (make browser-deps installs chromium + chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (make browser-deps installs chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def chromium(width: int = 1280, height: int = 1000):
    """A headless Chromium WebDriver (the caller quits it); the driver and browser from PATH, nothing downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    offline = ("--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-quic")  # fmt: skip  # a closed network: no update or sync connections to wait on
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", *offline,
                f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


@contextmanager
def live_server(app: FastAPI, timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 at a free port in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
