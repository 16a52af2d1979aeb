"""Search quality: does the width search find better models than PSViT's one-shot allocation, for the same trials?

    python bench/search_quality.py --quick                      # <= 5 min: tiny model on digits, one seed
    OMP_NUM_THREADS=1 python bench/search_quality.py --datasets mnist --budgets 0.4 0.6 0.75 --seeds 0 1 2 \\
        --trials 30 90 --out bench/results/search_quality
    python bench/search_quality.py --report RUN.json [RUN.json ...] --out DIR   # merge runs: markdown + plots

For each (dataset, seed) the base model and its sensitivity table come from ``.psvit-cache/`` (trained once;
``seed`` drives base training, the search sampler and fine-tuning; the data split is ``data.seed``). Then, at
each budget:

* the one-shot strategies (``uniform``, ``psvit``, ``largest_first``) allocate, exactly as ``python -m
  psvit.prune`` does;
* every search strategy runs ``max(--trials)`` trials through the real :class:`~psvit.search.session.
  SearchSession` (Optuna study and MLflow runs in a scratch folder), and is read after each trial budget
  ``k`` of ``--trials`` as if it had stopped there.

Figures per strategy: the chosen model (best feasible validation accuracy) with its validation and test
accuracy before and after the same fine-tune; the hypervolume of the feasible trials over (memory saving, val
accuracy) with reference point (0, 0) after 10/30/90 trials; the trials needed to reach random search's
hypervolume at its largest trial budget; the share of wasted trials (missed the budget, or repeated a pruned
shape); and the per-trial wall time split into evaluation (prune, recalibrate, evaluate, cost report) and the
rest (sampling, repair, MLflow and Optuna bookkeeping). Everything goes to one JSON (command and git commit
inside), a markdown summary and plots (hypervolume vs trials; the fronts overlaid).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from methodology import CACHE, DATASETS, ROOT, compose

from psvit.allocation import kept_fractions
from psvit.budget import InfeasibleBudget
from psvit.search.session import SearchSession
from psvit.search.space import trial_ratios
from psvit.train.loop import evaluate
from psvit.workflow import Setup, allocate, finish, pruned_model, sensitivity, setup

ONE_SHOT = ("uniform", "psvit", "largest_first")
#: Search strategies and their overrides of ``conf/search``. Every one gets the same trials.
SEARCHES: dict[str, list[str]] = {
    "random": ["search.sampler=random"],
    "tpe_nopriors": ["search.sampler=tpe", "search.priors=false", "search.repair=false"],
    "tpe_norepair": ["search.sampler=tpe", "search.repair=false", "search.step=0.0625"],
    "tpe": ["search.sampler=tpe"],
    "nsga2": ["search.sampler=nsga2"],
    "guided": ["search.sampler=guided"],
}
STRATEGIES = (*ONE_SHOT, *SEARCHES)
#: ``--quick``: a tiny Spikformer on digits, one seed, one budget, 10 trials (the tests' settings).
QUICK = dict(
    datasets=["digits"],
    seeds=[0],
    budgets=[0.6],
    trials=[10],
    finetune_epochs=1,
    override=[
        "model.embed_dim=32",
        "model.num_heads=2",
        "model.T=2",
        "train.epochs=8",
        "sensitivity.grid=[0.75,0.5,0.25]",
    ],
)


@dataclass
class Chosen:
    """The model a strategy would hand over: its trial, accuracies (validation; test before/after fine-tune)."""

    trial: int | None
    ratios: dict[str, float]
    memory_saving: float
    val_acc: float
    test_acc: float
    test_finetuned_acc: float | None


@dataclass
class Result:
    """One (dataset, seed, budget, strategy): chosen model per trial budget, and the search's own figures."""

    dataset: str
    seed: int
    budget: float
    strategy: str
    chosen: dict[int, Chosen]  # by trial budget (one-shot strategies: key 1)
    hypervolume: dict[int, float] = field(default_factory=dict)
    hv_curve: list[float] = field(default_factory=list)
    wasted: dict[int, float] = field(default_factory=dict)
    seconds_per_trial: float | None = None
    eval_seconds_per_trial: float | None = None
    points: list[tuple[float, float]] = field(default_factory=list)  # feasible (saving, val acc), all trials
    note: str = ""


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by ``points`` (memory saving, accuracy), both maximized, reference point (0, 0)."""
    area, best_acc = 0.0, 0.0
    for saving, acc in sorted(points, reverse=True):
        if acc > best_acc:
            area += saving * (acc - best_acc)
            best_acc = acc
    return area


class Finisher:
    """Fine-tunes and tests chosen models once per pruned shape (many strategies choose the same prior)."""

    def __init__(self, s: Setup, out_dir: Path) -> None:
        self.s, self.out_dir, self.done = s, out_dir, {}

    def __call__(self, ratios: dict[str, float], val_acc: float | None, trial: int | None) -> Chosen:
        key = tuple(self.s.memory.kept(ratios).values())
        if key not in self.done:
            if val_acc is None:
                val_acc = evaluate(pruned_model(self.s, ratios), self.s.base.splits.val, self.s.compute)
            row = finish(self.s, ratios, self.out_dir / f"m{len(self.done)}").row
            self.done[key] = (val_acc, row.pruned_acc, row.finetuned_acc)
        val, test, tuned = self.done[key]
        return Chosen(
            trial, kept_fractions(self.s.memory, ratios, list(ratios)), self.s.memory.saving(ratios), val, test, tuned
        )


def one_shot(s: Setup, overrides: list[str], strategy: str, budget: float, finisher: Finisher) -> Chosen | str:
    cfg = compose("prune", *overrides, f"strategy={strategy}", f"+budget={budget}")
    try:
        ratios, _ = allocate(replace(s, cfg=cfg))
    except InfeasibleBudget as err:
        return str(err)
    return finisher(ratios, None, None)


def search(
    overrides: list[str], strategy: str, budget: float, trials: list[int], scratch: Path, finisher: Finisher
) -> Result:
    """Run one search for ``max(trials)`` trials; read it at every trial budget."""
    n = max(trials)
    cfg = compose(
        "search",
        *overrides,
        *SEARCHES[strategy],
        f"+budget={budget}",
        f"search.n_trials={n}",
        f"search.seed={cfg_seed(overrides)}",
        f"search.storage=sqlite:///{scratch / 'optuna.db'}",
        f"mlflow.tracking_uri=sqlite:///{scratch / 'mlflow.db'}",
        f"search.study_name={strategy}",
        "search.latency_repeats=1",
        "search.finalize=false",
    )
    start = time.perf_counter()
    session = SearchSession.start(cfg, budget)
    setup_seconds = time.perf_counter() - start
    session.run()
    wall = time.perf_counter() - start - setup_seconds
    done = sorted(session.study.get_trials(deepcopy=False), key=lambda t: t.number)[:n]
    points: list[tuple[float, float]] = []
    curve, wasted_count, chosen, hv, wasted = [], 0, {}, {}, {}
    best = None
    for i, t in enumerate(done, 1):
        feasible = t.values is not None and t.values[1] >= budget
        if t.user_attrs.get("evaluated") and feasible:
            points.append((t.values[1], t.values[0]))
            if best is None or (t.values[0], t.values[1]) > (best.values[0], best.values[1]):
                best = t
        else:
            wasted_count += 1
        curve.append(hypervolume(points))
        if i in trials:
            hv[i], wasted[i] = curve[-1], wasted_count / i
            if best is not None:
                chosen[i] = finisher(trial_ratios(best), best.values[0], best.number)
    evals = [t.user_attrs["eval_seconds"] for t in done if "eval_seconds" in t.user_attrs]
    return Result(
        "",
        0,
        budget,
        strategy,
        chosen,
        hv,
        curve,
        wasted,
        wall / len(done),
        sum(evals) / len(done),
        points,
        note=f"setup {setup_seconds:.0f} s",
    )


def cfg_seed(overrides: list[str]) -> str:
    """The ``seed=`` of ``overrides``: the search sampler's seed follows the run's seed."""
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("seed="))


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i for i, v in enumerate(curve, 1) if v >= target - 1e-12), None)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    results: list[Result] = []
    blob = {
        "command": command,
        "git_commit": git_commit(),
        "started": time.strftime("%Y%m%d-%H%M%S"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "report"},
    }
    for dataset in args.datasets:
        for seed in args.seeds:
            overrides = [
                *DATASETS[dataset],
                f"seed={seed}",
                f"cache_dir={args.cache_dir}",
                "device=cpu",
                "progress=false",
                f"finetune.epochs={args.finetune_epochs}",
                *args.override,
            ]
            s = setup(compose("search", *overrides))
            sensitivity(s)
            for budget in args.budgets:
                with tempfile.TemporaryDirectory() as tmp:
                    scratch = Path(tmp)
                    finisher = Finisher(s, scratch / "models")
                    for strategy in args.strategies:
                        start = time.perf_counter()
                        if strategy in ONE_SHOT:
                            got = one_shot(s, overrides, strategy, budget, finisher)
                            result = (
                                Result(dataset, seed, budget, strategy, {1: got})
                                if isinstance(got, Chosen)
                                else Result(dataset, seed, budget, strategy, {}, note=got)
                            )
                        else:
                            result = search(overrides, strategy, budget, args.trials, scratch, finisher)
                            result.dataset, result.seed = dataset, seed
                        results.append(result)
                        best = result.chosen.get(max(result.chosen, default=1))
                        print(
                            f"{dataset} seed {seed} budget {budget:g} {strategy:>13}: "
                            + (
                                f"val {100 * best.val_acc:.2f} test {100 * best.test_acc:.2f} "
                                f"fine-tuned {100 * (best.test_finetuned_acc or 0):.2f} saving "
                                f"{100 * best.memory_saving:.2f}"
                                if best
                                else result.note
                            )
                            + (f" hv {result.hypervolume}" if result.hypervolume else "")
                            + f" ({time.perf_counter() - start:.0f} s)",
                            flush=True,
                        )
                blob["results"] = [asdict(r) for r in results]
                if args.out:
                    write_json(blob, args.out)
    blob["results"] = [asdict(r) for r in results]
    return blob


def write_json(blob: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"run-{blob['started']}.json"
    path.write_text(json.dumps(blob, indent=1))
    return path


def load_results(blob: dict[str, Any]) -> list[Result]:
    out = []
    for r in blob["results"]:
        chosen = {int(k): Chosen(**v) for k, v in r.pop("chosen").items()}
        r["hypervolume"] = {int(k): v for k, v in r["hypervolume"].items()}
        r["wasted"] = {int(k): v for k, v in r["wasted"].items()}
        r["points"] = [tuple(p) for p in r["points"]]
        out.append(Result(chosen=chosen, **r))
    return out


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "-"
    m = scale * statistics.fmean(values)
    return f"{m:.{digits}f}" if len(values) < 2 else f"{m:.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def kendall_tau(pairs: list[tuple[float, float]]) -> float | None:
    """Kendall's tau-a of ``(x, y)`` pairs (tied pairs count as neither concordant nor discordant)."""
    n = len(pairs)
    if n < 3:
        return None
    score = sum(
        (1 if (xi - xj) * (yi - yj) > 0 else -1 if (xi - xj) * (yi - yj) < 0 else 0)
        for i, (xi, yi) in enumerate(pairs)
        for xj, yj in pairs[i + 1 :]
    )
    return score / (n * (n - 1) / 2)


def proxy_agreement(here: list[Result]) -> str:
    """Kendall's tau between the search's proxy (val acc after BN recalibration) and the fine-tuned test acc,
    over the distinct models chosen at this budget, per seed."""
    taus = []
    for seed in sorted({r.seed for r in here}):
        models = {
            (round(c.memory_saving, 9), tuple(sorted(c.ratios.items()))): c
            for r in here
            if r.seed == seed
            for c in r.chosen.values()
            if c.test_finetuned_acc is not None
        }
        tau = kendall_tau([(c.val_acc, c.test_finetuned_acc) for c in models.values()])
        if tau is not None:
            taus.append(f"seed {seed}: {tau:+.2f} over {len(models)} models")
    return (
        "Kendall's tau, val acc after BN recalibration (the search's proxy) vs test acc after fine-tuning, "
        "over the distinct chosen models: " + ("; ".join(taus) if taus else "too few models") + "."
    )


def summary(results: list[Result]) -> str:
    """Markdown: per (dataset, budget), one row per (strategy, trial budget), mean ± std over seeds."""
    lines = []
    keys = sorted({(r.dataset, r.budget) for r in results})
    for dataset, budget in keys:
        here = [r for r in results if r.dataset == dataset and r.budget == budget]
        seeds = sorted({r.seed for r in here})
        reference = {r.seed: r for r in here if r.strategy == "random" and r.hv_curve}
        psvit = {r.seed: r.chosen[1] for r in here if r.strategy == "psvit" and 1 in r.chosen}
        lines += [
            f"### {dataset}, budget {budget:g} ({len(seeds)} seed{'s' * (len(seeds) > 1)})",
            "",
            "| strategy | trials | chosen val acc % | test acc % | test acc, fine-tuned % | vs psvit test "
            "(points) | vs psvit fine-tuned | saving % | hypervolume | trials to random's HV | wasted % "
            "| s/trial (eval + rest) |",
            "|---|---:|" + "---:|" * 10,
        ]
        for strategy in dict.fromkeys(r.strategy for r in here):
            runs = [r for r in here if r.strategy == strategy]
            for k in sorted({k for r in runs for k in r.chosen}):
                picked = [(r.seed, r.chosen[k]) for r in runs if k in r.chosen]
                chosen = [c for _, c in picked]
                gap = [c.test_acc - psvit[sd].test_acc for sd, c in picked if sd in psvit]
                gap_ft = [
                    c.test_finetuned_acc - psvit[sd].test_finetuned_acc
                    for sd, c in picked
                    if sd in psvit and c.test_finetuned_acc is not None and psvit[sd].test_finetuned_acc is not None
                ]
                hv = [r.hypervolume[k] for r in runs if k in r.hypervolume]
                reach = []
                for r in runs:
                    ref = reference.get(r.seed)
                    if r.hv_curve and ref:
                        got = trials_to_reach(r.hv_curve, ref.hv_curve[-1])
                        reach.append(str(got) if got else f">{len(r.hv_curve)}")
                timing = "-"
                if runs[0].seconds_per_trial is not None:
                    total = statistics.fmean(r.seconds_per_trial for r in runs)
                    ev = statistics.fmean(r.eval_seconds_per_trial for r in runs)
                    timing = f"{total:.2f} ({ev:.2f} + {total - ev:.2f})"
                lines.append(
                    f"| {strategy} | {k if runs[0].hv_curve else '1 (one-shot)'} "
                    f"| {mean_sd([c.val_acc for c in chosen])} "
                    f"| {mean_sd([c.test_acc for c in chosen])} "
                    f"| {mean_sd([c.test_finetuned_acc for c in chosen if c.test_finetuned_acc is not None])} "
                    f"| {mean_sd(gap) if gap else '-'} | {mean_sd(gap_ft) if gap_ft else '-'} "
                    f"| {mean_sd([c.memory_saving for c in chosen])} | {mean_sd(hv, 1.0, 4) if hv else '-'} "
                    f"| {', '.join(reach) if reach and k == max(r.chosen) else '-'} "
                    f"| {mean_sd([r.wasted[k] for r in runs if k in r.wasted], 100, 0) if runs[0].wasted else '-'} "
                    f"| {timing} |"
                )
            failed = [r for r in runs if not r.chosen]
            if failed:
                lines.append(
                    f"| {strategy} | - | no model on {len(failed)} seed(s): {failed[0].note[:100]} |" + " |" * 9
                )
        lines += ["", proxy_agreement(here), ""]
    return "\n".join(lines)


def plot(results: list[Result], out: Path) -> list[Path]:
    """Per (dataset, budget): mean hypervolume vs trials per search strategy, and the first seed's fronts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset, budget in sorted({(r.dataset, r.budget) for r in results}):
        here = [r for r in results if r.dataset == dataset and r.budget == budget]
        fig, (hv_ax, front_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
        first_seed = min(r.seed for r in here)
        for strategy in dict.fromkeys(r.strategy for r in here):
            runs = [r for r in here if r.strategy == strategy]
            if runs[0].hv_curve:
                n = min(len(r.hv_curve) for r in runs)
                mean = [statistics.fmean(r.hv_curve[i] for r in runs) for i in range(n)]
                hv_ax.plot(range(1, n + 1), mean, label=strategy)
                mine = next(r for r in runs if r.seed == first_seed)
                pts = sorted(mine.points)
                front, best = [], -1.0
                for saving, acc in sorted(pts, reverse=True):
                    if acc > best:
                        front.append((saving, acc))
                        best = acc
                front.sort()
                front_ax.plot([100 * p[0] for p in front], [100 * p[1] for p in front], "-o", ms=3, label=strategy)
            else:
                for r in runs:
                    if r.seed == first_seed and 1 in r.chosen:
                        c = r.chosen[1]
                        front_ax.scatter(
                            [100 * c.memory_saving],
                            [100 * c.val_acc],
                            marker="*",
                            s=120,
                            zorder=5,
                            label=f"{strategy} (one-shot)",
                        )
        hv_ax.set_xlabel("trials")
        hv_ax.set_ylabel("hypervolume (saving x val acc, ref (0,0))")
        hv_ax.set_title(f"{dataset}, budget {budget:g}: hypervolume vs trials (mean over seeds)")
        hv_ax.grid(alpha=0.3)
        hv_ax.legend(fontsize=8)
        front_ax.axvline(100 * budget, ls="--", c="k", lw=1)
        front_ax.set_xlabel("memory saving (%)")
        front_ax.set_ylabel("validation accuracy (%)")
        front_ax.set_title(f"fronts of the feasible trials (seed {first_seed})")
        front_ax.grid(alpha=0.3)
        front_ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"search_quality-{dataset}-b{budget:g}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def report(blobs: list[dict[str, Any]], out: Path) -> Path:
    results = [r for b in blobs for r in load_results(b)]
    out.mkdir(parents=True, exist_ok=True)
    figures = plot(results, out)
    commands = "\n".join(b["command"] + f"   # commit {b['git_commit'][:10]}" for b in blobs)
    text = (
        f"# Search quality\n\n```\n{commands}\n```\n\n"
        + summary(results)
        + "\n"
        + "\n".join(f"![{p.stem}]({p.name})" for p in figures)
        + "\n"
    )
    path = out / "search_quality.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, digits, one seed/budget, 10 trials")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=["digits", "mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.4, 0.6, 0.75])
    parser.add_argument("--trials", nargs="+", type=int, default=[10, 30, 90])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--override", nargs="+", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_quality")
    parser.add_argument("--report", nargs="+", type=Path, help="only merge these run JSONs into --out")
    parser.add_argument("--cache-dir", type=Path, default=CACHE, help="base models and sensitivity tables")
    args = parser.parse_args(argv)
    if args.quick:  # the quick settings are defaults: flags given explicitly still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.report:
        print(report([json.loads(p.read_text()) for p in args.report], args.out))
        return
    command = "python bench/search_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    blob = run(args, command)
    print(f"wrote {write_json(blob, args.out)} and {report([blob], args.out)}")


if __name__ == "__main__":
    main()
