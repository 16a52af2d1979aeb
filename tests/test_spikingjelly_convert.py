"""spikingjelly 2.0's own Spikformer checkpoints, converted into psvit's layout, give the same logits."""

from __future__ import annotations

import pytest
import torch
from helpers import calibrated
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.model.spikformer import Spikformer as SJSpikformer
from torch import nn

import psvit
from psvit.checkpoint import load_official_weights
from psvit.errors import CheckpointError, ConfigError
from psvit.models import create_model
from psvit.models.spikingjelly_convert import is_spikingjelly_spikformer

#: spikingjelly patch size -> psvit variant; small models (img 64 at patch 16 gives 4x4 tokens)
LAYOUTS = {16: ("imagenet", 64), 4: ("cifar", 32)}
DIMS = {"embed_dims": 32, "num_heads": 4, "depths": 2, "mlp_ratio": 4.0}


def _spikingjelly_model(patch_size: int) -> tuple[nn.Module, torch.Tensor]:
    """spikingjelly's own Spikformer, random weights, random BN affines, BN statistics measured on its inputs."""
    img = LAYOUTS[patch_size][1]
    torch.manual_seed(0)
    model = SJSpikformer(
        T=4, in_channels=3, img_size_h=img, img_size_w=img, patch_size=patch_size, num_classes=10, **DIMS
    )
    images = torch.randn(4, 3, img, img)
    return calibrated(model, images)


def _psvit_model(patch_size: int, stem_pool: str = "before_lif") -> nn.Module:
    variant, img = LAYOUTS[patch_size]
    return create_model(
        "spikformer",
        variant=variant,
        img_size=img,
        embed_dim=32,
        num_heads=4,
        depth=2,
        mlp_ratio=4.0,
        T=4,
        in_channels=3,
        num_classes=10,
        stem_pool=stem_pool,
    ).eval()


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(images)
    functional.reset_net(model)
    return out


@pytest.mark.parametrize("patch_size", list(LAYOUTS))
def test_converted_checkpoint_gives_spikingjellys_logits(patch_size: int, tmp_path) -> None:
    sj, images = _spikingjelly_model(patch_size)
    rates = {}
    hooks = [
        getattr(blk.attn, name).register_forward_hook(
            lambda _m, _i, out, key=(i, name): rates.__setitem__(key, out.mean().item())
        )
        for i, blk in enumerate(sj.blocks)
        for name in ("qkv_lif", "attn_lif")
    ]
    per_step = _logits(sj, images)  # spikingjelly's multi-step head: (T, B, classes)
    for hook in hooks:
        hook.remove()
    assert all(0.002 < rate < 0.99 for rate in rates.values()), rates  # attention is exercised
    assert per_step.shape == (4, 4, 10) and per_step.std(dim=1).min() > 1e-3
    path = tmp_path / "sj.pth"
    torch.save({"model": sj.state_dict()}, path)
    assert is_spikingjelly_spikformer(sj.state_dict())
    for fmt in ("auto", "spikingjelly"):
        model = _psvit_model(patch_size)
        load_official_weights(model, path, checkpoint_format=fmt)  # strict=True
        torch.testing.assert_close(_logits(model, images), per_step.mean(0))


def test_official_stem_order_is_refused_with_one_line(tmp_path) -> None:
    sj, _ = _spikingjelly_model(16)
    path = tmp_path / "sj.pth"
    torch.save(sj.state_dict(), path)
    with pytest.raises(CheckpointError, match="stem_pool=before_lif") as info:
        load_official_weights(_psvit_model(16, stem_pool="after_lif"), path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="checkpoint_format"):
        load_official_weights(_psvit_model(16), path, checkpoint_format="timm")
    official = tmp_path / "official.pth"
    torch.save(_psvit_model(16).state_dict(), official)
    with pytest.raises(CheckpointError, match="not a spikingjelly"):
        load_official_weights(_psvit_model(16), official, checkpoint_format="spikingjelly")


def test_cli_starts_from_a_spikingjelly_checkpoint(run_cli, tmp_path) -> None:
    """``model.checkpoint=<spikingjelly file>``: detected, converted, evaluated and cached as a psvit model."""
    torch.manual_seed(0)
    sj = SJSpikformer(
        T=4,
        in_channels=1,
        img_size_h=16,
        img_size_w=16,
        patch_size=4,
        num_classes=10,
        embed_dims=32,
        num_heads=2,
        depths=2,
    )
    torch.save({"state_dict": sj.state_dict()}, tmp_path / "sj.pth")
    out = run_cli(
        "train",
        "model.embed_dim=32",
        "model.num_heads=2",
        "+model.stem_pool=before_lif",
        f"model.checkpoint={tmp_path / 'sj.pth'}",
        "data.allow_val_from_train=true",
        "progress=false",
        tiny=False,
    ).stdout
    cached = next(line.split()[-1] for line in out.splitlines() if line.startswith("base model:"))
    model = psvit.load(cached)
    assert model.config["stem_pool"] == "before_lif" and model.config["variant"] == "cifar"
    images = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(_logits(model, images), _logits(sj.eval(), images).mean(0))
    bad = run_cli(
        "train",
        "model.embed_dim=32",
        "model.num_heads=2",
        f"model.checkpoint={tmp_path / 'sj.pth'}",
        "progress=false",
        tiny=False,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: a spikingjelly 2.0 Spikformer checkpoint needs a spikformer model with model.stem_pool=before_lif "
        "(e.g. model=spikformer_sj_ti or spikformer_sj_s)"
    ]
