"""Export out of psvit: ONNX (checked in onnxruntime) and pt2 for both families, pruned and unpruned; a wrong
graph fails the parity check; a checkpoint that does not record its data is a one-line CLI error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import psvit
from helpers import calibrated
from psvit.data import build_splits
from psvit.export import ExportError, Exported, Tolerance, export_model, export_onnx, exportable, verify
from psvit.export.parity import onnx_runner
from psvit.models import create_model
from psvit.prune import list_groups, prune
from psvit.train import predict

FAMILIES = {"spikformer": {"variant": "cifar", "num_heads": 2}, "sdt": {"num_heads": 2}}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Real preprocessed test images of the default data (digits, 16 px)."""
    test = build_splits("digits", img_size=16).test
    return torch.stack([test[i][0] for i in range(128)])


def tiny(family: str, images: torch.Tensor, *, pruned: bool) -> torch.nn.Module:
    """A calibrated tiny model of ``family`` (so its neurons fire), pruned to ~60% of every width if asked."""
    torch.manual_seed(0)
    model = create_model(family, img_size=16, embed_dim=32, depth=2, T=4, in_channels=1, num_classes=10,
                         **FAMILIES[family])
    model, _ = calibrated(model, images[:64])
    if pruned:
        model = prune(model, {g.name: 0.6 for g in list_groups(model)}).eval()
    return model


@pytest.fixture(scope="module")
def exported(images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory):
    """``exported(family, pruned)``: the tiny model and its ONNX export (with latency), made once for the file."""
    done: dict[tuple[str, bool], tuple[torch.nn.Module, Exported]] = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(family: str, pruned: bool) -> tuple[torch.nn.Module, Exported]:
        if (family, pruned) not in done:
            model = tiny(family, images, pruned=pruned)
            path = folder / f"{family}-{'pruned' if pruned else 'unpruned'}.onnx"
            done[family, pruned] = model, export_onnx(model, path, images, latency_batches=(1, 8), repeats=2)
        return done[family, pruned]

    return get


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("pruned", [True, False], ids=["pruned", "unpruned"])
def test_onnx_matches_psvit_in_onnxruntime(family: str, pruned: bool, images: torch.Tensor, exported) -> None:
    model, done = exported(family, pruned)
    assert done.written.exporter.startswith("torch.onnx dynamo exporter") and not done.written.notes
    p = done.parity
    assert p.images == len(images) and p.runtime.startswith("onnxruntime")
    assert p.max_abs_graph <= 1e-4 and p.top1_graph == 1.0 and p.top1_model >= 0.99 and not done.failures
    reference = predict(model, images)
    assert reference.std(0).max() > 0.01  # the logits depend on the image: spikes do flow
    # the batch dimension is dynamic, and every call starts from a fresh neuron state
    run = onnx_runner(done.path)
    for size in (1, 3):
        got = run(images[:size].numpy())
        assert got.shape == (size, 10) and np.abs(got - reference[:size].numpy()).max() <= 1e-4
    graph = onnx.load(str(done.path)).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and {"Where", "GreaterOrEqual"} <= ops  # BN folded, LIF elementwise
    assert not ops & {"Loop", "Scan"}  # the T steps are unrolled
    assert set(done.latency.seconds) == {"torch eager", "onnxruntime"} and done.latency.batches == [1, 8]


def test_pt2_program_matches_psvit(images: torch.Tensor, tmp_path: Path) -> None:
    model = tiny("sdt", images, pruned=True)
    done = export_model(model, tmp_path / "m.pt2", images[:32], fmt="pt2", latency_batches=(1, 4), repeats=2)
    assert done.format().startswith(f"pt2: {tmp_path / 'm.pt2'}")
    assert done.parity.max_abs_graph <= 1e-4 and done.parity.top1_model >= 0.99
    program = torch.export.load(str(done.path)).module()
    with torch.no_grad():
        assert torch.allclose(program(images[:5]), predict(model, images[:5]), atol=1e-4)
    assert set(done.latency.seconds) == {"torch eager"} and set(done.latency.batches) == {1, 4}


def test_unfolded_graph_is_bit_identical_to_psvit(images: torch.Tensor) -> None:
    for family in FAMILIES:
        model = tiny(family, images, pruned=True)
        with torch.no_grad():
            assert torch.equal(exportable(model, fold_bn=False)(images), predict(model, images))
            folded = exportable(model)(images)
        assert (folded.argmax(1) == predict(model, images).argmax(1)).double().mean() >= 0.99


def test_a_wrong_graph_fails_the_parity_check(images: torch.Tensor, exported, tmp_path: Path) -> None:
    model, good = exported("spikformer", True)
    wrong = onnx.load(str(good.path))  # the head's bias shifted: a graph that is not the model
    for init in wrong.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.shape == (10,):
            init.CopyFrom(numpy_helper.from_array(array + np.arange(10, dtype=array.dtype), init.name))
    onnx.save(wrong, str(tmp_path / "wrong.onnx"))
    with pytest.raises(ExportError, match=r"^parity check failed for .*wrong\.onnx .*max \|dlogit\| .* > 0\.0001"):
        verify(tmp_path / "wrong.onnx", "onnx", model, images[:32])
    loose = verify(tmp_path / "wrong.onnx", "onnx", model, images[:32], strict=False)
    assert loose.failures(Tolerance()) and loose.max_abs_graph > 1


def test_cli_needs_a_checkpoint_that_records_its_data(images: torch.Tensor, tmp_path: Path) -> None:
    old = psvit.save(tiny("sdt", images, pruned=False), tmp_path / "old.pt")  # no meta["data"]: an old file
    run = subprocess.run([sys.executable, "-m", "psvit.export", f"checkpoint={old}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {old} does not record the data config it was made with "
                                               "(written before psvit recorded it); name it: data=<name> with its "
                                               "options, e.g. data=digits data.img_size=16"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]  # nothing written (no onnx, no outputs/)
    for bad, message in (("format=tflite", "format must be one of onnx, pt2"),
                         ("parity.images=0", "parity.images must be a positive integer")):
        run = subprocess.run([sys.executable, "-m", "psvit.export", f"checkpoint={old}", bad], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 2 and run.stderr.startswith(f"error: {message}"), run.stderr
