"""An independent, plain-torch reading of BICLab's Spike-driven Transformer v1, used only by the tests.

Written from the official code (``model/spikeformer.py``, ``module/ms_conv.py``, ``module/sps.py``; static
images, ``spike_mode="lif"``, ``dvs_mode=False``, ``TET=False``), not from ``psvit.models``: the state_dict key
listing of SDT-8-512 is derived from the official ``__init__``s, and :func:`reference_forward` follows the
official forwards step by step (heads split as ``(T, B, heads, N, C/heads)``, ``kv`` summed over tokens per
head), over a ``state_dict``, with the LIF loop of :mod:`official_reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from official_reference import ATTN_V_THRESHOLD, BN_EPS, Spikes, lif

# Non-block entries and block 0 of the official ImageNet SDT-8-512 (dim 512, 8 heads, mlp_ratio 4,
# pooling_stat "1111"). LIF modules hold no state_dict entries; maxpools have none.
SDT_8_512_KEYS = """
block.0.attn.k_bn.bias (512,)
block.0.attn.k_bn.num_batches_tracked ()
block.0.attn.k_bn.running_mean (512,)
block.0.attn.k_bn.running_var (512,)
block.0.attn.k_bn.weight (512,)
block.0.attn.k_conv.weight (512, 512, 1, 1)
block.0.attn.proj_bn.bias (512,)
block.0.attn.proj_bn.num_batches_tracked ()
block.0.attn.proj_bn.running_mean (512,)
block.0.attn.proj_bn.running_var (512,)
block.0.attn.proj_bn.weight (512,)
block.0.attn.proj_conv.bias (512,)
block.0.attn.proj_conv.weight (512, 512, 1, 1)
block.0.attn.q_bn.bias (512,)
block.0.attn.q_bn.num_batches_tracked ()
block.0.attn.q_bn.running_mean (512,)
block.0.attn.q_bn.running_var (512,)
block.0.attn.q_bn.weight (512,)
block.0.attn.q_conv.weight (512, 512, 1, 1)
block.0.attn.talking_heads.weight (8, 8, 1)
block.0.attn.v_bn.bias (512,)
block.0.attn.v_bn.num_batches_tracked ()
block.0.attn.v_bn.running_mean (512,)
block.0.attn.v_bn.running_var (512,)
block.0.attn.v_bn.weight (512,)
block.0.attn.v_conv.weight (512, 512, 1, 1)
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


class _Reference:
    """One forward pass over a state_dict, recording every LIF's output under its official module name."""

    def __init__(self, sd: dict[str, torch.Tensor], num_heads: int, T: int, pooling_stat: str) -> None:
        self.sd, self.num_heads, self.T, self.pooling_stat = sd, num_heads, T, pooling_stat
        self.spikes: Spikes = {}

    def lif(self, name: str, x: torch.Tensor, v_threshold: float = 1.0) -> torch.Tensor:
        self.spikes[name] = s = lif(x, v_threshold)
        return s

    def conv_bn(self, conv: str, bn: str, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
        """``BN(conv(x))`` of ``(TB, C, H, W)`` in eval mode."""
        sd = self.sd
        y = F.conv2d(x, sd[f"{conv}.weight"], sd.get(f"{conv}.bias"), padding=padding)
        return F.batch_norm(
            y,
            sd[f"{bn}.running_mean"],
            sd[f"{bn}.running_var"],
            sd[f"{bn}.weight"],
            sd[f"{bn}.bias"],
            training=False,
            eps=BN_EPS,
        )

    def sps(self, x: torch.Tensor) -> torch.Tensor:
        """``MS_SPS.forward``."""
        T, B, _, H, W = x.shape
        ratio = 1
        p = "patch_embed"
        x = x.flatten(0, 1)
        for i in range(3):
            sfx = "" if i == 0 else str(i)
            x = self.conv_bn(f"{p}.proj_conv{sfx}", f"{p}.proj_bn{sfx}", x, padding=1)
            x = self.lif(f"{p}.proj_lif{sfx}", x.reshape(T, B, -1, H // ratio, W // ratio)).flatten(0, 1)
            if self.pooling_stat[i] == "1":
                x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
                ratio *= 2
        x = self.conv_bn(f"{p}.proj_conv3", f"{p}.proj_bn3", x, padding=1)
        if self.pooling_stat[3] == "1":
            x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
            ratio *= 2
        x_feat = x
        x = self.lif(f"{p}.proj_lif3", x.reshape(T, B, -1, H // ratio, W // ratio)).flatten(0, 1)
        x = self.conv_bn(f"{p}.rpe_conv", f"{p}.rpe_bn", x, padding=1)
        return (x + x_feat).reshape(T, B, -1, H // ratio, W // ratio)

    def ssa(self, p: str, x: torch.Tensor) -> torch.Tensor:
        """``MS_SSA_Conv.forward`` (dvs off): heads split, k*v summed over tokens per head, talking_heads_lif."""
        T, B, C, H, W = x.shape
        identity = x
        N = H * W
        heads = self.num_heads
        x = self.lif(f"{p}.shortcut_lif", x)
        x_for_qkv = x.flatten(0, 1)

        def qkv(name: str) -> torch.Tensor:
            out = self.conv_bn(f"{p}.{name}_conv", f"{p}.{name}_bn", x_for_qkv)
            out = self.lif(f"{p}.{name}_lif", out.reshape(T, B, -1, H, W))
            c = out.shape[2]
            return out.flatten(3).transpose(-1, -2).reshape(T, B, N, heads, c // heads).permute(0, 1, 3, 2, 4)

        q, k, v = qkv("q"), qkv("k"), qkv("v")
        kv = k.mul(v).sum(dim=-2, keepdim=True)
        kv = self.lif(f"{p}.talking_heads_lif", kv, ATTN_V_THRESHOLD)
        x = q.mul(kv)
        x = x.transpose(3, 4).reshape(T, B, -1, H, W)
        x = self.conv_bn(f"{p}.proj_conv", f"{p}.proj_bn", x.flatten(0, 1)).reshape(T, B, C, H, W)
        return x + identity

    def mlp(self, p: str, x: torch.Tensor) -> torch.Tensor:
        """``MS_MLP_Conv.forward`` (hidden != dim: no inner residual)."""
        T, B, C, H, W = x.shape
        identity = x
        x = self.lif(f"{p}.fc1_lif", x)
        x = self.conv_bn(f"{p}.fc1_conv", f"{p}.fc1_bn", x.flatten(0, 1)).reshape(T, B, -1, H, W)
        x = self.lif(f"{p}.fc2_lif", x)
        x = self.conv_bn(f"{p}.fc2_conv", f"{p}.fc2_bn", x.flatten(0, 1)).reshape(T, B, C, H, W)
        return x + identity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.sps(images.unsqueeze(0).repeat(self.T, 1, 1, 1, 1))
        depth = 1 + max(int(k.split(".")[1]) for k in self.sd if k.startswith("block."))
        for i in range(depth):
            x = self.mlp(f"block.{i}.mlp", self.ssa(f"block.{i}.attn", x))
        x = self.lif("head_lif", x.flatten(3).mean(3))
        return F.linear(x, self.sd["head.weight"], self.sd["head.bias"]).mean(0)


def reference_forward(
    sd: dict[str, torch.Tensor], num_heads: int, T: int, pooling_stat: str, images: torch.Tensor
) -> tuple[torch.Tensor, Spikes]:
    """Logits of the official Spike-driven Transformer with weights ``sd`` on ``images`` (B, C, H, W), and every
    LIF's spikes keyed by its official module name."""
    ref = _Reference(sd, num_heads, T, pooling_stat)
    with torch.no_grad():
        logits = ref.forward(images)
    return logits, ref.spikes
