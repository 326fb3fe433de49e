"""MAR's head sampling loop as one C call, for the few-row groups of small batches on a CPU.

At batch 1 a MAR group has a handful of rows, and each of the head sampler's steps is some twenty PyTorch ops of
a few microseconds each, plus the sampler's update: the 800 head steps of a generate took twice as long as its 16
transformer passes (bench/results/sampling.md). ``head_loop.c`` runs a whole group's loop, every head evaluation
and every affine sampler step (``samplers/affine.py``), with no Python in between; its products are written with
GCC / Clang vector extensions, so they take whatever vector width the machine has, and several rows share each
weight load. Every row's arithmetic runs in the same order whichever rows and threads it shares a block with, so
the result does not depend on the thread count.

The source is compiled on first use with the system's C compiler (``$CC``, else ``cc``) and kept under
``$UNIMM_KERNEL_CACHE`` (default ``~/.cache/unimm/kernels``), keyed by the source, the flags, the compiler and
the CPU. Without a compiler, or with ``UNIMM_KERNELS=0``, :func:`available` is False and callers keep their
PyTorch path. The loop sums in a different order than MKL / oneDNN, so its images equal the PyTorch path's up
to float32 rounding, not bit for bit; the noise is drawn by the caller, in the same order.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from unimm.cpuinfo import cpuinfo

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("head_loop.c")
FLAGS = ("-O3", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC")
# Tried in order: OpenMP (each step's rows over threads) and this CPU's instruction set, then without each.
VARIANTS = (("-fopenmp", "-march=native"), ("-fopenmp",), ("-march=native",), ())
MAX_WIDTH = 1024  # head_loop.c's MAX_WIDTH

_FLOAT, _INT64 = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int64)


def cache_dir() -> Path:
    """Where built kernels are kept."""
    if "UNIMM_KERNEL_CACHE" in os.environ:
        return Path(os.environ["UNIMM_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unimm" / "kernels"


def _cpu() -> str:
    """What identifies this CPU's instruction set (the kernel is built for it)."""
    return cpuinfo("flags", "Features") or platform.machine() + platform.processor()


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> bool:
    """Builds the shared library at ``target`` (atomically); False when the compiler refuses or the cache
    directory cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as err:
        log.debug("head_loop: cannot write to %s: %s", target.parent, err)
        return False
    try:
        done = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log.debug("head_loop: %s %s failed: %s", cc, " ".join(flags), done.stderr.strip())
            return False
        os.replace(tmp, target)
        return True
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("head_loop: could not run %s: %s", cc, err)
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The built kernel, or None where it cannot be built or is switched off."""
    if os.environ.get("UNIMM_KERNELS", "1") == "0":
        return None
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return None
    source = SOURCE.read_bytes()
    for extra in VARIANTS:
        flags = FLAGS + extra
        key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), cc.encode(), _cpu().encode()]))
        target = cache_dir() / f"head_loop-{key.hexdigest()[:20]}.so"
        if target.exists() or _compile(cc, flags, target):
            try:
                lib = ctypes.CDLL(str(target))
            except OSError as err:
                log.debug("head_loop: could not load %s: %s", target, err)
                continue
            lib.head_loop.restype = ctypes.c_int
            ints, floats = [ctypes.c_int] * 7, [_FLOAT] * 9
            lib.head_loop.argtypes = [*ints, ctypes.c_float, *floats, _INT64, _FLOAT, _FLOAT, _FLOAT]
            return lib
    return None


def available() -> bool:
    """Whether the fused loop can run here (a C compiler built it, and it is not switched off)."""
    return _library() is not None


def supports(width: int, patch_dim: int, x: torch.Tensor) -> bool:
    """Whether the loop takes a head of this width and patch size for states like ``x`` (CPU, fp32, outside
    autocast) on this machine."""
    return (
        width % 16 == 0
        and width <= MAX_WIDTH
        and patch_dim <= MAX_WIDTH
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and available()
    )


def _ptr(t: torch.Tensor, kind=_FLOAT):
    return ctypes.cast(t.data_ptr(), kind)


def run(
    x: torch.Tensor,
    weights: dict[str, torch.Tensor],
    table: torch.Tensor,
    level: torch.Tensor,
    coef: torch.Tensor,
    noise: torch.Tensor,
    scale: float | None,
    threads: int | None = None,
) -> torch.Tensor:
    """The sampler loop from state x [M, P]: at step k the head at table level ``level[k]`` [S] (int64), then
    ``x = a x + b out + c noise[k]`` with (a, b, c) = ``coef[k]`` [S, 3]; ``out`` is the guided mix
    ``u + scale (c - u)`` of the condition's and the null row when ``scale`` is given (the table's rows
    [levels, 2M, K], condition first), else the row's own output ([levels, M, K]). ``weights``: ``xin_wt`` [P, W],
    ``xin_b``, ``w1`` / ``w2`` [depth, W, W] (transposed, [in, out]), ``b1`` / ``b2`` [depth, W], ``out_wt``
    [W, P], ``out_b``. ``threads`` (default torch's intra-op count): at each step the rows' head evaluations are
    split evenly over them, in blocks of up to 4 rows that share each weight load (2 without AVX-512), then each
    thread updates its share of the states after a barrier (a guided state needs both of its rows). Returns the
    final state (a new tensor)."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the fused head loop is not available here (no C compiler, or UNIMM_KERNELS=0)")
    m, p = x.shape
    depth, width = weights["w1"].shape[:2]
    guided = scale is not None
    if table.shape[1] != (2 * m if guided else m) or table.shape[2] != (3 * depth + 2) * width:
        raise ValueError(f"modulation table {tuple(table.shape)} does not fit {m} rows of width {width}, depth {depth}")
    if noise.shape != (level.shape[0], m, p) or coef.shape != (level.shape[0], 3):
        raise ValueError(f"noise {tuple(noise.shape)} / coef {tuple(coef.shape)} do not fit {level.shape[0]} steps")
    w = {k: v.detach().contiguous().float() for k, v in weights.items()}
    table, noise = table.contiguous(), noise.contiguous()
    level, coef = level.contiguous().to(torch.int64), coef.contiguous().float()
    out = x.detach().float().clone().contiguous()
    threads = torch.get_num_threads() if threads is None else threads
    order = ("xin_wt", "xin_b", "w1", "b1", "w2", "b2", "out_wt", "out_b")
    code = lib.head_loop(
        m, int(guided), p, width, depth, level.shape[0], threads, float(scale if guided else 1.0),
        *(_ptr(w[k]) for k in order), _ptr(table), _ptr(level, _INT64), _ptr(coef), _ptr(noise), _ptr(out),
    )  # fmt: skip
    if code == -2:
        raise MemoryError(f"the fused head loop could not allocate its outputs ({table.shape[1]} x {p} floats)")
    if code != 0:
        raise ValueError(f"the fused head loop does not take width {width}")
    return out
