"""The steps every pruning command shares: set up the base model and budget, get sensitivity, finish a model.

``python -m psvit.prune``, ``python -m psvit.sensitivity`` and ``python -m psvit.search`` are thin Hydra entry
points over these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from psvit import allocation, checkpoint
from psvit.budget import Bits, MemoryModel, select_groups
from psvit.config import config_sections
from psvit.cost import CostReport, cost_report
from psvit.prune import Group, PruneConstraints, list_groups, prune
from psvit.quant import FLOAT_BITS, layers_for, quantization_aware, quantize_weights
from psvit.report import ResultRow
from psvit.sensitivity import SensitivitySettings, SensitivityTable, get_sensitivity, recalibrated
from psvit.sensitivity.analysis import importance_batches
from psvit.train.base import BaseModel, get_base_model, sample_images
from psvit.train.compute import Compute
from psvit.train.loop import best_epoch, evaluate, train_model


@dataclass
class Setup:
    """The base model, the enabled channel groups, the constraints and the exact memory model."""

    cfg: DictConfig
    base: BaseModel
    groups: list[Group]
    constraints: PruneConstraints
    memory: MemoryModel
    compute: Compute

    @property
    def importance(self) -> str:
        return self.cfg.prune.importance

    @property
    def data_cfg(self) -> dict[str, Any]:
        return config_sections(self.cfg, "data")[0]


def plan(cfg: DictConfig) -> tuple[PruneConstraints, list[str]]:
    """Validate the prune config cheaply (before any training): constraints and enabled groups/kinds."""
    prune_cfg = config_sections(cfg, "prune")[0]
    return PruneConstraints(**prune_cfg["constraints"]), list(prune_cfg["enabled"])


def compute_of(cfg: DictConfig) -> Compute:
    """The :class:`Compute` of the ``device`` option and the ``compute`` config group."""
    return Compute.from_options(cfg.device, config_sections(cfg, "compute")[0])


def setup(cfg: DictConfig) -> Setup:
    """Train or reuse the cached base model and build the memory model for its enabled groups."""
    compute = compute_of(cfg)
    model_cfg, data_cfg, train_cfg = config_sections(cfg, "model", "data", "train")
    base = get_base_model(
        model_cfg, data_cfg, train_cfg, seed=cfg.seed, cache_dir=cfg.cache_dir, compute=compute, progress=cfg.progress
    )
    return setup_for(cfg, base, compute)


def setup_for(cfg: DictConfig, base: BaseModel, compute: Compute) -> Setup:
    """The :class:`Setup` of a base model in hand: its enabled groups and their exact memory model."""
    constraints, enabled = plan(cfg)
    groups = select_groups(list_groups(base.model), enabled)
    memory = MemoryModel(base.model_name, base.config, constraints)
    return Setup(cfg, base, groups, constraints, memory, compute)


def sensitivity_settings(cfg: DictConfig) -> SensitivitySettings:
    return SensitivitySettings(
        grid=tuple(float(r) for r in cfg.sensitivity.grid),
        importance=cfg.prune.importance,
        recalibration_batches=int(cfg.prune.bn_recalibration_batches),
        batch_size=int(cfg.sensitivity.batch_size),
        seed=int(cfg.seed),
        val_fraction=float(cfg.sensitivity.val_fraction),
        bits=tuple(sorted({int(b) for b in cfg.sensitivity.get("bits", ()) if int(b) < 32}, reverse=True)),
    )


def sensitivity(s: Setup) -> tuple[SensitivityTable, bool]:
    """The (cached) sensitivity table of the enabled groups; and whether it came from the cache."""
    return get_sensitivity(
        s.base,
        s.groups,
        s.memory,
        s.constraints,
        sensitivity_settings(s.cfg),
        data_cfg=s.data_cfg,
        cache_dir=s.cfg.cache_dir,
        compute=s.compute,
        progress=s.cfg.progress,
    )


def one_shot_bits(s: Setup) -> dict[str, int] | None:
    """``prune.bits`` (the one-shot commands' bit-width) for every enabled group, or None for float32 (32)."""
    bits = int(s.cfg.prune.get("bits", FLOAT_BITS))
    return {g.name: bits for g in s.groups} if bits < FLOAT_BITS else None


def allocate(s: Setup) -> tuple[dict[str, float], str]:
    """Keep ratios per group for the configured ``strategy`` at ``+budget`` or ``+ratio``, weights at ``prune.bits``
    (:func:`psvit.allocation.allocate`, the sensitivity table computed or read from the cache only when the
    strategy needs it); and a note on how they were found."""
    cached: list[bool] = []

    def table() -> SensitivityTable:
        found, from_cache = sensitivity(s)
        cached.append(from_cache)
        return found

    strategy = s.cfg.strategy
    ratios, note = allocation.allocate(
        strategy.name,
        s.memory,
        s.groups,
        budget=s.cfg.get("budget"),
        ratio=s.cfg.get("ratio"),
        bits=one_shot_bits(s),
        sensitivity=table,
        step=strategy.get("step", allocation.PSVIT_STEP),
        tolerance=strategy.get("tolerance", allocation.LARGEST_FIRST_TOLERANCE),
    )
    if cached:
        note = "sensitivity from cache" if cached[0] else "sensitivity computed"
    return ratios, note


def write_sensitivity(table: SensitivityTable, out_dir: Path) -> list[Path]:
    """The table as CSV and JSON, and its plot as PNG, in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        table.to_csv(out_dir / "sensitivity.csv"),
        table.to_json(out_dir / "sensitivity.json"),
        table.plot(out_dir / "sensitivity.png"),
    ]


def pruned_model(s: Setup, ratios: dict[str, float], *, recalibrate_bn: bool = True, bits: Bits = None) -> nn.Module:
    """The base model pruned with ``ratios`` (importance from config), its weights quantized at the group
    bit-widths ``bits`` (if any), then (``recalibrate_bn``) BatchNorm-recalibrated."""
    settings = sensitivity_settings(s.cfg)
    data = importance_batches(s.base.splits, settings, s.compute)
    model = prune(s.base.model, ratios, s.importance, s.constraints, data).eval()
    if bits:
        quantize_weights(model, layers_for(list_groups(model), bits))
    return recalibrate(s, model) if recalibrate_bn else model


def recalibrate(s: Setup, model: nn.Module) -> nn.Module:
    """``model`` with its BatchNorm statistics re-estimated on training batches, if enabled in the config."""
    settings = sensitivity_settings(s.cfg)
    if settings.recalibration_batches:
        recalibrated(model, s.base.splits, settings, s.compute)
    return model


def recover(
    s: Setup, model: nn.Module, epochs: int, *, val_set: Any = None, progress: bool = False, desc: str = "recover"
) -> list[dict[str, float]]:
    """Fine-tune ``model`` in place with the ``finetune`` settings for ``epochs``: quantization-aware when its
    weights are quantized, distilled from the unpruned base when ``finetune.kd_weight > 0``, and (with a
    ``val_set``) ending on its best epoch, the starting model counting as epoch 0."""
    settings = {k: v for k, v in config_sections(s.cfg, "finetune")[0].items() if k != "epochs"}
    teacher = s.base.model if settings.get("kd_weight", 0.0) > 0 else None
    with quantization_aware(model):
        return train_model(
            model,
            s.base.splits.train,
            epochs=epochs,
            seed=s.cfg.seed,
            compute=s.compute,
            progress=progress,
            desc=desc,
            teacher=teacher,
            val_set=val_set,
            **settings,
        )


@dataclass
class Finished:
    """A pruned (and possibly fine-tuned) model with its paper-table row, cost report and checkpoint;
    ``history`` holds the fine-tune's per-epoch stats (epoch 0: the model before it)."""

    model: nn.Module
    ratios: dict[str, float]
    row: ResultRow
    cost: CostReport
    checkpoint: Path
    bits: dict[str, int]
    history: list[dict[str, float]]


def finish(
    s: Setup, ratios: dict[str, float], out_dir: Path, *, desc: str = "fine-tune", bits: Bits = None
) -> Finished:
    """Prune with ``ratios`` (and quantize at ``bits``), report test accuracy before and after fine-tuning
    (:func:`recover` on the validation split), and save the checkpoint."""
    cfg = s.cfg
    model = pruned_model(s, ratios, bits=bits)
    pruned_acc = evaluate(model, s.base.splits.test, s.compute)
    epochs = config_sections(cfg, "finetune")[0]["epochs"]
    finetuned_acc, history = None, []
    if epochs > 0:
        history = recover(s, model, epochs, val_set=s.base.splits.val, progress=cfg.progress, desc=desc)
        best = best_epoch(history)
        print(
            f"fine-tune: kept epoch {best['epoch']} of {epochs} (val acc {best['val_acc']:.4f}; "
            f"epoch 0, before fine-tuning: {history[0]['val_acc']:.4f})"
        )
        finetuned_acc = evaluate(model, s.base.splits.test, s.compute)
    model = model.eval()
    cost = cost_report(model, sample_images(s.base.splits, s.compute), compute=s.compute)
    row = ResultRow(
        original_acc=s.base.test_acc,
        pruned_acc=pruned_acc,
        finetuned_acc=finetuned_acc,
        memory_saving=s.memory.saving(ratios, bits),
        params=cost.params,
        flops=cost.flops,
        energy_mj=cost.energy_mj,
    )
    meta = {
        "ratios": ratios,
        "bits": dict(bits or {}),
        "base": s.base.path.name,
        "test_acc": finetuned_acc if finetuned_acc is not None else pruned_acc,
        "row": row.metrics(),
        "data": {**s.data_cfg, "in_channels": s.base.splits.in_channels},
    }
    path = checkpoint.save(model, out_dir / "pruned.pt", meta=meta)
    return Finished(model, ratios, row, cost, path, dict(bits or {}), history)
