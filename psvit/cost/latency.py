"""Measured inference latency on the current device (CPU here)."""

from __future__ import annotations

import statistics
import time

import torch
from spikingjelly.activation_based import functional
from torch import nn

from psvit.cost.inference import measuring
from psvit.errors import ConfigError


def measure_latency(model: nn.Module, images: torch.Tensor, *, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time in seconds of one forward of the whole ``images`` batch (eval mode, no autograd),
    after ``warmup`` untimed forwards; the neuron-state reset after each forward is not timed."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    times = []
    with measuring(model):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(images)
            elapsed = time.perf_counter() - start
            functional.reset_net(model)
            if i >= warmup:
                times.append(elapsed)
    return statistics.median(times)
