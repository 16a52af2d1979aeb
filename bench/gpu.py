"""GPU benchmark: eval throughput, agreement with float32, a trial's time split and the main job against its estimate.

    python bench/gpu.py            # on a CUDA GPU: the sizes below, within about 8 minutes
    python bench/gpu.py --tiny     # small sizes (the default without CUDA): CI keeps the script alive on a CPU

Writes ``bench/results/gpu/gpu-<stamp>.json`` and ``.md`` (``--out``), each with its command and ``git rev-parse
HEAD``. Parts (``--parts``):

* ``throughput``: Spikformer-8-512 at 224 px (random weights), full and uniformly pruned (keep 0.75 and 0.5 for
  every channel group), eval forward at batch 1/64/256 in float32 and bf16 (autocast), eager and compiled
  (``compute.compile``: ``torch.compile``, no CUDA graphs), images/s from the median of timed forwards; and the
  top-1 agreement of each variant's predictions with the same model's eager float32 ones on the largest batch.
  Compiled cells (each batch size is one compilation) run in order of interest until the part's share of the time
  budget is spent; the rest are marked skipped.
* ``trial``: per-trial time split (prune, recalibrate, recover, evaluate, cost, rest) of a search on a synthetic
  10k-image 224-px folder from the random 8-512 checkpoint (``bench/scale.py``'s machinery).
* ``main``: the main job, ``python -m psvit.search +budget=0.224``, cold (empty cache) and warm (the same again):
  its wall time against the estimate it prints.

``--tiny`` shrinks every size (a 32-px, 1-block model, batches 1/4/8, a 40-image folder, the main job's tiny
overrides) and compiles with dynamo's ``eager`` backend: a C++ compile of even the tiny model takes minutes on a
shared CPU (and runs slower there than eager; see the README), so on a CPU the compiled cells check the path,
not its speed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import (
    PHASES,
    ROOT,
    SPIKFORMER_8_512,
    SPIKFORMER_8_512_ARGS,
    estimate_line,
    finished,
    folder_search,
    random_checkpoint,
    search,
    synthetic_folder,
)

from psvit.allocation.uniform import uniform_ratios
from psvit.cost.latency import measure_latency
from psvit.models import create_model
from psvit.prune import list_groups, prune
from psvit.train import Compute
from psvit.train.compiled import for_evaluation
from psvit.train.compute import device_name

PRECISIONS = (None, "bf16")
MODES = ("eager", "compiled")
KEEPS = (1.0, 0.75, 0.5)


@dataclass(frozen=True)
class Sizes:
    """Everything the two settings differ in."""

    model: dict[str, Any]
    model_args: list[str]  #: the search's model overrides for that model
    batches: tuple[int, ...]
    repeats: int
    folder_images: int  #: images in the synthetic folder of the ``trial`` part
    folder_size: int  #: their side in pixels
    main_args: list[str]  #: overrides of the main job
    compile_backend: str  #: ``inductor`` (what ``compute.compile`` uses) or dynamo's ``eager``
    budget_seconds: float  #: the whole script's time budget
    trial_args: list[str] = field(default_factory=list)


FULL = Sizes(
    model=SPIKFORMER_8_512,
    model_args=SPIKFORMER_8_512_ARGS,
    batches=(1, 64, 256),
    repeats=10,
    folder_images=10_000,
    folder_size=224,
    main_args=[],
    compile_backend="inductor",
    budget_seconds=480,
    trial_args=["search.n_trials=3", "compute.eval_batch_size=256", "sensitivity.batch_size=64"],
)
TINY_MODEL = {
    "variant": "cifar",
    "img_size": 32,
    "patch_size": 4,
    "embed_dim": 32,
    "num_heads": 2,
    "depth": 1,
    "T": 2,
    "in_channels": 3,
}
TINY = Sizes(
    model=TINY_MODEL,
    model_args=["model.embed_dim=32", "model.num_heads=2", "model.depth=1", "model.T=2"],
    batches=(1, 4, 8),
    repeats=2,
    folder_images=40,
    folder_size=32,
    main_args=[
        "model.embed_dim=16",
        "model.num_heads=2",
        "model.depth=1",
        "model.T=2",
        "train.epochs=1",
        "sensitivity.grid=[0.5]",
        "search.n_trials=1",
        "finetune.epochs=0",
        "search.latency_repeats=1",
        "search.export=false",  # the ONNX export and MLflow Model: ~20 s a run on a CPU (the full setting keeps them)
    ],
    compile_backend="eager",
    budget_seconds=60,
    trial_args=["search.n_trials=1", "compute.eval_batch_size=8", "sensitivity.batch_size=8", "compute.num_workers=0"],
)


class Clock:
    """Seconds left of the script's budget."""

    def __init__(self, budget: float) -> None:
        self.end = time.time() + budget

    def left(self) -> float:
        return self.end - time.time()


def images_per_second(model: torch.nn.Module, images: torch.Tensor, compute: Compute, repeats: int) -> float:
    with compute.autocast():
        return len(images) / measure_latency(model, images, repeats=repeats)


def top1(model: torch.nn.Module, images: torch.Tensor, compute: Compute) -> torch.Tensor:
    from psvit.train.loop import predict

    with compute.autocast():
        return predict(model, images).argmax(1)


#: Compiled cells in the order they are measured (the headline first), until the part's time is spent.
COMPILED_ORDER = ((1.0, "bf16"), (0.5, "bf16"), (1.0, None), (0.75, "bf16"), (0.5, None), (0.75, None))


def part_throughput(sizes: Sizes, device: torch.device, clock: Clock, share: float) -> list[dict[str, Any]]:
    """One row per (keep, precision, mode, batch): images/s, and agreement with eager float32 on the largest batch.
    Every eager cell runs; compiled cells run in :data:`COMPILED_ORDER`, largest batch first, until the part's
    ``share`` of the remaining budget is spent (the rest say so)."""
    deadline = time.time() + share * clock.left()
    torch.manual_seed(0)
    base = create_model("spikformer", **sizes.model, num_classes=1000 if sizes is FULL else 10).to(device).eval()
    images = torch.rand(
        max(sizes.batches), sizes.model["in_channels"], sizes.model["img_size"], sizes.model["img_size"], device=device
    )
    models = {
        keep: base if keep == 1.0 else prune(base, uniform_ratios(list_groups(base), keep)).eval() for keep in KEEPS
    }
    reference = {keep: top1(model, images, Compute(device)) for keep, model in models.items()}
    rows = []

    def measure(keep: float, amp: str | None, mode: str, runner: torch.nn.Module, batches: tuple[int, ...]) -> None:
        compute = Compute(device, amp=amp)
        row = {
            "keep": keep,
            "params": sum(p.numel() for p in models[keep].parameters()),
            "precision": amp or "fp32",
            "mode": mode,
        }
        for batch in batches:
            if mode == "compiled" and time.time() > deadline:
                rows.append({**row, "batch": batch, "skipped": "time budget"})
                continue
            start = time.time()
            cell = {
                **row,
                "batch": batch,
                "images_per_s": images_per_second(runner, images[:batch], compute, sizes.repeats),
            }
            if batch == max(batches):
                cell["agreement"] = float((top1(runner, images, compute) == reference[keep]).float().mean())
            rows.append({**cell, "seconds": time.time() - start})  # with compilation, for compiled cells

    for keep, model in models.items():
        for amp in PRECISIONS:
            measure(keep, amp, "eager", model, sizes.batches)
    for keep, amp in COMPILED_ORDER:
        compute = Compute(device, amp=amp, compile=True)
        runner = (
            for_evaluation(models[keep], compute)
            if sizes.compile_backend == "inductor"
            else torch.compile(models[keep], backend=sizes.compile_backend, dynamic=False)
        )
        measure(keep, amp, "compiled", runner, tuple(sorted(sizes.batches, reverse=True)))
    return rows


def part_trial(sizes: Sizes, work: Path) -> dict[str, Any]:
    scratch = work / "trial"
    classes = 10 if sizes is FULL else 4
    start = time.time()
    folder = synthetic_folder(
        scratch / "images", size=sizes.folder_size, classes=classes, per_class=sizes.folder_images // classes
    )
    made = time.time() - start
    checkpoint = random_checkpoint(scratch / "random.pth", sizes.model, num_classes=classes)
    result = folder_search(scratch, checkpoint, folder, sizes.model_args, sizes.trial_args)
    return {**result, "images": sizes.folder_images, "folder_seconds": made}


ESTIMATE = re.compile(r"estimate: ~(?P<value>[\d.]+) (?P<unit>s|min|h) ")


def estimated_seconds(line: str) -> float:
    found = ESTIMATE.match(line)
    if not found:
        raise SystemExit(f"cannot read the estimate from {line!r}")
    return float(found["value"]) * {"s": 1, "min": 60, "h": 3600}[found["unit"]]


def part_main(sizes: Sizes, work: Path, device: torch.device) -> dict[str, Any]:
    """The main job cold (fresh cache and stores) and warm (the same command again)."""
    scratch = work / "main"
    args = ["+budget=0.224", f"device={device.type}", f"cache_dir={scratch / 'cache'}", *sizes.main_args]
    result = {}
    for run in ("cold", "warm"):
        proc, start = search(scratch, [*args, f"search.study_name={run}"], log=scratch / "log.txt")
        log = finished(proc, scratch)
        wall = time.time() - start
        line = estimate_line(log)
        result[run] = {
            "wall_seconds": wall,
            "estimate_seconds": estimated_seconds(line),
            "estimate": line,
            "error": estimated_seconds(line) / wall - 1,
        }
    return result


def markdown(blob: dict[str, Any]) -> str:
    lines = [
        f"# bench/gpu.py ({blob['setting']})\n",
        f"`{blob['command']}` at commit `{blob['git_commit'][:10]}` on "
        f"{blob['device']}, torch {blob['torch']}, {blob['seconds']:.0f} s in all\n",
    ]
    if "throughput" in blob:
        lines += [
            "## eval throughput (images/s) and top-1 agreement with eager fp32\n",
            "| keep | params | precision | mode | "
            + " | ".join(f"batch {b}" for b in blob["batches"])
            + " | agreement |",
            "|---:|---:|---|---|" + "---:|" * (len(blob["batches"]) + 1),
        ]
        cells: dict[tuple, list[dict[str, Any]]] = {}
        for row in blob["throughput"]:
            cells.setdefault((row["keep"], row["params"], row["precision"], row["mode"]), []).append(row)
        for (keep, params, precision, mode), rows in sorted(cells.items(), key=lambda c: (-c[0][0], c[0][2], c[0][3])):
            rows = sorted(rows, key=lambda r: r["batch"])
            speeds = [f"{r['images_per_s']:.0f}" if "images_per_s" in r else r["skipped"] for r in rows]
            agreement = next((f"{100 * r['agreement']:.2f} %" for r in rows if "agreement" in r), "")
            lines.append(
                f"| {keep} | {params / 1e6:.2f} M | {precision} | {mode} | " + " | ".join(speeds) + f" | {agreement} |"
            )
        lines.append("")
    if "trial" in blob:
        t = blob["trial"]
        lines += [
            f"## seconds per trial, {t['images']}-image synthetic folder\n",
            "| " + " | ".join((*PHASES, "rest", "trial")) + " |",
            "|" + "---:|" * (len(PHASES) + 2),
            "| " + " | ".join(f"{t['split'][k]:.2f}" for k in (*PHASES, "rest", "trial")) + " |",
            "",
            f"whole command {t['wall_seconds']:.0f} s (the folder took {t['folder_seconds']:.0f} s to write); "
            f"its own {t['estimate']}",
            "",
        ]
    if "main" in blob:
        lines += [
            "## the main job (`python -m psvit.search +budget=0.224`)\n",
            "| run | wall | estimate | error |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {run} | {r['wall_seconds']:.0f} s | {r['estimate_seconds']:.0f} s | {100 * r['error']:+.0f} % |"
            for run, r in blob["main"].items()
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (the default without CUDA)")
    parser.add_argument(
        "--parts", nargs="+", default=["throughput", "trial", "main"], choices=["throughput", "trial", "main"]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    sizes = TINY if args.tiny or not cuda else FULL
    device = torch.device("cuda" if cuda else "cpu")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    blob: dict[str, Any] = {
        "command": "python bench/gpu.py " + " ".join(sys.argv[1:]),
        "git_commit": commit,
        "setting": "tiny" if sizes is TINY else "full",
        "device": device_name(device),
        "torch": torch.__version__,
        "batches": list(sizes.batches),
        "sizes": asdict(sizes),
    }
    clock, start = Clock(sizes.budget_seconds), time.time()
    parts: dict[str, Callable[[Path], Any]] = {
        "throughput": lambda work: part_throughput(sizes, device, clock, share=0.35),
        "trial": lambda work: part_trial(sizes, work),
        "main": lambda work: part_main(sizes, work, device),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.parts:
            blob[name] = parts[name](Path(tmp))
    blob["seconds"] = time.time() - start
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"gpu-{stamp}.json").write_text(json.dumps(blob, indent=1, default=str))
    text = markdown(blob)
    (args.out / f"gpu-{stamp}.md").write_text(text)
    print(text)
    print(f"wrote {args.out / f'gpu-{stamp}.json'}")


if __name__ == "__main__":
    main()
