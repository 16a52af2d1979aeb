"""Joint compression: widths and bit-widths searched together, against pruning only and quantization only.

    python bench/compression.py --quick                        # <= 10 min: tiny model on digits, one budget
    OMP_NUM_THREADS=1 python bench/compression.py --datasets digits mnist --seeds 0 1 2 \\
        --budgets 0.5 0.75 0.85 0.9 0.95 --out bench/results/compression
    python bench/compression.py --report RUN.json [RUN.json ...] --out DIR   # merge runs: markdown + plot

Per (dataset, seed) the base model and its sensitivity table (widths and the bits grid) come from
``.psvit-cache/``, at the commands' default settings (base epochs, sensitivity grid, fine-tune). Methods:

* ``pruning``: today's search (``search.bits=[32]``) at each budget;
* ``uniform8`` / ``uniform4`` / ``uniform3`` / ``uniform2``: every weight at that bit-width, nothing pruned
  (``python -m psvit.prune strategy=uniform +ratio=1 prune.bits=B``): one saving each, whatever the budget;
* ``greedy_bits``: quantization only, a per-group bit-width search in AQ4SViT's greedy manner: from 8 bits,
  repeatedly lower the group whose bits grid drop grows least per byte saved, until the budget holds;
* ``joint``: the search over widths and bit-widths (``search.bits=[2,3,4,8]``) at each budget.

Every chosen model gets the same recovery (:func:`psvit.workflow.finish`: ``finetune`` defaults, distilled
from the base, best validation epoch kept). Reported per run: test accuracy before and after recovery,
validation accuracy before and after (recovery never lowers it), memory saving, the checkpoint's file bytes,
wall time; per method, the hypervolume of its fine-tuned front over (memory saving, test accuracy) with
reference point (0, 0). ``--tau K`` also fine-tunes K trials of each joint search and reports Kendall's tau
between the trials' search scores and their fine-tuned validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from methodology import CACHE, DATASETS, ROOT, compose
from search_quality import git_commit, hypervolume, kendall_tau

from psvit.allocation import greedy_allocation
from psvit.budget import InfeasibleBudget
from psvit.search.session import SearchSession
from psvit.search.space import trial_bits, trial_ratios
from psvit.sensitivity import SensitivityTable
from psvit.train.loop import best_epoch
from psvit.workflow import Setup, finish, sensitivity, setup

JOINT_BITS = (2, 3, 4, 8)
UNIFORM_BITS = (8, 4, 3, 2)
METHODS = ("pruning", *(f"uniform{b}" for b in UNIFORM_BITS), "greedy_bits", "joint")
#: ``--quick``: a tiny Spikformer on digits, one seed, one budget, 8 trials, 1-epoch recovery.
QUICK = [
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.T=2",
    "train.epochs=8",
    "sensitivity.grid=[0.75,0.5,0.25]",
    "finetune.epochs=1",
]


@dataclass
class Run:
    """One chosen model of one method, fine-tuned and tested."""

    dataset: str
    seed: int
    budget: float | None
    method: str
    saving: float
    test_before: float
    test_after: float | None
    val_before: float
    val_after: float
    file_bytes: int
    seconds: float
    bits: dict[str, int]
    ratios: dict[str, float]
    note: str = ""


def greedy_bits(s: Setup, table: SensitivityTable, budget: float, choices: tuple[int, ...]) -> dict[str, int]:
    """AQ4SViT-style greedy bit allocation (quantization only): every group from the widest choice down, one step
    at a time, the step with the least predicted drop per byte saved first (psvit's greedy rule over bit-widths
    alone, :func:`psvit.allocation.greedy_allocation` with ``widths=False``; the joint search has it as a prior)."""
    return greedy_allocation(s.memory, s.groups, table, budget, choices=choices, widths=False)[1]


def finished(
    s: Setup,
    dataset: str,
    seed: int,
    budget: float | None,
    method: str,
    ratios: dict[str, float],
    bits: dict[str, int] | None,
    out: Path,
    seconds: float,
    note: str = "",
) -> Run:
    """Fine-tune and test the model ``ratios``/``bits`` with the same recovery for every method."""
    start = time.perf_counter()
    done = finish(s, ratios, out, bits=bits)
    history = done.history or [{"epoch": 0, "val_acc": float("nan")}]
    return Run(
        dataset,
        seed,
        budget,
        method,
        done.row.memory_saving,
        done.row.pruned_acc,
        done.row.finetuned_acc,
        history[0]["val_acc"],
        best_epoch(history)["val_acc"],
        done.checkpoint.stat().st_size,
        seconds + time.perf_counter() - start,
        dict(bits or {}),
        dict(ratios),
        note,
    )


def search(
    overrides: list[str],
    dataset: str,
    seed: int,
    budget: float,
    method: str,
    bits: tuple[int, ...],
    trials: int,
    scratch: Path,
    tau: int,
) -> tuple[Run, float | None]:
    """One search at ``budget``; its chosen model finished; and, with ``tau``, Kendall's tau between the trial
    scores of ``tau`` trials and their fine-tuned validation accuracy."""
    cfg = compose(
        "search",
        *overrides,
        f"+budget={budget}",
        f"search.n_trials={trials}",
        f"search.bits=[{','.join(map(str, bits))}]",
        f"search.seed={seed}",
        f"search.storage=sqlite:///{scratch / 'optuna.db'}",
        f"mlflow.tracking_uri=sqlite:///{scratch / 'mlflow.db'}",
        f"search.study_name={method}-{budget}",
        "search.latency_repeats=1",
        "search.finalize=false",
    )
    start = time.perf_counter()
    session = SearchSession.start(cfg, budget)
    session.run()
    chosen = session.chosen_trial()
    seconds = time.perf_counter() - start
    run = finished(
        session.setup,
        dataset,
        seed,
        budget,
        method,
        trial_ratios(chosen),
        trial_bits(chosen),
        scratch / f"{method}-{budget}",
        seconds,
        note=f"trial {chosen.number}",
    )
    if not tau:
        return run, None
    evaluated = sorted(
        (t for t in session.study.trials if t.user_attrs.get("evaluated") and t.values and t.values[1] >= budget),
        key=lambda t: -t.values[0],
    )
    step = max(1, len(evaluated) // tau)
    picked = evaluated[::step][:tau]
    pairs = []
    for t in picked:
        done = finish(session.setup, trial_ratios(t), scratch / f"tau-{t.number}", bits=trial_bits(t))
        pairs.append((t.values[0], best_epoch(done.history)["val_acc"]))
    return run, kendall_tau(pairs)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    commit = git_commit()  # the code the run starts with (the tree may move on while it runs)
    runs: list[Run] = []
    taus: list[dict[str, Any]] = []
    bases: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="psvit-compression-"))
    for dataset in args.datasets:
        for seed in args.seeds:
            overrides = [
                *DATASETS[dataset],
                f"seed={seed}",
                f"cache_dir={args.cache_dir}",
                "progress=false",
                *(QUICK if args.quick else []),
            ]
            bits_grid = f"sensitivity.bits=[{','.join(map(str, JOINT_BITS))}]"
            s = setup(compose("search", *overrides, bits_grid))
            bases.append(
                {
                    "dataset": dataset,
                    "seed": seed,
                    "test_acc": s.base.test_acc,
                    "val_acc": s.base.val_acc,
                    "file_bytes": s.base.path.stat().st_size,
                    "checkpoint": s.base.path.name,
                }
            )
            table, _ = sensitivity(s)
            here = scratch / f"{dataset}-{seed}"
            here.mkdir(parents=True, exist_ok=True)  # the searches' stores live here, whichever methods run
            for b in UNIFORM_BITS:
                if f"uniform{b}" not in args.methods:
                    continue
                start = time.perf_counter()
                runs.append(
                    finished(
                        s,
                        dataset,
                        seed,
                        None,
                        f"uniform{b}",
                        {},
                        {g.name: b for g in s.groups},
                        here / f"uniform{b}",
                        time.perf_counter() - start,
                    )
                )
                print(json.dumps(asdict(runs[-1])), flush=True)
            for budget in args.budgets:
                if "greedy_bits" in args.methods:
                    start = time.perf_counter()
                    try:
                        bits = greedy_bits(s, table, budget, JOINT_BITS)
                        runs.append(
                            finished(
                                s,
                                dataset,
                                seed,
                                budget,
                                "greedy_bits",
                                {},
                                bits,
                                here / f"greedy-{budget}",
                                time.perf_counter() - start,
                            )
                        )
                        print(json.dumps(asdict(runs[-1])), flush=True)
                    except InfeasibleBudget as err:
                        print(f"greedy_bits at {budget}: {err}", flush=True)
                for method, grid in (("pruning", (32,)), ("joint", JOINT_BITS)):
                    if method not in args.methods:
                        continue
                    try:
                        result, tau = search(
                            overrides,
                            dataset,
                            seed,
                            budget,
                            method,
                            grid,
                            args.trials,
                            here,
                            args.tau if method == "joint" else 0,
                        )
                    except InfeasibleBudget as err:
                        print(f"{method} at {budget}: {err}", flush=True)
                        continue
                    runs.append(result)
                    print(json.dumps(asdict(result)), flush=True)
                    if tau is not None:
                        taus.append(
                            {"dataset": dataset, "seed": seed, "budget": budget, "trials": args.tau, "kendall_tau": tau}
                        )
    return {
        "command": command,
        "git_commit": commit,
        "base_settings": "quick" if args.quick else "defaults",
        "bases": bases,
        "runs": [asdict(r) for r in runs],
        "tau": taus,
    }


#: The method families whose fronts are compared: quantization only is every uniform bit-width and every greedy
#: bit allocation together (the best front that quantization alone reached).
FAMILIES = ("pruning", "uniform_bits", "greedy_bits", "quantization_only", "joint")


def fronts(runs: list[Run]) -> dict[tuple[str, int, str], list[tuple[float, float]]]:
    """Per (dataset, seed, method family): (memory saving, fine-tuned test accuracy) of its chosen models."""
    out: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    for r in runs:
        point = (r.saving, r.test_after if r.test_after is not None else r.test_before)
        family = "uniform_bits" if r.method.startswith("uniform") else r.method
        out.setdefault((r.dataset, r.seed, family), []).append(point)
        if family in ("uniform_bits", "greedy_bits"):
            out.setdefault((r.dataset, r.seed, "quantization_only"), []).append(point)
    return out


def goal_rows(runs: list[Run]) -> list[str]:
    """Per (dataset, seed) with a joint front: the joint front's hypervolume against pruning only's and
    quantization only's, and whether it beats both."""
    hv = {key: hypervolume(points) for key, points in fronts(runs).items()}
    rows = []
    for dataset, seed in sorted({(d, s) for d, s, m in hv if m == "joint"}):
        joint = hv[dataset, seed, "joint"]
        others = {m: hv.get((dataset, seed, m)) for m in ("pruning", "quantization_only")}
        cells = ["-" if v is None else f"{v:.4f}" for v in others.values()]
        beats = all(v is not None and joint > v for v in others.values())
        rows.append(f"| {dataset} | {seed} | {joint:.4f} | {' | '.join(cells)} | {'yes' if beats else 'no'} |")
    return rows


def summary(blobs: list[dict[str, Any]]) -> str:
    runs = [Run(**r) for b in blobs for r in b["runs"]]
    # one row per (dataset, seed): runs of the same base (another method or budget) share it
    bases = list({(x["dataset"], x["seed"]): x for b in blobs for x in b.get("bases", [])}.values())
    lines = []
    if bases:
        lines += [
            "## Base models",
            "",
            "| dataset | seed | base test acc | base val acc | base checkpoint bytes |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['dataset']} | {x['seed']} | {100 * x['test_acc']:.2f}% | {100 * x['val_acc']:.2f}% | "
            f"{x['file_bytes']:,} |"
            for x in bases
        ] + [""]
    lines += [
        "## Chosen models",
        "",
        "| dataset | seed | method | budget | saving | test before | test after | val before | val after | "
        "file bytes | wall s | bits |",
        "|" + "---|" * 12,
    ]
    for r in runs:
        bits = ", ".join(f"{b}" for b in sorted(set(r.bits.values()))) or "32"
        lines.append(
            f"| {r.dataset} | {r.seed} | {r.method} | {r.budget if r.budget is not None else '-'} | "
            f"{100 * r.saving:.2f}% | {100 * r.test_before:.2f}% | "
            f"{'-' if r.test_after is None else f'{100 * r.test_after:.2f}%'} | {100 * r.val_before:.2f}% | "
            f"{100 * r.val_after:.2f}% | {r.file_bytes:,} | {r.seconds:.0f} | {bits} |"
        )
    lines += [
        "",
        "## Hypervolume",
        "",
        "Of each method's fine-tuned front (memory saving x test accuracy, reference (0, 0)):",
        "",
        "| dataset | seed | method | points | hypervolume |",
        "|---|---|---|---|---|",
    ]
    for (dataset, seed, method), points in sorted(
        fronts(runs).items(), key=lambda kv: (*kv[0][:2], FAMILIES.index(kv[0][2]))
    ):
        lines.append(f"| {dataset} | {seed} | {method} | {len(points)} | {hypervolume(points):.4f} |")
    lines += [
        "",
        "## Goal",
        "",
        "The joint front's hypervolume beats both pruning only's and quantization only's:",
        "",
        "| dataset | seed | joint | pruning only | quantization only | joint beats both |",
        "|---|---|---|---|---|---|",
        *goal_rows(runs),
    ]
    taus = [t for b in blobs for t in b.get("tau", [])]
    if taus:
        lines += [
            "",
            "## Kendall's tau",
            "",
            "Joint search trial score vs fine-tuned validation accuracy:",
            "",
            "| dataset | seed | budget | trials fine-tuned | tau |",
            "|---|---|---|---|---|",
        ]
        for t in taus:
            tau = "-" if t["kendall_tau"] is None else f"{t['kendall_tau']:.2f}"
            lines.append(f"| {t['dataset']} | {t['seed']} | {t['budget']} | {t['trials']} | {tau} |")
    return "\n".join(lines)


def plot(blobs: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Run(**r) for b in blobs for r in b["runs"]]
    datasets = sorted({r.dataset for r in runs})
    seeds = {d: sorted({r.seed for r in runs if r.dataset == d}) for d in datasets}
    columns = max(len(v) for v in seeds.values())
    fig, axes = plt.subplots(len(datasets), columns, figsize=(5 * columns, 4 * len(datasets)), squeeze=False)
    colors = {"pruning": "tab:green", "uniform_bits": "tab:red", "greedy_bits": "tab:blue", "joint": "tab:orange"}
    by_key = fronts(runs)
    for row, dataset in zip(axes, datasets):  # a row per dataset, a panel per seed
        for ax in row[len(seeds[dataset]) :]:
            ax.axis("off")
        for ax, seed in zip(row, seeds[dataset]):
            for method, color in colors.items():
                points = sorted(by_key.get((dataset, seed, method), []))
                if points:
                    xs, ys = [100 * p[0] for p in points], [100 * p[1] for p in points]
                    ax.plot(xs, ys, marker="o", color=color, label=method)
            ax.set_title(f"{dataset}, seed {seed}")
            ax.set_xlabel("memory saving vs the float32 base (%)")
            ax.set_ylabel("test accuracy after recovery (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(blobs: list[dict[str, Any]], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    commands = "\n".join(
        f"- `{b['command']}` at commit `{b['git_commit']}` (settings: {b['base_settings']})" for b in blobs
    )
    png = plot(blobs, out / "compression.png")
    md = out / "compression.md"
    md.write_text(f"# Joint compression benchmark\n\nRuns:\n{commands}\n\n{summary(blobs)}\n\n![fronts]({png.name})\n")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=sorted(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.9])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="run only these methods (default: all)"
    )
    parser.add_argument("--tau", type=int, default=0, help="fine-tune this many trials of each joint search")
    parser.add_argument("--quick", action="store_true", help="tiny model, digits, one seed and budget, 8 trials")
    parser.add_argument("--report", nargs="+", type=Path, help="merge these run JSONs into markdown and a plot")
    parser.add_argument("--cache-dir", type=Path, default=CACHE, help="base models and sensitivity tables")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compression")
    args = parser.parse_args(argv)
    if args.report:
        print(report([json.loads(p.read_text()) for p in args.report], args.out))
        return
    if args.quick:
        args = replace_args(args, datasets=["digits"], seeds=[0], budgets=[0.9], trials=min(args.trials, 8))
    command = "python bench/compression.py " + " ".join(sys.argv[1:] if argv is None else argv)
    blob = run(args, command)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(blob, indent=1))
    print(path)
    print(report([blob], args.out))


def replace_args(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


if __name__ == "__main__":
    main()
