"""Outputs: results.json and the samples files of one run are one unit, written durably and plainly.

A reader never sees files of two runs mixed (results.json goes first, is written last and lists
its samples files with their digests); the files get the user's normal permissions; each is fsynced
before the rename that publishes it; a full disk is one clear line and leaves no partial file.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lmm_lightning.cli import main
from lmm_lightning.evaluation import results
from tests.integration.reliability.test_resume import ENV, Config, assert_same_outputs, evaluate, fresh, write_config  # noqa: F401 (fresh: a fixture)

TASKS = ["tiny_mc", "tiny_gen"]


def listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_file())


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask 022", "umask 027"])
def test_outputs_get_the_users_normal_permissions(umask, mode, tmp_path, tiny_tasks):
    previous = os.umask(umask)
    try:
        evaluate(tmp_path / "out", tiny_tasks)
    finally:
        os.umask(previous)
    for name in ["results.json"] + [f"samples_{t}.jsonl" for t in TASKS]:
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == mode, name  # today: 0600


def test_each_output_is_fsynced_before_the_rename_that_publishes_it(tmp_path, tiny_tasks, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recording_replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)
    published = [e for e in events if e[0] == "replace" and Path(e[2]).parent == out]
    plots = [e for e in published if Path(e[2]).name in results.PLOT_FILES]
    assert [Path(e[2]).name for e in published[-len(plots):]] == list(results.PLOT_FILES)  # drawn from results.json, after it
    published = published[: -len(plots)]
    assert sorted(Path(e[2]).name for e in published) == sorted(["results.json"] + [f"samples_{t}.jsonl" for t in TASKS])
    for event in published:
        before = events[: events.index(event)]
        assert ("fsync", event[1]) in before, event  # the data is on disk before its name points at it
        assert ("fsync", str(out)) in events[events.index(event) :]  # and the rename itself is made durable
    assert Path(published[-1][2]).name == "results.json"  # written last


def test_results_json_lists_the_samples_files_of_its_run(tmp_path, tiny_tasks):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)
    listed = json.loads((out / "results.json").read_text())["samples_files"]
    assert sorted(listed) == sorted(f"samples_{t}.jsonl" for t in TASKS)
    for name, entry in listed.items():
        data = (out / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_a_rerun_with_fewer_tasks_or_no_samples_leaves_no_samples_of_the_earlier_run(tmp_path, tiny_tasks):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)
    evaluate(out, tiny_tasks, Config(tasks=("tiny_mc",)))
    assert listing(out) == ["results.html", "results.json", "results.png", "samples_tiny_mc.jsonl"]  # today: samples_tiny_gen.jsonl of the first run stays
    evaluate(out, tiny_tasks, Config(tasks=("tiny_mc",)), log_samples=False)
    assert listing(out) == ["results.html", "results.json", "results.png"]  # the plots drawn from this results.json
    assert json.loads((out / "results.json").read_text())["samples_files"] == {}


KILL_AT_RESULTS = """
import os, signal, sys
from lmm_lightning.evaluation import results
write = results.write_atomic
def write_or_die(path, text):
    if path.name == "results.json":
        os.kill(os.getpid(), signal.SIGKILL)  # killed just before writing results.json
    write(path, text)
results.write_atomic = write_or_die
from lmm_lightning.cli import main
main(sys.argv[1:])
"""


def test_a_run_killed_before_results_json_over_an_earlier_run_leaves_no_mix(tmp_path, tiny_tasks, fresh):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks, Config(limit=5))  # an earlier, finished run in the folder
    earlier = {name: (out / name).read_bytes() for name in listing(out)}
    cfg = write_config(tmp_path, tiny_tasks, Config(limit=9))
    args = ["predict", "--config", str(cfg), "--evaluation.output_dir", str(out), "--evaluation.resume", "false"]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_RESULTS, *args], env=ENV, capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    assert not (out / "results.json").exists()  # today: the earlier results.json, beside the new samples
    for name in listing(out):
        assert (out / name).read_bytes() != earlier.get(name), name  # nothing of the earlier run is left
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    evaluate(out, tiny_tasks, Config(limit=9))  # the rerun completes the unit from the store
    assert_same_outputs(out, fresh(Config(limit=9)))


@pytest.mark.parametrize("failing", ["samples_tiny_gen.jsonl", "results.json"])
def test_a_full_disk_is_one_clear_line_and_leaves_no_partial_file(failing, tmp_path, tiny_tasks, fresh, monkeypatch, capsys):
    out = tmp_path / "out"
    evaluate(out, tiny_tasks)  # an earlier run's outputs, to be replaced
    write = results._write_file

    def disk_full(fd: int, data: bytes) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out / f".{failing}.")):
            write(fd, data[: len(data) // 2])  # half of it made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(fd, data)

    monkeypatch.setattr(results, "_write_file", disk_full)
    cfg = write_config(tmp_path, tiny_tasks, Config())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(cfg), "--evaluation.output_dir", str(out)])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("lmm-lightning: error:")]
    assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert f"cannot write {out / failing}: No space left on device" in errors[0]
    assert listing(out) == []  # no results.json, no partial or temporary file, nothing of the earlier run

    monkeypatch.setattr(results, "_write_file", write)  # room again: the rerun writes from the store
    evaluate(out, tiny_tasks)
    assert_same_outputs(out, fresh(Config()))
