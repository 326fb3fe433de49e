"""MAR's per-token diffusion head (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization"): a small MLP that models the distribution of one continuous patch given the
transformer's output ``z`` for its position. Residual blocks are AdaLN-modulated by the sum of the
noise-level embedding and a projection of ``z``; the gates and the output start at zero.

A sampler calls the head many times with the same ``z`` at a few known noise levels, and the AdaLN
modulations depend on nothing else: ``DiffusionHead.conditioned`` computes them for every level and row
in one product (``ConditionedHead``), so that each sampling step runs only the MLPs. On a CPU in fp32 its
products go through oneDNN where that is faster than torch's MKL ``addmm`` (``nn/onednn_linear.py``): on a CPU
where MKL leaves AVX-512 unused (AMD), the modulation products always, the MLPs' from ``ONEDNN_MIN_ROWS`` rows (a
batch's larger groups).
"""

import torch
import torch.nn.functional as F
from torch import nn

from unimm.models import head_loop
from unimm.models.image_io import timestep_embedding
from unimm.nn.onednn_linear import available as onednn_available
from unimm.nn.onednn_linear import beats_blas

# From this many rows oneDNN's product with a packed weight beats MKL's addmm on the head's width-128 layers; the
# modulation products (width -> 11 x width at depth 3) are faster on oneDNN at every row count (bench/mar_head.py
# on an AMD EPYC, `git show 7540e52:bench/results/mar_head.md`; on an Intel Xeon MKL is faster at few rows).
ONEDNN_MIN_ROWS = 128
# Up to this many modulation values (levels x rows x K) they are computed as one table for PyTorch's steps ...
TABLE_LIMIT = 1 << 20
# ... and for the fused C loop, which reads the table. Past 2^23 (32 MB) the table's product is bound by writing
# its output to memory (a batch-32 group's table at about 160 GFLOP/s against 440 for its per-step products,
# bench/results/mar_head.md), so large batches keep PyTorch's per-step path (chosen from side runs of
# bench/sampling.py at other limits, not committed).
LOOP_TABLE_LIMIT = 1 << 23


class AdaLNResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(F.silu(c)).chunk(3, -1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """x_t [M, P] + noise level [M] in [0, 1] + condition z [M, c] -> prediction [M, P]."""

    def __init__(self, patch_dim: int, cond_dim: int, width: int = 256, depth: int = 3, freq_dim: int = 128) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.x_in = nn.Linear(patch_dim, width)
        self.t_mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.z_in = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, patch_dim)
        for layer in (self.ada_out, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = self.t_mlp(timestep_embedding(level, self.freq_dim).to(z.dtype)) + self.z_in(z)
        x = self.x_in(x_t)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, -1)
        return self.out(self.norm_out(x) * (1 + scale) + shift)

    def conditioned(self, level: torch.Tensor, z: torch.Tensor) -> "ConditionedHead":
        """The head at conditions z [R, c] and noise levels [S], for a sampler's steps (inference only)."""
        return self.prepared(level).condition(z)

    def prepared(self, level: torch.Tensor) -> "PreparedHead":
        """What depends on the weights and noise levels [S] alone, made once for many conditions (one ``generate``:
        every group's sampler visits the same levels); inference only."""
        return PreparedHead(self, level)


def _pair(layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias, transposed weight) of a linear layer: ``torch.addmm(*_pair(l), x) == l(x)`` up to rounding, faster
    for the few rows of a sampling step."""
    return layer.bias, layer.weight.t().contiguous()


def _packed_pair(layer: nn.Linear, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias, the weight packed by oneDNN for products of ``rows`` rows), for :func:`_onednn`."""
    return layer.bias, _pack(layer.weight, rows)


def _pack(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """A weight [out, in] laid out by oneDNN for products of ``rows`` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, batch_size=rows)


def _onednn(bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ W.T + bias`` by oneDNN's inner product, ``weight`` being W [out, in] or its pack for x's rows (the
    arguments in ``torch.addmm``'s order)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _use_onednn(z: torch.Tensor) -> bool:
    """Whether the head's products for conditions ``z`` can run on oneDNN: plain CPU fp32, outside autocast."""
    return (
        onednn_available()
        and z.device.type == "cpu"
        and z.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


class PreparedHead:
    """``DiffusionHead`` laid out for sampling at noise levels [S]: every AdaLN modulation layer in one weight
    [K, width] (the blocks' shift, scale, gate and the output's shift, scale; each scale slot's bias holding
    1 + scale), the time features of every level [S, width], and the MLPs' weights transposed for few-row
    products (``_pair``). :meth:`condition` adds conditions z."""

    def __init__(self, head: DiffusionHead, level: torch.Tensor) -> None:
        self.head, self.levels = head, level.shape[0]
        self.width, self.depth = head.x_in.out_features, len(head.blocks)
        layers = [b.ada for b in head.blocks] + [head.ada_out]
        bias = torch.cat([m.bias for m in layers])
        for start in range(self.width, bias.shape[0], 3 * self.width):  # each scale slot: 1 + scale
            bias[start : start + self.width] += 1
        self.ada_bias, self.ada_weight = bias, torch.cat([m.weight for m in layers])  # [K], [K, width]
        self.x_in, self.out = _pair(head.x_in), _pair(head.out)
        self.mlps = [(_pair(b.mlp[0]), _pair(b.mlp[2])) for b in head.blocks]
        self.time = head.t_mlp(timestep_embedding(level, head.freq_dim).to(head.x_in.weight.dtype))  # [S, width]
        self._loop_weights: dict[str, torch.Tensor] | None = None
        self._ada_t: torch.Tensor | None = None
        self._table: torch.Tensor | None = None  # the MKL tables' memory, handed to each condition() in turn
        self.generation = 0  # condition() calls so far: a ConditionedHead's table is valid while it is the last

    def ada_weight_t(self) -> torch.Tensor:
        """The modulation weight transposed and contiguous, ``[width, K]``, for MKL's ``addmm`` (made once, not once
        per condition: a transposing copy of a few hundred kB per group)."""
        if self._ada_t is None:
            self._ada_t = self.ada_weight.t().contiguous()
        return self._ada_t

    def table_memory(self, rows: int) -> torch.Tensor:
        """``[rows, K]`` of memory reused by every :meth:`condition`'s table on the MKL path (grown as needed): a
        fresh table per group of a sampler costs as much in first-touch page faults as its product on some CPUs
        (bench/results/mar_head.md). A ConditionedHead's table is therefore valid only until the next
        :meth:`condition` call on the same PreparedHead; using it later raises."""
        k = self.ada_weight.shape[0]
        if self._table is None or self._table.shape[0] < rows:
            self._table = self.ada_weight.new_empty(rows, k)
        return self._table[:rows]

    def loop_weights(self) -> dict[str, torch.Tensor]:
        """The products' weights as ``head_loop.run`` takes them (stacked over the blocks; made once)."""
        if self._loop_weights is None:
            self._loop_weights = {
                "xin_wt": self.x_in[1],
                "xin_b": self.x_in[0],
                "w1": torch.stack([w1 for (_, w1), _ in self.mlps]),
                "b1": torch.stack([b1 for (b1, _), _ in self.mlps]),
                "w2": torch.stack([w2 for _, (_, w2) in self.mlps]),
                "b2": torch.stack([b2 for _, (b2, _) in self.mlps]),
                "out_wt": self.out[1],
                "out_b": self.out[0],
            }
        return self._loop_weights

    def condition(self, z: torch.Tensor, **limits: int) -> "ConditionedHead":
        """The head at conditions z [R, c] and these levels (``limits``: ``ConditionedHead``'s)."""
        return ConditionedHead(self, z, **limits)


class ConditionedHead:
    """``DiffusionHead`` at fixed conditions z [R, c] and noise levels [S]. Every AdaLN modulation is computed
    once for all levels and rows in one product (a table of S x R x K values), or, past ``table_limit`` values,
    one level's R rows at each call (on this CPU a batch-32 group's 9,600-row table product runs at about a third
    of the speed of its 50 per-level products, bench/mar_head.py; 2^20 values keeps a batch of 1 on the table and
    a batch of 32 on per-step products). Where the fused C loop (``models/head_loop.py``) is built and the table
    has at most ``loop_table_limit`` values, ``loops`` is set and a sampler runs as one :meth:`loop` call.
    Otherwise the MLPs' weights are laid out for PyTorch's few-row products: transposed for MKL's ``addmm``, or,
    on a CPU in fp32 from ``onednn_min_rows`` rows, packed for oneDNN's product at R rows (``onednn`` says which).
    The modulations use oneDNN whenever it can run, the per-level products with the weight packed for R rows, the
    table's with it as it is (as fast there, and the same values). ``onednn``: whether oneDNN may run at all; None
    (default) where it beats MKL on this CPU (``nn/onednn_linear.py: beats_blas``: on an Intel Xeon MKL's own
    AVX-512 products are faster on the width layers at every row count and on the modulations at few rows,
    bench/results/mar_head.md).
    ``run(x_t, i)`` is ``head(x_t, level[i].expand(R), z)`` up to float rounding with a handful of ops per block."""

    def __init__(
        self,
        prepared: PreparedHead,
        z: torch.Tensor,
        table_limit: int = TABLE_LIMIT,
        onednn_min_rows: int = ONEDNN_MIN_ROWS,
        loop_table_limit: int = LOOP_TABLE_LIMIT,
        onednn: bool | None = None,
    ) -> None:
        self.prepared = prepared
        prepared.generation += 1
        self.generation = prepared.generation
        self.width, self.depth = prepared.width, prepared.depth
        rows = z.shape[0]
        can = _use_onednn(z) and (beats_blas() if onednn is None else onednn)
        values = prepared.levels * rows * prepared.ada_bias.shape[0]
        self.loops = values <= loop_table_limit and head_loop.supports(self.width, prepared.x_in[1].shape[0], z)
        tabled = self.loops or values <= table_limit
        self.ada_mm = _onednn if can else torch.addmm
        weight = prepared.ada_weight
        self.ada = prepared.ada_bias, (weight if tabled else _pack(weight, rows)) if can else prepared.ada_weight_t()
        self.onednn = can and rows >= onednn_min_rows and not self.loops
        self.mm = _onednn if self.onednn else torch.addmm
        head = prepared.head
        pair = (lambda layer: _packed_pair(layer, rows)) if self.onednn else None
        self.x_in, self.out = (pair(head.x_in), pair(head.out)) if pair else (prepared.x_in, prepared.out)
        self.mlps = [(pair(b.mlp[0]), pair(b.mlp[2])) for b in head.blocks] if pair else prepared.mlps
        self.time = prepared.time
        self.cond = head.z_in(z)  # [R, width]
        self.shared = tabled and not can  # the table lives in the PreparedHead's reused memory
        self._step: torch.Tensor | None = None  # the per-level modulations' memory on MKL (no table)
        self.table = self._modulations(self.time, shared=self.shared) if tabled else None

    def _modulations(self, time: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Time features [S, width] -> modulations [S, R, K], every scale slot holding 1 + scale; on MKL's ``addmm``
        into reused memory: ``shared``, the PreparedHead's table memory, otherwise (one level per step) this
        head's own step buffer, valid until the next step."""
        c = F.silu(time[:, None] + self.cond[None]).flatten(0, 1)
        if self.ada_mm is torch.addmm:
            if shared:
                memory = self.prepared.table_memory(c.shape[0])
            else:
                if self._step is None or self._step.shape[0] != c.shape[0]:
                    self._step = c.new_empty(c.shape[0], self.ada[1].shape[1])
                memory = self._step
            out = torch.addmm(self.ada[0], c, self.ada[1], out=memory)
        else:
            out = self.ada_mm(self.ada[0], c, self.ada[1])
        return out.view(time.shape[0], self.cond.shape[0], -1)

    def _check_current(self) -> None:
        if self.shared and self.generation != self.prepared.generation:
            raise RuntimeError(
                "this ConditionedHead's modulation table was reused by a later condition() call on its PreparedHead; "
                "condition again (or use one PreparedHead per live ConditionedHead)"
            )

    def modulation(self, index: torch.Tensor) -> torch.Tensor:
        """The modulations [R, K] at level ``index`` (a one-element tensor: off a CPU no value is read on the
        host; on a CPU the table's row is a view, not a copy). Without a table, on MKL's path, the result lives in
        this head's step buffer and is overwritten by the next call."""
        self._check_current()
        if self.table is not None:
            if index.device.type == "cpu":
                return self.table[int(index)]
            return self.table.index_select(0, index)[0]
        return self._modulations(self.time.index_select(0, index))[0]

    def loop(
        self, x: torch.Tensor, index: torch.Tensor, coef: torch.Tensor, noise: torch.Tensor, scale: float | None
    ) -> torch.Tensor:
        """A whole affine sampler in one call (where ``loops``): from x [M, P], at step k the head at level
        ``index[k]``, guided by the null rows with ``scale`` when given (the conditions were ``[z, z_null]``), then
        ``x = a x + b out + c noise[k]``, (a, b, c) = ``coef[k]``."""
        self._check_current()
        return head_loop.run(x, self.prepared.loop_weights(), self.table, index, coef, noise, scale)

    def run(self, x_t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x_t [R, P] at level ``index`` -> the head's prediction [R, P]."""
        w, mod, mm = self.width, self.modulation(index), self.mm
        x = mm(*self.x_in[:1], x_t, self.x_in[1])
        for i, ((b1, w1), (b2, w2)) in enumerate(self.mlps):
            shift, scale1, gate = mod[:, 3 * w * i : 3 * w * (i + 1)].split(w, -1)
            h = torch.addcmul(shift, F.layer_norm(x, (w,), eps=1e-6), scale1)
            x = torch.addcmul(x, gate, mm(b2, F.silu(mm(b1, h, w1)), w2))
        shift, scale1 = mod[:, 3 * w * self.depth :].split(w, -1)
        return mm(self.out[0], torch.addcmul(shift, F.layer_norm(x, (w,), eps=1e-6), scale1), self.out[1])
