"""Listener layouts by security phase: how a running cluster moves from plaintext to TLS + SASL.

Each phase is one rolling restart, every node gated before the next:

    plaintext   -> clients on PLAINTEXT; the KRaft controller listener is TLS from the first start
                   (a quorum cannot change its listener's protocol one node at a time without losing it)
    listeners   -> + SECURE (SASL_SSL with SCRAM-SHA-512, OAUTHBEARER or GSSAPI, or mTLS) and INTERNAL (SSL, client certificates);
                   SCRAM users are then created over INTERNAL (a node identity), never over PLAINTEXT
    interbroker -> brokers replicate over INTERNAL; StandardAuthorizer on, still allowing resources
                   without ACLs so plaintext clients keep working while ACLs are created
    secured     -> allow.everyone.if.no.acl.found=false and the PLAINTEXT listener removed

No password is written into server.properties: brokers authenticate each other with certificates.
"""

from __future__ import annotations

from dataclasses import dataclass

from event_broker_rollout.config.environment import NODE_PRINCIPAL_PREFIX, Environment, Host
from event_broker_rollout.config.keytabs import broker_principal


@dataclass(frozen=True)
class ListenerLayout:
    """Listeners of one node and their security settings (the phases below)."""

    listeners: tuple[str, ...]
    advertised: tuple[str, ...]
    protocol_map: tuple[str, ...]
    inter_broker_listener: str
    settings: tuple[tuple[str, str], ...] = ()


PHASES = ("plaintext", "listeners", "interbroker", "secured")
TLS_DIR = "/etc/kafka/tls"
KEYSTORE = f"{TLS_DIR}/node.pem"  # private key + certificate chain (PEM keystore)
TRUSTSTORE = f"{TLS_DIR}/ca.crt"
# The CA of the OIDC provider's HTTPS certificate: the brokers fetch its signing keys (JWKS) over it.
OIDC_PROVIDER_CA = f"{TLS_DIR}/oidc-provider-ca.crt"
# Kafka 4 fetches only the URLs this JVM property lists (none by default): the JWKS and nothing else.
ALLOWED_URLS_PROPERTY = "org.apache.kafka.sasl.oauthbearer.allowed.urls"
BROKER_LOGIN_SUBJECT = "broker-unused-client-login"
KERBEROS_DIR = "/etc/kafka/kerberos"
BROKER_KEYTAB = f"{KERBEROS_DIR}/broker.keytab"
KERBEROS_CONFIG = f"{KERBEROS_DIR}/krb5.conf"
KERBEROS_CONFIG_PROPERTY = "java.security.krb5.conf"
TLS_PROTOCOLS = "TLSv1.3,TLSv1.2"
PRINCIPAL_RULES = f"RULE:^CN=([a-z0-9-]+)(,.*)?$/{NODE_PRINCIPAL_PREFIX}$1/,DEFAULT"
# mTLS clients on the SECURE listener keep their certificate's CN as their principal (their ACLs name it).
CLIENT_CERTIFICATE_RULES = "RULE:^CN=([a-z0-9-]+)(,.*)?$/$1/,DEFAULT"


def phase_index(phase: str) -> int:
    return PHASES.index(phase)


def node_principal(host_name: str) -> str:
    return f"User:{NODE_PRINCIPAL_PREFIX}{host_name}"


def node_principals(environment: Environment) -> list[str]:
    return [
        node_principal(host.name) for host in environment.hosts if {"broker", "controller"} & set(host.roles)
    ]


def super_users(environment: Environment) -> list[str]:
    assert environment.security is not None
    return [*node_principals(environment), f"User:{environment.security.admin_user}"]


def _tls_settings(prefix: str, client_auth: str) -> list[tuple[str, str]]:
    return [
        (f"{prefix}ssl.keystore.type", "PEM"),
        (f"{prefix}ssl.keystore.location", KEYSTORE),
        (f"{prefix}ssl.truststore.type", "PEM"),
        (f"{prefix}ssl.truststore.location", TRUSTSTORE),
        (f"{prefix}ssl.client.auth", client_auth),
        (f"{prefix}ssl.enabled.protocols", TLS_PROTOCOLS),
        (f"{prefix}ssl.endpoint.identification.algorithm", "https"),
    ]


def secure_listener_settings(environment: Environment, host: Host) -> list[tuple[str, str]]:
    """The client listener's authentication: SCRAM (default), mTLS, OAUTHBEARER or Kerberos, and the
    rendered LDAP options."""
    security = environment.security
    assert security is not None
    if security.client_authentication == "mtls":
        return [
            *_tls_settings("listener.name.secure.", "required"),
            ("listener.name.secure.ssl.principal.mapping.rules", CLIENT_CERTIFICATE_RULES),
        ]
    settings = _tls_settings("listener.name.secure.", "none")
    if security.client_authentication == "oauthbearer":
        return settings + oauthbearer_settings(environment)
    if security.client_authentication == "kerberos":
        return settings + kerberos_settings(environment, host)
    mechanisms = ["SCRAM-SHA-512"]
    settings.append(
        (
            "listener.name.secure.scram-sha-512.sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        )
    )
    if security.ldap is not None:
        mechanisms.append("PLAIN")
        settings += [
            (
                "listener.name.secure.plain.sasl.server.callback.handler.class",
                "io.confluent.security.auth.provider.ldap.LdapAuthenticateCallbackHandler",
            ),
            ("ldap.java.naming.provider.url", security.ldap.url),
            ("ldap.user.dn.template", security.ldap.user_dn_template),
        ]
    settings.append(("listener.name.secure.sasl.enabled.mechanisms", ",".join(mechanisms)))
    return settings


def oauthbearer_settings(environment: Environment) -> list[tuple[str, str]]:
    """OAUTHBEARER only on the secure listener: a token's signature is checked against the provider's
    JWKS (fetched over HTTPS that only the provider's CA verifies), then its issuer, audience and expiry;
    the principal is the claim that names the client."""
    assert environment.security is not None and environment.security.oauthbearer is not None
    oauthbearer = environment.security.oauthbearer
    return [
        ("listener.name.secure.sasl.enabled.mechanisms", "OAUTHBEARER"),
        (
            "listener.name.secure.oauthbearer.sasl.jaas.config",
            # The login module also logs the broker itself in as a client; brokers talk over INTERNAL
            # (certificates), so that token is never sent: an unsigned local one satisfies the module.
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            f'unsecuredLoginStringClaim_sub="{BROKER_LOGIN_SUBJECT}" '
            f'ssl.truststore.type="PEM" ssl.truststore.location="{OIDC_PROVIDER_CA}";',
        ),
        (
            "listener.name.secure.oauthbearer.sasl.server.callback.handler.class",
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
        ),
        ("sasl.oauthbearer.jwks.endpoint.url", oauthbearer.jwks_url),
        ("sasl.oauthbearer.expected.issuer", oauthbearer.issuer),
        ("sasl.oauthbearer.expected.audience", oauthbearer.audience),
        ("sasl.oauthbearer.sub.claim.name", oauthbearer.principal_claim),
    ]


def kerberos_principal_rules(realm: str) -> str:
    """``<principal>@<realm>`` -> ``<principal>``, the name the ACLs hold. Nothing else maps: a service
    name (``kafka/<host>``) or another realm's principal has no Kafka principal and is refused."""
    # No backslash: server.properties would swallow it ("[.]" is a literal dot either way).
    return f"RULE:[1:$1@$0](^[a-z0-9][a-z0-9-]*@{realm.replace('.', '[.]')}$)s/@.*$//"


def kerberos_settings(environment: Environment, host: Host) -> list[tuple[str, str]]:
    """GSSAPI only on the secure listener: the broker accepts tickets for its own service principal,
    proven with its keytab (read by the broker's JVM alone); the realm and its KDCs come from
    ``KERBEROS_CONFIG`` (``java.security.krb5.conf``)."""
    assert environment.security is not None and environment.security.kerberos is not None
    kerberos = environment.security.kerberos
    return [
        ("listener.name.secure.sasl.enabled.mechanisms", "GSSAPI"),
        ("sasl.kerberos.service.name", kerberos.service_name),
        (
            "listener.name.secure.gssapi.sasl.jaas.config",
            "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true storeKey=true "
            f'keyTab="{BROKER_KEYTAB}" principal="{broker_principal(kerberos, host)}";',
        ),
        ("sasl.kerberos.principal.to.local.rules", kerberos_principal_rules(kerberos.realm)),
    ]


def layout_for_phase(environment: Environment, host: Host, phase: str) -> ListenerLayout:
    """The listener layout of one node in one phase (plaintext everything when there is no security section)."""
    ports = environment.kafka.listeners
    address = host.address
    broker = "broker" in host.roles
    controller = "controller" in host.roles
    security = environment.security
    if security is None:
        plain = ([f"CLIENT://{address}:{ports.client_port}"] if broker else []) + (
            [f"CONTROLLER://{address}:{ports.controller_port}"] if controller else []
        )
        return ListenerLayout(
            tuple(plain),
            tuple(plain[:1]) if broker else (),
            ("CLIENT:PLAINTEXT", "CONTROLLER:PLAINTEXT"),
            "CLIENT",
        )

    step = phase_index(phase)
    listeners: list[str] = []
    advertised: list[str] = []
    if broker:
        if step < phase_index("secured"):
            listeners.append(f"CLIENT://{address}:{ports.client_port}")
            advertised.append(f"CLIENT://{address}:{ports.client_port}")
        if step >= phase_index("listeners"):
            listeners += [
                f"SECURE://{address}:{security.secure_client_port}",
                f"INTERNAL://{address}:{security.internal_port}",
            ]
            advertised += [
                f"SECURE://{address}:{security.secure_client_port}",
                f"INTERNAL://{address}:{security.internal_port}",
            ]
    if controller:
        listeners.append(f"CONTROLLER://{address}:{ports.controller_port}")
    secure_protocol = "SSL" if security.client_authentication == "mtls" else "SASL_SSL"
    protocol_map = ["CLIENT:PLAINTEXT", f"SECURE:{secure_protocol}", "INTERNAL:SSL", "CONTROLLER:SSL"]

    # Every node speaks TLS to the controllers, with its certificate as its identity.
    settings = [
        *_tls_settings("", "required"),
        ("ssl.principal.mapping.rules", PRINCIPAL_RULES),
        *_tls_settings("listener.name.controller.", "required"),
    ]
    if broker and step >= phase_index("listeners"):
        settings += _tls_settings("listener.name.internal.", "required")
        settings += secure_listener_settings(environment, host)
    if step >= phase_index("interbroker"):
        settings += [
            ("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer"),
            ("super.users", ";".join(super_users(environment))),
            ("allow.everyone.if.no.acl.found", "false" if step >= phase_index("secured") else "true"),
        ]
    inter_broker = "INTERNAL" if step >= phase_index("interbroker") else "CLIENT"
    return ListenerLayout(
        tuple(listeners), tuple(advertised), tuple(protocol_map), inter_broker, tuple(settings)
    )


def client_phase(current: str, target: str) -> str:
    """Which listener the rollout's own admin client uses while moving from ``current`` to ``target``:
    the secure one once it exists everywhere, plaintext before."""
    return PHASES[min(phase_index(current), phase_index(target))]
