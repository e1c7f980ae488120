"""`lmm-lightning compare`: paired differences, intervals and p-values on crafted results folders with known answers."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from lmm_lightning.compare import compare_runs, load_run, main, sign_flip_p_value
from lmm_lightning.evaluation.result import MetricKey


def write_run(folder: Path, tasks: dict[str, list[float]], key: str = "acc", filters: str = "none", order=None) -> Path:
    """A results folder with one metric per task and its per-document values (doc_id = position)."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for task, values in tasks.items():
        results[task] = {"alias": task, f"{key},{filters}": float(np.mean(values)), f"{key}_stderr,{filters}": 0.0}
        ids = order or range(len(values))
        record_key = key if filters == "none" else f"{key},{filters}"
        lines = [{"doc_id": i, "target": 0, record_key: values[i]} for i in ids]
        (folder / f"samples_{task}.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    doc = {"results": results, "groups": {}, "configs": {}, "versions": {}, "n-shot": {}, "higher_is_better": {}}
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


def exact_sign_flip_p(d: list[float]) -> float:
    """The p-value by enumerating all 2^n sign vectors."""
    d = np.asarray(d, dtype=float)
    observed = abs(d.mean())
    signs = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    return float(np.mean(np.abs(signs @ d / len(d)) >= observed - 1e-12))


def test_b_always_right_where_a_is_wrong(tmp_path):
    a = write_run(tmp_path / "a", {"t": [0.0] * 50})
    b = write_run(tmp_path / "b", {"t": [1.0] * 50})
    (row,), _ = compare_runs(load_run(a), load_run(b), iters=2000)
    assert (row.n, row.a, row.b, row.difference) == (50, 0.0, 1.0, 1.0)
    assert row.ci_lower == row.ci_upper == 1.0
    assert row.p_value == 1 / 2001  # never 0: the smallest Monte Carlo p-value


def test_identical_runs_have_no_difference(tmp_path):
    values = [1.0, 0.0, 1.0, 1.0, 0.0]
    a, b = write_run(tmp_path / "a", {"t": values}), write_run(tmp_path / "b", {"t": values})
    (row,), _ = compare_runs(load_run(a), load_run(b), iters=1000)
    assert row.difference == 0.0 and row.ci_lower == row.ci_upper == 0.0 and row.p_value == 1.0


@pytest.mark.parametrize(
    "d",
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0, -1], [0.5, -0.25, 1.0, 0.75, 0.5, 0.0, 0.25, -1.0, 2.0]],
)
def test_p_value_matches_exact_enumeration(d):
    exact = exact_sign_flip_p(d)
    estimate = sign_flip_p_value(np.array(d, dtype=float), iters=200_000, seed=3)
    assert abs(estimate - exact) < 0.004, (estimate, exact)


def test_five_wins_out_of_five_is_the_two_sided_sign_test():
    assert abs(sign_flip_p_value(np.ones(5), iters=200_000, seed=0) - 2 / 32) < 0.003


def test_paired_interval_is_the_bootstrap_of_the_differences(tmp_path):
    rng = np.random.default_rng(0)
    a_values = rng.integers(0, 2, 400).astype(float)
    b_values = np.where(rng.random(400) < 0.15, 1 - a_values, a_values)  # B flips 15% of A's answers
    a = write_run(tmp_path / "a", {"t": list(a_values)})
    b = write_run(tmp_path / "b", {"t": list(b_values)})
    (row,), _ = compare_runs(load_run(a), load_run(b), iters=20_000, seed=1)
    d = b_values - a_values
    half_width = 1.959964 * d.std(ddof=1) / np.sqrt(d.size)  # the normal interval the bootstrap approaches
    assert row.difference == pytest.approx(d.mean())
    assert row.ci_lower == pytest.approx(d.mean() - half_width, abs=0.006)
    assert row.ci_upper == pytest.approx(d.mean() + half_width, abs=0.006)
    # pairing matters: the unpaired interval would be about 1.9x wider here
    unpaired = 1.959964 * np.sqrt(a_values.var(ddof=1) / 400 + b_values.var(ddof=1) / 400)
    assert row.ci_upper - row.ci_lower < unpaired


def test_documents_are_paired_by_doc_id_not_by_line(tmp_path):
    a = write_run(tmp_path / "a", {"t": [0.0, 1.0, 0.0, 1.0]})
    b = write_run(tmp_path / "b", {"t": [0.0, 1.0, 0.0, 1.0]}, order=[3, 1, 2, 0])  # same scores, lines shuffled
    (row,), _ = compare_runs(load_run(a), load_run(b), iters=100)
    assert row.difference == 0.0 and row.p_value == 1.0
    # B scored only documents 0..2: the comparison uses the shared three
    c = write_run(tmp_path / "c", {"t": [1.0, 1.0, 1.0]})
    (row,), _ = compare_runs(load_run(a), load_run(c), iters=100)
    assert row.n == 3 and row.a == pytest.approx(1 / 3) and row.difference == pytest.approx(2 / 3)


def test_same_seed_same_numbers_and_filters_kept(tmp_path):
    a = write_run(tmp_path / "a", {"g": [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]}, key="exact_match", filters="strict-match")
    b = write_run(tmp_path / "b", {"g": [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]}, key="exact_match", filters="strict-match")
    first, _ = compare_runs(load_run(a), load_run(b), iters=500, seed=7)
    second, _ = compare_runs(load_run(a), load_run(b), iters=500, seed=7)
    assert first == second and first[0].key == MetricKey("exact_match", "strict-match")


def test_only_shared_tasks_and_numeric_metrics(tmp_path):
    a = write_run(tmp_path / "a", {"x": [1.0, 0.0], "y": [1.0, 1.0]})
    b = write_run(tmp_path / "b", {"y": [0.0, 1.0], "z": [1.0, 1.0]})
    rows, _ = compare_runs(load_run(a), load_run(b), iters=100)
    assert [r.task for r in rows] == ["y"]
    # a corpus metric (no number per document) is skipped with a note
    for run in (a, b):
        doc = json.loads((run / "results.json").read_text())
        doc["results"]["y"]["f1,none"] = 0.5
        (run / "results.json").write_text(json.dumps(doc))
    rows, notes = compare_runs(load_run(a), load_run(b), iters=100)
    assert [r.key for r in rows] == [MetricKey("acc", "none")] and any("f1,none" in n for n in notes)


def test_cli_prints_a_table_and_fails_clearly(tmp_path, capsys):
    a = write_run(tmp_path / "a", {"t": [0.0, 1.0, 0.0, 1.0]})
    b = write_run(tmp_path / "b", {"t": [1.0, 1.0, 1.0, 1.0]})
    assert main([str(a), str(b), "--iters", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| t | acc | 4 | 0.5000 | 1.0000 | +0.5000 |" in out and "95% CI" in out

    assert main([str(a), str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(a), str(tmp_path / "empty")]) == 2
    assert "has no results.json" in capsys.readouterr().err
    other = write_run(tmp_path / "other", {"u": [1.0]})
    assert main([str(a), str(other)]) == 2
    assert "share no task" in capsys.readouterr().err
    (b / "samples_t.jsonl").unlink()
    assert main([str(a), str(b)]) == 2
    assert "log_samples" in capsys.readouterr().err


def test_console_entry_dispatches_compare(tmp_path, capsys):
    from lmm_lightning.cli import main as lmm_lightning

    a = write_run(tmp_path / "a", {"t": [0.0, 1.0]})
    b = write_run(tmp_path / "b", {"t": [1.0, 1.0]})
    with pytest.raises(SystemExit) as exit:
        lmm_lightning(["compare", str(a), str(b), "--iters", "100", "--json"])
    assert exit.value.code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["difference"] == 0.5 and row["n"] == 2 and row["metric"] == "acc,none"
    assert list(row) == ["task", "metric", "n", "a", "b", "difference", "ci_lower", "ci_upper", "p_value", "p_holm", "candidate", "clusters"]
    assert row["p_holm"] == row["p_value"]  # one comparison: nothing to correct


def test_a_baseline_against_several_runs_corrects_every_p_value_with_holm(tmp_path, capsys):
    rng = np.random.default_rng(4)
    base = list((rng.random(300) < 0.5).astype(float))
    better = [1.0 if rng.random() < 0.3 else x for x in base]  # about 15 points better: a real difference
    same = [x if rng.random() < 0.9 else 1 - x for x in base]  # flips 10 % at random: no real difference
    a, b, c = write_run(tmp_path / "a", {"t": base}), write_run(tmp_path / "b", {"t": better}), write_run(tmp_path / "c", {"t": same})
    assert main([str(a), str(b), str(c), "--iters", "2000", "--json"]) == 0
    rows = {Path(r["candidate"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["b"]["p_value"] < rows["c"]["p_value"]
    ordered = sorted(rows.values(), key=lambda r: r["p_value"])
    assert ordered[0]["p_holm"] == pytest.approx(min(1.0, 2 * ordered[0]["p_value"]))
    assert ordered[1]["p_holm"] == pytest.approx(max(ordered[0]["p_holm"], min(1.0, ordered[1]["p_value"])))
    assert main([str(a), str(b), str(c), "--iters", "2000"]) == 0
    table = capsys.readouterr().out
    assert "| Holm p | holds |" in table
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith(f"| {tmp_path}")}
    assert lines[str(b)].rstrip().endswith("| yes |") and lines[str(c)].rstrip().endswith("| no |")


def write_clustered_run(folder: Path, values: list[float], clusters: list[str]) -> Path:
    """A results folder of one task `t` that names `cluster_key: image`, each record carrying its cluster label."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"doc_id": i, "target": 0, "acc": v, "cluster": c} for i, (v, c) in enumerate(zip(values, clusters))]
    (folder / "samples_t.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    doc = {"results": {"t": {"alias": "t", "acc,none": float(np.mean(values)), "acc_stderr,none": 0.0}}, "groups": {},
           "configs": {"t": {"task": "t", "cluster_key": "image"}}}
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


def test_a_clustered_task_is_compared_by_whole_clusters(tmp_path, capsys):
    from lmm_lightning.compare import cluster_sign_flip_p_value

    # 8 images x 10 questions; B differs from A by a whole image at a time: +1 on 3 images, -1 on 1
    clusters = [f"img{g}" for g in range(8) for _ in range(10)]
    shift = {0: 1.0, 1: 1.0, 2: 1.0, 3: -1.0}
    a_values = [0.0 if g in shift and shift[g] > 0 else 1.0 if g in shift else float(i % 2) for g in range(8) for i in range(10)]
    b_values = [x + shift.get(g, 0.0) for x, g in zip(a_values, [g for g in range(8) for _ in range(10)])]
    a = write_clustered_run(tmp_path / "a", a_values, clusters)
    b = write_clustered_run(tmp_path / "b", b_values, clusters)
    assert main([str(a), str(b), "--iters", "20000", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    d = np.array(b_values) - np.array(a_values)
    sums = d.reshape(8, 10).sum(1)
    exact = float(np.mean([abs(np.dot(s, sums)) / 80 >= abs(d.mean()) - 1e-12 for s in itertools.product([-1, 1], repeat=8)]))
    assert row["clusters"] == 8 and row["difference"] == pytest.approx(0.25)
    assert row["p_value"] == pytest.approx(exact, abs=0.01)  # 2^8 sign vectors of whole images, enumerated
    assert exact > 0.5 and sign_flip_p_value(d, 20000, 1) < 0.01  # as independent questions it would look certain
    assert row["ci_lower"] < 0 < row["ci_upper"]  # resampling images, the interval holds zero
    assert cluster_sign_flip_p_value(d, clusters, 20000, 1) == pytest.approx(exact, abs=0.01)
