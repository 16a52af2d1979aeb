"""Recovery fine-tuning: distillation from the base, and never worse than the model it starts from."""

from __future__ import annotations

import copy

import pytest
import torch

from psvit.data import build_splits
from psvit.models import create_model
from psvit.train.loop import best_epoch, distillation, evaluate, train_model

SMALL = dict(
    variant="cifar", img_size=16, embed_dim=32, num_heads=2, mlp_ratio=2, depth=1, T=4, in_channels=1, num_classes=10
)


def test_distillation_is_zero_for_the_teachers_own_logits_and_positive_otherwise() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(8, 10)
    assert distillation(teacher, teacher, 2.0).abs() < 1e-6
    assert distillation(torch.randn(8, 10), teacher, 2.0) > 0.01


@pytest.fixture(scope="module")
def trained():
    """A small Spikformer trained a little on digits (well above chance, far from done), and the splits."""
    splits = build_splits("digits", img_size=16, seed=0)
    torch.manual_seed(0)
    model = create_model("spikformer", **SMALL)
    train_model(model, splits.train, epochs=4, lr=3e-3, seed=0, progress=False)
    assert evaluate(model, splits.val) > 0.2  # chance: 0.1
    return model, splits


def test_recovery_never_ends_worse_on_validation_than_it_started(trained) -> None:
    """A learning rate that wrecks the model: the best epoch is epoch 0, and the model is the starting one."""
    model, splits = copy.deepcopy(trained[0]), trained[1]
    start = evaluate(model, splits.val)
    before = copy.deepcopy(model.state_dict())
    history = train_model(
        model,
        splits.train,
        epochs=2,
        lr=5.0,
        seed=0,
        progress=False,
        val_set=splits.val,
        teacher=copy.deepcopy(model),
        kd_weight=0.5,
        temperature=2.0,
    )
    assert history[0] == {"epoch": 0, "val_acc": start}
    assert [h["epoch"] for h in history] == [0, 1, 2] and all("val_acc" in h for h in history)
    assert max(h["val_acc"] for h in history[1:]) < start  # the training itself made it worse
    assert best_epoch(history)["epoch"] == 0
    assert evaluate(model, splits.val) == start
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_recovery_keeps_a_better_epoch(trained) -> None:
    model, splits = copy.deepcopy(trained[0]), trained[1]
    history = train_model(model, splits.train, epochs=2, seed=0, progress=False, val_set=splits.val)
    best = best_epoch(history)
    assert best["epoch"] > 0 and best["val_acc"] > history[0]["val_acc"]
    assert evaluate(model, splits.val) == best["val_acc"]
