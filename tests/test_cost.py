"""Cost accounting: analytic parameter / MAC counts against real models, firing rates, SOPs, energy, latency."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from psvit.cost import (
    E_AC_PJ,
    E_MAC_PJ,
    cost_report,
    count_flops,
    count_params,
    layer_macs,
    measure_firing_rates,
    measure_latency,
    memory_saving,
    report_forward_images,
    report_single_forwards,
    weight_bytes,
)
from psvit.cost.latency import WARMUP
from psvit.errors import ConfigError
from psvit.models import create_model
from psvit.models.lif import LIFNode
from psvit.train import Compute

IMG_SIZE = {"cifar": 16, "imagenet": 32}
SMALL = {
    "variant": "cifar",
    "img_size": 16,
    "embed_dim": 64,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "depth": 2,
    "T": 4,
    "in_channels": 1,
    "num_classes": 10,
}
SPIKFORMER_8_512 = {
    "variant": "imagenet",
    "img_size": 224,
    "embed_dim": 512,
    "num_heads": 8,
    "depth": 8,
    "T": 4,
    "in_channels": 3,
    "num_classes": 1000,
}
ANALOG = ("patch_embed.proj_conv", "head")


def random_config(rng: random.Random, variant: str) -> dict[str, Any]:
    """A small Spikformer with random (pruned-looking) widths."""
    heads, depth = rng.choice([1, 2, 4]), rng.randint(1, 3)
    return {
        "variant": variant,
        "img_size": IMG_SIZE[variant],
        "embed_dim": rng.randint(2, 40),
        "num_heads": heads,
        "depth": depth,
        "T": 2,
        "in_channels": rng.randint(1, 3),
        "num_classes": rng.randint(2, 12),
        "sps_dims": [rng.randint(1, 12) for _ in range(3)],
        "qk_dims": [heads * rng.randint(1, 5) for _ in range(depth)],
        "v_dims": [heads * rng.randint(1, 5) for _ in range(depth)],
        "mlp_dims": [rng.randint(1, 50) for _ in range(depth)],
    }


RANDOM_CONFIGS = [random_config(random.Random(seed), variant) for variant in IMG_SIZE for seed in range(8)]


def digits(n: int, img_size: int = 16) -> torch.Tensor:
    """``n`` real handwritten digits in [0, 1], one channel, resized to ``img_size``."""
    pixels = torch.tensor(load_digits().images[:n, None] / 16.0, dtype=torch.float32)
    return F.interpolate(pixels, size=img_size, mode="bilinear", align_corners=False)


def firing_model(config: dict[str, Any]) -> nn.Module:
    """An untrained model whose neurons fire: every BatchNorm gets a positive random bias."""
    torch.manual_seed(0)
    model = create_model("spikformer", **config)
    for bn in model.modules():
        if isinstance(bn, _BatchNorm):
            nn.init.normal_(bn.bias, 0.6, 0.5)
    return model


def n_params(model: nn.Module, *, norms: bool = True) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if norms or ".norm" not in name)


@pytest.mark.parametrize("config", [{}, {"variant": "imagenet", "img_size": 64}, *RANDOM_CONFIGS])
def test_count_params_matches_built_model(config: dict[str, Any]) -> None:
    model = create_model("spikformer", **config)
    assert count_params("spikformer", model.config) == n_params(model)
    assert count_params("spikformer", model.config, include_unused_norms=False) == n_params(model, norms=False)
    assert count_params("spikformer", config) == n_params(model)  # unresolved config: defaults filled in


def test_spikformer_8_512_official_counts() -> None:
    model = create_model("spikformer", **SPIKFORMER_8_512)
    assert count_params("spikformer", SPIKFORMER_8_512) == n_params(model) == 29_705_768
    assert count_params("spikformer", SPIKFORMER_8_512, include_unused_norms=False) == 29_689_384
    assert weight_bytes("spikformer", SPIKFORMER_8_512) == 4 * 29_705_768
    assert weight_bytes("spikformer", SPIKFORMER_8_512, bytes_per_param=2) == 2 * 29_705_768


def test_memory_saving() -> None:
    base = create_model("spikformer", **SMALL).config
    pruned = {**base, "mlp_dims": [128, 64], "qk_dims": [32, 16]}
    expected = 1 - n_params(create_model("spikformer", **pruned)) / n_params(create_model("spikformer", **base))
    assert memory_saving("spikformer", base, pruned) == pytest.approx(expected)
    assert 0 < memory_saving("spikformer", base, pruned) < 1
    assert memory_saving("spikformer", base, base) == 0.0


def hooked_macs(model: nn.Module, images: torch.Tensor) -> dict[str, int]:
    """MACs per image and time step counted by forward hooks on every conv / linear layer and, for the attention
    matmuls, from the observed q/k/v spike shapes ``(T, B, N, C)``."""
    T, B = model.config["T"], images.shape[0]
    heads = model.config["num_heads"]
    macs: dict[str, int] = {}
    shapes: dict[str, torch.Size] = {}

    def record_shape(name: str, out: torch.Tensor) -> None:
        shapes[name] = out.shape

    def count(name: str, module: nn.Module, out: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            per_output = module.in_features
        else:
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        runs = B if name == "head" else T * B  # the head runs once per image, on time-averaged features
        macs[name] = out.numel() * per_output // runs

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            handles.append(module.register_forward_hook(lambda m, _a, out, name=name: count(name, m, out)))
        elif name.endswith(("q_lif", "k_lif", "v_lif")):
            handles.append(module.register_forward_hook(lambda _m, _a, out, name=name: record_shape(name, out)))
    with torch.no_grad():
        model.eval()(images)
    for handle in handles:
        handle.remove()
    for b in range(model.config["depth"]):
        q, v = shapes[f"block.{b}.attn.q_lif"], shapes[f"block.{b}.attn.v_lif"]
        assert q[:3] == shapes[f"block.{b}.attn.k_lif"][:3] == v[:3]
        matmul = heads * q[2] * (q[3] // heads) * (v[3] // heads)
        macs[f"block.{b}.attn.kv_matmul"] = macs[f"block.{b}.attn.qkv_matmul"] = matmul
    return macs


@pytest.mark.parametrize("config", [SMALL, {**SMALL, "variant": "imagenet", "img_size": 32}, *RANDOM_CONFIGS[::3]])
def test_layer_macs_match_hooked_real_model(config: dict[str, Any]) -> None:
    model = create_model("spikformer", **config)
    images = torch.rand(2, config["in_channels"], config["img_size"], config["img_size"])
    analytic = layer_macs("spikformer", model.config)
    assert analytic == hooked_macs(model, images)
    assert count_flops("spikformer", model.config) == sum(analytic.values())


def test_layer_macs_keys_and_official_flops() -> None:
    macs = layer_macs("spikformer", SPIKFORMER_8_512)
    assert list(macs)[:5] == [f"patch_embed.proj_conv{s}" for s in ("", "1", "2", "3")] + ["patch_embed.rpe_conv"]
    assert macs["patch_embed.proj_conv"] == 224 * 224 * 9 * 3 * 64
    assert macs["patch_embed.rpe_conv"] == 14 * 14 * 9 * 512 * 512  # 224 pooled four times
    assert macs["block.7.attn.kv_matmul"] == 8 * 196 * 64 * 64
    assert macs["block.0.mlp.fc1_conv"] == 196 * 512 * 2048
    assert macs["head"] == 512 * 1000


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        count_params("resnet", {})


def test_firing_rates_are_measured_input_spike_fractions() -> None:
    model = firing_model(SMALL)
    images = digits(16)
    rates = measure_firing_rates(model, images)
    assert set(rates) == set(layer_macs("spikformer", model.config)) - set(ANALOG)
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    assert rates["block.0.attn.qkv_matmul"] > 0 and rates["patch_embed.proj_conv1"] > 0
    # Silencing a neuron population zeroes exactly the rate of the layer it feeds.
    model.block[0].attn.q_lif.v_threshold = math.inf
    model.patch_embed.proj_lif.v_threshold = math.inf
    silenced = measure_firing_rates(model, images)
    assert silenced["block.0.attn.qkv_matmul"] == 0.0 and silenced["patch_embed.proj_conv1"] == 0.0


def lif_states_are_reset(model: nn.Module) -> bool:
    return all(not isinstance(m.v, torch.Tensor) for m in model.modules() if isinstance(m, LIFNode))


def test_cost_report_on_a_small_model() -> None:
    model = firing_model(SMALL).train()
    images = digits(8)
    report = cost_report(model, images, latency_repeats=2)
    assert model.training and lif_states_are_reset(model)
    macs = layer_macs("spikformer", model.config)
    rates = report.layer_firing_rates
    T = SMALL["T"]
    assert report.params == n_params(model) and report.params_excl_unused_norms == n_params(model, norms=False)
    assert report.weight_bytes == 4 * report.params
    assert report.flops == sum(macs.values()) and report.flops_total == T * report.flops
    assert report.analog_macs == macs["patch_embed.proj_conv"] + macs["head"]
    assert report.sops == pytest.approx(sum(r * macs[k] * T for k, r in rates.items()))
    assert 0 < report.sops < report.flops_total
    assert 0 < report.firing_rate < 1
    assert report.energy_mj == pytest.approx((E_MAC_PJ * report.analog_macs + E_AC_PJ * report.sops) * 1e-9)
    assert report.latency_ms > 0 and report.batch_size == 8 and report.latency_batch1_ms > 0
    assert report.device == "cpu"
    d = report.to_dict()
    assert d["params"] == report.params and d["sops"] == report.sops and "layer_firing_rates" not in d
    assert all(isinstance(v, (int, float)) for v in d.values())
    lines = report.format().splitlines()
    assert len(lines) == 12 and f"{report.params:,}" in lines[1]
    assert lines[-2].endswith("ms / batch of 8, cpu") and lines[-1].endswith("ms / image, cpu")


def test_cost_report_runs_under_the_commands_autocast() -> None:
    """``compute.amp=bf16``: every forward of the cost report (firing rates, latency) sees autocast on and
    gets bf16 activations from its linear layers, as evaluation does; without ``compute`` it stays float32."""
    model = firing_model(SMALL)
    seen: list[tuple[bool, torch.dtype]] = []
    model.head.register_forward_hook(lambda _m, _args, out: seen.append((torch.is_autocast_enabled("cpu"), out.dtype)))
    report = cost_report(model, digits(8), latency_repeats=2, compute=Compute(torch.device("cpu"), amp="bf16"))
    assert len(seen) == 1 + 2 * (WARMUP + 2)  # the firing-rate pass, then warm-up and timed batch and image
    assert set(seen) == {(True, torch.bfloat16)}
    assert report.device == "cpu, bf16" and report.format().splitlines()[-1].endswith("ms / image, cpu, bf16")
    seen.clear()
    plain = cost_report(model, digits(8), latency_repeats=2, compute=Compute(torch.device("cpu")))
    assert set(seen) == {(False, torch.float32)} and plain.device == "cpu"


def test_report_forward_images_counts_what_the_cost_report_runs() -> None:
    """The search's estimate prices the cost report by this count: it is the images that reach the model."""
    model = firing_model(SMALL)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    cost_report(model, digits(8), latency_repeats=3)
    assert sum(seen) == report_forward_images(8, latency_repeats=3) == 8 * 6 + 5
    assert seen.count(1) == report_single_forwards(latency_repeats=3) == 5  # the batch-1 latency's forwards


def test_measure_latency_restores_model_state() -> None:
    model = create_model("spikformer", **SMALL).train()
    assert measure_latency(model, digits(4), repeats=2, warmup=1) > 0
    assert model.training and lif_states_are_reset(model)
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(model, digits(4), repeats=0)


def test_lif_keeps_a_float32_voltage_under_bf16() -> None:
    """spikingjelly's fused LIF kernels need a float32 voltage (else: its per-step Torch reference, the bf16
    slowdown on a GPU). Its own LIFNode stores a bf16 voltage for bf16 input; psvit's keeps float32, with the spikes
    of the float32 computation on the same (bf16-rounded) input."""
    from spikingjelly.activation_based import functional, neuron

    from psvit.models.lif import lif

    x = (2 * torch.randn(4, 8, 64)).bfloat16()
    theirs = neuron.LIFNode(tau=2.0, v_reset=0.0, detach_reset=True, step_mode="m")
    theirs(x.requires_grad_())
    assert theirs.v.dtype == torch.bfloat16
    ours = lif()
    spikes = ours(x)  # training path (autograd on): spikingjelly's kernels with psvit's state
    assert ours.v.dtype == torch.float32 and spikes.dtype == torch.bfloat16
    functional.reset_net(ours)
    assert torch.equal(spikes.float(), ours(x.detach().float().requires_grad_()))
