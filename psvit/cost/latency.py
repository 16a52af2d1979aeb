"""Measured inference latency on the device the model is on, with accelerator synchronization (the clock of
torch.utils.benchmark, which synchronizes a CUDA device before it reads the time).

Each forward is timed on its own and the median taken; the forwards are exactly ``warmup + repeats``
(``torch.utils.benchmark.Timer.timeit`` would add 2 hidden warm-up forwards to every call).
"""

from __future__ import annotations

import statistics
import timeit

import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.benchmark.utils.timer import timer as synchronized_clock

from psvit.errors import ConfigError
from psvit.models.inference import measuring

#: Untimed forwards before the timed ones.
WARMUP = 2


def measure_latency(model: nn.Module, images: torch.Tensor, *, repeats: int = 10, warmup: int = WARMUP) -> float:
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

    with measuring(model):
        for _ in range(warmup):
            forward()
        times = timeit.Timer(forward, timer=synchronized_clock).repeat(repeat=repeats, number=1)
    return statistics.median(times)
