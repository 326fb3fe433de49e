#!/usr/bin/env bash
# bench/gpu_check.py on a lent GPU machine, from the repository root:
#   bash bench/gpu_check.sh --out "$OUT/gpu_check.json"
# Its python3 holds a CUDA torch but not all of unimm's dependencies, and no registry can be reached from it:
# wheels carried in .whl/ are installed into /tmp/site first, and a carried .gpu_site/ (pure-Python packages
# copied from here) goes on the path; bench/README.md says how to make both. Arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
path=$PWD/src
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    path=$path:/tmp/site
fi
if [ -d .gpu_site ]; then path=$path:$PWD/.gpu_site; fi
export PYTHONPATH=$path${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$PY" - <<'PYEOF' || true
import importlib.util
need = ["pydantic", "tokenizers", "einops", "safetensors", "typer", "scipy", "sklearn", "rich", "tqdm",
        "matplotlib", "PIL", "torchmetrics", "pycocoevalcap.bleu"]
missing = [m for m in need if importlib.util.find_spec(m.split(".")[0]) is None
           or ("." in m and importlib.util.find_spec(m) is None)]
if missing:
    print(f"gpu_check.sh: missing {', '.join(missing)}: carry them (bench/README.md); sections that need them fail")
PYEOF
exec "$PY" bench/gpu_check.py "$@"
