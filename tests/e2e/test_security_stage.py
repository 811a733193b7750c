"""The security stage on the real lab: TLS, SCRAM, ACLs, no downtime, verified from outside."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import LAB_STATE, REPO, lab_credentials, needs_root, run_stage, secure_client_config
from tests.e2e.test_infrastructure_stage import processes

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

BROKERS = ("10.77.0.11", "10.77.0.12", "10.77.0.13")
KCAT = str(REPO / "lab" / "bin" / "kcat")  # Debian's kcat with a librdkafka that can do SCRAM


def kcat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KCAT, *args], capture_output=True, text=True, timeout=60, check=False)


def test_migration_lost_and_duplicated_nothing(security_ready):
    report = security_ready["report"]
    migration = report["summary"]["migration"]
    assert migration["produced"] > 0 and migration["produced"] == migration["consumed"]
    assert (migration["lost"], migration["duplicated"]) == (0, 0)
    assert report["status"] == "passed"


def test_plaintext_is_gone_and_sasl_ssl_works(security_ready):
    plain = kcat("-b", "10.77.0.11:9092", "-L", "-m", "5")
    assert plain.returncode != 0
    password = lab_credentials()["admin"]
    secure = kcat(
        "-b",
        "10.77.0.11:9094",
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanism=SCRAM-SHA-512",
        "-X",
        "sasl.username=admin",
        "-X",
        f"sasl.password={password}",
        "-X",
        f"ssl.ca.location={LAB_STATE / 'ca' / 'ca.crt'}",
        "-L",
        "-m",
        "10",
    )
    assert secure.returncode == 0, secure.stderr
    assert "3 brokers" in secure.stdout


@pytest.mark.parametrize("address", BROKERS)
def test_tls_1_1_refused_and_1_2_accepted(security_ready, address):
    old = subprocess.run(
        ["openssl", "s_client", "-connect", f"{address}:9094", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert old.returncode != 0 and "alert protocol version" in old.stderr
    new = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{address}:9094",
            "-tls1_2",
            "-CAfile",
            str(LAB_STATE / "ca" / "ca.crt"),
            "-verify_ip",
            address,
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert new.returncode == 0 and "Verify return code: 0 (ok)" in new.stdout


def test_a_principal_without_grants_cannot_read_a_phi_topic(security_ready):
    from event_broker_rollout.resources.verify import read_refused

    refused, observed = read_refused(
        secure_client_config("ebr-probe"), "healthcare.observation.recorded.v1", "ebr-probe.e2e"
    )
    assert refused, observed


def test_no_password_or_key_material_in_logs_or_reports(security_ready):
    secrets = list(lab_credentials().values())
    keys = [
        line
        for path in (LAB_STATE / "ca").rglob("*.key")
        for line in path.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    reports = [p for p in (REPO / "reports" / "event_broker_security").rglob("*") if p.is_file()]
    haystacks = [security_ready["output"], *(p.read_text(errors="replace") for p in reports)]
    for secret in secrets + keys:
        assert not any(secret in text for text in haystacks)


def test_second_run_changes_nothing_and_restarts_nothing(security_ready):
    before = processes()
    proc, report = run_stage("security", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["counts"]["changed"] == 0
    assert processes() == before
