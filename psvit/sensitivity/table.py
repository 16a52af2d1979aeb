"""The sensitivity table: one row per (group, keep ratio), saved as CSV + JSON and plotted as a PNG."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SensitivityTable:
    """Rows with keys group, kind, ratio, width, kept, val_acc, acc_drop, memory_saving."""

    rows: list[dict[str, Any]]
    base_val_acc: float
    meta: dict[str, Any] = field(default_factory=dict)

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

    def to_json(self, path: Path) -> Path:
        path.write_text(json.dumps({"base_val_acc": self.base_val_acc, "meta": self.meta, "rows": self.rows}, indent=1))
        return path

    @classmethod
    def from_json(cls, path: Path) -> SensitivityTable:
        blob = json.loads(path.read_text())
        return cls(rows=blob["rows"], base_val_acc=blob["base_val_acc"], meta=blob.get("meta", {}))

    def to_csv(self, path: Path) -> Path:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def plot(self, path: Path) -> Path:
        """Accuracy drop vs keep ratio, one line per group (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for group in self.groups:
            ratios, drops = self.curve(group)
            ax.plot(ratios, 100 * drops, marker="o", ms=3, label=group)
        ax.set_xlabel("keep ratio (fraction of the group's channels kept)")
        ax.set_ylabel("validation accuracy drop (points)")
        ax.set_title(f"Layer-wise sensitivity (base val acc {100 * self.base_val_acc:.1f}%)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
