from lmm_lightning.tasks.registry import Resolved, available_tasks, resolve, resolve_tasks
from lmm_lightning.tasks.spec import GroupSpec, MetricSpec, OutputType, TaskSpec, TaskSpecError, load_spec, load_task_spec
from lmm_lightning.tasks.target import Target
from lmm_lightning.tasks.task import Task

__all__ = [
    "GroupSpec",
    "MetricSpec",
    "OutputType",
    "Resolved",
    "Target",
    "Task",
    "TaskSpec",
    "TaskSpecError",
    "available_tasks",
    "load_spec",
    "load_task_spec",
    "resolve",
    "resolve_tasks",
]
