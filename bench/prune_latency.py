"""CPU latency of channel-pruned Spikformers against their FLOPs, and the accuracy pruning keeps.

    PYTHONPATH=. python bench/prune_latency.py [--batch 64] [--rounds 5] [--repeats 3] [--threads N] [--skip-large]

Uniform keep ratios 0.75, 0.5 and 0.25 over every group, with the residual stream (``embed``) left whole
("embed off") or pruned too ("embed on"), for two models:

* the default small Spikformer (cifar layout, 16 px, embed 64, depth 2, T 4) trained on digits (trained once,
  cached under ``.psvit-cache/``), with test accuracy before and after BN recalibration on 8 training batches;
* a larger one (32 px, embed 256, 8 heads, depth 4, T 4, random weights) where dense compute outweighs the
  per-layer Python overhead; latency does not depend on the weights' values.

Latency is the median over ``--rounds`` interleaved rounds (every model once per round, so machine load
drifts alike for all) of :func:`psvit.cost.measure_latency` with ``--repeats`` forwards of one batch.
The goal is latency ratio / FLOPs ratio <= 1.1: a pruned model is as much faster as it is smaller.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics

import torch
from torch import nn

from psvit.cost import count_flops, count_params, measure_latency
from psvit.models import create_model
from psvit.prune import list_groups, prune, recalibrate_bn
from psvit.train import Compute, evaluate
from psvit.train.base import BaseModel, get_base_model
from psvit.train.loop import batches

SMALL_MODEL = {
    "name": "spikformer",
    "variant": "cifar",
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 64,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "depth": 2,
    "T": 4,
    "in_channels": None,
    "num_classes": None,
}
DIGITS = {"name": "digits", "img_size": 16, "seed": 0}
TRAIN = {"epochs": 20, "batch_size": 64, "lr": 5e-3}
LARGE = {
    "variant": "cifar",
    "img_size": 32,
    "embed_dim": 256,
    "num_heads": 8,
    "mlp_ratio": 4.0,
    "depth": 4,
    "T": 4,
    "in_channels": 3,
    "num_classes": 10,
}
KEEPS = (0.75, 0.5, 0.25)
RECALIBRATION_BATCHES = 8


def trained_base() -> BaseModel:
    """The default small Spikformer trained on digits (cached after the first run)."""
    return get_base_model(SMALL_MODEL, DIGITS, TRAIN, progress=False)


def uniform_ratios(model: nn.Module, keep: float, embed: bool) -> dict[str, float]:
    """Keep ratio ``keep`` for every group; the ``embed`` group too only if ``embed``."""
    return {g.name: keep for g in list_groups(model) if embed or g.kind != "embed"}


def pruned_variants(model: nn.Module) -> dict[str, nn.Module]:
    """The unpruned model and its uniform L1 prunings, by label."""
    variants = {"unpruned": model}
    for embed in (False, True):
        for keep in KEEPS:
            label = f"keep {keep}, embed {'on' if embed else 'off'}"
            variants[label] = prune(model, uniform_ratios(model, keep, embed))
    return variants


def latencies(models: dict[str, nn.Module], images: torch.Tensor, rounds: int, repeats: int) -> dict[str, float]:
    """Median seconds per batch of each model over interleaved rounds."""
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label, model in models.items():
            times[label].append(measure_latency(model, images, repeats=repeats, warmup=1))
    return {label: statistics.median(t) for label, t in times.items()}


def table(models: dict[str, nn.Module], seconds: dict[str, float], accuracy: dict[str, tuple[float, float]]) -> str:
    """Markdown rows: size, FLOPs and latency against the unpruned model (first entry), plus accuracy if given."""
    base = next(iter(models.values()))
    base_flops, base_params = count_flops(base.model_name, base.config), count_params(base.model_name, base.config)
    head = "| pruning | params | FLOPs ratio | latency (ms) | latency ratio | latency / FLOPs |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if accuracy:
        head, rule = head + " test acc | acc + BN recal |", rule + "---:|---:|"
    rows = [head, rule]
    for label, model in models.items():
        flops = count_flops(model.model_name, model.config) / base_flops
        params = count_params(model.model_name, model.config)
        latency = seconds[label] / seconds["unpruned"]
        row = (
            f"| {label} | {params:,} ({params / base_params:.2f}) | {flops:.3f} | {seconds[label] * 1e3:.1f} "
            f"| {latency:.3f} | {latency / flops:.2f} |"
        )
        if accuracy:
            row += " {:.3f} | {:.3f} |".format(*accuracy[label])
        rows.append(row)
    return "\n".join(rows)


def small_model_accuracy(base: BaseModel, models: dict[str, nn.Module]) -> dict[str, tuple[float, float]]:
    """Test accuracy of each model as pruned, and after BN recalibration on a few training batches."""
    accuracy = {}
    for label, model in models.items():
        plain = evaluate(model, base.splits.test, Compute(torch.device("cpu")))
        recalibrated = recalibrate_bn(
            copy.deepcopy(model), batches(base.splits.train, 64, shuffle=True, seed=0), RECALIBRATION_BATCHES
        )
        accuracy[label] = (plain, evaluate(recalibrated, base.splits.test, Compute(torch.device("cpu"))))
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per timed forward")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per model and round")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-large", action="store_true", help="only the small trained model")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; batch {args.batch}, median of {args.rounds} rounds x {args.repeats} forwards"
    )
    base = trained_base()
    models = pruned_variants(base.model)
    images = torch.stack([base.splits.test[i % len(base.splits.test)][0] for i in range(args.batch)])
    print(f"\n### Small Spikformer (digits, 16 px, embed 64, depth 2, T 4), trained: test acc {base.test_acc:.3f}\n")
    print(table(models, latencies(models, images, args.rounds, args.repeats), small_model_accuracy(base, models)))
    if args.skip_large:
        return
    torch.manual_seed(0)
    large = create_model("spikformer", **LARGE).eval()
    models = pruned_variants(large)
    images = torch.rand(args.batch, LARGE["in_channels"], LARGE["img_size"], LARGE["img_size"])
    print("\n### Larger Spikformer (32 px, embed 256, 8 heads, depth 4, T 4), random weights\n")
    print(table(models, latencies(models, images, args.rounds, args.repeats), {}))


if __name__ == "__main__":
    main()
