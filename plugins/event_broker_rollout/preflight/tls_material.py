"""Operator-provided TLS material, checked on the Airflow side before anything is deployed.

The files in ``security.tls.material_dir`` (``ca.crt``, ``<host>.crt`` with its chain, ``<host>.key``)
are read once per node (``read_node_files``); the checks are pure functions over what was read. A
certificate that a broker would reject, or that clients could not verify, blocks the rollout here rather
than during the security stage's rolling restart. Results name the file and the certificate's subject;
nothing from a key file (not even an error text about it) reaches a result.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from event_broker_rollout.config.environment import CA_CERT, Host, Tls
from event_broker_rollout.evidence.results import Result, Severity, Status, check
from event_broker_rollout.hosts.tls import node_names
from event_broker_rollout.hosts.tls_policy import (
    ACCEPTED_EC_CURVES,
    MIN_RSA_BITS,
    WEAK_SIGNATURE_HASHES,
)


@dataclass(frozen=True)
class NodeFiles:
    """One node's provided material as read; a file that could not be read or parsed is empty here and
    its problem is in ``problems``."""

    host: str
    ca_file: str
    chain_file: str
    key_file: str
    ca: tuple[x509.Certificate, ...] = ()
    chain: tuple[x509.Certificate, ...] = ()  # as listed in the file: leaf first
    key: PrivateKeyTypes | None = None
    problems: tuple[str, ...] = ()


def _read_certificates(path: Path) -> tuple[tuple[x509.Certificate, ...], str | None]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return (), f"{path.name}: cannot be read ({error.strerror})"
    try:
        return tuple(x509.load_pem_x509_certificates(data)), None
    except ValueError:
        return (), f"{path.name}: holds no readable PEM certificate"


def _read_key(path: Path) -> tuple[PrivateKeyTypes | None, str | None]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"{path.name}: cannot be read ({error.strerror})"
    # Fixed wording only: a parser's message about a key file is not repeated anywhere.
    try:
        return serialization.load_pem_private_key(data, password=None), None
    except TypeError:
        return None, f"{path.name}: the private key is encrypted (the nodes need it unencrypted, mode 0600)"
    except (ValueError, UnsupportedAlgorithm):
        return None, f"{path.name}: holds no readable unencrypted PEM private key"


def read_node_files(material_dir: Path, host_name: str) -> NodeFiles:
    ca_path = material_dir / CA_CERT
    chain_path = material_dir / f"{host_name}.crt"
    key_path = material_dir / f"{host_name}.key"
    ca, ca_problem = _read_certificates(ca_path)
    chain, chain_problem = _read_certificates(chain_path)
    key, key_problem = _read_key(key_path)
    return NodeFiles(
        host=host_name,
        ca_file=str(ca_path),
        chain_file=str(chain_path),
        key_file=str(key_path),
        ca=ca,
        chain=chain,
        key=key,
        problems=tuple(p for p in (ca_problem, chain_problem, key_problem) if p),
    )


def _name(path: str) -> str:
    return Path(path).name


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def _public_key_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer`` signed ``child``. cryptography's own check refuses weak hashes; those are verified
    here by hand, so a SHA-1 certificate is reported as SHA-1 (sec.tls.signature), not as a broken chain."""
    if child.issuer != issuer.subject:
        return False
    try:
        if _signature_hash(child) not in WEAK_SIGNATURE_HASHES:
            child.verify_directly_issued_by(issuer)
            return True
        key, algorithm = issuer.public_key(), child.signature_hash_algorithm
        if algorithm is None:
            return False
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _self_signed(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject


def _skipped(check_id: str, files: NodeFiles, needs: str) -> Result:
    return Result(
        id=check_id,
        status=Status.SKIPPED,
        host=files.host,
        message=f"not checked: {needs} could not be read (see sec.tls.files)",
        severity=Severity.ADVISORY,
    )


def _result(
    check_id: str, files: NodeFiles, problems: list[str], passed_observed: str, expected: str, what: str
) -> Result:
    return check(
        check_id,
        not problems,
        host=files.host,
        observed="; ".join(problems) or passed_observed,
        expected=expected,
        message=f"{what}: {'; '.join(problems)}" if problems else what,
    )


def files_check(files: NodeFiles) -> Result:
    return check(
        "sec.tls.files",
        not files.problems,
        host=files.host,
        observed="; ".join(files.problems) or "all three files read",
        expected=f"{_name(files.ca_file)}, {_name(files.chain_file)}, {_name(files.key_file)} "
        f"in {Path(files.ca_file).parent}",
        message="provided TLS material: " + ("; ".join(files.problems) or "files present and readable"),
    )


def chain_check(files: NodeFiles) -> Result:
    """The chain file lists the leaf, then each issuer in turn, and ends at a certificate the CA file holds
    or issued; every issuer is a CA certificate."""
    if not files.chain or not files.ca:
        return _skipped("sec.tls.chain", files, f"{_name(files.chain_file)} or {_name(files.ca_file)}")
    chain_name, ca_name = _name(files.chain_file), _name(files.ca_file)
    leaf = files.chain[0]
    problems = []
    if _is_ca(leaf):
        problems.append(
            f"{chain_name}: the first certificate ({_subject(leaf)}) is a CA certificate; the node's own "
            "certificate must come first"
        )
    for position, (child, issuer) in enumerate(zip(files.chain, files.chain[1:], strict=False), start=1):
        if not _issued(child, issuer):
            problems.append(
                f"{chain_name}: certificate {position + 1} ({_subject(issuer)}) did not issue certificate "
                f"{position} ({_subject(child)}); the order must be leaf, then each issuer up to the CA"
            )
            break
        if not _is_ca(issuer):
            problems.append(f"{chain_name}: issuer {_subject(issuer)} is not a CA certificate")
    last = files.chain[-1]
    # The chain file may end with the root itself, or with the certificate the root issued.
    anchored = any(last == anchor or _issued(last, anchor) for anchor in files.ca)
    if not anchored:
        problems.append(
            f"{chain_name}: the chain ends at {_subject(last)}, issued by {last.issuer.rfc4514_string()}, "
            f"which is not the CA in {ca_name} ({', '.join(_subject(a) for a in files.ca)})"
        )
    problems += [f"{ca_name}: {_subject(a)} is not a CA certificate" for a in files.ca if not _is_ca(a)]
    path = " <- ".join(_subject(c) for c in files.chain)
    return _result(
        "sec.tls.chain",
        files,
        problems,
        f"{path} <- {ca_name}",
        f"{chain_name}: leaf first, then each issuer, trusted by the CA in {ca_name}",
        f"certificate chain of {chain_name}",
    )


def san_check(files: NodeFiles, host: Host) -> Result:
    """The leaf's SANs cover every name and address a client may use for the node (hostname verification)."""
    if not files.chain:
        return _skipped("sec.tls.san", files, _name(files.chain_file))
    leaf = files.chain[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        present = {name.lower() for name in sans.get_values_for_type(x509.DNSName)} | {
            str(address) for address in sans.get_values_for_type(x509.IPAddress)
        }
    except x509.ExtensionNotFound:
        present = set()
    dns, addresses = node_names(host)
    needed = [*dns, *addresses]
    missing = [name for name in needed if name.lower() not in present]
    chain_name = _name(files.chain_file)
    return _result(
        "sec.tls.san",
        files,
        [f"{chain_name}: the SANs lack {', '.join(missing)}"] if missing else [],
        f"SANs {', '.join(sorted(present))}",
        f"SANs cover {', '.join(needed)}",
        f"names in {chain_name}",
    )


def expiry_check(files: NodeFiles, min_days: int, now: dt.datetime) -> Result:
    """Every certificate a client verifies is valid now and for at least ``min_days`` more days
    (``renew_before_days``: the security stage would otherwise have to renew it at once)."""
    if not files.chain or not files.ca:
        return _skipped("sec.tls.expiry", files, f"{_name(files.chain_file)} or {_name(files.ca_file)}")
    listed = [(_name(files.chain_file), c) for c in files.chain] + [
        (_name(files.ca_file), c) for c in files.ca
    ]
    problems = []
    for file_name, certificate in listed:
        days = (certificate.not_valid_after_utc - now).days
        if certificate.not_valid_before_utc > now:
            problems.append(
                f"{file_name}: {_subject(certificate)} is not valid before "
                f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            )
        elif days < 0:
            problems.append(
                f"{file_name}: {_subject(certificate)} expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
            )
        elif days < min_days:
            problems.append(
                f"{file_name}: {_subject(certificate)} expires in {days} days "
                f"({certificate.not_valid_after_utc:%Y-%m-%d})"
            )
    soonest_file, soonest = min(listed, key=lambda item: item[1].not_valid_after_utc)
    return _result(
        "sec.tls.expiry",
        files,
        problems,
        f"earliest expiry {soonest.not_valid_after_utc:%Y-%m-%d} ({_subject(soonest)} in {soonest_file}, "
        f"{(soonest.not_valid_after_utc - now).days} days)",
        f">= {min_days} days left on every certificate (renew_before_days)",
        "certificate validity",
    )


def key_weakness(key: PublicKeyTypes) -> str | None:
    """Why a public key is too weak or unsupported for the brokers' TLS, or None when it is accepted."""
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= MIN_RSA_BITS else f"RSA {key.key_size} bits (needs >= {MIN_RSA_BITS})"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in ACCEPTED_EC_CURVES:
            return None
        return f"EC on {key.curve.name} (needs one of {', '.join(ACCEPTED_EC_CURVES)})"
    return f"{type(key).__name__.removesuffix('PublicKey') or 'unknown'} key (needs RSA or EC)"


def describe_key(key: PublicKeyTypes) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


def key_strength_check(files: NodeFiles) -> Result:
    """Every certificate's key (node, intermediates, CA): RSA >= 2048 bits or EC on P-256 or stronger."""
    if not files.chain or not files.ca:
        return _skipped("sec.tls.key_strength", files, f"{_name(files.chain_file)} or {_name(files.ca_file)}")
    listed = [(_name(files.chain_file), c) for c in files.chain] + [
        (_name(files.ca_file), c) for c in files.ca
    ]
    problems = []
    for file_name, certificate in listed:
        weakness = key_weakness(certificate.public_key())
        if weakness:
            problems.append(f"{file_name}: {_subject(certificate)} has a weak key: {weakness}")
    return _result(
        "sec.tls.key_strength",
        files,
        problems,
        ", ".join(f"{_subject(c)}: {describe_key(c.public_key())}" for _, c in listed),
        f"RSA >= {MIN_RSA_BITS} bits or EC on {', '.join(ACCEPTED_EC_CURVES)}",
        "key algorithm and size",
    )


def _signature_hash(certificate: x509.Certificate) -> str:
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return "unsupported"
    return algorithm.name if algorithm is not None else "none (EdDSA)"


def signature_check(files: NodeFiles) -> Result:
    """No certificate a peer verifies is signed with a broken hash. A self-signed root's own signature is
    never verified (the root is trusted as a file), so it is not held to this."""
    if not files.chain:
        return _skipped("sec.tls.signature", files, _name(files.chain_file))
    chain_name = _name(files.chain_file)
    verified = [c for c in files.chain if not _self_signed(c)]
    problems = [
        f"{chain_name}: {_subject(c)} is signed with {_signature_hash(c).upper()}"
        for c in verified
        if _signature_hash(c) in WEAK_SIGNATURE_HASHES
    ]
    return _result(
        "sec.tls.signature",
        files,
        problems,
        ", ".join(f"{_subject(c)}: {_signature_hash(c).upper()}" for c in verified)
        or "no signature to verify",
        f"no {' or '.join(h.upper() for h in WEAK_SIGNATURE_HASHES)} signatures",
        f"signature algorithms in {chain_name}",
    )


def key_match_check(files: NodeFiles) -> Result:
    if files.key is None or not files.chain:
        return _skipped("sec.tls.key_match", files, f"{_name(files.key_file)} or {_name(files.chain_file)}")
    key_name, chain_name = _name(files.key_file), _name(files.chain_file)
    leaf = files.chain[0]
    matches = _public_key_der(files.key.public_key()) == _public_key_der(leaf.public_key())
    return _result(
        "sec.tls.key_match",
        files,
        [] if matches else [f"{key_name} is not the private key of {_subject(leaf)} in {chain_name}"],
        f"{key_name} matches {_subject(leaf)}",
        f"{key_name} holds the private key of the first certificate in {chain_name}",
        "private key and certificate",
    )


def provided_material_checks(tls: Tls, host: Host, now: dt.datetime) -> list[Result]:
    """Every check of one node's provided material (a file that cannot be read fails sec.tls.files and
    skips the checks that need it)."""
    files = read_node_files(Path(tls.material_dir), host.name)
    return [
        files_check(files),
        chain_check(files),
        san_check(files, host),
        expiry_check(files, tls.renew_before_days, now),
        key_strength_check(files),
        signature_check(files),
        key_match_check(files),
    ]
