"""Scale: where a trial's time goes, Spikformer-8-512 at 224 px on a CPU, and multi-fidelity against full fidelity.

    OMP_NUM_THREADS=1 python bench/scale.py --parts default spikformer512 fidelity --out bench/results/scale

Every part runs the real CLI (``python -m psvit.search``) in a subprocess with its own Optuna and MLflow stores
in a scratch folder, then reads the trials back from Optuna:

* ``default``: the default model on digits (``+budget=0.4``, 10 trials); per-trial wall time split into prune,
  recalibrate, evaluate, cost report, and the rest (sampling, MLflow logging, Optuna bookkeeping), with the
  search's own up-front estimate next to the measured time.
* ``spikformer512``: Spikformer-8-512 at 224 px with random weights (``model.checkpoint``: no training) on a
  synthetic 224-px image folder made here, two channel groups enabled, 3 trials; the same split.
* ``amp``: the default base model's test and validation accuracy in float32, bf16 and fp16 (autocast).
* ``fidelity``: on MNIST-10k (shipped with psvit: ``psvit.data.MNIST_T10K``) at budget 0.6, a full-fidelity
  search (every trial: one recovery epoch and the whole validation split) against the multi-fidelity one (every
  trial on a 20 % validation subset, psvit's default top third promoted to the full treatment, late promotions
  included), run one after the other (each has the machine to itself), same trial count, seed and a 3-point
  sensitivity grid. Reported: the chosen model's test accuracy before and after fine-tuning, and the wall time of the
  start-up with the sensitivity table, of the trials, and of both (the base model is trained once beforehand).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from psvit.data import MNIST_T10K

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("prune", "recalibrate", "recover", "evaluate", "cost")
MNIST_ARGS = ["data=mnist_idx", f"data.root={MNIST_T10K}", "data.img_size=16", "data.seed=0", "train.epochs=6"]


def search(scratch: Path, overrides: list[str], log: Path | None = None) -> tuple[subprocess.Popen, float]:
    """Start ``python -m psvit.search`` in ``scratch`` (stores there); returns the process and its start time."""
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    args = [sys.executable, "-m", "psvit.search", "progress=false", f"hydra.run.dir={scratch / 'out'}", *overrides]
    out = open(log or scratch / "log.txt", "w")  # noqa: SIM115 (the child process writes to it until it ends)
    return subprocess.Popen(args, cwd=scratch, env=env, stdout=out, stderr=subprocess.STDOUT, text=True), time.time()


def finished(proc: subprocess.Popen, scratch: Path) -> str:
    if proc.wait() != 0:
        raise SystemExit(f"search in {scratch} failed:\n{(scratch / 'log.txt').read_text()[-3000:]}")
    return (scratch / "log.txt").read_text()


def trials_of(scratch: Path, name: str) -> list[Any]:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{scratch / 'optuna.db'}")
    return [t for t in study.trials if t.state.name == "COMPLETE"]


def split(trials: list[Any]) -> dict[str, float]:
    """Mean seconds per trial in each phase, the rest, and the whole trial."""
    rows = {p: statistics.mean(t.user_attrs.get("seconds", {}).get(p, 0.0) for t in trials) for p in PHASES}
    total = statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return {**rows, "rest": total - sum(rows.values()), "trial": total}


def estimate_line(log: str) -> str:
    return next(line for line in log.splitlines() if line.startswith("estimate:"))


def part_default(work: Path) -> dict[str, Any]:
    scratch = work / "default"
    start = time.time()
    proc, _ = search(
        scratch, ["+budget=0.4", "search.n_trials=10", "search.study_name=default", "search.finalize=false"]
    )
    log = finished(proc, scratch)
    return {
        "split": split(trials_of(scratch, "default")),
        "estimate": estimate_line(log),
        "wall_seconds": time.time() - start,
    }


def synthetic_folder(root: Path, size: int = 224, classes: int = 4, per_class: int = 10) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size + 32, size + 64, 3), dtype=np.uint8)).save(
                root / f"class{k}" / f"{i}.jpg"
            )
    return root


#: Spikformer-8-512 at 224 px (the ImageNet model of the papers), as ``psvit.create_model`` takes it.
SPIKFORMER_8_512 = {
    "variant": "imagenet",
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 512,
    "num_heads": 8,
    "depth": 8,
    "T": 4,
    "in_channels": 3,
}
#: The search's overrides for that model started from a checkpoint (what ``model=spikformer_imagenet`` lacks).
SPIKFORMER_8_512_ARGS = ["model=spikformer_imagenet"]


def random_checkpoint(path: Path, config: dict[str, Any], num_classes: int) -> Path:
    """A seeded random-weight model of ``config`` saved in the official layout (a bare state_dict) at ``path``."""
    import torch

    import psvit

    torch.manual_seed(0)
    model = psvit.create_model("spikformer", **config, num_classes=num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def folder_search(
    scratch: Path, checkpoint: Path, folder: Path, model_args: list[str], extra: list[str]
) -> dict[str, Any]:
    """A search from ``checkpoint`` on the image ``folder`` (two channel groups; ``extra``: the trials, the batch
    sizes and more): the per-trial split, the search's estimate and the command's wall time."""
    start = time.time()
    proc, _ = search(
        scratch,
        [
            *model_args,
            f"model.checkpoint={checkpoint}",
            "data=image_folder",
            f"data.root={folder}",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "data.allow_val_from_train=true",  # random weights: they saw no image of the flat folder
            "prune.enabled=[embed,block0.mlp]",
            "prune.bn_recalibration_batches=1",
            "sensitivity.grid=[0.5]",
            "+budget=0.05",
            "search.latency_repeats=1",
            "search.study_name=s512",
            "search.finalize=false",
            f"cache_dir={scratch / 'cache'}",
            *extra,
        ],
    )
    log = finished(proc, scratch)
    return {
        "split": split(trials_of(scratch, "s512")),
        "estimate": estimate_line(log),
        "wall_seconds": time.time() - start,
    }


def part_spikformer512(work: Path) -> dict[str, Any]:
    scratch = work / "spikformer512"
    checkpoint = random_checkpoint(scratch / "random-8-512.pth", SPIKFORMER_8_512, num_classes=4)
    folder = synthetic_folder(scratch / "images")
    return folder_search(
        scratch,
        checkpoint,
        folder,
        SPIKFORMER_8_512_ARGS,
        ["search.n_trials=3", "compute.eval_batch_size=8", "sensitivity.batch_size=8"],
    )


def part_amp() -> dict[str, dict[str, float]]:
    """Test and validation accuracy of the default base model in float32, bf16 and fp16 (autocast, this device)."""
    from hydra import compose, initialize_config_module

    from psvit.train import Compute, evaluate
    from psvit.workflow import compute_of, setup

    with initialize_config_module(config_module="psvit.conf", version_base="1.3"):
        s = setup(compose(config_name="search", overrides=["progress=false"]))
    device = compute_of(s.cfg).device
    return {
        amp or "float32": {
            split: 100 * evaluate(s.base.model, getattr(s.base.splits, split), Compute(device, amp=amp))
            for split in ("test", "val")
        }
        for amp in (None, "bf16", "fp16")
    }


def chosen(scratch: Path) -> dict[str, float]:
    """The chosen model's test accuracy before and after fine-tuning, and its saving (%), from the parent run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{scratch / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("psvit").experiment_id], "tags.`psvit.role` = 'search'"
    )
    m = parent.data.metrics
    return {
        "test_pruned": 100 * m["final_test_pruned_acc"],
        "test_finetuned": 100 * m["final_test_finetuned_acc"],
        "saving": 100 * m["final_memory_saving"],
    }


def part_fidelity(work: Path, seed: int, trials: int) -> dict[str, Any]:
    base = [*MNIST_ARGS, f"seed={seed}", f"cache_dir={work / 'cache'}"]
    common = [
        *base,
        f"search.seed={seed}",
        "+budget=0.6",
        f"search.n_trials={trials}",
        "search.recovery_epochs=1",
        "finetune.epochs=2",
        "search.latency_repeats=1",
        "sensitivity.grid=[0.75,0.5,0.25]",
    ]
    (work / "prep").mkdir(parents=True, exist_ok=True)  # the base model, trained once for both arms
    subprocess.run(
        [sys.executable, "-m", "psvit.train", "progress=false", f"hydra.run.dir={work / 'prep'}", *base],
        cwd=work / "prep",
        check=True,
        capture_output=True,
    )
    arms = {
        "full fidelity": ["search.fidelity.subset=1.0"],
        "multi-fidelity": ["search.fidelity.subset=0.2"],  # promote: psvit's default
    }
    result = {}
    for name, extra in arms.items():  # one after the other: each arm has the machine to itself
        scratch = work / name.replace(" ", "-")
        proc, start = search(scratch, [*common, f"search.study_name=s{seed}", *extra])
        log = finished(proc, scratch)
        end = time.time()
        done = trials_of(scratch, f"s{seed}")
        first = min(t.datetime_start for t in done).timestamp()
        last = max(t.datetime_complete for t in done).timestamp()
        result[name] = {
            **chosen(scratch),
            "sensitivity_seconds": first - start,  # start-up (the cached base model) and the sensitivity table
            "trial_seconds": last - first,
            "search_seconds": last - start,
            "finetune_seconds": end - last,  # the chosen model's fine-tune and report
            "promoted": sum(1 for t in done if t.user_attrs.get("fidelity", "full") == "full"),
            "late_promotions": sum(1 for t in done if "promotion_of" in t.user_attrs),
            "trials": len(done),
            "split": split(done),
            "estimate": estimate_line(log),
        }
    result["full fidelity"]["tau"] = subset_tau(trials_of(work / "full-fidelity", f"s{seed}"), base, 0.2)
    return result


def subset_tau(trials: list[Any], overrides: list[str], subset: float) -> dict[str, float]:
    """Kendall's tau between each trial's accuracy on the ``subset`` fraction of the validation split (pruned and
    recalibrated, no recovery: the first rung) and its full-fidelity accuracy (whole split, after the recovery
    epoch), and between the subset and the whole split without recovery."""
    from hydra import compose, initialize_config_module
    from scipy.stats import kendalltau

    from psvit.search.space import trial_ratios
    from psvit.train import evaluate
    from psvit.workflow import pruned_model, setup

    with initialize_config_module(config_module="psvit.conf", version_base="1.3"):
        s = setup(compose(config_name="search", overrides=[*overrides, "progress=false"]))
    part = s.base.splits.val_subset(subset, s.cfg.seed)
    rows = []
    for t in trials:
        model = pruned_model(s, trial_ratios(t))
        rows.append((evaluate(model, part, s.compute), evaluate(model, s.base.splits.val, s.compute), t.values[0]))
    first, whole, final = zip(*rows)
    return {
        "subset_vs_full_fidelity": float(kendalltau(first, final).statistic),
        "subset_vs_whole_split": float(kendalltau(first, whole).statistic),
        "n": len(rows),
    }


def markdown(blob: dict[str, Any]) -> str:
    lines = [f"# bench/scale.py\n\n`{blob['command']}` at commit `{blob['git_commit'][:10]}`\n"]
    for part in ("default", "spikformer512"):
        if part in blob:
            r = blob[part]
            lines += [
                f"## {part}: seconds per trial\n",
                "| " + " | ".join((*PHASES, "rest", "trial")) + " |",
                "|" + "---:|" * (len(PHASES) + 2),
                "| " + " | ".join(f"{r['split'][k]:.2f}" for k in (*PHASES, "rest", "trial")) + " |",
                "",
                f"whole command: {r['wall_seconds']:.0f} s measured; its own {r['estimate']}",
                "",
            ]
    if "amp" in blob:
        lines += [
            "## mixed precision, default base model\n",
            "| precision | test acc | val acc |",
            "|---|---:|---:|",
            *(f"| {k} | {v['test']:.2f} | {v['val']:.2f} |" for k, v in blob["amp"].items()),
            "",
        ]
    for seed, arms in blob.get("fidelity", {}).items():
        lines += [
            f"## fidelity, MNIST-10k, budget 0.6, seed {seed}\n",
            "| search | trials (full rung; late) | test acc pruned | test acc fine-tuned | saving | sensitivity "
            "| trials | search (both) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, a in arms.items():
            lines.append(
                f"| {name} | {a['trials']} ({a['promoted']}; {a['late_promotions']}) | "
                f"{a['test_pruned']:.2f} | {a['test_finetuned']:.2f} | {a['saving']:.2f} | "
                f"{a['sensitivity_seconds']:.0f} s | {a['trial_seconds']:.0f} s | "
                f"{a['search_seconds']:.0f} s |"
            )
        full, multi = arms["full fidelity"], arms["multi-fidelity"]
        tau = full.get("tau", {})
        trial_speedup = full["trial_seconds"] / multi["trial_seconds"]
        lines += [
            "",
            f"speed-up {full['search_seconds'] / multi['search_seconds']:.2f}x for the search "
            f"(the trials alone: {trial_speedup:.2f}x); fine-tuned test accuracy difference "
            f"{multi['test_finetuned'] - full['test_finetuned']:+.2f} points; Kendall tau of the "
            f"20 % subset accuracy vs the full-fidelity accuracy {tau.get('subset_vs_full_fidelity', 0):.2f}, "
            f"vs the whole split without recovery {tau.get('subset_vs_whole_split', 0):.2f} "
            f"({tau.get('n', 0)} trials of the full-fidelity search)",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["default", "spikformer512", "fidelity"],
        choices=["default", "spikformer512", "fidelity", "amp"],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    blob: dict[str, Any] = {"command": "python bench/scale.py " + " ".join(sys.argv[1:]), "git_commit": commit}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save() -> None:  # after every part and seed: a run stopped early keeps what it finished
        path.write_text(json.dumps(blob, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        parts = {"default": part_default, "spikformer512": part_spikformer512, "amp": lambda _: part_amp()}
        for part in (p for p in parts if p in args.parts):
            blob[part] = parts[part](work)
            save()
        if "fidelity" in args.parts:
            blob["fidelity"] = {}
            for seed in args.seeds:
                blob["fidelity"][str(seed)] = part_fidelity(work / f"fidelity-{seed}", seed, args.trials)
                save()
    text = markdown(blob)
    path.with_name(path.name.replace("run-", "scale-").replace(".json", ".md")).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
