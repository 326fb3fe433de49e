"""One-row linear products as a broadcast multiply and a sum, for ``torch.compile`` to write as its own loop.

At batch 1 a decoding step's products are matrix-vector products, and they are most of the step. MKL runs each
as one ``sgemv`` on one thread (on this AMD CPU its AVX2 path), while the second core waits. Written as
``(x[..., :, None] * Wt).sum(-2)`` over the transposed weight copy ``Wt [in, out]``, a product becomes one
inductor reduction: a loop over the inputs that accumulates contiguous, AVX-512-vectorised slices of the outputs,
split between the threads; each output is summed over the inputs in order, in fp32. ``bench/results/decode.md``
times the step with it against the same step on ``sgemv``: a small gain (1.10x head to head in the committed
run, its pairs spread 0.91-1.27x), as a step streams its weights from memory either way; tests compare tokens.

Only a compiled step should use it: run eagerly, the broadcast product is materialised (``in x out`` floats).
"""

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from unimm.nn.onednn_linear import linear_args


class RowLinears(TorchFunctionMode):
    """Inside the context, a one-row ``F.linear(x, W, b)`` (``x.numel() == in``; ``nn.Linear`` modules included)
    is computed as ``(x[..., :, None] * W.t()).sum(-2) + b``; products of more rows are left to ``F.linear``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, w, bias = linear_args(args, kwargs)
            if x.numel() == x.shape[-1]:
                out = (x.unsqueeze(-1) * w.t()).sum(-2)
                return out if bias is None else out + bias
        return func(*args, **kwargs)
