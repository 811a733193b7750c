"""What Kerberos needs before any host changes: every keytab the realm's administrators issued (brokers'
and clients'), usable and private; the KDC grants the rollout's admin a ticket; every broker reaches a
KDC (each logs in with its keytab when it starts). Clocks within Kerberos' 5-minute tolerance are the
time checks' concern (their limit is far tighter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from event_broker_rollout.cluster import kerberos
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.config.keytabs import (
    KeytabError,
    broker_keytab,
    broker_principal,
    client_keytab_path,
    client_principal,
    read_keytab,
)
from event_broker_rollout.evidence.results import Result, check
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.remote import RemoteHost
from event_broker_rollout.preflight.network import connect_command, parse_connect_output


def _uses_kerberos(environment: Environment) -> bool:
    security = environment.security
    return (
        security is not None
        and security.client_authentication == "kerberos"
        and security.kerberos is not None
    )


def keytab_checks(environment: Environment, principals: Sequence[str]) -> list[Result]:
    """One result per keytab: present, 0600, in MIT's format, holding its principal (never its keys)."""
    if not _uses_kerberos(environment):
        return []
    assert environment.security is not None and environment.security.kerberos is not None
    realm = environment.security.kerberos
    results = []
    for host in environment.brokers:
        principal = broker_principal(realm, host)
        try:
            broker_keytab(realm, host)
            problem = ""
        except KeytabError as error:
            problem = str(error)
        results.append(
            check(
                "sec.kerberos.broker_keytab",
                not problem,
                host=host.name,
                observed=problem or "usable",
                expected=f"a 0600 keytab holding {principal}",
                message="the broker's keytab for its service principal",
            )
        )
    for name in principals:
        principal = client_principal(realm, name)
        try:
            read_keytab(client_keytab_path(realm, name), principal)
            problem = ""
        except KeytabError as error:
            problem = str(error)
        results.append(
            check(
                f"sec.kerberos.client_keytab[{name}]",
                not problem,
                observed=problem or "usable",
                expected=f"a 0600 keytab holding {principal}",
                message=f"{name}'s keytab",
            )
        )
    return results


def kdc_checks(environment: Environment) -> list[Result]:
    """The realm's KDC grants the rollout's admin a ticket with its keytab, from the Airflow side."""
    if not _uses_kerberos(environment):
        return []
    assert environment.security is not None
    granted = kerberos.ticket(environment, environment.security.admin_user)
    return [
        check(
            "sec.kerberos.kdc",
            granted.granted,
            observed=granted.evidence(),
            expected={"principal": granted.principal, "granted": True},
            message="the realm's KDC grants the rollout's admin a ticket with its keytab",
        )
    ]


def reachability_checks(environment: Environment, sessions: Mapping[str, RemoteHost]) -> list[Result]:
    """From every broker that answered, a TCP connection to a KDC of the realm."""
    if not _uses_kerberos(environment):
        return []
    assert environment.security is not None and environment.security.kerberos is not None
    realm = environment.security.kerberos
    kdcs = [(str(kdc), realm.kdc_port) for kdc in realm.kdcs]
    names = [host.name for host in environment.brokers if host.name in sessions]

    def reached(name: str) -> list[str]:
        output = sessions[name].run_argv(connect_command(kdcs), timeout=30)
        answers = parse_connect_output(output.stdout)
        return [f"{address}:{port}" for address, port in kdcs if answers.get((address, port), False)]

    return [
        check(
            "sec.kerberos.kdc_reachable",
            bool(reachable),
            host=name,
            observed=reachable or "no KDC reachable",
            expected=f"one of {', '.join(f'{a}:{p}' for a, p in kdcs)}",
            message="the broker reaches a KDC of its realm (it logs in with its keytab at start)",
        )
        for name, reachable in in_parallel(names, reached).items()
    ]
