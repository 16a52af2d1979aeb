"""Training, fine-tuning and evaluation loops for spiking models (CPU, or CUDA when available)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that training is deterministic on a given machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over ``dataset``; shuffling is driven by its own seeded generator."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits for one batch (no grad), resetting the neurons' state afterwards."""
    with torch.no_grad():
        logits = model(images)
    functional.reset_net(model)
    return logits


def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "auto") -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode), in [0, 1]."""
    dev = resolve_device(device)
    model.to(dev).eval()
    correct = total = 0
    for images, labels in batches(dataset, batch_size):
        logits = predict(model, images.to(dev))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    return correct / max(total, 1)


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
    device: str = "auto",
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` in place with AdamW (+ cosine decay per step) and cross-entropy; returns per-epoch stats.

    Deterministic under ``seed`` on a given machine (data order, dropout-free model, seeded init upstream).
    """
    seed_everything(seed)
    dev = resolve_device(device)
    model.to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loader = batches(train_set, batch_size, shuffle=True, seed=seed)
    total_steps = max(1, epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)) if cosine else 1.0
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress or None, leave=False)
    for epoch in bar:
        loss_sum = correct = seen = 0
        for images, labels in _on_device(loader, dev):
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            functional.reset_net(model)
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        stats = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen}
        history.append(stats)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_acc']:.3f}")
    model.eval()
    return history


def _on_device(loader: DataLoader, dev: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for images, labels in loader:
        yield images.to(dev), labels.to(dev)
