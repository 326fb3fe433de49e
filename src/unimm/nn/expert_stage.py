"""The routed experts of an MoE layer as one autograd function: gather, SwiGLU experts, gated scatter-add.

Autograd over the per-expert products (``nn/moe.py``'s general path) stitches its pieces with copies: the
experts' outputs are concatenated, the gradient of the split buffer is concatenated back, each expert's
gate / up gradient halves are concatenated, and the two stacked weights' gradients are stacked from per-expert
pieces. At the bench size (``bench/moe.py``) those copies, not the experts' products, are most of the gap to a
dense layer. :class:`ExpertStage` computes the same thing with each result written where it belongs: an
expert's output is scatter-added (times its gate) straight into ``y``, its input gradient straight into the
token gradient, its weight gradients into their slice of the stacked gradient (``torch.mm(..., out=)``), and
the gate / up halves of its input gradient into one buffer.

Expert ``e`` on its rows ``x_e`` (the tokens ``tok`` routed to it, sorted by expert)::

    a_e = silu(x_e Wg_e) * (x_e Wu_e),  o_e = a_e Wd_e,  y[tok] += gate * o_e

Backward, with ``g = dy[tok]``: ``dgate = sum(g * o_e)``, ``dWd_e = a_e^T (gate g)``, ``da = (gate g) Wd_e^T``,
``d(x Wu) = da * silu(x Wg)``, ``d(x Wg) = da * (x Wu) * silu'(x Wg)`` with ``silu'(z) = s (1 + z (1 - s))``,
``s = sigmoid(z)``, ``dW{g,u}_e = x_e^T d(x W{g,u})``, ``dx[tok] += d(x W{g,u}) W{g,u}_e^T``.

Only for plain CPU fp32 tensors outside autocast and ``torch.compile`` (:func:`eligible`); elsewhere (GPU,
bf16, FSDP's DTensor, tracing) ``MoEFeedForward`` keeps autograd's path. With ``onednn=True`` (inside
``onednn_linears``, ``train.matmul = "onednn"``) the forward and input-gradient products run as oneDNN inner
products and the weight gradients on BLAS, as ``OneDNNLinear`` does for a dense layer.
"""

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from unimm.nn.onednn_linear import inner_product


def eligible(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether :class:`ExpertStage` can take these tensors: plain (not subclassed) CPU fp32, outside autocast
    and compilation."""
    return (
        all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in (x, *weights))
        and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, *weights))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _product(x: torch.Tensor, w: torch.Tensor, onednn: bool) -> torch.Tensor:
    """``x [N, in] @ w [in, out]`` on oneDNN or BLAS (``w`` may be a transposed view)."""
    return inner_product(x, w.t(), None) if onednn else torch.mm(x, w)


class ExpertStage(torch.autograd.Function):
    """``y [T, dim] = sum over assignments of gate * expert(x[tok])``, assignments sorted by expert with
    ``counts[e]`` rows each (module docstring). Differentiable in x, both weights and the gates."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        w_gate_up: torch.Tensor,
        w_down: torch.Tensor,
        gate: torch.Tensor,
        tok: torch.Tensor,
        counts: list[int],
        onednn: bool,
    ) -> torch.Tensor:
        hidden = w_down.shape[1]
        buf = x.index_select(0, tok)
        y = x.new_zeros(x.shape)
        kept = []  # per expert with rows: x Wg|u, silu(x Wg), a, o (saved through autograd, so that saved-tensor
        # hooks such as activation checkpointing's see them)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            rows = slice(start, start + n)
            h = _product(buf[rows], w_gate_up[e], onednn)  # [n, 2 * hidden]: [x Wg | x Wu]
            silu = F.silu(h[:, :hidden])
            a = silu * h[:, hidden:]
            o = _product(a, w_down[e], onednn)
            y.index_add_(0, tok[rows], o * gate[rows, None])
            kept += [h, silu, a, o]
            start += n
        ctx.save_for_backward(buf, w_gate_up, w_down, gate, tok, *kept)
        ctx.counts, ctx.onednn, ctx.x_shape = counts, onednn, x.shape
        return y

    @staticmethod
    @once_differentiable  # its in-place arithmetic is not itself differentiable: a double backward raises clearly
    def backward(ctx, dy: torch.Tensor):
        buf, w_gate_up, w_down, gate, tok, *kept = ctx.saved_tensors
        hidden, onednn = w_down.shape[1], ctx.onednn
        dy = dy.contiguous()
        dx = dy.new_zeros(ctx.x_shape)
        d_gate_up, d_down = torch.empty_like(w_gate_up), torch.empty_like(w_down)
        d_gate = torch.empty_like(gate)
        dy_sorted = dy.index_select(0, tok)  # each assignment's output gradient, in the experts' order
        start, saved = 0, iter(kept)
        for e, n in enumerate(ctx.counts):
            if n == 0:
                d_gate_up[e].zero_(), d_down[e].zero_()
                continue
            rows = slice(start, start + n)
            h, silu, a, o = next(saved), next(saved), next(saved), next(saved)
            g = dy_sorted[rows]
            torch.sum(g * o, dim=-1, out=d_gate[rows])
            g.mul_(gate[rows, None])  # the gradient reaching o_e
            torch.mm(a.t(), g, out=d_down[e])
            da = _product(g, w_down[e].t(), onednn)  # [n, hidden]
            dh = torch.empty_like(h)
            torch.mul(da, silu, out=dh[:, hidden:])
            torch.ops.aten.silu_backward.grad_input(da.mul_(h[:, hidden:]), h[:, :hidden], grad_input=dh[:, :hidden])
            torch.mm(buf[rows].t(), dh, out=d_gate_up[e])
            dx.index_add_(0, tok[rows], _product(dh, w_gate_up[e].t(), onednn))
            start += n
        return dx, d_gate_up, d_down, d_gate, None, None, None
