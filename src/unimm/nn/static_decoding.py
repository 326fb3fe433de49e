"""Language-model decoding with a fixed-shape step, which ``torch.compile`` turns into a few fused kernels.

At batch 1 a decoding step of a small model costs its op count, not its FLOPs: eager PyTorch spends
microseconds per op on dispatch, and a Llama layer is about forty ops (norms, RoPE, cache writes, attention,
SwiGLU). Compiling the step needs every step to look the same, so :class:`StaticDecoder` keeps

- a :class:`~unimm.nn.kv_cache.StaticKVCache`: keys and values written in place at a position *tensor*,
  attention over all ``max_len`` slots;
- a ``visible`` mask of written slots ``[B, max_len]``, which stands in for causality;
- the next RoPE position per row as a tensor.

Nothing in a step reads a Python int that changes, so the compiled graph is traced once per (batch,
``max_len``) and reused for every step and every later prompt of that shape (``reset`` starts a new one).
On MKL or oneDNN the step reads each linear weight through a transposed contiguous copy (:func:`decode_weights`),
the layout in which this CPU's BLAS multiplies one row fastest; from two rows up the copies are also packed for
oneDNN where it multiplies a few rows faster than MKL: on CPUs with AVX-512 that MKL leaves unused, such as AMD's
(:mod:`unimm.nn.packed_linear`, :func:`~unimm.nn.onednn_linear.beats_blas`; the sweep in ``bench/decode.py``).
At one row a compiled CPU step writes each product as a multiply-and-sum over the weights' own ``[out, in]`` rows,
which inductor turns into vectorised dot products split over the threads (:mod:`unimm.nn.row_linear`), where MKL's
``sgemv`` would run on one thread. The copies are refreshed when the model's parameters change. The prefill runs
eagerly, with the model's own weights. Compiled and eager steps give the same tokens as the growing-cache path
(``tests/nn/test_static_decoding.py``). ``bench/decode.py`` measures it against transformers' ``generate``; on a GPU
the step is captured as a CUDA graph (``bench/gpu_check.py``).
"""

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from unimm.nn.backbone import Backbone
from unimm.nn.kv_cache import StaticKVCache
from unimm.nn.onednn_linear import beats_blas
from unimm.nn.packed_linear import PackedLinears, available, pack
from unimm.nn.row_linear import RowLinears

#: the fewest rows at which oneDNN's packed product beats MKL's where it beats MKL at all (nn/packed_linear.py)
PACKED_MIN_ROWS = 2


def decode_weights(backbone: Backbone) -> dict[str, torch.Tensor]:
    """Every ``nn.Linear`` weight ``W [out, in]`` as the view ``Wt.t()`` of a contiguous copy ``Wt [in, out]``: the
    same values, so ``F.linear`` computes the same product, but a one-row product reads ``Wt`` row by row, which
    this CPU's BLAS does about twice as fast as the dot products over ``W``'s rows (measured in bench/decode.py)."""
    return {
        f"{name}.weight": module.weight.detach().t().contiguous().t()
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear)
    }


def row_weights(backbone: Backbone) -> dict[str, torch.Tensor]:
    """Every ``nn.Linear`` weight as a contiguous ``[out, in]`` tensor (the module's own where it is contiguous), the
    layout :class:`~unimm.nn.row_linear.RowLinears` sums along."""
    return {
        f"{name}.weight": module.weight.detach().contiguous()
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear)
    }


def _step(
    backbone: Backbone,
    weights: dict[str, torch.Tensor],
    cache: StaticKVCache,
    visible: torch.Tensor,
    next_pos: torch.Tensor,
    ids: torch.Tensor,
    linears: str = "mm",
) -> torch.Tensor:
    """One token per row (ids [B]) at the cache's position -> logits [B, vocab]; advances the state in place.
    ``weights`` replace the backbone's linear weights for the call (:func:`decode_weights`). ``linears``: "mm"
    multiplies with ``F.linear``; "packed" through :class:`~unimm.nn.packed_linear.PackedLinears` (weights
    packed for B rows); "rows" as :class:`~unimm.nn.row_linear.RowLinears`' multiply-and-sum (B = 1, compiled)."""
    b = ids.shape[0]
    visible.index_fill_(1, cache.position.view(1), True)
    positions = next_pos.view(b, 1, 1).expand(b, 3, 1)
    x = backbone.embed_tokens(ids[:, None])
    with LINEAR_MODES[linears]():
        hidden, _ = functional_call(backbone, weights, (x, positions, None, visible[:, None, :], cache), strict=False)
        logits = F.linear(hidden[:, -1], weights["lm_head.weight"])
    next_pos.add_(1)
    return logits


#: the context each ``linears`` choice of :func:`_step` runs its products in
LINEAR_MODES: dict[str, Callable] = {"mm": nullcontext, "packed": PackedLinears, "rows": RowLinears}


def compile_options(device_type: str) -> dict:
    """Inductor options of the compiled step: none on a CPU; on CUDA the step is captured as a CUDA graph, which
    replays a step's kernel launches as one."""
    return {"triton.cudagraphs": True} if device_type == "cuda" else {}


_compiled: dict[tuple, Callable] = {}

#: compiled graphs of ``_step`` kept side by side: one per (batch, ``max_len``, model shape, product kind) met in
#: a process, where dynamo's default limit of 8 per function would fail a ninth decoder shape (fullgraph)
RECOMPILE_LIMIT = 64


def compiled_step(options: dict) -> Callable:
    """``_step`` compiled with ``options`` (one compiled function per distinct options, reused across decoders;
    dynamo's per-function recompile limit raised to at least ``RECOMPILE_LIMIT``)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    key = tuple(sorted(options.items()))
    if key not in _compiled:
        _compiled[key] = torch.compile(_step, fullgraph=True, dynamic=False, options=dict(options))
    return _compiled[key]


class StaticDecoder:
    """Prefill a batch of equal-length prompts, then decode one token per row per :meth:`step`.

    ``compile``: run the step through ``torch.compile`` (the first step of a new shape compiles, seconds);
    False runs the same step eagerly (the reference it is tested against). ``options``: inductor options instead
    of :func:`compile_options`' defaults. ``packed``: on a CPU, multiply through oneDNN with the weights packed
    for ``batch`` rows (:mod:`unimm.nn.packed_linear`); None (default) does where it is faster: from
    ``PACKED_MIN_ROWS`` rows on a CPU where oneDNN beats MKL at all (:func:`~unimm.nn.onednn_linear.beats_blas`);
    False keeps MKL's products. ``rows``: at batch 1 in a compiled CPU step, write
    each product as a multiply-and-sum for inductor (:mod:`unimm.nn.row_linear`); None (default) does wherever
    it applies, False keeps MKL's ``sgemv``. ``skip_guards`` (compiled CPU steps): a step whose inputs are in the
    same state as the last one that ran dynamo's guards (same ids shape / dtype / device, grad, inference and
    autocast modes, the same weight tensors) runs under ``set_stance(skip_guard_eval_unsafe=True)``, which
    evaluates only the guards that tell the step's compiled graphs apart: every other guard checks state this
    decoder keeps fixed, and evaluating them is a measurable part of a step of this size. The first step of a
    decoder, and any step in another state, runs every guard."""

    def __init__(
        self,
        backbone: Backbone,
        batch: int,
        max_len: int,
        compile: bool = True,
        options: dict | None = None,
        packed: bool | None = None,
        rows: bool | None = None,
        skip_guards: bool = True,
    ) -> None:
        device = backbone.embed_tokens.weight.device
        self.backbone, self.batch, self.max_len = backbone, batch, max_len
        self.cache = StaticKVCache(len(backbone.layers), max_len, device)
        self.visible = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch, dtype=torch.long, device=device)
        options = compile_options(device.type) if options is None else options
        if packed is None:
            packed = batch >= PACKED_MIN_ROWS and beats_blas()
        self.packed = packed and device.type == "cpu" and available()
        self.rows = (rows is not False) and compile and batch == 1 and device.type == "cpu" and not self.packed
        self.linears = "packed" if self.packed else "rows" if self.rows else "mm"
        self.step_fn = compiled_step(options) if compile else _step
        self.weights, self.versions = self._decode_weights(), self._versions()
        self.stored = 0  # positions written, kept as an int outside the compiled step
        self.graphs = compile and bool(options.get("triton.cudagraphs"))
        self.skip_guards = skip_guards and compile and device.type == "cpu"
        self.guarded: tuple | None = None  # the state of the last step that ran every guard

    def _decode_weights(self) -> dict[str, torch.Tensor]:
        """The step's weight copies, packed for this batch where ``packed`` (a pack goes with its copy); for the
        one-row multiply-and-sum the weights as they are, contiguous ``[out, in]`` (what ``RowLinears`` reads)."""
        if self.rows:
            return row_weights(self.backbone)
        weights = decode_weights(self.backbone)
        if self.packed:
            pack(weights.values(), self.batch)
        return weights

    def _versions(self) -> list[int]:
        """In-place update counters of the backbone's parameters (an optimizer step or a load bumps them)."""
        return [p._version for p in self.backbone.parameters()]

    def reset(self) -> None:
        """Forget the stored positions (the buffers stay allocated, so a compiled step is reused)."""
        self.cache.position.zero_()
        self.visible.zero_()
        self.next_pos.zero_()
        self.stored = 0

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Prompts ids [B, P] (no padding) after a reset -> logits of their last position [B, vocab]."""
        b, p = ids.shape
        if b != self.batch or p >= self.max_len:
            raise ValueError(f"prompt {tuple(ids.shape)} does not fit batch {self.batch} and max_len {self.max_len}")
        if self._versions() != self.versions:  # the model was updated since the copies were made
            self.weights, self.versions = self._decode_weights(), self._versions()
            self.guarded = None  # new weight tensors: the next step runs every guard again
        self.reset()
        self.visible[:, :p] = True
        slots = torch.arange(self.max_len, device=ids.device)
        mask = (slots[None, :] <= torch.arange(p, device=ids.device)[:, None]).expand(b, p, self.max_len)
        positions = torch.arange(p, device=ids.device).expand(b, 3, p)
        hidden, _ = self.backbone(self.backbone.embed_tokens(ids), positions, None, mask, self.cache)
        self.next_pos.fill_(p)
        self.stored = p
        if self.graphs:  # a CUDA graph may write to state that keeps its address from replay to replay
            for t in (*self.cache.k, *self.cache.v, self.cache.position, self.visible, self.next_pos):
                torch._dynamo.mark_static_address(t)
        return self.backbone.lm_head(hidden[:, -1])

    def _state(self, ids: torch.Tensor) -> tuple:
        """What a step's compiled graph depends on beyond this decoder's fixed buffers and weights: the ids'
        shape, dtype and device, and the grad / inference / autocast modes around the call."""
        autocast = torch.is_autocast_enabled(ids.device.type) if ids.device.type in ("cpu", "cuda") else None
        return ids.shape, ids.dtype, ids.device, torch.is_grad_enabled(), torch.is_inference_mode_enabled(), autocast

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """The next token of each row, ids [B] -> logits [B, vocab] for the token after it."""
        if self.stored >= self.max_len:  # counted here: the compiled step would not bounds-check its cache writes
            raise ValueError(f"StaticDecoder full: {self.stored} positions stored, max_len {self.max_len}")
        self.stored += 1
        args = (self.backbone, self.weights, self.cache, self.visible, self.next_pos, ids, self.linears)
        if not self.skip_guards:
            return self.step_fn(*args)
        state = self._state(ids)
        if state != self.guarded:  # every guard: picks (or compiles) the graph for these inputs
            out = self.step_fn(*args)
            self.guarded = state
            return out
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            return self.step_fn(*args)

    def generate(self, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Greedy decoding: prompts ids [B, P] -> the next ``new_tokens`` ids [B, new_tokens]."""
        if ids.shape[1] + new_tokens > self.max_len:
            raise ValueError(f"{ids.shape[1]} + {new_tokens} tokens exceed max_len {self.max_len}")
        out = [self.prefill(ids).argmax(-1)]
        for _ in range(new_tokens - 1):
            out.append(self.step(out[-1]).argmax(-1))
        return torch.stack(out, 1)
