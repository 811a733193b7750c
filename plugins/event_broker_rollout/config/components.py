"""Component contracts: who produces and consumes what, as principals with least-privilege grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from event_broker_rollout import paths
from event_broker_rollout.config.base import ComponentsConfigError, ConfigProblem, Strict
from event_broker_rollout.config.catalog import Catalog, Policies, load_catalog, load_policies
from event_broker_rollout.config.environment import Environment, model_problems
from event_broker_rollout.config.types import FreeText, Identifier, Principal, TopicName

CANARY_PRINCIPAL = "canary"
PROBE_PRINCIPAL = "ebr-probe"
CANARY_TOPIC = "ops.rollout.canary.v1"


class Quotas(Strict):
    producer_byte_rate: int | None = Field(default=None, ge=1024)
    consumer_byte_rate: int | None = Field(default=None, ge=1024)


class Component(Strict):
    name: Identifier
    description: FreeText = ""
    principal: Principal
    # A topic, or a prefix of topics when it ends with ".".
    produces: list[TopicName] = Field(default_factory=list)
    consumes: list[TopicName] = Field(default_factory=list)
    group: Identifier | None = None
    quotas: Quotas = Quotas()


class Components(Strict):
    components: list[Component]
    service_principals: dict[Principal, FreeText] = Field(default_factory=dict)

    def principals(self) -> list[str]:
        return [c.principal for c in self.components] + list(self.service_principals)


def is_prefix(pattern: str) -> bool:
    return pattern.endswith(".")


def matches(pattern: str, topic: str) -> bool:
    return topic.startswith(pattern) if is_prefix(pattern) else topic == pattern


def load_components(path: str | Path = "config/components.yaml") -> Components:
    source = paths.resolve_project_path(path)
    try:
        raw = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ComponentsConfigError(str(source), [ConfigProblem(path="", message=str(error))]) from None
    loaded, problems = model_problems(Components, raw)
    if loaded is None or problems:
        raise ComponentsConfigError(str(source), problems)
    return loaded


def contract_problems(components: Components, catalog: Catalog, policies: Policies) -> list[ConfigProblem]:
    """Every grant names a catalog topic (or a prefix of some); PHI is read only by allowed readers."""
    problems: list[ConfigProblem] = []
    topics = dict(catalog.topics())
    seen: set[str] = set()
    for index, component in enumerate(components.components):
        if component.principal in seen:
            problems.append(
                ConfigProblem(
                    path=f"components[{index}].principal",
                    message=f"duplicate principal {component.principal}",
                )
            )
        seen.add(component.principal)
        if component.consumes and not component.group:
            problems.append(
                ConfigProblem(
                    path=f"components[{index}].group", message="a consumer needs its consumer group"
                )
            )
        for key in ("produces", "consumes"):
            for position, pattern in enumerate(getattr(component, key)):
                covered = [t for t in topics if matches(pattern, t)]
                if not covered:
                    problems.append(
                        ConfigProblem(
                            path=f"components[{index}].{key}[{position}]",
                            message=f"{pattern} matches no catalog topic",
                        )
                    )
                if key != "consumes":
                    continue
                for topic in covered:
                    readers = (
                        policies.classifications[topics[topic]].allowed_readers
                        if topics[topic] in policies.classifications
                        else None
                    )
                    if readers is not None and component.name not in readers:
                        problems.append(
                            ConfigProblem(
                                path=f"components[{index}].consumes[{position}]",
                                message=f"{component.name} may not read {topics[topic]} topic {topic} (policy allows: {', '.join(readers)})",
                            )
                        )
    return problems


def validated_components(path: str, catalog: Catalog, policies: Policies) -> Components:
    components = load_components(path)
    problems = contract_problems(components, catalog, policies)
    if problems:
        raise ComponentsConfigError(str(paths.resolve_project_path(path)), problems)
    return components


def components_of(environment: Environment) -> Any:
    assert environment.security is not None
    return validated_components(
        environment.security.components,
        load_catalog(environment.catalog),
        load_policies(environment.policies),
    )
