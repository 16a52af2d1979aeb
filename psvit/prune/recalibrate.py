"""BatchNorm recalibration: re-estimate running statistics after pruning, without any training."""

from __future__ import annotations

import itertools

import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from psvit.prune.importance import Batches


def recalibrate_bn(model: nn.Module, batches: Batches, num_batches: int) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over the first
    ``num_batches`` of ``batches`` (train-mode forwards with ``momentum=None``, no gradients).

    Weights are not changed. Works in place and returns ``model``, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    device = next(model.parameters()).device
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for images, _ in itertools.islice(batches, num_batches):
                model(images.to(device))
                functional.reset_net(model)
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        functional.reset_net(model)
        model.eval()
    return model
