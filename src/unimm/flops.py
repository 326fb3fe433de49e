"""Counting the floating-point operations a training step really performs.

``count_flops()`` is torch's ``FlopCounterMode`` (matmuls, convolutions, attention; elementwise ops are
not counted, by the usual convention) with one addition: the CPU kernel of
``scaled_dot_product_attention`` (``_scaled_dot_product_flash_attention_for_cpu``), which torch does
not count, gets the same formula as its CUDA siblings, so CPU and GPU runs report the same numbers.
``FitFlops`` counts a fitting loop (image tokenizers, pre-training) with the same counter, step by step.
"""

from collections.abc import Hashable, Iterator
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

aten = torch.ops.aten
_registered = False


def _register_cpu_attention() -> None:
    global _registered
    if _registered:
        return

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    _registered = True


def count_flops() -> FlopCounterMode:
    """A context manager; ``.get_total_flops()`` afterwards gives the FLOPs run inside it."""
    _register_cpu_attention()
    return FlopCounterMode(display=False)


class FitFlops:
    """The FLOPs of a fitting loop (a tokenizer fit, a pre-training), counted by ``count_flops`` as training counts
    them, cheaply and exactly: a step runs under the counter only when its ``key`` is new, and a step with a key
    seen before costs what that step cost. Exact when a step's FLOPs are a function of its key: the key names
    whatever sets the shapes and the work of a step (its phase, a padded length); a loop of fixed-shape batches
    counts its first step only."""

    def __init__(self) -> None:
        self.flops = 0
        self.steps = 0
        self.price: dict[Hashable, int] = {}  # FLOPs of one step, by key

    @contextmanager
    def step(self, key: Hashable = None) -> Iterator[None]:
        """Run one step inside this context."""
        if key in self.price:
            yield
        else:
            with count_flops() as counter:
                yield
            self.price[key] = counter.get_total_flops()
        self.flops += self.price[key]
        self.steps += 1

    def record(self) -> dict[str, int]:
        """``flops`` of all steps, ``steps``, ``per_step`` (the first key's price) and ``counted`` (keys counted)."""
        first = next(iter(self.price.values()), 0)
        return {"flops": self.flops, "steps": self.steps, "per_step": first, "counted": len(self.price)}
