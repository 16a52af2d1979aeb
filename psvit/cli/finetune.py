"""``python -m psvit.finetune checkpoint=<pruned.pt> [teacher=<base.pt>]``: fine-tune a saved model (recovery after
pruning) on the data it was made with, keep its best validation epoch, and write ``finetuned.pt``.

Data-parallel over the GPUs of a node (or CPU processes, backend gloo) when launched by ``torchrun``::

    torchrun --nproc_per_node=8 -m psvit.finetune checkpoint=pruned.pt teacher=base.pt finetune.epochs=3

Each process takes its slice of every global batch of ``processes * finetune.accumulate * finetune.batch_size``
images (:mod:`psvit.train.distributed`). Rank 0 prints, evaluates and writes; the other ranks leave nothing in
Hydra's output folder. Prints the test accuracy before and after, and the path of ``finetuned.pt`` (the same
``meta`` as the checkpoint, with the fine-tune's ``history`` and the new ``test_acc``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from psvit.cli.launcher import hydra_main
from psvit.errors import CheckpointError, ConfigError

#: Overrides for ranks > 0 under torchrun: no ``.hydra/`` record and no log file of their own.
QUIET_RANK = ("hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none")
#: What ``finetuned.pt`` is called, in Hydra's output folder.
OUTPUT_NAME = "finetuned.pt"


def check_request(cfg: DictConfig) -> None:
    """One-line errors, before anything is read or written, for a missing checkpoint or teacher."""
    from psvit.checkpoint import existing

    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint is None:
        raise ConfigError("name the model: checkpoint=<path to a psvit checkpoint, e.g. pruned.pt>")
    existing(cfg.checkpoint)
    if cfg.get("teacher") is not None and not Path(cfg.teacher).expanduser().is_file():
        raise CheckpointError(f"teacher checkpoint not found: {cfg.teacher}")


@hydra_main("finetune")
def run(cfg: DictConfig) -> None:
    check_request(cfg)
    from psvit.train import distributed
    from psvit.train.compute import resolve_device

    device = distributed.init_from_env(resolve_device(cfg.device))
    try:
        finetune(cfg, str(device))
        distributed.barrier()  # rank 0 has written its files
    finally:
        distributed.cleanup()
    if distributed.env_rank() > 0:
        remove_if_empty(Path(HydraConfig.get().runtime.output_dir))


def finetune(cfg: DictConfig, device: str) -> None:
    from psvit import checkpoint
    from psvit.config import config_sections
    from psvit.export.source import open_source
    from psvit.quant import quantization_aware
    from psvit.train import distributed
    from psvit.train.compute import Compute
    from psvit.train.loop import best_epoch, evaluate, train_model

    compute = Compute.from_options(device, config_sections(cfg, "compute")[0])
    main = distributed.is_main()
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else None
    source = open_source(cfg.checkpoint, data)
    source.images(1)  # a one-line error unless the data gives the model's input shape
    splits = source.splits()
    model = source.model
    teacher = checkpoint.load(cfg.teacher) if cfg.get("teacher") is not None else None
    settings = config_sections(cfg, "finetune")[0]
    epochs = settings.pop("epochs")
    if teacher is None:
        settings["kd_weight"] = 0.0
    world = distributed.world_size()
    if main:
        print(compute.describe() + f", processes: {world}")
        print(
            f"{splits.describe()}\nglobal batch: {world * settings['accumulate'] * settings['batch_size']} "
            f"({world} process(es) x accumulate {settings['accumulate']} x batch {settings['batch_size']})"
            + (f"; distilled from {cfg.teacher}" if teacher is not None and settings["kd_weight"] > 0 else "")
        )
    before = evaluate(model, splits.test, compute) if main else None
    with quantization_aware(model):
        history = train_model(
            model,
            splits.train,
            epochs=epochs,
            seed=cfg.seed,
            compute=compute,
            progress=cfg.progress,
            desc="fine-tune",
            teacher=teacher,
            val_set=splits.val,
            **settings,
        )
    if not main:
        return
    best = best_epoch(history)
    after = evaluate(model, splits.test, compute)
    path = checkpoint.save(
        model,
        Path(HydraConfig.get().runtime.output_dir) / OUTPUT_NAME,
        meta={**source.meta, "test_acc": after, "history": history},
    )
    print(
        f"fine-tune: kept epoch {best['epoch']} of {epochs} (val acc {best['val_acc']:.4f}; "
        f"epoch 0, before fine-tuning: {history[0]['val_acc']:.4f})"
    )
    print(f"test accuracy: {before:.4f} before, {after:.4f} after fine-tuning")
    print(f"finetuned checkpoint: {path}")


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and its parents up to the working directory while they are empty (a rank > 0's
    output folder, when its clock gave it another name than rank 0's)."""
    start = Path.cwd().resolve()
    folder = folder.resolve()
    while start in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent


def main() -> None:
    """The command; under ``torchrun`` ranks > 0 run it with :data:`QUIET_RANK` added."""
    from psvit.train.distributed import env_rank

    if env_rank() > 0:
        sys.argv += [o for o in QUIET_RANK if o.split("=")[0] not in {a.split("=")[0] for a in sys.argv[1:]}]
    run()
