"""Honest validation for pretrained models: with ``model.checkpoint`` the validation and test splits are halves of
the dataset's held-out part (image_folder ``val/``, mnist_idx ``t10k-``), listed in a file logged to MLflow, and a
dataset without a held-out part is refused unless ``data.allow_val_from_train=true``. Real CLI, real PNG files,
a real psvit checkpoint, a real MLflow SQLite store."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import psvit
from psvit.data import build_splits

#: The tiny Spikformer the CLI builds for 16-px, 3-class RGB images with these overrides.
TINY_MODEL = {
    "variant": "cifar",
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 32,
    "num_heads": 2,
    "depth": 2,
    "T": 4,
    "in_channels": 3,
    "num_classes": 3,
}
DATA = [
    "data=image_folder",
    "data.img_size=16",
    "data.mean=null",
    "data.std=null",
    "data.crop_pct=1.0",
    "model.embed_dim=32",
    "model.num_heads=2",
    "compute.num_workers=0",
    "progress=false",
]
CLASSES = ("ant", "bee", "cat")


def write_images(folder: Path, per_class: int, seed: int) -> None:
    """``folder/<class>/<i>.png``: 16-px RGB images, class k tinted k."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            pixels[..., 0] = 80 * k
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


@pytest.fixture
def pretrained(tmp_path: Path) -> Path:
    """A psvit checkpoint (``psvit.save``) of the tiny model: weights that stand for a model trained elsewhere."""
    torch.manual_seed(0)
    return psvit.save(psvit.create_model("spikformer", **TINY_MODEL), tmp_path / "pretrained.pt")


def listed(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def test_pretrained_model_is_validated_and_tested_on_halves_of_val(run_cli, tmp_path: Path, pretrained: Path) -> None:
    root = tmp_path / "data"
    write_images(root / "train", per_class=6, seed=0)
    write_images(root / "val", per_class=4, seed=1)
    db = tmp_path / "mlflow.db"
    out = run_cli(
        "sensitivity",
        *DATA,
        f"data.root={root}",
        f"model.checkpoint={pretrained}",
        "sensitivity.grid=[0.5]",
        f"mlflow.tracking_uri=sqlite:///{db}",
        f"cache_dir={tmp_path / 'cache'}",
        tiny=False,
    ).stdout
    assert "sensitivity of" in out

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs(client.search_experiments()[0].experiment_id)
    (artifact,) = client.list_artifacts(run.info.run_id, "data")
    logged = Path(client.download_artifacts(run.info.run_id, artifact.path, str(tmp_path / "dl"))).read_text()
    rows = listed(logged)
    val = {r["file"] for r in rows if r["split"] == "val"}
    test = {r["file"] for r in rows if r["split"] == "test"}
    every_val_image = {str(p) for p in (root / "val").rglob("*.png")}
    assert not val & test and val | test == every_val_image  # disjoint halves of val/, nothing from train/
    assert {r["part"] for r in rows} == {"held-out"}
    for split in ("val", "test"):  # stratified: 2 of each class's 4 images in each half
        labels = [r["label"] for r in rows if r["split"] == split]
        assert sorted(labels) == ["0", "0", "1", "1", "2", "2"]
    table = json.loads(next((tmp_path / "cache").glob("sensitivity-*.json")).read_text())["meta"]
    base = tmp_path / "cache" / table["base"]
    assert table["split"] == "held-out" and psvit.checkpoint.read(base)["meta"]["split"] == "held-out"
    assert base.with_name(f"{base.stem}.splits.tsv").read_text() == logged
    assert table["split_listing"]["sha256"] == hashlib.sha256(logged.encode()).hexdigest()  # in the search's run too

    # the same seed gives the same halves in another process (a second worker, a later run); fine-tuning and BN
    # recalibration get all of train/
    again = build_splits("image_folder", root=root, img_size=16, mean=None, std=None, crop_pct=1.0, held_out=True)
    assert {str(p) for p in again.val.paths} == val and len(again.train) == 18
    assert "18 train / 6 val / 6 test, 3 classes, 3x16x16 images, split held-out" in again.describe()


def test_pretrained_model_on_data_without_held_out_part_is_refused(run_cli, tmp_path: Path, pretrained: Path) -> None:
    root = tmp_path / "flat"  # root/<class>/<image>: validation would be drawn from what the checkpoint saw
    write_images(root, per_class=6, seed=0)
    cache = tmp_path / "cache"
    args = [*DATA, f"data.root={root}", f"model.checkpoint={pretrained}", f"cache_dir={cache}"]
    refused = run_cli("train", *args, tiny=False, check=False)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: image_folder: model.checkpoint was trained on images that the validation split")
    assert "data.allow_val_from_train=true" in line
    assert not cache.exists()  # nothing written
    searched = run_cli(
        "search", *args, "+budget=0.3", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}", tiny=False, check=False
    )  # refused by the pre-flight checks, before any work
    assert searched.returncode == 2 and "data.allow_val_from_train=true" in searched.stderr
    assert not cache.exists() and not (tmp_path / "m.db").exists()
    accepted = run_cli("train", *args, "data.allow_val_from_train=true", tiny=False).stdout
    assert "split held-out" not in accepted
    base = next(Path(line.split()[-1]) for line in accepted.splitlines() if line.startswith("base model:"))
    assert psvit.checkpoint.read(base)["meta"]["split"] == "from-train"


def idx(array: np.ndarray) -> bytes:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 8, array.ndim]) + dims + array.astype(np.uint8).tobytes()


def test_mnist_idx_held_out_split_comes_from_t10k(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train-", 40), ("t10k-", 20)):
        (tmp_path / f"{prefix}images-idx3-ubyte").write_bytes(idx(rng.integers(0, 255, (n, 8, 8))))
        (tmp_path / f"{prefix}labels-idx1-ubyte").write_bytes(idx(np.arange(n) % 2))
    splits = build_splits("mnist_idx", root=tmp_path, img_size=8, held_out=True, seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 10) and splits.policy == "held-out"
    rows = listed(splits.listing())
    assert {r["part"] for r in rows} == {"held-out"}
    val, test = ({int(r["index"]) for r in rows if r["split"] == s} for s in ("val", "test"))
    assert not val & test and val | test == set(range(20))
    assert np.bincount(splits.val.labels).tolist() == [5, 5]
    trained = build_splits("mnist_idx", root=tmp_path, img_size=8, seed=3)  # a base psvit trains: val from train-
    assert trained.policy == "from-train" and len(trained.test) == 20 and not trained.leak
    single = tmp_path / "single"
    single.mkdir()
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        (single / f"t10k-{kind}").write_bytes((tmp_path / f"t10k-{kind}").read_bytes())
    leaky = build_splits("mnist_idx", root=single, img_size=8, held_out=True)
    assert leaky.policy == "from-train" and "data.allow_val_from_train=true" in leaky.leak
    assert not build_splits("mnist_idx", root=single, img_size=8, held_out=True, allow_val_from_train=True).leak
