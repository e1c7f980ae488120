"""Kubeflow PyTorchJob: one process per pod with MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK (and KUBERNETES_PORT)
is detected as Lightning's KubeflowEnvironment, and 2 such processes on one simulated node give one process's outputs."""

import os
import subprocess
import sys

from lightning.fabric.plugins.environments import KubeflowEnvironment
from lightning.pytorch.strategies import DDPStrategy

from tests.integration.test_end_to_end import TIMEOUT_S, cli, outputs, run, write_config
from tests.integration.test_slurm import build_trainer, free_port
from tests.integration.reliability.test_hangs import REPO

LAUNCHERS = ("SLURM_", "TORCHELASTIC", "LOCAL_", "GROUP_")


def pod_env(rank: int, world: int, port: int) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHERS)}
    return {**clean, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "KUBERNETES_PORT": "tcp://10.96.0.1:443",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world), "RANK": str(rank)}


def test_the_pytorchjob_variables_select_the_kubeflow_environment(tiny_model, tiny_tasks, monkeypatch):
    for key in [k for k in os.environ if k.startswith(LAUNCHERS)]:
        monkeypatch.delenv(key)
    for key, value in pod_env(1, 2, free_port()).items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(tiny_model, tiny_tasks)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, KubeflowEnvironment) and isinstance(trainer.strategy, DDPStrategy)
    assert (trainer.world_size, trainer.global_rank, trainer.num_nodes, trainer.num_devices) == (2, 1, 2, 1)


def test_without_kubernetes_there_is_no_kubeflow_environment(tiny_model, tiny_tasks, monkeypatch):
    for key in [k for k in os.environ if k.startswith(LAUNCHERS) or k == "KUBERNETES_PORT"]:
        monkeypatch.delenv(key)
    trainer = build_trainer(tiny_model, tiny_tasks)
    assert not isinstance(trainer._accelerator_connector.cluster_environment, KubeflowEnvironment)


def test_two_pods_match_one_process(tmp_path, tiny_model, tiny_tasks):
    config = write_config(tmp_path, tiny_model, tiny_tasks)
    run(cli(config, tmp_path / "one"), tmp_path)
    port = free_port()
    procs = [subprocess.Popen(cli(config, tmp_path / "pods"), cwd=tmp_path, env=pod_env(rank, 2, port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=TIMEOUT_S)
        finally:
            proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
    one, pods = outputs(tmp_path / "one"), outputs(tmp_path / "pods")
    assert pods["samples"] == one["samples"] and pods["results"] == one["results"] and pods["doc"]["world_size"] == 2
