"""Training, fine-tuning and evaluation loops for spiking models, on a :class:`~psvit.train.compute.Compute`."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from psvit.train.compiled import for_evaluation
from psvit.train.compute import Compute


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that training is deterministic on a given machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            compute: Compute | None = None) -> DataLoader:
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

    With a ``teacher`` and ``kd_weight > 0`` the loss is ``(1 - w) * CE + w * T^2 * KL(teacher || model)`` on
    logits softened by ``temperature`` T (Hinton et al.'s distillation). With a ``val_set`` the model is scored
    on it before training (epoch 0) and after every epoch, and ends with the weights of the best epoch (the
    earliest on ties): it is never worse on ``val_set`` than it started. The stats then start with epoch 0,
    and every epoch's have ``val_acc``; :func:`best_epoch` says which one the model ended with.
    """
    seed_everything(seed)
    compute = compute or Compute()
    best = None
    history: list[dict[str, float]] = []
    if val_set is not None:
        best = (evaluate(model, val_set, compute), 0, copy.deepcopy(model.state_dict()))
        history.append({"epoch": 0, "val_acc": best[0]})
    distil = teacher is not None and kd_weight > 0
    if distil:
        teacher.to(compute.device).eval()
    model.to(compute.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(compute.device.type, enabled=compute.amp == "fp16")
    loader = compute.loader(train_set, batch_size, shuffle=True, seed=seed)
    total_steps = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)) if cosine else 1.0
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress or None, leave=False)
    for epoch in bar:
        model.train()
        loss_sum = correct = seen = 0
        for images, labels in compute.to_device(loader):
            with compute.autocast():
                logits = model(images)
                loss = loss_fn(logits.float(), labels)
                if distil:
                    loss = (1 - kd_weight) * loss + kd_weight * distillation(logits, predict(teacher, images),
                                                                             temperature)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            functional.reset_net(model)
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        stats = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen}
        if best is not None:
            stats["val_acc"] = evaluate(model, val_set, compute)
            if stats["val_acc"] > best[0]:
                best = (stats["val_acc"], epoch + 1, copy.deepcopy(model.state_dict()))
        history.append(stats)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.3f}")
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return history


def best_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The stats of the epoch :func:`train_model` kept (the best ``val_acc``, earliest on ties)."""
    return max(history, key=lambda h: h["val_acc"])


def distillation(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(logits / T))``, averaged over the batch."""
    t = temperature
    return nn.functional.kl_div(nn.functional.log_softmax(logits.float() / t, 1),
                                nn.functional.log_softmax(teacher_logits.float() / t, 1),
                                reduction="batchmean", log_target=True) * t * t

