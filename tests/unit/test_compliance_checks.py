"""The compliance checks over fake facts: each drift is caught by its own check, a clean cluster passes."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import replace

import pytest

from event_broker_rollout.compliance import (
    checks_access,
    checks_audit,
    checks_hosts,
    checks_integrity,
    checks_registry,
    checks_transmission,
)
from event_broker_rollout.compliance.facts import (
    AclEntry,
    Acls,
    AuditTrail,
    Authentication,
    BrokerSettings,
    ClientCertificate,
    Endpoint,
    FileStat,
    Handshake,
    Health,
    HostFacts,
    NoGrantsProbe,
    Registry,
    ScramUsers,
    Topics,
    host_command,
    parse_host_output,
    parse_listeners,
)
from event_broker_rollout.config.catalog import MS_PER_DAY, desired_topics, load_catalog, load_policies
from event_broker_rollout.config.components import load_components
from event_broker_rollout.config.policy import CHECK_IDS, HostFile, applicable_files, load_policy
from event_broker_rollout.evidence.results import Severity, Status
from event_broker_rollout.hosts.listeners import PRINCIPAL_RULES
from event_broker_rollout.resources.access import desired_grants
from event_broker_rollout.resources.registry import SubjectPlan
from event_broker_rollout.resources.topics import ObservedTopic

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
PHI_TOPIC = "healthcare.patient.upserted.v1"
SECURED_LISTENERS = {
    "listeners": "SECURE://10.77.0.12:9094,INTERNAL://10.77.0.12:9095,CONTROLLER://10.77.0.12:9093",
    "advertised.listeners": "SECURE://10.77.0.12:9094,INTERNAL://10.77.0.12:9095",
    "listener.security.protocol.map": "CLIENT:PLAINTEXT,SECURE:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "auto.create.topics.enable": "false",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def policy(catalog):
    return load_policy(catalog, load_policies())


@pytest.fixture(scope="module")
def components():
    return load_components()


@pytest.fixture(scope="module")
def specs(catalog):
    return desired_topics(catalog, load_policies())


@pytest.fixture(scope="module")
def protected(catalog, policy):
    return [t for t, c in catalog.topics() if c in policy.protected_classifications]


def by_status(results):
    return {(r.id, r.host, r.details.get("target")): r.status for r in results}


def failed(results):
    return [r for r in results if r.status is Status.FAIL]


def broker(node=2, host="lab2", **overrides):
    return BrokerSettings(host, node, {**SECURED_LISTENERS, **overrides})


def as_catalog(specs):
    """The topics exactly as the catalog declares them."""
    return Topics(
        names=tuple(sorted(["__consumer_offsets", *(s.topic for s in specs)])),
        observed={
            s.topic: ObservedTopic(s.partitions, s.replication_factor, {**s.configs, "retention.bytes": "-1"})
            for s in specs
        },
    )


def tls_endpoint(port=9094, name="SECURE", protocol="SASL_SSL", **overrides):
    handshakes = (
        Handshake("1.0", False, error="TLSV1_ALERT_PROTOCOL_VERSION"),
        Handshake("1.1", False, error="TLSV1_ALERT_PROTOCOL_VERSION"),
        Handshake("1.2", True, protocol="TLSv1.2", cipher="ECDHE-ECDSA-AES256-GCM-SHA384", days_left=364),
        Handshake("1.3", True, protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", days_left=364),
    )
    values = {
        "host": "lab2",
        "address": "10.77.0.12",
        "port": port,
        "name": name,
        "protocol": protocol,
        "plaintext_answer": False,
        "handshakes": handshakes,
    }
    return Endpoint(**{**values, **overrides})


# --- every finding is traceable ----------------------------------------------------------------


def test_a_clean_cluster_passes_every_check_and_each_finding_names_its_clause(
    policy, components, specs, protected, catalog
):
    declared = desired_grants(components)
    entries = tuple(
        AclEntry(g.principal, "*", g.operation, "ALLOW", g.resource_type, g.pattern_type, g.name)
        for g in declared
    )
    approved = {"admin", *components.principals()}
    host = HostFacts(
        "lab1",
        files={
            "/etc/kafka/tls/node.pem": FileStat("/etc/kafka/tls/node.pem", 0o600, "kafka", "kafka"),
            "/etc/kafka/server.properties": FileStat("/etc/kafka/server.properties", 0o640, "kafka", "kafka"),
        },
        password_settings={"/etc/kafka/server.properties": 0},
        settings={
            "allow.everyone.if.no.acl.found": "false",
            "super.users": "User:node-lab1;User:admin",
            "ssl.principal.mapping.rules": PRINCIPAL_RULES,
            "sasl.oauthbearer.expected.audience": "kafka",
            "sasl.kerberos.service.name": "kafka",
        },
    )
    files = applicable_files(policy, ["controller", "broker"], "apicurio")
    results = [
        *checks_transmission.only_tls_listeners(policy, [broker()]),
        *checks_transmission.plaintext_refused(
            policy, [tls_endpoint(), tls_endpoint(9092, "FORMER_CLIENT", "none", plaintext_answer=None)]
        ),
        *checks_transmission.protocol_versions(policy, [tls_endpoint()]),
        *checks_transmission.certificates(policy, [tls_endpoint()]),
        *checks_access.auth_required(policy, Authentication(None, "_TIMED_OUT", "_AUTHENTICATION")),
        *checks_access.scram_users_approved(policy, ScramUsers(tuple(sorted(approved))), approved),
        *checks_access.client_certificates(policy, [ClientCertificate("analytics", 300, ())]),
        *checks_access.authorizer_enabled(policy, [broker()]),
        *checks_access.deny_by_default(policy, host),
        *checks_access.super_users(policy, host, ["User:node-lab1", "User:admin"]),
        *checks_access.node_principals(policy, host, PRINCIPAL_RULES),
        *checks_access.token_validation(policy, host, {"sasl.oauthbearer.expected.audience": "kafka"}),
        *checks_access.ticket_validation(policy, host, {"sasl.kerberos.service.name": "kafka"}),
        *checks_access.acl_checks(policy, Acls(entries), declared, approved, protected),
        *checks_access.no_grants_refused(
            policy, [NoGrantsProbe("ebr-probe", topic, "TOPIC_AUTHORIZATION_FAILED") for topic in protected]
        ),
        *checks_integrity.durability(policy, as_catalog(specs), protected),
        *checks_integrity.health_checks(
            policy,
            Health(
                brokers={"healthy": True, "registered": [1, 2, 3], "missing": []},
                partitions={"healthy": True, "partitions": 147},
                quorum={"healthy": True, "leader": 1, "missing": [], "lagging": []},
            ),
            {1: "lab1", 2: "lab2", 3: "lab3"},
        ),
        *checks_integrity.retention(policy, as_catalog(specs), dict(catalog.topics())),
        *checks_integrity.auto_create_off(policy, [broker()]),
        *checks_integrity.undeclared_topics(policy, as_catalog(specs), [s.topic for s in specs]),
        *checks_integrity.topics_as_catalog(policy, as_catalog(specs), specs),
        *checks_registry.registry_checks(
            policy,
            Registry(
                401,
                None,
                False,
                (SubjectPlan(f"{PHI_TOPIC}-value", "FULL_TRANSITIVE", "FULL_TRANSITIVE", [1], 1),),
            ),
            "apicurio",
            carries_phi=True,
        ),
        *checks_audit.audit_topic_exists(policy, as_catalog(specs), "ops.rollout.audit.v1"),
        *checks_audit.audit_recent(
            policy, AuditTrail("ops.rollout.audit.v1", 12, NOW - dt.timedelta(hours=3)), NOW
        ),
        *checks_hosts.secret_files(policy, host, files, "kafka"),
        *checks_hosts.no_passwords_in_config(policy, host, files),
        *checks_hosts.airflow_secrets(policy, [FileStat("/ca/ca.key", 0o600, "root", "root")], "root"),
    ]
    assert {r.status for r in results} == {Status.PASS}, [
        r.message for r in results if r.status is not Status.PASS
    ]
    # Every check of the policy is implemented (publishing is judged in the report task).
    assert {r.id for r in results} == set(CHECK_IDS) - {"compliance.results.published"}
    for result in results:
        assert result.details["hipaa"].startswith("45 CFR 164.312(")


# --- transmission security ---------------------------------------------------------------------


def test_listeners_are_parsed_with_their_protocols_and_advertised_ports():
    parsed = parse_listeners(
        "CLIENT://10.77.0.12:9092,PLAINTEXT://:9096,SECURE://h:9094", "CLIENT:PLAINTEXT,SECURE:SASL_SSL"
    )
    assert [(item.name, item.port, item.protocol) for item in parsed] == [
        ("CLIENT", 9092, "PLAINTEXT"),
        ("PLAINTEXT", 9096, "PLAINTEXT"),  # named after its protocol: no map entry needed
        ("SECURE", 9094, "SASL_SSL"),
    ]
    extra = broker(**{"advertised.listeners": "SECURE://10.77.0.12:9094,EXTERNAL://nat:19094"})
    assert [item.port for item in extra.listeners()] == [9094, 9095, 9093, 19094]


def test_a_plaintext_listener_re_added_on_one_broker_fails_only_there(policy):
    reopened = broker(
        **{
            "listeners": "CLIENT://10.77.0.12:9092," + SECURED_LISTENERS["listeners"],
            "advertised.listeners": "CLIENT://10.77.0.12:9092," + SECURED_LISTENERS["advertised.listeners"],
        }
    )
    results = checks_transmission.only_tls_listeners(policy, [broker(1, "lab1"), reopened])
    assert [(r.host, r.status) for r in results] == [("lab1", Status.PASS), ("lab2", Status.FAIL)]
    assert "CLIENT:9092 (PLAINTEXT)" in results[1].message

    answered = checks_transmission.plaintext_refused(
        policy, [tls_endpoint(), tls_endpoint(9092, "CLIENT", "PLAINTEXT", plaintext_answer=True)]
    )
    assert (
        answered[0].status is Status.FAIL
        and answered[0].observed["9092"] == "answered a plaintext Kafka request"
    )


def test_unreadable_broker_settings_are_not_verified_never_passed(policy):
    results = checks_transmission.only_tls_listeners(policy, [BrokerSettings("lab3", 3, error="_TIMED_OUT")])
    assert results[0].status is Status.FAIL and results[0].message == "not verified: _TIMED_OUT"


def test_legacy_tls_accepted_fails_and_mtls_negotiation_counts_as_accepted(policy):
    legacy = tls_endpoint(
        handshakes=(
            Handshake("1.0", False, error="TLSV1_ALERT_PROTOCOL_VERSION"),
            Handshake("1.1", True, protocol="TLSv1.1", cipher="ECDHE-ECDSA-AES128-SHA", days_left=300),
            Handshake("1.2", True, protocol="TLSv1.2", cipher="X", days_left=300),
        )
    )
    assert checks_transmission.protocol_versions(policy, [legacy])[0].status is Status.FAIL
    mtls = tls_endpoint(
        9095,
        "INTERNAL",
        "SSL",
        client_certificate_required=True,
        handshakes=(
            Handshake("1.0", False, offered=False, error="NO_PROTOCOLS_AVAILABLE"),
            Handshake("1.2", False, error="SSLV3_ALERT_BAD_CERTIFICATE"),
            Handshake("1.3", True, protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", days_left=200),
        ),
    )
    result = checks_transmission.protocol_versions(policy, [mtls])[0]
    assert result.status is Status.PASS
    assert result.observed["TLS 1.2"] == "negotiated; client certificate required (mTLS)"
    assert result.observed["TLS 1.0"] == "not offered by this client's TLS library"
    # Without mTLS the same refusal is a refusal.
    assert (
        checks_transmission.protocol_versions(
            policy, [replace(mtls, client_certificate_required=False, handshakes=mtls.handshakes[:2])]
        )[0].status
        is Status.FAIL
    )


def test_a_tls12_suite_without_ecdhe_and_aead_accepted_fails(policy):
    refused = tls_endpoint(
        outside_policy_suites=Handshake("1.2", False, error="SSLV3_ALERT_HANDSHAKE_FAILURE")
    )
    result = checks_transmission.protocol_versions(policy, [refused])[0]
    assert result.status is Status.PASS
    assert result.observed["TLS 1.2 without ECDHE+AEAD"] == "refused (SSLV3_ALERT_HANDSHAKE_FAILURE)"
    accepted = tls_endpoint(
        outside_policy_suites=Handshake(
            "1.2", True, protocol="TLSv1.2", cipher="AES128-SHA256", days_left=300
        )
    )
    result = checks_transmission.protocol_versions(policy, [accepted])[0]
    assert result.status is Status.FAIL
    assert "accepts TLS 1.2 AES128-SHA256 (not ECDHE with AEAD)" in result.message
    # On an mTLS listener the suite is agreed before the missing client certificate is refused.
    mtls = tls_endpoint(
        9095,
        "INTERNAL",
        "SSL",
        client_certificate_required=True,
        outside_policy_suites=Handshake("1.2", False, error="SSLV3_ALERT_BAD_CERTIFICATE"),
    )
    assert checks_transmission.protocol_versions(policy, [mtls])[0].status is Status.FAIL


@pytest.mark.parametrize(
    ("days", "status"),
    [(31, Status.PASS), (30, Status.WARN), (8, Status.WARN), (7, Status.FAIL), (-2, Status.FAIL)],
)
def test_certificate_expiry_warns_at_30_days_and_fails_at_7(policy, days, status):
    endpoint = tls_endpoint(
        handshakes=(Handshake("1.3", True, protocol="TLSv1.3", cipher="c", days_left=days),)
    )
    result = checks_transmission.certificates(policy, [endpoint])[0]
    assert result.status is status
    assert result.severity is (Severity.BLOCKING if status is Status.FAIL else Severity.ADVISORY)


def test_a_certificate_that_never_verified_fails(policy):
    endpoint = tls_endpoint(handshakes=(Handshake("1.2", False, error="CERTIFICATE_VERIFY_FAILED"),))
    result = checks_transmission.certificates(policy, [endpoint])[0]
    assert result.status is Status.FAIL and "CERTIFICATE_VERIFY_FAILED" in result.message


# --- authentication and authorization ----------------------------------------------------------


def test_authentication_refusals_prove_nothing_when_the_admin_cannot_log_in_either(policy):
    assert checks_access.auth_required(policy, Authentication("_TRANSPORT", "_TRANSPORT", "_TRANSPORT"))[
        0
    ].message.startswith("not verified")
    admitted = checks_access.auth_required(policy, Authentication(None, None, "_AUTHENTICATION"))[0]
    assert admitted.status is Status.FAIL and admitted.observed["anonymous client"] == "admitted"


def test_an_unapproved_scram_user_fails(policy):
    result = checks_access.scram_users_approved(
        policy, ScramUsers(("admin", "backdoor")), {"admin", "analytics"}
    )[0]
    assert result.status is Status.FAIL
    assert result.details["unknown"] == ["backdoor"] and result.details["missing"] == ["analytics"]


def test_client_certificates_are_graded_like_the_brokers_and_a_foreign_one_fails(policy):
    graded = checks_access.client_certificates(
        policy,
        [
            ClientCertificate("analytics", 300, ()),
            ClientCertificate("fhir-server", policy.certificates.warn_days - 1, ()),
            ClientCertificate("consent-service", policy.certificates.fail_days - 1, ()),
            ClientCertificate("admin", 300, ("certificate chain broken at CN=admin",)),
            ClientCertificate("canary", None, ("missing /x/canary.crt",)),
        ],
    )
    assert [r.status for r in graded] == [Status.PASS, Status.WARN, Status.FAIL, Status.FAIL, Status.FAIL]
    assert graded[3].observed == "certificate chain broken at CN=admin"
    assert {r.id for r in graded} == {"compliance.auth.client-certificates"}


def test_authorizer_settings_from_the_nodes_file(policy):
    open_door = HostFacts(
        "lab2", settings={"allow.everyone.if.no.acl.found": "true", "super.users": "User:admin;User:bob"}
    )
    assert checks_access.deny_by_default(policy, open_door)[0].status is Status.FAIL
    assert (
        checks_access.deny_by_default(policy, HostFacts("lab2"))[0].status is Status.PASS
    )  # Kafka's default
    super_users = checks_access.super_users(policy, open_door, ["User:admin", "User:node-lab2"])[0]
    assert super_users.status is Status.FAIL and "User:bob" in super_users.message
    # The former mapping (CN as it is) puts a node in the same namespace as components and SCRAM users.
    shared = HostFacts("lab2", settings={"ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT"})
    for facts in (shared, open_door):
        mapping = checks_access.node_principals(policy, facts, PRINCIPAL_RULES)[0]
        assert mapping.status is Status.FAIL and mapping.expected == PRINCIPAL_RULES
    assert (
        checks_access.authorizer_enabled(policy, [broker(**{"authorizer.class.name": ""})])[0].status
        is Status.FAIL
    )


def test_acl_drift_user_star_on_a_phi_topic_is_caught_by_its_own_check(policy, components, protected):
    declared = desired_grants(components)
    approved = {"admin", *components.principals()}
    clean = [
        AclEntry(g.principal, "*", g.operation, "ALLOW", g.resource_type, g.pattern_type, g.name)
        for g in declared
    ]
    drift = AclEntry("User:*", "*", "READ", "ALLOW", "TOPIC", "LITERAL", PHI_TOPIC)
    results = {
        r.id: r
        for r in checks_access.acl_checks(policy, Acls((*clean, drift)), declared, approved, protected)
    }
    assert results["compliance.acl.no-wildcard-principal"].status is Status.FAIL
    assert PHI_TOPIC in results["compliance.acl.no-wildcard-principal"].message
    assert results["compliance.acl.known-principals"].status is Status.FAIL
    assert results["compliance.acl.as-declared"].details["undeclared"] == [drift.label()]
    assert (
        results["compliance.acl.no-wildcard-resource-on-protected"].status is Status.PASS
    )  # a literal topic


def test_wildcard_and_undeclared_prefix_grants_on_phi_are_caught(policy, components, protected):
    declared = desired_grants(components)
    approved = {"admin", *components.principals()}
    star = AclEntry("User:analytics", "*", "READ", "ALLOW", "TOPIC", "LITERAL", "*")
    prefix = AclEntry("User:analytics", "*", "READ", "ALLOW", "TOPIC", "PREFIXED", "healthcare.patient")
    results = {
        r.id: r for r in checks_access.acl_checks(policy, Acls((star, prefix)), declared, approved, protected)
    }
    wildcard = results["compliance.acl.no-wildcard-resource-on-protected"]
    assert wildcard.status is Status.FAIL
    assert any("TOPIC:LITERAL:*" in item for item in wildcard.observed)
    assert any("TOPIC:PREFIXED:healthcare.patient" in item for item in wildcard.observed)
    # The declared prefix grant of data-quality covers PHI topics too, and is allowed.
    declared_prefix = next(g for g in declared if g.pattern_type == "PREFIXED" and g.name == "healthcare.")
    entry = AclEntry(
        declared_prefix.principal, "*", declared_prefix.operation, "ALLOW", "TOPIC", "PREFIXED", "healthcare."
    )
    ok = {r.id: r for r in checks_access.acl_checks(policy, Acls((entry,)), declared, approved, protected)}
    assert ok["compliance.acl.no-wildcard-resource-on-protected"].status is Status.PASS


def test_a_deny_for_everyone_is_no_grant_but_still_undeclared(policy, components, protected):
    deny = AclEntry("User:*", "*", "ALL", "DENY", "TOPIC", "LITERAL", PHI_TOPIC)
    results = {r.id: r for r in checks_access.acl_checks(policy, Acls((deny,)), set(), {"admin"}, protected)}
    assert results["compliance.acl.no-wildcard-principal"].status is Status.PASS
    assert results["compliance.acl.as-declared"].status is Status.FAIL


def test_the_no_grants_principal_on_every_phi_topic(policy):
    probes = [
        NoGrantsProbe("ebr-probe", PHI_TOPIC, "TOPIC_AUTHORIZATION_FAILED"),
        NoGrantsProbe("ebr-probe", "healthcare.encounter.events.v1", None, ("DESCRIBE",)),
        NoGrantsProbe("ebr-probe", "healthcare.consent.changed.v1", None, ("DESCRIBE", "READ")),
        NoGrantsProbe("ebr-probe", "healthcare.consent.changed.v1.dlq", "_TIMED_OUT"),
    ]
    results = checks_access.no_grants_refused(policy, probes)
    assert [r.status for r in results] == [Status.PASS, Status.PASS, Status.FAIL, Status.FAIL]
    assert results[2].details["target"] == "ebr-probe on healthcare.consent.changed.v1"
    assert "authorizes READ" in results[2].message
    assert results[3].message.startswith("not verified")


# --- integrity ---------------------------------------------------------------------------------


def test_min_insync_replicas_1_on_a_phi_topic_is_caught(policy, specs, protected):
    topics = as_catalog(specs)
    drifted = topics.observed[PHI_TOPIC]
    topics = replace(
        topics,
        observed={
            **topics.observed,
            PHI_TOPIC: replace(drifted, configs={**drifted.configs, "min.insync.replicas": "1"}),
        },
    )
    durability = by_status(checks_integrity.durability(policy, topics, protected))
    assert durability[("compliance.durability.protected-topics", None, PHI_TOPIC)] is Status.FAIL
    assert [r.details["target"] for r in failed(checks_integrity.durability(policy, topics, protected))] == [
        PHI_TOPIC
    ]
    catalog_drift = failed(checks_integrity.topics_as_catalog(policy, topics, specs))
    assert [r.details["target"] for r in catalog_drift] == [PHI_TOPIC]
    assert "min.insync.replicas 1 (catalog 2)" in catalog_drift[0].message


@pytest.mark.parametrize(
    ("configs", "replication", "problem"),
    [
        ({"min.insync.replicas": "3"}, 3, "> replication factor - 1"),
        ({"unclean.leader.election.enable": "true"}, 3, "unclean.leader.election.enable=true"),
        ({}, 2, "replication factor 2 < 3"),
    ],
)
def test_durability_rules(policy, specs, protected, configs, replication, problem):
    topics = as_catalog(specs)
    observed = topics.observed[PHI_TOPIC]
    changed = replace(observed, replication_factor=replication, configs={**observed.configs, **configs})
    results = checks_integrity.durability(
        policy, replace(topics, observed={**topics.observed, PHI_TOPIC: changed}), [PHI_TOPIC]
    )
    assert results[0].status is Status.FAIL and problem in results[0].message


def test_a_topic_created_by_hand_is_caught_and_internal_topics_are_not(policy, specs):
    topics = as_catalog(specs)
    topics = replace(topics, names=(*topics.names, "by-hand.patients", "__share_group_state"))
    result = checks_integrity.undeclared_topics(policy, topics, [s.topic for s in specs])[0]
    assert result.status is Status.FAIL and result.observed == ["by-hand.patients"]


def test_a_missing_catalog_topic_fails(policy, specs):
    topics = as_catalog(specs)
    topics = replace(topics, observed={k: v for k, v in topics.observed.items() if k != PHI_TOPIC})
    assert (
        failed(checks_integrity.topics_as_catalog(policy, topics, specs))[0].message
        == f"{PHI_TOPIC}: missing"
    )


@pytest.mark.parametrize(
    ("topic", "configs", "problem"),
    [
        (PHI_TOPIC, {"retention.ms": "-1"}, "kept forever"),
        (PHI_TOPIC, {"retention.ms": str(60 * MS_PER_DAY)}, "60 days > 35"),
        ("ops.rollout.audit.v1", {"retention.ms": str(365 * MS_PER_DAY)}, "365 days < 2192"),
        ("ops.rollout.audit.v1", {"retention.bytes": "1073741824"}, "retention.bytes=1073741824"),
        ("ops.rollout.audit.v1", {"cleanup.policy": "compact"}, "cleanup compact not allowed"),
        ("ops.data-quality.results.v1", {"retention.ms": "-1"}, "kept forever"),
    ],
)
def test_retention_per_classification(policy, specs, catalog, topic, configs, problem):
    topics = as_catalog(specs)
    observed = topics.observed[topic]
    changed = replace(observed, configs={**observed.configs, **configs})
    topics = replace(topics, observed={**topics.observed, topic: changed})
    failures = failed(checks_integrity.retention(policy, topics, dict(catalog.topics())))
    assert [r.details["target"] for r in failures] == [topic]
    assert problem in failures[0].message


def test_a_compacted_phi_topic_may_keep_the_latest_record_per_key(policy, specs, catalog):
    results = checks_integrity.retention(policy, as_catalog(specs), dict(catalog.topics()))
    consent = next(r for r in results if r.details["target"] == "healthcare.consent.changed.v1")
    assert consent.status is Status.PASS and consent.observed["retention.ms"] == "-1"


def test_health_findings_name_hosts_and_partitions(policy):
    results = checks_integrity.health_checks(
        policy,
        Health(
            brokers={"healthy": False, "registered": [1, 2], "missing": [3]},
            partitions={
                "healthy": False,
                "under_replicated": ["healthcare.patient.upserted.v1-0"],
                "offline": [],
            },
            quorum={"healthy": False, "missing": [], "lagging": [3], "leader": 1},
        ),
        {1: "lab1", 2: "lab2", 3: "lab3"},
    )
    messages = {r.id: r.message for r in results}
    assert {r.status for r in results} == {Status.FAIL}
    assert "lab3 (node 3)" in messages["compliance.health.brokers"]
    assert "lab3 (node 3)" in messages["compliance.health.quorum"]
    assert "under replicated: healthcare.patient.upserted.v1-0" in messages["compliance.health.partitions"]


# --- registry and audit ------------------------------------------------------------------------


def test_an_anonymous_registry_fails_where_topics_carry_phi_and_warns_elsewhere(policy):
    anonymous = Registry(200, None, False, ())
    for carries_phi, status, severity in ((True, Status.FAIL, "blocking"), (False, Status.WARN, "advisory")):
        results = checks_registry.registry_checks(policy, anonymous, "apicurio", carries_phi=carries_phi)
        (authentication,) = [r for r in results if r.id == "compliance.registry.authentication"]
        assert (authentication.status, str(authentication.severity)) == (status, severity)
        assert "schema_registry.authentication" in authentication.message
    refusing = Registry(401, None, False, ())
    results = checks_registry.registry_checks(policy, refusing, "apicurio", carries_phi=True)
    assert by_status(results)[("compliance.registry.authentication", None, None)] is Status.PASS


def test_registry_without_authentication_warns_and_drift_fails(policy):
    subjects = (
        SubjectPlan("a-value", "FULL_TRANSITIVE", "BACKWARD", [1], 1),
        SubjectPlan("b-value", "FULL_TRANSITIVE", "FULL_TRANSITIVE", [1, 2], 1),
    )
    results = checks_registry.registry_checks(
        policy, Registry(200, None, True, subjects), "apicurio", carries_phi=False
    )
    statuses = by_status(results)
    assert statuses[("compliance.registry.https", None, None)] is Status.FAIL  # plain HTTP answers
    assert statuses[("compliance.registry.authentication", None, None)] is Status.WARN
    assert statuses[("compliance.registry.compatibility", None, "a-value")] is Status.FAIL
    assert statuses[("compliance.registry.latest-versions", None, "a-value")] is Status.PASS
    assert statuses[("compliance.registry.latest-versions", None, "b-value")] is Status.FAIL
    assert "OIDC" in next(r.message for r in results if r.id == "compliance.registry.authentication")


def test_the_audit_trail_must_exist_and_speak_recently(policy, specs):
    topics = as_catalog(specs)
    assert (
        checks_audit.audit_topic_exists(policy, replace(topics, names=("x",)), "ops.rollout.audit.v1")[
            0
        ].status
        is Status.FAIL
    )
    stale = AuditTrail("ops.rollout.audit.v1", 5, NOW - dt.timedelta(days=9))
    assert checks_audit.audit_recent(policy, stale, NOW)[0].status is Status.WARN
    empty = checks_audit.audit_recent(policy, AuditTrail("ops.rollout.audit.v1"), NOW)[0]
    assert empty.status is Status.WARN and "no record" in empty.message
    assert (
        checks_audit.audit_recent(policy, AuditTrail("t", error="_TIMED_OUT"), NOW)[0].status is Status.WARN
    )


# --- hosts -------------------------------------------------------------------------------------


def test_secret_files_wider_than_allowed_or_wrongly_owned_fail(policy):
    files = applicable_files(policy, ["broker", "controller"], "apicurio")
    host = HostFacts(
        "lab3",
        files={
            "/etc/kafka/tls/node.pem": FileStat("/etc/kafka/tls/node.pem", 0o644, "kafka", "kafka"),
            "/etc/kafka/server.properties": None,
        },
    )
    results = {r.details["target"]: r for r in checks_hosts.secret_files(policy, host, files, "kafka")}
    assert "grants 0044 beyond 0600" in results["/etc/kafka/tls/node.pem"].message
    assert results["/etc/kafka/server.properties"].observed == "absent"
    owned = HostFacts(
        "lab3", files={"/etc/kafka/tls/node.pem": FileStat("/etc/kafka/tls/node.pem", 0o400, "root", "root")}
    )
    assert (
        "owned by root, not kafka" in checks_hosts.secret_files(policy, owned, files[:1], "kafka")[0].message
    )
    unreachable = checks_hosts.secret_files(
        policy, HostFacts("lab3", error="lab3: unreachable"), files, "kafka"
    )
    assert [r.status for r in unreachable] == [Status.FAIL]


def test_airflow_side_secrets(policy):
    results = checks_hosts.airflow_secrets(
        policy, [FileStat("/ca/ca.key", 0o640, "root", "root"), "/ca/issued/lab1.key"], "root"
    )
    assert [r.status for r in results] == [Status.FAIL, Status.FAIL]
    assert results[1].observed == "absent"


def test_host_command_stats_files_and_counts_password_lines_without_reading_them(tmp_path, policy):
    config = tmp_path / "app.properties"
    config.write_text(
        "# password=commented out\n"
        "apicurio.datasource.password=sa\n"
        "ssl.key.password = hunter2hunter2\n"
        "quarkus.oidc.client.secret=\n"
    )
    config.chmod(0o640)
    key = tmp_path / "node.key"
    key.write_text("k")
    key.chmod(0o600)
    files = [
        HostFile(
            path=str(config),
            kind="config",
            roles=["schema_registry"],
            max_mode="0640",
            scan_for_passwords=True,
            allowed_password_settings=["apicurio.datasource.password"],
        ),
        HostFile(path=str(key), kind="key", roles=["schema_registry"], max_mode="0600"),
        HostFile(path=str(tmp_path / "absent.pem"), kind="keystore", roles=["broker"], max_mode="0600"),
    ]
    output = subprocess.run(
        host_command(files, kafka_node=False), capture_output=True, text=True, check=True
    ).stdout
    assert "hunter2" not in output
    facts = parse_host_output("lab1", output)
    assert facts.files[str(config)].mode == 0o640 and facts.files[str(key)].mode == 0o600
    assert facts.files[str(tmp_path / "absent.pem")] is None
    assert facts.password_settings == {str(config): 1}  # only the ssl.key.password line
    result = checks_hosts.no_passwords_in_config(policy, facts, files)[0]
    assert result.status is Status.FAIL and result.observed == "1 password or secret settings"


def test_host_output_with_authorizer_settings_is_parsed():
    facts = parse_host_output(
        "lab1",
        "file /etc/kafka/server.properties 640 kafka kafka\n"
        "passwords /etc/kafka/server.properties 0\n"
        "setting allow.everyone.if.no.acl.found=false\n"
        "setting super.users=User:node-lab1;User:admin\n"
        f"setting ssl.principal.mapping.rules={PRINCIPAL_RULES}\n",
    )
    assert facts.settings == {
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:node-lab1;User:admin",
        "ssl.principal.mapping.rules": PRINCIPAL_RULES,
    }
    assert facts.password_settings == {"/etc/kafka/server.properties": 0}
