"""The four tasks the engine runs (DESIGN.md, "The engine: one loop, four tasks"): each says what
differs (data, loss, predictor, evaluator, files); `seglab.engine` holds the one training loop, the one
evaluation loop and the one predict-to-files loop that take any of them."""
from .base import Evaluator, Task, Writer
from .instance import InstanceTask
from .joint import JointTask
from .panoptic import PanopticTask
from .semantic import SemanticTask

TASKS: dict[str, Task] = {"semantic": SemanticTask(), "joint": JointTask(), "instance": InstanceTask(),
                          "panoptic": PanopticTask()}


def task_for_model(name: str) -> Task:
    """The task of a registered model entrypoint (its registry task)."""
    from ..registry import model_task

    return TASKS[model_task(name)]


__all__ = ["Task", "Evaluator", "Writer", "TASKS", "task_for_model", "SemanticTask", "JointTask", "InstanceTask",
           "PanopticTask"]
