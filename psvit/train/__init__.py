"""Training, fine-tuning and evaluation, and the cached base model."""

from psvit.train.loop import evaluate, predict, resolve_device, seed_everything, train_model

__all__ = ["evaluate", "predict", "resolve_device", "seed_everything", "train_model"]
