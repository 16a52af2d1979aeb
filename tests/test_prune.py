"""Structured pruning: groups, the kept-channel rule, importances, exactness, size prediction, checkpoints."""

from __future__ import annotations

import copy
import random
import subprocess
import sys

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import psvit
from psvit.budget import MemoryModel
from psvit.cost import count_params, memory_saving, weight_bytes
from psvit.data import build_splits
from psvit.errors import ConfigError
from psvit.models import create_model
from psvit.models.lif import LIFNode
from psvit.prune import (
    IMPORTANCES,
    Group,
    PruneConstraints,
    Spikes,
    firing_rates,
    kept_per_head,
    list_groups,
    prune,
    recalibrate_bn,
    width_config,
)

#: Small models; the imagenet layout at 64 px has 4x4 tokens, enough for its attention LIF to fire.
IMG_SIZE = {"cifar": 16, "imagenet": 64}
SMALL = dict(embed_dim=32, num_heads=4, mlp_ratio=2, depth=2, T=4, in_channels=1, num_classes=10)
PRODUCER_ROLES = ("out", "bias", "bn_weight", "bn_bias")


@pytest.fixture(scope="module", params=["cifar", "imagenet"])
def setup(request: pytest.FixtureRequest) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A random Spikformer whose LIFs all fire at a meaningful rate, and 4 batches of 8 real digit images.

    BN affines are randomized (gamma, beta in [0.5, 2]) and BN statistics are estimated on the images, so every
    layer carries information and a wrongly pruned channel changes the logits.
    """
    variant = request.param
    splits = build_splits("digits", img_size=IMG_SIZE[variant], seed=0)
    images = torch.stack([splits.train[i][0] for i in range(32)])
    labels = torch.tensor([splits.train[i][1] for i in range(32)])
    batches = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    torch.manual_seed(0)
    model = create_model("spikformer", variant=variant, img_size=IMG_SIZE[variant], **SMALL)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, _BatchNorm):
                bn.weight.uniform_(0.5, 2.0)
                bn.bias.uniform_(0.5, 2.0)
    recalibrate_bn(model, batches, num_batches=4)
    lifs = [Spikes(name, 2) for name, m in model.named_modules() if isinstance(m, LIFNode)]
    rates = {name: float(r.mean()) for name, r in firing_rates(model, lifs, batches[:1]).items()}
    assert len(rates) == 19 and all(0.1 < r < 0.9 for r in rates.values()), rates
    return model, batches


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(images)
    functional.reset_net(model)
    return out


def group(model: nn.Module, name: str) -> Group:
    return next(g for g in list_groups(model) if g.name == name)


def test_groups_name_every_width_and_cover_coupled_tensors(setup):
    model, _ = setup
    groups = list_groups(model)
    names = [g.name for g in groups]
    assert names == [
        "sps.stage0",
        "sps.stage1",
        "sps.stage2",
        "embed",
        "block0.attn.qk",
        "block0.attn.v",
        "block0.mlp",
        "block1.attn.qk",
        "block1.attn.v",
        "block1.mlp",
    ]
    assert list_groups(("spikformer", model.config)) == groups
    partial = dict(variant=model.config["variant"], img_size=model.config["img_size"], **SMALL)
    assert width_config("spikformer", partial, {}) == model.config  # partial configs are resolved
    state = model.state_dict()
    modules = dict(model.named_modules())
    for g in groups:
        assert g.width == (model.config[g.config_key] if g.index is None else model.config[g.config_key][g.index])
        assert g.heads == (4 if g.kind in ("qk", "v") else 1)
        for s in g.slices:
            assert state[s.key].shape[s.dim] == g.width, (g.name, s)
        assert all(isinstance(modules[s.module], LIFNode) for s in g.spikes)
    embed_keys = {s.key for s in group(model, "embed").slices}
    assert {"head.weight", "block.1.norm2.bias", "patch_embed.rpe_conv.weight", "block.0.mlp.fc2_bn.bias"} <= embed_keys


@pytest.mark.parametrize(
    ("width", "heads", "ratio", "constraints", "expected"),
    [
        (64, 4, 1.0, PruneConstraints(), 16),
        (64, 4, 0.5, PruneConstraints(), 8),
        (64, 4, 0.53, PruneConstraints(), 8),  # round(8.48) = 8
        (64, 4, 0.0, PruneConstraints(), 1),  # floor: min_channels=1 -> 1 per head
        (64, 4, 0.3, PruneConstraints(round_to=8), 8),  # 4.8 -> nearest multiple of 8
        (64, 4, 0.2, PruneConstraints(round_to=8), 8),  # 3.2 -> 0, raised to the floor (one multiple of 8)
        (48, 4, 1.0, PruneConstraints(round_to=8), 12),  # ratio 1 keeps all, even when not a multiple
        (48, 4, 0.9, PruneConstraints(round_to=8), 8),  # 10.8 -> nearest multiple of 8
        (56, 4, 0.9, PruneConstraints(round_to=8), 14),  # 12.6 -> 16, capped at the head width
        (64, 4, 0.1, PruneConstraints(min_channels=40), 10),  # 40 channels over 4 heads
        (256, 1, 0.25, PruneConstraints(round_to=8), 64),
    ],
)
def test_kept_channel_rule(width, heads, ratio, constraints, expected):
    g = Group("g", "qk" if heads > 1 else "mlp", width, heads, "k", None, (), ())
    assert kept_per_head(g, ratio, constraints) == expected


def test_ratio_one_is_bit_identical(setup):
    model, batches = setup
    images = batches[0][0]
    for ratios in ({}, {g.name: 1.0 for g in list_groups(model)}):
        pruned = prune(model, ratios)
        assert pruned is not model and pruned.config == model.config
        assert torch.equal(logits(pruned, images), logits(model, images))


def silence(model: nn.Module, g: Group, channels: torch.Tensor) -> None:
    """Zero the filters, bias and BN affine of ``channels`` of ``g``: they then never spike and carry nothing."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for s in g.slices:
            if s.role in PRODUCER_ROLES:
                params[s.key].index_fill_(s.dim, channels, 0.0)


def dead_channels(g: Group, rng: torch.Generator) -> torch.Tensor:
    """A random quarter of each head's channels (at least one)."""
    per_head = max(1, g.head_width // 4)
    picks = [torch.randperm(g.head_width, generator=rng)[:per_head] for _ in range(g.heads)]
    return torch.cat([h * g.head_width + pick for h, pick in enumerate(picks)])


def other_channels(g: Group, dead: torch.Tensor) -> torch.Tensor:
    """As many channels per head as ``dead`` has, none of them in ``dead``."""
    per_head = len(dead) // g.heads
    heads = [[c for c in range(h * g.head_width, (h + 1) * g.head_width) if c not in dead] for h in range(g.heads)]
    return torch.tensor([c for head in heads for c in head[:per_head]])


def scores_for(dead: dict[str, torch.Tensor]):
    """An importance that scores the ``dead`` channels 0 and every other channel 1."""

    def importance(model: nn.Module, groups: list[Group], data: object) -> dict[str, torch.Tensor]:
        return {g.name: torch.ones(g.width).index_fill_(0, dead[g.name], 0.0) for g in groups}

    return importance


def prune_dead(model: nn.Module, groups: list[Group], dead: dict[str, torch.Tensor]) -> nn.Module:
    ratios = {g.name: 1 - len(dead[g.name]) / g.width for g in groups}
    pruned = prune(model, ratios, importance=scores_for(dead))
    for g in groups:
        assert group(pruned, g.name).width == g.width - len(dead[g.name])
    return pruned


def test_pruning_silent_channels_is_exact(setup):
    """Per group (every kind, embed included) and for all groups at once: channels that carry nothing are
    removed without changing the logits; removing as many live channels instead does change them."""
    model, batches = setup
    images = batches[0][0]
    groups = list_groups(model)
    rng = torch.Generator().manual_seed(0)
    dead = {g.name: dead_channels(g, rng) for g in groups}
    everything = copy.deepcopy(model)
    for g in groups:
        silent = copy.deepcopy(model)
        silence(silent, g, dead[g.name])
        silence(everything, g, dead[g.name])
        reference = logits(silent, images)
        torch.testing.assert_close(logits(prune_dead(silent, [g], dead), images), reference, rtol=0, atol=1e-5)
        live = {g.name: other_channels(g, dead[g.name])}
        assert not torch.allclose(logits(prune_dead(silent, [g], live), images), reference, atol=1e-3), g.name
    reference = logits(everything, images)
    pruned = prune_dead(everything, groups, dead)
    torch.testing.assert_close(logits(pruned, images), reference, rtol=0, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < 0.7 * sum(p.numel() for p in model.parameters())


def real_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_width_config_predicts_the_pruned_size_exactly(setup):
    """Property test over random ratio dicts and constraints: predicted config, params and bytes are real."""
    model, _ = setup
    names = [g.name for g in list_groups(model)]
    rng = random.Random(0)
    for _ in range(12):
        ratios = {n: rng.choice([0.0, 1.0, rng.random()]) for n in rng.sample(names, rng.randint(1, len(names)))}
        constraints = PruneConstraints(min_channels=rng.choice([1, 4, 8]), round_to=rng.choice([1, 2, 4, 8]))
        predicted = width_config("spikformer", model.config, ratios, constraints)
        pruned = prune(model, ratios, constraints=constraints)
        assert pruned.config == predicted
        assert count_params("spikformer", predicted) == sum(p.numel() for p in pruned.parameters())
        assert weight_bytes("spikformer", predicted) == real_bytes(pruned)
        saving = memory_saving("spikformer", model.config, predicted)
        assert saving == pytest.approx(1 - real_bytes(pruned) / real_bytes(model), abs=1e-12)
        memory = MemoryModel("spikformer", model.config, constraints)  # the search's accounting, from the widths
        assert memory.bytes(ratios) == real_bytes(pruned) and memory.config(ratios) == predicted
        for g in list_groups(pruned):
            assert g.width % g.heads == 0 and g.width >= 1


def test_pruned_model_round_trips_through_a_checkpoint_in_a_fresh_process(setup, tmp_path):
    model, batches = setup
    images = batches[0][0]
    ratios = {"embed": 0.5, "block0.attn.qk": 0.5, "block1.attn.v": 0.25, "block1.mlp": 0.3, "sps.stage1": 0.5}
    pruned = prune(model, ratios)
    psvit.save(pruned, tmp_path / "pruned.pt")
    torch.save(images, tmp_path / "images.pt")
    script = (
        "import sys, torch, psvit\n"
        "model = psvit.load(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    torch.save(model(torch.load(sys.argv[2], weights_only=True)), sys.argv[3])\n"
    )
    paths = [str(tmp_path / name) for name in ("pruned.pt", "images.pt", "logits.pt")]
    subprocess.run([sys.executable, "-c", script, *paths], check=True)
    assert psvit.load(tmp_path / "pruned.pt").config == pruned.config
    assert torch.equal(torch.load(paths[2], weights_only=True), logits(pruned, images))


@pytest.mark.parametrize(
    ("ratios", "constraints", "message"),
    [
        ({"block0.mlp": -0.1}, PruneConstraints(), "'block0.mlp' must be a number in [0, 1], got -0.1"),
        ({"block0.mlp": 1.5}, PruneConstraints(), "'block0.mlp' must be a number in [0, 1], got 1.5"),
        ({"embed": float("nan")}, PruneConstraints(), "'embed' must be a number in [0, 1]"),
        ({"embed": "half"}, PruneConstraints(), "'embed' must be a number in [0, 1]"),
        ({"block7.mlp": 0.5}, PruneConstraints(), "unknown prune group 'block7.mlp'"),
        ({"block1.attn.qk": 0.05}, PruneConstraints(min_channels=0), "group 'block1.attn.qk' leaves a head with 0"),
    ],
)
def test_bad_ratios_give_one_line_errors_naming_the_group(setup, ratios, constraints, message):
    model, _ = setup
    for call in (
        lambda: width_config("spikformer", model.config, ratios, constraints),
        lambda: prune(model, ratios, constraints=constraints),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [{"round_to": 0}, {"min_channels": -1}, {"round_to": 2.5}])
def test_bad_constraints_are_config_errors(bad):
    with pytest.raises(ConfigError, match="prune\\."):
        PruneConstraints(**bad)


def test_importances_score_every_channel_and_leave_the_model_untouched(setup):
    """On a model with silent channels: data-driven scores and BN scale score them 0 (and live ones mostly
    above 0); L1 is the L1 norm of the channel's filters plus outgoing weights; the model is unchanged."""
    model, batches = setup
    silent = copy.deepcopy(model)
    groups = list_groups(silent)
    dead = {g.name: dead_channels(g, torch.Generator().manual_seed(1)) for g in groups}
    for g in groups:
        silence(silent, g, dead[g.name])
    before = copy.deepcopy(silent.state_dict())
    for name, importance in IMPORTANCES.items():
        scores = importance(silent, groups, batches[:2])
        for g in groups:
            s = scores[g.name]
            assert s.shape == (g.width,) and torch.isfinite(s).all() and (s >= 0).all(), (name, g.name)
            live = torch.ones(g.width, dtype=torch.bool).index_fill_(0, dead[g.name], False)
            if name in ("bn_scale", "taylor", "spike_activity"):  # l1/l2 also count the outgoing weights
                assert (s[~live] == 0).all(), (name, g.name)
            assert (s[live] > 0).float().mean() > 0.25, (name, g.name)
    assert all(torch.equal(before[k], v) for k, v in silent.state_dict().items())
    assert all(p.grad is None for p in silent.parameters()) and not silent.training
    mlp = silent.block[0].mlp
    fc1, fc2 = (mlp.fc1_linear, mlp.fc2_linear) if hasattr(mlp, "fc1_linear") else (mlp.fc1_conv, mlp.fc2_conv)
    expected = fc1.weight.abs().flatten(1).sum(1) + fc2.weight.abs().transpose(0, 1).flatten(1).sum(1)
    torch.testing.assert_close(IMPORTANCES["l1"](silent, groups, None)["block0.mlp"], expected.detach())


@pytest.mark.parametrize("importance", ["taylor", "spike_activity", "no_such_score"])
def test_importance_errors(setup, importance):
    model, _ = setup
    with pytest.raises(ConfigError, match=importance):
        prune(model, {"block0.mlp": 0.5}, importance=importance)


def test_recalibrate_bn_averages_the_given_batches(setup):
    model, batches = setup
    pruned = prune(model, {g.name: 0.5 for g in list_groups(model)})
    weights = copy.deepcopy({k: v for k, v in pruned.named_parameters()})
    extra = [(torch.rand_like(batches[0][0]), batches[0][1])]  # past num_batches: must not be used
    assert recalibrate_bn(pruned, batches + extra, num_batches=len(batches)) is pruned
    # the first BN sees conv(pixels): its running mean must be the plain average of the per-batch means
    stem, bn = pruned.patch_embed.proj_conv, pruned.patch_embed.proj_bn
    with torch.no_grad():
        means = [stem(images).mean((0, 2, 3)) for images, _ in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    assert int(bn.num_batches_tracked) == len(batches) and bn.momentum == 0.1 and not pruned.training
    assert all(torch.equal(weights[k], v) for k, v in pruned.named_parameters())
