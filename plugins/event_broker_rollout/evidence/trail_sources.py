"""Every part of every task attempt's log, and proof that no audit record is missing from them.

On several workers one attempt's log has parts: a task that defers (a health gate, an approval) resumes in
a new process, possibly on another worker, which appends to the attempt's file; the triggerer writes the
trigger's part beside it (``attempt=N.log.trigger.<id>.log``). The REST API serves only the part on the
worker it asks. This reader takes the files from the base log folder every component shares (one folder on
one machine, a shared filesystem mounted at the same path on several: the simplest choice, no extra
store), so the exporter — itself a task on any worker — sees every part.

Completeness: ``audit`` numbers each attempt's records within each process part (``part``, ``seq``). A
part whose numbers do not run 1..n has lost records: that is reported as a finding in the trail, never
dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from event_broker_rollout.evidence.trail_entries import (
    Entry,
    RunRef,
    audit_entries,
    log_events,
    log_file_attempts,
    run_log_dir,
)

_TRIGGER_PART = re.compile(r"^attempt=(\d+)\.log\.trigger\.[^/]+\.log$")


def attempt_parts(main_file: Path) -> list[Path]:
    """The attempt's own file, then the triggerer's parts of the same attempt (in name order)."""
    triggered = sorted(
        path
        for path in main_file.parent.glob(f"{main_file.name}.trigger.*.log")
        if _TRIGGER_PART.match(path.name)
    )
    return [main_file, *triggered]


def sequence_gaps(entries: Sequence[Entry]) -> list[str]:
    """Where one attempt's numbered records skip: per part, the numbers must run 1, 2, ... n."""
    parts: dict[tuple[str, int, int, str], list[int]] = {}
    for entry in entries:
        part, seq = entry.data.get("part"), entry.data.get("seq")
        if isinstance(part, str) and isinstance(seq, int):
            parts.setdefault((entry.task_id, entry.map_index, entry.try_number, part), []).append(seq)
    findings = []
    for (task_id, map_index, try_number, part), numbers in sorted(parts.items()):
        expected = list(range(1, max(numbers) + 1))
        missing = sorted(set(expected) - set(numbers))
        if missing:
            where = f"{task_id}" + (f"[{map_index}]" if map_index >= 0 else "") + f" try {try_number}"
            findings.append(
                f"{where}: audit records {_ranges(missing)} of part {part} are missing from its log "
                f"({len(numbers)} of {len(expected)} found)"
            )
    return findings


def _ranges(numbers: Iterable[int]) -> str:
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{low}" if low == high else f"{low}-{high}" for low, high in spans)


def read_every_log_part(base: Path, run: RunRef) -> tuple[list[Entry], list[str]]:
    """The run's audit records from every part of every attempt's log, and the findings: a gap in an
    attempt's record numbers, named with the attempt and the numbers missing."""
    entries: list[Entry] = []
    findings: list[str] = []
    if not run_log_dir(base, run).is_dir():
        return entries, findings
    for attempt, path in log_file_attempts(base, run):
        text = "\n".join(part.read_text(errors="replace") for part in attempt_parts(path))
        found = audit_entries(log_events(text), attempt)
        entries += found
        findings += [f"{run}: {finding}" for finding in sequence_gaps(found)]
    return entries, findings
