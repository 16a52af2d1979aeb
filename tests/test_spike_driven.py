"""Spike-driven Transformer v1: official layout and forward, pruning exactness and exact cost prediction."""

from __future__ import annotations

import random

import pytest
import torch
from official_reference import official_shapes
from sdt_reference import SDT_8_512_KEYS, reference_forward
from spikingjelly.activation_based import neuron
from test_prune import dead_channels, logits, other_channels, prune_dead, silence
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

import psvit
from psvit.budget import select_groups
from psvit.cost import count_flops, count_params, layer_macs, spike_probes, weight_bytes
from psvit.data import build_splits
from psvit.errors import ConfigError
from psvit.models import create_model
from psvit.models.lif import LIFNode
from psvit.prune import PruneConstraints, Spikes, firing_rates, list_groups, prune, recalibrate_bn, width_config

SDT_8_512 = {
    "img_size": 224,
    "pooling_stat": "1111",
    "embed_dim": 512,
    "num_heads": 8,
    "mlp_ratio": 4.0,
    "depth": 8,
    "T": 4,
    "in_channels": 3,
    "num_classes": 1000,
}
#: Small models of both stem layouts: CIFAR-style (patch 4) and ImageNet-style (patch 16).
SMALL = {
    "0011": {
        "img_size": 16,
        "pooling_stat": "0011",
        "embed_dim": 32,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "depth": 2,
        "T": 4,
        "in_channels": 1,
        "num_classes": 10,
    },
    "1111": {
        "img_size": 64,
        "pooling_stat": "1111",
        "embed_dim": 32,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "depth": 2,
        "T": 4,
        "in_channels": 1,
        "num_classes": 10,
    },
}


def _random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        k: torch.randint(0, 1000, s, generator=gen)
        if k.endswith("num_batches_tracked")
        else torch.randn(s, generator=gen)
        for k, s in shapes.items()
    }


def test_official_state_dict_loads_strictly_and_counts_match() -> None:
    shapes = official_shapes(SDT_8_512_KEYS, SDT_8_512["depth"])
    model = create_model("sdt", **SDT_8_512)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == count_params("sdt", SDT_8_512) == 29_689_896  # the paper's 29.68M
    # talking_heads (8 x 8 per block) is in the state_dict but never called
    assert count_params("sdt", SDT_8_512, include_unused_norms=False) == n_params - 8 * 64
    assert weight_bytes("sdt", SDT_8_512) == 4 * n_params
    sd = _random_state_dict(shapes)
    model.load_state_dict(sd, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def _digit_batches(img_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    splits = build_splits("digits", img_size=img_size, seed=0)
    images = torch.stack([splits.train[i][0] for i in range(32)])
    labels = torch.tensor([splits.train[i][1] for i in range(32)])
    return [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]


def _firing_model(layout: str) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A random SDT whose LIFs all fire at a meaningful rate: BN gains in [0.5, 2], biases in [0.5, 2] where BN
    feeds a LIF and in [-0.5, 0.5] where it writes the membrane stream (else the stream saturates the LIFs
    that read it), BN statistics measured on real digits."""
    config = SMALL[layout]
    batches = _digit_batches(config["img_size"])
    torch.manual_seed(0)
    model = create_model("sdt", **config)
    with torch.no_grad():
        for name, bn in model.named_modules():
            if isinstance(bn, _BatchNorm):
                bn.weight.uniform_(0.5, 2.0)
                writes_stream = name.endswith(("proj_bn3", "rpe_bn", "attn.proj_bn", "fc2_bn"))
                bn.bias.uniform_(-0.5, 0.5) if writes_stream else bn.bias.uniform_(0.5, 2.0)
    recalibrate_bn(model, batches, num_batches=4)
    return model.eval(), batches


@pytest.fixture(scope="module", params=list(SMALL))
def setup(request: pytest.FixtureRequest):
    return _firing_model(request.param)


def test_forward_matches_independent_official_reference(setup) -> None:
    model, batches = setup
    images = batches[0][0]
    spikes: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: spikes.__setitem__(name, out))
        for name, m in model.named_modules()
        if isinstance(m, neuron.LIFNode)
    ]
    out = logits(model, images)
    for hook in hooks:
        hook.remove()
    config = model.config
    ref_logits, ref_spikes = reference_forward(
        model.state_dict(), config["num_heads"], config["T"], config["pooling_stat"], images
    )
    assert spikes.keys() == ref_spikes.keys()
    for name, ref in ref_spikes.items():
        assert 0.0 < ref.mean().item() < 1.0, f"{name} never or always fires"
        # talking_heads_lif is (T, B, heads, 1, d) there and (T, B, C, 1, 1) here: per-step, per-image counts agree
        assert torch.equal(spikes[name].flatten(2).sum(2), ref.flatten(2).sum(2)), name
    assert out.std(dim=0).min() > 1e-3
    torch.testing.assert_close(out, ref_logits)


def test_neurons_are_the_official_ones() -> None:
    model = create_model("sdt", **SMALL["0011"])
    lifs = {name: m for name, m in model.named_modules() if isinstance(m, neuron.LIFNode)}
    assert len(lifs) == 4 + 7 * 2 + 1  # stem, per block shortcut/q/k/v/talking_heads + fc1/fc2, head
    for name, m in lifs.items():
        assert isinstance(m, LIFNode) and m.tau == 2.0 and m.v_reset == 0.0 and m.detach_reset, name
        assert m.v_threshold == (0.5 if name.endswith("talking_heads_lif") else 1.0), name


def test_groups_cover_every_width(setup) -> None:
    model, _ = setup
    groups = list_groups(model)
    assert [g.name for g in groups] == [
        "sps.stage0",
        "sps.stage1",
        "sps.stage2",
        "embed",
        "block0.attn.qkv",
        "block0.mlp",
        "block1.attn.qkv",
        "block1.mlp",
    ]
    state = model.state_dict()
    for g in groups:
        assert all(state[s.key].shape[s.dim] == g.width for s in g.slices), g.name
    lifs = [
        Spikes(name, 2)
        for name, m in model.named_modules()
        if isinstance(m, LIFNode) and not name.endswith("talking_heads_lif")
    ]
    rates = firing_rates(model, lifs, setup[1][:1])
    assert len(rates) == 17 and all(0.2 < float(r.mean()) < 0.8 for r in rates.values()), rates


def test_pruning_silent_channels_is_exact(setup) -> None:
    """Per group and for all groups at once: channels that carry nothing go without changing the logits;
    removing as many live channels instead changes them."""
    model, batches = setup
    images = batches[0][0]
    groups = list_groups(model)
    rng = torch.Generator().manual_seed(0)
    dead = {g.name: dead_channels(g, rng) for g in groups}
    everything = model
    for g in groups:
        silent = _copy(model)
        silence(silent, g, dead[g.name])
        everything = _copy(everything)
        silence(everything, g, dead[g.name])
        reference = logits(silent, images)
        torch.testing.assert_close(logits(prune_dead(silent, [g], dead), images), reference, rtol=0, atol=1e-5)
        live = {g.name: other_channels(g, dead[g.name])}
        assert not torch.allclose(logits(prune_dead(silent, [g], live), images), reference, atol=1e-3), g.name
    pruned = prune_dead(everything, groups, dead)
    torch.testing.assert_close(logits(pruned, images), logits(everything, images), rtol=0, atol=1e-5)


def _copy(model: nn.Module) -> nn.Module:
    clone = create_model("sdt", **model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_width_config_predicts_size_and_macs_exactly(setup) -> None:
    """Random ratio dicts and constraints: predicted config, parameters, bytes and MACs are the real ones."""
    model, batches = setup
    images = batches[0][0][:2]
    names = [g.name for g in list_groups(model)]
    rng = random.Random(0)
    for _ in range(8):
        ratios = {n: rng.choice([0.0, 1.0, rng.random()]) for n in rng.sample(names, rng.randint(1, len(names)))}
        constraints = PruneConstraints(min_channels=rng.choice([1, 4]), round_to=rng.choice([1, 2, 4]))
        predicted = width_config("sdt", model.config, ratios, constraints)
        pruned = prune(model, ratios, constraints=constraints)
        assert pruned.config == predicted
        assert count_params("sdt", predicted) == sum(p.numel() for p in pruned.parameters())
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            pruned(images)
        # every layer of SDT (the head too) runs once per time step and image
        assert counter.get_total_flops() == 2 * predicted["T"] * len(images) * count_flops("sdt", predicted)


def test_layer_macs_and_probes() -> None:
    macs = layer_macs("sdt", SDT_8_512)
    assert macs["patch_embed.proj_conv"] == 224 * 224 * 9 * 3 * 64
    assert macs["patch_embed.rpe_conv"] == 14 * 14 * 9 * 512 * 512
    assert macs["block.0.attn.q_conv"] == macs["block.0.attn.proj_conv"] == 196 * 512 * 512
    assert macs["block.7.mlp.fc2_conv"] == 196 * 2048 * 512 and macs["head"] == 512 * 1000
    assert not any("talking_heads" in k or "matmul" in k for k in macs)  # no attention matmul in SDSA
    probes = spike_probes("sdt", SDT_8_512)
    assert set(probes) == set(macs) - {"patch_embed.proj_conv"}  # the head reads head_lif's spikes
    assert probes["head"] == ("head", "input")


def test_pruned_model_round_trips_through_a_checkpoint(setup, tmp_path) -> None:
    model, batches = setup
    pruned = prune(model, {"embed": 0.5, "block0.attn.qkv": 0.3, "block1.mlp": 0.4, "sps.stage0": 0.5})
    psvit.save(pruned, tmp_path / "pruned.pt")
    loaded = psvit.load(tmp_path / "pruned.pt")
    assert loaded.config == pruned.config and loaded.model_name == "sdt"
    assert torch.equal(logits(loaded, batches[0][0]), logits(pruned.eval(), batches[0][0]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pooling_stat": "012"}, "pooling_stat"),
        ({"img_size": 18}, "multiple of the patch size"),
        ({"mlp_ratio": 1.0}, "mlp_ratio"),
        ({"qkv_dims": [8]}, "one width per block"),
    ],
)
def test_bad_configs_are_one_line_config_errors(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("sdt", **{**SMALL["0011"], **override})


def test_enabled_kinds_of_other_families_select_nothing() -> None:
    groups = list_groups(("sdt", SMALL["0011"]))
    chosen = select_groups(groups, ["sps", "embed", "qk", "v", "qkv", "mlp"])  # the default prune.enabled
    assert chosen == groups
    assert [g.name for g in select_groups(groups, ["qk", "mlp"])] == ["block0.mlp", "block1.mlp"]
    with pytest.raises(ConfigError, match="unknown group or kind 'mpl'; this model's kinds: sps, embed, qkv, mlp"):
        select_groups(groups, ["mpl"])
