"""psvit.data: real datasets (digits, the MNIST test set shipped with psvit) and tiny generated IDX / PNG / CIFAR
folders."""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

import psvit.data
from psvit.data import MNIST_T10K, DataSplits, build_splits, dataset_options, list_datasets
from psvit.data.splits import stratified_split
from psvit.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = MNIST_T10K
#: From MNIST_DIR/README.md.
MNIST_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
#: One solid colour per generated PNG: class k, image i -> (40k + 10i, 255 - 40k, 7i).
CLASSES = ("cat", "dog", "emu")
PER_CLASS = 5


def labels_of(dataset) -> np.ndarray:
    return np.array([dataset[i][1] for i in range(len(dataset))])


def stack(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def assert_stratified(splits: DataSplits, all_labels: np.ndarray, fractions: dict[str, float]) -> None:
    """Each split holds every class in proportion, within one sample."""
    totals = np.bincount(all_labels, minlength=splits.num_classes)
    for split, fraction in fractions.items():
        counts = np.bincount(labels_of(getattr(splits, split)), minlength=splits.num_classes)
        assert np.all(np.abs(counts - totals * fraction) <= 1), (split, counts, totals * fraction)


# ---------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return build_splits("digits", seed=0)


def test_digits_sizes_shapes_and_range(digits: DataSplits) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1079, 359, 359)
    assert (digits.num_classes, digits.in_channels, digits.img_size, digits.name) == (10, 1, 16, "digits")
    image, label = digits.train[0]
    assert image.shape == (1, 16, 16) and image.dtype == torch.float32 and isinstance(label, int)
    images = torch.cat([digits.train.images, digits.val.images, digits.test.images])
    assert images.min() == 0.0 and 0.9 < images.max() <= 1.0
    assert digits.describe() == "digits: 1079 train / 359 val / 359 test, 10 classes, 1x16x16 images"


def test_digits_native_size_is_the_raw_data_scaled() -> None:
    raw = load_digits()
    whole = build_splits("digits", img_size=8, val_fraction=0.0, test_fraction=0.0).train
    assert torch.equal(whole.images, torch.tensor(raw.images[:, None] / 16.0, dtype=torch.float32))
    assert np.array_equal(whole.labels, raw.target)


def test_digits_splits_are_stratified(digits: DataSplits) -> None:
    assert_stratified(digits, load_digits().target, {"train": 0.6, "val": 0.2, "test": 0.2})


def test_digits_splits_partition_the_data(digits: DataSplits) -> None:
    """train + val + test is the whole dataset as a multiset of (image, label) rows: disjoint and complete."""

    def rows(images: torch.Tensor, labels: np.ndarray) -> np.ndarray:
        table = np.concatenate([images.flatten(1).numpy(), labels[:, None]], axis=1)
        return table[np.lexsort(table.T[::-1])]

    whole = build_splits("digits", val_fraction=0.0, test_fraction=0.0).train
    parts = (digits.train, digits.val, digits.test)
    joined = rows(torch.cat([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    assert np.array_equal(joined, rows(whole.images, whole.labels))


def test_digits_splits_are_seeded(digits: DataSplits) -> None:
    again, other = build_splits("digits", seed=0), build_splits("digits", seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(again, split).images, getattr(digits, split).images)
    assert not torch.equal(other.test.images, digits.test.images)


def test_stratified_split_indices_are_disjoint_and_cover() -> None:
    labels = np.repeat(np.arange(4), [3, 10, 25, 62])
    train, val, test = stratified_split(labels, 0.15, 0.25, seed=3)
    assert (len(val), len(test)) == (15, 25)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(100))
    for part, fraction in ((train, 0.6), (val, 0.15), (test, 0.25)):
        counts = np.bincount(labels[part], minlength=4)
        assert np.all(np.abs(counts - np.bincount(labels) * fraction) <= 1)


def test_splits_feed_a_dataloader(digits: DataSplits) -> None:
    images, labels = next(iter(DataLoader(digits.train, batch_size=32, shuffle=True)))
    assert images.shape == (32, 1, 16, 16) and labels.dtype == torch.int64


# ---------------------------------------------------------------------------------------------- MNIST


def test_mnist_files_match_their_readme_checksums() -> None:
    for name, md5 in MNIST_MD5.items():
        assert hashlib.md5((MNIST_DIR / name).read_bytes()).hexdigest() == md5, name


def test_mnist_test_set_loads_with_readme_class_counts() -> None:
    splits = build_splits("mnist_idx", root=MNIST_DIR, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6000, 2000, 2000)
    assert (splits.num_classes, splits.in_channels, splits.train[0][0].shape) == (10, 1, (1, 16, 16))
    all_labels = np.concatenate([s.labels for s in (splits.train, splits.val, splits.test)])
    assert np.bincount(all_labels).tolist() == MNIST_CLASS_COUNTS
    assert_stratified(splits, all_labels, {"train": 0.6, "val": 0.2, "test": 0.2})
    assert splits.test.images.min() >= 0.0 and splits.test.images.max() <= 1.0


def test_mnist_idx_without_root_reads_the_shipped_test_set() -> None:
    assert MNIST_DIR.is_relative_to(Path(psvit.data.__file__).parent)  # inside the package, not beside the repo
    default, given = build_splits("mnist_idx", seed=0), build_splits("mnist_idx", root=MNIST_DIR, seed=0)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(default, split).images, getattr(given, split).images)
        assert np.array_equal(getattr(default, split).labels, getattr(given, split).labels)
    readme = (MNIST_DIR / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and all(md5 in readme for md5 in MNIST_MD5.values())


def test_data_mnist_idx_works_out_of_the_box_on_the_cli(run_cli) -> None:
    """No data.root: the pre-flight checks read the shipped MNIST test set, and the estimate is printed."""
    out = run_cli("search", "data=mnist_idx", "+budget=0.5", "search.dry_run=true").stdout
    assert out.startswith("estimate: ~") and "base model" in out


def test_mnist_native_size_matches_the_idx_bytes() -> None:
    whole = build_splits("mnist_idx", root=MNIST_DIR, img_size=28, val_fraction=0.0, test_fraction=0.0).train
    raw = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    expected = torch.tensor(np.frombuffer(raw, np.uint8).reshape(10000, 1, 28, 28) / 255.0, dtype=torch.float32)
    assert torch.equal(whole.images, expected)


# ---------------------------------------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        (folder / f"{prefix}{kind}{'.gz' if gz else ''}").write_bytes(gzip.compress(data) if gz else data)


def random_idx(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 3


def test_idx_raw_and_gzip_load_identically(tmp_path: Path) -> None:
    images, labels = random_idx(30, seed=0)
    write_idx(tmp_path / "raw", "t10k-", images, labels, gz=False)
    write_idx(tmp_path / "gz", "t10k-", images, labels, gz=True)
    raw, gz = (build_splits("mnist_idx", root=tmp_path / d, img_size=12, seed=5) for d in ("raw", "gz"))
    assert (len(raw.train), len(raw.val), len(raw.test), raw.num_classes) == (18, 6, 6, 3)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(raw, split).images, getattr(gz, split).images)
        assert np.array_equal(getattr(raw, split).labels, getattr(gz, split).labels)


def test_idx_train_and_t10k_make_t10k_the_test_split(tmp_path: Path) -> None:
    train_images, train_labels = random_idx(30, seed=1)
    test_images, test_labels = random_idx(9, seed=2)
    write_idx(tmp_path, "train-", train_images, train_labels, gz=True)
    write_idx(tmp_path, "t10k-", test_images, test_labels, gz=False)
    splits = build_splits("mnist_idx", root=tmp_path, img_size=28, val_fraction=0.2, test_fraction=0.5)
    assert (len(splits.train), len(splits.val)) == (24, 6)
    assert torch.equal(splits.test.images, torch.tensor(test_images[:, None] / 255.0, dtype=torch.float32))
    assert np.array_equal(splits.test.labels, test_labels)


# ---------------------------------------------------------------------------------------------- image folders


def colour(k: int, i: int) -> tuple[int, int, int]:
    return (40 * k + 10 * i, 255 - 40 * k, 7 * i)


def write_pngs(folder: Path, classes: tuple[str, ...] = CLASSES, per_class: int = PER_CLASS) -> None:
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (6 + i, 5), colour(CLASSES.index(name), i)).save(folder / name / f"{i}.png")


def test_image_folder_single_layout(tmp_path: Path) -> None:
    write_pngs(tmp_path)
    splits = build_splits("image_folder", root=tmp_path, img_size=4, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)
    assert (splits.classes, splits.num_classes, splits.in_channels) == (CLASSES, 3, 3)
    assert_stratified(splits, np.repeat([0, 1, 2], PER_CLASS), {"train": 0.6, "val": 0.2, "test": 0.2})
    for split in (splits.train, splits.val, splits.test):
        for path, (image, label) in zip(split.paths, split, strict=True):
            assert path.parent.name == CLASSES[label]
            expected = torch.tensor(colour(label, int(path.stem)), dtype=torch.float32) / 255.0
            assert image.shape == (3, 4, 4) and torch.allclose(image, expected.view(3, 1, 1).expand(3, 4, 4))
    paths = [set(s.paths) for s in (splits.train, splits.val, splits.test)]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert len(set.union(*paths)) == 3 * PER_CLASS


def test_image_folder_train_val_layout_grayscale_and_normalized(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train")
    write_pngs(tmp_path / "val", classes=("emu", "cat"), per_class=2)
    splits = build_splits(
        "image_folder", root=tmp_path, img_size=3, val_fraction=0.4, grayscale=True, mean=[0.5], std=[0.25]
    )
    assert (len(splits.train), len(splits.val), len(splits.test), splits.in_channels) == (9, 6, 4, 1)
    assert [p.parent.parent.name for p in splits.test.paths] == ["val"] * 4
    assert labels_of(splits.test).tolist() == [0, 0, 2, 2]  # class indices come from train/: cat 0, emu 2
    image, _ = splits.test[3]
    r, g, b = colour(2, 1)
    gray = round((r * 299 + g * 587 + b * 114) / 1000) / 255.0  # PIL's RGB -> L conversion
    assert image.shape == (1, 3, 3) and torch.allclose(image, torch.full((1, 3, 3), (gray - 0.5) / 0.25), atol=1e-2)


def test_image_folder_decodes_lazily(tmp_path: Path) -> None:
    write_pngs(tmp_path)
    broken = tmp_path / "dog" / "9.png"
    broken.write_bytes(b"not a png")
    splits = build_splits("image_folder", root=tmp_path, img_size=4, val_fraction=0.0, test_fraction=0.0)
    index = splits.train.paths.index(broken)
    with pytest.raises(DataError, match=str(broken)):
        splits.train[index]
    assert splits.train[index - 1][0].shape == (3, 4, 4)


# ---------------------------------------------------------------------------------------------- CIFAR-10


def write_cifar(folder: Path, per_batch: int = 4, test_size: int = 6) -> dict[str, np.ndarray]:
    """A tiny CIFAR-10 python folder in the official format; returns the test batch's data and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"class{k}".encode() for k in range(10)]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": test_size}
    written = {}
    for name, n in batches.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        with (folder / name).open("wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f)
        written[name] = data
        written[f"{name}/labels"] = np.array(labels)
    return written


def test_cifar10_official_format(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    splits = build_splits("cifar10", root=tmp_path / "cifar-10-batches-py", img_size=32, val_fraction=0.25)
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (20, 6)
    assert (splits.num_classes, splits.in_channels, splits.classes[3]) == (10, 3, "class3")
    image, label = splits.test[2]
    row = written["test_batch"][2]
    assert label == written["test_batch/labels"][2]
    for c, h, w in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):  # rows are R, G, B planes of 32 x 32, row-major
        assert image[c, h, w] == row[c * 1024 + h * 32 + w] / np.float32(255)


def test_cifar10_resized_and_normalized(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    plain = build_splits("cifar10", root=tmp_path, img_size=16)
    normed = build_splits("cifar10", root=tmp_path, img_size=16, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.1])
    assert plain.test.images.shape == (6, 3, 16, 16)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.2, 0.1]).view(3, 1, 1)
    assert torch.allclose(normed.test.images, (plain.test.images - mean) / std, atol=1e-5)


# ---------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["digits", "mnist_idx", "image_folder", "cifar10"])
def test_config_file_holds_build_splits_keys(name: str) -> None:
    cfg = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")
    common = {"name", "root", "img_size", "val_fraction", "test_fraction", "seed", "allow_val_from_train"}
    assert cfg.name == name and set(cfg) == common | set(dataset_options(name))
    if name == "digits":
        assert build_splits(**cfg).describe().startswith("digits: 1079 train")
    elif name == "mnist_idx":  # the shipped MNIST test set, split three ways
        described = "mnist_idx: 6000 train / 2000 val / 2000 test, 10 classes, 1x16x16 images"
        assert build_splits(**cfg).describe() == described
    else:
        with pytest.raises(DataError, match="data.root"):
            build_splits(**cfg)


# ---------------------------------------------------------------------------------------------- errors


def corrupt_idx(folder: Path, how: str) -> Path:
    """IDX files with one defect; returns the path the error must name."""
    images, labels = random_idx(6, seed=0)
    write_idx(folder, "t10k-", images, labels, gz=how == "truncated_gz")
    if how == "bad_magic":
        path = folder / "t10k-images-idx3-ubyte"
        path.write_bytes(b"\x00\x00\x08\x01" + path.read_bytes()[4:])
    elif how == "truncated":
        path = folder / "t10k-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-5])
    elif how == "truncated_gz":
        path = folder / "t10k-labels-idx1-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-12])
    elif how == "count_mismatch":
        path = folder / "t10k-images-idx3-ubyte"
        (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:4]))
    else:  # "no_labels"
        path = folder / "t10k-labels-idx1-ubyte"
        path.unlink()
    return path


@pytest.mark.parametrize("how", ["bad_magic", "truncated", "truncated_gz", "count_mismatch", "no_labels"])
def test_corrupt_idx_is_a_data_error(tmp_path: Path, how: str) -> None:
    path = corrupt_idx(tmp_path, how)
    with pytest.raises(DataError, match=str(path)) as info:
        build_splits("mnist_idx", root=tmp_path)
    assert "\n" not in str(info.value)


def test_idx_folders_without_one_clear_pair_are_data_errors(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no IDX files here")
    with pytest.raises(DataError, match=f"{tmp_path}: no \\*images-idx3-ubyte"):
        build_splits("mnist_idx", root=tmp_path)
    for prefix in ("train-", "extra-"):
        write_idx(tmp_path, prefix, *random_idx(6, seed=0), gz=False)
    with pytest.raises(DataError, match=f"{tmp_path}: several IDX image files"):
        build_splits("mnist_idx", root=tmp_path)


@pytest.mark.parametrize("name", ["mnist_idx", "image_folder", "cifar10"])
def test_missing_file_and_empty_roots_are_data_errors(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for root, message in (("nope", "no such directory"), ("file.txt", "not a directory"), ("empty", "empty folder")):
        with pytest.raises(DataError, match=f"{tmp_path / root}: {message}"):
            build_splits(name, root=tmp_path / root)
    if name != "mnist_idx":  # mnist_idx without a root reads the shipped test set (tested above)
        with pytest.raises(DataError, match="set data.root"):
            build_splits(name)


def test_image_folders_without_classes_are_data_errors(tmp_path: Path) -> None:
    flat, hollow = tmp_path / "flat", tmp_path / "hollow"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    (hollow / "cat").mkdir(parents=True)
    (hollow / "cat" / "notes.txt").write_text("no images")
    for root in (flat, hollow):
        with pytest.raises(DataError, match=f"{root}: no class subfolders with images"):
            build_splits("image_folder", root=root)
    write_pngs(tmp_path / "split" / "train", classes=("cat", "dog"))
    write_pngs(tmp_path / "split" / "test", classes=("emu",))
    with pytest.raises(DataError, match=str(tmp_path / "split" / "test" / "emu")):
        build_splits("image_folder", root=tmp_path / "split")


def test_broken_cifar_folders_are_data_errors(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match=str(tmp_path / "data_batch_3")):
        build_splits("cifar10", root=tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match=f"{tmp_path / 'data_batch_3'}: no such file"):
        build_splits("cifar10", root=tmp_path)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*" + ", ".join(list_datasets())):
        build_splits("imagenet")


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.2, 1.0), (0.5, 0.5), (0.7, 0.4)])
def test_bad_fractions_are_data_errors(val: float, test: float) -> None:
    with pytest.raises(DataError, match="bad split fractions"):
        build_splits("digits", val_fraction=val, test_fraction=test)


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    write_pngs(tmp_path)
    with pytest.raises(ConfigError, match="unknown option.*grayscale.*'digits'"):
        build_splits("digits", grayscale=True)
    with pytest.raises(ConfigError, match="3 value"):
        build_splits("image_folder", root=tmp_path, mean=[0.5], std=[0.2])
    with pytest.raises(ConfigError, match="img_size"):
        build_splits("digits", img_size=0)
