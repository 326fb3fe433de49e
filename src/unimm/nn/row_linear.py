"""One-row linear products as a broadcast multiply and a sum, for ``torch.compile`` to write as its own loop.

At batch 1 a decoding step's products are matrix-vector products, and they are most of the step. MKL runs each
as one ``sgemv`` on one thread (on this AMD CPU its AVX2 path), while the second core waits. Written as
``(x[..., None, :] * W).sum(-1)`` over the weight ``W [out, in]`` as ``nn.Linear`` keeps it (contiguous), a
product becomes one inductor reduction: for each output, an AVX-512-vectorised dot product over its contiguous
row of inputs, the outputs split between the threads. Summing along the rows reads each weight row as one
contiguous stream; the transposed layout (``(x[..., :, None] * W.t()).sum(-2)``, outputs accumulated input by
input) read a 64-byte slice of every row in turn. ``bench/results/decode.md`` times the step with it against the
same step on ``sgemv``: 1.74x head to head, where the transposed layout was 1.10x (the same bench on f036c79);
tests compare tokens.

Only a compiled step should use it: run eagerly, the broadcast product is materialised (``in x out`` floats).
"""

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from unimm.nn.onednn_linear import linear_args


class RowLinears(TorchFunctionMode):
    """Inside the context, a one-row ``F.linear(x, W, b)`` (``x.numel() == in``; ``nn.Linear`` modules included)
    is computed as ``(x[..., None, :] * W).sum(-1) + b``; products of more rows are left to ``F.linear``. Give it
    weights contiguous as ``[out, in]`` (a transposed view makes the sum read across rows)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w, bias = linear_args(args, kwargs)
            if x.numel() == x.shape[-1]:
                out = (x.unsqueeze(-2) * w).sum(-1)
                return out if bias is None else out + bias
        return func(*args, **kwargs)
