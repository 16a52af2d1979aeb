"""Print the cost report of the default small Spikformer (on real digits) and of Spikformer-8-512 (on CPU).

    PYTHONPATH=. python bench/cost_report.py [--checkpoint small.pt] [--batch 32] [--latency-repeats 10]
        [--large-latency-repeats 3] [--skip-8-512]

Without ``--checkpoint`` the small model is untrained. An untrained model barely fires with its initial
BatchNorm statistics, so its BN statistics are re-estimated on the measured batch (no weight is trained):
its firing rates, SOPs and energy show the accounting at work but say nothing about a trained model.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import psvit
from psvit.cost import cost_report
from psvit.data import build_splits
from psvit.prune import recalibrate_bn

SMALL = {
    "variant": "cifar",
    "img_size": 16,
    "patch_size": 4,
    "embed_dim": 64,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "depth": 2,
    "T": 4,
    "in_channels": 1,
    "num_classes": 10,
}
SPIKFORMER_8_512 = {
    "variant": "imagenet",
    "img_size": 224,
    "embed_dim": 512,
    "num_heads": 8,
    "mlp_ratio": 4.0,
    "depth": 8,
    "T": 4,
    "in_channels": 3,
    "num_classes": 1000,
}


def report(title: str, model: nn.Module, images: torch.Tensor, trained: bool, latency_repeats: int) -> None:
    if not trained:
        recalibrate_bn(model, [(images, torch.zeros(len(images)))], num_batches=1)
    result = cost_report(model, images, latency_repeats=latency_repeats)
    state = "trained" if trained else "UNTRAINED, BN statistics re-estimated on this batch"
    print(f"== {title} ({state}); input batch {tuple(images.shape)}, {torch.get_num_threads()} CPU threads")
    print(result.format())
    if not trained:
        print("note: firing rates, SOPs and energy of an untrained model are not meaningful")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained psvit checkpoint of a 1-channel model to report instead")
    parser.add_argument("--batch", type=int, default=32, help="digits test images for the small model")
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--large-latency-repeats", type=int, default=3, help="for 8-512 (~10 s per forward)")
    parser.add_argument("--skip-8-512", action="store_true", help="only the small model")
    args = parser.parse_args()

    torch.manual_seed(0)
    small = psvit.load(args.checkpoint) if args.checkpoint else psvit.create_model("spikformer", **SMALL)
    digits = build_splits("digits", img_size=small.config["img_size"]).test
    images = torch.stack([digits[i][0] for i in range(args.batch)])
    report("small Spikformer", small, images, bool(args.checkpoint), args.latency_repeats)

    if not args.skip_8_512:
        large = psvit.create_model("spikformer", **SPIKFORMER_8_512)
        image = torch.rand(1, 3, 224, 224)
        report("Spikformer-8-512, 1 random image", large, image, False, args.large_latency_repeats)


if __name__ == "__main__":
    main()
