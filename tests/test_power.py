"""`lmm-lightning power`: the minimum detectable effect against simulation (a comparison at that difference rejects
80 % of the time), the documents a difference needs, the design effect of clustered documents, and the command."""

import json
import math

import numpy as np
import pytest

from lmm_lightning.cli import main
from lmm_lightning.evaluation.result import MetricKey
from lmm_lightning.evaluation.results import detectable_differences
from lmm_lightning.metrics import Estimate
from lmm_lightning.power import design_effect, documents_needed, mde_from_stderr, minimum_detectable_effect, z_sum


def rejection_rate(n: int, p_a: float, difference: float, simulations: int, seed: int) -> float:
    """Two models scored 0/1 on the same n documents with unrelated errors; a paired z-test at alpha 0.05."""
    rng = np.random.default_rng(seed)
    a = rng.random((simulations, n)) < p_a
    b = rng.random((simulations, n)) < p_a + difference
    d = b.astype(float) - a.astype(float)
    z = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
    return float(np.mean(np.abs(z) > 1.959964))


def test_a_true_difference_of_the_mde_is_detected_80_percent_of_the_time():
    n, p = 400, 0.6
    mde = minimum_detectable_effect(np.sqrt(2 * p * (1 - p)), n)
    assert mde == pytest.approx(0.0971, abs=1e-3)
    assert 0.77 <= rejection_rate(n, p, mde, 4000, seed=1) <= 0.83
    assert 0.04 <= rejection_rate(n, p, 0.0, 4000, seed=2) <= 0.06  # and at no difference, the level
    assert 0.87 <= rejection_rate(n, p, minimum_detectable_effect(np.sqrt(2 * p * (1 - p)), n, power=0.9), 4000, seed=3) <= 0.93


def test_documents_needed_inverts_the_mde():
    for n in (50, 400, 3000):
        assert documents_needed(minimum_detectable_effect(0.7, n), 0.7) == n
    assert documents_needed(0.05, 0.7, design_effect=2.0) == math.ceil(2 * (z_sum(0.05, 0.8) * 0.7 / 0.05) ** 2)  # 3077


def test_the_design_effect_of_clustered_documents():
    rng = np.random.default_rng(5)
    p = rng.beta(1.2, 0.8, size=4000)  # intra-cluster correlation 1/3, 5 questions per image: 1 + 4/3
    scores = (rng.random((4000, 5)) < p[:, None]).astype(float).ravel()
    assert design_effect(scores, list(np.repeat(np.arange(4000), 5))) == pytest.approx(7 / 3, rel=0.05)
    assert design_effect(scores, None) == 1.0


def test_results_report_the_mde_of_each_metric_from_its_stderr():
    metrics = {MetricKey("acc", "none"): Estimate(0.6, 0.02, 0.56, 0.64, 500), MetricKey("f1", "none"): Estimate(0.5, float("nan"), 0, 1, 1)}
    assert detectable_differences(metrics) == {"acc,none": pytest.approx(2.8016 * np.sqrt(2) * 0.02, rel=1e-4)}
    assert mde_from_stderr(0.02) == pytest.approx(0.07924, rel=1e-3)


def write_run(folder, scores: list[float], images: list[str]) -> None:
    folder.mkdir(parents=True)
    results = {"results": {"t": {"alias": "t", "acc,none": float(np.mean(scores)), "acc_stderr,none": 0.01}},
               "configs": {"t": {"task": "t", "cluster_key": "image"}}}
    (folder / "results.json").write_text(json.dumps(results))
    lines = [json.dumps({"doc_id": i, "doc": {"image": img}, "acc": s}) for i, (s, img) in enumerate(zip(scores, images))]
    (folder / "samples_t.jsonl").write_text("\n".join(lines) + "\n")


def test_the_command_reads_a_run_pairs_a_baseline_and_allows_for_clusters(tmp_path, capsys):
    rng = np.random.default_rng(9)
    images = [f"img{i // 2}" for i in range(200)]  # two questions per image
    a = list((rng.random(200) < 0.6).astype(float))
    b = [x if rng.random() < 0.8 else 1 - x for x in a]  # agrees with a on most documents: pairing helps
    write_run(tmp_path / "a", a, images)
    write_run(tmp_path / "b", b, images)
    with pytest.raises(SystemExit) as exit_info:
        main(["power", str(tmp_path / "b"), "--effect", "0.1"])
    alone = capsys.readouterr().out
    assert exit_info.value.code == 0 and "| t | acc | 200 |" in alone
    with pytest.raises(SystemExit):
        main(["power", str(tmp_path / "b"), "--baseline", str(tmp_path / "a"), "--effect", "0.1"])
    paired = capsys.readouterr().out
    d = np.array(b) - np.array(a)
    expected = minimum_detectable_effect(d.std(ddof=1), 200, design_effect=design_effect(d, images))
    assert f"{expected:.4f}" in paired and "(paired)" in paired
    mde = lambda text: float(text.strip().splitlines()[-1].split("|")[6])
    assert mde(paired) < mde(alone)  # pairing on the same documents detects smaller differences
    with pytest.raises(SystemExit) as exit_info:
        main(["power", str(tmp_path / "missing")])
    assert exit_info.value.code == 2


def test_a_records_written_cluster_label_is_read_before_its_documents_field():
    from lmm_lightning.compare import record_cluster

    assert record_cluster({"cluster": "image:ab12", "doc": {"question": "q"}}, "image") == "image:ab12"  # an image column
    assert record_cluster({"doc": {"image_id": 7}}, "image_id") == 7  # an earlier run's samples, without the label
    assert record_cluster({"cluster": ["image:a", "image:b"]}, "images") == ("image:a", "image:b")
