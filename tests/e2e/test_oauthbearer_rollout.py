"""A whole rollout whose Kafka clients authenticate with OAUTHBEARER tokens from the lab's OIDC provider
(Keycloak), on a third lab cluster whose registry authenticates through the same provider.

`lab-oauth` is lab7..9 with its own CA: every stage runs as operators run it, then compliance
re-verifies it. From outside, kcat and a plain confluent-kafka client show what the secure listener
accepts and refuses: the admin's token is let in; no token, a token that no provider signed, a token
minted for another audience and an expired one are refused; a right token without grants is refused on
a PHI topic. People of the lab's directory log in at the provider with their directory password: the
brokers know a person by her uid and grant her nothing, and the registry gives her what her groups hold.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from event_broker_devtools import lab_directory, lab_idp
from event_broker_devtools.lab_idp import OTHER_APPLICATION, SHORT_LIVED_CLIENT
from event_broker_rollout.cluster import oidc
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.hosts.secret_files import write_secret
from tests.conftest import LAB_STATE, REPO, needs_root
from tests.e2e.second_cluster import lab_with_provider, results_by_id, rolled_out

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

ENVIRONMENT = "lab-oauth"
KCAT = str(REPO / "lab" / "bin" / "kcat")
CLUSTER_CA = LAB_STATE / "ca-oauth" / "ca.crt"
PROVIDER_CA = LAB_STATE / "idp" / "ca.crt"
BOOTSTRAP = "10.77.0.17:9094"
PHI_TOPIC = "healthcare.patient.upserted.v1"
HOSTS = ("10.77.0.17", "10.77.0.18", "10.77.0.19")
REGISTRY_API = "https://10.77.0.17:8443/apis/ccompat/v7"
# Kafka accepts a token up to this long after it expired (sasl.oauthbearer.clock.skew.seconds' default).
BROKER_CLOCK_SKEW_S = 30


def client_secrets() -> dict[str, str]:
    return json.loads((LAB_STATE / "secrets" / "oidc-clients.json").read_text())


@pytest.fixture(scope="module")
def oauth_rollout(lab_hosts) -> Iterator[dict]:
    """lab7..9 up beside the main lab, every stage run onto them in order; thrown away after.
    A short-lived token is fetched first: by the time the tests present it, it has long expired."""
    lab_with_provider(9)
    provider = load_environment(ENVIRONMENT).security.oauthbearer
    expiring = oidc.fetch_token(provider, SHORT_LIVED_CLIENT, client_secrets()[SHORT_LIVED_CLIENT])
    with rolled_out(ENVIRONMENT, HOSTS) as reports:
        yield {"reports": reports, "expired_token": expiring}


def kcat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KCAT, "-b", BOOTSTRAP, "-X", f"ssl.ca.location={CLUSTER_CA}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def oidc_client(principal: str, directory: Path) -> list[str]:
    """kcat's settings for ``principal`` fetching its own token: in a 0600 file (``-F``), so its client
    secret never appears in the process list."""
    settings = directory / f"{principal}.properties"
    write_secret(
        settings,
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                "sasl.mechanism=OAUTHBEARER",
                "sasl.oauthbearer.method=oidc",
                "sasl.oauthbearer.token.endpoint.url="
                "https://10.77.0.2:8443/realms/event-broker/protocol/openid-connect/token",
                f"https.ca.location={PROVIDER_CA}",
                f"sasl.oauthbearer.client.id={principal}",
                f"sasl.oauthbearer.client.secret={client_secrets()[principal]}",
                "",
            ]
        ),
    )
    return ["-F", str(settings)]


def test_every_stage_passed_with_tokens_and_the_migration_lost_nothing(oauth_rollout):
    reports = oauth_rollout["reports"]
    for stage, report in reports.items():
        assert report["status"] == "passed", stage
    security = results_by_id(reports["security"])
    migration = reports["security"]["summary"]["migration"]
    assert migration["produced"] > 0 and (migration["lost"], migration["duplicated"]) == (0, 0)
    principals = ["admin", *components_of(load_environment(ENVIRONMENT)).principals()]
    for principal in principals:
        token = security[f"identity.oidc_token[{principal}]"]
        assert token["status"] == "pass", token
        assert token["observed"]["principal"] == principal and "kafka" in token["observed"]["audience"]
    for probe in (
        "auth.no_credentials_refused",
        "auth.unsigned_token_refused",
        "authz.no_grants_refused_on_phi",
    ):
        assert security[probe]["status"] == "pass", security[probe]
    assert security["auth.scram_users_approved"]["observed"] == []  # no password logs anyone in
    preflight = [r for r in reports["preflight"]["results"] if r["id"].startswith("sec.kafka.oidc_provider")]
    assert len(preflight) == 1 + len(HOSTS) and all(r["status"] == "pass" for r in preflight), preflight


def test_components_keep_their_contracts_with_their_tokens(oauth_rollout):
    reports = oauth_rollout["reports"]
    contracts = [r for r in reports["integration"]["results"] if r["id"].startswith("contract.")]
    assert contracts and all(r["status"] == "pass" for r in contracts), [
        (r["id"], r["status"]) for r in contracts if r["status"] != "pass"
    ]
    compliance = results_by_id(reports["compliance"])
    for check_id in ("compliance.auth.required", "compliance.registry.authentication"):
        assert compliance[check_id]["status"] == "pass", compliance[check_id]
    validation = [
        r for r in reports["compliance"]["results"] if r["id"] == "compliance.auth.token-validation"
    ]
    assert len(validation) == len(HOSTS) and all(r["status"] == "pass" for r in validation), validation
    assert all(r["observed"]["sasl.oauthbearer.expected.audience"] == "kafka" for r in validation)


def test_the_admins_token_is_let_in_from_outside(oauth_rollout, tmp_path):
    listed = kcat(*oidc_client("admin", tmp_path), "-L", "-m", "10")
    assert listed.returncode == 0, listed.stderr
    assert "3 brokers" in listed.stdout
    assert client_secrets()["admin"] not in listed.stdout + listed.stderr


def test_no_token_and_an_unsigned_one_are_refused(oauth_rollout):
    anonymous = kcat("-X", "security.protocol=SSL", "-L", "-m", "5")
    assert anonymous.returncode != 0
    assert "connection closed by peer" in anonymous.stderr
    # A token naming the admin, a super user, that no provider signed (librdkafka's unsecured JWT).
    unsigned = kcat(
        *("-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=OAUTHBEARER"),
        *("-X", "enable.sasl.oauthbearer.unsecure.jwt=true", "-X", "sasl.oauthbearer.config=principal=admin"),
        *("-L", "-m", "5"),
    )
    assert unsigned.returncode != 0
    assert "SASL authentication error" in unsigned.stderr and "invalid_token" in unsigned.stderr


def test_a_token_minted_for_another_audience_is_refused(oauth_rollout, tmp_path):
    """Another application of the same realm gets tokens from the same provider, signed by the same
    key; they are not meant for the cluster, and the brokers' audience check refuses them."""
    other = kcat(*oidc_client(OTHER_APPLICATION, tmp_path), "-L", "-m", "5")
    assert other.returncode != 0
    assert "SASL authentication error" in other.stderr and "invalid_token" in other.stderr


def test_an_expired_token_is_refused(oauth_rollout):
    """A genuine token for the cluster, presented after it expired (and after the brokers' clock-skew
    allowance), by a client that claims it is still valid."""
    token = oauth_rollout["expired_token"]
    claims = oidc.unverified_claims(token)
    assert "kafka" in oidc.audiences(claims)
    assert claims["exp"] + BROKER_CLOCK_SKEW_S < time.time()
    errors: list[KafkaError] = []
    admin = AdminClient(
        {
            "bootstrap.servers": BOOTSTRAP,
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(CLUSTER_CA),
            "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": lambda _config: (token, time.time() + 300),
            "error_cb": errors.append,
        }
    )
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(1)
    refusals = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert refusals and "invalid_token" in refusals[0].str(), errors


def test_the_right_token_without_grants_is_refused_on_a_phi_topic(oauth_rollout, tmp_path):
    probe = oidc_client(PROBE_PRINCIPAL, tmp_path)
    produced = kcat(*probe, "-P", "-t", PHI_TOPIC, stdin="authorization probe\n")
    assert produced.returncode != 0
    assert "Topic authorization failed" in produced.stderr
    read = kcat(*probe, "-C", "-t", PHI_TOPIC, "-o", "beginning", "-e", "-c", "1")
    assert read.returncode != 0
    assert "authorization failed" in read.stderr.lower()


def person_token(uid: str) -> str:
    passwords = json.loads(lab_directory.passwords_file().read_text())
    return lab_idp.person_token(uid, passwords[uid])


def registry_status(token: str, path: str, method: str = "GET", body: dict | None = None) -> int:
    request = urllib.request.Request(
        f"{REGISTRY_API}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(
            request, timeout=15, context=ssl.create_default_context(cafile=CLUSTER_CA)
        ) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_person_of_the_directory_is_known_by_her_uid_and_holds_no_grant(oauth_rollout):
    """Amara administers Kafka in the directory's groups, but grants name people, never groups: her
    token gets her in as ``User:amara.okafor`` and the authorizer refuses her a PHI topic."""
    token = person_token("amara.okafor")
    failures: list[KafkaError] = []
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(CLUSTER_CA),
            "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": lambda _config: (token, time.time() + 300),
        }
    )
    assert producer.list_topics(timeout=15).brokers  # authenticated: the cluster answers her
    producer.produce(
        PHI_TOPIC, b"a person's probe", on_delivery=lambda error, _message: failures.append(error)
    )
    producer.flush(30)
    assert [error.code() for error in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], failures
    logs = [LAB_STATE / "hosts" / f"lab{n}" / "root" / "var-log" / "kafka" / "server.log" for n in (7, 8, 9)]
    # the brokers said whom they refused (the topic's metadata already: she may not even describe it)
    refusal = re.compile(
        rf"Principal = User:amara[.]okafor is Denied operation = \w+ .* Topic:LITERAL:{PHI_TOPIC} "
    )
    assert any(refusal.search(log.read_text()) for log in logs)


def test_the_registry_gives_people_what_their_groups_hold(oauth_rollout):
    subject_config = f"/config/{PHI_TOPIC}-value"
    admin, approver, outsider = (person_token(uid) for uid in ("amara.okafor", "li.wei", "sam.ortiz"))
    assert registry_status(admin, "/subjects") == 200
    assert registry_status(admin, subject_config) == 200
    assert registry_status(approver, "/subjects") == 200
    assert registry_status(approver, subject_config, "PUT", {"compatibility": "NONE"}) == 403
    assert registry_status(outsider, "/subjects") == 403  # in the directory, in no platform group
