"""The paper's result row: accuracy before/after pruning and fine-tuning, memory saving, params, FLOPs, energy."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ResultRow:
    """One row of the PSViT paper's table. Accuracies are on the **test** split, in [0, 1]."""

    original_acc: float
    pruned_acc: float
    finetuned_acc: float | None
    memory_saving: float
    params: int
    flops: int
    energy_mj: float

    HEADER = (
        "original acc",
        "pruned acc, no fine-tune",
        "pruned acc, fine-tuned",
        "memory saving",
        "params",
        "FLOPs (MAC/img/step)",
        "energy (mJ/img)",
    )

    def cells(self) -> list[str]:
        ft = "-" if self.finetuned_acc is None else f"{100 * self.finetuned_acc:.2f}%"
        return [
            f"{100 * self.original_acc:.2f}%",
            f"{100 * self.pruned_acc:.2f}%",
            ft,
            f"{100 * self.memory_saving:.2f}%",
            f"{self.params:,}",
            f"{self.flops / 1e6:.2f}M",
            f"{self.energy_mj:.4f}",
        ]

    def markdown(self, with_header: bool = True) -> str:
        line = "| " + " | ".join(self.cells()) + " |"
        if not with_header:
            return line
        head = "| " + " | ".join(self.HEADER) + " |"
        return "\n".join([head, "|" + "---|" * len(self.HEADER), line])

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """MLflow metrics (accuracies prefixed, e.g. ``test_pruned_acc``)."""
        d = {k: v for k, v in asdict(self).items() if v is not None}
        return {(prefix + k if k.endswith("_acc") else k): float(v) for k, v in d.items()}
