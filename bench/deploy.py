"""Deployment latency on CPU: torch eager (psvit's own forward), torch.compile of the exported graph and
onnxruntime (CPUExecutionProvider) on the ONNX file, at batch 1 and batch N, with the file's parity.

    OMP_NUM_THREADS=2 PYTHONPATH=. python bench/deploy.py --checkpoint outputs/<date>/<time>/pruned.pt \
        [--parts default large] [--repeats 10] [--large-repeats 1] [--large-batches 1 8] [--out bench/results/deploy]

* ``default``: the checkpoint (the default search's chosen model, ``python -m psvit.search +budget=0.224``) on
  its own recorded data (the first 256 test images), through :func:`psvit.export.export_model`.
* ``large``: Spikformer-8-512 (``conf/model/spikformer_imagenet.yaml``, 29.7 M parameters) at 224 px with random
  weights (latency does not depend on their values) on a few random images. Batch 64 at 224 px needs ~10 GB of
  activations per runtime; ``--large-batches`` picks what the machine can hold.
* ``large-bits``: the same model exported with float32 weights and quantized at each of ``--large-bits`` (every
  group; integer weights with ``DequantizeLinear``): file size, parity and export time, not latency.

Every runtime uses the same ``torch.get_num_threads()`` threads; each number is the median of ``--repeats`` timed
forwards after 2 untimed ones (compilation happens in those). Writes ``run-<stamp>.json`` and ``deploy-<stamp>.md``
(each with its command and git commit) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime
import torch

from psvit.export import export_model
from psvit.export.source import open_source
from psvit.models import create_model
from psvit.prune import list_groups
from psvit.quant import layers_for, quantize_weights

ROOT = Path(__file__).resolve().parents[1]
LARGE = {
    "variant": "imagenet",
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 512,
    "num_heads": 8,
    "mlp_ratio": 4.0,
    "depth": 8,
    "T": 4,
    "in_channels": 3,
    "num_classes": 1000,
}
LARGE_IMAGES = 4


def part_default(checkpoint: Path, batch: int, repeats: int, folder: Path) -> dict[str, Any]:
    source = open_source(checkpoint)
    images = source.images(256)
    return measured(
        f"default model ({checkpoint.name}, {describe(source.model)})",
        source.model,
        images,
        (1, batch),
        repeats,
        folder / "default.onnx",
    )


def part_large(batches: tuple[int, ...], repeats: int, folder: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model("spikformer", **LARGE).eval()
    images = torch.randn(LARGE_IMAGES, 3, 224, 224)
    return measured(
        f"Spikformer-8-512 at 224 px, random weights ({describe(model)})",
        model,
        images,
        batches,
        repeats,
        folder / "large.onnx",
    )


def part_large_bits(bits: tuple[int, ...], folder: Path) -> dict[str, Any]:
    """The large model's ONNX file with float32 weights and with every group at each of ``bits``."""
    files = {}
    for b in (32, *bits):
        torch.manual_seed(0)
        model = create_model("spikformer", **LARGE).eval()
        if b != 32:
            quantize_weights(model, layers_for(list_groups(model), {g.name: b for g in list_groups(model)}))
        images = torch.randn(LARGE_IMAGES, 3, 224, 224)
        label = f"Spikformer-8-512 at 224 px, random weights, {'float32' if b == 32 else f'{b}-bit'}"
        files[str(b)] = measured(label, model, images, (), 0, folder / f"large-{b}.onnx")
    return {"label": "Spikformer-8-512 at 224 px: ONNX file by weight bit-width", "files": files}


def measured(
    label: str, model: torch.nn.Module, images: torch.Tensor, batches: tuple[int, ...], repeats: int, path: Path
) -> dict[str, Any]:
    print(
        f"{label}: exporting, checking parity on {len(images)} images, timing batches {list(batches)} ...", flush=True
    )
    start = time.perf_counter()
    done = export_model(model, path, images, latency_batches=batches, repeats=repeats, compiled=True)
    print(done.format(), flush=True)
    weights = done.written.weights
    return {
        "label": label,
        "exporter": done.written.exporter,
        "notes": list(done.written.notes),
        "onnx_bytes": path.stat().st_size,
        "parity": done.parity.__dict__,
        "seconds": done.latency.to_dict() if done.latency else {},
        "markdown": done.latency.markdown() if done.latency else "",
        "weights": weights.lines() if weights else [],
        "wall_seconds": time.perf_counter() - start,
    }


def describe(model: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()):,} parameters, T={model.config['T']}"


def markdown(blob: dict[str, Any]) -> str:
    lines = [
        f"# bench/deploy.py\n\n`{blob['command']}` at commit `{blob['git_commit'][:10]}`\n",
        f"{blob['machine']}; torch {blob['torch']}, onnxruntime {blob['onnxruntime']}, "
        f"{blob['threads']} thread(s). Median ms per forward of the whole batch.\n",
    ]
    for name, part in blob["parts"].items():
        if name == "large-bits":
            lines += [
                f"## {part['label']}\n",
                "| weights | ONNX file (MB) | parity: max abs dlogit vs graph, top-1 vs psvit | export + parity (s) |",
                "|---|---:|---|---:|",
            ]
            for b, f in part["files"].items():
                p = f["parity"]
                lines.append(
                    f"| {'float32' if b == '32' else f'{b}-bit'} | {f['onnx_bytes'] / 1e6:.1f} | "
                    f"{p['max_abs_graph']:.2e}, {p['top1_model']:.2%} | {f['wall_seconds']:.0f} |"
                )
            lines += ["", *(line for f in part["files"].values() for line in f["weights"]), ""]
            continue
        p = part["parity"]
        lines += [
            f"## {part['label']}\n",
            part["markdown"],
            "",
            f"ONNX file {part['onnx_bytes'] / 1e6:.1f} MB ({part['exporter']}); parity on {p['images']} "
            f"images: max |dlogit| {p['max_abs_graph']:.2e} vs the BN-folded torch graph (top-1 "
            f"{p['top1_graph']:.2%}), top-1 {p['top1_model']:.2%} vs the psvit model; the part took "
            f"{part['wall_seconds']:.0f} s (export, compile and timing).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="the default model's pruned.pt (part 'default')")
    parser.add_argument("--parts", nargs="+", choices=("default", "large", "large-bits"), default=["default", "large"])
    parser.add_argument("--batch", type=int, default=64, help="the default part's large batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--large-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--large-repeats", type=int, default=1)
    parser.add_argument("--large-bits", type=int, nargs="+", default=[8, 4], help="part 'large-bits': bit-widths")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deploy")
    args = parser.parse_args()
    if "default" in args.parts and args.checkpoint is None:
        parser.error("part 'default' needs --checkpoint (the pruned.pt of python -m psvit.search +budget=0.224)")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    blob: dict[str, Any] = {
        "command": "python bench/deploy.py " + " ".join(sys.argv[1:]),
        "git_commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": torch.get_num_threads(),
        "parts": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "default" in args.parts:
            blob["parts"]["default"] = part_default(args.checkpoint, args.batch, args.repeats, Path(tmp))
        if "large" in args.parts:
            blob["parts"]["large"] = part_large(tuple(args.large_batches), args.large_repeats, Path(tmp))
        if "large-bits" in args.parts:
            blob["parts"]["large-bits"] = part_large_bits(tuple(args.large_bits), Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{'-'.join(args.parts)}"  # two runs may end in the same second
    (args.out / f"run-{stamp}.json").write_text(json.dumps(blob, indent=1, default=str))
    (args.out / f"deploy-{stamp}.md").write_text(markdown(blob))
    print(f"wrote {args.out / f'run-{stamp}.json'} and {args.out / f'deploy-{stamp}.md'}")


if __name__ == "__main__":
    main()
