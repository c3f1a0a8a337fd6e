"""Training loop, evaluation, checkpoints and schedules."""
from .evaluate import evaluate
from .trainer import TrainResult, build_datasets, train

__all__ = ["evaluate", "train", "TrainResult", "build_datasets"]
