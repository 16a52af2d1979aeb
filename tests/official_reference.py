"""An independent, plain-torch reading of the official Spikformer, used only by the tests.

Everything here comes from the official-layout facts (the state_dict key listings and the forward semantics of
the reference code), not from ``psvit.models``: the key listings are transcribed verbatim (non-block entries and
block 0), and :func:`reference_forward` is a functional forward over a ``state_dict`` with its own LIF loop.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

# Non-block entries and block 0 of the official CIFAR-10 Spikformer-4-384 (blocks 1.. repeat block 0).
CIFAR_4_384_KEYS = """
block.0.attn.k_bn.bias (384,)
block.0.attn.k_bn.num_batches_tracked ()
block.0.attn.k_bn.running_mean (384,)
block.0.attn.k_bn.running_var (384,)
block.0.attn.k_bn.weight (384,)
block.0.attn.k_linear.bias (384,)
block.0.attn.k_linear.weight (384, 384)
block.0.attn.proj_bn.bias (384,)
block.0.attn.proj_bn.num_batches_tracked ()
block.0.attn.proj_bn.running_mean (384,)
block.0.attn.proj_bn.running_var (384,)
block.0.attn.proj_bn.weight (384,)
block.0.attn.proj_linear.bias (384,)
block.0.attn.proj_linear.weight (384, 384)
block.0.attn.q_bn.bias (384,)
block.0.attn.q_bn.num_batches_tracked ()
block.0.attn.q_bn.running_mean (384,)
block.0.attn.q_bn.running_var (384,)
block.0.attn.q_bn.weight (384,)
block.0.attn.q_linear.bias (384,)
block.0.attn.q_linear.weight (384, 384)
block.0.attn.v_bn.bias (384,)
block.0.attn.v_bn.num_batches_tracked ()
block.0.attn.v_bn.running_mean (384,)
block.0.attn.v_bn.running_var (384,)
block.0.attn.v_bn.weight (384,)
block.0.attn.v_linear.bias (384,)
block.0.attn.v_linear.weight (384, 384)
block.0.mlp.fc1_bn.bias (1536,)
block.0.mlp.fc1_bn.num_batches_tracked ()
block.0.mlp.fc1_bn.running_mean (1536,)
block.0.mlp.fc1_bn.running_var (1536,)
block.0.mlp.fc1_bn.weight (1536,)
block.0.mlp.fc1_linear.bias (1536,)
block.0.mlp.fc1_linear.weight (1536, 384)
block.0.mlp.fc2_bn.bias (384,)
block.0.mlp.fc2_bn.num_batches_tracked ()
block.0.mlp.fc2_bn.running_mean (384,)
block.0.mlp.fc2_bn.running_var (384,)
block.0.mlp.fc2_bn.weight (384,)
block.0.mlp.fc2_linear.bias (384,)
block.0.mlp.fc2_linear.weight (384, 1536)
block.0.norm1.bias (384,)
block.0.norm1.weight (384,)
block.0.norm2.bias (384,)
block.0.norm2.weight (384,)
head.bias (10,)
head.weight (10, 384)
patch_embed.proj_bn.bias (48,)
patch_embed.proj_bn.num_batches_tracked ()
patch_embed.proj_bn.running_mean (48,)
patch_embed.proj_bn.running_var (48,)
patch_embed.proj_bn.weight (48,)
patch_embed.proj_bn1.bias (96,)
patch_embed.proj_bn1.num_batches_tracked ()
patch_embed.proj_bn1.running_mean (96,)
patch_embed.proj_bn1.running_var (96,)
patch_embed.proj_bn1.weight (96,)
patch_embed.proj_bn2.bias (192,)
patch_embed.proj_bn2.num_batches_tracked ()
patch_embed.proj_bn2.running_mean (192,)
patch_embed.proj_bn2.running_var (192,)
patch_embed.proj_bn2.weight (192,)
patch_embed.proj_bn3.bias (384,)
patch_embed.proj_bn3.num_batches_tracked ()
patch_embed.proj_bn3.running_mean (384,)
patch_embed.proj_bn3.running_var (384,)
patch_embed.proj_bn3.weight (384,)
patch_embed.proj_conv.weight (48, 3, 3, 3)
patch_embed.proj_conv1.weight (96, 48, 3, 3)
patch_embed.proj_conv2.weight (192, 96, 3, 3)
patch_embed.proj_conv3.weight (384, 192, 3, 3)
patch_embed.rpe_bn.bias (384,)
patch_embed.rpe_bn.num_batches_tracked ()
patch_embed.rpe_bn.running_mean (384,)
patch_embed.rpe_bn.running_var (384,)
patch_embed.rpe_bn.weight (384,)
patch_embed.rpe_conv.weight (384, 384, 3, 3)
"""

# Non-block entries and block 0 of the official ImageNet Spikformer-8-512 (blocks 1.. repeat block 0).
IMAGENET_8_512_KEYS = """
block.0.attn.k_bn.bias (512,)
block.0.attn.k_bn.num_batches_tracked ()
block.0.attn.k_bn.running_mean (512,)
block.0.attn.k_bn.running_var (512,)
block.0.attn.k_bn.weight (512,)
block.0.attn.k_conv.weight (512, 512, 1)
block.0.attn.proj_bn.bias (512,)
block.0.attn.proj_bn.num_batches_tracked ()
block.0.attn.proj_bn.running_mean (512,)
block.0.attn.proj_bn.running_var (512,)
block.0.attn.proj_bn.weight (512,)
block.0.attn.proj_conv.bias (512,)
block.0.attn.proj_conv.weight (512, 512, 1)
block.0.attn.q_bn.bias (512,)
block.0.attn.q_bn.num_batches_tracked ()
block.0.attn.q_bn.running_mean (512,)
block.0.attn.q_bn.running_var (512,)
block.0.attn.q_bn.weight (512,)
block.0.attn.q_conv.weight (512, 512, 1)
block.0.attn.v_bn.bias (512,)
block.0.attn.v_bn.num_batches_tracked ()
block.0.attn.v_bn.running_mean (512,)
block.0.attn.v_bn.running_var (512,)
block.0.attn.v_bn.weight (512,)
block.0.attn.v_conv.weight (512, 512, 1)
block.0.mlp.fc1_bn.bias (2048,)
block.0.mlp.fc1_bn.num_batches_tracked ()
block.0.mlp.fc1_bn.running_mean (2048,)
block.0.mlp.fc1_bn.running_var (2048,)
block.0.mlp.fc1_bn.weight (2048,)
block.0.mlp.fc1_conv.bias (2048,)
block.0.mlp.fc1_conv.weight (2048, 512, 1, 1)
block.0.mlp.fc2_bn.bias (512,)
block.0.mlp.fc2_bn.num_batches_tracked ()
block.0.mlp.fc2_bn.running_mean (512,)
block.0.mlp.fc2_bn.running_var (512,)
block.0.mlp.fc2_bn.weight (512,)
block.0.mlp.fc2_conv.bias (512,)
block.0.mlp.fc2_conv.weight (512, 2048, 1, 1)
block.0.norm1.bias (512,)
block.0.norm1.weight (512,)
block.0.norm2.bias (512,)
block.0.norm2.weight (512,)
head.bias (1000,)
head.weight (1000, 512)
patch_embed.proj_bn.bias (64,)
patch_embed.proj_bn.num_batches_tracked ()
patch_embed.proj_bn.running_mean (64,)
patch_embed.proj_bn.running_var (64,)
patch_embed.proj_bn.weight (64,)
patch_embed.proj_bn1.bias (128,)
patch_embed.proj_bn1.num_batches_tracked ()
patch_embed.proj_bn1.running_mean (128,)
patch_embed.proj_bn1.running_var (128,)
patch_embed.proj_bn1.weight (128,)
patch_embed.proj_bn2.bias (256,)
patch_embed.proj_bn2.num_batches_tracked ()
patch_embed.proj_bn2.running_mean (256,)
patch_embed.proj_bn2.running_var (256,)
patch_embed.proj_bn2.weight (256,)
patch_embed.proj_bn3.bias (512,)
patch_embed.proj_bn3.num_batches_tracked ()
patch_embed.proj_bn3.running_mean (512,)
patch_embed.proj_bn3.running_var (512,)
patch_embed.proj_bn3.weight (512,)
patch_embed.proj_conv.weight (64, 3, 3, 3)
patch_embed.proj_conv1.weight (128, 64, 3, 3)
patch_embed.proj_conv2.weight (256, 128, 3, 3)
patch_embed.proj_conv3.weight (512, 256, 3, 3)
patch_embed.rpe_bn.bias (512,)
patch_embed.rpe_bn.num_batches_tracked ()
patch_embed.rpe_bn.running_mean (512,)
patch_embed.rpe_bn.running_var (512,)
patch_embed.rpe_bn.weight (512,)
patch_embed.rpe_conv.weight (512, 512, 3, 3)
"""

#: Stem stages followed by MaxPool2d(3, 2, 1): after all four on ImageNet (patch 16), after 2 and 3 on CIFAR.
MAXPOOL_AFTER = {"cifar": (2, 3), "imagenet": (0, 1, 2, 3)}
TAU, V_THRESHOLD, ATTN_V_THRESHOLD, V_RESET = 2.0, 1.0, 0.5, 0.0
BN_EPS = 1e-5

Spikes = dict[str, torch.Tensor]


def official_shapes(listing: str, depth: int) -> dict[str, tuple[int, ...]]:
    """Parse a key listing (non-block entries and block 0) and repeat block 0 as blocks 1..depth-1."""
    shapes = {}
    for line in listing.strip().splitlines():
        key, shape = line.split(" ", 1)
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        if key.startswith("block.0."):
            for i in range(depth):
                shapes[f"block.{i}.{key.removeprefix('block.0.')}"] = dims
        else:
            shapes[key] = dims
    return shapes


def lif(x_seq: torch.Tensor, v_threshold: float = V_THRESHOLD) -> torch.Tensor:
    """Multi-step LIF from rest: decay_input charge, fire at ``h >= v_threshold``, hard reset to ``V_RESET``."""
    v = torch.full_like(x_seq[0], V_RESET)
    spikes = []
    for x in x_seq:
        h = v + (x - (v - V_RESET)) / TAU
        spike = h >= v_threshold
        v = torch.where(spike, torch.full_like(h, V_RESET), h)
        spikes.append(spike.to(x_seq.dtype))
    return torch.stack(spikes)


class _Reference:
    """One forward pass over a state_dict, recording every LIF's output under its official module name."""

    def __init__(self, sd: dict[str, torch.Tensor], variant: str, num_heads: int, T: int) -> None:
        self.sd, self.variant, self.num_heads, self.T = sd, variant, num_heads, T
        self.spikes: Spikes = {}

    def lif(self, name: str, x: torch.Tensor, v_threshold: float = V_THRESHOLD) -> torch.Tensor:
        self.spikes[name] = s = lif(x, v_threshold)
        return s

    def bn(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode BatchNorm over dim 1 (BatchNorm1d and BatchNorm2d alike)."""
        sd = self.sd
        return F.batch_norm(
            x,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            training=False,
            eps=BN_EPS,
        )

    def token_linear_bn(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        """CIFAR: ``BN1d(Linear(x))`` on ``(TB, N, C)`` tokens, BN over the channel axis."""
        y = F.linear(x, self.sd[f"{prefix}_linear.weight"], self.sd[f"{prefix}_linear.bias"])
        return self.bn(f"{prefix}_bn", y.transpose(-1, -2)).transpose(-1, -2)

    def sps(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        for i in range(4):
            sfx = "" if i == 0 else str(i)
            x = self.bn(
                f"patch_embed.proj_bn{sfx}", F.conv2d(x, self.sd[f"patch_embed.proj_conv{sfx}.weight"], padding=1)
            )
            x = self.lif(f"patch_embed.proj_lif{sfx}", x.reshape(T, B, *x.shape[1:])).flatten(0, 1)
            if i in MAXPOOL_AFTER[self.variant]:
                x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x_feat = x.reshape(T, B, *x.shape[1:])
        x = self.bn("patch_embed.rpe_bn", F.conv2d(x, self.sd["patch_embed.rpe_conv.weight"], padding=1))
        x = self.lif("patch_embed.rpe_lif", x.reshape(T, B, *x.shape[1:])) + x_feat
        return x.flatten(-2).transpose(-1, -2) if self.variant == "cifar" else x  # (T,B,N,C) | (T,B,C,H,W)

    def ssa(self, p: str, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        heads = self.num_heads
        if self.variant == "cifar":
            N = x.shape[2]
            x_tb = x.flatten(0, 1)

            def qkv(name: str) -> torch.Tensor:
                y = self.token_linear_bn(f"{p}.{name}", x_tb).reshape(T, B, N, -1)
                y = self.lif(f"{p}.{name}_lif", y)
                return y.reshape(T, B, N, heads, -1).permute(0, 1, 3, 2, 4)
        else:
            H, W = x.shape[3:]
            N = H * W
            x_tb = x.flatten(3).flatten(0, 1)  # (TB, C, N)

            def qkv(name: str) -> torch.Tensor:
                y = self.bn(f"{p}.{name}_bn", F.conv1d(x_tb, self.sd[f"{p}.{name}_conv.weight"]))
                y = self.lif(f"{p}.{name}_lif", y.reshape(T, B, -1, N))
                return y.transpose(-1, -2).reshape(T, B, N, heads, -1).permute(0, 1, 3, 2, 4)

        q, k, v = qkv("q"), qkv("k"), qkv("v")
        attn = q @ (k.transpose(-2, -1) @ v) * 0.125  # no softmax; (T, B, heads, N, d)
        if self.variant == "cifar":
            y = self.lif(f"{p}.attn_lif", attn.transpose(2, 3).reshape(T, B, N, -1), ATTN_V_THRESHOLD)
            y = self.token_linear_bn(f"{p}.proj", y.flatten(0, 1)).reshape(T, B, N, -1)
        else:
            y = self.lif(f"{p}.attn_lif", attn.transpose(3, 4).reshape(T, B, -1, N), ATTN_V_THRESHOLD)
            y = F.conv1d(y.flatten(0, 1), self.sd[f"{p}.proj_conv.weight"], self.sd[f"{p}.proj_conv.bias"])
            y = self.bn(f"{p}.proj_bn", y).reshape(T, B, -1, H, W)
        return self.lif(f"{p}.proj_lif", y)

    def mlp(self, p: str, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        for fc in ("fc1", "fc2"):
            if self.variant == "cifar":
                y = self.token_linear_bn(f"{p}.{fc}", x.flatten(0, 1))
            else:
                y = F.conv2d(x.flatten(0, 1), self.sd[f"{p}.{fc}_conv.weight"], self.sd[f"{p}.{fc}_conv.bias"])
                y = self.bn(f"{p}.{fc}_bn", y)
            x = self.lif(f"{p}.{fc}_lif", y.reshape(T, B, *y.shape[1:]))
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.sps(images.unsqueeze(0).repeat(self.T, 1, 1, 1, 1))
        depth = 1 + max(int(k.split(".")[1]) for k in self.sd if k.startswith("block."))
        for i in range(depth):  # norm1 / norm2 are never used
            x = x + self.ssa(f"block.{i}.attn", x)
            x = x + self.mlp(f"block.{i}.mlp", x)
        features = x.mean(2) if self.variant == "cifar" else x.flatten(3).mean(3)  # mean over tokens
        return F.linear(features.mean(0), self.sd["head.weight"], self.sd["head.bias"])


def reference_forward(
    sd: dict[str, torch.Tensor], variant: str, num_heads: int, T: int, images: torch.Tensor
) -> tuple[torch.Tensor, Spikes]:
    """Logits of the official Spikformer with weights ``sd`` on ``images`` (B, C, H, W), and every LIF's spikes
    ``(T, ...)`` keyed by its official module name (e.g. ``block.0.attn.attn_lif``)."""
    ref = _Reference(sd, variant, num_heads, T)
    with torch.no_grad():
        logits = ref.forward(images)
    return logits, ref.spikes
