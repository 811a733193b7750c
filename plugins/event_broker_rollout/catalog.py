"""The healthcare event catalog and the data-classification policy, as validated models."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from event_broker_rollout import paths
from event_broker_rollout.environment import ConfigProblem, EnvironmentConfigError, _pydantic_problems

Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicDefaults(Strict):
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)
    cleanup_policy: Literal["delete", "compact"] = "delete"
    compatibility: Compatibility = "FULL_TRANSITIVE"


class EventType(Strict):
    name: str
    topic: str = Field(pattern=r"^[a-zA-Z0-9._-]+$")
    description: str = ""
    hl7_triggers: list[str] = Field(default_factory=list)
    fhir_resource: str
    key: str
    schema_file: str = Field(alias="schema")
    classification: str
    compatibility: Compatibility | None = None
    partitions: int | None = Field(default=None, ge=1)
    retention_days: int | None = Field(default=None, ge=1)
    cleanup_policy: Literal["delete", "compact"] | None = None
    dead_letter: bool = True


class OperationalTopic(Strict):
    name: str
    topic: str = Field(pattern=r"^[a-zA-Z0-9._-]+$")
    description: str = ""
    classification: str
    partitions: int | None = Field(default=None, ge=1)
    retention_days: int | None = Field(default=None, ge=1)
    cleanup_policy: Literal["delete", "compact"] | None = None


class Catalog(Strict):
    defaults: TopicDefaults
    events: list[EventType] = Field(min_length=1)
    operational_topics: list[OperationalTopic] = Field(default_factory=list)

    def topics(self) -> list[tuple[str, str]]:
        """Every topic the catalog declares with its classification, dead-letter topics included."""
        topics = [(event.topic, event.classification) for event in self.events]
        topics += [(f"{event.topic}.dlq", event.classification) for event in self.events if event.dead_letter]
        topics += [(item.topic, item.classification) for item in self.operational_topics]
        return topics


class ClassRequirements(Strict):
    encryption_in_transit: bool
    authenticated_clients: bool
    acl_restricted: bool
    min_replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)
    unclean_leader_election: bool
    infinite_retention_allowed: bool
    max_retention_days: int | None = None
    min_retention_days: int | None = None


class Classification(Strict):
    description: str
    requires: ClassRequirements


class Policies(Strict):
    classifications: dict[str, Classification]


def _load(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise EnvironmentConfigError(str(path), [ConfigProblem(path="", message=str(error))]) from None
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise EnvironmentConfigError(str(path), _pydantic_problems(error)) from None


def load_catalog(path: str | Path = "config/catalog.yaml") -> Catalog:
    catalog = _load(paths.resolve_project_path(path), Catalog)
    assert isinstance(catalog, Catalog)
    return catalog


def load_policies(path: str | Path = "config/policies.yaml") -> Policies:
    policies = _load(paths.resolve_project_path(path), Policies)
    assert isinstance(policies, Policies)
    return policies
