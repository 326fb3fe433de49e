"""Counting the floating-point operations a training step really performs.

``count_flops()`` is torch's ``FlopCounterMode`` (matmuls, convolutions, attention; elementwise ops are
not counted, by the usual convention) with one addition: the CPU kernel of
``scaled_dot_product_attention`` (``_scaled_dot_product_flash_attention_for_cpu``), which torch does
not count, gets the same formula as its CUDA siblings, so CPU and GPU runs report the same numbers.
"""

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
