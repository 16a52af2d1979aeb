"""The graph that leaves psvit: BatchNorm folded into its conv/linear, LIF neurons as stateless element-wise ops.

:func:`exportable` turns a psvit model (any registered family) into a plain ``nn.Module`` whose forward is a pure
function of the images: no neuron state survives a call, so ``torch.export``/ONNX can trace it with the ``T`` time
steps unrolled, and no ``reset_net`` is needed between batches.

* Folding: the family's channel groups (:func:`psvit.models.get_family`) name every conv/linear with the
  BatchNorm that follows it (their ``producer`` slices); each pair becomes one layer with the BN's affine folded
  into its weights and bias, and the BN becomes an identity. A BN that follows no declared layer is kept.
* Quantized layers (:mod:`psvit.quant`): their weights are ``codes * scale`` per output channel, and stay so when a
  BN is folded into them (the BN's factor goes into the scale, :mod:`psvit.export.quantized`); the graph holds
  each layer's codes and scales (``graph.quantized_weights``) for the ONNX file's integer initializers.
* Neurons: each LIF becomes :class:`StatelessLIF`, the same arithmetic as psvit's CPU inference loop
  (:mod:`psvit.models.lif`) in the same order, so an unfolded graph gives bit-identical spikes.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from psvit.errors import PsvitError
from psvit.export.quantized import ATTR as QUANT_ATTR
from psvit.export.quantized import QuantWeight, exact_codes, fold_into_scale
from psvit.models import get_family
from psvit.prune.groups import list_groups
from psvit.quant import quant_layers, quantization


class ExportError(PsvitError):
    """The model cannot be exported as asked (an unsupported neuron, an exporter that fails, a file off parity)."""


class StatelessLIF(nn.Module):
    """Multi-step hard-reset, decay-input LIF with ``v_reset = 0``, its membrane starting at 0 on every call:
    ``h = (x - v) / tau + v``, ``s = h >= v_th``, ``v = 0 where s else h``, for each of the ``T`` steps."""

    def __init__(self, tau: float, v_threshold: float) -> None:
        super().__init__()
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x_seq[0])
        spikes = []
        for t in range(x_seq.shape[0]):  # T is static: the steps are unrolled in the traced graph
            h = (x_seq[t] - v) / self.tau + v
            s = h >= self.v_threshold
            spikes.append(s.to(x_seq.dtype))
            v = torch.where(s, torch.zeros_like(h), h)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}"


def stateless_neuron(node: nn.Module, name: str) -> StatelessLIF:
    """The :class:`StatelessLIF` computing what spikingjelly neuron ``node`` computes at inference."""
    ok = (
        isinstance(node, neuron.LIFNode)
        and node.step_mode == "m"
        and node.decay_input
        and node.v_reset is not None
        and float(node.v_reset) == 0.0
    )
    if not ok:
        raise ExportError(
            f"cannot export neuron {name} ({type(node).__name__}): only multi-step, decay-input LIF "
            "neurons with a hard reset to 0 (the Spikformer neuron) are supported"
        )
    return StatelessLIF(node.tau, node.v_threshold)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` module names of every conv/linear followed by a BatchNorm, from the family's groups."""
    pairs: dict[str, str] = {}
    for group in get_family(model.model_name).groups(model.config):
        layer = None
        for sl in group.slices:
            if sl.role == "out":
                layer = sl.key.rsplit(".", 1)[0]
            elif sl.role == "bn_weight" and layer is not None:
                pairs[sl.key.rsplit(".", 1)[0]] = layer
    return [(layer, bn) for bn, layer in pairs.items()]


@torch.no_grad()
def fold_batchnorm(
    layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm, quantized: QuantWeight | None = None
) -> QuantWeight | None:
    """Fold eval-mode ``bn`` (per output channel) into ``layer``'s weight and bias, in place. A ``quantized``
    layer's factor goes into its scales (its weight stays ``codes * scales``); returns its new codes and scales."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    if quantized is None:
        layer.weight.mul_(scale.reshape(shape))
    else:
        codes, scales = fold_into_scale(quantized.codes, quantized.scales, scale)
        quantized = dataclasses.replace(quantized, codes=codes, scales=scales)
        layer.weight.copy_(quantized.weight)
    layer.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return quantized


def quantized_weights(model: nn.Module) -> dict[str, QuantWeight]:
    """The codes and scales of each quantized layer of ``model`` (none for a float32 model)."""
    bits = quantization(model)
    if not bits:
        return {}
    groups = list_groups(model)
    group_of = {q.name: q.group for q in quant_layers(groups, {g.name for g in groups})}
    return {
        name: QuantWeight(name, group_of.get(name, name), b, *exact_codes(model.get_submodule(name).weight, b))
        for name, b in bits.items()
    }


@torch.no_grad()
def exportable(model: nn.Module, *, fold_bn: bool = True) -> nn.Module:
    """A copy of psvit ``model`` in eval mode with stateless neurons and (``fold_bn``) BatchNorm folded.

    A quantized model's graph holds the :class:`~psvit.export.quantized.QuantWeight` of each quantized layer in
    ``graph.quantized_weights`` (a list), and each of those layers' weight is exactly their ``codes * scales``."""
    graph = copy.deepcopy(model).cpu().eval()
    quant = quantized_weights(graph)
    if fold_bn:
        for layer, bn in conv_bn_pairs(graph):
            folded = fold_batchnorm(graph.get_submodule(layer), graph.get_submodule(bn), quant.get(layer))
            if folded is not None:
                quant[layer] = folded
            _replace(graph, bn, nn.Identity())
    for name, q in quant.items():
        graph.get_submodule(name).weight.copy_(q.weight)
    setattr(graph, QUANT_ATTR, list(quant.values()))
    for name, module in list(graph.named_modules()):
        if isinstance(module, neuron.BaseNode):
            _replace(graph, name, stateless_neuron(module, name))
    for p in graph.parameters():
        p.requires_grad_(False)
    return graph


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
