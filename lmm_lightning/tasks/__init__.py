from lmm_lightning.tasks.registry import available_tasks, resolve_tasks
from lmm_lightning.tasks.spec import MetricSpec, TaskSpec, TaskSpecError, load_task_spec
from lmm_lightning.tasks.task import Task

__all__ = ["MetricSpec", "Task", "TaskSpec", "TaskSpecError", "available_tasks", "load_task_spec", "resolve_tasks"]
