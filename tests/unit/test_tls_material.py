"""Provided TLS material checked in preflight: certificates made here with ``cryptography``, one problem
per file, each named by its check and file; and the cipher suites the brokers and the registry offer."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from event_broker_rollout.config.environment import Environment, Host, load_environment, load_sizing_profiles
from event_broker_rollout.evidence.results import Result, Status, stage_failed
from event_broker_rollout.hosts import desired, tls, tls_policy
from event_broker_rollout.preflight import stage, tls_material
from event_broker_rollout.resources import verify

NOW = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
CHECK_IDS = [
    "sec.tls.files",
    "sec.tls.chain",
    "sec.tls.san",
    "sec.tls.expiry",
    "sec.tls.key_strength",
    "sec.tls.signature",
    "sec.tls.key_match",
]


@dataclass(frozen=True)
class Issuer:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


def pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ca(
    name: str,
    issuer: Issuer | None = None,
    days: int = 3650,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> Issuer:
    key = key or ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer.key if issuer else key, hashes.SHA256())  # no issuer: self-signed
    )
    return Issuer(cert, key)


def leaf(
    host: Host,
    issuer: Issuer,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    names: list[str] | None = None,
    days: int = 365,
    sha1: bool = False,
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    dns, addresses = tls.node_names(host)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (dns if names is None else names)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host.name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=400))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return (signed_with_sha1(cert, issuer.key) if sha1 else cert), key


SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")  # DER of the OID 1.2.840.113549.1.1.11
SHA1_WITH_RSA = bytes.fromhex("06092a864886f70d010105")  # 1.2.840.113549.1.1.5, the same length


def der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def signed_with_sha1(certificate: x509.Certificate, issuer_key: object) -> x509.Certificate:
    """The certificate re-signed with SHA-1, as an old PKI would have (cryptography no longer signs
    certificates with SHA-1, but still signs bytes with it)."""
    assert isinstance(issuer_key, rsa.RSAPrivateKey), "the SHA-1 fixture needs an RSA issuer"
    tbs = certificate.tbs_certificate_bytes
    assert tbs.count(SHA256_WITH_RSA) == 1
    tbs = tbs.replace(SHA256_WITH_RSA, SHA1_WITH_RSA)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = der(0x30, SHA1_WITH_RSA + b"\x05\x00")
    return x509.load_der_x509_certificate(der(0x30, tbs + algorithm + der(0x03, b"\x00" + signature)))


HOST = Host(
    name="kbrk-1",
    address="198.51.100.21",
    ssh_conn_id="ssh_kbrk_1",
    roles=["broker"],
    advertised_names=["kbrk-1.kafka.example.org"],
)


@pytest.fixture(scope="module")
def pki() -> tuple[Issuer, Issuer]:
    root = ca("Example Root CA")
    return root, ca("Example Issuing CA", root)


def write(directory: Path, host: Host, root: Issuer, chain: str, key: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_text(pem(root.cert))
    (directory / f"{host.name}.crt").write_text(chain)
    (directory / f"{host.name}.key").write_text(key)
    return directory


def run(directory: Path, host: Host = HOST, min_days: int = 30) -> dict[str, Result]:
    tls_settings = load_environment("prod").security.tls.model_copy(
        update={"material_dir": str(directory), "renew_before_days": min_days}
    )
    results = tls_material.provided_material_checks(tls_settings, host, NOW)
    assert [r.id for r in results] == CHECK_IDS
    assert all(r.host == host.name for r in results)
    return {r.id: r for r in results}


def failed(results: dict[str, Result]) -> dict[str, str]:
    return {r.id: r.message for r in results.values() if r.status is not Status.PASS}


def test_a_leaf_with_its_intermediate_passes_every_check(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing)
    results = run(write(tmp_path, HOST, root, pem(cert, issuing.cert), key_pem(key)))
    assert failed(results) == {}
    assert "CN=Example Issuing CA" in results["sec.tls.chain"].observed
    assert "EC secp256r1" in results["sec.tls.key_strength"].observed


def test_a_chain_file_that_ends_with_the_root_itself_passes(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing)
    assert failed(run(write(tmp_path, HOST, root, pem(cert, issuing.cert, root.cert), key_pem(key)))) == {}


def test_the_internal_ca_material_passes_the_same_checks(tmp_path):
    """What the security stage issues in internal_ca mode is held to the same standard."""
    ca_cert, ca_key = tls.ensure_internal_ca(tmp_path / "ca", "test")
    material = tls.issue_node_certificate(HOST, ca_cert, ca_key, 365)
    directory = tmp_path / "provided"
    directory.mkdir()
    (directory / "ca.crt").write_text(material.ca_pem)
    (directory / f"{HOST.name}.crt").write_text(material.cert_pem)
    (directory / f"{HOST.name}.key").write_text(material.key_pem)
    tls_settings = load_environment("prod").security.tls.model_copy(update={"material_dir": str(directory)})
    results = tls_material.provided_material_checks(tls_settings, HOST, dt.datetime.now(dt.UTC))
    assert [r.id for r in results if r.status is not Status.PASS] == []


def test_an_expired_certificate_is_named(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing, days=-2)
    problems = failed(run(write(tmp_path, HOST, root, pem(cert, issuing.cert), key_pem(key))))
    assert list(problems) == ["sec.tls.expiry"]
    assert "kbrk-1.crt: CN=kbrk-1 expired on 2026-12-01" in problems["sec.tls.expiry"]


def test_a_certificate_due_for_renewal_is_named_with_its_days(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing, days=10)
    results = run(write(tmp_path, HOST, root, pem(cert, issuing.cert), key_pem(key)), min_days=30)
    assert list(failed(results)) == ["sec.tls.expiry"]
    assert "expires in 10 days" in results["sec.tls.expiry"].observed
    assert results["sec.tls.expiry"].expected == ">= 30 days left on every certificate (renew_before_days)"


def test_an_expiring_ca_is_named_in_its_own_file(tmp_path):
    root = ca("Short-lived Root", days=5)
    cert, key = leaf(HOST, root)
    problems = failed(run(write(tmp_path, HOST, root, pem(cert), key_pem(key))))
    assert list(problems) == ["sec.tls.expiry"]
    assert "ca.crt: CN=Short-lived Root expires in 5 days" in problems["sec.tls.expiry"]


def test_a_missing_name_or_address_in_the_sans_is_named(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing, names=["kbrk-1", "kbrk-9.kafka.example.org"])
    results = run(write(tmp_path, HOST, root, pem(cert, issuing.cert), key_pem(key)))
    assert list(failed(results)) == ["sec.tls.san"]
    assert results["sec.tls.san"].observed == "kbrk-1.crt: the SANs lack kbrk-1.kafka.example.org"
    assert "198.51.100.21" in results["sec.tls.san"].expected


def test_a_sha1_signature_is_named(tmp_path, pki):
    root, _ = pki
    rsa_issuing = ca("Example RSA Issuing CA", root, key=rsa.generate_private_key(65537, 2048))
    cert, key = leaf(HOST, rsa_issuing, sha1=True)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha1"
    problems = failed(run(write(tmp_path, HOST, root, pem(cert, rsa_issuing.cert), key_pem(key))))
    assert list(problems) == ["sec.tls.signature"]
    assert "kbrk-1.crt: CN=kbrk-1 is signed with SHA1" in problems["sec.tls.signature"]


def test_a_1024_bit_rsa_key_is_named(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing, key=rsa.generate_private_key(65537, 1024))
    problems = failed(run(write(tmp_path, HOST, root, pem(cert, issuing.cert), key_pem(key))))
    assert list(problems) == ["sec.tls.key_strength"]
    assert "CN=kbrk-1 has a weak key: RSA 1024 bits (needs >= 2048)" in problems["sec.tls.key_strength"]


def test_a_2048_bit_rsa_key_and_an_ec_p256_key_are_accepted():
    assert tls_material.key_weakness(rsa.generate_private_key(65537, 2048).public_key()) is None
    assert tls_material.key_weakness(ec.generate_private_key(ec.SECP256R1()).public_key()) is None
    assert tls_material.key_weakness(ec.generate_private_key(ec.SECP224R1()).public_key()) == (
        "EC on secp224r1 (needs one of secp256r1, secp384r1, secp521r1)"
    )


def test_a_chain_in_the_wrong_order_is_named(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing)
    problems = failed(run(write(tmp_path, HOST, root, pem(issuing.cert, cert), key_pem(key))))
    assert "sec.tls.chain" in problems
    assert "the first certificate (CN=Example Issuing CA) is a CA certificate" in problems["sec.tls.chain"]
    assert "did not issue certificate 1" in problems["sec.tls.chain"]


def test_a_chain_without_its_intermediate_is_named(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing)
    problems = failed(run(write(tmp_path, HOST, root, pem(cert), key_pem(key))))
    assert list(problems) == ["sec.tls.chain"]
    assert (
        "kbrk-1.crt: the chain ends at CN=kbrk-1, issued by CN=Example Issuing CA, which is not the CA in "
        "ca.crt (CN=Example Root CA)" in problems["sec.tls.chain"]
    )


def test_a_certificate_from_another_ca_is_named(tmp_path, pki):
    root, _ = pki
    stranger = ca("Example Root CA")  # same name, different key: only the signature tells them apart
    cert, key = leaf(HOST, stranger)
    problems = failed(run(write(tmp_path, HOST, root, pem(cert), key_pem(key))))
    assert list(problems) == ["sec.tls.chain"]


def test_a_key_that_belongs_to_another_certificate_is_named(tmp_path, pki):
    root, issuing = pki
    cert, _ = leaf(HOST, issuing)
    other = ec.generate_private_key(ec.SECP256R1())
    results = run(write(tmp_path, HOST, root, pem(cert, issuing.cert), key_pem(other)))
    assert list(failed(results)) == ["sec.tls.key_match"]
    assert (
        results["sec.tls.key_match"].observed
        == "kbrk-1.key is not the private key of CN=kbrk-1 in kbrk-1.crt"
    )
    assert key_pem(other).splitlines()[1] not in json.dumps(results["sec.tls.key_match"].to_dict())


def test_missing_and_unreadable_files_fail_and_skip_what_needs_them(tmp_path, pki):
    root, issuing = pki
    cert, key = leaf(HOST, issuing)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"not-for-the-report"),
    ).decode()
    directory = write(tmp_path, HOST, root, pem(cert, issuing.cert), encrypted)
    (directory / "ca.crt").unlink()
    results = run(directory)
    assert results["sec.tls.files"].status is Status.FAIL
    assert results["sec.tls.files"].observed == (
        "ca.crt: cannot be read (No such file or directory); "
        "kbrk-1.key: the private key is encrypted (the nodes need it unencrypted, mode 0600)"
    )
    for check_id in ("sec.tls.chain", "sec.tls.expiry", "sec.tls.key_strength", "sec.tls.key_match"):
        assert results[check_id].status is Status.SKIPPED
    assert results["sec.tls.san"].status is Status.PASS and results["sec.tls.signature"].status is Status.PASS


def test_a_key_file_with_garbage_is_reported_without_its_content(tmp_path, pki):
    root, issuing = pki
    cert, _ = leaf(HOST, issuing)
    secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
    results = run(write(tmp_path, HOST, root, pem(cert, issuing.cert), secret))
    assert results["sec.tls.files"].observed == "kbrk-1.key: holds no readable unencrypted PEM private key"
    assert "c2VjcmV0" not in json.dumps([r.to_dict() for r in results.values()])


# --- preflight's security step on a whole environment ------------------------------------------------


def provided(environment: Environment, directory: Path) -> Environment:
    assert environment.security is not None
    tls_settings = environment.security.tls.model_copy(update={"material_dir": str(directory)})
    return environment.model_copy(
        update={"security": environment.security.model_copy(update={"tls": tls_settings})}
    )


def test_preflight_security_step_names_each_bad_file_and_blocks(tmp_path, pki):
    """prod.yaml (provided PKI) with one problem per broker's files: the step reports every one of them,
    per host, as blocking results, and no key material reaches them."""
    root, issuing = pki
    prod = provided(load_environment("prod"), tmp_path)
    (tmp_path / "ca.crt").write_text(pem(root.cert))
    problems = {
        "kbrk-1": {"days": -1},  # expired
        "kbrk-2": {"names": ["kbrk-2.wrong.example.org"]},
        "kbrk-3": {"sha1": True},
        "kbrk-4": {"key": rsa.generate_private_key(65537, 1024)},
    }
    impostor = ca("Example Issuing CA", root)  # same name as the chain's intermediate, another key
    rsa_issuing = ca("Example RSA Issuing CA", root, key=rsa.generate_private_key(65537, 2048))
    keys = []
    for host in prod.hosts:
        signer = {"kbrk-5": impostor, "kbrk-3": rsa_issuing}.get(host.name, issuing)  # kbrk-5: chain broken
        cert, key = leaf(host, signer, **problems.get(host.name, {}))
        chain = pem(cert, rsa_issuing.cert if signer is rsa_issuing else issuing.cert)
        if host.name == "kctl-3":
            key = ec.generate_private_key(ec.SECP256R1())  # a key that belongs to no certificate here
        keys.append(key_pem(key))
        (tmp_path / f"{host.name}.crt").write_text(chain)
        (tmp_path / f"{host.name}.key").write_text(key_pem(key))

    results = stage.check_security(prod).results

    failures = sorted((r.host, r.id) for r in results if r.status is Status.FAIL)
    assert failures == [
        ("kbrk-1", "sec.tls.expiry"),
        ("kbrk-2", "sec.tls.san"),
        ("kbrk-3", "sec.tls.signature"),
        ("kbrk-4", "sec.tls.key_strength"),
        ("kbrk-5", "sec.tls.chain"),
        ("kctl-3", "sec.tls.key_match"),
    ]
    assert stage_failed(results)
    assert all(r.severity == "blocking" for r in results if r.status is Status.FAIL)
    messages = {r.host: r.message for r in results if r.status is Status.FAIL}
    assert "kbrk-1.crt: CN=kbrk-1 expired on" in messages["kbrk-1"]
    assert "kbrk-2.crt: the SANs lack kbrk-2" in messages["kbrk-2"]
    assert "kbrk-3.crt: CN=kbrk-3 is signed with SHA1" in messages["kbrk-3"]
    assert "kbrk-4.crt: CN=kbrk-4 has a weak key: RSA 1024 bits" in messages["kbrk-4"]
    assert (
        "kbrk-5.crt: certificate 2 (CN=Example Issuing CA) did not issue certificate 1" in messages["kbrk-5"]
    )
    assert "kctl-3.key is not the private key of CN=kctl-3" in messages["kctl-3"]
    report = json.dumps([r.to_dict() for r in results])
    assert not [k for k in keys if k.splitlines()[1] in report]
    assert {r.id for r in results if r.host == "kctl-1"} == {*CHECK_IDS, "sec.auth.prerequisites"}


def test_preflight_security_step_leaves_internal_ca_material_to_the_security_stage():
    results = stage.check_security(load_environment("lab")).results
    material = [r for r in results if r.id == "sec.tls.material"]
    assert len(material) == 3 and all(r.status is Status.SKIPPED for r in material)
    assert "generated by the security stage" in material[0].message


# --- cipher suites the brokers and the registry offer ------------------------------------------------


def test_tls12_suites_are_ecdhe_with_aead_and_tls13_suites_are_kept():
    assert tls_policy.TLS12_CIPHER_SUITES
    for suite in tls_policy.TLS12_CIPHER_SUITES:
        assert suite.startswith(("TLS_ECDHE_ECDSA_WITH_", "TLS_ECDHE_RSA_WITH_")), suite
        assert suite.endswith(("_GCM_SHA256", "_GCM_SHA384", "_CHACHA20_POLY1305_SHA256")), suite
    assert set(tls_policy.TLS13_CIPHER_SUITES) <= set(tls_policy.SERVER_CIPHER_SUITES)
    # The internal CA issues P-256 keys: its certificates need the ECDSA suites.
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" in tls_policy.SERVER_CIPHER_SUITES


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def rendered(environment: Environment, host: str, phase: str, path: str) -> dict[str, str]:
    state = desired.desired_state(
        environment, environment.host(host), "lab", load_sizing_profiles()["lab"], phase
    )
    return props(next(f for f in state.files if f.path == path).content)


def test_brokers_and_the_registry_render_the_restricted_suites(tmp_path):
    lab = provided(load_environment("lab"), tmp_path)  # the internal CA made here, not the lab's own
    expected = ",".join(tls_policy.SERVER_CIPHER_SUITES)
    for phase in ("plaintext", "secured"):  # the controller listener is TLS from the first start
        server = rendered(lab, "lab1", phase, "/etc/kafka/server.properties")
        assert server["ssl.cipher.suites"] == expected
        assert not [k for k in server if k.endswith(".ssl.cipher.suites")]  # no listener overrides it
    registry = rendered(lab, "lab1", "secured", "/etc/schema-registry/application.properties")
    assert registry["quarkus.http.ssl.cipher-suites"] == expected
    assert "quarkus.http.ssl.cipher-suites" not in rendered(
        lab, "lab1", "plaintext", "/etc/schema-registry/application.properties"
    )


def test_a_cluster_without_tls_renders_no_cipher_suites():
    lab = load_environment("lab").model_copy(update={"security": None})
    assert "ssl.cipher.suites" not in rendered(lab, "lab1", "plaintext", "/etc/kafka/server.properties")


# --- the compliance run's probe of suites outside the policy, against a real TLS server on loopback -----


@contextlib.contextmanager
def loopback_tls_server(tmp_path: Path, ciphers: str) -> Iterator[tuple[int, str]]:
    """A TLS 1.2+ server on 127.0.0.1 with an internal-CA (P-256) certificate offering ``ciphers``
    (OpenSSL names); yields (port, CA file). It answers handshakes until the block ends."""
    ca_cert, ca_key = tls.ensure_internal_ca(tmp_path / "ca", "loopback")
    loopback = Host(name="localhost", address="127.0.0.1", ssh_conn_id="local", roles=["broker"])
    material = tls.issue_node_certificate(loopback, ca_cert, ca_key, 30)
    (tmp_path / "node.pem").write_text(material.cert_pem + material.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    context.load_cert_chain(tmp_path / "node.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError), context.wrap_socket(connection, server_side=True):
                pass  # the handshake is all a probe asks for

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        yield listener.getsockname()[1], str(tmp_path / "ca" / "ca.crt")
    finally:
        stopping.set()
        socket.create_connection(listener.getsockname()).close()  # wakes the waiting accept()
        worker.join(timeout=10)
        listener.close()


def test_the_outside_policy_probe_is_refused_by_an_ecdhe_aead_only_server(tmp_path):
    with loopback_tls_server(tmp_path, "ECDHE+AESGCM:ECDHE+CHACHA20") as (port, ca_file):
        probe = verify.tls_handshake(
            "127.0.0.1", port, ssl.TLSVersion.TLSv1_2, ca_file, tls_policy.OUTSIDE_POLICY_TLS12_PROBE
        )
        assert probe["accepted"] is False
        allowed = verify.tls_handshake("127.0.0.1", port, ssl.TLSVersion.TLSv1_2, ca_file)
        assert allowed["accepted"] is True and allowed["cipher"].startswith("ECDHE-ECDSA-")


def test_the_outside_policy_probe_catches_a_server_offering_cbc_suites(tmp_path):
    with loopback_tls_server(tmp_path, "ALL:@SECLEVEL=0") as (port, ca_file):
        probe = verify.tls_handshake(
            "127.0.0.1", port, ssl.TLSVersion.TLSv1_2, ca_file, tls_policy.OUTSIDE_POLICY_TLS12_PROBE
        )
    assert probe["accepted"] is True
    assert "GCM" not in probe["cipher"] and "CHACHA20" not in probe["cipher"]


def test_hosts_planned_at_once_share_one_internal_ca(tmp_path):
    """The infrastructure plan observes hosts in parallel and each asks for the CA: exactly one is made."""
    from concurrent.futures import ThreadPoolExecutor

    from event_broker_rollout.hosts import tls

    for attempt in range(5):
        folder = tmp_path / f"ca-{attempt}"
        with ThreadPoolExecutor(8) as pool:
            made = [ca for ca, _key in pool.map(tls.ensure_internal_ca, [folder] * 8, ["race"] * 8)]
        assert len({certificate.serial_number for certificate in made}) == 1
        assert made[0] == tls.ensure_internal_ca(folder, "race")[0]
