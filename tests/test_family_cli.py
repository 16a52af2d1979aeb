"""The whole pipeline on the second family: the real CLIs (search, sensitivity, every strategy) on model=sdt_tiny."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from helpers import TINY_BY_COMMAND, compose

import psvit
from psvit.config import config_sections
from psvit.cost import count_params
from psvit.data import build_splits
from psvit.train import evaluate
from psvit.train.base import model_config

SDT = ["model=sdt_tiny"]
SEARCH = ["search.n_trials=3", "search.latency_repeats=1", "search.n_startup_trials=2"]
ROW = "| original acc | pruned acc, no fine-tune | pruned acc, fine-tuned |"


def _pruned(out: str) -> Path:
    return Path(next(line for line in out.splitlines() if line.startswith("pruned checkpoint:")).split(": ", 1)[1])


def base_params(*overrides: str) -> int:
    """Parameters of the base model the search command composes from ``overrides`` (with the tests' TINY ones),
    resolved as the command resolves it: from the config, not from whatever widths the chosen trial kept."""
    model_cfg, data_cfg = config_sections(compose("search", *TINY_BY_COMMAND["search"], *overrides), "model", "data")
    return count_params(model_cfg["name"], model_config(model_cfg, build_splits(**data_cfg)))


def test_search_sensitivity_and_every_strategy_run_on_sdt(run_cli, tmp_path: Path) -> None:
    out = run_cli("search", *SDT, "+budget=0.3", *SEARCH).stdout
    assert ROW in out and re.search(r"^model +sdt$", out, re.MULTILINE)
    model = psvit.load(_pruned(out))
    assert model.model_name == "sdt"
    base = base_params(*SDT, "+budget=0.3", *SEARCH)
    assert count_params("sdt", model.config) == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) <= 0.7 * base  # the budget: >= 30 % of the weights saved
    assert evaluate(model, build_splits("digits", img_size=16).test) > 0.5

    out = run_cli("sensitivity", *SDT).stdout
    table = next(Path(line.strip()) for line in out.splitlines() if line.strip().endswith(".csv"))
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert {r["kind"] for r in rows} == {"sps", "embed", "qkv", "mlp"}
    assert {r["group"] for r in rows} >= {"block0.attn.qkv", "block1.mlp"}

    for strategy, target in (("uniform", "+ratio=0.75"), ("psvit", "+budget=0.3"), ("largest_first", "+budget=0.2")):
        extra = ["strategy.tolerance=0.2"] if strategy == "largest_first" else []
        out = run_cli("prune", *SDT, f"strategy={strategy}", target, *extra).stdout
        assert ROW in out, strategy
        assert psvit.load(_pruned(out)).model_name == "sdt"
