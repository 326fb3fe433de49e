"""How a training forward computes: under bf16 autocast or in fp32, and which library multiplies fp32."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from unimm.config import TrainSection
from unimm.nn.onednn_linear import onednn_linears


@contextmanager
def compute(t: TrainSection, device: torch.device) -> Iterator[None]:
    """The forward's context: bf16 autocast where ``t.precision`` says so, oneDNN linear layers on a CPU where
    ``t.matmul`` does (``nn/onednn_linear.py``); the backward of what ran inside follows it."""
    with ExitStack() as stack:
        if t.precision == "bf16":
            stack.enter_context(torch.autocast(device.type, torch.bfloat16))
        if t.matmul == "onednn" and device.type == "cpu":
            stack.enter_context(onednn_linears())
        yield
