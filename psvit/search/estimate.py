"""Know the cost before paying it: a search's wall time, estimated from a few timed batches on this device.

Two rates are measured on the configured model (random weights, the data's real images): seconds per image of an
inference forward (at the evaluation batch size, capped) and of a training step (forward + backward). The same
two, and one BatchNorm recalibration as a trial runs it, are measured on a *typical trial model*: the configured
model narrowed uniformly to the budget's saving (at the smallest searched bit-width, the least narrowing; without
a budget, to half the largest saving, the middle of the front the trials map). Every stage of the search is then
a count of images times one of these rates: base training (if not cached) and the sensitivity cells (if not
cached; the bits grid's too) at the base model's, the prior and search trials at their fidelities with their
recovery epochs (each training step also runs the distillation teacher's forward, at the base model's rate) and
the cost report of every full-fidelity trial, the final fine-tune (teacher forwards, a validation pass per epoch)
and its cost report, and (``search.export``) the chosen model's export, parity and latency checks and MLflow Model
at the trial model's; the cost reports' one-image forwards (the batch-1 latency) at the trial model's batch-1
rate. Each trial adds ``TRIAL_BOOKKEEPING`` seconds (sampling, MLflow, Optuna). The timing itself is a stage too,
already spent when the estimate is printed. Python's start-up and imports are not counted (see
``bench/scale.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from spikingjelly.activation_based import functional
from torch import nn

from psvit.allocation.uniform import uniform_for_budget
from psvit.budget import MemoryModel, select_groups
from psvit.config import config_sections
from psvit.cost import report_forward_images, report_single_forwards
from psvit.data import DataSplits
from psvit.models import create_model
from psvit.prune import Group, list_groups
from psvit.search.settings import bit_choices, recovery_epochs
from psvit.sensitivity import SensitivitySettings, recalibrated, sensitivity_cache_path
from psvit.train.base import base_cache_path, base_splits, model_config, sample_size
from psvit.train.compute import Compute, device_name
from psvit.workflow import compute_of, plan, sensitivity_settings

#: Images per timed batch at most (a 224-px model's batch of 256 would take minutes on a CPU).
MAX_TIMED_BATCH = 32
#: A rate is timed over passes until MIN_TIMED seconds (at most MAX_PASSES after the warm-up); a pass of more than
#: LONG_PASS seconds is not repeated.
MIN_TIMED, MAX_PASSES, LONG_PASS = 1.0, 10, 2.0
#: Seconds per trial outside its model's forwards: sampling, the MLflow child run, the Optuna storage (about 0.5 s
#: per trial in the main job's warm run on a 2-core CPU at commit d055a67: 24 trials in 60 s, of which 49 s in
#: pruning, BN recalibration, evaluation and the cost report, by the trials' own ``seconds``).
TRIAL_BOOKKEEPING = 0.5


@dataclass(frozen=True)
class Estimate:
    """Estimated seconds per stage (0 for a stage served from the cache) and the measured per-image rates."""

    device: str
    eval_s_per_image: float
    train_s_per_image: float
    stages: dict[str, float]
    trial_eval_s_per_image: float
    trial_train_s_per_image: float

    @property
    def total_seconds(self) -> float:
        return sum(self.stages.values())

    def format(self) -> str:
        """One line for the total, then one per stage."""
        lines = [
            f"estimate: ~{human(self.total_seconds)} on {self.device} "
            f"({1e3 * self.eval_s_per_image:.2f} ms/image inference, "
            f"{1e3 * self.train_s_per_image:.2f} ms/image training, measured on a few batches; a typical trial's "
            f"model: {1e3 * self.trial_eval_s_per_image:.2f} and {1e3 * self.trial_train_s_per_image:.2f})"
        ]
        lines += [f"  {name:<14} ~{human(seconds)}" for name, seconds in self.stages.items()]
        return "\n".join(lines)


def human(seconds: float) -> str:
    """``42 s``, ``7.5 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def seconds_per_image(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, compute: Compute, train: bool
) -> float:
    """Median seconds per image of a forward (``train``: forward + backward) of the batch, over passes after a
    warm-up until ``MIN_TIMED`` seconds are timed (at most ``MAX_PASSES``). A pass of more than ``LONG_PASS``
    seconds (a 224-px model on a CPU) ends the timing: its one-time costs are milliseconds, so the warm-up alone,
    if that long, is the measurement."""
    model.train(train)
    times: list[float] = []
    while len(times) <= MAX_PASSES:
        start = time.perf_counter()
        with torch.set_grad_enabled(train), compute.autocast():
            loss = nn.functional.cross_entropy(model(images).float(), labels)
        if train:
            loss.backward()
        if compute.device.type == "cuda":
            torch.cuda.synchronize(compute.device)
        times.append(time.perf_counter() - start)
        functional.reset_net(model)
        model.zero_grad(set_to_none=True)
        if times[-1] > LONG_PASS or sum(times[1:]) >= MIN_TIMED:
            break
    timed = sorted(times[1:] or times)
    return timed[len(timed) // 2] / len(images)


def timed_recalibration(model: nn.Module, splits: DataSplits, settings: SensitivitySettings, compute: Compute) -> float:
    """Seconds of one BatchNorm recalibration of ``model`` (0 when it is off), as a trial runs it."""
    if not settings.recalibration_batches:
        return 0.0
    start = time.perf_counter()
    recalibrated(model, splits, settings, compute)
    if compute.device.type == "cuda":
        torch.cuda.synchronize(compute.device)
    return time.perf_counter() - start


def trial_ratios(cfg: DictConfig, memory: MemoryModel, groups: list[Group]) -> dict[str, float]:
    """Keep ratios of a typical trial's model: uniform at the budget's saving (at the smallest searched bit-width:
    the least narrowing), or without a budget at half the largest saving (the middle of the mapped front)."""
    low = min(bit_choices(cfg))
    bits = {g.name: low for g in groups}
    budget = cfg.get("budget")
    target = float(budget) if budget is not None else memory.max_saving(groups, bits) / 2
    return uniform_for_budget(memory, groups, target, bits=bits)


def estimate_search(cfg: DictConfig) -> Estimate:
    """The estimated wall time of ``python -m psvit.search`` with ``cfg`` on its device (see the module doc)."""
    compute = compute_of(cfg)
    model_cfg, data_cfg, train_cfg, finetune_cfg = config_sections(cfg, "model", "data", "train", "finetune")
    splits = base_splits(model_cfg, data_cfg)  # a pretrained model's splits: held-out validation and test
    started = time.perf_counter()
    name, base_config = model_cfg.get("name", "spikformer"), model_config(model_cfg, splits)
    model = create_model(name, **base_config).to(compute.device)
    n = min(len(splits.train), MAX_TIMED_BATCH, compute.eval_batch_size)
    images = torch.stack([splits.train[i][0] for i in range(n)]).to(compute.device)
    labels = torch.as_tensor([splits.train[i][1] for i in range(n)], device=compute.device)
    infer = seconds_per_image(model, images, labels, compute, train=False)
    train = seconds_per_image(model, images, labels, compute, train=True)
    constraints, enabled = plan(cfg)
    groups = select_groups(list_groups(model), enabled)
    memory = MemoryModel(name, base_config, constraints)
    trial_model = create_model(name, **memory.config(trial_ratios(cfg, memory, groups))).to(compute.device)
    trial_infer = seconds_per_image(trial_model, images, labels, compute, train=False)
    trial_train = seconds_per_image(trial_model, images, labels, compute, train=True)
    trial_single = seconds_per_image(trial_model, images[:1], labels[:1], compute, train=False)  # batch-1 latency
    sc, settings = cfg.search, sensitivity_settings(cfg)
    # BN recalibration forwards in train mode (spikingjelly's training LIF on a CPU): timed as a trial runs it
    trial_recalibration = timed_recalibration(trial_model, splits, settings, compute)
    recalibration = trial_recalibration * infer / trial_infer  # the base model's (sensitivity cells)

    n_train, n_val, n_test = len(splits.train), len(splits.val), len(splits.test)
    n_subset = len(splits.val_subset(float(sc.fidelity.subset), cfg.seed))
    base_path = base_cache_path(model_cfg, data_cfg, train_cfg, splits, seed=cfg.seed, cache_dir=cfg.cache_dir)
    base_cached = base_path.is_file()
    tested = (n_val + n_test) * infer  # a new base model's validation and test accuracy
    trained = 0.0 if model_cfg.get("checkpoint") else train_cfg["epochs"] * n_train * train
    stages = {"base model": 0.0 if base_cached else trained + tested}

    table = sensitivity_cache_path(base_path, groups, constraints, settings, data_cfg=data_cfg, cache_dir=cfg.cache_dir)
    cells = len(groups) * (len(settings.grid) + len(settings.bits))
    stages["sensitivity"] = 0.0 if base_cached and table.is_file() else cells * (recalibration + n_subset * infer)

    n_trials = int(sc.n_trials)  # the priors are among them (a strategy sampler: one per budget of its ladder)
    promoted = 1.0 if n_subset == n_val else float(sc.fidelity.promote)
    n_sample = sample_size(splits, compute)  # the cost report's batch

    def report(latency_repeats: int) -> float:  # the cost report: batched forwards, then one-image ones
        single = report_single_forwards(latency_repeats)
        return (report_forward_images(n_sample, latency_repeats) - single) * trial_infer + single * trial_single

    teacher = infer if finetune_cfg.get("kd_weight", 0) > 0 else 0.0  # the base model's forward at every step
    step = trial_train + teacher
    full = n_val * trial_infer + recovery_epochs(cfg) * n_train * step + report(int(sc.latency_repeats))
    subset = n_subset * trial_infer if n_subset < n_val else 0.0
    per_trial = TRIAL_BOOKKEEPING + trial_recalibration + subset + promoted * full
    stages["trials"] = n_trials * per_trial
    epochs = finetune_cfg["epochs"]
    stages["fine-tune"] = (
        (
            epochs * n_train * step
            + (epochs + 1) * n_val * trial_infer
            + 2 * n_test * trial_infer
            + report(10)  # psvit.workflow.finish's report, at cost_report's default repeats
        )
        if sc.finalize
        else 0.0
    )
    if sc.finalize and sc.get("export", False):
        # the chosen model out (psvit.search.publish): tracing the ONNX graph, ~8 s per block on a 2-core CPU
        # (measured: 16 s for the default model, depth 2; 60-80 s with parity for Spikformer-8-512), parity on up
        # to 256 test images in three runtimes, latency at batch 1 and 64 (2 warm-up + latency_repeats forwards,
        # torch eager and onnxruntime), and the MLflow Model (~1 s). publish.PARITY_IMAGES and LATENCY_BATCHES
        # (not imported: that module's imports are the search's end, not its start)
        parity_images, latency_batches = 256, (1, 64)
        forwards = 2 * (2 + int(sc.latency_repeats))  # per batch size: two runtimes, warm-up and timed
        batched = 3 * min(parity_images, n_test) + forwards * sum(b for b in latency_batches if b > 1)
        singles = forwards * latency_batches.count(1)  # one-image forwards, at the batch-1 rate
        traced = 8.0 * int(model.config.get("depth", 2)) + 1.0  # the graph and the MLflow Model
        stages["export"] = traced + batched * trial_infer + singles * trial_single
    stages["timing (done)"] = time.perf_counter() - started  # the timing above: part of the command's wall time
    return Estimate(device_name(compute.device), infer, train, stages, trial_infer, trial_train)
