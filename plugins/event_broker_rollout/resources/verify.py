"""Verification from the outside, as an attacker or a careless client would try: reused by the compliance run.

Each probe is a real connection: a raw Kafka ApiVersions request over plaintext (a TLS listener must
not answer it), TLS handshakes pinned to one protocol version, certificate checks against the cluster
CA with hostname verification on, SASL logins with no or wrong credentials, and a principal without
grants asking for a PHI topic.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from event_broker_rollout.cluster import health
from event_broker_rollout.evidence.results import Result, Severity, Status, check
from event_broker_rollout.hosts.parallel import in_parallel

CONNECT_TIMEOUT = 5.0
API_VERSIONS_KEY = 18
CORRELATION_ID = 0x0EB0


def api_versions_request() -> bytes:
    client_id = b"ebr-probe"
    body = struct.pack(">hhih", API_VERSIONS_KEY, 0, CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def plaintext_answers(address: str, port: int) -> bool | None:
    """True if a plaintext Kafka ApiVersions request gets a Kafka answer; None if nothing listens there."""
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.sendall(api_versions_request())
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                if not chunk:
                    return False
                header += chunk
    except ConnectionRefusedError:
        return None
    except OSError:
        return False
    _size, correlation = struct.unpack(">ii", header)
    return correlation == CORRELATION_ID


def tls_handshake(
    address: str, port: int, version: ssl.TLSVersion, ca_file: str | None, ciphers: str | None = None
) -> dict[str, Any]:
    """Handshake pinned to one TLS version (and, given ``ciphers``, to those TLS 1.2 suites); the client
    lowers its own security level so it really offers them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = version
    context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    elif version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if ca_file:
        context.load_verify_locations(ca_file)
        context.check_hostname = True
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((address, port), timeout=CONNECT_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=address) as tls,
        ):
            certificate = tls.getpeercert()
            cipher = tls.cipher()
            return {
                "accepted": True,
                "protocol": tls.version(),
                "cipher": cipher[0] if cipher else None,
                "certificate": certificate,
            }
    except ssl.SSLError as error:
        offered = getattr(error, "reason", "") != "NO_PROTOCOLS_AVAILABLE"
        return {"accepted": False, "offered": offered, "error": getattr(error, "reason", None) or str(error)}
    except OSError as error:
        return {"accepted": False, "offered": True, "error": str(error)}


def days_left(certificate: dict[str, Any]) -> int:
    expires = dt.datetime.strptime(certificate["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)
    return (expires - dt.datetime.now(dt.UTC)).days


# A listener that requires client certificates answers a certificate-less TLS 1.2 client with this alert,
# after it has agreed on the protocol version: the version is accepted, the client is not.
CLIENT_CERTIFICATE_REQUIRED = ("SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED")


def listener_checks(
    host: str,
    address: str,
    port: int,
    ca_file: str,
    client_auth: bool = False,
    warn_days: int = 30,
    fail_days: int = 7,
) -> list[Result]:
    """One TLS listener: plaintext refused, TLS < 1.2 refused, 1.2 and 1.3 accepted with a valid certificate."""
    target = f"{address}:{port}"
    answered = plaintext_answers(address, port)
    results = [
        check(
            f"tls.plaintext_refused[{port}]",
            answered is False,
            host=host,
            observed="no Kafka answer over plaintext"
            if answered is False
            else ("nothing listening" if answered is None else "answered a plaintext ApiVersions request"),
            expected="plaintext refused",
            message=f"PLAINTEXT to {target}",
        )
    ]
    for name, version in (("1.0", ssl.TLSVersion.TLSv1), ("1.1", ssl.TLSVersion.TLSv1_1)):
        outcome = tls_handshake(address, port, version, ca_file)
        if not outcome["accepted"] and not outcome.get("offered", True):
            results.append(
                Result(
                    id=f"tls.v{name}_refused[{port}]",
                    status=Status.SKIPPED,
                    host=host,
                    message=f"this client's TLS library cannot offer TLS {name}",
                    severity=Severity.ADVISORY,
                )
            )
            continue
        results.append(
            check(
                f"tls.v{name}_refused[{port}]",
                not outcome["accepted"],
                host=host,
                observed=outcome.get("protocol") or outcome.get("error"),
                expected="handshake refused",
                message=f"TLS {name} to {target}",
            )
        )
    certificate = None
    for name, version in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        outcome = tls_handshake(address, port, version, ca_file)
        negotiated = client_auth and outcome.get("error") in CLIENT_CERTIFICATE_REQUIRED
        observed: str | None
        if outcome["accepted"]:
            observed = f"{outcome['protocol']} {outcome['cipher']}"
            certificate = certificate or outcome["certificate"]
        else:
            observed = (
                "negotiated; client certificate required (mTLS)" if negotiated else outcome.get("error")
            )
        results.append(
            check(
                f"tls.v{name}_accepted[{port}]",
                outcome["accepted"] or negotiated,
                host=host,
                observed=observed,
                expected=f"TLS {name} handshake with a certificate valid for {address}",
                message=f"TLS {name} to {target} (chain to the cluster CA, hostname verified)",
            )
        )
    if certificate is not None:
        days = days_left(certificate)
        status = Status.PASS if days > warn_days else (Status.WARN if days > fail_days else Status.FAIL)
        results.append(
            Result(
                id=f"tls.certificate_expiry[{port}]",
                status=status,
                host=host,
                observed=f"{days} days",
                expected=f"> {warn_days} days (fail at {fail_days})",
                message=f"certificate of {target}",
            )
        )
    return results


def authentication_checks(secure_config: dict[str, Any]) -> list[Result]:
    """No identity and a wrong one are both refused by the secure listener: with SCRAM a wrong password,
    with mTLS a certificate for the same principal from another CA, with OAUTHBEARER an unsigned token,
    with Kerberos a password."""
    refuse = health.clients_to_refuse(secure_config)
    errors = in_parallel(
        ["none", "wrong"], lambda which: health.login_error(refuse[which], expect_refusal=True)
    )
    if secure_config.get("security.protocol") == "SSL":
        wrong = ("auth.foreign_certificate_refused", "a client certificate from another CA")
    elif secure_config.get("sasl.mechanism") == "OAUTHBEARER":
        wrong = ("auth.unsigned_token_refused", "a token naming the same principal that no provider signed")
    elif secure_config.get("sasl.mechanism") == "GSSAPI":
        wrong = (
            "auth.password_refused",
            "a password for the same principal (the listener takes tickets only)",
        )
    else:
        wrong = ("auth.wrong_password_refused", "a client with a wrong password")
    results = []
    for check_id, error, label in (
        ("auth.no_credentials_refused", errors["none"], "a client with no credentials"),
        (*wrong[:1], errors["wrong"], wrong[1]),
    ):
        results.append(
            check(
                check_id,
                error is not None,
                observed="refused" if error else "connected and listed topics",
                expected="refused",
                message=label,
                details={"error": (error or "")[:200]},
            )
        )
    return results


def authorization_refused(config: dict[str, Any], topic: str) -> tuple[bool, str]:
    """Produce one record as this principal; True if the broker answers TOPIC_AUTHORIZATION_FAILED."""
    outcome: dict[str, Any] = {}

    def delivered(error: KafkaError | None, _message: Any) -> None:
        outcome["error"] = error

    producer = Producer({**config, "message.timeout.ms": 10000, "enable.idempotence": False, "retries": 0})
    try:
        producer.produce(topic, value=b"authorization probe", on_delivery=delivered)
        producer.flush(15)
    except KafkaException as raised:
        outcome["error"] = raised.args[0] if raised.args else None
    answer = outcome.get("error")
    code = answer.code() if isinstance(answer, KafkaError) else None
    return code == KafkaError.TOPIC_AUTHORIZATION_FAILED, (
        answer.name() if isinstance(answer, KafkaError) else str(answer or "delivered")
    )


def read_refused(config: dict[str, Any], topic: str, group: str) -> tuple[bool, str]:
    """Consume from ``topic`` as this principal; True if the broker refuses (topic or group authorization)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {**config, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    try:
        consumer.subscribe([topic])
        deadline = 20
        while deadline > 0:
            message = consumer.poll(1)
            deadline -= 1
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.GROUP_AUTHORIZATION_FAILED,
            ):
                return True, error.name()
            if error is None:
                return False, "read a record"
        return False, "no refusal within 20 s"
    finally:
        consumer.close()
