"""Hosts: key material and secret-bearing files private, no passwords in configuration."""

from __future__ import annotations

from collections.abc import Sequence

from event_broker_rollout.compliance.checks import (
    Findings,
)
from event_broker_rollout.compliance.facts import (
    FileStat,
    HostFacts,
)
from event_broker_rollout.config.policy import CompliancePolicy, HostFile
from event_broker_rollout.evidence.results import Result


def _mode(bits: int) -> str:
    return f"0{bits:03o}"


def secret_files(
    policy: CompliancePolicy, host: HostFacts, files: Sequence[HostFile], service_user: str
) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.host.secret-files"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    results = []
    for item in files:
        owner = item.owner or service_user
        expected = {"owner": owner, "mode": f"{item.max_mode} or stricter"}
        found = host.files.get(item.path)
        if found is None:
            results.append(
                findings.result(
                    check_id,
                    False,
                    host=host.host,
                    target=item.path,
                    observed="absent",
                    expected=expected,
                    message=f"{item.kind} {item.path}: absent",
                )
            )
            continue
        problems = []
        wider = found.mode & ~item.max_mode_bits
        if wider:
            problems.append(f"mode {_mode(found.mode)} grants {_mode(wider)} beyond {item.max_mode}")
        if found.owner != owner:
            problems.append(f"owned by {found.owner}, not {owner}")
        results.append(
            findings.result(
                check_id,
                not problems,
                host=host.host,
                target=item.path,
                observed={"owner": found.owner, "group": found.group, "mode": _mode(found.mode)},
                expected=expected,
                message=f"{item.kind} {item.path}: " + ("; ".join(problems) if problems else "protected"),
            )
        )
    return results


def no_passwords_in_config(
    policy: CompliancePolicy, host: HostFacts, files: Sequence[HostFile]
) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.host.no-passwords-in-config"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    results = []
    for item in files:
        if not item.scan_for_passwords or host.files.get(item.path) is None:
            continue
        count = host.password_settings.get(item.path)
        if count is None:
            results.append(
                findings.unverified(
                    check_id, f"{item.path} could not be scanned", host=host.host, target=item.path
                )
            )
            continue
        results.append(
            findings.result(
                check_id,
                count == 0,
                host=host.host,
                target=item.path,
                observed=f"{count} password or secret settings",
                expected="none",
                message=f"{item.path}: "
                + ("no password setting" if count == 0 else f"{count} lines set a password or secret"),
            )
        )
    return results


def airflow_secrets(policy: CompliancePolicy, files: Sequence[FileStat | str], owner: str) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.host.airflow-secrets"
    limit = int(policy.airflow_secrets_max_mode, 8)
    results = []
    for item in files:
        if isinstance(item, str):
            results.append(
                findings.result(
                    check_id,
                    False,
                    host="airflow",
                    target=item,
                    observed="absent",
                    expected="present",
                    message=f"{item}: absent",
                )
            )
            continue
        problems = []
        if item.mode & ~limit:
            problems.append(f"mode {_mode(item.mode)} wider than {policy.airflow_secrets_max_mode}")
        if item.owner != owner:
            problems.append(f"owned by {item.owner}, not {owner}")
        results.append(
            findings.result(
                check_id,
                not problems,
                host="airflow",
                target=item.path,
                observed={"owner": item.owner, "mode": _mode(item.mode)},
                expected={"owner": owner, "mode": f"{policy.airflow_secrets_max_mode} or stricter"},
                message=f"{item.path}: " + ("; ".join(problems) if problems else "owner-only"),
            )
        )
    return results
