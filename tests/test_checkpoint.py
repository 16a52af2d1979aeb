"""Self-describing checkpoints (psvit.save / psvit.load) and official-checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import psvit
from psvit.checkpoint import load_official_weights
from psvit.errors import CheckpointError
from psvit.train import predict

SMALL = dict(variant="cifar", img_size=16, embed_dim=32, num_heads=2, depth=2, T=2, in_channels=1, num_classes=10)


def spiking_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = psvit.create_model("spikformer", **{**SMALL, **overrides})
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.bias.data.uniform_(0.5, 1.5)  # make neurons fire so logits depend on every layer
    return model.eval()


def test_save_load_gives_identical_logits_with_weights_only(tmp_path: Path) -> None:
    model = spiking_model(qk_dims=[16, 8], mlp_dims=[40, 24], sps_dims=[4, 6, 10])
    x = torch.rand(6, 1, 16, 16)
    path = psvit.save(model, tmp_path / "sub" / "m.pt", meta={"note": "x"})
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # atomic write: no temp file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["qk_dims"] == [16, 8] and raw["meta"] == {"note": "x"}
    loaded = psvit.load(path)
    assert torch.equal(predict(model, x), predict(loaded, x))


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        psvit.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint: .*bad.pt") as err:
        psvit.load(bad)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a psvit checkpoint"):
        psvit.load(foreign)


def test_official_checkpoint_formats_load_strictly(tmp_path: Path) -> None:
    source = spiking_model()
    x = torch.rand(4, 1, 16, 16)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 300}
    torch.save(wrapped, tmp_path / "official.pth")
    target = spiking_model(embed_dim=32).train()
    assert load_official_weights(target, tmp_path / "official.pth") == "non-EMA weights ('state_dict')"
    assert torch.equal(predict(source, x), predict(target.eval(), x))
    with pytest.raises(CheckpointError, match="does not fit the configured model"):
        load_official_weights(spiking_model(embed_dim=64), tmp_path / "official.pth")


def test_official_checkpoint_ema_choice_is_explicit(tmp_path: Path) -> None:
    raw, ema = spiking_model(), spiking_model()
    with torch.no_grad():  # same shape, other weights
        for p in ema.parameters():
            p.mul_(0.9)
    path = tmp_path / "train.pth"
    torch.save({"state_dict": raw.state_dict(), "state_dict_ema": ema.state_dict()}, path)
    x = torch.rand(4, 1, 16, 16)
    for weights, source, said in (
        ("auto", ema, "EMA weights"),
        ("ema", ema, "EMA weights"),
        ("raw", raw, "non-EMA weights"),
    ):
        target = type(raw)(**raw.config)
        assert load_official_weights(target, path, weights=weights).startswith(said)
        assert torch.equal(predict(source.eval(), x), predict(target.eval(), x))
    torch.save(raw.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_official_weights(type(raw)(**raw.config), tmp_path / "bare.pth", weights="ema")
    torch.save({"state_dict": raw.state_dict()}, tmp_path / "noema.pth")
    with pytest.raises(CheckpointError, match="has no EMA weights"):
        load_official_weights(type(raw)(**raw.config), tmp_path / "noema.pth", weights="ema")
