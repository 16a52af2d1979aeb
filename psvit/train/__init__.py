from psvit.train.compute import Compute, resolve_device
from psvit.train.loop import evaluate, predict, seed_everything, train_model

__all__ = ["Compute", "evaluate", "predict", "resolve_device", "seed_everything", "train_model"]
