"""Export out of psvit: ONNX (checked in onnxruntime) and pt2 for both families, pruned and unpruned; quantized
checkpoints export integer weights with DequantizeLinear; a wrong graph fails the parity check; a checkpoint that
does not record its data is a one-line CLI error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import calibrated
from onnx import numpy_helper

import psvit
from psvit.data import build_splits
from psvit.export import Exported, ExportError, Tolerance, export_model, export_onnx, exportable, verify
from psvit.export.parity import compare, onnx_runner
from psvit.export.quantized import INTEGER_TYPES, runtime_runs
from psvit.models import create_model
from psvit.prune import list_groups, prune
from psvit.quant import layers_for, quantization, quantize_weights
from psvit.train import predict

FAMILIES = {"spikformer": {"variant": "cifar", "num_heads": 2}, "sdt": {"num_heads": 2}}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Real preprocessed test images of the default data (digits, 16 px)."""
    test = build_splits("digits", img_size=16).test
    return torch.stack([test[i][0] for i in range(128)])


def tiny(family: str, images: torch.Tensor, *, pruned: bool) -> torch.nn.Module:
    """A calibrated tiny model of ``family`` (so its neurons fire), pruned to ~60% of every width if asked. Two time
    steps: the neuron state still carries from one step to the next, and the unrolled graph exports twice as fast."""
    torch.manual_seed(0)
    model = create_model(
        family, img_size=16, embed_dim=32, depth=2, T=2, in_channels=1, num_classes=10, **FAMILIES[family]
    )
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
    assert p.match_graph >= 0.99 and p.top1_graph >= 0.99 and p.top1_model >= 0.99 and not done.failures
    assert predict(model, images).std(0).max() > 0.01  # the logits depend on the image: spikes do flow
    # the batch dimension is dynamic, and every call starts from a fresh neuron state
    run = onnx_runner(done.path)
    full = run(images.numpy())
    for size in (1, 3):
        got = run(images[:size].numpy())
        assert got.shape == (size, 10) and np.array_equal(got, run(images[:size].numpy()))
        assert np.abs(got - full[:size]).max() <= 1e-4
    graph = onnx.load(str(done.path)).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and {"Where", "GreaterOrEqual"} <= ops  # BN folded, LIF elementwise
    assert not ops & {"Loop", "Scan"}  # the T steps are unrolled
    assert set(done.latency.seconds) == {"torch eager", "onnxruntime"} and done.latency.batches == [1, 8]


def test_pt2_program_matches_psvit(images: torch.Tensor, tmp_path: Path) -> None:
    model = tiny("sdt", images, pruned=True)
    done = export_model(model, tmp_path / "m.pt2", images[:32], fmt="pt2", latency_batches=(1, 4), repeats=2)
    assert done.format().startswith(f"pt2: {tmp_path / 'm.pt2'}")
    assert done.parity.match_graph >= 0.99 and done.parity.top1_model >= 0.99
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
    off = r"logits within 0\.0001 on 0\.00% of the images < 99% vs the torch graph"
    with pytest.raises(ExportError, match=rf"^parity check failed for .*wrong\.onnx .*{off}"):
        verify(tmp_path / "wrong.onnx", "onnx", model, images[:32])
    loose = verify(tmp_path / "wrong.onnx", "onnx", model, images[:32], strict=False)
    assert loose.failures(Tolerance()) and loose.max_abs_graph > 1


def test_parity_counts_images_so_a_flipped_spike_is_not_a_failed_export(images: torch.Tensor) -> None:
    """A runtime that rounds differently flips a spike on an image now and then (seen: one image in 256 off by a
    spike's worth, 0.04, on a CPU without AVX-512): parity holds while at least 99 % of the images match."""
    model = tiny("spikformer", images, pruned=True)
    graph = exportable(model)

    def runtime(off: int):
        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = graph(torch.from_numpy(batch)).numpy().copy()
            if np.array_equal(batch[0], images[0].numpy()):  # the first chunk: its first `off` images
                out[:off, 0] += 0.04
            return out

        return run

    one = compare(runtime(1), "rounding", graph, model, images, 1e-4)
    assert one.match_graph == 1 - 1 / len(images) and one.max_abs_graph > 0.039 and not one.failures(Tolerance())
    two = compare(runtime(2), "rounding", graph, model, images, 1e-4)
    assert two.failures(Tolerance())[0] == "logits within 0.0001 on 98.44% of the images < 99% vs the torch graph"

    def nan_once(batch: np.ndarray) -> np.ndarray:  # one image's logits NaN: a broken file, however rare
        out = runtime(0)(batch)
        if np.array_equal(batch[0], images[0].numpy()):
            out[0, 0] = np.nan
        return out

    assert "non-finite logits vs the torch graph" in compare(nan_once, "nan", graph, model, images, 1e-4).failures(
        Tolerance()
    )


def test_cli_needs_a_checkpoint_that_records_its_data(images: torch.Tensor, tmp_path: Path) -> None:
    old = psvit.save(tiny("sdt", images, pruned=False), tmp_path / "old.pt")  # no meta["data"]: an old file
    run = subprocess.run(
        [sys.executable, "-m", "psvit.export", f"checkpoint={old}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: {old} does not record the data config it was made with "
        "(written before psvit recorded it); name it: data=<name> with its "
        "options, e.g. data=digits data.img_size=16"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]  # nothing written (no onnx, no outputs/)
    for bad, message in (
        ("format=tflite", "format must be one of onnx, pt2"),
        ("parity.images=0", "parity.images must be a positive integer"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "psvit.export", f"checkpoint={old}", bad],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 2 and run.stderr.startswith(f"error: {message}"), run.stderr


def quantized_checkpoint(family: str, images: torch.Tensor, bits: dict[str, int] | int, folder: Path) -> Path:
    """The tiny pruned model of ``family`` quantized at ``bits`` (per group, or one for all), saved by psvit (the
    ``psvit-checkpoint/quantized-1`` format: codes packed, BatchNorm folded into the scales)."""
    model = tiny(family, images, pruned=True)
    groups = list_groups(model)
    bits = bits if isinstance(bits, dict) else {g.name: bits for g in groups}
    path = folder / f"{family}-{'-'.join(map(str, sorted(set(bits.values()))))}.pt"
    return psvit.save(quantize_weights(model, layers_for(groups, bits)), path)


def integer_weights(path: Path) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The ONNX model at ``path`` and, for each DequantizeLinear output, the data type of its integer input."""
    model = onnx.load(str(path))
    types = {init.name: onnx.TensorProto.DataType.Name(init.data_type) for init in model.graph.initializer}
    return model, {n.output[0]: types[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear"}


def dequantized_in_onnxruntime(graph: onnx.ModelProto, names: list[str], image: np.ndarray) -> list[np.ndarray]:
    """The float tensors that onnxruntime's DequantizeLinear nodes ``names`` produce, read as extra graph outputs."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {session.get_inputs()[0].name: image})


@pytest.mark.parametrize(
    ("family", "bits", "dtype", "opset"),
    [("spikformer", 4, "INT4", 21), ("sdt", 8, "INT8", 20), ("spikformer", 3, "INT4", 21), ("sdt", 2, "INT2", 25)],
)
def test_quantized_checkpoint_exports_integer_weights(
    family: str, bits: int, dtype: str, opset: int, images: torch.Tensor, tmp_path: Path
) -> None:
    if dtype == "INT2" and not runtime_runs(INTEGER_TYPES[0]):
        pytest.skip("this onnxruntime runs no INT2 DequantizeLinear (opset 25)")
    model = psvit.load(quantized_checkpoint(family, images, bits, tmp_path))
    layers = quantization(model)
    assert layers and set(layers.values()) == {bits}
    done = export_onnx(model, tmp_path / "q.onnx", images)  # parity checked (strict)
    p = done.parity
    assert p.match_graph >= 0.99 and p.top1_graph >= 0.99 and p.top1_model >= 0.99 and not done.failures
    graph, dequantized = integer_weights(done.path)
    assert len(dequantized) == len(layers) and set(dequantized.values()) == {dtype}  # every quantized layer
    assert next(o.version for o in graph.opset_import if o.domain == "") == opset
    onnx.checker.check_model(graph, full_check=True)  # a valid file of that opset (types, shapes)
    floats = [numpy_helper.to_array(i) for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    # the integers are the codes psvit stores: onnxruntime's DequantizeLinear gives back exactly psvit's weights
    # (the logits then agree to rounding, which the parity above bounds: summation order is the kernels')
    restored = dequantized_in_onnxruntime(graph, list(dequantized), images[:1].numpy())
    for name in layers:  # no quantized weight left in float32, each restored exactly (as is, or transposed for MatMul)
        w = model.get_submodule(name).weight.detach().numpy()
        assert not any(a.size == w.size and (np.array_equal(a, w) or np.array_equal(a, w.T)) for a in floats)
        assert any(np.array_equal(r, w) or np.array_equal(r, w.T) for r in restored), name
    stored = done.written.weights
    assert stored.file_bytes == done.path.stat().st_size < stored.float_bytes
    container = {"INT2": 2, "INT4": 4, "INT8": 8}[dtype]
    weights = [model.get_submodule(name).weight for name in layers]
    assert stored.float_weight_bytes == sum(4 * w.numel() for w in weights)
    assert stored.weight_bytes == sum(-(-w.numel() * container // 8) + 4 * len(w) for w in weights)  # + scales
    assert stored.float_bytes - stored.file_bytes >= 0.9 * (stored.float_weight_bytes - stored.weight_bytes)
    text = done.format().splitlines()
    assert text[2] == (
        f"integer weights (DequantizeLinear, ONNX opset {opset}): {dtype.lower()} for {bits}-bit "
        f"groups {','.join(dict.fromkeys(g.name for g in list_groups(model)))}"
    )
    assert text[3].startswith("onnx file: ") and "(float export: " in text[3]


def test_mixed_bit_widths_and_float_groups(images: torch.Tensor, tmp_path: Path) -> None:
    base = tiny("spikformer", images, pruned=True)
    names = [g.name for g in list_groups(base)]
    plan = dict(zip(names, [2, 3, 4, 6, 8, 32] * 2))
    model = psvit.load(quantized_checkpoint("spikformer", images, plan, tmp_path))
    done = export_onnx(model, tmp_path / "mixed.onnx", images)
    assert done.parity.match_graph >= 0.99 and not done.failures
    _, dequantized = integer_weights(done.path)
    assert len(dequantized) == len(quantization(model))
    want = {"INT2": 2, "INT4": 3, "INT8": 6} if runtime_runs(INTEGER_TYPES[0]) else {"INT4": 2, "INT8": 6}
    by_type = {label: {q.bits for q in layers} for label, layers in done.written.weights.integer.items()}
    assert {label.upper(): min(b) for label, b in by_type.items()} == want  # each width in the narrowest type
    assert set().union(*by_type.values()) == {2, 3, 4, 6, 8}  # groups at 32 bits are not quantized: float


def test_max_opset_narrows_the_integer_types_and_says_what_stays_float(images: torch.Tensor, tmp_path: Path) -> None:
    model = psvit.load(quantized_checkpoint("spikformer", images, 2, tmp_path))
    groups = ",".join(dict.fromkeys(g.name for g in list_groups(model)))
    # a runtime of opset 21: no INT2, so the 2-bit codes go in INT4, exactly
    done = export_onnx(model, tmp_path / "opset21.onnx", images[:32], max_opset=21)
    graph, dequantized = integer_weights(done.path)
    assert set(dequantized.values()) == {"INT4"} and graph.opset_import[0].version == 21
    assert done.parity.match_graph >= 0.99
    # below opset 13, DequantizeLinear has no per-channel scales: the weights stay float, and the export says so
    done = export_onnx(model, tmp_path / "opset12.onnx", images[:32], max_opset=12)
    graph, dequantized = integer_weights(done.path)
    assert not dequantized and done.parity.match_graph >= 0.99
    note = (
        f"note: weights of groups {groups} at 2 bits stored as float (no ONNX integer type for 2-bit codes "
        f"within opset 12 that onnxruntime {__import__('onnxruntime').__version__} runs)"
    )
    assert note in done.format().splitlines()
    assert done.written.weights.file_bytes == done.written.weights.float_bytes
