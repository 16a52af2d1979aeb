"""CPU speed of psvit's LIF inference path vs spikingjelly's ``LIFNode``: alone, and inside a small Spikformer.

Both neurons must give bit-identical spikes, voltages and logits; the script asserts it before timing.

    python bench/lif_speed.py [--images 360] [--batch-size 120] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from psvit.models import create_model
from psvit.models.lif import LIFNode, lif

#: The default small model: CIFAR layout, 16x16 single-channel images, 10 classes.
SMALL = {
    "variant": "cifar",
    "img_size": 16,
    "embed_dim": 64,
    "num_heads": 4,
    "depth": 2,
    "T": 4,
    "in_channels": 1,
    "num_classes": 10,
}
#: (label, shape) of LIF inputs: the small model's MLP hidden layer at batch 120, Spikformer-4-384's at batch 16.
LIF_SHAPES = [("small fc1_lif (T,B,N,C)", (4, 120, 16, 256)), ("4-384 fc1_lif (T,B,N,C)", (4, 16, 64, 1536))]


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def spikingjelly_twin(node: LIFNode) -> neuron.LIFNode:
    """spikingjelly's own ``LIFNode`` with the same parameters as ``node``."""
    return neuron.LIFNode(
        tau=node.tau,
        decay_input=node.decay_input,
        v_threshold=node.v_threshold,
        v_reset=node.v_reset,
        detach_reset=node.detach_reset,
        step_mode=node.step_mode,
    )


def with_spikingjelly_lif(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every psvit ``LIFNode`` is replaced by its spikingjelly twin."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, LIFNode):
                setattr(parent, name, spikingjelly_twin(child))
    return model


def run_lif(node: neuron.LIFNode, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        spikes = node(x)
    v = node.v
    functional.reset_net(node)
    return spikes, v


def infer(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for ``images`` in batches, resetting neuron state after each batch."""
    out = []
    with torch.no_grad():
        for batch in images.split(batch_size):
            out.append(model(batch))
            functional.reset_net(model)
    return torch.cat(out)


def lif_seconds(model: nn.Module, run: Callable[[], object]) -> tuple[float, float]:
    """(total, inside-LIF) wall seconds of ``run()``, timed with forward hooks on every LIF of ``model``."""
    spent = [0.0]
    starts: list[float] = []

    def pre(_m: nn.Module, _args: object) -> None:
        starts.append(time.perf_counter())

    def post(_m: nn.Module, _args: object, _out: object) -> None:
        spent[0] += time.perf_counter() - starts.pop()

    lifs = [m for m in model.modules() if isinstance(m, neuron.LIFNode)]
    handles = [h for m in lifs for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    start = time.perf_counter()
    run()
    total = time.perf_counter() - start
    for h in handles:
        h.remove()
    return total, spent[0]


def bench_lif_alone(repeats: int) -> None:
    print(f"{'LIF alone, no_grad':<26}{'spikingjelly ms':>16}{'psvit ms':>10}{'speed-up':>10}")
    gen = torch.Generator().manual_seed(0)
    for label, shape in LIF_SHAPES:
        x = torch.randn(shape, generator=gen) + 0.5
        for v_threshold in (0.5, 1.0):  # the attn_lif threshold and the usual one; the latter is timed
            ours = lif(v_threshold)
            theirs = spikingjelly_twin(ours)
            s_ours, v_ours = run_lif(ours, x)
            s_theirs, v_theirs = run_lif(theirs, x)
            assert torch.equal(s_ours, s_theirs) and torch.equal(v_ours, v_theirs), "LIF outputs differ"
        t_theirs = best_seconds(lambda theirs=theirs, x=x: run_lif(theirs, x), repeats)
        t_ours = best_seconds(lambda ours=ours, x=x: run_lif(ours, x), repeats)
        print(f"{label:<26}{t_theirs * 1e3:>16.2f}{t_ours * 1e3:>10.2f}{t_theirs / t_ours:>9.2f}x")


def bench_model(n_images: int, batch_size: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = create_model("spikformer", **SMALL).eval()
    models = {"spikingjelly LIF": with_spikingjelly_lif(model), "psvit LIF": model}
    images = torch.rand(n_images, SMALL["in_channels"], SMALL["img_size"], SMALL["img_size"])
    logits = {name: infer(m, images, batch_size) for name, m in models.items()}
    assert torch.equal(*logits.values()), "logits differ between the two LIF implementations"

    print(
        f"\nsmall Spikformer {SMALL['variant']} img {SMALL['img_size']} embed {SMALL['embed_dim']} depth "
        f"{SMALL['depth']} T {SMALL['T']}: {n_images} images, batch {batch_size}, eval + no_grad"
    )
    print(f"{'LIF implementation':<20}{'seconds':>9}{'images/s':>10}{'LIF s':>8}{'LIF share':>11}")
    totals = {}
    for name, m in models.items():
        totals[name] = best_seconds(lambda m=m: infer(m, images, batch_size), repeats)
        hooked_total, in_lif = lif_seconds(m, lambda m=m: infer(m, images, batch_size))
        print(
            f"{name:<20}{totals[name]:>9.3f}{n_images / totals[name]:>10.0f}{in_lif:>8.3f}"
            f"{in_lif / hooked_total:>10.0%}"
        )
    print(f"whole-model speed-up: {totals['spikingjelly LIF'] / totals['psvit LIF']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=360)
    parser.add_argument("--batch-size", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs, load average {load}\n"
    )
    bench_lif_alone(args.repeats)
    bench_model(args.images, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
