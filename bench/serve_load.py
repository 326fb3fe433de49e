"""Loopback load test of ``unimm serve``: caption requests from N concurrent clients, batched against unbatched.

An untrained quick-preset model (the cost does not depend on the weights; ``bench/untrained.py``) is served by
in-process uvicorn on 127.0.0.1 at a free port; the clients run in a second process. For each concurrency
(default 16 and 64) and each batcher setting (batched: ``max_batch`` 16 with a 5 ms wait; unbatched:
``max_batch`` 1), the clients send ``--requests`` caption
requests in all (each client its next request as soon as its last is answered), after a warm-up. Reported: p50 /
p95 request latency and throughput. Results go to ``bench/results/serve_load.json`` and ``serve_load.md``.
Run ``OMP_NUM_THREADS=1 python bench/serve_load.py`` (``--quick`` for a smoke run).
"""

import argparse
import asyncio
import base64
import datetime
import io
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn
from PIL import Image

from unimm.data import load_split
from unimm.serve import ServeLimits, create_app

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings, however this file is run
from machine import cpu_model  # noqa: E402
from untrained import untrained_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TINY = ["model.dim=96", "model.depth=3", "model.heads=4"]  # configs/atlas/quick.toml [sizes] tiny
SETTINGS = {"batched": {"max_batch": 16, "max_wait_ms": 5.0}, "unbatched": {"max_batch": 1, "max_wait_ms": 0.0}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_urls(data: Path, count: int) -> list[str]:
    """The first ``count`` test images as PNG data URLs."""
    images = load_split(data, "test").images[:count]
    urls = []
    for im in images:
        arr = ((im[0] + 1) * 127.5).round().byte().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return urls


async def load(url: str, bodies: list[dict], clients: int) -> tuple[list[float], float]:
    """Send ``bodies`` from ``clients`` concurrent clients -> (latency of each request in s, wall seconds)."""
    queue, latencies = list(bodies), []
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as http:

        async def client() -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await http.post("/v1/chat/completions", json=body)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, time.perf_counter() - t0


def run_load(url: str, bodies: list[dict], clients: int) -> tuple[list[float], float]:
    """``load`` in a process of its own: the clients' HTTP work does not share the server's interpreter."""
    return asyncio.run(load(url, bodies, clients))


def measure(model, setting: dict, clients: int, bodies: list[dict]) -> dict:
    limits = ServeLimits(max_concurrent=max(64, clients), **setting)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model, limits), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{port}"
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as clients_process:
            clients_process.submit(run_load, url, bodies[: 2 * clients], clients).result()  # warm-up
            latencies, wall = clients_process.submit(run_load, url, bodies, clients).result()
    finally:
        server.should_exit = True
        thread.join()
    q = statistics.quantiles(latencies, n=20)
    return {
        "clients": clients,
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(q[18] * 1000, 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        "wall_s": round(wall, 2),
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# unimm serve: loopback caption load, untrained quick preset ({result['model']})",
        "",
        f"{m['cpu']}, {m['torch_threads']} torch thread(s), torch {m['torch']}, load average at start "
        f"{m['load_average_start']}, at end {m['load_average_end']}, {result['date']}. {m['note']}",
        "",
        "| clients | batcher | requests | p50 ms | p95 ms | requests/s | batched / unbatched |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        base = next(r for r in result["rows"] if r["clients"] == row["clients"] and r["batcher"] == "unbatched")
        ratio = row["requests_per_s"] / base["requests_per_s"]
        lines.append(
            f"| {row['clients']} | {row['batcher']} | {row['requests']} | {row['p50_ms']:,} | {row['p95_ms']:,} "
            f"| {row['requests_per_s']:,} | {ratio:.2f}x |"
        )
    lines += [
        "",
        "Each client sends its next request when its last is answered; the clients run in a process of their own "
        "(asyncio + httpx), the server (uvicorn, the model) in this one. batched: max_batch 16, max_wait 5 ms; "
        "unbatched: max_batch 1. Latency is the client's (HTTP over loopback, image decoding, queueing, the model "
        "call); the ratio is throughput, > 1 means batching serves more requests per second.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "mnist")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--requests", type=int, default=256, help="caption requests per measurement")
    ap.add_argument(
        "--note",
        default="Ran on a shared 2-core CPU (other jobs, a long training run at higher priority among them, "
        "may load it; see the load averages).",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 and 8 clients, 32 requests, not saved")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.requests = [4, 8], 32
    load_start = round(os.getloadavg()[0], 2)
    _, model = untrained_model("quick", args.data, TINY)
    urls = image_urls(args.data, 32)
    bodies = [
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": urls[i % len(urls)]}}]}]}
        for i in range(args.requests)
    ]
    rows = []
    for clients in args.clients:
        for name, setting in SETTINGS.items():
            row = {"batcher": name, **measure(model, setting, clients, bodies)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "model": "quick, " + ", ".join(TINY),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_start": load_start,
            "load_average_end": round(os.getloadavg()[0], 2),
            "note": args.note,
        },
        "settings": SETTINGS,
        "rows": rows,
    }
    if args.quick:
        print(markdown(result))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "serve_load.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
