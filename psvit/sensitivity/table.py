"""The sensitivity table: one row per (group, keep ratio) and, for a bit-width search, one per (group,
bit-width), saved as CSV + JSON and plotted as a PNG."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psvit.quant.quantizer import FLOAT_BITS


@dataclass
class SensitivityTable:
    """Rows with keys group, kind, ratio, width, kept, val_acc, acc_drop, memory_saving; ``bits_rows`` (the
    bits grid: each group alone at each bit-width, unpruned) with keys group, kind, bits, val_acc, acc_drop,
    memory_saving."""

    rows: list[dict[str, Any]]
    base_val_acc: float
    meta: dict[str, Any] = field(default_factory=dict)
    bits_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(r["group"] for r in self.rows))

    def curve(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(keep ratios ascending, accuracy drops) of ``group``, with the unpruned point (1.0, 0.0) added."""
        points = {1.0: 0.0}
        points.update({r["ratio"]: r["acc_drop"] for r in self.rows if r["group"] == group})
        ratios = np.array(sorted(points))
        return ratios, np.array([points[r] for r in ratios])

    def predicted_drop(self, group: str, ratio: float) -> float:
        """Accuracy drop of ``group`` at ``ratio``: the curve made monotone (a lower keep ratio never predicts
        a smaller drop; negative drops count as 0), linearly interpolated between grid points, and linearly
        extrapolated below the lowest one (clipped to the base accuracy)."""
        ratios, drops = self.curve(group)
        envelope = np.maximum.accumulate(np.clip(drops, 0.0, None)[::-1])[::-1]
        if ratio >= ratios[0]:
            return float(np.interp(ratio, ratios, envelope))
        slope = (envelope[0] - envelope[1]) / (ratios[1] - ratios[0]) if len(ratios) > 1 else 0.0
        return float(min(self.base_val_acc, envelope[0] + slope * (ratios[0] - ratio)))

    def predicted_bits_drop(self, group: str, bits: int) -> float:
        """Accuracy drop of ``group`` with its weights at ``bits``: the bits grid made monotone (fewer bits never
        predict a smaller drop), linear in log2(bits) between grid points, the lowest grid point's drop below
        it; 0 at 32 bits and for a group the grid does not have."""
        points = {FLOAT_BITS: 0.0}
        points.update({r["bits"]: r["acc_drop"] for r in self.bits_rows if r["group"] == group})
        if bits >= FLOAT_BITS or len(points) == 1:
            return 0.0
        widths = np.array(sorted(points))
        envelope = np.maximum.accumulate(np.clip([points[b] for b in widths], 0.0, None)[::-1])[::-1]
        return float(np.interp(np.log2(bits), np.log2(widths), envelope))

    def to_json(self, path: Path) -> Path:
        blob = {"base_val_acc": self.base_val_acc, "meta": self.meta, "rows": self.rows}
        if self.bits_rows:
            blob["bits_rows"] = self.bits_rows
        path.write_text(json.dumps(blob, indent=1))
        return path

    @classmethod
    def from_json(cls, path: Path) -> SensitivityTable:
        blob = json.loads(path.read_text())
        return cls(
            rows=blob["rows"],
            base_val_acc=blob["base_val_acc"],
            meta=blob.get("meta", {}),
            bits_rows=blob.get("bits_rows", []),
        )

    def to_csv(self, path: Path) -> Path:
        """The width rows, then (if any) the bits rows, with the union of their columns."""
        rows = self.rows + self.bits_rows
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def plot(self, path: Path) -> Path:
        """Accuracy drop vs keep ratio, one line per group (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(
            1, 2 if self.bits_rows else 1, figsize=(12 if self.bits_rows else 7, 4.5), squeeze=False
        )
        ax = axes[0][0]
        for group in self.groups:
            ratios, drops = self.curve(group)
            ax.plot(ratios, 100 * drops, marker="o", ms=3, label=group)
        ax.set_xlabel("keep ratio (fraction of the group's channels kept)")
        ax.set_ylabel("validation accuracy drop (points)")
        ax.set_title(f"Layer-wise sensitivity (base val acc {100 * self.base_val_acc:.1f}%)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        if self.bits_rows:
            ax = axes[0][1]
            for group in self.groups:
                points = sorted((r["bits"], r["acc_drop"]) for r in self.bits_rows if r["group"] == group)
                ax.plot([b for b, _ in points], [100 * d for _, d in points], marker="o", ms=3, label=group)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("weight bits (the group alone quantized, unpruned)")
            ax.set_ylabel("validation accuracy drop (points)")
            ax.set_title("Bit-width sensitivity")
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
