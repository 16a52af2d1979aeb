"""Quantized weights: packing, the quantizer, the byte model against the file, and parity after a reload."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from helpers import calibrated
from spikingjelly.activation_based import functional
from torch import nn

import psvit
from psvit.allocation import greedy_allocation, project_to_saving, sensitivity_greedy
from psvit.budget import InfeasibleBudget, MemoryModel
from psvit.checkpoint import payload_of
from psvit.data import build_splits
from psvit.models import create_model
from psvit.prune import PruneConstraints, list_groups, prune
from psvit.quant import layers_for, quantization, quantization_aware, quantize_weights
from psvit.quant.packing import container_bits, pack, packed_bytes, unpack
from psvit.quant.quantizer import dequantize, fake_quantize, qmax, quantize
from psvit.sensitivity import SensitivityTable

SMALL = dict(
    variant="cifar", img_size=16, embed_dim=32, num_heads=4, mlp_ratio=2, depth=2, T=4, in_channels=1, num_classes=10
)
#: Both families, and Spikformer's ImageNet layout (1x1 convs without bias before BatchNorm).
FAMILIES = {
    "spikformer-cifar": ("spikformer", SMALL),
    "spikformer-imagenet": ("spikformer", {**SMALL, "variant": "imagenet", "img_size": 64}),
    "sdt": (
        "sdt",
        dict(img_size=16, embed_dim=32, num_heads=4, mlp_ratio=2, depth=2, T=4, in_channels=1, num_classes=10),
    ),
}


@pytest.fixture(scope="module")
def model_and_images() -> tuple[nn.Module, torch.Tensor]:
    """A random Spikformer whose neurons fire, and 16 real digit images."""
    splits = build_splits("digits", img_size=16, seed=0)
    images = torch.stack([splits.val[i][0] for i in range(16)])
    torch.manual_seed(0)
    return calibrated(create_model("spikformer", **SMALL), images)


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(images)
    functional.reset_net(model)
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("numel", [1, 7, 64, 1001])
def test_pack_unpack_round_trips(bits: int, numel: int) -> None:
    q = qmax(bits)
    codes = torch.randint(-q, q + 1, (numel,), dtype=torch.int8)
    data = pack(codes, bits)
    assert data.dtype == torch.uint8 and data.numel() == packed_bytes(numel, bits)
    assert torch.equal(unpack(data, bits, numel), codes)
    assert container_bits(bits) in (2, 4, 8)


def test_quantizer_is_idempotent_and_in_range() -> None:
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3)
    for bits in (2, 3, 4, 8):
        codes, scales = quantize(w, bits)
        assert codes.abs().max() <= qmax(bits) and scales.shape == (16,)
        dq = dequantize(codes, scales)
        codes2, scales2 = quantize(dq, bits)  # a quantized weight quantizes to itself
        assert torch.equal(codes2, codes) and torch.allclose(scales2, scales, rtol=1e-6)
        err = (dq - w).pow(2).mean()
        assert err < (w.pow(2).mean() * (0.6 if bits == 2 else 0.1))


def test_fake_quantize_passes_gradients_straight_through() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    out = fake_quantize(w, 3)
    assert torch.equal(out.detach(), dequantize(*quantize(w, 3)))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_float_bytes_are_todays_exactly() -> None:
    memory = MemoryModel("spikformer", SMALL, PruneConstraints())
    ratios = {"embed": 0.5, "block0.mlp": 0.25}
    assert memory.bytes(ratios) == memory.bytes(ratios, {g.name: 32 for g in memory.groups})
    assert memory.storage(ratios) == {"float32": 4 * psvit.cost.count_params("spikformer", memory.config(ratios))}


def _file_bytes(model: nn.Module, path: Path) -> int:
    """The saved file's size minus that of the same checkpoint with no tensors in it."""
    psvit.save(model, path)
    empty = {k: v for k, v in payload_of(model).items() if k not in ("data", "state_dict")}
    torch.save(empty, path.with_suffix(".empty"))
    return path.stat().st_size - path.with_suffix(".empty").stat().st_size


@pytest.mark.parametrize("plan", ["all2", "all4", "all8", "mixed"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_file_matches_the_byte_model_and_reloads_with_the_same_logits(family: str, plan: str, tmp_path: Path) -> None:
    name, config = FAMILIES[family]
    splits = build_splits("digits", img_size=config["img_size"], seed=0)
    torch.manual_seed(0)
    base, images = calibrated(create_model(name, **config), torch.stack([splits.val[i][0] for i in range(16)]))
    groups = list_groups(base)
    ratios = {"embed": 0.75, "block0.mlp": 0.5}
    rng = random.Random(0)
    bits = {
        "all2": {g.name: 2 for g in groups},
        "all4": {g.name: 4 for g in groups},
        "all8": {g.name: 8 for g in groups},
        "mixed": {g.name: rng.choice([2, 3, 4, 6, 8, 32]) for g in groups},
    }[plan]
    model = prune(base, ratios).eval()
    quantize_weights(model, layers_for(groups, bits))
    # the reference: the quantized weights, BatchNorm not folded, in float
    reference = logits(model, images)

    memory = MemoryModel(name, config, PruneConstraints())
    predicted = memory.bytes(ratios, bits)
    size = _file_bytes(model, tmp_path / "q.pt")
    assert size <= 1.05 * predicted, (size, predicted)
    loaded = psvit.load(tmp_path / "q.pt")
    assert quantization(loaded) == quantization(model)
    out = logits(loaded, images)
    assert (out.argmax(1) == reference.argmax(1)).all()
    assert (out - reference).abs().max() <= 1e-4
    if plan.startswith("all"):  # every layer quantized: the packed buffers are exactly the byte model's
        assert payload_of(model)["sections"] == memory.storage(ratios, bits)


def test_quantized_checkpoint_is_much_smaller(model_and_images, tmp_path: Path) -> None:
    base, _ = model_and_images
    psvit.save(base, tmp_path / "float.pt")
    model = quantize_weights(
        prune(base, {}).eval(), layers_for(list_groups(base), {g.name: 2 for g in list_groups(base)})
    )
    psvit.save(model, tmp_path / "int2.pt")
    assert (tmp_path / "int2.pt").stat().st_size < 0.2 * (tmp_path / "float.pt").stat().st_size


@pytest.mark.parametrize("seed", range(4))
def test_projection_is_exact_over_both_axes(seed: int) -> None:
    memory = MemoryModel("spikformer", SMALL, PruneConstraints())
    names = [g.name for g in memory.groups]
    rng = random.Random(seed)
    for _ in range(5):
        bits = {n: rng.choice([2, 3, 4, 8, 32]) for n in names}
        raw = {n: rng.random() for n in names}
        target = rng.uniform(0.3, 0.9)
        projected = project_to_saving(memory, raw, target, bits=bits)
        lowest = memory.saving({n: 0.0 for n in names}, bits)
        if projected is None:
            assert lowest < target
            continue
        assert memory.saving(projected, bits) >= target
        back = {n: min(1.0, r + 1e-3 * (1 - raw[n] + 0.05)) for n, r in projected.items()}
        assert memory.saving(back, bits) < target or memory.kept(back) == memory.kept(projected)
        # the byte model is the real model's: build and count
        model = quantize_weights(
            create_model("spikformer", **memory.config(projected)), layers_for(memory.groups, bits)
        )
        stored = payload_of(model)["sections"]
        assert {k: v for k, v in stored.items() if k != "float32"} == {
            k: v for k, v in memory.storage(projected, bits).items() if k != "float32"
        }


def test_quantization_aware_training_moves_the_float_weights_and_ends_on_the_grid(model_and_images) -> None:
    base, images = model_and_images
    model = quantize_weights(prune(base, {}).train(), layers_for(list_groups(base), {"block0.mlp": 3}))
    layer = model.block[0].mlp.fc1_linear
    before = layer.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with quantization_aware(model):
        loss = model(images).logsumexp(1).mean()
        loss.backward()
        optimizer.step()
        functional.reset_net(model)
    after = layer.weight.detach()
    assert not torch.equal(after, before)
    assert torch.equal(after, dequantize(*quantize(after, 3)))  # on the 3-bit grid again
    assert quantization(model) == {"block.0.mlp.fc1_linear": 3}


def synthetic_table(memory: MemoryModel, fragile: str) -> SensitivityTable:
    """A sensitivity table over ``memory``'s groups: every group loses 5 points per 0.25 of width and 0.5 point per
    bit below 8, except ``fragile``, whose weights cannot go below 8 bits (a 50-point drop) but whose width is free."""
    rows, bits_rows = [], []
    for g in memory.groups:
        for ratio in (0.75, 0.5, 0.25):
            drop = 0.0 if g.name == fragile else (1 - ratio) * 0.2
            rows.append({"group": g.name, "ratio": ratio, "acc_drop": drop})
        for b in (2, 3, 4, 8):
            bits_rows.append(
                {"group": g.name, "bits": b, "acc_drop": 0.5 if g.name == fragile and b < 8 else 0.005 * (8 - b)}
            )
    return SensitivityTable(rows=rows, base_val_acc=0.9, bits_rows=bits_rows)


@pytest.mark.parametrize("budget", [0.8, 0.9])
def test_greedy_over_both_axes_meets_the_budget_and_spends_the_drop_where_it_is_cheap(budget: float) -> None:
    memory = MemoryModel("spikformer", SMALL, PruneConstraints())
    fragile = memory.groups[-1].name
    table = synthetic_table(memory, fragile)
    ratios, bits = greedy_allocation(memory, memory.groups, table, budget, choices=(2, 3, 4, 8))
    assert memory.saving(ratios, bits) >= budget
    assert set(bits.values()) <= {2, 4, 8}  # 3 bits is stored in 4: a step to it saves nothing
    assert bits[fragile] == 8 and ratios[fragile] < 1.0  # its bytes come from its width, not its bits
    assert min(bits.values()) < 8  # the others are quantized below 8 bits
    # quantization alone: every group unpruned, the fragile one lowered last
    only_bits = greedy_allocation(memory, memory.groups, table, budget, choices=(2, 3, 4, 8), widths=False)
    assert set(only_bits[0].values()) == {1.0}
    assert memory.saving(*only_bits) >= budget
    # without choices it is psvit's rule (widths only, float32)
    widths_only, float_bits = greedy_allocation(memory, memory.groups, table, 0.5)
    assert widths_only == sensitivity_greedy(memory, memory.groups, table, 0.5) and float_bits == {}


def test_greedy_over_bits_alone_says_when_the_budget_is_out_of_reach() -> None:
    memory = MemoryModel("spikformer", SMALL, PruneConstraints())
    table = synthetic_table(memory, memory.groups[0].name)
    with pytest.raises(InfeasibleBudget, match="by quantization alone"):
        greedy_allocation(memory, memory.groups, table, 0.97, choices=(4, 8), widths=False)
