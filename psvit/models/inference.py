"""Running a spiking model for measurement: eval mode, no autograd, fresh neuron state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from spikingjelly.activation_based import functional
from torch import nn


@contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode, autograd off and neuron state reset on entry and on exit; the train/eval mode is restored.
    A caller running several forwards inside must ``functional.reset_net(model)`` after each."""
    was_training = model.training
    model.eval()
    functional.reset_net(model)
    try:
        with torch.no_grad():
            yield
    finally:
        functional.reset_net(model)
        model.train(was_training)
