"""Running on several processes: data-parallel fine-tuning with torch's DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node=N -m psvit.finetune ...`` starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment. :func:`init_from_env` joins them into one process
group (``nccl`` on CUDA, each process on ``cuda:LOCAL_RANK``; ``gloo`` on the CPU); without ``WORLD_SIZE > 1`` it
does nothing and everything here answers as for one process (rank 0 of 1), so the same code runs under
``python -m``.

How :func:`psvit.train.loop.train_model` uses it: every optimizer step takes one *global batch* of
``world_size * accumulate * batch_size`` images from one seeded shuffle, the same on every rank
(:class:`StepBatches`). Rank r takes the r-th contiguous slice of it and splits that into ``accumulate``
micro-batches of ``batch_size``; DDP averages the gradients over the ranks.

**BatchNorm.** Each rank normalises its own micro-batch (there is no SyncBatchNorm), exactly as gradient
accumulation normalises each micro-batch on its own in one process. So N processes with batch B give the same
training as one process with ``accumulate=N`` and batch B (global batch N*B): the same micro-batches, the same
gradients, the same steps. It is *not* the same as one process with batch N*B, whose BatchNorm sees all N*B
images at once. The running statistics move once per optimizer step, to the mean of what each micro-batch of
the global batch would move them to (:func:`all_reduce_mean`), in both cases.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from psvit.errors import ConfigError

#: How long a rank waits for the others in a collective (rank 0 evaluates the validation split alone).
TIMEOUT = timedelta(hours=2)


def launched() -> bool:
    """Whether this process was started as one of several (``WORLD_SIZE > 1``, as ``torchrun`` sets)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank from the environment (0 when not launched by ``torchrun``), before any init."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment, if launched as one of several, and return
    this process's device: ``cuda:LOCAL_RANK`` (backend ``nccl``) when ``device`` is CUDA, else ``device``
    (backend ``gloo``). Without ``WORLD_SIZE > 1``, or when already joined, only the device is chosen."""
    if not launched():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"process {local} of this node has no GPU: torchrun started more processes per node "
                f"than its {torch.cuda.device_count()} GPU(s); lower --nproc_per_node or use device=cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
    return device


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, the one that prints progress, evaluates and writes files (also true in a single process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()


def broadcast_float(value: float, device: torch.device, src: int = 0) -> float:
    """``value`` as rank ``src`` has it, on every rank (itself in a single process)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src)
    return float(tensor.item())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (itself in a single process)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place, with one collective per dtype; integer tensors
    are floor-divided (no-op in a single process)."""
    if not active():
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    n = world_size()
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat / n if flat.is_floating_point() else flat // n
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class StepBatches(Sampler[list[int]]):
    """This rank's micro-batches, ``accumulate`` per optimizer step, from one shuffle of the whole dataset.

    Each epoch draws one order from ``order`` (a seeded ``RandomSampler``: the same on every rank) and cuts it
    into global batches of ``world * accumulate * batch_size``. A global batch is split into ``world *
    accumulate`` contiguous parts (equal, or differing by one image for the last, short batch); rank r takes
    parts ``r * accumulate ... (r + 1) * accumulate - 1``. A last batch with fewer images than parts is dropped.
    With one process and ``accumulate=1`` these are the batches of a plain shuffled ``DataLoader``.
    """

    def __init__(
        self, order: Sampler[int], size: int, batch_size: int, *, accumulate: int = 1, world: int = 1, rank: int = 0
    ) -> None:
        self.order, self.size, self.batch_size = order, size, batch_size
        self.accumulate, self.world, self.rank = accumulate, world, rank

    @property
    def parts(self) -> int:
        """Micro-batches per global batch, over all ranks."""
        return self.world * self.accumulate

    @property
    def global_batch(self) -> int:
        return self.parts * self.batch_size

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch."""
        full, rest = divmod(self.size, self.global_batch)
        return full + (rest >= self.parts)

    def step_size(self, step: int) -> int:
        """Images in global batch ``step`` of an epoch (all ranks together)."""
        return min(self.global_batch, self.size - step * self.global_batch)

    def __len__(self) -> int:
        return self.steps * self.accumulate

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.order)
        for step in range(self.steps):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            size, extra = divmod(len(batch), self.parts)
            bounds = [0]
            for part in range(self.parts):
                bounds.append(bounds[-1] + size + (part < extra))
            for part in range(self.rank * self.accumulate, (self.rank + 1) * self.accumulate):
                yield batch[bounds[part] : bounds[part + 1]]
