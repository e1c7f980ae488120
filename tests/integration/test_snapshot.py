"""What a user sees of an evaluation is byte-for-byte what tests/fixtures/snapshot.json recorded.

A refactor must not change results.json, the samples files, the printed table or what the loggers get on any
shipped benchmark's fixture. A deliberate change of outputs regenerates the snapshot (`python -m tests.fixtures.snapshot`)
in the same commit, so the diff of snapshot.json shows exactly what users will see change.
"""

import json
from pathlib import Path

from tests.fixtures.snapshot import dumps, snapshot

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "snapshot.json"


def test_outputs_are_byte_for_byte_the_recorded_ones(tmp_path):
    now = snapshot(tmp_path)
    recorded = json.loads(RECORDED.read_text())
    for scenario, outputs in recorded.items():
        for part, value in outputs.items():
            assert now[scenario][part] == value, f"{scenario}: {part} changed"
    assert dumps(now) == RECORDED.read_text()
