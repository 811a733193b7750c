"""A run's audit trail: the ``ebr.audit`` records of its task logs plus who triggered and who approved, in
one deterministic order, chained with SHA-256 hashes, signed, written beside the reports and published to
the audit topic. ``verify`` checks an exported trail, the chain of trails before it and (given a cluster)
the audit topic's copies, and names the first break.

The trail is JSON lines. Line 1 is the header: the environment and the runs it covers, the counts, the
previous trail of the same environment (its path under the reports folder and its head), the chain's start
(derived from the environment, the runs and that previous head), the head (the last record's hash), a hash
over the header and an Ed25519 signature over the header. Every further line is one record with its
sequence number, the previous record's hash (``prev``) and its own hash over its canonical JSON (``prev``
included), so an edited record no longer matches its hash and a removed or reordered one no longer follows
its predecessor. The hashes alone are public arithmetic: whoever edits a record can recompute them. The
signature is what they cannot redo without the deployment's private key (Airflow connection
``ebr_audit_signing``); a verifier needs only the public key. Each trail names the previous trail's head,
so the trails of one environment form one chain from its first (genesis) trail.

Plain Python: log files or Airflow's REST API (``/api/v2``) as the source, so it runs inside a task, from
the command line and in tests. One trail may cover several runs (a rollout: the controller run and its
stage runs).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from event_broker_rollout import orchestrator, paths
from event_broker_rollout.evidence.audit import (
    canonical_json,
)
from event_broker_rollout.evidence.results import report_dir
from event_broker_rollout.evidence.trail_entries import (
    ApiReader,
    Entry,
    RunRef,
    read_api_logs,
    read_api_people,
    run_log_dir,
    sha256_hex,
    utc_timestamp,
)
from event_broker_rollout.evidence.trail_sources import read_every_log_part
from event_broker_rollout.orchestrator import OrchestratorError

TRAIL_KIND = "ebr.audit-trail"
# Version 2: signed, bound to an environment, chained to the previous trail. Version 1 trails (unsigned)
# predate the chain: they are neither linked to nor verified as part of it.
TRAIL_VERSION = 2
TRAIL_FILE_NAME = "audit-trail.jsonl"
# The Airflow connection whose password holds the deployment's Ed25519 private key (PKCS#8 PEM).
SIGNING_CONN_ID = "ebr_audit_signing"
SIGNATURE_ALGORITHM = "ed25519"
# A verifier's trusted public key (PEM): this variable names the file; the lab's is in its state folder.
PUBLIC_KEY_ENV = "EBR_AUDIT_PUBLIC_KEY"
LAB_PUBLIC_KEY_FILE = "audit-signing.pub"
LAB_PRIVATE_KEY_FILE = "secrets/audit-signing.key"
# The catalog's operational topic the trail is published to (config/catalog.yaml).
AUDIT_TOPIC_NAME = "rollout-audit"
# --- signing -----------------------------------------------------------------------------------------


class SigningKeyError(RuntimeError):
    """The signing or verifying key is missing or unusable (messages name where, never key material)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """A public key's name in a trail's header: the SHA-256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def private_key_pem(private_key: Ed25519PrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_private_key(pem: str, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{where}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as error:
        raise SigningKeyError(f"public key {path}: {error.strerror}") from None
    except ValueError:
        raise SigningKeyError(f"public key {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"public key {path}: not an Ed25519 public key")
    return key


def signing_key_from_connection(conn_id: str = SIGNING_CONN_ID) -> Ed25519PrivateKey:
    """The deployment's signing key from its connection (Airflow: any secrets backend it is configured
    with; the lab's connections file, ``AIRFLOW_CONN_EBR_AUDIT_SIGNING`` in containers). Airflow masks a
    connection's password in task logs; it is never returned, logged or written here."""
    try:
        connection = orchestrator.current().connection(conn_id)
    except OrchestratorError as error:
        raise SigningKeyError(f"{error}: the trail cannot be signed (lab: make lab-up writes it)") from None
    if not connection.password:
        raise SigningKeyError(f"connection {conn_id}: its password holds no private key")
    return load_private_key(connection.password, f"connection {conn_id}")


def signing_key_from_file(path: Path) -> Ed25519PrivateKey:
    """A private key file for the command line; like every secret file it must be private to its owner."""
    try:
        if path.stat().st_mode & 0o077:
            raise SigningKeyError(f"signing key {path}: readable by others (chmod 600 it)")
        pem = path.read_text()
    except OSError as error:
        raise SigningKeyError(f"signing key {path}: {error.strerror}") from None
    return load_private_key(pem, f"signing key {path}")


def default_public_key_path() -> Path:
    """The verifier's trusted public key: ``EBR_AUDIT_PUBLIC_KEY``, else the lab's."""
    configured = os.environ.get(PUBLIC_KEY_ENV)
    return Path(configured) if configured else paths.lab_state_dir() / LAB_PUBLIC_KEY_FILE


def trusted_public_keys(key_files: Sequence[Path] = ()) -> list[Ed25519PublicKey]:
    """The public keys a trail may be signed with: the files given, else the default one if it exists."""
    if key_files:
        return [load_public_key(path) for path in key_files]
    default = default_public_key_path()
    return [load_public_key(default)] if default.is_file() else []


# --- the chained trail -------------------------------------------------------------------------------


def chain_start(environment: str, runs: Sequence[RunRef], previous_head: str | None) -> str:
    """The hash the first record chains from: bound to the environment, the runs the trail says it covers
    and the head of the environment's previous trail (none for its first trail)."""
    return sha256_hex(
        canonical_json(
            {
                "kind": TRAIL_KIND,
                "version": TRAIL_VERSION,
                "environment": environment,
                "runs": [run.to_dict() for run in runs],
                "previous_head": previous_head,
            }
        )
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """A record's hash: its canonical JSON without the hash itself (``prev`` included)."""
    return sha256_hex(canonical_json({key: value for key, value in record.items() if key != "hash"}))


def header_hash(header: Mapping[str, Any]) -> str:
    return sha256_hex(
        canonical_json(
            {key: value for key, value in header.items() if key not in ("header_hash", "signature")}
        )
    )


def signed_bytes(header: Mapping[str, Any]) -> bytes:
    """What the signature covers: the whole header but the signature (the head commits to every record)."""
    return canonical_json({key: value for key, value in header.items() if key != "signature"}).encode()


def sign_header(header: dict[str, Any], signing_key: Ed25519PrivateKey) -> None:
    header["signature"] = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(signing_key.public_key()),
        "value": base64.b64encode(signing_key.sign(signed_bytes(header))).decode(),
    }


@dataclass(frozen=True)
class Trail:
    header: Mapping[str, Any]
    records: Sequence[Mapping[str, Any]]

    @property
    def head(self) -> str:
        return str(self.header["head"])

    @property
    def key(self) -> str:
        """The Kafka key of its messages: the first run (a rollout's controller run)."""
        first = self.header["runs"][0]
        return f"{first['dag_id']}/{first['run_id']}"

    @property
    def previous_head(self) -> str | None:
        previous = self.header.get("previous")
        return str(previous["head"]) if previous else None

    def lines(self) -> list[str]:
        return [canonical_json(self.header), *(canonical_json(record) for record in self.records)]


def build_trail(
    runs: Sequence[RunRef],
    entries: Iterable[Entry],
    *,
    source: str,
    environment: str,
    signing_key: Ed25519PrivateKey,
    previous: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    exported_at: datetime | None = None,
) -> Trail:
    """Order the entries (timestamp, task, map index, try, position in the log), chain them from the
    previous trail's head (``previous``: its ``trail`` path under the reports folder and its ``head``;
    None for the environment's first trail) and sign the header."""
    if not runs:
        raise ValueError("a trail covers at least one run")
    start = chain_start(environment, runs, previous["head"] if previous else None)
    last = start
    records = []
    kinds: dict[str, int] = {}
    for seq, entry in enumerate(sorted(entries, key=Entry.sort_key), start=1):
        record = {"seq": seq, **entry.body(), "prev": last}
        record["hash"] = last = record_hash(record)
        records.append(record)
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    header: dict[str, Any] = {
        "kind": TRAIL_KIND,
        "version": TRAIL_VERSION,
        "environment": environment,
        "runs": [run.to_dict() for run in runs],
        "exported_at": utc_timestamp(exported_at or datetime.now(UTC)),
        "source": source,
        "notes": list(notes),
        "records": len(records),
        "counts": dict(sorted(kinds.items())),
        "previous": {"trail": previous["trail"], "head": previous["head"]} if previous else None,
        "chain_start": start,
        "head": last,
    }
    header["header_hash"] = header_hash(header)
    sign_header(header, signing_key)
    return Trail(header=header, records=records)


def trail_path(run: RunRef) -> Path:
    """Beside the run's reports: ``reports/<dag_id>/<run_id>/audit-trail.jsonl``."""
    return report_dir(run.dag_id, run.run_id) / TRAIL_FILE_NAME


def write_trail(trail: Trail, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(trail.lines()) + "\n")
    tmp.replace(path)
    return path


# --- the chain of trails ----------------------------------------------------------------------------
#
# The previous trail is found in the reports folder, not on the audit topic: every trail is written there,
# while only those of a secured cluster are published (a first rollout's preflight and infrastructure
# trails never reach the topic), and the folder is readable without the cluster. The audit topic is the
# independent copy ``verify --cluster`` compares the files with.


class ChainError(RuntimeError):
    pass


# An environment names a chain and its lock file: a plain name, as environment files have.
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def checked_environment(name: str) -> str:
    if not _ENVIRONMENT_NAME.match(name):
        raise ChainError(f"environment {name!r}: not a plain name (letters, digits, '.', '_', '-')")
    return name


def reports_relative(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def read_header(path: Path) -> dict[str, Any] | None:
    try:
        with path.open() as handle:
            return _json_object(handle.readline())
    except (OSError, UnicodeDecodeError):
        return None


def environment_trails(root: Path, environment: str) -> list[tuple[Path, dict[str, Any]]]:
    """The environment's signed trails under the reports folder (``<dag_id>/<run_id>/``; the ``latest``
    links are skipped), oldest export first."""
    found = []
    for path in root.glob(f"*/*/{TRAIL_FILE_NAME}"):
        if path.parent.is_symlink():
            continue
        header = read_header(path)
        if (
            header is not None
            and header.get("kind") == TRAIL_KIND
            and header.get("version") == TRAIL_VERSION
            and header.get("environment") == environment
        ):
            found.append((path, header))
    return sorted(found, key=lambda item: (str(item[1].get("exported_at")), str(item[0])))


@contextmanager
def chain_lock(root: Path, environment: str) -> Iterator[None]:
    """One exporter at a time per environment (a rollout's stages and the daily compliance run may
    finish together): finding the previous trail and writing the next one is one step."""
    lock_dir = root / ".audit-chain"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{checked_environment(environment)}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def previous_link(root: Path, environment: str, target: Path) -> dict[str, str] | None:
    """The link a trail written to ``target`` carries: the path and head of the environment's newest
    trail. Re-exporting the newest trail (a retried export task) replaces it in its place; a trail that a
    later one already chains from is not rewritten (that would break the chain)."""
    trails = environment_trails(root, environment)
    resolved = target.resolve()
    if target.exists() and resolved.is_relative_to(root.resolve()):
        rewritten = reports_relative(target, root)
        successors = [
            reports_relative(path, root)
            for path, header in trails
            if (header.get("previous") or {}).get("trail") == rewritten
        ]
        if successors:
            raise ChainError(
                f"{rewritten} is already chained from by {successors[0]}: rewriting it would break the "
                "chain (write the re-export elsewhere with --out)"
            )
    others = [(path, header) for path, header in trails if path.resolve() != resolved]
    if not others:
        return None
    path, header = others[-1]
    return {"trail": reports_relative(path, root), "head": str(header["head"])}


# --- verification ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    intact: bool
    records: int
    head: str | None = None
    break_at: int | None = None  # 0: the header; n: the n-th record (line n + 1)
    problem: str | None = None
    signed_by: str | None = None

    def summary(self) -> str:
        if self.intact:
            return f"trail intact: {self.records} records, head {self.head}, signed by {self.signed_by}"
        where = "the header" if self.break_at == 0 else f"record {self.break_at}"
        return f"trail broken at {where} (line {(self.break_at or 0) + 1}): {self.problem}"


def _broken(at: int, problem: str, records: int = 0) -> Verification:
    return Verification(intact=False, records=records, break_at=at, problem=problem)


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _previous_problem(previous: Any) -> str | None:
    if previous is None:
        return None
    if (
        not isinstance(previous, dict)
        or not isinstance(previous.get("trail"), str)
        or not isinstance(previous.get("head"), str)
    ):
        return "bad header: previous must be null or name a trail and its head"
    return None


def _header_problem(header: dict[str, Any] | None) -> str | None:
    if header is None:
        return "bad header: not a JSON object"
    if header.get("kind") != TRAIL_KIND or header.get("version") != TRAIL_VERSION:
        return f"bad header: not a {TRAIL_KIND} version {TRAIL_VERSION} header"
    required = ("environment", "runs", "records", "previous", "chain_start", "head", "header_hash")
    missing = [name for name in required if name not in header]
    if missing:
        return f"bad header: missing {', '.join(missing)}"
    if header["header_hash"] != header_hash(header):
        return "bad header: edited (its content no longer matches its header_hash)"
    runs = header["runs"]
    if (
        not isinstance(runs, list)
        or not runs
        or not all(isinstance(r, dict) and {"dag_id", "run_id"} <= set(r) for r in runs)
    ):
        return "bad header: runs must list dag_id/run_id pairs"
    problem = _previous_problem(header["previous"])
    if problem is not None:
        return problem
    previous_head = header["previous"]["head"] if header["previous"] else None
    expected = chain_start(
        str(header["environment"]), [RunRef(r["dag_id"], r["run_id"]) for r in runs], previous_head
    )
    if header["chain_start"] != expected:
        return "bad header: chain_start does not belong to the environment, runs and previous trail it names"
    return None


def _signature_problem(header: Mapping[str, Any], trusted: Sequence[Ed25519PublicKey]) -> str | None:
    signature = header.get("signature")
    if not isinstance(signature, dict) or signature.get("algorithm") != SIGNATURE_ALGORITHM:
        return f"unsigned: the header carries no {SIGNATURE_ALGORITHM} signature"
    keys = {key_id(key): key for key in trusted}
    if not keys:
        return (
            f"signature not checked: no trusted public key (give --public-key, or set {PUBLIC_KEY_ENV}; "
            f"none at {default_public_key_path()})"
        )
    signer = str(signature.get("key_id"))
    key = keys.get(signer)
    if key is None:
        return f"signed by another key ({signer}); trusted: {', '.join(keys)}"
    try:
        key.verify(base64.b64decode(str(signature.get("value")), validate=True), signed_bytes(header))
    except (InvalidSignature, binascii.Error, ValueError):
        return (
            f"signature does not verify with key {signer}: the header or its records were rewritten after "
            "signing (hashes recomputed)"
        )
    return None


def _out_of_place(number: int, record: Mapping[str, Any], later: Sequence[dict[str, Any] | None]) -> str:
    """Why a record that is intact in itself does not follow its predecessor."""
    seq = record.get("seq")
    if seq == number:
        before = "the header's chain start" if number == 1 else f"record {number - 1}"
        return f"edited: it does not chain from {before} (rewritten with a new hash, or from another trail)"
    if any(other is not None and other.get("seq") == number for other in later):
        return f"reordered: record {number} appears later; this place holds record {seq}"
    if isinstance(seq, int) and seq > number:
        missing = str(number) if seq == number + 1 else f"{number}-{seq - 1}"
        return f"removed: record(s) {missing} missing; this place holds record {seq}"
    return f"reordered: this place holds record {seq}, which belongs earlier"


def verify_lines(lines: Sequence[str], trusted: Sequence[Ed25519PublicKey]) -> Verification:
    """Check the header, each record's hash and its link to the one before, the head, then the signature
    with the trusted keys; the first break wins (a record break is named before the signature's, as the
    more precise of the two)."""
    if not lines:
        return _broken(0, "bad header: the file is empty")
    header = _json_object(lines[0])
    problem = _header_problem(header)
    if problem is not None or header is None:
        return _broken(0, problem or "bad header")
    records = [_json_object(line) for line in lines[1:]]
    previous = str(header["chain_start"])
    for number, record in enumerate(records, start=1):
        if record is None:
            return _broken(number, "edited: not a JSON object", number - 1)
        if record.get("hash") != record_hash(record):
            return _broken(number, "edited: its content no longer matches its hash", number - 1)
        if record.get("prev") != previous:
            return _broken(number, _out_of_place(number, record, records[number:]), number - 1)
        previous = str(record["hash"])
    count = len(records)
    if count < int(header["records"]):
        return _broken(
            count + 1,
            f"removed: the trail ends after {count} records; the header lists {header['records']}",
            count,
        )
    if count > int(header["records"]):
        return _broken(
            int(header["records"]) + 1,
            f"appended: the header lists {header['records']} records; the trail has {count}",
            count,
        )
    if previous != header["head"]:
        return _broken(count, "the last record is not the header's head (records replaced at the end)", count)
    problem = _signature_problem(header, trusted)
    if problem is not None:
        return _broken(0, problem, count)
    return Verification(intact=True, records=count, head=previous, signed_by=header["signature"]["key_id"])


def verify_trail(path: Path, public_keys: Sequence[Ed25519PublicKey] | None = None) -> Verification:
    """One trail file: its records, header and signature (``public_keys``: the trusted keys; by default
    the one ``default_public_key_path`` names)."""
    trusted = trusted_public_keys() if public_keys is None else public_keys
    return verify_lines(path.read_text().splitlines(), trusted)


@dataclass(frozen=True)
class ChainVerification:
    """The run-to-run chain ending at one trail: every trail back to the environment's first."""

    intact: bool
    environment: str | None
    trails: Sequence[Path] = ()  # the chain, oldest first (up to the break, if any)
    trail: str | None = None  # where the first break is
    problem: str | None = None

    def summary(self) -> str:
        if self.intact:
            first = self.trails[0] if self.trails else "-"
            return f"chain intact: {len(self.trails)} trails of {self.environment}, from {first}"
        return f"chain broken at {self.trail}: {self.problem}"


def _chain_broken(
    environment: str | None, trails: Sequence[Path], at: str, problem: str
) -> ChainVerification:
    return ChainVerification(intact=False, environment=environment, trails=trails, trail=at, problem=problem)


def verify_chain(
    path: Path, public_keys: Sequence[Ed25519PublicKey] | None = None, root: Path | None = None
) -> ChainVerification:
    """Walk back from the trail at ``path`` through the previous trails it names (under the reports
    folder ``root``) to the environment's first, checking each trail whole and that it is the one its
    successor names; then that no trail of the environment exported before it is left out of the chain
    (a removed link, or a fork). The first break in chain order (oldest first) is named."""
    trusted = trusted_public_keys() if public_keys is None else public_keys
    root = root or paths.reports_dir()

    def label(trail: Path) -> str:
        resolved = trail.resolve()
        return reports_relative(trail, root) if resolved.is_relative_to(root.resolve()) else str(trail)

    header = read_header(path)
    environment = str(header.get("environment")) if header else None
    walked: list[Path] = [path]
    missing: tuple[str, str] | None = None  # (the trail naming it, the problem)
    while header is not None and isinstance(header.get("previous"), dict):
        named = str(header["previous"].get("trail"))
        candidate = root / named
        if not candidate.resolve().is_relative_to(root.resolve()) or not candidate.is_file():
            missing = (label(walked[-1]), f"its previous trail {named} is missing from {root}")
            break
        if any(candidate.resolve() == seen.resolve() for seen in walked):
            missing = (label(walked[-1]), f"its previous trail {named} is already in the chain (a loop)")
            break
        walked.append(candidate)
        header = read_header(candidate)
    chain = walked[::-1]
    for index, trail in enumerate(chain):
        result = verify_trail(trail, trusted)
        if not result.intact:
            return _chain_broken(environment, chain[:index], label(trail), result.summary())
        trail_header = read_header(trail) or {}
        if trail_header.get("environment") != environment:
            return _chain_broken(
                environment, chain[:index], label(trail), f"a trail of {trail_header.get('environment')}"
            )
        if index == 0 and missing is not None:
            # The oldest trail reached is intact, so the link it names really is gone.
            return _chain_broken(environment, chain[:1], missing[0], missing[1])
        if index > 0:
            predecessor = read_header(chain[index - 1]) or {}
            named_head = (trail_header.get("previous") or {}).get("head")
            if named_head != predecessor.get("head"):
                return _chain_broken(
                    environment,
                    chain[:index],
                    label(trail),
                    f"it names {label(chain[index - 1])} as previous with another head "
                    f"({named_head}; that file's head is {predecessor.get('head')})",
                )
    newest = (read_header(path) or {}).get("exported_at", "")
    in_chain = {trail.resolve() for trail in chain}
    for other, other_header in environment_trails(root, str(environment)):
        if other.resolve() not in in_chain and str(other_header.get("exported_at")) <= str(newest):
            return _chain_broken(
                environment,
                chain,
                label(other),
                "not in the chain: no later trail names it as previous (a link was removed, or the chain forked)",
            )
    return ChainVerification(intact=True, environment=environment, trails=chain)


# --- the audit topic's copy --------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicMessage:
    key: str
    value: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Publication:
    """One trail as published: its messages (header first), in topic order."""

    key: str
    messages: tuple[TopicMessage, ...]

    @property
    def header(self) -> dict[str, Any]:
        return _json_object(self.messages[0].value) or {}

    def where(self, line: int = 0) -> str:
        message = self.messages[min(line, len(self.messages) - 1)]
        return f"partition {message.partition} offset {message.offset}"


def topic_publications(messages: Iterable[TopicMessage], environment: str) -> dict[str, Publication]:
    """The newest publication of each trail (by key) of the environment: a header message starts one,
    the messages with its key that follow are its records. A trail published again (a retried export
    task) replaces its earlier copy, as it replaced the file."""
    building: dict[str, list[TopicMessage]] = {}
    newest: dict[str, Publication] = {}
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        parsed = _json_object(message.value) or {}
        if parsed.get("kind") == TRAIL_KIND:
            if parsed.get("version") == TRAIL_VERSION and parsed.get("environment") == environment:
                building[message.key] = [message]
            else:
                building.pop(message.key, None)
        elif message.key in building:
            building[message.key].append(message)
    for key, found in building.items():
        newest[key] = Publication(key, tuple(found))
    return newest


@dataclass(frozen=True)
class TopicComparison:
    agrees: bool
    topic: str
    trails: int
    published: int
    trail: str | None = None
    problem: str | None = None

    def summary(self) -> str:
        if self.agrees:
            return (
                f"audit topic {self.topic} agrees: {self.published} of {self.trails} trails published there, "
                "each identical to its file (the others were not published: the cluster was not secured or "
                "not reachable then)"
            )
        return f"audit topic {self.topic} disagrees at {self.trail}: {self.problem}"


def _line_difference(lines: Sequence[str], publication: Publication) -> str | None:
    """The first line where a file and its copy on the topic differ (as JSON), records before the header:
    a changed record is named even though the header (its head) changed with it."""
    copy = [message.value for message in publication.messages]
    count = max(len(lines), len(copy))
    for line in [*range(1, count), 0]:
        on_file = lines[line] if line < len(lines) else None
        on_topic = copy[line] if line < len(copy) else None
        if on_file is not None and on_topic is not None and _json_object(on_file) == _json_object(on_topic):
            continue
        where = "the header" if line == 0 else f"record {line}"
        if on_file is None:
            return f"{where} is on the topic ({publication.where(line)}) but not in the file"
        if on_topic is None:
            return f"{where} is in the file but not on the topic (its copy ends at {publication.where(line)})"
        return f"{where} (line {line + 1}) differs from the topic's copy ({publication.where(line)})"
    return None


def compare_with_topic(
    chain: Sequence[tuple[str, Sequence[str]]],
    messages: Iterable[TopicMessage],
    environment: str,
    topic: str,
    *,
    whole_chain: bool = True,
) -> TopicComparison:
    """Compare each trail of a chain (``(label, lines)``, oldest first) with its newest copy on the audit
    topic, line by line as JSON; then that every trail of the environment the topic holds is in the chain
    (``whole_chain``: the chain ends at the environment's newest file, so a published trail whose file
    was removed is named; otherwise only those exported before the chain's last). Names the first
    difference."""
    publications = topic_publications(messages, environment)
    keys: set[str] = set()
    published = 0
    newest = ""
    for trail_label, lines in chain:
        header = _json_object(lines[0]) if lines else None
        if header is None or not header.get("runs"):
            return TopicComparison(False, topic, len(chain), published, trail_label, "no readable header")
        trail = Trail(header=header, records=())
        keys.add(trail.key)
        newest = max(newest, str(header.get("exported_at")))
        publication = publications.get(trail.key)
        if publication is None:
            continue
        published += 1
        problem = _line_difference(lines, publication)
        if problem is not None:
            return TopicComparison(False, topic, len(chain), published, trail_label, problem)
    for key, publication in sorted(publications.items(), key=lambda item: item[1].messages[0].offset):
        if key in keys or (not whole_chain and str(publication.header.get("exported_at")) > newest):
            continue
        return TopicComparison(
            False,
            topic,
            len(chain),
            published,
            key,
            f"published ({publication.where()}, head {publication.header.get('head')}) but its file is not "
            "in the chain",
        )
    return TopicComparison(True, topic, len(chain), published)


# --- exporting ---------------------------------------------------------------------------------------


@dataclass
class Export:
    path: Path
    trail: Trail
    publication: str = "not published"
    published: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What the export task returns (XCom): paths, counts, hashes and the public key's id only."""
        return {
            "trail": str(self.path),
            "records": int(self.trail.header["records"]),
            "head": self.trail.head,
            "previous_head": self.trail.previous_head,
            "signed_by": self.trail.header["signature"]["key_id"],
            "published": self.published,
            "publication": self.publication,
        }


def export_trail(
    runs: Sequence[RunRef],
    *,
    environment: str,
    signing_key: Ed25519PrivateKey,
    logs: Path | None = None,
    api: ApiReader | None = None,
    people: Sequence[Entry] = (),
    out: Path | None = None,
) -> Export:
    """Assemble, sign and write the runs' trail, chained to the environment's newest trail in the reports
    folder: records from log files under ``logs`` (else from ``api``); who triggered and approved from
    ``api`` when given, plus ``people`` a caller already knows."""
    if logs is None and api is None:
        raise ValueError("a trail needs log files or the REST API as its source")
    entries: list[Entry] = list(people)
    notes: list[str] = []
    for run in runs:
        if logs is not None:
            if not run_log_dir(logs, run).is_dir():
                notes.append(
                    f"{run}: no task log files under {logs} (an in-process dag.test() run writes none): "
                    "no audit records"
                )
            # Every part of every attempt (a resumed task's, the triggerer's); a gap in a task's record
            # numbers is a finding in the trail (event_broker_rollout.evidence.trail_sources).

            found, findings = read_every_log_part(logs, run)
            entries += found
            notes += findings
        else:
            assert api is not None
            entries += read_api_logs(api, run)
        if api is not None:
            entries += read_api_people(api, run)
    if api is None and not people and entries:
        notes.append("who triggered and who approved: not read (no REST API given)")
    source = "log files" if logs is not None else "rest api"
    if api is not None and logs is not None:
        source += " + rest api"
    target = out or trail_path(runs[0])
    root = paths.reports_dir()
    with chain_lock(root, environment):
        trail = build_trail(
            runs,
            entries,
            source=source,
            environment=environment,
            signing_key=signing_key,
            previous=previous_link(root, environment, target),
            notes=notes,
        )
        path = write_trail(trail, target)
    return Export(path=path, trail=trail, notes=notes)
