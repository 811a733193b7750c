"""A whole rollout whose Kafka clients authenticate with Kerberos (SASL/GSSAPI) against the lab's KDC,
on a fourth lab cluster whose registry authenticates through the lab's OIDC provider.

`lab-kerberos` is lab10..12 with its own CA: every stage runs as operators run it, the rollout's own
clients (admin, components, canary, probe) side by side in one process, each from its own keytab; then
compliance re-verifies it. From outside, kcat shows what the secure listener accepts and refuses: the
admin's ticket is let in; no ticket, a stale keytab, a broker's own service principal and a password are
refused; a right ticket without grants is refused on a PHI topic.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from event_broker_devtools import lab_kdc
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.config.keytabs import broker_keytab_path, client_keytab_path
from tests.conftest import LAB_STATE, REPO, needs_root
from tests.e2e.second_cluster import devtool, lab_with_provider, results_by_id, rolled_out

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

ENVIRONMENT = "lab-kerberos"
KCAT = str(REPO / "lab" / "bin" / "kcat")
CLUSTER_CA = LAB_STATE / "ca-kerberos" / "ca.crt"
BOOTSTRAP = "10.77.0.20:9094"
PHI_TOPIC = "healthcare.patient.upserted.v1"
HOSTS = ("10.77.0.20", "10.77.0.21", "10.77.0.22")
REALM = "EBR.LAB"


@pytest.fixture(scope="module")
def kerberos_rollout(lab_hosts) -> Iterator[dict[str, dict]]:
    """lab10..12 up beside the main lab, the KDC and its keytabs, every stage run onto them in order;
    thrown away after."""
    lab_with_provider(12)
    devtool("lab_kdc", "up")
    with rolled_out(ENVIRONMENT, HOSTS) as reports:
        yield reports


def kcat_as(
    principal: str, keytab: Path, directory: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """kcat logged in as ``principal`` from ``keytab``, in a credential cache of its own."""
    return kcat(
        *("-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=GSSAPI"),
        *("-X", "sasl.kerberos.service.name=kafka", "-X", f"sasl.kerberos.principal={principal}"),
        *("-X", f"sasl.kerberos.keytab={keytab}"),
        *args,
        cache=directory / f"{principal.replace('/', '_')}.ccache",
        stdin=stdin,
    )


def kcat(*args: str, cache: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "KRB5_CONFIG": str(lab_kdc.krb5_conf())}
    if cache is not None:
        environment["KRB5CCNAME"] = f"FILE:{cache}"
    return subprocess.run(
        [KCAT, "-b", BOOTSTRAP, "-X", f"ssl.ca.location={CLUSTER_CA}", *args],
        input=stdin,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def keytab_of(principal: str) -> Path:
    return client_keytab_path(load_environment(ENVIRONMENT).security.kerberos, principal)


def test_every_stage_passed_with_tickets_and_the_migration_lost_nothing(kerberos_rollout):
    for stage, report in kerberos_rollout.items():
        assert report["status"] == "passed", stage
    security = results_by_id(kerberos_rollout["security"])
    migration = kerberos_rollout["security"]["summary"]["migration"]
    assert migration["produced"] > 0 and (migration["lost"], migration["duplicated"]) == (0, 0)
    principals = ["admin", *components_of(load_environment(ENVIRONMENT)).principals(), PROBE_PRINCIPAL]
    for principal in principals:
        ticket = security[f"identity.kerberos_ticket[{principal}]"]
        assert ticket["status"] == "pass", ticket
        assert ticket["observed"]["principal"] == f"{principal}@{REALM}"
    for probe in ("auth.no_credentials_refused", "auth.password_refused", "authz.no_grants_refused_on_phi"):
        assert security[probe]["status"] == "pass", security[probe]
    assert security["auth.scram_users_approved"]["observed"] == []  # no password logs anyone in
    preflight = results_by_id(kerberos_rollout["preflight"])
    assert preflight["sec.kerberos.kdc"]["status"] == "pass", preflight["sec.kerberos.kdc"]
    reached = [r for r in kerberos_rollout["preflight"]["results"] if r["id"] == "sec.kerberos.kdc_reachable"]
    assert len(reached) == len(HOSTS) and all(r["status"] == "pass" for r in reached), reached


def test_components_keep_their_contracts_with_their_tickets(kerberos_rollout):
    contracts = [r for r in kerberos_rollout["integration"]["results"] if r["id"].startswith("contract.")]
    assert contracts and all(r["status"] == "pass" for r in contracts), [
        (r["id"], r["status"]) for r in contracts if r["status"] != "pass"
    ]
    compliance = kerberos_rollout["compliance"]["results"]
    tickets = [r for r in compliance if r["id"] == "compliance.auth.kerberos-tickets"]
    assert len(tickets) == len(HOSTS) and all(r["status"] == "pass" for r in tickets), tickets
    required = results_by_id(kerberos_rollout["compliance"])["compliance.auth.required"]
    assert required["status"] == "pass", required


def test_the_admins_ticket_is_let_in_from_outside(kerberos_rollout, tmp_path):
    listed = kcat_as(f"admin@{REALM}", keytab_of("admin"), tmp_path, "-L", "-m", "10")
    assert listed.returncode == 0, listed.stderr
    assert "3 brokers" in listed.stdout


def test_no_ticket_a_stale_keytab_and_a_password_are_refused(kerberos_rollout, tmp_path):
    anonymous = kcat("-X", "security.protocol=SSL", "-L", "-m", "5")
    assert anonymous.returncode != 0 and "connection closed by peer" in anonymous.stderr
    # A keytab the realm's administrators replaced: the KDC grants it nothing to present.
    stale = kcat_as(
        f"{lab_kdc.STALE_PRINCIPAL}@{REALM}", keytab_of(lab_kdc.STALE_PRINCIPAL), tmp_path, "-L", "-m", "5"
    )
    assert stale.returncode != 0
    assert "Preauthentication failed" in stale.stderr or "kinit" in stale.stderr, stale.stderr
    password = kcat(
        *("-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512"),
        *("-X", "sasl.username=admin", "-X", "sasl.password=not-the-password"),
        *("-L", "-m", "5"),
    )
    assert password.returncode != 0
    assert "Unsupported SASL mechanism" in password.stderr or "authentication" in password.stderr.lower()


def test_a_brokers_own_service_ticket_is_no_client_identity(kerberos_rollout, tmp_path):
    """A genuine ticket of the realm for a name no rule maps to a principal: the broker refuses the login."""
    environment = load_environment(ENVIRONMENT)
    broker = environment.brokers[1]
    keytab = tmp_path / "broker.keytab"
    keytab.touch(mode=0o600)
    keytab.write_bytes(broker_keytab_path(environment.security.kerberos, broker).read_bytes())
    principal = f"kafka/{broker.address}@{REALM}"
    service = kcat_as(principal, keytab, tmp_path, "-L", "-m", "5")
    assert service.returncode != 0
    assert "connection closed by peer" in service.stderr, service.stderr
    # The ticket was good; the broker closed the connection because no rule gives the name a principal.
    bootstrap_host = environment.brokers[0].name
    log = (LAB_STATE / "hosts" / bootstrap_host / "root" / "var-log" / "kafka" / "server.log").read_text()
    assert f"No rules apply to {principal}" in log


def test_the_right_ticket_without_grants_is_refused_on_a_phi_topic(kerberos_rollout, tmp_path):
    probe = (f"{PROBE_PRINCIPAL}@{REALM}", keytab_of(PROBE_PRINCIPAL), tmp_path)
    produced = kcat_as(*probe, "-P", "-t", PHI_TOPIC, stdin="authorization probe\n")
    assert produced.returncode != 0
    assert "Topic authorization failed" in produced.stderr
    read = kcat_as(*probe, "-C", "-t", PHI_TOPIC, "-o", "beginning", "-e", "-c", "1")
    assert read.returncode != 0
    assert "authorization failed" in read.stderr.lower()
