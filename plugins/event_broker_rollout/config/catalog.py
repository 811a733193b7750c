"""The healthcare event catalog and the data-classification policy, as validated models.

Besides the models this module derives what Kafka should hold: one ``TopicSpec`` per topic (event,
dead-letter and operational topics) with its partitions, replication and topic configs, settled from
the entry, the catalog defaults and the entry's policy class. ``validate_catalog`` checks the catalog
against the policy classes and names the YAML path of every problem, as the environment model does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import fastavro
import yaml
from fastavro.schema import SchemaParseException
from pydantic import BaseModel, Field

from event_broker_rollout import paths
from event_broker_rollout.config.base import CatalogConfigError, ConfigProblem, Strict
from event_broker_rollout.config.environment import model_problems
from event_broker_rollout.config.types import FreeText, Identifier, ProjectPath, TopicName

Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"
]
CleanupPolicy = Literal["delete", "compact"]

MS_PER_DAY = 86_400_000
_HL7_TRIGGER = re.compile(r"^A\d\d$")


class TopicDefaults(Strict):
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)
    cleanup_policy: CleanupPolicy = "delete"
    compatibility: Compatibility = "FULL_TRANSITIVE"
    dead_letter_retention_days: int = Field(default=14, ge=1)


class EventType(Strict):
    name: Identifier
    topic: TopicName
    description: FreeText = ""
    hl7_triggers: list[Identifier] = Field(default_factory=list)
    fhir_resource: Identifier
    key: Identifier
    schema_file: ProjectPath = Field(alias="schema")
    classification: Identifier
    compatibility: Compatibility | None = None
    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    retention_days: int | None = Field(default=None, ge=1)
    cleanup_policy: CleanupPolicy | None = None
    dead_letter: bool = True


class OperationalTopic(Strict):
    name: Identifier
    topic: TopicName
    description: FreeText = ""
    classification: Identifier
    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    retention_days: int | None = Field(default=None, ge=1)
    cleanup_policy: CleanupPolicy | None = None


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

    def event(self, name: str) -> EventType:
        for event in self.events:
            if event.name == name:
                return event
        raise KeyError(f"the catalog has no event type {name!r}")

    def compatibility(self, event: EventType) -> Compatibility:
        return event.compatibility or self.defaults.compatibility


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
    description: FreeText
    allowed_readers: list[Identifier] | None = None  # None: any component with a contract may read
    requires: ClassRequirements


class Policies(Strict):
    classifications: dict[Identifier, Classification]


# --- desired topics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """One topic as Kafka should hold it. ``origin`` maps each setting to the YAML path it came from."""

    topic: str
    classification: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    cleanup_policy: CleanupPolicy
    retention_days: int | None
    unclean_leader_election: bool = False
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def retention_ms(self) -> int:
        return -1 if self.retention_days is None else self.retention_days * MS_PER_DAY

    @property
    def kafka_cleanup_policy(self) -> str:
        # A compacted topic with a retention also deletes by age; without one it keeps the latest
        # record per key until a tombstone erases it.
        if self.cleanup_policy == "compact" and self.retention_days is not None:
            return "compact,delete"
        return self.cleanup_policy

    @property
    def configs(self) -> dict[str, str]:
        """Topic configs as Kafka reports them (strings): what create_topics sets and drift compares."""
        return {
            "cleanup.policy": self.kafka_cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(self.min_insync_replicas),
            "unclean.leader.election.enable": str(self.unclean_leader_election).lower(),
        }


def desired_topics(
    catalog: Catalog,
    policies: Policies,
    *,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[TopicSpec]:
    """Every catalog topic (same order as ``Catalog.topics()``) with its settings resolved.

    ``replication_factor``/``min_insync_replicas`` override the catalog for a cluster that cannot hold
    it (a single-node test broker); the catalog itself stays as validated.
    """
    defaults = catalog.defaults
    classes = policies.classifications
    specs: list[TopicSpec] = []

    def unclean(classification: str) -> bool:
        known = classes.get(classification)
        return known.requires.unclean_leader_election if known else False

    def resolve(
        path: str, item: EventType | OperationalTopic, topic: str, retention_path: str, dead_letter: bool
    ) -> TopicSpec:
        origin: dict[str, str] = {"classification": f"{path}.classification", "topic": f"{path}.topic"}

        def pick(key: str, own: int | None, fallback: int) -> int:
            origin[key] = f"{path}.{key}" if own is not None else f"defaults.{key}"
            return own if own is not None else fallback

        partitions = pick("partitions", item.partitions, defaults.partitions)
        rf = pick("replication_factor", item.replication_factor, defaults.replication_factor)
        min_isr = pick("min_insync_replicas", item.min_insync_replicas, defaults.min_insync_replicas)
        if dead_letter:
            # Dead letters are not state: deleted by age whatever the source topic does.
            cleanup: CleanupPolicy = "delete"
            retention: int | None = defaults.dead_letter_retention_days
            origin["cleanup_policy"] = origin["retention_days"] = retention_path
        else:
            cleanup = item.cleanup_policy or defaults.cleanup_policy
            origin["cleanup_policy"] = (
                f"{path}.cleanup_policy" if item.cleanup_policy else "defaults.cleanup_policy"
            )
            retention = item.retention_days
            origin["retention_days"] = retention_path
        return TopicSpec(
            topic=topic,
            classification=item.classification,
            partitions=partitions,
            replication_factor=replication_factor or rf,
            min_insync_replicas=min_insync_replicas or min_isr,
            cleanup_policy=cleanup,
            retention_days=retention,
            unclean_leader_election=unclean(item.classification),
            origin=origin,
        )

    for index, event in enumerate(catalog.events):
        path = f"events[{index}]"
        specs.append(resolve(path, event, event.topic, f"{path}.retention_days", dead_letter=False))
    for index, event in enumerate(catalog.events):
        if event.dead_letter:
            path = f"events[{index}]"
            dlq = f"{event.topic}.dlq"
            specs.append(resolve(path, event, dlq, "defaults.dead_letter_retention_days", dead_letter=True))
    for index, item in enumerate(catalog.operational_topics):
        path = f"operational_topics[{index}]"
        specs.append(resolve(path, item, item.topic, f"{path}.retention_days", dead_letter=False))
    return specs


# --- validation ----------------------------------------------------------------------------------


def _class_problems(spec: TopicSpec, policies: Policies) -> list[ConfigProblem]:
    known = policies.classifications
    if spec.classification not in known:
        return [
            ConfigProblem(
                path=spec.origin["classification"],
                message=f"topic {spec.topic}: unknown class {spec.classification!r}; known: "
                + ", ".join(sorted(known)),
            )
        ]
    requires = known[spec.classification].requires
    problems: list[ConfigProblem] = []

    def problem(setting: str, message: str) -> None:
        problems.append(
            ConfigProblem(
                path=spec.origin[setting], message=f"topic {spec.topic} ({spec.classification}): {message}"
            )
        )

    days = spec.retention_days
    if days is None and spec.cleanup_policy == "delete" and not requires.infinite_retention_allowed:
        problem("retention_days", "no retention (records kept forever) is not allowed for this class")
    if days is None and spec.cleanup_policy == "compact" and requires.min_retention_days is not None:
        problem(
            "cleanup_policy",
            f"the class keeps every record {requires.min_retention_days} days; compaction keeps only "
            "the latest record per key",
        )
    if days is not None and requires.max_retention_days is not None and days > requires.max_retention_days:
        problem(
            "retention_days",
            f"retention {days} days is above the class maximum of {requires.max_retention_days}",
        )
    if days is not None and requires.min_retention_days is not None and days < requires.min_retention_days:
        problem(
            "retention_days",
            f"retention {days} days is below the class minimum of {requires.min_retention_days}",
        )
    if spec.replication_factor < requires.min_replication_factor:
        problem(
            "replication_factor",
            f"replication factor {spec.replication_factor} is below the class minimum of "
            f"{requires.min_replication_factor}",
        )
    if spec.min_insync_replicas < requires.min_insync_replicas:
        problem(
            "min_insync_replicas",
            f"min.insync.replicas {spec.min_insync_replicas} is below the class minimum of "
            f"{requires.min_insync_replicas}",
        )
    if spec.min_insync_replicas >= spec.replication_factor:
        problem(
            "min_insync_replicas",
            f"min.insync.replicas {spec.min_insync_replicas} must be below the replication factor "
            f"{spec.replication_factor} (otherwise one broker down stops every acks=all producer)",
        )
    return problems


def load_avro_schema(schema_file: str) -> Any:
    """The JSON of an .avsc file (a path from the catalog), checked to parse as Avro.

    Raises ``ValueError`` with a one-line reason.
    """
    source = paths.resolve_project_path(schema_file)
    try:
        schema = json.loads(source.read_text())
        fastavro.parse_schema(schema)
    except OSError as error:
        raise ValueError(f"cannot read {schema_file}: {error.strerror}") from None
    except (ValueError, SchemaParseException) as error:
        raise ValueError(f"{schema_file} is not a valid Avro schema: {error}") from None
    return schema


def validate_catalog(catalog: Catalog, policies: Policies) -> list[ConfigProblem]:
    """Every problem of the catalog against the policy classes, each with its YAML path."""
    specs = desired_topics(catalog, policies)
    problems: list[ConfigProblem] = []
    for spec in specs:
        problems.extend(_class_problems(spec, policies))

    topic_counts = Counter(spec.topic for spec in specs)
    seen: set[str] = set()
    for spec in specs:
        if topic_counts[spec.topic] > 1 and spec.topic in seen:
            problems.append(ConfigProblem(path=spec.origin["topic"], message=f"duplicate topic {spec.topic}"))
        seen.add(spec.topic)

    names = Counter(event.name for event in catalog.events)
    for index, event in enumerate(catalog.events):
        path = f"events[{index}]"
        if names[event.name] > 1:
            problems.append(ConfigProblem(path=f"{path}.name", message=f"duplicate event name {event.name}"))
        if not catalog.compatibility(event).endswith("_TRANSITIVE"):
            where = f"{path}.compatibility" if event.compatibility else "defaults.compatibility"
            problems.append(
                ConfigProblem(
                    path=where,
                    message=f"{catalog.compatibility(event)} checks only the latest version; topics that are "
                    "kept or replayed need a *_TRANSITIVE mode",
                )
            )
        for position, trigger in enumerate(event.hl7_triggers):
            if not _HL7_TRIGGER.match(trigger):
                problems.append(
                    ConfigProblem(
                        path=f"{path}.hl7_triggers[{position}]",
                        message=f"{trigger!r} is not an HL7 v2 ADT trigger event (A01, A08, ...)",
                    )
                )
        try:
            load_avro_schema(event.schema_file)
        except ValueError as error:
            problems.append(ConfigProblem(path=f"{path}.schema", message=str(error)))
    return problems


def check_catalog(catalog: Catalog, policies: Policies, source: str = "config/catalog.yaml") -> None:
    """Raise ``CatalogConfigError`` naming every problem's YAML path; return quietly when valid."""
    problems = validate_catalog(catalog, policies)
    if problems:
        raise CatalogConfigError(source, problems)


# --- loading -------------------------------------------------------------------------------------


def _load(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CatalogConfigError(str(path), [ConfigProblem(path="", message=str(error))]) from None
    loaded, problems = model_problems(model, raw)
    if loaded is None or problems:
        raise CatalogConfigError(str(path), problems)
    return loaded


def load_catalog(path: str | Path = "config/catalog.yaml") -> Catalog:
    catalog = _load(paths.resolve_project_path(path), Catalog)
    assert isinstance(catalog, Catalog)
    return catalog


def load_policies(path: str | Path = "config/policies.yaml") -> Policies:
    policies = _load(paths.resolve_project_path(path), Policies)
    assert isinstance(policies, Policies)
    return policies


def load_checked_catalog(
    catalog_path: str | Path = "config/catalog.yaml", policies_path: str | Path = "config/policies.yaml"
) -> tuple[Catalog, Policies]:
    """Both files loaded, the catalog validated against the policies (``CatalogConfigError`` if not)."""
    catalog = load_catalog(catalog_path)
    policies = load_policies(policies_path)
    check_catalog(catalog, policies, source=str(paths.resolve_project_path(catalog_path)))
    return catalog, policies
