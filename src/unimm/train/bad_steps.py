"""Steps with a non-finite loss or gradient norm: skipped, reported, and fatal only when they keep coming.

A bad step applies no update: parameters, optimizer state and EMA stay those of the last completed step (the
learning-rate schedule still advances: the step counts as taken, its batch as skipped). The only state a
forward / backward can change in place is module buffers (e.g. a codebook's running statistics), so those are
copied after every good step and put back after a bad one.
"""

from collections import Counter

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from unimm.tasks import Example


def describe_batch(index: int, examples: list[Example], limit: int = 3) -> str:
    """One line naming stream micro-batch ``index`` by its tasks and first texts."""
    tasks = ", ".join(f"{n} {t}" for t, n in sorted(Counter(ex.task for ex in examples).items()))
    texts = "; ".join(repr(ex.text) for ex in examples[:limit])
    return f"micro-batch {index} ({tasks}; texts {texts}{' ...' if len(examples) > limit else ''})"


class BadSteps:
    """Counts consecutive bad steps of ``module`` and restores its buffers after each one."""

    def __init__(self, module: nn.Module, limit: int) -> None:
        self.module, self.limit = module, limit
        self.run: list[int] = []  # the current streak of bad steps
        self._buffers = self._copy_buffers()

    def _copy_buffers(self) -> dict[str, torch.Tensor]:
        return {k: b.detach().clone() for k, b in self.module.named_buffers()}

    def good(self) -> None:
        self.run = []
        self._buffers = self._copy_buffers()

    @torch.no_grad()
    def bad(self, step: int, reason: str, batches: list[str]) -> str:
        """Record bad ``step`` (1-based) and restore the buffers; returns the message to report. Raises
        FloatingPointError when it makes ``limit`` consecutive bad steps, or when the parameters themselves are
        no longer finite (an earlier update diverged: skipping cannot help)."""
        for k, b in self.module.named_buffers():
            b.copy_(self._buffers[k])
        self.run.append(step)
        where = "; ".join(batches) if batches else "no single micro-batch"
        msg = (
            f"step {step}: {reason} in {where}; skipped the update (weights, optimizer and EMA stay as of step "
            f"{step - 1}); {len(self.run)} of train.max_bad_steps = {self.limit} consecutive bad steps"
        )
        if len(self.run) >= self.limit:
            raise FloatingPointError(
                f"{msg}: stopping at steps {self.run[0]}-{step}. The last checkpoint is intact; "
                "continue with --resume after a fix (e.g. a lower train.lr) or raise train.max_bad_steps"
            )
        local = [p.to_local() if isinstance(p, DTensor) else p for p in self.module.parameters()]
        if not all(bool(torch.isfinite(p).all()) for p in local if p.is_floating_point()):
            raise FloatingPointError(
                f"{msg}; but the weights themselves are no longer finite, so an earlier update diverged. "
                "The last checkpoint is intact; continue with --resume after a fix (e.g. a lower train.lr)"
            )
        return msg
