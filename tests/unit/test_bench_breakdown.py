"""The bench's breakdown of a task's log into startup, work and deferred waits, and of a stage's wall time."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"
spec = importlib.util.spec_from_file_location("bench_run", BENCH)
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclasses look their module up while it loads
spec.loader.exec_module(bench)

T0 = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)


def line(seconds: float, event: str) -> str:
    return json.dumps({"timestamp": (T0 + timedelta(seconds=seconds)).isoformat(), "event": event})


def test_a_deferred_tasks_log_splits_into_startup_work_and_the_wait(tmp_path):
    log = tmp_path / "attempt=1.log"
    events = [
        (0, "::group::Pre Execute"),
        (1.5, "Worker startup parse complete"),
        (2, "::endgroup::"),
        (5, "Pausing task as DEFERRED"),
        (35, "::group::Pre Execute"),
        (36, "::endgroup::"),
        (37, "Task instance in success state"),
    ]
    log.write_text("\n".join(line(s, e) for s, e in events) + "\n")
    assert bench.log_phases(log) == {"startup": 3.0, "work": 4.0, "deferred": 30.0}


def test_busy_time_is_the_union_of_overlapping_spans():
    at = [T0 + timedelta(seconds=s) for s in range(12)]
    spans = [(at[0], at[4]), (at[2], at[6]), (at[8], at[9]), (at[9], at[11])]
    assert bench.busy_seconds(spans) == 9.0
    assert bench.busy_seconds([]) == 0.0
