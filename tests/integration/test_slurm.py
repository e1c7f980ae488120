"""SLURM's requeue signal mid-evaluation: no model checkpoint, `scontrol requeue <job>` once, the finished batches in
the store, and the requeued run resumes from them. Also: the trainer's SLURM environment never auto-requeues.

SLURM is simulated: two processes started as `srun` would (SLURM_PROCID, SLURM_NTASKS, ...), a fake `scontrol` on
PATH that records its arguments, and SIGUSR1 sent to every task as `#SBATCH --signal=USR1@120` does.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment

from lmm_lightning.cluster import SlurmRequeue, slurm_job_id
from lmm_lightning.data import BenchmarkDataModule
from lmm_lightning.lightning_cli import TRAINER_DEFAULTS, EvalCLI, command_line
from lmm_lightning.models import EvalModule
from tests.integration.reliability.test_hangs import REPO, write_config
from tests.fixtures.ports import free_port

JOB = "4242"
TOTAL_LINES = 2 * 8 * 4  # 2 ranks x 8 batches of 4 requests (tiny_mc + tiny_gen)




def slurm_env(rank: int, ntasks: int, port: int, bin_dir: Path) -> dict[str, str]:
    """What `srun --ntasks-per-node=N` sets for one task (and the fake scontrol first on PATH)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC", "LOCAL_", "GROUP_"))}
    return {
        **clean, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": JOB, "SLURM_JOB_NAME": "eval", "SLURM_NTASKS": str(ntasks), "SLURM_NTASKS_PER_NODE": str(ntasks),
        "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
        "SLURM_NODELIST": "127.0.0.1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    }


def fake_scontrol(folder: Path) -> tuple[Path, Path]:
    bin_dir, log = folder / "bin", folder / "scontrol.log"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    return bin_dir, log


def srun(cfg: Path, out: Path, ntasks: int, bin_dir: Path) -> list[subprocess.Popen]:
    port = free_port()
    command = [sys.executable, "-m", "lmm_lightning", "predict", "--config", str(cfg), "--evaluation.output_dir", str(out),
               "--trainer.devices", str(ntasks)]
    return [
        subprocess.Popen(command, env=slurm_env(rank, ntasks, port, bin_dir), cwd=out.parent, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
        for rank in range(ntasks)
    ]


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    """(exit code, stderr) of each task; whatever is left is killed."""
    results = []
    for proc in procs:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        results.append((proc.returncode, stderr))
    return results


def stored_lines(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (out / "store").glob("responses-rank*.jsonl"))


def test_sigusr1_requeues_without_a_checkpoint_and_the_rerun_resumes(tmp_path, tiny_model, tiny_tasks):
    bin_dir, log = fake_scontrol(tmp_path)
    out = tmp_path / "out"
    slow = write_config(tmp_path, tiny_model, tiny_tasks, delay_s=1.0)
    procs = srun(slow, out, 2, bin_dir)
    deadline = time.monotonic() + 180
    while stored_lines(out) < 2 * 4 and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    assert all(p.poll() is None for p in procs), finish(procs)
    for proc in procs:  # SLURM signals every task of the job
        os.kill(proc.pid, signal.SIGUSR1)
    runs = finish(procs)
    detail = "\n".join(err[-3000:] for _, err in runs)
    assert all(code == 128 + signal.SIGTERM for code, _ in runs), detail
    assert f"lmm-lightning: SLURM sent SIGUSR1: requeued job {JOB} (`scontrol requeue {JOB}`)" in runs[0][1], detail
    assert "killed by SIGUSR1" not in detail and "Traceback" not in detail, detail
    assert log.read_text().splitlines() == [f"requeue {JOB}"]  # once, by rank 0
    assert list(tmp_path.rglob("*.ckpt")) == [] and not (out / "results.json").exists()
    kept = stored_lines(out)
    assert 2 * 4 <= kept < TOTAL_LINES

    plain = write_config(tmp_path, tiny_model, tiny_tasks, model="lmm_lightning.models.HFCausalLM")
    (code0, err0), (code1, err1) = finish(srun(plain, out, 2, bin_dir))  # the requeued job, same command
    assert code0 == code1 == 0, err0[-3000:] + err1[-3000:]
    integrity = json.loads((out / "results.json").read_text())["integrity"]
    assert sum(t["resumed"] for t in integrity.values()) >= kept - 2 * 4  # (a batch cut mid-write is recomputed)
    assert log.read_text().splitlines() == [f"requeue {JOB}"] and list(tmp_path.rglob("*.ckpt")) == []


def build_trainer(tiny_model: Path, tiny_tasks: Path, *extra: str):
    args = ["--model", "lmm_lightning.models.HFCausalLM", "--model.pretrained", str(tiny_model),
            "--data", "lmm_lightning.data.BenchmarkDataModule", "--data.tasks", f"[{tiny_tasks / 'tiny_mc.yaml'}]",
            "--trainer.accelerator", "cpu", *extra]
    with command_line(args):
        return EvalCLI(EvalModule, BenchmarkDataModule, subclass_mode_model=True, subclass_mode_data=True,
                       save_config_callback=None, trainer_defaults=TRAINER_DEFAULTS, run=False).trainer


def test_under_slurm_the_trainer_never_auto_requeues_and_has_our_handler(tmp_path, tiny_model, tiny_tasks, monkeypatch):
    for key, value in slurm_env(0, 1, free_port(), tmp_path).items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(tiny_model, tiny_tasks)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    assert any(isinstance(c, SlurmRequeue) for c in trainer.callbacks)


def test_a_slurm_environment_the_user_gives_is_switched_off_too(tmp_path, tiny_model, tiny_tasks, monkeypatch):
    for key, value in slurm_env(0, 1, free_port(), tmp_path).items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(tiny_model, tiny_tasks, "--trainer.plugins", "lightning.pytorch.plugins.environments.SLURMEnvironment")
    assert trainer._accelerator_connector.cluster_environment.auto_requeue is False


def test_outside_slurm_there_is_no_requeue_handler(tiny_model, tiny_tasks, monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    trainer = build_trainer(tiny_model, tiny_tasks)
    assert not isinstance(trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
    assert not any(isinstance(c, SlurmRequeue) for c in trainer.callbacks)


def test_the_job_id_of_an_array_task(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert slurm_job_id() == "77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "70_3"
