"""PSViT's protocol, compared: uniform vs psvit vs largest_first at memory budgets, over seeds and datasets.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/methodology.py --datasets digits mnist --seeds 0 1 2 \\
        --budgets 0.224 0.4 0.6 --finetune-epochs 2 --out bench/results/methodology.md

For each (dataset, seed) the base model is trained (or taken from ``.psvit-cache/``) with ``seed`` driving its
initialisation and batch order (the data split stays ``data.seed=0``), its sensitivity table is computed once,
and every (strategy, budget) is allocated with :func:`psvit.workflow.allocate` and finished (pruned,
BN-recalibrated, fine-tuned, tested) with :func:`psvit.workflow.finish`, exactly as ``python -m psvit.prune``
does (no MLflow). When largest_first cannot reach a budget at its tolerance, the failure is recorded and it is
run again at ``--relaxed-tolerance``. The markdown (aggregated mean ± std over seeds, then every run) is
rewritten after each (dataset, seed), so an interrupted run still leaves its finished part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from psvit.allocation import check_strategy, predicted_total_drop
from psvit.budget import InfeasibleBudget
from psvit.data import MNIST_T10K
from psvit.report import ResultRow
from psvit.workflow import Setup, allocate, finish, sensitivity, setup

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".psvit-cache"
#: Hydra overrides selecting each dataset (on top of ``conf/prune.yaml``); the data split seed is fixed.
DATASETS = {
    "digits": ["data.seed=0"],
    "mnist": ["data=mnist_idx", f"data.root={MNIST_T10K}", "data.img_size=16", "data.seed=0"],
}
STRATEGIES = ("uniform", "psvit", "largest_first")


def compose(config_name: str, *overrides: str):
    """A real Hydra composition of a psvit primary config (as the CLI does, without running it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="psvit.conf", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)


@dataclass
class Run:
    """One (dataset, seed, strategy, budget) result; ``row`` is None when the allocation was infeasible."""

    dataset: str
    seed: int
    strategy: str  # with the tolerance for a relaxed largest_first, e.g. "largest_first (tol 0.05)"
    budget: float
    row: ResultRow | None
    predicted_drop: float | None
    ratios: dict[str, float]
    note: str
    seconds: float


def run_one(
    s: Setup, base_overrides: list[str], strategy: str, budget: float, tolerance: float | None, dataset: str, seed: int
) -> Run:
    """Allocate and finish one strategy at one budget on the shared base model and sensitivity table."""
    start = time.perf_counter()
    extra = [] if tolerance is None else [f"strategy.tolerance={tolerance}"]
    cfg = compose("prune", *base_overrides, f"strategy={strategy}", f"+budget={budget}", *extra)
    check_strategy(strategy, budget, None)
    label = strategy if tolerance is None else f"{strategy} (tol {tolerance:g})"
    run_s = replace(s, cfg=cfg)
    try:
        ratios, note = allocate(run_s)
    except InfeasibleBudget as err:
        return Run(dataset, seed, label, budget, None, None, {}, f"infeasible: {err}", time.perf_counter() - start)
    table, _ = sensitivity(run_s)
    out_dir = CACHE / "methodology" / f"{dataset}-seed{seed}-{strategy}-{tolerance}-{budget}"
    done = finish(run_s, ratios, out_dir)
    return Run(
        dataset,
        seed,
        label,
        budget,
        done.row,
        predicted_total_drop(table, ratios),
        ratios,
        note,
        time.perf_counter() - start,
    )


def pct(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def aggregate(runs: list[Run], dataset: str) -> str:
    """Mean ± std over seeds per (strategy, budget), in the paper's row format (accuracies on the test split)."""
    head = (
        "| budget | strategy | seeds | original acc % | pruned acc, no fine-tune % | pruned acc, fine-tuned % "
        "| memory saving % | params | FLOPs (MAC/img/step) | energy (mJ/img) | predicted val drop % |"
    )
    lines = [head, "|" + "---|" * 2 + "---:|" * 9]
    mine = [r for r in runs if r.dataset == dataset]
    keys = list(dict.fromkeys((r.budget, r.strategy) for r in sorted(mine, key=lambda r: r.budget)))
    for budget, strategy in keys:
        group = [r for r in mine if r.budget == budget and r.strategy == strategy]
        rows = [r.row for r in group if r.row is not None]
        if len(rows) < len(group):
            lines.append(
                f"| {budget:g} | {strategy} | {len(group) - len(rows)}/{len(group)} | infeasible at its "
                "tolerance | | | | | | | |"
            )
        if not rows:
            continue
        finetuned = [r.finetuned_acc for r in rows if r.finetuned_acc is not None]
        lines.append(
            f"| {budget:g} | {strategy} | {len(rows)} | {pct([r.original_acc for r in rows])} "
            f"| {pct([r.pruned_acc for r in rows])} | {pct(finetuned) if finetuned else '-'} "
            f"| {pct([r.memory_saving for r in rows])} | {statistics.fmean(r.params for r in rows):,.0f} "
            f"| {statistics.fmean(r.flops for r in rows) / 1e6:.2f}M "
            f"| {statistics.fmean(r.energy_mj for r in rows):.4f} "
            f"| {pct([r.predicted_drop for r in group if r.predicted_drop is not None])} |"
        )
    return "\n".join(lines)


def per_run(runs: list[Run]) -> str:
    lines = [
        "| dataset | seed | budget | strategy | " + " | ".join(ResultRow.HEADER) + " | predicted val drop | seconds |",
        "|" + "---|" * 4 + "---:|" * (len(ResultRow.HEADER) + 2),
    ]
    for r in runs:
        cells = r.row.cells() if r.row else [r.note] + [""] * (len(ResultRow.HEADER) - 1)
        drop = "" if r.predicted_drop is None else f"{100 * r.predicted_drop:.2f}%"
        lines.append(
            f"| {r.dataset} | {r.seed} | {r.budget:g} | {r.strategy} | "
            + " | ".join(cells)
            + f" | {drop} | {r.seconds:.0f} |"
        )
    return "\n".join(lines)


def report(runs: list[Run], datasets: list[str], command: str, notes: list[str]) -> str:
    parts = [f"```\n{command}\n```", *notes]
    for dataset in datasets:
        if any(r.dataset == dataset for r in runs):
            parts += [f"### {dataset}: mean ± std over seeds", aggregate(runs, dataset)]
    parts += ["### Every run", per_run(runs)]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.224, 0.4, 0.6])
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--train-epochs",
        nargs="+",
        default=[],
        help="base training epochs per dataset, e.g. digits=12 mnist=8 (default: the config's)",
    )
    parser.add_argument("--override", nargs="+", default=[], help="extra Hydra overrides for every dataset")
    parser.add_argument("--relaxed-tolerance", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    epochs = dict(item.split("=", 1) for item in args.train_epochs)
    command = "OMP_NUM_THREADS=1 PYTHONPATH=. python bench/methodology.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    runs: list[Run] = []
    notes: list[str] = []
    for dataset in args.datasets:
        for seed in args.seeds:
            base_overrides = [
                *DATASETS[dataset],
                f"seed={seed}",
                f"cache_dir={CACHE}",
                "device=cpu",
                "progress=false",
                f"finetune.epochs={args.finetune_epochs}",
                *args.override,
            ]
            if dataset in epochs:
                base_overrides.append(f"train.epochs={epochs[dataset]}")
            start = time.perf_counter()
            s = setup(compose("prune", *base_overrides))
            trained = time.perf_counter() - start
            _, cached = sensitivity(s)
            sensed = time.perf_counter() - start - trained
            notes.append(
                f"- {dataset} seed {seed}: base {'from cache' if s.base.from_cache else 'trained'} in "
                f"{trained:.0f} s (train {s.base.train_seconds:.0f} s, {len(s.base.splits.train)} train / "
                f"{len(s.base.splits.val)} val / {len(s.base.splits.test)} test images, "
                f"{s.cfg.train.epochs} epochs); sensitivity {'from cache' if cached else 'computed'} "
                f"in {sensed:.0f} s ({len(s.groups)} groups x {len(s.cfg.sensitivity.grid)} ratios)"
            )
            print(notes[-1], flush=True)
            for budget in args.budgets:
                for strategy in STRATEGIES:
                    run = run_one(s, base_overrides, strategy, budget, None, dataset, seed)
                    found = [run]
                    if run.row is None and strategy == "largest_first":
                        found.append(
                            run_one(s, base_overrides, strategy, budget, args.relaxed_tolerance, dataset, seed)
                        )
                    for r in found:
                        line = r.row.markdown(with_header=False) if r.row else r.note
                        drop = "" if r.predicted_drop is None else f" predicted val drop {100 * r.predicted_drop:.2f}%"
                        print(
                            f"{dataset} seed {seed} budget {budget:g} {r.strategy}: {line}{drop} ({r.seconds:.0f} s)",
                            flush=True,
                        )
                    runs += found
            text = report(runs, args.datasets, command, notes)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
