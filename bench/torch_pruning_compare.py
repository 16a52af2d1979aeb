"""Uniform channel pruning of the trained small Spikformer: psvit.prune against Torch-Pruning 1.6 (DepGraph).

    pip install -c constraints-cpu.txt torch-pruning==1.6.1   # bench-only dependency
    PYTHONPATH=. python bench/torch_pruning_compare.py

For each uniform keep ratio (every group, the residual stream included) both tools prune the same trained
model with L1 magnitude importance. Torch-Pruning gets ``MetaPruner(pruning_ratio=1 - keep,
MagnitudeImportance(p=1), ignored_layers=[head])`` in three set-ups:

* ``as is``: DepGraph traces the real model;
* ``LIF->Identity``: the LIF neurons are swapped for identities while it traces and prunes, then put back;
* ``LIF->Identity + num_heads``: the same, also telling it the q/k/v layers' head count.

Reported per run: the kept width of every group (``a/b`` where the group's coupled tensors disagree),
parameters, whether the model still runs, test accuracy (as pruned and after BN recalibration), pruning
time, whether it saves and loads through ``psvit.save``/``psvit.load``, and which fraction of the channels
psvit keeps it keeps too (MLP groups, and all groups).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import torch
import torch_pruning as tp
from prune_latency import KEEPS, RECALIBRATION_BATCHES, trained_base, uniform_ratios
from spikingjelly.activation_based import functional
from torch import nn

import psvit
from psvit.errors import PsvitError
from psvit.models.lif import LIFNode
from psvit.prune import Group, list_groups, prune, recalibrate_bn
from psvit.train import Compute, evaluate
from psvit.train.loop import batches


@contextlib.contextmanager
def lifs_as_identities(model: nn.Module) -> Iterator[None]:
    """Replace every LIF neuron by ``nn.Identity`` inside the block, then put them back."""
    swapped = [
        (parent, name, child)
        for parent in list(model.modules())
        for name, child in parent.named_children()
        if isinstance(child, LIFNode)
    ]
    for parent, name, _ in swapped:
        setattr(parent, name, nn.Identity())
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def torch_pruning(model: nn.Module, keep: float, example: torch.Tensor, swap: bool, heads: bool) -> nn.Module:
    """Torch-Pruning's uniform (local) L1 pruning of a copy of ``model``."""
    pruned = copy.deepcopy(model)
    num_heads = {}
    if heads:
        num_heads = {getattr(b.attn, f"{n}_linear"): b.attn.num_heads for b in pruned.block for n in "qkv"}
    with lifs_as_identities(pruned) if swap else contextlib.nullcontext():
        pruner = tp.pruner.MetaPruner(
            pruned,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=1 - keep,
            ignored_layers=[pruned.head],
            num_heads=num_heads,
        )
        pruner.step()
    functional.reset_net(pruned)  # tracing ran forwards
    return pruned


def widths(model: nn.Module, groups: list[Group]) -> list[str]:
    """The width of each group in ``model``'s tensors; ``a/b`` when its coupled tensors disagree. The never-called
    norm1/norm2 LayerNorms are left out (DepGraph cannot see them, so it never prunes them)."""
    state = model.state_dict()
    sizes = [sorted({state[s.key].shape[s.dim] for s in g.slices if s.role != "unused"}) for g in groups]
    return ["/".join(map(str, s)) for s in sizes]


def agreement(original: nn.Module, pruned: nn.Module, reference: nn.Module, groups: list[Group]) -> str:
    """The fraction of ``reference``'s kept channels that ``pruned`` kept too, over ``groups``."""
    shared = sum(len(kept_indices(original, pruned, g) & kept_indices(original, reference, g)) for g in groups)
    return f"{shared / sum(len(kept_indices(original, reference, g)) for g in groups):.2f}"


def kept_indices(original: nn.Module, pruned: nn.Module, g: Group) -> set[int]:
    """Which of ``g``'s channels ``pruned`` kept, found by matching its (trained, distinct) BN bias values."""
    key = next(s.key for s in g.slices if s.role == "bn_bias")
    before, after = original.state_dict()[key], pruned.state_dict()[key]
    return set((after[:, None] == before[None, :]).nonzero()[:, 1].tolist())


def round_trips(model: nn.Module) -> str:
    with tempfile.TemporaryDirectory() as folder:
        try:
            psvit.load(psvit.save(model, Path(folder) / "m.pt"))
        except PsvitError as exc:
            return f"no ({type(exc).__name__})"
    return "yes"


def main() -> None:
    base = trained_base()
    model, splits = base.model, base.splits
    groups = list_groups(model)
    mlps = [g for g in groups if g.kind == "mlp"]
    example = splits.train[0][0].unsqueeze(0)
    print(
        f"torch-pruning {metadata.version('torch-pruning')}; trained small Spikformer, test acc {base.test_acc:.3f}\n"
    )
    print(
        "| keep | tool | " + " | ".join(g.name for g in groups) + " | params | runs | test acc | acc + BN recal "
        "| prune time (s) | save/load | MLP channels as psvit | all channels as psvit |"
    )
    print("|---|---|" + "---:|" * len(groups) + "---:|---|---:|---:|---:|---|---:|---:|")
    for keep in KEEPS:
        for tool in ("psvit", "TP as is", "TP LIF->Identity", "TP LIF->Identity + num_heads"):
            start = time.perf_counter()
            if tool == "psvit":
                pruned = ours = prune(model, uniform_ratios(model, keep, embed=True))
            else:
                pruned = torch_pruning(model, keep, example, swap="Identity" in tool, heads="num_heads" in tool)
            seconds = time.perf_counter() - start
            params = sum(p.numel() for p in pruned.parameters())
            try:
                acc = evaluate(pruned, splits.test, Compute(torch.device("cpu")))
                recal = recalibrate_bn(pruned, batches(splits.train, 64, shuffle=True, seed=0), RECALIBRATION_BATCHES)
                runs, accs = "yes", f"{acc:.3f} | {evaluate(recal, splits.test, Compute(torch.device('cpu'))):.3f}"
            except RuntimeError as exc:
                runs, accs = f"no: {str(exc).splitlines()[0][:60]}", "- | -"
            agree = " | ".join(agreement(model, pruned, ours, gs) for gs in (mlps, groups))
            print(
                f"| {keep} | {tool} | "
                + " | ".join(widths(pruned, groups))
                + f" | {params:,} | {runs} | {accs} | {seconds:.3f} | {round_trips(pruned)} | {agree} |"
            )


if __name__ == "__main__":
    main()
