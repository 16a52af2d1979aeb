"""Training, fine-tuning and evaluation loops for spiking models, on a :class:`~psvit.train.compute.Compute`."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import random

import numpy as np
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from psvit.errors import ConfigError
from psvit.train import distributed
from psvit.train.compiled import for_evaluation
from psvit.train.compute import Compute, UserErrorLoader


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that training is deterministic on a given machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(
    dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, compute: Compute | None = None
) -> DataLoader:
    """A DataLoader over ``dataset`` with ``compute``'s loader settings (default: in-process loading)."""
    return (compute or Compute(num_workers=0)).loader(dataset, batch_size, shuffle=shuffle, seed=seed)


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits for one batch (no grad), resetting the neurons' state afterwards."""
    with torch.no_grad():
        logits = model(images)
    functional.reset_net(model)
    return logits


def evaluate(model: nn.Module, dataset: Dataset, compute: Compute | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode, on ``compute``'s device and precision, compiled with
    ``compute.compile``), in [0, 1]."""
    compute = compute or Compute()
    model.to(compute.device).eval()
    runner = for_evaluation(model, compute)
    correct = torch.zeros((), dtype=torch.long, device=compute.device)
    total = 0
    with compute.autocast():
        for images, labels in compute.to_device(compute.loader(dataset, compute.eval_batch_size)):
            correct += (predict(runner, images).argmax(1) == labels).sum()
            total += len(labels)
    return correct.item() / max(total, 1)


def train_model(
    model: nn.Module,
    train_set: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    accumulate: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    label_smoothing: float = 0.0,
    cosine: bool = True,
    seed: int = 0,
    compute: Compute | None = None,
    progress: bool = True,
    desc: str = "train",
    teacher: nn.Module | None = None,
    kd_weight: float = 0.0,
    temperature: float = 1.0,
    val_set: Dataset | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with AdamW (+ cosine decay per step) and cross-entropy; returns per-epoch stats.

    Deterministic under ``seed`` on a given machine (data order, dropout-free model, seeded init upstream).
    Runs on ``compute``'s device; with ``compute.amp`` the forward is autocast (fp16 with a gradient scaler).

    With ``accumulate`` k > 1 each optimizer step sums the gradients of k micro-batches of ``batch_size`` (each
    loss weighted by its share of the step's images: 1/k for full batches), so a step sees k * ``batch_size``
    images; the cosine schedule counts optimizer steps. When a process group is running
    (:mod:`psvit.train.distributed`, under ``torchrun``) the model is wrapped in DistributedDataParallel and
    each rank takes its slice of every global batch of world * k * ``batch_size`` images
    (:class:`~psvit.train.distributed.StepBatches`); only rank 0 shows progress. BatchNorm normalises each
    micro-batch on its own, so N ranks give the same training as one process with ``accumulate=N``.

    With a ``teacher`` and ``kd_weight > 0`` the loss is ``(1 - w) * CE + w * T^2 * KL(teacher || model)`` on
    logits softened by ``temperature`` T (Hinton et al.'s distillation). With a ``val_set`` the model is scored
    on it before training (epoch 0) and after every epoch, and ends with the weights of the best epoch (the
    earliest on ties): it is never worse on ``val_set`` than it started. The stats then start with epoch 0,
    and every epoch's have ``val_acc``; :func:`best_epoch` says which one the model ended with. Under several
    processes rank 0 scores the model and sends the score to the others, so every rank keeps the same epoch.
    """
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ConfigError(f"finetune.accumulate must be an integer >= 1, got {accumulate!r}")
    seed_everything(seed)
    compute = compute or Compute()
    world, rank = distributed.world_size(), distributed.rank()
    best = None
    history: list[dict[str, float]] = []
    if val_set is not None:
        best = (validate(model, val_set, compute), 0, copy.deepcopy(model.state_dict()))
        history.append({"epoch": 0, "val_acc": best[0]})
    distil = teacher is not None and kd_weight > 0
    if distil:
        teacher.to(compute.device).eval()
    model.to(compute.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.amp == "fp16")
    generator = torch.Generator().manual_seed(seed)  # the same shuffle on every rank
    plan = distributed.StepBatches(
        RandomSampler(train_set, generator=generator),
        len(train_set),
        batch_size,
        accumulate=accumulate,
        world=world,
        rank=rank,
    )
    if plan.steps == 0:
        raise ConfigError(
            f"the training split has {len(train_set)} images, fewer than one per micro-batch "
            f"({world} process(es) x finetune.accumulate={accumulate})"
        )
    loader = UserErrorLoader(
        train_set,
        batch_sampler=plan,
        generator=generator,
        num_workers=compute.workers_for(train_set),
        pin_memory=compute.pin_memory and compute.device.type == "cuda",
    )
    total_steps = max(1, epochs * plan.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)) if cosine else 1.0
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    runner: nn.Module = model
    if world > 1:
        runner = data_parallel(model, compute.device)
    statistics = StepStatistics(model, micro_batches=accumulate, world=world)
    bar = tqdm(
        range(epochs), desc=desc, unit="epoch", disable=not progress or not distributed.is_main() or None, leave=False
    )
    for epoch in bar:
        model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=compute.device)  # loss * images, correct, images
        micro = compute.to_device(loader)
        for step in range(plan.steps):
            optimizer.zero_grad(set_to_none=True)
            statistics.start()
            step_images = plan.step_size(step)
            for i in range(accumulate):
                images, labels = next(micro)
                sync = i == accumulate - 1 or world == 1  # DDP reduces the summed gradients once, on the last
                with contextlib.nullcontext() if sync else runner.no_sync():
                    with compute.autocast():
                        logits = runner(images)
                        loss = loss_fn(logits.float(), labels)
                        if distil:
                            loss = (1 - kd_weight) * loss + kd_weight * distillation(
                                logits, predict(teacher, images), temperature
                            )
                    share = world * len(labels) / step_images  # DDP divides the gradients by world
                    scaler.scale(loss * share if share != 1 else loss).backward()
                functional.reset_net(model)
                statistics.micro_batch_done()
                sums[0] += loss.detach().double() * len(labels)
                sums[1] += (logits.argmax(1) == labels).sum()
                sums[2] += len(labels)
            statistics.finish()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        loss_sum, correct, seen = distributed.all_reduce_sum(sums).tolist()
        stats = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen}
        if best is not None:
            stats["val_acc"] = validate(model, val_set, compute)
            if stats["val_acc"] > best[0]:
                best = (stats["val_acc"], epoch + 1, copy.deepcopy(model.state_dict()))
        history.append(stats)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.3f}")
    del runner  # DDP's gradient hooks go with it
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return history


def data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` wrapped in DDP. BatchNorm statistics are averaged after each step (:class:`StepStatistics`), not
    sent from rank 0 before each forward. Parameters the forward does not use (Spikformer's ``norm1``/``norm2``)
    keep no gradient, as in one process."""
    no_forward_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True, **no_forward_sync
    )


def validate(model: nn.Module, val_set: Dataset, compute: Compute) -> float:
    """:func:`evaluate` on ``val_set``; under several processes rank 0 evaluates and every rank gets its score."""
    score = evaluate(model, val_set, compute) if distributed.is_main() else 0.0
    return distributed.broadcast_float(score, compute.device)


class StepStatistics:
    """BatchNorm running statistics that move once per optimizer step, to the mean of what each micro-batch of
    the global batch (on every rank) moves them to from the step's start.

    In one process with ``accumulate=k`` each micro-batch's update is taken from the step's starting values and
    the k results are averaged; under DDP the ranks' results are averaged too (one all-reduce). So N ranks with
    one micro-batch each end a step with the same statistics as one process with ``accumulate=N``. With one
    micro-batch in one process this is the plain BatchNorm update.
    """

    def __init__(self, model: nn.Module, *, micro_batches: int, world: int) -> None:
        self.buffers = [
            b
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var, m.num_batches_tracked)
            if b is not None
        ]
        self.micro_batches, self.world = micro_batches, world
        self.initial: list[torch.Tensor] = []
        self.sums: list[torch.Tensor] = []

    def start(self) -> None:
        if self.micro_batches > 1:
            self.initial = [b.detach().clone() for b in self.buffers]
            self.sums = [torch.zeros_like(b) for b in self.buffers]

    def micro_batch_done(self) -> None:
        if self.micro_batches > 1:
            with torch.no_grad():
                for buffer, initial, total in zip(self.buffers, self.initial, self.sums):
                    total += buffer
                    buffer.copy_(initial)

    def finish(self) -> None:
        with torch.no_grad():
            if self.micro_batches > 1:
                for buffer, total in zip(self.buffers, self.sums):
                    buffer.copy_(
                        total / self.micro_batches if total.is_floating_point() else total // self.micro_batches
                    )
            if self.world > 1:  # num_batches_tracked is the same on every rank
                distributed.all_reduce_mean([b for b in self.buffers if b.is_floating_point()])


def best_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The stats of the epoch :func:`train_model` kept (the best ``val_acc``, earliest on ties)."""
    return max(history, key=lambda h: h["val_acc"])


def distillation(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(logits / T))``, averaged over the batch."""
    t = temperature
    return (
        nn.functional.kl_div(
            nn.functional.log_softmax(logits.float() / t, 1),
            nn.functional.log_softmax(teacher_logits.float() / t, 1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )
