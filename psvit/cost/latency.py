"""Measured inference latency on the device the model is on, with CUDA synchronization (torch.utils.benchmark)."""

from __future__ import annotations

import statistics

import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils import benchmark

from psvit.cost.inference import measuring
from psvit.errors import ConfigError


def measure_latency(model: nn.Module, images: torch.Tensor, *, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time in seconds of one forward of the whole ``images`` batch (eval mode, no autograd) on the
    model's device, after ``warmup`` untimed forwards. Each timed forward includes the neuron-state reset
    (a few tensor fills) and, on CUDA, the synchronization that makes the time real."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = next(model.parameters()).device
    images = images.to(device)

    def forward() -> None:
        model(images)
        functional.reset_net(model)

    timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=torch.get_num_threads())
    with measuring(model):
        for _ in range(warmup):
            forward()
        times = [timer.timeit(1).mean for _ in range(repeats)]
    return statistics.median(times)
