"""TLS material: an internal CA kept on the Airflow side, or operator-provided PEM files, validated.

Node certificates carry every name a client may use for the node (host name, address, advertised names)
as SANs, so hostname verification stays on. Private keys never leave this module except as file
content bound for the node they belong to: nothing here logs or returns key material in evidence.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import functools
import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from event_broker_rollout.config.environment import CA_CERT, Environment, Host
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.hosts.secret_files import write_secret

CA_KEY = "ca.key"
CA_LOCK = ".ca.lock"  # held while the CA is made or read


class TlsMaterialError(ValueError):
    pass


@dataclass(frozen=True)
class NodeMaterial:
    """PEM texts for one node; ``key_pem`` is secret and is only ever written to that node (mode 0600)."""

    host: str
    cert_pem: str  # node certificate followed by the chain up to (excluding) the root
    key_pem: str
    ca_pem: str

    def not_after(self) -> dt.datetime:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()).not_valid_after_utc


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def node_names(host: Host) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a node's certificate must cover."""
    dns = [host.name, *host.advertised_names]
    return sorted(set(dns)), [str(host.address)]


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Held by one thread or process at a time (each opens its own descriptor, so threads contend too)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_internal_ca(
    material_dir: Path, environment_name: str, validity_days: int = 3650
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create the internal CA once (key mode 0600 in a 0700 folder); later calls load it. Hosts are planned
    in parallel and each asks for the CA, so making or reading it is done under a lock."""
    material_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _exclusive(material_dir / CA_LOCK):
        return _load_or_create_ca(material_dir, environment_name, validity_days)


def _load_or_create_ca(
    material_dir: Path, environment_name: str, validity_days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key_path, cert_path = material_dir / CA_KEY, material_dir / CA_CERT
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsMaterialError(f"{key_path}: expected an EC private key")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    os.chmod(material_dir, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "event-broker-rollout"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"event-broker {environment_name} internal CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_secret(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue(
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    validity_days: int,
) -> tuple[str, str]:
    """(certificate PEM, private key PEM) of a fresh EC key signed by the CA; the subject is the CN alone,
    the form Kafka's principal mapping rules match."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_agreement=True,
                content_commitment=False,
                data_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


def issue_node_certificate(
    host: Host, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, validity_days: int
) -> NodeMaterial:
    dns, ips = node_names(host)
    cert_pem, key_pem = _issue(
        host.name,
        [*(x509.DNSName(n) for n in dns), *(x509.IPAddress(ipaddress.ip_address(a)) for a in ips)],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        ca_cert,
        ca_key,
        validity_days,
    )
    return NodeMaterial(
        host=host.name,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def _key_and_chain_problems(cert_pem: str, key_pem: str, ca_pem: str) -> list[str]:
    """The private key matches the leaf, and the chain leads from the leaf to the CA."""
    problems = []
    certs = x509.load_pem_x509_certificates(cert_pem.encode())
    leaf = certs[0]
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        problems.append("the private key does not match the certificate")
    issuer_of = leaf
    for candidate in [*certs[1:], ca]:
        try:
            issuer_of.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, Exception):
            problems.append(
                f"certificate chain broken at {issuer_of.subject.rfc4514_string()} (order: leaf, intermediates, then the CA)"
            )
            break
        issuer_of = candidate
    return problems


def _subject_and_expiry_problems(
    leaf: x509.Certificate, common_name: str, principal: str, min_days: int
) -> list[str]:
    problems = []
    subject = leaf.subject.rfc4514_string()  # the order Kafka matches ssl.principal.mapping.rules in
    if not re.fullmatch(f"CN={re.escape(common_name)}(,.*)?", subject):
        problems.append(f"subject {subject} does not begin with CN={common_name} ({principal})")
    days_left = (leaf.not_valid_after_utc - _now()).days
    if days_left < min_days:
        problems.append(f"expires in {days_left} days (needs at least {min_days})")
    return problems


def validate_node_material(material: NodeMaterial, host: Host, min_days: int) -> list[str]:
    """Problems with a node's material: key/cert mismatch, chain, SANs, expiry (empty list: usable)."""
    problems = _key_and_chain_problems(material.cert_pem, material.key_pem, material.ca_pem)
    leaf = x509.load_pem_x509_certificate(material.cert_pem.encode())
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        present = {
            *sans.get_values_for_type(x509.DNSName),
            *(str(a) for a in sans.get_values_for_type(x509.IPAddress)),
        }
    except x509.ExtensionNotFound:
        present = set()
    dns, ips = node_names(host)
    missing = [name for name in [*dns, *ips] if name not in present]
    if missing:
        problems.append(f"SANs lack {', '.join(missing)}")
    problems += _subject_and_expiry_problems(
        leaf, host.name, "the node's principal is User:node-<CN>", min_days
    )
    return problems


def load_provided(material_dir: Path, host: Host) -> NodeMaterial:
    try:
        return NodeMaterial(
            host=host.name,
            cert_pem=(material_dir / f"{host.name}.crt").read_text(),
            key_pem=(material_dir / f"{host.name}.key").read_text(),
            ca_pem=(material_dir / CA_CERT).read_text(),
        )
    except OSError as error:
        raise TlsMaterialError(f"{host.name}: provided TLS material missing: {error.filename}") from None


def node_material(environment: Environment, host: Host) -> NodeMaterial:
    """The node's current material: issued from the internal CA (kept, reused until renewal) or provided."""
    if environment.security is None:
        raise TlsMaterialError("the environment has no security section")
    tls = environment.security.tls
    material_dir = Path(tls.material_dir)
    if tls.mode == "provided":
        return load_provided(material_dir, host)
    ca_cert, ca_key = ensure_internal_ca(material_dir, environment.name)
    issued_dir = material_dir / "issued"
    cert_path, key_path = issued_dir / f"{host.name}.crt", issued_dir / f"{host.name}.key"
    if cert_path.exists() and key_path.exists():
        existing = NodeMaterial(
            host.name,
            cert_path.read_text(),
            key_path.read_text(),
            ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        )
        if not validate_node_material(existing, host, tls.renew_before_days):
            return existing
    fresh = issue_node_certificate(host, ca_cert, ca_key, tls.validity_days)
    write_secret(key_path, fresh.key_pem)
    cert_path.write_text(fresh.cert_pem)
    return fresh


def node_identity_files(environment: Environment, host: Host) -> tuple[Path, Path]:
    """(certificate, private key) files of the node's identity on the Airflow side, for a client that
    must authenticate as that node (the key file is mode 0600 and is never read into a setting)."""
    assert environment.security is not None
    node_material(environment, host)  # issued (or renewed) when the internal CA has none usable
    material_dir = Path(environment.security.tls.material_dir)
    folder = material_dir if environment.security.tls.mode == "provided" else material_dir / "issued"
    return folder / f"{host.name}.crt", folder / f"{host.name}.key"


CLIENTS_DIR = "clients"  # under the material folder: <principal>.crt and <principal>.key


@dataclass(frozen=True)
class ClientIdentity:
    """A principal's client certificate and key files on the Airflow side (the key file is mode 0600 and
    is never read into a setting, a log or evidence)."""

    principal: str
    certificate: Path
    key: Path
    not_after: dt.datetime
    issued: bool  # issued or renewed by this call


def _client_problems(cert_pem: str, key_pem: str, ca_pem: str, principal: str, min_days: int) -> list[str]:
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    return [
        *_key_and_chain_problems(cert_pem, key_pem, ca_pem),
        *_subject_and_expiry_problems(leaf, principal, f"the principal is User:{principal}", min_days),
    ]


def _not_after(cert_path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc


def client_certificate_problems(environment: Environment, principal: str, min_days: int) -> list[str]:
    """What stops a principal's client certificate (``<material_dir>/clients/<principal>.crt`` and ``.key``,
    issued by the internal CA or provided) from being used: a missing file, the key not matching, a chain not leading to ``ca.crt``, a
    subject other than CN=<principal>, fewer than ``min_days`` left (empty list: usable)."""
    assert environment.security is not None
    material_dir = Path(environment.security.tls.material_dir)
    cert_path = material_dir / CLIENTS_DIR / f"{principal}.crt"
    key_path = material_dir / CLIENTS_DIR / f"{principal}.key"
    try:
        texts = cert_path.read_text(), key_path.read_text(), (material_dir / CA_CERT).read_text()
    except OSError as error:
        return [f"missing {error.filename}"]
    try:
        return _client_problems(*texts, principal, min_days)
    except ValueError as error:  # not PEM, or not a certificate or key (the message quotes no content)
        return [f"unreadable: {error}"]


def client_identity(environment: Environment, principal: str) -> ClientIdentity:
    """The principal's mTLS identity (subject ``CN=<principal>``, client authentication only). With the
    internal CA it is issued when missing, not from this CA, or due for renewal, and kept; provided
    material (``<material_dir>/clients/<principal>.crt`` and ``.key``) is validated, never replaced."""
    if environment.security is None:
        raise TlsMaterialError("the environment has no security section")
    tls = environment.security.tls
    material_dir = Path(tls.material_dir)
    folder = material_dir / CLIENTS_DIR
    cert_path, key_path = folder / f"{principal}.crt", folder / f"{principal}.key"
    if tls.mode == "provided":
        problems = client_certificate_problems(environment, principal, min_days=1)
        if problems:
            raise TlsMaterialError(
                f"{principal}: provided client certificate unusable: {'; '.join(problems)}"
            )
        return ClientIdentity(principal, cert_path, key_path, _not_after(cert_path), issued=False)
    ca_cert, ca_key = ensure_internal_ca(material_dir, environment.name)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    # Stages build clients for many principals side by side (and the canary in its own process): the
    # check and the issue happen under the CA's lock, so one certificate is never issued twice at once.
    with _exclusive(material_dir / CA_LOCK):
        if (
            cert_path.exists()
            and key_path.exists()
            and not _client_problems(
                cert_path.read_text(), key_path.read_text(), ca_pem, principal, tls.renew_before_days
            )
        ):
            return ClientIdentity(principal, cert_path, key_path, _not_after(cert_path), issued=False)
        cert_pem, key_pem = _issue(
            principal, [], [ExtendedKeyUsageOID.CLIENT_AUTH], ca_cert, ca_key, tls.validity_days
        )
        write_secret(key_path, key_pem)
        cert_path.write_text(cert_pem)
    not_after = _not_after(cert_path)
    # Audited wherever it happens: the security stage issues them, any client may renew one it needs.
    audit(
        "security.client_certificate",
        target=principal,
        outcome="issued",
        not_after=not_after.isoformat(),
        result_id=f"identity.client_certificate[{principal}]",
    )
    return ClientIdentity(principal, cert_path, key_path, not_after, issued=True)


def certificate_principal(cert_path: Path) -> str:
    """The CN of a client certificate: the principal Kafka maps it to on the secure listener."""
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise TlsMaterialError(f"{cert_path}: the certificate has no CN")
    return str(names[0].value)


@functools.cache
def foreign_client_identity(principal: str) -> tuple[Path, Path]:
    """(certificate, key) for ``principal`` from a CA no cluster trusts: what an impostor presents. Made
    once per process in a private temporary folder that is removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="ebr-foreign-identity-"))
    atexit.register(shutil.rmtree, folder, True)
    ca_cert, ca_key = _load_or_create_ca(folder, "foreign", 1)
    cert_pem, key_pem = _issue(principal, [], [ExtendedKeyUsageOID.CLIENT_AUTH], ca_cert, ca_key, 1)
    write_secret(folder / f"{principal}.key", key_pem)
    (folder / f"{principal}.crt").write_text(cert_pem)
    return folder / f"{principal}.crt", folder / f"{principal}.key"


def pkcs12_keystore(material: NodeMaterial, password: str) -> bytes:
    certs = x509.load_pem_x509_certificates(material.cert_pem.encode())
    key = serialization.load_pem_private_key(material.key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TlsMaterialError("unsupported key type for PKCS12")
    return pkcs12.serialize_key_and_certificates(
        material.host.encode(),
        key,
        certs[0],
        certs[1:] or None,
        serialization.BestAvailableEncryption(password.encode()),
    )


def days_left(cert_pem: str) -> int:
    return (x509.load_pem_x509_certificate(cert_pem.encode()).not_valid_after_utc - _now()).days


class TrustedCaError(ValueError):
    pass


def trusted_ca_pem(path: str) -> str:
    """A CA certificate another service must trust (the OIDC provider's), as canonical PEM: the file must
    hold one readable, unexpired CA certificate, so nothing else reaches a host's trust store."""
    try:
        certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise TrustedCaError(f"{path}: not a readable PEM certificate ({error})") from None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TrustedCaError(f"{path}: not a CA certificate (basicConstraints CA:TRUE missing)")
    if certificate.not_valid_after_utc <= _now():
        raise TrustedCaError(f"{path}: expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
