"""Bad input through the real CLI: one ``error:`` line on stderr, exit code 2, and nothing written or lost.

Every case runs ``python -m psvit.<command>`` in a subprocess, in a working folder that already holds a cache
folder, MLflow and Optuna databases and the bad input files; after the command the folder must be exactly as
before (no Hydra output folder, no cache entry, no database change). Every case is rejected before any training,
except the corrupt image, which is only found when it is decoded (images are read lazily).

With ``$PSVIT_BAD_INPUT_ROWS`` set to a folder, each case also writes its row of the bad-input table in
docs/reliability.md there (``NN.md``, paths relative to the case's folder): ``cat $PSVIT_BAD_INPUT_ROWS/*.md``.
"""

from __future__ import annotations

import copy
import gzip
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose
from omegaconf import OmegaConf
from PIL import Image

import psvit
from psvit.config import NUMBERS, check_numbers
from psvit.errors import CheckpointError, ConfigError

BUDGET = "budget must be a number strictly between 0 and 1"
UNREADABLE = "truncated, corrupt or not a PyTorch file"
ABSENT = object()

CASES = {
    # Hydra's own errors, before the command runs (-m: a sweep)
    "budget without +": ("search", ["budget=0.224"], "budget is not in the config; to add it, write +budget=0.224"),
    "typo in a key": ("search", ["search.samplr=tpe"], "search.samplr is not in the config"),
    "+ on a key that exists": ("train", ["+seed=3"], "seed is already in the config; write seed=3"),
    "unknown model": (
        "search",
        ["+budget=0.2", "model=nope"],
        "model=nope: no such model config; choose one of: sdt_imagenet, sdt_tiny, spikformer_cifar",
    ),
    "unknown strategy": ("prune", ["strategy=nope", "+budget=0.2"], "strategy=nope: no such strategy config"),
    "unparsable override": ("search", ["+budget=[0.2"], "cannot parse override '+budget=[0.2'"),
    "option after overrides": ("search", ["+budget=0.2", "-m", "search.n_trials=2"], "unrecognized arguments"),
    "sweep: unknown model": ("search", ["-m", "+budget=0.1,0.2", "model=nope"], "model=nope: no such model"),
    "sweep: unknown sampler": (
        "search",
        ["-m", "+budget=0.1,0.2", "search.sampler=nope"],
        "search.sampler must be one of",
    ),
    "sweep: one bad budget": ("search", ["-m", "+budget=0.1,abc"], f"sweep job 1 (+budget=abc): {BUDGET}"),
    # budgets, ratios, names
    "budget 0": ("search", ["+budget=0"], BUDGET),
    "budget 1": ("search", ["+budget=1"], BUDGET),
    "budget 1.5": ("prune", ["+budget=1.5"], BUDGET),
    "budget -0.1": ("prune", ["+budget=-0.1"], BUDGET),
    "budget abc": ("search", ["+budget=abc"], BUDGET),
    "budget empty": ("search", ["+budget="], BUDGET),
    "infeasible budget": ("prune", ["+budget=0.95", "prune.enabled=[mlp]"], "budget 0.9500 is infeasible"),
    "ratio 1.5": ("prune", ["strategy=uniform", "+ratio=1.5"], "ratio must be a keep ratio in (0, 1]"),
    "ratio 0": ("prune", ["strategy=uniform", "+ratio=0"], "ratio must be a keep ratio in (0, 1]"),
    "grid ratio 1.5": ("sensitivity", ["sensitivity.grid=[1.5,0.5]"], "sensitivity.grid must be keep ratios"),
    "unknown sampler": ("search", ["+budget=0.2", "search.sampler=nope"], "search.sampler must be one of"),
    "unknown group": ("sensitivity", ["prune.enabled=[mlp,nope]"], "unknown group or kind 'nope'"),
    # numeric keys: type and range (psvit.config.NUMBERS)
    "seed not an integer": (
        "search",
        ["+budget=0.224", "search.seed=abc"],
        "search.seed must be an integer in [0, inf), got 'abc'",
    ),
    "negative epochs": ("train", ["train.epochs=-1"], "train.epochs must be an integer in [1, inf), got -1"),
    # bit-widths
    "bits 1": (
        "search",
        ["+budget=0.5", "search.bits=[1,4]"],
        "search.bits: a weight bit-width must be an integer in 2..8 or 32, got 1",
    ),
    "bits empty": ("search", ["+budget=0.5", "search.bits=[]"], "search.bits: it must be a non-empty list"),
    "prune bits 16": (
        "prune",
        ["strategy=uniform", "+ratio=1", "prune.bits=16"],
        "prune.bits: a weight bit-width must be an integer in 2..8 or 32, got 16",
    ),
    "infeasible at 2 bits": (
        "search",
        ["+budget=0.99", "search.bits=[2,4]", "prune.enabled=[mlp]"],
        "budget 0.9900 is infeasible: pruning every enabled group (2) to its minimum under the constraints at 2 bits",
    ),
    # data
    "no data.root": ("train", ["data=image_folder"], "set data.root"),  # mnist_idx: the shipped MNIST test set
    "missing data.root": ("train", ["data=mnist_idx", "data.root={tmp}/nope"], "{tmp}/nope: no such directory"),
    "empty data.root": ("train", ["data=image_folder", "data.root={tmp}/empty"], "{tmp}/empty: empty folder"),
    "MNIST bad magic": ("train", ["data=mnist_idx", "data.root={tmp}/bad_magic"], "bad magic number"),
    "MNIST truncated": ("train", ["data=mnist_idx", "data.root={tmp}/truncated"], "truncated or corrupt"),
    "one class": (
        "train",
        ["data=image_folder", "data.root={tmp}/one_class"],
        "{tmp}/one_class: only class 'cat'; a classifier needs at least 2 classes",
    ),
    "corrupt image": (
        "train",
        ["data=image_folder", "data.root={tmp}/corrupt_image", "data.img_size=8", "train.epochs=1"],
        "{tmp}/corrupt_image/dog/3.png: unreadable image",
    ),
    # checkpoints
    "checkpoint missing": ("train", ["model.checkpoint={tmp}/nope.pt"], "checkpoint not found"),
    "checkpoint corrupt": ("train", ["model.checkpoint={tmp}/corrupt.pt"], UNREADABLE),
    "checkpoint truncated": ("train", ["model.checkpoint={tmp}/truncated.pt"], UNREADABLE),
    "checkpoint not a model": ("train", ["model.checkpoint={tmp}/not_a_model.pt"], "no state_dict found"),
    "checkpoint wrong architecture": (
        "train",
        ["model.checkpoint={tmp}/wrong_arch.pt"],
        "does not fit the configured model",
    ),
    "checkpoint, no held-out data": (
        "train",
        ["model.checkpoint={tmp}/pretrained.pt"],
        "digits: model.checkpoint was trained on images that the validation split",
    ),
    # services and faults
    "MLflow unreachable": (
        "search",
        ["+budget=0.2", "mlflow.tracking_uri=http://127.0.0.1:9"],
        "MLflow tracking server http://127.0.0.1:9 is unreachable",
    ),
    "MLflow unknown scheme": ("sensitivity", ["mlflow.tracking_uri=nope://host"], "unknown scheme 'nope'"),
    "MLflow SQLite folder missing": (
        "prune",
        ["+budget=0.2", "mlflow.tracking_uri=sqlite:///{tmp}/nope/m.db"],
        "folder {tmp}/nope does not exist",
    ),
    "storage malformed": ("search", ["+budget=0.2", "search.storage=sqlite:/optuna.db"], "not a valid database URL"),
    "storage bad port": (
        "search",
        ["+budget=0.2", "search.storage=postgresql://u@host:port/db"],
        "not a valid database URL",
    ),
    "cache not writable": ("train", ["cache_dir={tmp}/notes.txt/cache"], "{tmp}/notes.txt is not a folder"),
    "output dir not writable": ("train", ["hydra.run.dir={tmp}/notes.txt/run"], "cannot use {tmp}/notes.txt/run"),
}


#: Every primary config, and each strategy's group: together they hold every key of psvit.config.NUMBERS.
CONFIGS = [
    ("train", ()),
    ("sensitivity", ()),
    ("prune", ("strategy=psvit",)),
    ("prune", ("strategy=largest_first",)),
    ("search", ()),
]


def numeric_keys(cfg) -> list[str]:
    return [key for key in NUMBERS if OmegaConf.select(cfg, key, default=ABSENT) is not ABSENT]


@pytest.mark.parametrize("config_name, overrides", CONFIGS)
def test_defaults_pass_the_numeric_checks_and_each_key_rejects_minus_one(config_name: str, overrides: tuple) -> None:
    """The default config passes :func:`check_numbers`; each of its table keys set to -1 (below every range) fails,
    naming that key."""
    cfg = compose(config_name, *overrides)
    check_numbers(cfg)
    for key in numeric_keys(cfg):
        bad = copy.deepcopy(cfg)
        OmegaConf.update(bad, key, -1)
        with pytest.raises(ConfigError, match=f"^{re.escape(key)} must be an? (integer|number) in "):
            check_numbers(bad)


def test_every_numeric_key_is_in_some_config() -> None:
    """No key of the table is a typo that no config has (it would never be checked)."""
    found = {key for config_name, overrides in CONFIGS for key in numeric_keys(compose(config_name, *overrides))}
    assert found == set(NUMBERS)


def idx_file(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic, dimensions, data."""
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 8, array.ndim]) + dims + array.astype(np.uint8).tobytes()


def write_bad_inputs(tmp: Path) -> None:
    """The files the cases read, next to a cache and databases that must survive untouched."""
    (tmp / "cache").mkdir()
    (tmp / "cache" / "keep.txt").write_text("an earlier cache entry")
    (tmp / "mlflow.db").write_bytes(b"")
    (tmp / "optuna.db").write_bytes(b"")
    (tmp / "notes.txt").write_text("a file where a folder is expected")
    (tmp / "empty").mkdir()
    images, labels = np.zeros((20, 8, 8), np.uint8), np.arange(20) % 2
    for name in ("bad_magic", "truncated"):
        (tmp / name).mkdir()
        (tmp / name / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_file(labels)))
    (tmp / "bad_magic" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + idx_file(images)[4:])
    (tmp / "truncated" / "t10k-images-idx3-ubyte").write_bytes(idx_file(images)[:-10])
    for folder, classes in (("one_class", ("cat",)), ("corrupt_image", ("cat", "dog"))):
        for c in classes:
            (tmp / folder / c).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp / folder / c / f"{i}.png")
    (tmp / "corrupt_image" / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (tmp / "corrupt.pt").write_bytes(b"not a checkpoint at all")
    torch.save([1, 2, 3], tmp / "not_a_model.pt")
    other = psvit.create_model(
        "spikformer",
        variant="cifar",
        img_size=16,
        embed_dim=16,
        num_heads=2,
        depth=1,
        T=2,
        in_channels=1,
        num_classes=10,
    )
    torch.save({"state_dict": other.state_dict()}, tmp / "wrong_arch.pt")
    fits = psvit.create_model(
        "spikformer",
        variant="cifar",
        img_size=16,
        embed_dim=32,
        num_heads=2,
        depth=2,
        T=4,
        in_channels=1,
        num_classes=10,
    )  # the tiny default model: digits has no held-out part
    psvit.save(fits, tmp / "pretrained.pt")
    whole = (tmp / "wrong_arch.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(whole[: len(whole) // 2])


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and modification time, and every folder, under ``root``."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, -1)
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_cli, tmp_path: Path, case: str) -> None:
    command, overrides, expected = CASES[case]
    write_bad_inputs(tmp_path)
    before = snapshot(tmp_path)
    flags = ("-m",) if overrides[0] == "-m" else ()
    args = [o.format(tmp=tmp_path) for o in overrides[len(flags) :]]
    start = time.perf_counter()
    result = run_cli(command, f"cache_dir={tmp_path}/cache", *args, flags=flags, check=False, timeout=120)
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected.format(tmp=tmp_path) in lines[0]
    assert snapshot(tmp_path) == before
    if case.startswith("MLflow unreachable"):
        assert seconds < 60  # fails fast: MLflow's own client would retry for minutes
    if os.environ.get("PSVIT_BAD_INPUT_ROWS"):
        write_row(Path(os.environ["PSVIT_BAD_INPUT_ROWS"]), case, command, [*flags, *args], lines[0], tmp_path)


def write_row(folder: Path, case: str, command: str, args: list[str], error: str, tmp: Path) -> None:
    """The case's row of the table of bad inputs in docs/reliability.md."""

    def relative(text: str) -> str:
        return text.replace(f"{tmp}/", "")

    folder.mkdir(parents=True, exist_ok=True)
    row = f"| {case} | `{command} {relative(' '.join(args))}` | `{relative(error)}` | 2 | nothing |\n"
    (folder / f"{list(CASES).index(case):02d}.md").write_text(row)


def test_a_failed_checkpoint_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    model = psvit.create_model(
        "spikformer",
        variant="cifar",
        img_size=16,
        embed_dim=16,
        num_heads=2,
        depth=1,
        T=2,
        in_channels=1,
        num_classes=10,
    )
    path = psvit.save(model, tmp_path / "model.pt", meta={"version": 1})
    with pytest.raises(Exception, match="lambda"):  # torch.save fails half-way: meta cannot be pickled
        psvit.save(model, path, meta={"version": 2, "bad": lambda: None})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left behind
    assert torch.load(path, weights_only=True)["meta"] == {"version": 1}
    (tmp_path / "notes.txt").write_text("a file where a folder is expected")
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*notes.txt/model.pt"):
        psvit.save(model, tmp_path / "notes.txt" / "model.pt")


@pytest.mark.parametrize("overrides", [["search.samplr=tpe"], ["+budget=abc"]])
def test_a_config_rejected_before_any_data_is_read_never_imports_torch(tmp_path: Path, overrides: list[str]) -> None:
    """Hydra's errors and the budget's value are checked before psvit imports torch (~3 s), so they come at once."""
    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
        f"sys.argv = ['psvit.search', *{overrides!r}]; "
        "runpy.run_module('psvit.search', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert done.stdout.strip() == "torch imported: False"
