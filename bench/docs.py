"""Regenerate the numeric blocks of README.md and docs/*.md from the result files under bench/results/.

A generated block is the text between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in a doc;
``NAME`` picks one of the generators in ``BLOCKS`` below. Each generator reads named files under
``bench/results/`` (the JSON a benchmark wrote, or the markdown it wrote) and ends its block with a source line
that links the file and gives the command and git commit the file records. Numbers in the docs outside such
blocks cite their result file in the text.

    python bench/docs.py           # rewrite every generated block in place
    python bench/docs.py --check   # exit 1, naming the stale blocks, if any block differs from its files

Only the standard library is used, so the script runs without psvit installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MARKER = re.compile(r"<!-- generated:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated:(?P=name) -->", re.S)

COMPRESSION = RESULTS / "compression" / "run-20261202-051952.json"  # digits, seed 1: every method
COMPRESSION_MNIST = RESULTS / "compression" / "run-20261202-155000.json"  # MNIST-10k, seed 2: the bit methods
#: Runs at several budgets (12 trials per search): every method; merged with the two above into COMPRESSION_MD.
COMPRESSION_GRID = [
    RESULTS / "compression" / name
    for name in (
        "run-20261202-181415.json",  # digits, seed 3
        "run-20261202-184120.json",  # digits, seed 4
        "run-20261203-072133.json",  # digits, seed 2
        "run-20261202-194024.json",  # MNIST-10k, seed 0
        "run-20261203-082902.json",  # MNIST-10k, seed 1
        "run-20261203-074947.json",  # MNIST-10k, seed 1: budget 0.95 (pruning and joint)
    )
]
COMPRESSION_MD = RESULTS / "compression" / "compression.md"
SEARCH_QUALITY_MD = RESULTS / "search_quality" / "search_quality.md"
METHODOLOGY_MD = RESULTS / "methodology.md"
PRUNE_MD = RESULTS / "prune.md"
SCALE_TRIAL = RESULTS / "scale" / "run-20261203-154952.json"
SCALE_AMP = RESULTS / "scale" / "run-20261127-073123.json"
SCALE_FIDELITY = RESULTS / "scale" / "run-20261203-150210.json"
MAIN_JOB = RESULTS / "main_job" / "main-job-cold.txt"
MAIN_JOB_WARM = RESULTS / "main_job" / "main-job-warm.txt"
COST_REPORT = RESULTS / "cost_report" / "cost-report.txt"
LIF_SPEED = RESULTS / "lif_speed" / "lif-speed.txt"

#: Commits recorded beside result files that predate recording one (the commit that added the file).
COMMITTED_IN = {METHODOLOGY_MD: "b714bc3", PRUNE_MD: "26ce79d"}


# --------------------------------------------------------------------------------------------------- reading


def rel(doc: Path, target: Path) -> str:
    """``target`` as a link relative to the folder of ``doc``."""
    return Path(os.path.relpath(target, doc.parent)).as_posix()


def repo_path(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def text_result(path: Path) -> tuple[dict[str, str], str]:
    """A text result file: ``# key: value`` header lines, one blank line, then the output as it was printed."""
    head, _, body = path.read_text().partition("\n\n")
    header = {}
    for line in head.splitlines():
        key, _, value = line.removeprefix("# ").partition(": ")
        header[key] = value
    return header, body.rstrip("\n")


def md_tables(path: Path) -> dict[str, list[dict[str, str]]]:
    """Every markdown table of ``path``, keyed by the heading above it, as rows of {column: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, header, rows = "", None, None
    for line in [*path.read_text().splitlines(), ""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header, rows = cells, []
            elif not all(set(c) <= set("-:") for c in cells):
                rows.append(dict(zip(header, cells, strict=False)))
        elif header is not None:
            tables.setdefault(heading, rows)
            header, rows = None, None
    return tables


def table(columns: list[str], rows: list[list[str]], right: int = 1) -> str:
    """A markdown table; every column from index ``right`` on is right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def source(doc: Path, path: Path, command: str | None = None, commit: str | None = None) -> str:
    """The block's last line: the file it comes from, and the command and commit that file records."""
    line = f"Source: [`{repo_path(path)}`]({rel(doc, path)})"
    if command:
        line += f": `{command}`"
    if commit:
        line += f" at commit `{commit[:10]}`"
    elif path in COMMITTED_IN:
        line += (
            f" (the file records its commands, not the commit they ran at; it was added in commit "
            f"`{COMMITTED_IN[path]}`)"
        )
    return line + "."


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# ------------------------------------------------------------------------------------------------ generators


def estimate_line(output: str) -> str:
    """The ``estimate: ~...`` line a search printed first."""
    return next(line for line in output.splitlines() if line.startswith("estimate:"))


def main_job(doc: Path, path: Path = MAIN_JOB) -> str:
    header, body = text_result(path)
    return (
        f"```\n{body}\n```\n\n{source(doc, path, header['command'], header['commit'])} "
        f"Wall time {header['wall time']}, {header['date']}; {header['machine']}."
    )


def main_job_times(doc: Path) -> str:
    rows = []
    for name, path in (("cold (empty folder)", MAIN_JOB), ("warm (cached base and sensitivity)", MAIN_JOB_WARM)):
        header, body = text_result(path)
        estimate = estimate_line(body)
        rows.append(
            [
                name,
                f"`{header['command']}`",
                header["wall time"].split(" (")[0],
                estimate.split("(")[0].removeprefix("estimate:").strip(),
            ]
        )
    commit = text_result(MAIN_JOB)[0]["commit"]
    sources = " and ".join(f"[`{repo_path(p)}`]({rel(doc, p)})" for p in (MAIN_JOB, MAIN_JOB_WARM))
    return (
        table(["run", "command", "wall time", "its own estimate"], rows, right=2)
        + f"\n\nSource: {sources}, at commit `{commit[:10]}`; {text_result(MAIN_JOB)[0]['machine']}."
    )


COMPRESSION_NAMES = {
    "pruning": "pruning only (`search.bits=[32]`)",
    "uniform2": "uniform 2-bit, nothing pruned",
    "uniform3": "uniform 3-bit",
    "uniform4": "uniform 4-bit",
    "uniform8": "uniform 8-bit",
    "greedy_bits": "greedy per-group bits (AQ4SViT-style)",
    "joint": "**joint search** (`search.bits=[2,3,4,8]`)",
}


def compression_runs(path: Path = COMPRESSION) -> list[dict[str, Any]]:
    return load_json(path)["runs"]


def compression_base(path: Path) -> dict[str, Any]:
    (base,) = load_json(path)["bases"]
    return base


def search_quality_rows(dataset: str, budget: str) -> dict[str, list[dict[str, str]]]:
    """The rows of search_quality.md's table for one dataset and budget, by strategy."""
    tables = md_tables(SEARCH_QUALITY_MD)
    (key,) = [k for k in tables if k.startswith(f"{dataset}, budget {budget} (")]
    by_strategy: dict[str, list[dict[str, str]]] = {}
    for row in tables[key]:
        by_strategy.setdefault(row["strategy"], []).append(row)
    return by_strategy


def search_quality_commits(doc: Path) -> str:
    commits = sorted({load_json(p)["git_commit"][:10] for p in sorted(SEARCH_QUALITY_MD.parent.glob("run-*.json"))})
    return (
        f"Source: [`{repo_path(SEARCH_QUALITY_MD)}`]({rel(doc, SEARCH_QUALITY_MD)}) and the `run-*.json` beside "
        f"it (each records its command and commit; commits {', '.join(f'`{c}`' for c in commits)})."
    )


def headline(doc: Path) -> str:
    runs = {r["method"]: r for r in compression_runs()}
    joint = runs["joint"]
    setting = f"compression: {joint['dataset']}, seed {joint['seed']}, budget {joint['budget']:g}"
    rows = [
        [setting, COMPRESSION_NAMES[m], pct(runs[m]["saving"]), pct(runs[m]["test_before"]), pct(runs[m]["test_after"])]
        for m in ("pruning", "uniform2", "greedy_bits", "joint")
    ]
    mnist = {r["method"]: r for r in compression_runs(COMPRESSION_MNIST)}
    base = compression_base(COMPRESSION_MNIST)
    setting = f"compression: MNIST-10k, seed {base['seed']}, budget {mnist['joint']['budget']:g}"
    rows.append(
        [
            f"{setting} (base: {pct(base['test_acc'])} test)",
            "uniform 4-bit, nothing pruned",
            pct(mnist["uniform4"]["saving"]),
            pct(mnist["uniform4"]["test_before"]),
            pct(mnist["uniform4"]["test_after"]),
        ]
    )
    rows += [
        [
            setting,
            COMPRESSION_NAMES[m],
            pct(mnist[m]["saving"]),
            pct(mnist[m]["test_before"]),
            pct(mnist[m]["test_after"]),
        ]
        for m in ("greedy_bits", "joint")
    ]
    for budget in ("0.6", "0.75"):
        sq = search_quality_rows("mnist", budget)
        for strategy, trials, name in (
            ("psvit", "1 (one-shot)", "psvit allocation (one-shot)"),
            ("guided", "30", "**guided search**, 30 trials"),
        ):
            (row,) = [r for r in sq[strategy] if r["trials"] == trials]
            rows.append(
                [
                    f"search: MNIST-10k, budget {budget}, 3 seeds",
                    name,
                    f"{row['saving %']}%",
                    f"{row['test acc %']}%",
                    f"{row['test acc, fine-tuned %']}%",
                ]
            )
    command, mnist_blob = load_json(COMPRESSION)["command"], load_json(COMPRESSION_MNIST)
    return (
        table(
            ["benchmark", "method", "memory saving", "test acc, before fine-tune", "test acc, after fine-tune"],
            rows,
            right=2,
        )
        + f"\n\n{source(doc, COMPRESSION, command, load_json(COMPRESSION)['git_commit'])}"
        + f"\n{source(doc, COMPRESSION_MNIST, mnist_blob['command'], mnist_blob['git_commit'])}"
        + f"\n{search_quality_commits(doc)}"
    )


def compression(doc: Path) -> str:
    rows = []
    for r in compression_runs() + compression_runs(COMPRESSION_MNIST):
        bits = sorted(set(r["bits"].values()))
        rows.append(
            [
                r["dataset"],
                str(r["seed"]),
                COMPRESSION_NAMES.get(r["method"], r["method"]),
                "-" if r["budget"] is None else f"{r['budget']:g}",
                pct(r["saving"]),
                pct(r["test_before"]),
                pct(r["test_after"]),
                pct(r["val_before"]),
                pct(r["val_after"]),
                f"{r['file_bytes']:,}",
                ", ".join(map(str, bits)) or "32",
            ]
        )
    blob, mnist = load_json(COMPRESSION), load_json(COMPRESSION_MNIST)
    return (
        table(
            [
                "dataset",
                "seed",
                "method",
                "budget",
                "saving",
                "test before",
                "test after",
                "val before",
                "val after",
                "file bytes",
                "bits",
            ],
            rows,
            right=3,
        )
        + f"\n\n{source(doc, COMPRESSION, blob['command'], blob['git_commit'])}"
        + f"\n{source(doc, COMPRESSION_MNIST, mnist['command'], mnist['git_commit'])}"
    )


def search_quality_summary(doc: Path, dataset: str, budgets: tuple[str, ...]) -> str:
    columns = [
        "budget",
        "strategy",
        "test acc %",
        "fine-tuned %",
        "vs psvit",
        "vs psvit, fine-tuned",
        "trials to random's HV",
        "wasted %",
    ]
    rows = []
    for budget in budgets:
        for strategy, found in search_quality_rows(dataset, budget).items():
            pick = [r for r in found if r["trials"] in ("1 (one-shot)", "30")]
            if not pick:  # no model (e.g. largest_first cannot reach the budget): the note the bench wrote
                rows.append([budget, strategy, found[0]["chosen val acc %"], "", "", "", "", ""])
                continue
            (row,) = pick
            reach = found[-1]["trials to random's HV"]
            rows.append(
                [
                    budget,
                    strategy + (" (one-shot)" if row["trials"].startswith("1 ") else ""),
                    row["test acc %"],
                    row["test acc, fine-tuned %"],
                    row["vs psvit test (points)"],
                    row["vs psvit fine-tuned"],
                    reach,
                    row["wasted %"],
                ]
            )
    return table(columns, rows, right=2) + f"\n\n{search_quality_commits(doc)}"


def search_quality_tau(doc: Path) -> str:
    """The Kendall's tau line the report wrote under each dataset and budget."""
    lines, heading = [], ""
    for line in SEARCH_QUALITY_MD.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("Kendall's tau"):
            lines.append(f"- {heading}: {line.partition('models: ')[2]}")
    return "\n".join(lines) + f"\n\n{search_quality_commits(doc)}"


def methodology(doc: Path, section: str) -> str:
    (key,) = [k for k in md_tables(METHODOLOGY_MD) if k.startswith(section)]
    columns = [
        "budget",
        "strategy",
        "seeds",
        "original acc %",
        "pruned acc, no fine-tune %",
        "pruned acc, fine-tuned %",
        "memory saving %",
    ]
    rows = [[row.get(c, "") for c in columns] for row in md_tables(METHODOLOGY_MD)[key]]
    return table(columns, rows, right=2) + f"\n\n{source(doc, METHODOLOGY_MD)}"


def prune_latency(doc: Path) -> str:
    parts = []
    for key, rows in md_tables(PRUNE_MD).items():
        if key.startswith(("Small Spikformer", "Larger Spikformer")):
            columns = [
                c
                for c in rows[0]
                if c in ("pruning", "params", "FLOPs ratio", "latency (ms)", "latency ratio", "latency / FLOPs")
            ]
            parts.append(f"{key}:\n\n" + table(columns, [[r[c] for c in columns] for r in rows]))
    return "\n\n".join(parts) + f"\n\n{source(doc, PRUNE_MD)}"


SPLIT = ("prune", "recalibrate", "evaluate", "cost", "rest", "trial")


def scale_trial(doc: Path) -> str:
    blob = load_json(SCALE_TRIAL)
    names = {
        "default": "default model, digits, budget 0.4, 10 trials",
        "spikformer512": "Spikformer-8-512, 224 px, random weights, synthetic folder, 3 trials",
    }
    rows, notes = [], []
    for part, name in names.items():
        split = blob[part]["split"]
        rows.append([name, *(f"{split[k]:.2f}" for k in SPLIT)])
        notes.append(
            f"{name}: the whole command took {blob[part]['wall_seconds']:.0f} s; it printed "
            f"`{blob[part]['estimate'].split(' (')[0]}`."
        )
    return (
        table(["model", *SPLIT[:-1], "trial (s)"], rows)
        + "\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + f"\n\n{source(doc, SCALE_TRIAL, blob['command'], blob['git_commit'])} CPU; the bench runs each search "
        f"with `OMP_NUM_THREADS=1` unless the environment sets it."
    )


def estimate_seconds(line: str) -> float:
    """The total of a printed ``estimate: ~X unit on <device> (...)`` line, in seconds."""
    match = re.match(r"estimate: ~([\d.]+) (s|min|h) ", line)
    if match is None:
        raise SystemExit(f"error: not an estimate line: {line!r}")
    return float(match[1]) * {"s": 1, "min": 60, "h": 3600}[match[2]]


def estimate_check(doc: Path) -> str:
    """Every CPU run that recorded both its whole command's wall time and the estimate it printed first."""
    runs: list[tuple[str, float, str]] = []  # (run, measured seconds, estimate line)
    sources = []
    for name, path in (("main job, cold", MAIN_JOB), ("main job, warm", MAIN_JOB_WARM)):
        header, body = text_result(path)
        estimate = estimate_line(body)
        runs.append((name, float(header["wall time"].split(" s ")[0]), estimate))
        sources.append(source(doc, path, header["command"], header["commit"]))
    trial = load_json(SCALE_TRIAL)
    for part, name in (("default", "default model, budget 0.4, 10 trials"), ("spikformer512", "Spikformer-8-512")):
        runs.append((name, trial[part]["wall_seconds"], trial[part]["estimate"]))
    fidelity = load_json(SCALE_FIDELITY)
    for seed, searches in fidelity["fidelity"].items():
        for arm, a in searches.items():
            runs.append((f"MNIST-10k, {arm}, seed {seed}", a["search_seconds"] + a["finetune_seconds"], a["estimate"]))
    rows = [
        [name, f"{measured:.0f}", f"{estimate_seconds(line):.0f}", f"{estimate_seconds(line) / measured - 1:+.0%}"]
        for name, measured, line in runs
    ]
    sources += [
        source(doc, path, blob["command"], blob["git_commit"])
        for path, blob in ((SCALE_TRIAL, trial), (SCALE_FIDELITY, fidelity))
    ]
    return (
        table(["run (2-core CPU)", "measured (s)", "estimate (s)", "error"], rows)
        + "\n\n"
        + "\n".join(f"- {line}" for line in sources)
    )


def amp(doc: Path) -> str:
    blob = load_json(SCALE_AMP)
    rows = [[name, f"{v['test']:.2f}%", f"{v['val']:.2f}%"] for name, v in blob["amp"].items()]
    return (
        table(["precision (CPU autocast)", "test acc", "val acc"], rows)
        + f"\n\n{source(doc, SCALE_AMP, blob['command'], blob['git_commit'])}"
    )


def fidelity(doc: Path) -> str:
    blob = load_json(SCALE_FIDELITY)
    rows, notes = [], []
    for seed, searches in blob["fidelity"].items():
        for name, s in searches.items():
            rows.append(
                [
                    f"{name} (seed {seed})",
                    f"{s['trials']} ({s['promoted']}; {s['late_promotions']})",
                    f"{s['test_pruned']:.2f}%",
                    f"{s['test_finetuned']:.2f}%",
                    f"{s['saving']:.2f}%",
                    f"{s['sensitivity_seconds']:.0f}",
                    f"{s['trial_seconds']:.0f}",
                    f"{s['search_seconds']:.0f}",
                    f"{s['finetune_seconds']:.0f}",
                ]
            )
        full, multi = searches["full fidelity"], searches["multi-fidelity"]
        tau = full["tau"]
        notes.append(
            f"- Seed {seed}: the multi-fidelity search took {full['search_seconds'] / multi['search_seconds']:.2f}x "
            f"less wall time ({multi['search_seconds']:.0f} s against {full['search_seconds']:.0f} s), its trials "
            f"alone {full['trial_seconds'] / multi['trial_seconds']:.2f}x less; its chosen model's fine-tuned test "
            f"accuracy differs by {multi['test_finetuned'] - full['test_finetuned']:+.2f} points. Kendall's tau of "
            f"a trial's subset accuracy against its full-fidelity accuracy: {tau['subset_vs_full_fidelity']:.2f}; "
            f"against the whole split without recovery: {tau['subset_vs_whole_split']:.2f} ({tau['n']} trials of "
            "the full-fidelity search)."
        )
    return (
        table(
            [
                "search",
                "trials (full rung; late)",
                "test acc pruned",
                "test acc fine-tuned",
                "saving",
                "s start-up + sensitivity",
                "s in trials",
                "s search (both)",
                "s fine-tune",
            ],
            rows,
        )
        + "\n\n"
        + "\n".join(notes)
        + "\n\n"
        + source(doc, SCALE_FIDELITY, blob["command"], blob["git_commit"])
        + (f" The run: {blob['note']}." if "note" in blob else "")
    )


def text_block(doc: Path, path: Path) -> str:
    header, body = text_result(path)
    note = f" {header['machine']}." if "machine" in header else ""
    return f"```\n{body}\n```\n\n{source(doc, path, header['command'], header['commit'])}{note}"


def compression_budgets(doc: Path) -> str:
    """Per (dataset, seed, budget) of the multi-budget runs: each budgeted method's saving and fine-tuned test
    accuracy, against the base's."""
    sources, base = [], {}
    cells: dict[tuple[str, int, float], dict[str, dict[str, Any]]] = {}
    for path in COMPRESSION_GRID:
        blob = load_json(path)
        sources.append(source(doc, path, blob["command"], blob["git_commit"]))
        base.update({(b["dataset"], b["seed"]): b for b in blob["bases"]})
        for r in blob["runs"]:
            if r["budget"] is not None:
                cells.setdefault((r["dataset"], r["seed"], r["budget"]), {})[r["method"]] = r
    rows = []
    for (dataset, seed, budget), by_method in sorted(cells.items()):
        row = [dataset, str(seed), f"{budget:g}", pct(base[dataset, seed]["test_acc"])]
        for m in ("pruning", "greedy_bits", "joint"):
            r = by_method.get(m)
            row.append("-" if r is None else f"{pct(r['saving'])} at {pct(r['test_after'])}")
        rows.append(row)
    goal = md_tables(COMPRESSION_MD)["Goal"]
    columns = list(goal[0])
    return (
        table(
            ["dataset", "seed", "budget", "base test acc", "pruning only", "greedy bits (quantization only)", "joint"],
            rows,
            right=3,
        )
        + "\n\nSaving at test accuracy after the same recovery. Hypervolume of each fine-tuned front (every budget of "
        "the run; quantization only: the uniform bit-widths and the greedy allocations together), from "
        f"[`{repo_path(COMPRESSION_MD)}`]({rel(doc, COMPRESSION_MD)}):\n\n"
        + table(columns, [[r[c] for c in columns] for r in goal], right=2)
        + "\n\n"
        + "\n".join(sources)
    )


BLOCKS: dict[str, Callable[[Path], str]] = {
    "main-job": main_job,
    "main-job-times": main_job_times,
    "headline": headline,
    "compression": compression,
    "compression-budgets": compression_budgets,
    "search-quality-mnist": lambda doc: search_quality_summary(doc, "mnist", ("0.4", "0.6", "0.75")),
    "search-quality-digits": lambda doc: search_quality_summary(doc, "digits", ("0.4", "0.6")),
    "search-quality-tau": search_quality_tau,
    "methodology-digits": lambda doc: methodology(doc, "digits"),
    "methodology-mnist": lambda doc: methodology(doc, "MNIST-10k"),
    "prune-latency": prune_latency,
    "scale-trial": scale_trial,
    "estimate-check": estimate_check,
    "amp": amp,
    "fidelity": fidelity,
    "cost-report": lambda doc: text_block(doc, COST_REPORT),
    "lif-speed": lambda doc: text_block(doc, LIF_SPEED),
}


# ---------------------------------------------------------------------------------------------------- driver


def docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(doc: Path, text: str) -> tuple[str, list[str]]:
    """``text`` with every block regenerated, and the names of the blocks that changed."""
    changed: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"error: {repo_path(doc)}: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        body = BLOCKS[name](doc).strip("\n") + "\n"
        if body != match["body"]:
            changed.append(name)
        return f"<!-- generated:{name} -->\n{body}<!-- /generated:{name} -->"

    return MARKER.sub(fill, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any block is stale")
    args = parser.parse_args(argv)
    stale = []
    for doc in docs():
        text = doc.read_text()
        new, changed = render(doc, text)
        stale += [f"{repo_path(doc)}: {name}" for name in changed]
        if changed and not args.check:
            doc.write_text(new)
    if args.check and stale:
        print("stale generated blocks (run python bench/docs.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    verb = "would change" if args.check else "rewrote"
    print(f"{verb} {len(stale)} block(s)" if stale else "every generated block is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
