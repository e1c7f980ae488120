"""The cluster a run is started by: SLURM requeue without a model checkpoint, and Kubeflow's PyTorchJob.

SLURM: Lightning's own auto-requeue (`SLURMEnvironment(auto_requeue=True)`, what it detects by default) answers
the scheduler's warning signal (SIGUSR1) by saving an "hpc" checkpoint of the whole model in the working folder,
then `scontrol requeue`. An evaluation has nothing to checkpoint: every finished batch is already fsynced in the
response store, and the requeued job resumes from it. So the run gets the SLURM environment with auto_requeue off,
and `SlurmRequeue` answers the signal instead: global rank 0 requeues the job, then the run stops as a preemption
does (SIGTERM: every rank ends within seconds, finished batches kept); the other ranks ignore the signal.

Kubeflow: a PyTorchJob starts one process per pod with MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK set
(KUBERNETES_PORT is set in every pod). Lightning does not detect it; here it is, unless another launcher
(torchrun, Lightning's own, SLURM) set up the process.
"""

import os
import re
import signal
import subprocess
import threading
from typing import Any, Optional

from lightning.fabric.plugins.environments import ClusterEnvironment, KubeflowEnvironment, SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer

from lmm_lightning.errors import InputError

KUBEFLOW_VARIABLES = ("KUBERNETES_PORT", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")
REQUEUE_TIMEOUT_S = 60.0


def as_list(plugins: Any) -> list:
    if plugins is None:
        return []
    return list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]


def kubeflow_launched() -> bool:
    """One process of a Kubeflow PyTorchJob: its variables set, and no torchrun, Lightning or SLURM around it."""
    others = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "SLURM_NTASKS")
    return all(v in os.environ for v in KUBEFLOW_VARIABLES) and not any(v in os.environ for v in others)


def cluster_plugins(plugins: Any) -> list:
    """The trainer's plugins with the cluster environment this run needs: a SLURM environment never checkpoints
    the model on requeue (the user's, if given, is switched off too); Kubeflow's where a PyTorchJob started us."""
    given = as_list(plugins)
    environments = [p for p in given if isinstance(p, ClusterEnvironment)]
    for environment in environments:
        if isinstance(environment, SLURMEnvironment):
            environment.auto_requeue = False
    if environments:
        return given
    if kubeflow_launched():
        return [*given, KubeflowEnvironment()]
    if SLURMEnvironment.detect() and "TORCHELASTIC_RUN_ID" not in os.environ:  # torchrun in a SLURM job: Lightning's
        try:  # TorchElastic environment, and no requeue handler
            return [*given, SLURMEnvironment(auto_requeue=False)]
        except RuntimeError as err:  # SLURM variables that contradict each other (--ntasks without --ntasks-per-node)
            raise InputError(f"SLURM: {err}") from None
    return given


def cluster_environment(plugins: list) -> Optional[ClusterEnvironment]:
    return next((p for p in plugins if isinstance(p, ClusterEnvironment)), None)


def slurm_job_id() -> Optional[str]:
    """The id `scontrol requeue` takes: `<array job>_<task>` for an array job's task, else the job's."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}" if array_job else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue(job: str) -> tuple[bool, str]:
    """`scontrol requeue JOB`: (whether it worked, what to tell the user)."""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=REQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"`scontrol requeue {job}` failed ({err})"
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())
        return False, f"`scontrol requeue {job}` exited with {done.returncode}" + (f": {said}" if said else "")
    return True, f"requeued job {job} (`scontrol requeue {job}`)"


class SlurmRequeue(Callback):
    """SLURM's warning signal (SIGUSR1, e.g. `#SBATCH --signal=USR1@120`) ends this run for a requeued job that
    resumes from the response store: rank 0 requeues, then stops every rank as SIGTERM does. No checkpoint."""

    def __init__(self, requeue_signal: int = signal.SIGUSR1) -> None:
        self.requeue_signal = requeue_signal
        self.rank = 0
        self.requeued = False
        self._previous: Any = None
        self._installed = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.rank = trainer.global_rank
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._previous = signal.signal(self.requeue_signal, self._on_signal)
            self._installed = True

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(self.requeue_signal, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Rank 0 requeues once; the SIGTERM after it goes to the fail-fast handler, which ends every rank. Where
        the requeue fails the run goes on (and says so): SLURM will end it at its time limit."""
        if self.rank != 0 or self.requeued:
            return
        job = slurm_job_id()
        done, message = requeue(job) if job else (False, "no SLURM_JOB_ID to requeue")
        name = signal.Signals(signum).name
        if not done:
            os.write(2, f"lmm-lightning: SLURM sent {name} but {message}; the run goes on\n".encode())
            return
        self.requeued = True
        os.write(2, f"lmm-lightning: SLURM sent {name}: {message}; the requeued job resumes from the response store\n".encode())
        os.kill(os.getpid(), signal.SIGTERM)
