"""The audit trail: records read from real Airflow 3.3 task logs (files and REST API), chained, signed,
linked run to run, verified, and compared with the audit topic's copy (fed as messages: no Kafka here).

The fixtures come from a run of a small DAG on `airflow standalone` (see fixtures/airflow_logs/README.md):
two mapped tasks that record a file change, a task that failed once and was retried, a check, and an
approval answered through the REST API.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import shutil
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from event_broker_devtools import lab_connections, trail_cli
from event_broker_rollout.airflow import trail_export
from event_broker_rollout.airflow.rest import AirflowApi
from event_broker_rollout.cluster import clients
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.evidence import audit as audit_module
from event_broker_rollout.evidence import trail as audit_trail
from event_broker_rollout.evidence import trail_entries
from event_broker_rollout.evidence.audit import (
    AUDIT_EVENT,
    RECORD_KEY,
    audit,
    audit_record,
    audit_result,
    digest,
)
from event_broker_rollout.evidence.results import Result, Status, report_dir
from event_broker_rollout.evidence.trail import TopicMessage, compare_with_topic, verify_chain, write_trail
from event_broker_rollout.evidence.trail_entries import Entry, RunRef
from event_broker_rollout.resources import audit_topic

FIXTURES = Path(__file__).parent / "fixtures"
LOGS = FIXTURES / "airflow_logs"
API_RESPONSES = FIXTURES / "airflow_api" / "audit_probe_run.json"
RUN = RunRef("audit_probe", "manual__2026-11-27T15:20:44.901633+00:00")
FIXED_TIME = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
SECRET_WORDS = ("password", "secret", "token", "private_key")
STAGE_DAGS = ("preflight", "infrastructure", "security", "schemas", "integration")
# The deployment's signing key (the ebr_audit_signing connection's) and a stranger's.
SIGNING_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
TRUSTED = [SIGNING_KEY.public_key()]
ENVIRONMENT = "lab"


def build_trail(runs, entries, *, signing_key=SIGNING_KEY, environment=ENVIRONMENT, **kwargs):
    return audit_trail.build_trail(runs, entries, environment=environment, signing_key=signing_key, **kwargs)


def verify_trail(path: Path):
    return audit_trail.verify_trail(path, TRUSTED)


def export_trail(runs, **kwargs):
    return audit_trail.export_trail(runs, environment=ENVIRONMENT, signing_key=SIGNING_KEY, **kwargs)


def all_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (key, *all_keys(item))]
    if isinstance(value, list):
        return [k for item in value for k in all_keys(item)]
    return []


def trail_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture(autouse=True)
def reports(monkeypatch, tmp_path) -> Path:
    """Every test's own reports folder: the chain of trails lives there."""
    root = tmp_path / "reports"
    monkeypatch.setenv("EBR_REPORTS_DIR", str(root))
    return root


@pytest.fixture
def fixture_api(monkeypatch):
    """The REST API as the real Airflow answered it (recorded responses, served by URL)."""
    responses = json.loads(API_RESPONSES.read_text())
    requested: list[str] = []

    def answer(method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        query = urllib.parse.urlencode(params) if params else ""
        key = "/api/v2/" + path.lstrip("/") + (f"?{query}" if query else "")
        requested.append(key)
        assert method == "GET"
        return responses[key]

    api = AirflowApi("http://127.0.0.1:28080", "auditor", "unused")
    monkeypatch.setattr(api, "request", answer)
    api.requested = requested  # type: ignore[attr-defined]
    return api


class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


@pytest.fixture
def logged(monkeypatch) -> list[dict[str, Any]]:
    """What ``audit`` hands to its structlog logger (Airflow renders it as one JSON log line)."""
    recorder = RecordingLogger()
    monkeypatch.setattr(audit_module, "_log", recorder)
    return recorder.lines


@pytest.fixture
def trail_file(tmp_path) -> Path:
    trail = build_trail(
        [RUN], trail_entries.read_log_files(LOGS, RUN), source="log files", exported_at=FIXED_TIME
    )
    return write_trail(trail, tmp_path / "audit-trail.jsonl")


# --- records in the task log ---------------------------------------------------------------------------


def test_audit_logs_the_record_nested_under_one_key(logged):
    # Airflow's supervisor re-logs each line with its fields as keyword arguments; a top-level `target`
    # collides with its own parameter and killed the task (seen on airflow standalone 3.3.2).
    audit("infrastructure.change", target="/etc/kafka/server.properties", outcome="changed", host="lab1")
    assert len(logged) == 1
    assert logged[0]["event"] == AUDIT_EVENT
    assert set(logged[0]) == {"event", RECORD_KEY}
    record = logged[0][RECORD_KEY]
    assert (record["action"], record["target"], record["outcome"], record["host"]) == (
        "infrastructure.change",
        "/etc/kafka/server.properties",
        "changed",
        "lab1",
    )


def test_audit_record_drops_secret_fields_at_any_depth_and_key_material():
    record = audit_record(
        "security.scram_user",
        target="billing",
        outcome="created",
        password="hunter2-hunter2-hunter2",
        config={"sasl.password": "x", "ssl.key.location": "/etc/kafka/tls/key.pem", "api_token": "t"},
        private_key="-----BEGIN PRIVATE KEY-----",
        note="-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
        client_secret="s",
    )
    assert not [key for key in all_keys(record) if any(word in key.lower() for word in SECRET_WORDS)]
    assert "hunter2" not in json.dumps(record)
    assert "MIIE" not in json.dumps(record)
    assert record["details"]["config"] == {"ssl.key.location": "/etc/kafka/tls/key.pem"}
    assert set(record["redacted"]) == {
        "details.password",
        "details.config.sasl.password",
        "details.config.api_token",
        "details.private_key",
        "details.note",
        "details.client_secret",
    }


def test_audit_result_records_a_change_as_before_after_and_large_values_as_digests(logged):
    audit_result(
        "security.quota",
        Result(
            id="quota[billing]",
            status=Status.CHANGED,
            message="quota set",
            observed=None,
            expected={"producer_byte_rate": 1048576},
        ),
    )
    ports = list(range(200))
    audit_result(
        "preflight.check",
        Result(id="ports.free", status=Status.PASS, message="free", host="lab2", observed=ports, expected=[]),
    )
    change, checked = (entry[RECORD_KEY] for entry in logged)
    assert change["result_id"] == "quota[billing]"
    assert (change["before"], change["after"]) == (None, {"producer_byte_rate": 1048576})
    assert checked["host"] == "lab2"
    assert checked["outcome"] == "pass"
    assert checked["details"] == {"observed": digest(ports), "expected": []}


# --- reading the real logs -----------------------------------------------------------------------------


def test_reads_the_audit_records_of_every_task_attempt_from_the_log_files():
    entries = trail_entries.read_log_files(LOGS, RUN)
    attempts = sorted((e.task_id, e.map_index, e.try_number) for e in entries)
    assert attempts == [
        ("change", 0, 1),
        ("change", 1, 1),
        ("check", -1, 1),
        ("flaky", -1, 1),
        ("flaky", -1, 2),
    ]
    changes = sorted((e for e in entries if e.task_id == "change"), key=lambda e: e.map_index)
    assert [e.data["host"] for e in changes] == ["lab1", "lab2"]
    assert all(e.data["before"] == "a" * 64 and e.data["after"] == "b" * 64 for e in changes)
    assert all(e.data["result_id"] == "infra.file[/etc/kafka/server.properties]" for e in changes)
    # The record's own run context agrees with where the log file was found.
    for entry in entries:
        assert (entry.data["task_id"], entry.data["map_index"], entry.data["try_number"]) == (
            entry.task_id,
            entry.map_index,
            entry.try_number,
        )
        assert entry.at.endswith("Z")


def test_the_rest_api_yields_the_same_records_and_who_triggered_and_approved(fixture_api):
    from_files = [e.body() for e in sorted(trail_entries.read_log_files(LOGS, RUN), key=Entry.sort_key)]
    from_api = [e.body() for e in sorted(trail_entries.read_api_logs(fixture_api, RUN), key=Entry.sort_key)]
    assert from_api == from_files
    # Mapped tasks are read with their map index, retried ones try by try.
    assert any(
        "/taskInstances/change/logs/1?full_content=true&map_index=1" in r for r in fixture_api.requested
    )
    assert any("/taskInstances/flaky/logs/2?" in r for r in fixture_api.requested)

    people = trail_entries.read_api_people(fixture_api, RUN)
    by_kind = {entry.kind: entry for entry in people}
    assert by_kind["trigger"].data["user"] == "admin"
    assert by_kind["trigger"].data["triggered_by"] == "rest_api"
    approval = by_kind["approval"]
    assert approval.task_id == "approve"
    assert approval.data["chosen_options"] == ["Approve"]
    assert approval.data["responded_by"] == {"id": "admin", "name": "admin"}
    assert approval.data["responded_at"] == "2026-11-27T15:20:59.211351Z"
    # Only what people did: the scheduler's own state changes (owner "airflow") stay out.
    actions = [e.data for e in people if e.kind == "user_action"]
    assert actions == [{"event": "update_hitl_detail", "user": "admin", "event_log_id": 23}]


def test_export_from_the_api_orders_trigger_approval_and_records_by_time(fixture_api, tmp_path):
    exported = export_trail([RUN], api=fixture_api, out=tmp_path / "trail.jsonl")
    records = trail_lines(exported.path)[1:]
    assert [r["kind"] for r in records] == [
        "trigger",
        "user_action",
        "approval",
        "audit",
        "audit",
        "audit",
        "audit",
        "audit",
    ]
    assert [r["at"] for r in records] == sorted(r["at"] for r in records)
    assert verify_trail(exported.path).intact


# --- order and chain -----------------------------------------------------------------------------------


def test_order_is_timestamp_then_task_map_index_try_and_log_position():
    def entry(task_id: str, map_index: int, try_number: int, log_index: int, at: str) -> Entry:
        return Entry(
            "audit",
            at,
            RUN,
            {"n": f"{task_id}{map_index}{try_number}{log_index}"},
            task_id,
            map_index,
            try_number,
            log_index,
        )

    same = "2026-11-27T15:00:00.000000Z"
    expected = [
        entry("a", -1, 1, 1, "2026-11-27T14:59:59.999999Z"),
        entry("a", 0, 1, 1, same),
        entry("a", 1, 1, 1, same),
        entry("b", -1, 1, 1, same),
        entry("b", -1, 2, 1, same),
        entry("b", -1, 2, 2, same),
    ]
    shuffled = expected[:]
    random.Random(7).shuffle(shuffled)
    trail = build_trail([RUN], shuffled, source="test", exported_at=FIXED_TIME)
    assert [r["data"] for r in trail.records] == [e.data for e in expected]
    again = build_trail([RUN], list(reversed(shuffled)), source="test", exported_at=FIXED_TIME)
    assert again.lines() == trail.lines()


def test_chain_round_trip(trail_file):
    lines = trail_lines(trail_file)
    header, records = lines[0], lines[1:]
    result = verify_trail(trail_file)
    assert result.intact, result.summary()
    assert result.records == len(records) == header["records"] == 5
    assert result.head == header["head"] == records[-1]["hash"]
    assert records[0]["prev"] == header["chain_start"]
    assert all(later["prev"] == earlier["hash"] for earlier, later in itertools.pairwise(records))
    signer = audit_trail.key_id(SIGNING_KEY.public_key())
    assert header["signature"]["key_id"] == signer and header["environment"] == ENVIRONMENT
    assert header["previous"] is None  # the first trail of its environment
    assert result.summary() == f"trail intact: 5 records, head {header['head']}, signed by {signer}"


def test_an_edited_record_is_named(trail_file):
    lines = trail_lines(trail_file)
    lines[3]["data"]["outcome"] = "ok"  # record 3
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert not result.intact
    assert result.break_at == 3
    assert result.summary().startswith("trail broken at record 3 (line 4): edited")


def test_a_rewritten_record_with_a_fresh_hash_breaks_the_link_to_the_next(trail_file):
    lines = trail_lines(trail_file)
    lines[2]["data"]["host"] = "lab9"
    lines[2]["hash"] = audit_trail.record_hash(lines[2])
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 3)
    assert "does not chain from record 2" in (result.problem or "")


def test_a_removed_record_is_named(trail_file):
    lines = trail_lines(trail_file)
    del lines[2]  # record 2
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 2)
    assert result.problem == "removed: record(s) 2 missing; this place holds record 3"


def test_a_removed_last_record_is_named(trail_file):
    lines = trail_lines(trail_file)
    write_lines(trail_file, lines[:-1])
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 5)
    assert result.problem is not None and result.problem.startswith("removed: the trail ends after 4 records")


def test_swapped_records_are_named(trail_file):
    lines = trail_lines(trail_file)
    lines[2], lines[3] = lines[3], lines[2]  # records 2 and 3
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 2)
    assert result.problem == "reordered: record 2 appears later; this place holds record 3"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exported_at", "2020-01-01T00:00:00.000000Z"),
        ("records", 4),
        ("runs", [{"dag_id": "x", "run_id": "y"}]),
    ],
)
def test_an_edited_header_is_named(trail_file, field, value):
    lines = trail_lines(trail_file)
    lines[0][field] = value
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 0)
    assert result.summary().startswith("trail broken at the header (line 1): bad header: edited")


def test_a_header_rewritten_for_other_runs_does_not_match_its_chain(trail_file):
    lines = trail_lines(trail_file)
    lines[0]["runs"] = [{"dag_id": "event_broker_security", "run_id": "manual__other"}]
    lines[0]["header_hash"] = audit_trail.header_hash(lines[0])
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 0)
    assert "chain_start does not belong to the environment, runs and previous trail" in (result.problem or "")


def rehash(lines: list[dict[str, Any]]) -> None:
    """What a forger without the key can do: recompute every record hash, the head and the header hash."""
    header, records = lines[0], lines[1:]
    previous = header["chain_start"]
    for record in records:
        record["prev"] = previous
        record["hash"] = previous = audit_trail.record_hash(record)
    header["head"] = previous
    header["header_hash"] = audit_trail.header_hash(header)


def test_an_edited_record_with_every_hash_recomputed_fails_the_signature(trail_file):
    lines = trail_lines(trail_file)
    lines[3]["data"]["outcome"] = "ok"  # record 3, then the chain made whole again
    rehash(lines)
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 0)
    assert result.problem is not None and result.problem.startswith(
        "signature does not verify with key sha256:"
    )
    assert "rewritten after signing" in result.problem


def test_a_removed_record_with_every_hash_recomputed_fails_the_signature(trail_file):
    lines = trail_lines(trail_file)
    del lines[2]
    for seq, record in enumerate(lines[1:], start=1):
        record["seq"] = seq
    lines[0]["records"] -= 1
    lines[0]["counts"] = {"audit": 4}
    rehash(lines)
    write_lines(trail_file, lines)
    result = verify_trail(trail_file)
    assert (result.intact, result.break_at) == (False, 0)
    assert "signature does not verify" in (result.problem or "")


def test_a_trail_signed_with_another_key_is_named(tmp_path):
    forged = write_trail(
        build_trail([RUN], trail_entries.read_log_files(LOGS, RUN), source="t", signing_key=OTHER_KEY),
        tmp_path / "forged.jsonl",
    )
    result = verify_trail(forged)
    assert (result.intact, result.break_at) == (False, 0)
    assert result.problem == (
        f"signed by another key ({audit_trail.key_id(OTHER_KEY.public_key())}); "
        f"trusted: {audit_trail.key_id(SIGNING_KEY.public_key())}"
    )
    # Re-signed by the stranger while claiming the trusted key's id: the signature itself fails.
    lines = trail_lines(forged)
    lines[0]["signature"]["key_id"] = audit_trail.key_id(SIGNING_KEY.public_key())
    write_lines(forged, lines)
    assert "signature does not verify" in (verify_trail(forged).problem or "")


def test_an_unsigned_trail_and_a_verifier_without_a_key_are_refused(trail_file, monkeypatch, tmp_path):
    monkeypatch.setenv(audit_trail.PUBLIC_KEY_ENV, str(tmp_path / "absent.pub"))
    assert audit_trail.trusted_public_keys() == []
    assert "no trusted public key" in (audit_trail.verify_trail(trail_file).problem or "")
    lines = trail_lines(trail_file)
    del lines[0]["signature"]
    write_lines(trail_file, lines)
    assert verify_trail(trail_file).problem == "unsigned: the header carries no ed25519 signature"


# --- the run-to-run chain ---------------------------------------------------------------------------------


@pytest.fixture
def run_logs(tmp_path) -> Path:
    """A log folder where runs ``event_broker_stage<n>/manual__<n>`` and ``s<n>/r<n>`` logged what the
    fixture run logged (five audit records each)."""
    base = tmp_path / "logs"
    for number in range(1, 5):
        for dag_id, run_id in (
            (f"event_broker_stage{number}", f"manual__{number}"),
            (f"s{number}", f"r{number}"),
        ):
            shutil.copytree(
                trail_entries.run_log_dir(LOGS, RUN), trail_entries.run_log_dir(base, RunRef(dag_id, run_id))
            )
    return base


def export_runs(count: int, logs: Path) -> list[Path]:
    """``count`` trails of the lab exported one after another into the reports folder, as tasks do."""
    exported = []
    for number in range(1, count + 1):
        run = RunRef(f"event_broker_stage{number}", f"manual__{number}")
        exported.append(export_trail([run], logs=logs).path)
    return exported


def test_each_trail_names_the_previous_trail_of_its_environment(reports, run_logs):
    first, second, third = export_runs(3, run_logs)
    headers = [trail_lines(path)[0] for path in (first, second, third)]
    assert headers[0]["previous"] is None
    assert headers[1]["previous"] == {
        "trail": "event_broker_stage1/manual__1/audit-trail.jsonl",
        "head": headers[0]["head"],
    }
    assert headers[2]["previous"]["head"] == headers[1]["head"]
    # The chain runs through the records: the first record of a trail chains from the previous head.
    assert headers[1]["chain_start"] == audit_trail.chain_start(
        ENVIRONMENT, [RunRef("event_broker_stage2", "manual__2")], headers[0]["head"]
    )
    chain = verify_chain(third, TRUSTED, reports)
    assert chain.intact, chain.summary()
    assert chain.trails == [first, second, third]
    # Another environment's trails form a chain of their own.
    other = audit_trail.export_trail(
        [RunRef("x", "y")], environment="dev", signing_key=SIGNING_KEY, logs=LOGS
    )
    assert trail_lines(other.path)[0]["previous"] is None
    assert verify_chain(third, TRUSTED, reports).intact


def test_a_trail_missing_from_the_chain_is_named(reports, run_logs):
    _first, second, third = export_runs(3, run_logs)
    second.unlink()
    chain = verify_chain(third, TRUSTED, reports)
    assert not chain.intact
    assert chain.trail == "event_broker_stage3/manual__3/audit-trail.jsonl"
    assert chain.problem == (
        f"its previous trail event_broker_stage2/manual__2/audit-trail.jsonl is missing from {reports}"
    )


def test_a_trail_left_out_of_the_chain_is_named(reports, run_logs):
    first, second, _third = export_runs(3, run_logs)
    # An exporter that lost track of the newest trail chains from an older one: a fork.
    forked = audit_trail.build_trail(
        [RunRef("event_broker_stage4", "manual__4")],
        [],
        source="t",
        environment=ENVIRONMENT,
        signing_key=SIGNING_KEY,
        previous={
            "trail": "event_broker_stage2/manual__2/audit-trail.jsonl",
            "head": trail_lines(second)[0]["head"],
        },
    )
    path = write_trail(forked, reports / "event_broker_stage4" / "manual__4" / "audit-trail.jsonl")
    chain = verify_chain(path, TRUSTED, reports)
    assert (chain.intact, chain.trail) == (False, "event_broker_stage3/manual__3/audit-trail.jsonl")
    assert chain.problem is not None and chain.problem.startswith("not in the chain")
    assert chain.trails == [first, second, path]


def test_a_replaced_trail_in_the_chain_is_named(reports, run_logs):
    _first, second, third = export_runs(3, run_logs)
    # Even re-exported and signed with the right key, the replacement's head is not the one its
    # successor names.
    replaced = audit_trail.build_trail(
        [RunRef("event_broker_stage2", "manual__2")],
        [],
        source="t",
        environment=ENVIRONMENT,
        signing_key=SIGNING_KEY,
        previous=trail_lines(second)[0]["previous"],
    )
    write_trail(replaced, second)
    chain = verify_chain(third, TRUSTED, reports)
    assert (chain.intact, chain.trail) == (False, "event_broker_stage3/manual__3/audit-trail.jsonl")
    assert "as previous with another head" in (chain.problem or "")


def test_a_tampered_trail_inside_the_chain_is_named_with_its_record(reports, run_logs):
    _first, second, third = export_runs(3, run_logs)
    lines = trail_lines(second)
    lines[2]["data"]["outcome"] = "ok"
    write_lines(second, lines)
    chain = verify_chain(third, TRUSTED, reports)
    assert (chain.intact, chain.trail) == (False, "event_broker_stage2/manual__2/audit-trail.jsonl")
    assert (chain.problem or "").startswith("trail broken at record 2 (line 3): edited")


def test_a_retried_export_replaces_the_newest_trail_in_its_place_and_never_an_older_one(reports, run_logs):
    first, second = export_runs(2, run_logs)
    again = export_trail([RunRef("event_broker_stage2", "manual__2")], logs=run_logs)
    assert again.path == second
    assert trail_lines(second)[0]["previous"]["head"] == trail_lines(first)[0]["head"]
    assert verify_chain(second, TRUSTED, reports).intact
    with pytest.raises(audit_trail.ChainError, match="already chained from by event_broker_stage2"):
        export_trail([RunRef("event_broker_stage1", "manual__1")], logs=run_logs)


# --- the audit topic's copy (messages as a consumer reads them; no Kafka in unit tests) -------------------


def published(paths_: list[Path], *, first_offset: int = 0) -> list[TopicMessage]:
    """The messages ``publish_trail`` produces for these trail files, at consecutive offsets."""
    messages = []
    for path in paths_:
        lines = path.read_text().splitlines()
        trail = audit_trail.Trail(header=json.loads(lines[0]), records=())
        for line in lines:
            messages.append(TopicMessage(trail.key, line, 0, first_offset + len(messages)))
    return messages


def labelled(paths_: list[Path], root: Path) -> list[tuple[str, list[str]]]:
    return trail_cli.chain_lines(paths_, root)


def test_a_chain_identical_to_the_topic_agrees(reports, run_logs):
    trails = export_runs(3, run_logs)
    # The first trail was exported before the cluster was secured: never published.
    comparison = compare_with_topic(labelled(trails, reports), published(trails[1:]), ENVIRONMENT, "t")
    assert comparison.agrees, comparison.summary()
    assert (comparison.trails, comparison.published) == (3, 2)


def test_a_file_that_differs_from_the_topic_is_named_even_when_re_signed(reports, run_logs):
    trails = export_runs(3, run_logs)
    messages = published(trails)
    # Someone holding the key rewrites trail 2 and signs it again: the files verify, the topic disagrees.
    lines = trail_lines(trails[1])
    lines[3]["data"]["outcome"] = "ok"
    rehash(lines)
    audit_trail.sign_header(lines[0], SIGNING_KEY)
    write_lines(trails[1], lines)
    comparison = compare_with_topic(labelled(trails, reports), messages, ENVIRONMENT, "ops.rollout.audit.v1")
    assert not comparison.agrees
    assert comparison.trail == "event_broker_stage2/manual__2/audit-trail.jsonl"
    offset = len(trail_lines(trails[0])) + 3  # record 3 of trail 2 on the topic
    assert (
        comparison.problem == f"record 3 (line 4) differs from the topic's copy (partition 0 offset {offset})"
    )
    assert comparison.summary().startswith(
        "audit topic ops.rollout.audit.v1 disagrees at event_broker_stage2"
    )


def test_a_record_missing_from_the_file_or_the_topic_is_named(reports, run_logs):
    trails = export_runs(1, run_logs)
    messages = published(trails)
    comparison = compare_with_topic(labelled(trails, reports), messages[:-1], ENVIRONMENT, "t")
    assert (
        comparison.problem
        == "record 5 is in the file but not on the topic (its copy ends at partition 0 offset 4)"
    )


def test_a_published_trail_whose_file_left_the_chain_is_named(reports, run_logs):
    trails = export_runs(3, run_logs)
    messages = published(trails)
    older = compare_with_topic(labelled(trails[:2], reports), messages, ENVIRONMENT, "t", whole_chain=False)
    assert older.agrees  # a chain verified up to trail 2 knows nothing of later trails
    trails[2].unlink()
    # The newest file removed: the chain now ends at trail 2, and the topic still holds trail 3.
    comparison = compare_with_topic(labelled(trails[:2], reports), messages, ENVIRONMENT, "t")
    assert (comparison.agrees, comparison.trail) == (False, "event_broker_stage3/manual__3")
    newest = export_trail([RunRef("event_broker_stage4", "manual__4")], logs=run_logs).path
    chain = [*trails[:2], newest]
    comparison = compare_with_topic(labelled(chain, reports), messages, ENVIRONMENT, "t")
    assert (comparison.agrees, comparison.trail) == (False, "event_broker_stage3/manual__3")
    assert (comparison.problem or "").endswith("but its file is not in the chain")


def test_a_republished_trail_is_compared_with_its_newest_copy(reports, run_logs):
    (trail,) = export_runs(1, run_logs)
    first_copy = published([trail])
    again = export_trail([RunRef("event_broker_stage1", "manual__1")], logs=run_logs).path
    messages = [*first_copy, *published([again], first_offset=len(first_copy))]
    # Another environment's and the unsigned version 1 trails on the same topic are not this chain's.
    messages.append(TopicMessage("x/y", json.dumps({"kind": "ebr.audit-trail", "version": 1}), 0, 99))
    assert compare_with_topic(labelled([again], reports), messages, ENVIRONMENT, "t").agrees


# --- secrets never reach a trail ------------------------------------------------------------------------


def test_the_exporter_strips_secret_fields_from_foreign_log_lines(tmp_path):
    attempt_dir = tmp_path / "dag_id=d" / "run_id=r" / "task_id=t"
    attempt_dir.mkdir(parents=True)
    record = {
        "action": "security.scram_user",
        "target": "billing",
        "outcome": "created",
        "password": "leaked-password-value",
        "details": {"sasl.password": "leaked", "ssl.key.password": "k", "auth_token": "t", "ok": 1},
        "material": "-----BEGIN EC PRIVATE KEY-----\nMHcC",
        "at": "2026-11-27T15:00:00+00:00",
    }
    line = {
        "timestamp": "2026-11-27T15:00:00.000001Z",
        "level": "info",
        "event": AUDIT_EVENT,
        RECORD_KEY: record,
    }
    (attempt_dir / "attempt=1.log").write_text("not json\n" + json.dumps(line) + "\n")
    exported = export_trail([RunRef("d", "r")], logs=tmp_path, out=tmp_path / "trail.jsonl")
    text = exported.path.read_text()
    assert "leaked" not in text and "MHcC" not in text
    records = trail_lines(exported.path)[1:]
    assert len(records) == 1
    assert not [k for k in all_keys(records) if any(word in k.lower() for word in SECRET_WORDS)]
    assert records[0]["data"]["details"] == {"ok": 1}
    assert "password" in records[0]["data"]["redacted"]
    assert verify_trail(exported.path).intact


def test_the_real_fixture_trail_carries_no_secret():
    # The probe task passed sasl_password=...; the record names what was dropped, never the value.
    entries = trail_entries.read_log_files(LOGS, RUN)
    flaky = [e for e in entries if e.task_id == "flaky"]
    assert all(e.data["redacted"] == ["details.sasl_password"] for e in flaky)
    trail = build_trail([RUN], entries, source="log files", exported_at=FIXED_TIME)
    assert "must-not-appear" not in "\n".join(trail.lines())
    assert not [k for k in all_keys(list(trail.records)) if any(word in k.lower() for word in SECRET_WORDS)]


# --- the export task ------------------------------------------------------------------------------------


def task_context(run_id: str) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        triggering_user_name="alice",
        run_type=SimpleNamespace(value="manual"),
        run_after=datetime(2026, 11, 27, 15, 20, 44, 901633, tzinfo=UTC),
    )
    return {"run_id": run_id, "dag_run": dag_run, "params": {"environment": "lab"}}


@pytest.fixture
def signing_connection(monkeypatch) -> str:
    """The deployment's ebr_audit_signing connection, as Airflow reads one from its environment."""
    pem = audit_trail.private_key_pem(SIGNING_KEY)
    monkeypatch.setenv(
        "AIRFLOW_CONN_EBR_AUDIT_SIGNING", json.dumps({"conn_type": "generic", "password": pem})
    )
    return pem


@pytest.fixture
def no_cluster(monkeypatch, signing_connection):
    monkeypatch.setattr(trail_export, "publication_blocker", lambda environment: "not published: test")


def key_material(private_key: Ed25519PrivateKey) -> list[str]:
    """Every spelling of a private key that could leak: its PEM, its PEM body, its raw bytes in base64."""
    pem = audit_trail.private_key_pem(private_key)
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [pem, body, base64.b64encode(raw).decode(), raw.hex(), "PRIVATE KEY"]


def test_export_task_trail_writes_the_run_trail_beside_the_reports(monkeypatch, no_cluster, tmp_path, logged):
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(LOGS))
    approval = {
        "task_id": "approve",
        "chosen_options": ["Approve"],
        "params_input": {"comment": "free text stays out"},
        "responded_by_user": {"id": "bob", "name": "Bob"},
        "responded_at": datetime(2026, 11, 27, 15, 20, 59, 211351, tzinfo=UTC),
    }
    outcome = trail_export.export_task_trail(task_context(RUN.run_id), RUN.dag_id, approvals=[approval])
    path = Path(outcome["trail"])
    assert path == report_dir(RUN.dag_id, RUN.run_id) / "audit-trail.jsonl"
    assert path.is_relative_to(tmp_path / "reports")
    assert outcome["records"] == 7
    assert (outcome["published"], outcome["publication"]) == (False, "not published: test")
    records = trail_lines(path)[1:]
    assert records[0]["kind"] == "trigger" and records[0]["data"]["user"] == "alice"
    assert records[0]["data"]["run_type"] == "manual"
    assert records[1]["kind"] == "approval" and records[1]["data"]["responded_by"] == {
        "id": "bob",
        "name": "Bob",
    }
    assert "free text" not in path.read_text()
    signer = audit_trail.key_id(SIGNING_KEY.public_key())
    assert (
        verify_trail(path).summary() == f"trail intact: 7 records, head {outcome['head']}, signed by {signer}"
    )
    assert (outcome["signed_by"], outcome["previous_head"]) == (signer, None)
    # The export is audited itself, so a rollout's trail carries each stage trail's head.
    exported = [e[RECORD_KEY] for e in logged if e.get("event") == AUDIT_EVENT]
    assert [(r["action"], r["after"]) for r in exported] == [("audit.trail_export", outcome["head"])]


def test_the_signing_key_reaches_no_log_xcom_report_or_trail(
    monkeypatch, no_cluster, tmp_path, logged, capsys
):
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(LOGS))
    first = trail_export.export_task_trail(task_context(RUN.run_id), RUN.dag_id)
    second = trail_export.export_task_trail(task_context("manual__next"), "event_broker_schemas")
    assert second["previous_head"] == first["head"]  # the runs of one environment form one chain
    written = "".join(path.read_text() for path in (tmp_path / "reports").rglob("*") if path.is_file())
    emitted = json.dumps([first, second]) + json.dumps(logged) + capsys.readouterr().out + written
    assert not [spelling for spelling in key_material(SIGNING_KEY) if spelling in emitted]


def test_without_the_signing_connection_no_trail_is_exported(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(LOGS))
    monkeypatch.delenv("AIRFLOW_CONN_EBR_AUDIT_SIGNING", raising=False)
    with pytest.raises(audit_trail.SigningKeyError, match="no Airflow connection ebr_audit_signing"):
        trail_export.export_task_trail(task_context(RUN.run_id), RUN.dag_id)
    assert not (tmp_path / "reports").exists()
    monkeypatch.setenv(
        "AIRFLOW_CONN_EBR_AUDIT_SIGNING", json.dumps({"conn_type": "generic", "password": "x"})
    )
    with pytest.raises(audit_trail.SigningKeyError, match="not an unencrypted PEM private key"):
        audit_trail.signing_key_from_connection()


def test_export_task_trail_without_log_files_writes_an_empty_trail_saying_so(
    monkeypatch, no_cluster, tmp_path
):
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path / "no-logs"))
    outcome = trail_export.export_task_trail(task_context("manual__in_process"), "event_broker_schemas")
    assert outcome["records"] == 0
    header = trail_lines(Path(outcome["trail"]))[0]
    assert header["records"] == 0
    assert "dag.test()" in header["notes"][0]
    assert verify_trail(Path(outcome["trail"])).intact


def test_publication_needs_a_secured_cluster(monkeypatch):
    from event_broker_rollout.hosts import fleet

    lab = load_environment("lab")
    monkeypatch.setattr(fleet, "recorded_phase", lambda environment: "listeners")
    assert (
        audit_topic.publication_blocker(lab)
        == "not published: the cluster is not secured yet (its hosts record listeners)"
    )

    def unreachable(environment):
        raise OSError("lab2: timed out")

    monkeypatch.setattr(fleet, "recorded_phase", unreachable)
    assert "security phase is unknown (lab2: timed out)" in (audit_topic.publication_blocker(lab) or "")
    monkeypatch.setattr(fleet, "recorded_phase", lambda environment: "secured")
    assert audit_topic.publication_blocker(lab) is None


class FakeProducer:
    instances: ClassVar[list[FakeProducer]] = []
    fail_delivery = False
    topic_error: Any = None

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes, Any]] = []
        self.pending: list[Any] = []
        FakeProducer.instances.append(self)

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=FakeProducer.topic_error)})

    def produce(self, topic: str, *, key: bytes, value: bytes, headers: Any, on_delivery: Any) -> None:
        self.sent.append((topic, key, value, headers))
        self.pending.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for callback in self.pending:
            callback("broker down" if FakeProducer.fail_delivery else None, None)
        self.pending = []
        return 0


@pytest.fixture
def fake_kafka(monkeypatch):
    import confluent_kafka

    FakeProducer.instances, FakeProducer.fail_delivery, FakeProducer.topic_error = [], False, None
    monkeypatch.setattr(confluent_kafka, "Producer", FakeProducer)
    # cluster.clients binds load_credentials at import: patch it where it is looked up
    monkeypatch.setattr(clients, "load_credentials", lambda environment: {"rollout-audit": "p" * 24})
    return FakeProducer


def test_publish_sends_every_line_as_the_audit_principal_with_acks_all(fake_kafka):
    trail = build_trail(
        [RUN], trail_entries.read_log_files(LOGS, RUN), source="log files", exported_at=FIXED_TIME
    )
    topic, delivered = audit_topic.publish_trail(trail, load_environment("lab"))
    producer = fake_kafka.instances[0]
    assert (topic, delivered) == ("ops.rollout.audit.v1", 6)
    assert producer.config["acks"] == "all" and producer.config["enable.idempotence"] is True
    assert producer.config["sasl.username"] == "rollout-audit"
    assert producer.config["security.protocol"] == "SASL_SSL"
    assert [value.decode() for _topic, _key, value, _headers in producer.sent] == trail.lines()
    assert {key for _topic, key, _value, _headers in producer.sent} == {f"{RUN}".encode()}


def test_publish_fails_when_a_message_is_not_acknowledged(fake_kafka):
    fake_kafka.fail_delivery = True
    trail = build_trail([RUN], [], source="test", exported_at=FIXED_TIME)
    with pytest.raises(audit_topic.PublishError, match=r"1 of 1 trail messages not delivered.*broker down"):
        audit_topic.publish_trail(trail, load_environment("lab"))


def test_publish_reports_a_missing_audit_topic(fake_kafka):
    fake_kafka.topic_error = "UNKNOWN_TOPIC_OR_PART"
    trail = build_trail([RUN], [], source="test", exported_at=FIXED_TIME)
    with pytest.raises(audit_topic.AuditTopicMissing, match=re.escape("ops.rollout.audit.v1")):
        audit_topic.publish_trail(trail, load_environment("lab"))
    assert fake_kafka.instances[0].sent == []


# --- command line ---------------------------------------------------------------------------------------


@pytest.fixture
def key_files(tmp_path) -> tuple[Path, Path]:
    """The signing key as a private file (0600 from its creation) and its public key for verifiers."""
    private = tmp_path / "audit-signing.key"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(audit_trail.private_key_pem(SIGNING_KEY))
    public = tmp_path / "audit-signing.pub"
    public.write_text(audit_trail.public_key_pem(SIGNING_KEY.public_key()))
    return private, public


def cli_export(run: RunRef, private: Path, logs: Path = LOGS) -> Path:
    args = [
        "export",
        "--dag-id",
        run.dag_id,
        "--run-id",
        run.run_id,
        "--env",
        ENVIRONMENT,
        "--logs",
        str(logs),
    ]
    assert trail_cli.main([*args, "--signing-key", str(private)]) == 0
    return report_dir(run.dag_id, run.run_id) / "audit-trail.jsonl"


def cli_verify(path: Path | None, public: Path, reports: Path) -> int:
    where = [str(path)] if path else ["--env", ENVIRONMENT]
    return trail_cli.main(["verify", *where, "--public-key", str(public), "--reports", str(reports)])


def test_command_exports_and_verifies(reports, key_files, capsys):
    private, public = key_files
    first = cli_export(RunRef("event_broker_preflight", "manual__1"), private)
    second = cli_export(RUN, private)
    capsys.readouterr()
    assert cli_verify(second, public, reports) == 0
    head, signer = trail_lines(second)[0]["head"], audit_trail.key_id(SIGNING_KEY.public_key())
    assert capsys.readouterr().out.splitlines() == [
        f"trail intact: 5 records, head {head}, signed by {signer}",
        f"chain intact: 2 trails of lab, from {first}",
    ]
    assert cli_verify(None, public, reports) == 0  # the environment's newest trail
    lines = trail_lines(second)
    del lines[4]
    write_lines(second, lines)
    capsys.readouterr()
    assert cli_verify(second, public, reports) == 1
    assert (
        capsys.readouterr().out.strip()
        == "trail broken at record 4 (line 5): removed: record(s) 4 missing; this place holds record 5"
    )


def edit_record(path: Path) -> None:
    lines = trail_lines(path)
    lines[3]["data"]["outcome"] = "ok"
    write_lines(path, lines)


def edit_record_and_rehash(path: Path) -> None:
    lines = trail_lines(path)
    lines[3]["data"]["outcome"] = "ok"
    rehash(lines)
    write_lines(path, lines)


def drop_record(path: Path) -> None:
    lines = trail_lines(path)
    del lines[2]
    write_lines(path, lines)


def sign_with_another_key(path: Path) -> None:
    lines = trail_lines(path)
    audit_trail.sign_header(lines[0], OTHER_KEY)
    write_lines(path, lines)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (edit_record, "trail broken at record 3 (line 4): edited: its content no longer matches its hash"),
        (edit_record_and_rehash, "trail broken at the header (line 1): signature does not verify with key"),
        (drop_record, "trail broken at record 2 (line 3): removed: record(s) 2 missing"),
        (sign_with_another_key, "trail broken at the header (line 1): signed by another key"),
    ],
)
def test_audit_verify_names_each_kind_of_tampering_anywhere_in_the_chain(
    reports, key_files, capsys, tamper, expected, run_logs
):
    private, public = key_files
    runs = [RunRef(f"event_broker_stage{n}", f"manual__{n}") for n in (1, 2, 3)]
    first, middle, newest = (cli_export(run, private, run_logs) for run in runs)
    tamper(middle)
    capsys.readouterr()
    assert cli_verify(middle, public, reports) == 1
    assert capsys.readouterr().out.startswith(expected)
    # Verifying the newest trail walks the chain back and names the tampered one.
    assert cli_verify(newest, public, reports) == 1
    output = capsys.readouterr().out.splitlines()
    assert output[-1].startswith(
        f"chain broken at event_broker_stage2/manual__2/audit-trail.jsonl: {expected}"
    )
    assert first.is_file()


def test_audit_verify_names_a_trail_missing_from_the_chain(reports, key_files, capsys, run_logs):
    private, public = key_files
    _first, middle, newest = (cli_export(RunRef(f"s{n}", f"r{n}"), private, run_logs) for n in (1, 2, 3))
    middle.unlink()
    capsys.readouterr()
    assert cli_verify(newest, public, reports) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"chain broken at s3/r3/audit-trail.jsonl: its previous trail s2/r2/audit-trail.jsonl is missing from {reports}"
    )


def test_a_chain_is_named_by_a_plain_environment_name(reports, key_files, capsys):
    private, _public = key_files
    args = ["export", "--dag-id", "d", "--run-id", "r", "--env", "../elsewhere", "--logs", str(LOGS)]
    assert trail_cli.main([*args, "--signing-key", str(private)]) == 2
    assert "environment '../elsewhere': not a plain name" in capsys.readouterr().err
    assert not (reports / "elsewhere.lock").exists()


def test_command_refuses_a_signing_key_file_others_can_read(reports, key_files, capsys):
    private, _public = key_files
    private.chmod(0o640)
    args = ["export", "--dag-id", "d", "--run-id", "r", "--env", ENVIRONMENT, "--logs", str(LOGS)]
    assert trail_cli.main([*args, "--signing-key", str(private)]) == 2
    assert "readable by others" in capsys.readouterr().err
    assert not reports.exists()


def test_the_lab_signing_key_is_generated_once_private_and_in_the_connections(tmp_path):
    pem = lab_connections.ensure_audit_signing_key(tmp_path)
    key_file = tmp_path / "secrets" / "audit-signing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert lab_connections.ensure_audit_signing_key(tmp_path) == pem == key_file.read_text()
    public = audit_trail.load_public_key(tmp_path / "audit-signing.pub")
    private = audit_trail.load_private_key(pem, "test")
    assert audit_trail.key_id(public) == audit_trail.key_id(private.public_key())
    connection = lab_connections.audit_signing_connection(tmp_path)["ebr_audit_signing"]
    assert (connection["conn_type"], connection["password"]) == ("generic", pem)


def test_command_takes_several_runs_in_pairs(tmp_path):
    with pytest.raises(SystemExit, match="pairs"):
        trail_cli.main(
            [
                "export",
                "--dag-id",
                "a",
                "--dag-id",
                "b",
                "--run-id",
                "r",
                "--env",
                "lab",
                "--logs",
                str(tmp_path),
            ]
        )


# --- the stage DAGs -------------------------------------------------------------------------------------


def test_every_stage_dag_exports_its_trail_right_before_the_report():
    from airflow.dag_processing.dagbag import DagBag

    dags_dir = Path(__file__).resolve().parents[2] / "dags"
    bag = DagBag(dag_folder=str(dags_dir))
    for stage in STAGE_DAGS:
        dag = bag.dags[f"event_broker_{stage}"]
        export = dag.get_task("export_audit_trail")
        assert export.trigger_rule == "all_done", stage
        assert export.downstream_task_ids == {"report"}, stage
        assert [task.task_id for task in dag.leaves] == ["report"], stage
        others = set(dag.task_ids) - {"export_audit_trail", "report"}
        assert others <= export.get_flat_relative_ids(upstream=True), stage
