"""The family registration API: a new family declared in one place gets groups, exact cost and pruning, with no
per-family formulas; an incomplete group declaration is caught."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from psvit.cost import count_params, layer_macs, measure_firing_rates, spike_probes
from psvit.errors import ConfigError
from psvit.models import create_model, list_models
from psvit.models.channels import Group, Spikes, consumer, producer, unused
from psvit.models.lif import lif
from psvit.models.registry import get_family, group_kinds, register_model
from psvit.prune import list_groups, prune, width_config


def toy_config(
    *, width: int = 12, hidden: int = 20, img_size: int = 8, T: int = 2, in_channels: int = 1, num_classes: int = 3
) -> dict[str, Any]:
    return {
        "width": width,
        "hidden": hidden,
        "img_size": img_size,
        "T": T,
        "in_channels": in_channels,
        "num_classes": num_classes,
    }


def toy_groups(cfg: dict[str, Any]) -> list[Group]:
    return [
        Group(
            "conv",
            "toy_conv",
            cfg["width"],
            1,
            "width",
            None,
            (*producer("conv", "bn", False), consumer("fc1"), *unused("spare", 1)[:1]),
            (Spikes("lif", 2),),
        ),
        Group(
            "fc",
            "toy_fc",
            cfg["hidden"],
            1,
            "hidden",
            None,
            (*producer("fc1", "fc1_bn", True), consumer("head")),
            (Spikes("fc1_lif", 2),),
        ),
    ]


@register_model(
    "toy_snn",
    resolve_config=toy_config,
    groups=toy_groups,
    kinds=("toy_conv", "toy_fc"),
    analog_layers=("conv",),
    matmuls={"gram": "fc1_lif"},
)
class ToySNN(nn.Module):
    """conv-BN-LIF, token mean, linear-BN-LIF, a Gram matrix of the spikes (a matmul in forward's own code),
    a head; ``spare`` is never called."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = cfg = toy_config(**config)
        self.conv = nn.Conv2d(cfg["in_channels"], cfg["width"], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cfg["width"])
        self.lif = lif()
        self.fc1 = nn.Linear(cfg["width"], cfg["hidden"])
        self.fc1_bn = nn.BatchNorm1d(cfg["hidden"])
        self.fc1_lif = lif()
        self.head = nn.Linear(cfg["hidden"], cfg["num_classes"])
        self.spare = nn.Linear(cfg["width"], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.config["T"]
        x = self.bn(self.conv(x.repeat(T, 1, 1, 1)))
        s = self.lif(x.reshape(T, -1, *x.shape[1:])).flatten(3).mean(3)  # (T, B, width)
        h = self.fc1_lif(self.fc1_bn(self.fc1(s.flatten(0, 1))).reshape(T, -1, self.config["hidden"]))
        gram = h @ h.transpose(1, 2)  # (T, B, B)
        return self.head(h).mean(0) + gram.mean((0, 2)).unsqueeze(1)


def test_registry_lists_the_family_and_its_kinds() -> None:
    assert {"sdt", "spikformer", "toy_snn"} <= set(list_models())
    assert get_family("toy_snn").model is ToySNN and ToySNN.model_name == "toy_snn"
    assert {"toy_conv", "toy_fc", "qkv", "qk"} <= set(group_kinds())
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy_snn", resolve_config=toy_config, groups=toy_groups, kinds=())(ToySNN)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("no_such_family")


def test_cost_is_exact_without_formulas() -> None:
    rng = random.Random(0)
    for _ in range(5):
        config = toy_config(width=rng.randint(1, 30), hidden=rng.randint(1, 30), img_size=rng.choice([4, 8]))
        model = create_model("toy_snn", **config)
        params = sum(p.numel() for p in model.parameters())
        assert count_params("toy_snn", config) == params
        assert count_params("toy_snn", config, include_unused_norms=False) == params - model.spare.weight.numel() - 5
        macs = layer_macs("toy_snn", config)
        assert list(macs) == ["conv", "fc1", "gram", "head"]
        assert macs["conv"] == config["img_size"] ** 2 * 9 * config["width"]
        assert macs["gram"] == config["hidden"]  # one image: a 1x1 Gram matrix over `hidden`
        images = torch.rand(3, 1, config["img_size"], config["img_size"])
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(images)
        functional.reset_net(model)
        per_image = sum(v for k, v in macs.items() if k != "gram")
        gram = config["T"] * 3 * 3 * config["hidden"]  # (3 x hidden) @ (hidden x 3) per step
        assert counter.get_total_flops() == 2 * (config["T"] * 3 * per_image + gram)
    assert spike_probes("toy_snn", toy_config()) == {
        "fc1": ("fc1", "input"),
        "gram": ("fc1_lif", "output"),
        "head": ("head", "input"),
    }
    rates = measure_firing_rates(create_model("toy_snn", **toy_config()), torch.rand(4, 1, 8, 8))
    assert set(rates) == {"fc1", "gram", "head"} and all(0 <= r <= 1 for r in rates.values())


def test_pruning_a_new_family_predicts_its_size() -> None:
    torch.manual_seed(0)
    model = create_model("toy_snn", **toy_config()).eval()
    assert [g.name for g in list_groups(model)] == ["conv", "fc"]
    ratios = {"conv": 0.5, "fc": 0.3}
    predicted = width_config("toy_snn", model.config, ratios)
    pruned = prune(model, ratios)
    assert pruned.config == predicted == {**model.config, "width": 6, "hidden": 6}
    assert count_params("toy_snn", predicted) == sum(p.numel() for p in pruned.parameters())


def incomplete_groups(cfg: dict[str, Any]) -> list[Group]:
    """``toy_groups`` without fc1's input slice: the conv width sizes a parameter no group covers."""
    conv, fc = toy_groups(cfg)
    return [
        Group(
            conv.name,
            conv.kind,
            conv.width,
            1,
            "width",
            None,
            tuple(s for s in conv.slices if s.key != "fc1.weight"),
            conv.spikes,
        ),
        fc,
    ]


@register_model("toy_snn_incomplete", resolve_config=toy_config, groups=incomplete_groups, kinds=("toy_conv",))
class IncompleteToySNN(ToySNN):
    pass


def test_incomplete_groups_are_caught_before_any_wrong_count() -> None:
    with pytest.raises(ValueError, match="fc1.weight depends on a width that no group's slices cover"):
        count_params("toy_snn_incomplete", toy_config())
