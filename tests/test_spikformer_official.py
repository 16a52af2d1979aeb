"""psvit's Spikformer vs the official reference: checkpoint layout, forward semantics, neuron state, fast LIF."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import calibrated
from official_reference import (
    ATTN_V_THRESHOLD,
    CIFAR_4_384_KEYS,
    IMAGENET_8_512_KEYS,
    TAU,
    V_RESET,
    V_THRESHOLD,
    official_shapes,
    reference_forward,
)
from spikingjelly.activation_based import functional, neuron
from torch import nn

from psvit.models import create_model
from psvit.models.lif import LIFNode, lif

COMMON = {"mlp_ratio": 4.0, "T": 4, "in_channels": 3}
# variant -> (official config, key listing, state_dict entries, parameters, parameters without norm1/norm2)
OFFICIAL = {
    "cifar": (
        {
            "variant": "cifar",
            "img_size": 32,
            "embed_dim": 384,
            "num_heads": 12,
            "depth": 4,
            "num_classes": 10,
            **COMMON,
        },
        CIFAR_4_384_KEYS,
        216,
        9_330_874,
        None,
    ),
    "imagenet": (
        {
            "variant": "imagenet",
            "img_size": 224,
            "embed_dim": 512,
            "num_heads": 8,
            "depth": 8,
            "num_classes": 1000,
            **COMMON,
        },
        IMAGENET_8_512_KEYS,
        376,
        29_705_768,
        29_689_384,
    ),
}
SMALL = {
    "cifar": {
        "variant": "cifar",
        "img_size": 32,
        "embed_dim": 64,
        "num_heads": 4,
        "depth": 2,
        "num_classes": 10,
        **COMMON,
    },
    "imagenet": {
        "variant": "imagenet",
        "img_size": 64,
        "embed_dim": 64,
        "num_heads": 4,
        "depth": 2,
        "num_classes": 10,
        **COMMON,
    },
}


def _random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        k: torch.randint(0, 1000, shape, generator=gen)
        if k.endswith("num_batches_tracked")
        else torch.randn(shape, generator=gen)
        for k, shape in shapes.items()
    }


@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_official_state_dict_loads_strictly(variant: str) -> None:
    config, listing, n_entries, n_params, n_params_without_norms = OFFICIAL[variant]
    shapes = official_shapes(listing, config["depth"])
    assert len(shapes) == n_entries
    model = create_model("spikformer", **config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert sum(p.numel() for p in model.parameters()) == n_params
    if n_params_without_norms is not None:
        used = sum(p.numel() for name, p in model.named_parameters() if ".norm" not in name)
        assert used == n_params_without_norms

    sd = _random_state_dict(shapes)
    model.load_state_dict(sd, strict=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


def _calibrated(variant: str) -> tuple[nn.Module, torch.Tensor]:
    """A small model with random BN affines and running stats measured on its own inputs, in eval mode."""
    config = SMALL[variant]
    torch.manual_seed(0)
    model = create_model("spikformer", **config)
    images = torch.randn(4, config["in_channels"], config["img_size"], config["img_size"])
    return calibrated(model, images)


def _lif_outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and every LIF's output spikes, from one no-grad forward (neuron state reset afterwards)."""
    spikes: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, name=name: spikes.__setitem__(name, out))
        for name, m in model.named_modules()
        if isinstance(m, neuron.LIFNode)
    ]
    with torch.no_grad():
        logits = model(images)
    functional.reset_net(model)
    for h in handles:
        h.remove()
    return logits, spikes


@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_forward_matches_official_reference(variant: str) -> None:
    model, images = _calibrated(variant)
    logits, spikes = _lif_outputs(model, images)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    config = SMALL[variant]
    ref_logits, ref_spikes = reference_forward(sd, variant, config["num_heads"], config["T"], images)

    assert spikes.keys() == ref_spikes.keys()
    for name, ref in ref_spikes.items():
        rate = ref.mean().item()
        assert 0.01 < rate < 0.99, f"{name} fires at rate {rate:.3f}: calibration left it trivial"
        # Layouts differ per layer (tokens- or channels-major); per-step, per-image spike counts do not.
        assert torch.equal(
            spikes[name].sum(dim=tuple(range(2, spikes[name].dim()))), ref.sum(dim=tuple(range(2, ref.dim())))
        ), name
    assert logits.shape == (images.shape[0], config["num_classes"])
    assert logits.std(dim=0).min() > 1e-3  # images give different logits
    torch.testing.assert_close(logits, ref_logits)


@pytest.mark.parametrize("variant", ["cifar", "imagenet"])
def test_neuron_and_attention_parameters(variant: str) -> None:
    model = create_model("spikformer", **SMALL[variant])
    lifs = {name: m for name, m in model.named_modules() if isinstance(m, neuron.LIFNode)}
    # 4 stem stages + rpe, and per block q/k/v/attn/proj + fc1/fc2
    assert len(lifs) == 5 + 7 * SMALL[variant]["depth"]
    for name, m in lifs.items():
        assert isinstance(m, LIFNode), name
        assert m.tau == TAU and m.v_reset == V_RESET, name
        assert m.v_threshold == (ATTN_V_THRESHOLD if name.endswith(".attn_lif") else V_THRESHOLD), name
        assert m.detach_reset and m.decay_input and m.step_mode == "m", name
    assert all(blk.attn.scale == 0.125 for blk in model.block)


def test_state_persists_until_reset() -> None:
    model, images = _calibrated("cifar")
    with torch.no_grad():
        first = model(images)
        functional.reset_net(model)
        after_reset = model(images)
        without_reset = model(images)
    functional.reset_net(model)
    assert torch.equal(first, after_reset)
    assert not torch.allclose(after_reset, without_reset)


def _sj_lif(v_threshold: float) -> neuron.LIFNode:
    return neuron.LIFNode(tau=2.0, v_threshold=v_threshold, v_reset=0.0, detach_reset=True, step_mode="m")


@pytest.mark.parametrize("v_threshold", [V_THRESHOLD, ATTN_V_THRESHOLD])
@pytest.mark.parametrize("shape", [(4, 2, 16, 64), (4, 3, 8, 5, 5), (1, 7), (8, 1000)])
@pytest.mark.parametrize("quantized", [False, True], ids=["continuous", "on-threshold"])
def test_fast_lif_is_bit_identical_to_spikingjelly(shape: tuple[int, ...], v_threshold: float, quantized: bool) -> None:
    gen = torch.Generator().manual_seed(len(shape) * 10 + int(quantized))
    if quantized:  # multiples of 1/4 hit the threshold exactly, exercising the h >= v_threshold edge
        x = torch.randint(-4, 12, shape, generator=gen).float() * 0.25
    else:
        x = torch.randn(shape, generator=gen) * 1.5 + 0.5
    ours, theirs = lif(v_threshold), _sj_lif(v_threshold)
    with torch.no_grad():
        for seq in (x, x.flip(0)):  # the second call starts from the voltage the first one left
            s_ours, s_theirs = ours(seq), theirs(seq)
            assert torch.equal(s_ours, s_theirs)
            assert torch.equal(ours.v, theirs.v)
    assert 0 < s_ours.mean().item() < 1


def test_surrogate_gradients_flow_in_training() -> None:
    x = torch.randn(4, 3, 32, generator=torch.Generator().manual_seed(1)) + 0.5
    grads = []
    for node in (lif(), _sj_lif(1.0)):
        xg = x.clone().requires_grad_()
        (node(xg) * torch.arange(32.0)).sum().backward()
        grads.append(xg.grad)
    assert torch.equal(grads[0], grads[1])
    assert grads[0].abs().sum() > 0

    model, images = _calibrated("cifar")
    model.train()
    loss = F.cross_entropy(model(images), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    functional.reset_net(model)
    for name, p in model.named_parameters():
        if ".norm" in name:  # unused LayerNorms
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
