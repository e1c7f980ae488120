"""Gathering, exactly-once checks, results writing and CLI strategy settings."""

import json
from datetime import timedelta

import pytest

from lmm_lightning.cli import strategy_with_timeout
from lmm_lightning.evaluation.gather import ResponseCollector
from lmm_lightning.evaluation.results import format_table, write_atomic
from lmm_lightning.evaluation.scoring import IntegrityError, check_exactly_once
from lmm_lightning.requests import Request, RequestType, Response


def requests(n: int) -> list[Request]:
    return [Request(i, "t", i, RequestType.LOGLIKELIHOOD, "c", " x") for i in range(n)]


def test_collector_round_trips_responses_with_unicode_text():
    collector = ResponseCollector()
    collector.update([Response(0, logprob=-1.5, is_greedy=True), Response(1, logprob=-0.25, is_greedy=False)], [False, False])
    collector.update([Response(2, text="Zürich ✓"), Response(3, text=""), Response(2, text="Zürich ✓")], [False, False, True])
    got = collector.compute().pairs
    assert [(r.uid, p) for r, p in got] == [(0, False), (1, False), (2, False), (3, False), (2, True)]
    assert got[0][0] == Response(0, logprob=-1.5, is_greedy=True, text=None)
    assert got[2][0].text == "Zürich ✓" and got[3][0].text == "" and got[2][0].logprob is None


def test_collector_compute_does_not_copy_every_response(monkeypatch):
    """torchmetrics runs compute()'s result through apply_to_collection; a list of dataclasses would be
    deep-copied record by record (seconds for 100,000 records)."""

    def refuse(self, memo):
        raise AssertionError("a Response was deep-copied")

    monkeypatch.setattr(Response, "__deepcopy__", refuse, raising=False)
    collector = ResponseCollector()
    collector.update([Response(0, text="a"), Response(1, logprob=-1.0, is_greedy=False)], [False, False])
    assert [r.uid for r, _ in collector.compute().pairs] == [0, 1]


def test_exactly_once_drops_padding_and_counts_it():
    gathered = [(Response(i, logprob=0.0), False) for i in range(3)] + [(Response(2, logprob=0.0), True)]
    answers, padded = check_exactly_once(requests(3), gathered)
    assert sorted(answers) == [0, 1, 2] and padded["t"] == 1


@pytest.mark.parametrize(
    "gathered,message",
    [
        ([(Response(0), False), (Response(1), False), (Response(1), False), (Response(2), False)], "1 answered more than once"),
        ([(Response(0), False), (Response(2), False), (Response(1), True)], "1 never answered"),
    ],
)
def test_exactly_once_fails_loudly(gathered, message):
    with pytest.raises(IntegrityError, match=message):
        check_exactly_once(requests(3), gathered)


def test_named_strategies_get_the_long_process_group_timeout():
    assert strategy_with_timeout("ddp", 60000)._timeout == timedelta(seconds=60000)
    assert strategy_with_timeout("auto", 60000) == "auto"


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    write_atomic(tmp_path / "results.json", json.dumps({"a": 1}))
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_table_shows_value_stderr_and_interval():
    doc = {
        "results": {"t": {"alias": "t", "samples": 3, "acc,none": 0.5, "acc_stderr,none": 0.1}},
        "confidence_intervals": {"t": {"acc,none": [0.3, 0.7]}},
        "higher_is_better": {"t": {"acc": True}},
        "versions": {"t": 1.0},
        "n-shot": {"t": 0},
    }
    table = format_table(doc)
    assert "| t | 1.0 | none | 0 | acc | ↑ | 0.5000 | ± | 0.1000 | [0.3000, 0.7000] |" in table
