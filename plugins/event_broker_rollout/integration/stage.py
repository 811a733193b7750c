"""The integration stage's steps: each component's contract, then synthetic (or the site's) events end to end."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from event_broker_rollout.cluster import clients
from event_broker_rollout.config.catalog import load_checked_catalog
from event_broker_rollout.config.components import PROBE_PRINCIPAL, Component, components_of
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.evidence.results import Result, Status, utcnow
from event_broker_rollout.evidence.steps import Step
from event_broker_rollout.hosts.fleet import recorded_phase
from event_broker_rollout.integration import contracts, events, flow

# Probe outcomes that are neither an answer nor a refusal.
INCONCLUSIVE = ("_TIMED_OUT", "_TRANSPORT", "_MSG_TIMED_OUT")


def _client_configs(environment: Environment) -> dict[str, dict[str, Any]]:
    """Each component's own credentials: the contracts are proven as the components, not as the admin."""
    components = components_of(environment).components
    by_principal = clients.principal_configs(
        environment, "secured", [*(c.principal for c in components), PROBE_PRINCIPAL]
    )
    configs = {component.name: by_principal[component.principal] for component in components}
    configs[PROBE_PRINCIPAL] = by_principal[PROBE_PRINCIPAL]
    return configs


def verify_contracts(environment: Environment, run_id: str) -> Step:
    catalog, policies = load_checked_catalog(environment.catalog, environment.policies)
    components = components_of(environment)
    configs = _client_configs(environment)
    phase = recorded_phase(environment)
    probe = Component(name=PROBE_PRINCIPAL, principal=PROBE_PRINCIPAL)
    everyone = [*components.components, probe]
    # each principal reads schemas with its own registry login too (sr-readonly where it authenticates)
    logins = clients.registry_configs(environment, phase, {c.principal for c in everyone})
    registries = {c.name: logins[c.principal] for c in everyone}

    def verify(component: Component, timeout: float) -> list[Result]:
        return contracts.verify_contract(
            component,
            configs[component.name],
            catalog=catalog,
            policies=policies,
            registry_config=registries[component.name],
            run_id=run_id,
            timeout=timeout,
        )

    def verify_patiently(component: Component) -> list[Result]:
        checked = verify(component, 30.0)
        # A probe that met neither an answer nor a refusal in time (a busy group coordinator right after
        # the security stage) proves nothing either way: ask once more, with more patience.
        if any(r.status is Status.FAIL and r.observed in INCONCLUSIVE for r in checked):
            checked = verify(component, 90.0)
        return checked

    # Components side by side: each probes in its own consumer group, so they never rebalance one another.
    with ThreadPoolExecutor(max_workers=len(everyone)) as pool:
        results = [result for checked in pool.map(verify_patiently, everyone) for result in checked]
    return Step.of(results)


def end_to_end(
    environment: Environment, run_id: str, sample_events: str | None, count: int, seed: int, docs_dir: Path
) -> Step:
    """The flow's results; its figures (events, latency, quality) are the step's summary."""
    catalog, _ = load_checked_catalog(environment.catalog, environment.policies)
    samples = events.resolve_samples(sample_events, count=count, seed=seed, now=utcnow(), catalog=catalog)
    outcome = flow.run_end_to_end(
        samples.events,
        catalog=catalog,
        components=components_of(environment),
        client_configs=_client_configs(environment),
        # the flow plays every component in one process: it reads schemas as the read-only probe principal
        registry_config=clients.registry_config(environment, recorded_phase(environment), PROBE_PRINCIPAL),
        run_id=run_id,
        docs_dir=docs_dir,
    )
    return Step.of([*samples.results(), *outcome.results()], summary=outcome.summary())
