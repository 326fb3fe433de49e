"""Training checkpoints: written complete into a temporary directory, renamed into place, then named by
``latest``; read back in any process layout.

``checkpoints/step_NNNNNNN/`` holds ``train_state.pt`` (step, scheduler, FLOP tally; written last, so its
presence marks a complete directory) and either full weights (``model.safetensors``, ``ema.safetensors``, the
optimizer inside ``train_state.pt``: one process or DDP) or, under FSDP2, a sharded ``dcp/`` directory written
by every process with ``torch.distributed.checkpoint`` (model, EMA and optimizer tensors; the optimizer's
hyper-parameters stay in ``train_state.pt``). Either kind loads into one process, DDP or FSDP2 at any size.
The run's ``model.safetensors`` is always the full (EMA) weights, gathered on rank 0.
"""

import pickle
import shutil
import warnings
from collections.abc import Collection
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from unimm.checkpoint import atomic_write_text, load_state, load_weights, save_state, save_weights
from unimm.optim import EMA
from unimm.train.distributed import assign_full, full_state

KEEP_CHECKPOINTS = 2


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint ``checkpoints/latest`` names (None when there is none yet)."""
    pointer = out / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    ckpt = out / "checkpoints" / pointer.read_text().strip()
    if not (ckpt / "train_state.pt").is_file():
        raise ValueError(f"{pointer} names {ckpt.name}, which is incomplete; remove it to start over")
    return ckpt


def resume_candidates(out: Path) -> list[Path]:
    """The checkpoints a resume may load, best first: the one ``checkpoints/latest`` names, then the older ones
    kept (newest first); empty when the run has none."""
    root = out / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return []
    named = root / pointer.read_text().strip()
    older = sorted((p for p in root.glob("step_*") if p.is_dir() and p.name < named.name), reverse=True)
    return [named, *older]


def load_resumable(
    out: Path, model: nn.Module, ema: EMA | None, opt: Optimizer, sched: LRScheduler
) -> tuple[Path, dict, list[tuple[Path, str]]]:
    """Load the newest checkpoint of ``resume_candidates`` that loads (each load overwrites all the state, so a
    failed one leaves nothing behind). Returns (checkpoint, training state, [(checkpoint that failed, why)]);
    raises ValueError with the first failure when none loads."""
    failed: list[tuple[Path, str]] = []
    for ckpt in resume_candidates(out):
        if not (ckpt / "train_state.pt").is_file():
            failed.append((ckpt, f"{ckpt} is incomplete (no train_state.pt)"))
            continue
        try:
            return ckpt, load_checkpoint(ckpt, model, ema, opt, sched), failed
        except (ValueError, FileNotFoundError, KeyError) as err:
            failed.append((ckpt, str(err).splitlines()[0] if str(err) else type(err).__name__))
    if not failed:
        raise FileNotFoundError(f"--resume: no checkpoint in {out / 'checkpoints'}")
    others = "".join(f"; {p.name} does not load either ({why})" for p, why in failed[1:])
    raise ValueError(failed[0][1] + others)


def set_aside(ckpt: Path) -> Path:
    """Rename a checkpoint that does not load to ``corrupt_step_N`` (out of the ``step_*`` rotation, so it is
    never deleted) and return its new path; a missing directory stays where it is named."""
    if not ckpt.exists():
        return ckpt
    target, n = ckpt.with_name(f"corrupt_{ckpt.name}"), 1
    while target.exists():
        n += 1
        target = ckpt.with_name(f"corrupt{n}_{ckpt.name}")
    ckpt.rename(target)
    return target


def point_latest(out: Path, ckpt: Path) -> None:
    atomic_write_text(out / "checkpoints" / "latest", ckpt.name)


def remove_leftovers(out: Path) -> list[Path]:
    """Delete what a killed run left half-written (``.step_*.tmp`` directories, ``.*.tmp`` files of atomic
    writes); nothing reads them, but they would pile up. Returns what was removed."""
    found = [*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")]
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return found


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(
    out: Path,
    model: nn.Module,
    ema: EMA | None,
    opt: Optimizer,
    sched: LRScheduler,
    step: int,
    extra: dict | None = None,
    keep: Collection[int] = (),
) -> Path:
    """Write a complete checkpoint directory, then point ``latest`` at it (atomic rename + write), and delete
    older ones beyond ``KEEP_CHECKPOINTS`` except those of the steps in ``keep`` (the fork steps of cooldown
    branches). ``model`` is the unwrapped model; every process calls this, rank 0 alone writes the shared files."""
    root = out / "checkpoints"
    name = f"step_{step:07d}"
    tmp = root / f".{name}.tmp"
    main = _rank() == 0
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    state = {"step": step, "scheduler": sched.state_dict(), **(extra or {})}
    if ema is not None:
        state["ema_updates"] = ema.updates  # its bias correction depends on it
    live = ema.state_dict(model) if ema is not None else model.state_dict()
    if isinstance(model, FSDPModule):
        state["optimizer_groups"] = _save_sharded(tmp / "dcp", model, opt, ema)
        final = full_state(live, main)
    else:
        final = live
        if main:
            save_weights(model.state_dict(), tmp / "model.safetensors")
            if ema is not None:
                save_weights(live, tmp / "ema.safetensors")
            state["optimizer"] = opt.state_dict()
    if main:
        save_state(state, tmp / "train_state.pt")  # last: its presence marks the directory complete
        shutil.rmtree(root / name, ignore_errors=True)
        tmp.rename(root / name)
        atomic_write_text(root / "latest", name)
        save_weights(final, out / "model.safetensors")
        kept = {f"step_{s:07d}" for s in keep}
        old = sorted(p for p in root.glob("step_*") if p.name != name and p.name not in kept)
        for p in old[: max(0, len(old) - (KEEP_CHECKPOINTS - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    _barrier()
    return root / name


def load_checkpoint(ckpt: Path, model: nn.Module, ema: EMA | None, opt: Optimizer, sched: LRScheduler) -> dict:
    """Restore model, EMA, optimizer and scheduler from ``ckpt`` into this process layout (``model`` unwrapped,
    possibly FSDP2-sharded; ``opt`` built over it). Returns the training state (``step``, ``flops``, ...)."""
    state = load_state(ckpt / "train_state.pt")
    if (ckpt / "dcp").is_dir():
        _load_sharded(ckpt / "dcp", model, opt, ema, state["optimizer_groups"])
    else:
        weights = load_weights(ckpt / "model.safetensors")
        ema_weights = load_weights(ckpt / "ema.safetensors") if ema is not None else None
        if isinstance(model, FSDPModule):
            _load_full_into_sharded(model, opt, weights, state["optimizer"])
        else:
            model.load_state_dict(weights)
            opt.load_state_dict(state["optimizer"])
        if ema is not None:
            assign_full(ema.shadow, ema_weights)
    if ema is not None:  # checkpoints from before the count was kept: one update per step is close enough
        ema.updates = state.get("ema_updates", state["step"])
    sched.load_state_dict(state["scheduler"])
    return state


# ----------------------------------------------------------------------------- sharded (FSDP2) checkpoints


def _save_sharded(path: Path, model: nn.Module, opt: Optimizer, ema: EMA | None) -> list[dict]:
    """Model, optimizer and EMA tensors via DCP (each process its shards); returns the optimizer's param
    groups (hyper-parameters, parameter names), which go into ``train_state.pt``."""
    model_sd, optim_sd = get_state_dict(model, opt)
    tensors = {"model": model_sd, "optim": optim_sd["state"]}
    if ema is not None:
        tensors["ema"] = ema.shadow
    dcp.save(tensors, checkpoint_id=path)
    return optim_sd["param_groups"]


def _load_sharded(path: Path, model: nn.Module, opt: Optimizer, ema: EMA | None, groups: list[dict]) -> None:
    model_sd, optim_sd = get_state_dict(model, opt)  # this layout's tensors: DCP reshards into them
    tensors = {"model": model_sd, "optim": optim_sd["state"]}
    if ema is not None:
        tensors["ema"] = ema.shadow
    with warnings.catch_warnings():  # loading a sharded checkpoint into one process is intended
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(tensors, storage_reader=SafeReader(path))
    set_state_dict(
        model,
        opt,
        model_state_dict=tensors["model"],
        optim_state_dict={"state": tensors["optim"], "param_groups": groups},
    )


def _load_full_into_sharded(model: nn.Module, opt: Optimizer, weights: dict, optim_state: dict) -> None:
    """A one-process checkpoint into an FSDP2 model: the optimizer's numbered entries renamed to parameter names."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    named = {
        "state": {order[i]: s for i, s in optim_state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in optim_state["param_groups"]],
    }
    set_state_dict(
        model, opt, model_state_dict=weights, optim_state_dict=named, options=StateDictOptions(full_state_dict=True)
    )


# DCP keeps its index (``.metadata``) as a pickle and reads it with ``pickle.load``; these are the only
# classes an index holds, so anything else in it is refused before it can run.
_SAFE_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict"),
}


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        dtype = getattr(torch, name, None) if module == "torch" else None
        if (module, name) in _SAFE_GLOBALS or module == "torch.distributed.checkpoint.metadata":
            return super().find_class(module, name)
        if isinstance(dtype, torch.dtype):
            return dtype
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


class SafeReader(FileSystemReader):
    """``FileSystemReader`` whose index is unpickled with an allow-list and must describe tensors only (DCP
    would unpickle non-tensor entries with ``weights_only=False``); the tensors themselves are read with
    ``torch.load(weights_only=True)`` by DCP."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = Path(self.path) / ".metadata"
        try:
            with open(path, "rb") as f:
                metadata = _IndexUnpickler(f).load()
        except FileNotFoundError:
            raise
        except Exception as err:
            raise ValueError(f"{path} is corrupt, truncated or not a checkpoint index ({err})") from None
        if not isinstance(metadata, Metadata):
            raise ValueError(f"{path} is not a checkpoint index")
        for key, entry in metadata.state_dict_metadata.items():
            if not isinstance(entry, TensorStorageMetadata):
                raise ValueError(f"{path}: entry {key!r} is not a tensor; refusing to unpickle it")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
