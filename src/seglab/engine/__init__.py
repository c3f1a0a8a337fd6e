"""The engine: one training loop, one evaluation loop and one predict-to-files loop for every task
(`seglab.tasks`), on any device and under torchrun (`engine/runtime.py`); checkpoints and schedules."""
from .evaluation import (
    evaluate,
    evaluate_and_report,
    evaluate_checkpoint,
    evaluate_model,
    load_for_evaluation,
    run_evaluation,
)
from .loop import TrainResult, train
from .predict import load_predictor, predict_to_folder
from .runtime import Runtime, resolve_device


def build_datasets(cfg, *, train: bool = True):
    """(train set or None, val set) of the config, built by the task of its model."""
    from ..tasks import task_for_model

    return task_for_model(cfg.model.name).build_datasets(cfg, train=train)


__all__ = ["train", "TrainResult", "evaluate", "evaluate_and_report", "evaluate_checkpoint", "evaluate_model", "load_for_evaluation",
           "run_evaluation", "predict_to_folder", "load_predictor", "Runtime", "resolve_device", "build_datasets"]
