"""Scale: device handling, loaders, mixed precision, official image-folder preprocessing, the img_size check, the
checkpoint-content cache key, multi-fidelity trials and the cost estimate (CPU; synthetic image folders at 64 px)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, compose
from omegaconf import OmegaConf
from PIL import Image

import psvit
from psvit.data import build_splits
from psvit.errors import ConfigError
from psvit.search.fidelity import Fidelity
from psvit.train import Compute, evaluate, resolve_device
from psvit.train.base import base_splits, get_base_model, model_config
from psvit.train.compute import device_name


def test_devices_and_compute_options() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu:x")
    for bad, match in (
        ({"amp": "fp8"}, "compute.amp"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"nope": 1}, "unknown compute option"),
    ):
        with pytest.raises(ConfigError, match=match):
            Compute.from_options("cpu", bad)
    assert "LIF: psvit CPU loop" in Compute(torch.device("cpu")).describe()


def write_folder(root: Path, size: int, classes: int = 3, per_class: int = 6) -> None:
    """Images whose left and right halves differ, so crops and flips are visible; class k is tinted k."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size + 2 * i, 3), dtype=np.uint8)
            pixels[..., 0] = 60 * k
            Image.fromarray(pixels).save(root / f"c{k}" / f"{i}.png")


def test_image_folder_official_evaluation_preprocessing(tmp_path: Path) -> None:
    """Shorter side to img_size / crop_pct (bicubic), centre crop, ImageNet mean/std: checked against PIL by hand."""
    write_folder(tmp_path, 80)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    splits = build_splits("image_folder", root=tmp_path, img_size=64, mean=mean, std=std, seed=0)
    image, _ = splits.test[0]
    with Image.open(splits.test.paths[0]) as img:
        short = int(64 / 0.875)
        w = round(img.width * short / img.height)
        resized = img.convert("RGB").resize((w, short), Image.Resampling.BICUBIC)
        left, top = (w - 64) // 2, (short - 64) // 2
        crop = np.asarray(resized.crop((left, top, left + 64, top + 64)), dtype=np.float32) / 255.0
    expected = (torch.from_numpy(crop).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
        3, 1, 1
    )
    assert image.shape == (3, 64, 64) and torch.allclose(image, expected, atol=1e-6)


def test_augmentation_only_on_the_training_split(tmp_path: Path) -> None:
    write_folder(tmp_path, 64)
    splits = build_splits("image_folder", root=tmp_path, img_size=32, augment=True, seed=0)
    torch.manual_seed(0)
    first = [splits.train[i][0] for i in range(4)]
    again = [splits.train[i][0] for i in range(4)]
    assert any(not torch.equal(a, b) for a, b in zip(first, again))  # random crops / flips
    torch.manual_seed(0)
    assert all(torch.equal(a, splits.train[i][0]) for i, a in enumerate(first))  # reproducible under a seed
    assert torch.equal(splits.val[0][0], splits.val[0][0]) and torch.equal(splits.test[1][0], splits.test[1][0])
    plain = build_splits("image_folder", root=tmp_path, img_size=32, seed=0)
    assert torch.equal(plain.val[0][0], splits.val[0][0])


def test_loader_workers_give_the_same_batches(tmp_path: Path) -> None:
    write_folder(tmp_path, 64)
    splits = build_splits("image_folder", root=tmp_path, img_size=32, seed=0)
    serial, parallel = Compute(torch.device("cpu"), num_workers=0), Compute(torch.device("cpu"))
    assert parallel.workers_for(splits.val) >= 1 and parallel.workers_for(build_splits("digits").val) == 0
    torch.manual_seed(0)
    model = psvit.create_model(
        "spikformer",
        **model_config(
            {"variant": "cifar", "img_size": 32, "embed_dim": 16, "num_heads": 2, "depth": 1, "T": 2}, splits
        ),
    )
    assert evaluate(model, splits.train, serial) == evaluate(model, splits.train, parallel)


def test_validation_subset_is_stratified_and_fixed() -> None:
    splits = build_splits("digits", img_size=8)
    part = splits.val_subset(0.25, seed=3)
    assert abs(len(part) - round(0.25 * len(splits.val))) <= 1
    assert np.array_equal(part.labels, splits.val_subset(0.25, seed=3).labels)
    counts, whole = np.bincount(part.labels, minlength=10), np.bincount(splits.val.labels, minlength=10)
    assert np.all(np.abs(counts - 0.25 * whole) <= 1)
    assert splits.val_subset(1.0) is splits.val


def test_img_size_mismatch_is_refused() -> None:
    splits = build_splits("digits", img_size=16)
    with pytest.raises(ConfigError, match=r"model.img_size=224 but the data gives 16-px images"):
        model_config({"variant": "imagenet", "img_size": 224}, splits)
    assert model_config({"variant": "imagenet", "img_size": None}, splits)["img_size"] == 16


def test_bf16_evaluation_agrees_with_float32(tiny_cache) -> None:
    """On the tests' tiny base (a 32-wide, 2-block, 2-step Spikformer trained 8 epochs on digits, in the shared
    cache: about 73 % test accuracy, far from chance's 10 %)."""
    cfg = tiny_cache[0].cfg
    model_cfg, data_cfg, train_cfg = (OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "train"))
    base = get_base_model(
        model_cfg, data_cfg, train_cfg, cache_dir=cfg.cache_dir, compute=Compute(torch.device("cpu")), progress=False
    )
    assert base.from_cache and base.path == tiny_cache[0].base.path
    full = evaluate(base.model, base.splits.test, Compute(torch.device("cpu")))
    half = evaluate(base.model, base.splits.test, Compute(torch.device("cpu"), amp="bf16"))
    assert full > 0.6 and abs(full - half) < 0.03


def test_base_cache_is_keyed_by_checkpoint_content(run_cli, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = psvit.create_model(
        "spikformer",
        variant="cifar",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        num_heads=2,
        depth=2,
        T=4,
        in_channels=1,
        num_classes=10,
    )
    torch.save(model.state_dict(), tmp_path / "a.pth")
    shutil.copy(tmp_path / "a.pth", tmp_path / "b.pth")
    torch.save({"state_dict": model.state_dict(), "state_dict_ema": model.state_dict()}, tmp_path / "c.pth")
    outs = [
        run_cli(
            "train",
            f"model.checkpoint={tmp_path / name}",
            f"cache_dir={tmp_path / 'cache'}",
            "data.allow_val_from_train=true",
        ).stdout  # digits has no held-out part
        for name in ("a.pth", "b.pth", "c.pth")
    ]
    paths = [next(line for line in out.splitlines() if line.startswith("base model:")).split()[-1] for out in outs]
    assert "base weights: the bare state_dict" in outs[0]
    assert "reused cached" in outs[1] and paths[1] == paths[0]  # same bytes under another name: same base
    assert "base weights: EMA weights ('state_dict_ema')" in outs[2] and paths[2] != paths[0]
    assert f"device: {device_name(resolve_device('auto'))}," in outs[0]  # the CLI's default device: auto


def test_fidelity_promotion_rule() -> None:
    rule = Fidelity(subset=0.25, promote=0.5)
    assert rule.rung_size == 2 and Fidelity(promote=0.34).rung_size == 3 and Fidelity(promote=1 / 3).rung_size == 3
    assert rule.full_rung({0: (0.9, 0.3)}, constrained=True) == set()  # the rung opens at 1 / promote scores
    scores = {0: (0.9, 0.3), 1: (0.8, 0.3), 2: (0.7, 0.3), 3: (0.85, 0.3)}
    assert rule.full_rung(scores, constrained=True) == {0, 3}  # the top floor(0.5 * 4) = 2
    assert rule.full_rung({**scores, 4: (0.85, 0.3)}, constrained=True) == {0, 3, 4}  # ties go up together
    assert rule.full_rung({**scores, 4: (0.5, 0.9)}, constrained=False) == {0, 4}  # the non-dominated
    assert Fidelity().enabled is False
    with pytest.raises(ConfigError, match="fidelity.subset"):
        Fidelity(subset=0.0)


def test_estimate_times_trials_on_a_model_at_the_budget() -> None:
    """The estimate times trials on the configured model narrowed uniformly to the budget: the narrowest uniform
    model that meets it (quantizing, at the smallest bit-width: less narrowing), or without a budget the middle of
    the front (half the largest saving)."""
    from psvit.budget import MemoryModel, select_groups
    from psvit.models import create_model
    from psvit.prune import list_groups
    from psvit.search.estimate import trial_ratios
    from psvit.workflow import plan

    def ratios_and_memory(*overrides: str) -> tuple[dict[str, float], MemoryModel, list]:
        cfg = compose("search", *TINY, *overrides)
        config = model_config(cfg.model, base_splits(cfg.model, cfg.data))
        constraints, enabled = plan(cfg)
        groups = select_groups(list_groups(create_model("spikformer", **config)), enabled)
        memory = MemoryModel("spikformer", config, constraints)
        return trial_ratios(cfg, memory, groups), memory, groups

    at_budget, memory, groups = ratios_and_memory("+budget=0.4")
    assert len(set(at_budget.values())) == 1 and 0.4 <= memory.saving(at_budget) < 0.45
    quantized, _, _ = ratios_and_memory("+budget=0.4", "search.bits=[4,8]")
    assert min(quantized.values()) > min(at_budget.values())  # 4-bit weights meet the budget with wider layers
    front, _, _ = ratios_and_memory()
    half = memory.max_saving(groups) / 2
    assert half <= memory.saving(front) < half + 0.05


def test_multi_fidelity_search_and_dry_run(run_cli, tmp_path: Path) -> None:
    import mlflow
    import optuna

    dry = run_cli("search", "+budget=0.4", "search.dry_run=true", *TINY)
    assert dry.stdout.startswith("estimate: ~") and "trials" in dry.stdout and "fine-tune" in dry.stdout
    assert re.search(r"^  timing \(done\) +~\d+ s$", dry.stdout, re.MULTILINE)  # the estimate's own timing counts
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()  # nothing started

    out = run_cli(
        "search",
        "+budget=0.3",  # on the tiny base, two trials scored early are promoted late here (trials 0 and 5)
        "search.study_name=mf",
        "search.n_trials=8",
        "search.latency_repeats=1",
        "search.fidelity.subset=0.25",
        "search.fidelity.promote=0.34",
        "search.finalize=false",
    ).stdout
    assert "estimate: ~" in out
    st = optuna.load_study(study_name="mf", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done = [t for t in st.trials if t.user_attrs.get("evaluated")]
    fidelity = {t.number: t.user_attrs["fidelity"] for t in done}
    assert fidelity[0] == fidelity[1] == "subset"  # the priors compete: none is promoted before 3 scores exist
    late = {t.number: t.user_attrs["promotion_of"] for t in done if "promotion_of" in t.user_attrs}
    assert late, "no trial scored before the rung opened was promoted later"
    for number, of in late.items():  # the very model of a subset trial, scored in full, without a subset pass
        assert fidelity[number] == "full" and fidelity[of] == "subset" and number > of
        assert st.trials[number].user_attrs["ratios"] == st.trials[of].user_attrs["ratios"]
        assert "val_acc_subset" not in st.trials[number].user_attrs
    assert len(set(late.values())) == len(late)  # each promoted once
    assert "subset" in fidelity.values() and list(fidelity.values()).count("full") < len(done)
    for t in done:
        assert ("val_acc_subset" in t.user_attrs) == (t.number not in late)
        assert ("cost" in t.user_attrs["seconds"]) == (fidelity[t.number] == "full")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("psvit").experiment_id], "tags.pareto = 'true'")
    assert runs and all(r.data.tags["fidelity"] == "full" for r in runs)  # the front never mixes fidelities
