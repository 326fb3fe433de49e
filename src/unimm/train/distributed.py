"""Data-parallel training: the process group from torchrun's environment, DDP / FSDP2 wrapping, reductions.

A micro-batch of ``train.batch_size`` rows is cut into ``train.batch_shards`` (S) contiguous shards, each a loss
mean of its own; with W processes, rank r runs shards ``r * S/W ... (r + 1) * S/W - 1`` of every micro-batch and
the gradients are averaged over all shards. Shard ``j`` is ``ExampleStream(batch_size / S).batch(j)`` with its
noise seeded by ``j``, so the computation depends on S but not on W: a run resumes exactly on any W dividing S.
"""

import datetime
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel

LAUNCH = "torchrun --nproc-per-node N -m unimm train CONFIG --set train.parallel={}"


@dataclass
class DistEnv:
    """Where this process stands: ``parallel`` mode, ``rank`` of ``world`` processes, compute ``device``."""

    parallel: str = "none"
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # the process group was started here, so it is ended here

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) a float64 vector over the processes; the identity for one process."""
        if self.world > 1:
            values = values.to(self.device)
            dist.all_reduce(values)
        return values.cpu()

    def gather(self, obj) -> list:
        """Every process's ``obj`` (small Python values only), in rank order."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(parallel: str) -> DistEnv:
    """Join (or start, from torchrun's RANK / WORLD_SIZE / MASTER_ADDR variables) the process group:
    gloo on CPU, nccl on CUDA (one GPU per process, ``LOCAL_RANK``). ``none`` stays a single process, except
    under a launcher of several processes (``WORLD_SIZE`` > 1), where it means ``ddp`` (the caller says so)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == "none":
        if world == 1:
            return DistEnv()
        parallel = "ddp"
    owns = False
    if not dist.is_initialized():
        if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
            raise ValueError(
                f"train.parallel = {parallel!r} needs a process group: launch with {LAUNCH.format(parallel)}"
            )
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # a long timeout: rank 0 alone fits the image tokenizer before the first collective
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
        owns = True
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return DistEnv(parallel, dist.get_rank(), dist.get_world_size(), device, owns)


def resolve_shards(batch_size: int, shards: int | None, world: int) -> int:
    """``train.batch_shards``: the number of processes when unset; it must divide the batch and be divisible
    by the number of processes."""
    shards = shards or world
    if batch_size % shards:
        raise ValueError(f"train.batch_size ({batch_size}) must be divisible by train.batch_shards ({shards})")
    if shards % world:
        raise ValueError(
            f"train.batch_shards = {shards} (fixed when the run started) cannot be split over {world} processes; "
            f"use a number of processes that divides {shards}"
        )
    return shards


def local_shards(step: int, grad_accum: int, shards: int, env: DistEnv) -> list[int]:
    """Global shard indices this process runs at ``step`` (each one ``ExampleStream.batch`` index)."""
    per = shards // env.world
    return [(step * grad_accum + m) * shards + env.rank * per + s for m in range(grad_accum) for s in range(per)]


def wrap_model(core: nn.Module, env: DistEnv, precision: str) -> nn.Module:
    """DDP: a wrapper (rank 0's weights broadcast); FSDP2: each backbone block and then the whole model
    sharded in place (weights broadcast from rank 0 first; bf16 compute, fp32 gradient reduction under
    ``precision = "bf16"``). Returns the module to call for the loss."""
    core.to(env.device)
    if env.parallel == "ddp":
        # a micro-batch without generated images leaves the image head unused on that rank
        return DistributedDataParallel(core, find_unused_parameters=True)
    if env.parallel != "fsdp":
        return core
    for t in [*core.parameters(), *core.buffers()]:
        dist.broadcast(t.data, src=0)
    bf16 = precision == "bf16"
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    for block in core.backbone.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(core, mp_policy=mp)
    # ranks whose shard left a parameter unused still join its reduce-scatter (with a zero gradient)
    if hasattr(core, "set_reduce_scatter_unused_params"):
        core.set_reduce_scatter_unused_params(True)
    elif env.world > 1:
        raise RuntimeError(
            f"FSDP across {env.world} ranks needs FSDP2's set_reduce_scatter_unused_params (torch 2.13 has it): a "
            f"rank whose batch leaves a parameter unused must still join its reduce-scatter; torch {torch.__version__} "
            "lacks it. Use train.parallel=ddp, or one process."
        )
    return core


@contextmanager
def replica_quiet(env: DistEnv) -> Iterator[None]:
    """On DDP ranks other than 0, silence what C++ prints to stderr during the forward: DDP's reducer prints its
    ``find_unused_parameters`` warning there from C++ (no Python warning to filter), the same on every rank, so
    rank 0 alone says it. Python exceptions still propagate."""
    if env.parallel != "ddp" or env.main:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def grad_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Reduce gradients over the processes only on the last backward of a step (accumulate before)."""
    if isinstance(model, DistributedDataParallel) and not sync:
        with model.no_sync():
            yield
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
        yield
    else:
        yield


def grad_norm_and_clip(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm (sharded gradients included) and return it."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm or float("inf"))
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def full_state(state: dict[str, torch.Tensor], main: bool) -> dict[str, torch.Tensor] | None:
    """Gather sharded (DTensor) entries into full CPU tensors; a collective: every process calls it.
    Returns the full dict on rank 0 (``main``) and None elsewhere."""
    out = {}
    for k, v in state.items():
        full = v.full_tensor() if isinstance(v, DTensor) else v
        if main:
            out[k] = full.detach().cpu()
    return out if main else None


def assign_full(target: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into ``target``'s tensors in place, each sharded like its target when it is a DTensor."""
    with torch.no_grad():
        for k, v in target.items():
            src = full[k].to(v.dtype)
            if isinstance(v, DTensor):
                src = distribute_tensor(src.to(v.device), v.device_mesh, v.placements)
            v.copy_(src)
