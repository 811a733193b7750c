"""A whole rollout whose clients authenticate with certificates (mTLS), on a second lab cluster whose
registry authenticates through the lab's OIDC provider (Keycloak).

`lab-mtls` is lab4..6 with its own CA: every stage (preflight, infrastructure, security, schemas,
integration) runs as operators run it, then compliance re-verifies it. From outside, kcat and openssl
show what the secure listener accepts and refuses: the admin's certificate is let in; no certificate, a
certificate for the same name from another CA, and the right certificate of a principal without grants
are refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from event_broker_devtools.lab_connections import connections_file
from event_broker_devtools.lab_idp import OTHER_APPLICATION
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import Credentials, load_environment
from event_broker_rollout.hosts import tls
from event_broker_rollout.hosts.remote import RemoteError
from event_broker_rollout.hosts.secret_files import write_secret
from event_broker_rollout.security import stage as security_stage
from tests.conftest import LAB_STATE, REPO, lab_ssh, needs_root
from tests.e2e.second_cluster import lab_with_provider, results_by_id, rolled_out

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

ENVIRONMENT = "lab-mtls"
KCAT = str(REPO / "lab" / "bin" / "kcat")
MATERIAL = LAB_STATE / "ca-mtls"
BOOTSTRAP = "10.77.0.14:9094"
PHI_TOPIC = "healthcare.patient.upserted.v1"
HOSTS = ("10.77.0.14", "10.77.0.15", "10.77.0.16")


@pytest.fixture(scope="module")
def mtls_rollout(lab_hosts) -> Iterator[dict[str, dict]]:
    """lab4..6 up beside the main lab, every stage run onto them in order; thrown away after."""
    lab_with_provider(6)
    with rolled_out(ENVIRONMENT, HOSTS) as reports:
        yield reports


def kcat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            KCAT,
            "-b",
            BOOTSTRAP,
            "-X",
            "security.protocol=SSL",
            "-X",
            f"ssl.ca.location={MATERIAL / 'ca.crt'}",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def identity(certificate: Path, key: Path) -> list[str]:
    return ["-X", f"ssl.certificate.location={certificate}", "-X", f"ssl.key.location={key}"]


def client_files(principal: str) -> list[str]:
    return identity(MATERIAL / "clients" / f"{principal}.crt", MATERIAL / "clients" / f"{principal}.key")


def test_every_stage_passed_with_mtls_and_the_migration_lost_nothing(mtls_rollout):
    for stage, report in mtls_rollout.items():
        assert report["status"] == "passed", stage
    security = results_by_id(mtls_rollout["security"])
    migration = mtls_rollout["security"]["summary"]["migration"]
    assert migration["produced"] > 0 and (migration["lost"], migration["duplicated"]) == (0, 0)
    principals = ["admin", *components_of(load_environment(ENVIRONMENT)).principals()]
    for principal in principals:
        assert security[f"identity.client_certificate[{principal}]"]["status"] in ("changed", "ok")
    assert security["auth.no_credentials_refused"]["status"] == "pass"
    assert security["auth.foreign_certificate_refused"]["status"] == "pass"
    assert security["auth.scram_users_approved"]["observed"] == []  # no password logs anyone in
    assert not [key for key in security if key.startswith("scram.user[")]


def test_components_keep_their_contracts_with_their_certificates(mtls_rollout):
    contracts = [r for r in mtls_rollout["integration"]["results"] if r["id"].startswith("contract.")]
    assert contracts and all(r["status"] == "pass" for r in contracts), [
        (r["id"], r["status"]) for r in contracts if r["status"] != "pass"
    ]
    compliance = results_by_id(mtls_rollout["compliance"])
    assert compliance["compliance.auth.required"]["status"] == "pass"
    assert compliance["compliance.auth.scram-users-approved"]["status"] == "pass"
    certificates = [
        r for r in mtls_rollout["compliance"]["results"] if r["id"] == "compliance.auth.client-certificates"
    ]
    principals = ["admin", *components_of(load_environment(ENVIRONMENT)).principals()]
    assert len(certificates) == len(principals) and all(r["status"] == "pass" for r in certificates)


def test_the_admin_certificate_is_let_in_from_outside(mtls_rollout):
    listed = kcat(*client_files("admin"), "-L", "-m", "10")
    assert listed.returncode == 0, listed.stderr
    assert "3 brokers" in listed.stdout


def test_no_certificate_is_refused_by_kcat_and_openssl(mtls_rollout):
    anonymous = kcat("-L", "-m", "5")
    assert anonymous.returncode != 0
    assert "bad certificate" in anonymous.stderr or "certificate required" in anonymous.stderr
    handshake = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            BOOTSTRAP,
            "-CAfile",
            str(MATERIAL / "ca.crt"),
            "-verify_return_error",
            "-ign_eof",  # TLS 1.3 refuses after the handshake: read on until the broker's alert
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # The broker's own certificate checks out; the broker then refuses a client that showed none.
    assert "Verify return code: 0 (ok)" in handshake.stdout
    assert handshake.returncode != 0
    assert "alert bad certificate" in handshake.stderr or "alert certificate required" in handshake.stderr


def test_the_same_name_from_another_ca_is_refused(mtls_rollout):
    certificate, key = tls.foreign_client_identity("admin")  # CN=admin, a super user's name
    impostor = kcat(*identity(certificate, key), "-L", "-m", "5")
    assert impostor.returncode != 0
    assert "bad certificate" in impostor.stderr or "unknown ca" in impostor.stderr


def test_the_right_certificate_without_grants_is_refused_on_a_phi_topic(mtls_rollout):
    produced = kcat(*client_files(PROBE_PRINCIPAL), "-P", "-t", PHI_TOPIC, stdin="authorization probe\n")
    assert produced.returncode != 0
    assert "Topic authorization failed" in produced.stderr
    read = kcat(*client_files(PROBE_PRINCIPAL), "-C", "-t", PHI_TOPIC, "-o", "beginning", "-e", "-c", "1")
    assert read.returncode != 0
    assert "authorization failed" in read.stderr.lower()


def test_switching_the_secured_cluster_to_scram_stops_before_any_change(mtls_rollout, tmp_path, monkeypatch):
    """The same cluster declared with SCRAM: the stage refuses up front, so no listener is changed under
    running clients and no client loses its identity (a switch is a migration this stage does not make)."""
    for conn_id, connection in json.loads(connections_file().read_text()).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    mtls = load_environment(ENVIRONMENT)
    passwords = tmp_path / "credentials.json"
    write_secret(passwords, json.dumps({"admin": "a-password-of-the-admin-0123"}))
    credentials = Credentials(source="file", path=str(passwords))
    scram = mtls.model_copy(
        update={
            "security": mtls.security.model_copy(
                update={"client_authentication": "scram", "credentials": credentials}
            )
        }
    )
    before = [lab_ssh(address, "md5sum /etc/kafka/server.properties").stdout for address in HOSTS]
    with pytest.raises(RemoteError, match=r"refused the admin's scram login.*a migration of its own"):
        security_stage.configure_phase(scram, "listeners")
    assert [lab_ssh(address, "md5sum /etc/kafka/server.properties").stdout for address in HOSTS] == before
    # The cluster as declared still passes the same guard.
    security_stage.require_client_authentication_in_place(mtls)


REGISTRY_API = "https://10.77.0.14:8443/apis/ccompat/v7"
TOKEN_URL = "https://10.77.0.2:8443/realms/event-broker/protocol/openid-connect/token"


def curl(*arguments: str, secret_config: str = "", ca_file: Path = MATERIAL / "ca.crt") -> str:
    """curl's output (the CA verifies the server); logins and tokens go through stdin (``--config -``),
    never into the process list."""
    proc = subprocess.run(
        ["curl", "-sS", "--cacert", str(ca_file), *(["--config", "-"] if secret_config else []), *arguments],
        check=False,
        input=secret_config,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.stdout


def curl_status(*arguments: str, principal: str | None = None, token: str | None = None) -> str:
    """The HTTP status the registry answers: anonymous, as a principal (HTTP basic) or with a token."""
    if principal:
        secret_config = f'user = "{principal}:{registry_secrets()[principal]}"\n'
    elif token:
        secret_config = f'header = "Authorization: Bearer {token}"\n'
    else:
        secret_config = ""
    return curl("-o", "/dev/null", "-w", "%{http_code}", *arguments, secret_config=secret_config)


def access_token(client: str) -> str:
    """A token from the lab's provider for ``client`` (client-credentials grant)."""
    answer = curl(
        "--data",
        "grant_type=client_credentials",
        TOKEN_URL,
        secret_config=f'user = "{client}:{registry_secrets()[client]}"\n',
        ca_file=LAB_STATE / "idp" / "ca.crt",
    )
    return str(json.loads(answer)["access_token"])


def registry_secrets() -> dict[str, str]:
    return json.loads((LAB_STATE / "secrets" / "oidc-clients.json").read_text())


def test_registry_refuses_strangers_and_read_only_writers(mtls_rollout) -> None:
    results = results_by_id(mtls_rollout["security"])
    for probe in (
        "registry.anonymous_read_refused",
        "registry.anonymous_write_refused",
        "registry.wrong_secret_refused",
        "registry.read_only_write_refused",
        "registry.read_only_read_served",
        "registry.admin_served",
    ):
        assert results[probe]["status"] == "pass", results[probe]
    assert "registry.authentication" not in results  # the advisory of an anonymous registry is gone

    # from outside, with curl: anonymous GET and PUT 401; a read-only component's PUT 403; its GET 200
    change = ["-X", "PUT", "-H", "Content-Type: application/json", "-d", '{"compatibility": "NONE"}']
    subject_config = f"{REGISTRY_API}/config/{PHI_TOPIC}-value"
    assert curl_status(f"{REGISTRY_API}/subjects") == "401"
    assert curl_status(*change, subject_config) == "401"
    reader = next(c.principal for c in components_of(load_environment(ENVIRONMENT)).components)
    assert curl_status(*change, subject_config, principal=reader) == "403"
    assert curl_status(f"{REGISTRY_API}/subjects", principal=reader) == "200"
    assert curl_status(subject_config, principal="admin") == "200"
    # the compatibility is still the catalog's: the refused change changed nothing
    compatibility = [
        r for r in mtls_rollout["compliance"]["results"] if r["id"] == "compliance.registry.compatibility"
    ]
    assert compatibility and all(r["status"] == "pass" for r in compatibility), compatibility
    authentication = results_by_id(mtls_rollout["compliance"])["compliance.registry.authentication"]
    assert authentication["status"] == "pass" and authentication["severity"] == "blocking", authentication


def test_registry_takes_tokens_minted_for_it_and_refuses_another_applications(mtls_rollout) -> None:
    """Tools that speak OIDC send a bearer token: a component's is served for reads and refused for
    writes (its role); another application's, though it holds the admin role, is refused (audience)."""
    reader = next(c.principal for c in components_of(load_environment(ENVIRONMENT)).components)
    subject_config = f"{REGISTRY_API}/config/{PHI_TOPIC}-value"
    change = ["-X", "PUT", "-H", "Content-Type: application/json", "-d", '{"compatibility": "NONE"}']
    component = access_token(reader)
    assert curl_status(f"{REGISTRY_API}/subjects", token=component) == "200"
    assert curl_status(*change, subject_config, token=component) == "403"
    other = access_token(OTHER_APPLICATION)
    assert curl_status(f"{REGISTRY_API}/subjects", token=other) == "401"
    assert curl_status(*change, subject_config, token=other) == "401"
    assert (
        curl_status(f"{REGISTRY_API}/subjects", token=component[:-8] + "AAAAAAAA") == "401"
    )  # forged signature
