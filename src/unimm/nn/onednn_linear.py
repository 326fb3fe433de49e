"""CPU fp32 linear layers through oneDNN instead of torch's BLAS (MKL), switched on by a context like autocast.

PyTorch's CPU ``F.linear`` calls MKL's sgemm, which on AMD processors runs its AVX2 code even where the CPU has
AVX-512; oneDNN's inner product uses the widest instructions there are. On this project's AMD EPYC (2 threads)
a square 2048-product runs at about 210 GFLOP/s with MKL and 480 with oneDNN, and a training step of the
transfusion layout at dim 256 at 1.3x the speed, at dims 96-128 1.18-1.27x (``bench/results/train_step*.md``).

Inside :func:`onednn_linears` every ``F.linear`` (so every ``nn.Linear``) whose operands are plain CPU fp32
tensors with at least two rows runs as :class:`OneDNNLinear`: forward and input gradient are oneDNN inner
products, the weight gradient (a product over the rows) stays with BLAS. The MoE experts' products follow the
same setting (``nn/expert_stage.py`` asks :func:`active`; ``nn/moe.py``'s general path calls ``F.linear``).
Everything else passes through unchanged: other products (attention, ``@``), autocast regions (they choose their
own kernels), tensor subclasses such as FSDP's DTensor, and code being traced by ``torch.compile``. The two
libraries round differently in the last bits, so a run is reproducible with the same setting
(``train.matmul``), not across settings.
"""

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import flop_registry, register_flop_formula

from unimm.cpuinfo import cpuinfo


def available() -> bool:
    """Whether this PyTorch build has oneDNN's inner product (every x86 / arm64 CPU wheel has)."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops, "_reorder_linear_weight")
    )


def cpu_vendor() -> str:
    """The CPU's vendor string (``GenuineIntel``, ``AuthenticAMD``, ...); "" where ``/proc/cpuinfo`` has none."""
    return cpuinfo("vendor_id")


@functools.cache
def beats_blas() -> bool:
    """Whether oneDNN's few-row products beat PyTorch's BLAS (MKL) on this CPU: where the CPU has AVX-512 that
    MKL leaves unused. MKL takes its AVX-512 kernels on Intel processors only, so on an AMD EPYC ``mm`` runs AVX2
    while oneDNN runs AVX-512 (2.3x on a square product there; a decoding step's products 1.4-1.8x at 2-32 rows,
    ``git show 7540e52:bench/results/decode.md``); on an Intel Xeon both use AVX-512, the square product runs at
    the same rate, and oneDNN's packed few-row products take 1.7-3.2x MKL's time (``bench/results/decode.md``)."""
    return (
        available() and torch.backends.cpu.get_cpu_capability().startswith("AVX512") and cpu_vendor() != "GenuineIntel"
    )


def _inner_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of oneDNN's inner product (``x [..., in] @ w [out, in].T``), for ``FlopCounterMode``: the product
    counts the same as the ``mm`` it replaces (the bias is not counted there either)."""
    rows = 1
    for n in x_shape[:-1]:
        rows *= n
    return 2 * rows * x_shape[-1] * w_shape[0]


if available() and torch.ops.mkldnn._linear_pointwise not in flop_registry:
    register_flop_formula(torch.ops.mkldnn._linear_pointwise)(_inner_flops)


def inner_product(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's ``x [N, in] @ w [out, in].T + b``; ``w`` may be the transposed view of an ``[in, out]`` matrix
    (oneDNN reads it in place, as fast: an MoE expert's weights), any other layout is copied first."""
    if not (w.is_contiguous() or w.t().is_contiguous()):
        w = w.contiguous()
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), w, b, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``F.linear`` with oneDNN's forward and input gradient and BLAS's weight gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return inner_product(x.reshape(-1, x.shape[-1]), w, b).view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = inner_product(g, w.t(), None).view(x.shape)
        if ctx.needs_input_grad[1]:
            gw = g.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def _eligible(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> bool:
    plain = type(x) in (torch.Tensor, torch.nn.Parameter) and type(w) in (torch.Tensor, torch.nn.Parameter)
    return (
        plain
        and (b is None or type(b) in (torch.Tensor, torch.nn.Parameter))
        and x.device.type == "cpu"
        and x.dtype == w.dtype == torch.float32
        and (b is None or b.dtype == torch.float32)
        and x.dim() >= 2
        and x.numel() >= 2 * x.shape[-1]
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def linear_args(args: tuple, kwargs: dict) -> tuple:
    """``F.linear``'s (input, weight, bias) from a call's args and kwargs, as a torch-function mode sees them."""
    x, w, *rest = args
    return x, w, rest[0] if rest else kwargs.get("bias")


class _OneDNNLinears(TorchFunctionMode):
    """The mode :func:`onednn_linears` enters."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w, b = linear_args(args, kwargs)
            if _eligible(x, w, b):
                return OneDNNLinear.apply(x, w, b)
        return func(*args, **kwargs)


def active() -> bool:
    """Whether the calling code runs inside :func:`onednn_linears` (for products that are not ``F.linear`` calls
    but want the same library: the MoE expert stage, ``nn/expert_stage.py``)."""
    return any(isinstance(mode, _OneDNNLinears) for mode in torch.overrides._get_current_function_mode_stack())


@contextmanager
def onednn_linears(enabled: bool = True) -> Iterator[None]:
    """Run the eligible ``F.linear`` calls inside through oneDNN (module docstring); ``enabled=False`` or a
    build without oneDNN: a no-op."""
    if not (enabled and available()):
        yield
        return
    with _OneDNNLinears():
        yield
