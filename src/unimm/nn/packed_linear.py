"""Few-row linear products through oneDNN, with each weight packed once for a known row count.

PyTorch's CPU ``mm`` calls MKL, which on AMD processors runs its AVX2 path even where AVX-512 exists; oneDNN's
inner product picks the widest instructions the CPU has (a square 2048-product: about 460 against 200 GFLOP/s
on this project's AMD EPYC with 2 threads). With a weight pre-packed for the row count it wins from 2 rows up
on a decoder's products, call overhead included (at 1 row MKL's product with the transposed weight stays
fastest): ``bench/results/decode.md`` has the sweep over the step's products and the batch-8 decoding.

A decoding step knows its row count (the batch) and holds its weights fixed, so :func:`pack` packs each of its
weights once; :class:`PackedLinears` then sends every ``F.linear`` of the step to :func:`decode_linear`, a
custom op (opaque to ``torch.compile``, so the compiled step calls it like one kernel) that uses the pack when
there is one for its weight and row count and MKL's ``mm`` otherwise. A pack lives exactly as long as the
weight tensor it was made from (a finalizer drops it), so a freed weight's address cannot map to a stale pack.
The products are fp32 in both kernels; their rounding differs in the last bits (tests compare the tokens).
"""

import weakref
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from unimm.nn.onednn_linear import available, linear_args

_Key = tuple[int, tuple[int, ...], int]
_PACKS: dict[_Key, torch.Tensor] = {}


def _key(wt: torch.Tensor, rows: int) -> _Key:
    return wt.data_ptr(), tuple(wt.shape), rows


def pack(weights: Iterable[torch.Tensor], rows: int) -> int:
    """Pack each weight ``W [out, in]`` (a CPU fp32 view ``Wt.t()`` of a contiguous ``Wt [in, out]``, as
    :func:`~unimm.nn.static_decoding.decode_weights` makes them) for products of ``rows`` rows. The pack is
    dropped when ``W`` is freed. Returns the number of packs made (0 where oneDNN is missing)."""
    if not available():
        return 0
    made = 0
    for w in weights:
        if w.device.type != "cpu" or w.dtype != torch.float32 or not w.t().is_contiguous():
            continue
        key = _key(w.t(), rows)
        if key in _PACKS:
            continue
        _PACKS[key] = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), batch_size=rows)
        weakref.finalize(w, _PACKS.pop, key, None)
        made += 1
    return made


def packed_count() -> int:
    """How many packs are alive (tests: packs go with their weights)."""
    return len(_PACKS)


def _decode_linear(x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, wt.t(), bias)`` for x [..., in] and wt [in, out]: oneDNN with the pack made for this weight
    and row count, MKL's ``mm`` where there is none."""
    rows = x.numel() // x.shape[-1]
    flat = x.reshape(rows, x.shape[-1])
    packed = _PACKS.get(_key(wt, rows))
    if packed is not None:
        out = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), packed, bias, "none", [], "")
    elif bias is None:
        out = torch.mm(flat, wt)
    else:
        out = torch.addmm(bias, flat, wt)
    return out.view(*x.shape[:-1], wt.shape[1])


# The op is defined with a plain CPU kernel rather than ``torch.library.custom_op``: a compiled step calls it 25
# times, and custom_op adds wrappers to every call. It has no autograd kernel: decoding runs without gradients.
_LIB = torch.library.Library("unimm", "DEF")
_LIB.define("decode_linear(Tensor x, Tensor wt, Tensor? bias) -> Tensor")
_LIB.impl("decode_linear", _decode_linear, "CPU")


@torch.library.register_fake("unimm::decode_linear", lib=_LIB)
def _(x: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], wt.shape[1])


#: the op ``torch.compile`` sees as one kernel: ``decode_linear(x, wt, bias)``, see ``_decode_linear``
decode_linear = torch.ops.unimm.decode_linear.default


class PackedLinears(TorchFunctionMode):
    """Inside the context, ``F.linear(x, W, b)`` runs as :func:`decode_linear` ``(x, W.t(), b)`` (``nn.Linear``
    modules included); ``torch.compile`` traces the mode, so a compiled step enters it at no cost per call."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w, bias = linear_args(args, kwargs)
            return decode_linear(x, w.t(), bias)
        return func(*args, **kwargs)
