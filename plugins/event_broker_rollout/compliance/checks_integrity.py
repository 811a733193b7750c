"""Integrity (45 CFR 164.312(c)): durability, cluster health, topics and retention as the catalog declares."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from event_broker_rollout.compliance.checks import (
    Findings,
    listing,
)
from event_broker_rollout.compliance.facts import (
    BrokerSettings,
    Health,
    Topics,
)
from event_broker_rollout.config.catalog import MS_PER_DAY, TopicSpec
from event_broker_rollout.config.policy import CompliancePolicy, RetentionRule
from event_broker_rollout.evidence.results import Result
from event_broker_rollout.resources.topics import ObservedTopic, plan_topic


def durability(policy: CompliancePolicy, topics: Topics, protected: Sequence[str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.durability.protected-topics"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    rules = policy.durability
    expected = {
        "replication_factor": f">= {rules.min_replication_factor}",
        "min.insync.replicas": f">= {rules.min_insync_replicas} and <= replication factor - 1",
        "unclean.leader.election.enable": str(rules.unclean_leader_election).lower(),
    }
    results = []
    for topic in protected:
        observed_topic = topics.observed.get(topic)
        if observed_topic is None:
            results.append(
                findings.result(
                    check_id,
                    False,
                    target=topic,
                    observed="missing",
                    expected=expected,
                    message=f"{topic}: missing",
                )
            )
            continue
        rf = observed_topic.replication_factor
        min_isr = int(observed_topic.configs.get("min.insync.replicas", "1"))
        unclean = observed_topic.configs.get("unclean.leader.election.enable", "false")
        problems = []
        if rf < rules.min_replication_factor:
            problems.append(f"replication factor {rf} < {rules.min_replication_factor}")
        if min_isr < rules.min_insync_replicas:
            problems.append(f"min.insync.replicas {min_isr} < {rules.min_insync_replicas}")
        if min_isr > rf - 1:
            problems.append(f"min.insync.replicas {min_isr} > replication factor - 1 ({rf - 1})")
        if unclean != str(rules.unclean_leader_election).lower():
            problems.append(f"unclean.leader.election.enable={unclean}")
        results.append(
            findings.result(
                check_id,
                not problems,
                target=topic,
                observed={
                    "replication_factor": rf,
                    "min.insync.replicas": min_isr,
                    "unclean.leader.election.enable": unclean,
                },
                expected=expected,
                message=f"{topic}: " + ("; ".join(problems) if problems else "durable"),
            )
        )
    return results


def health_checks(policy: CompliancePolicy, health: Health, node_names: Mapping[int, str]) -> list[Result]:
    findings = Findings(policy)

    def nodes(ids: Iterable[Any]) -> str:
        return ", ".join(f"{node_names.get(int(i), '?')} (node {i})" for i in ids)

    brokers, quorum, partitions = health.brokers, health.quorum, health.partitions
    problems = [
        f"{key.replace('_', ' ')}: {listing(partitions.get(key) or [])}"
        for key in ("offline", "under_min_isr", "under_replicated")
        if partitions.get(key)
    ]
    return [
        findings.result(
            "compliance.health.brokers",
            bool(brokers.get("healthy")),
            observed={"registered": brokers.get("registered"), "missing": brokers.get("missing")},
            expected=f"{len(node_names)} nodes registered" if node_names else "every broker registered",
            message="brokers: "
            + (
                "all registered"
                if brokers.get("healthy")
                else f"missing {nodes(brokers.get('missing') or [])}"
                + (f" ({brokers['error']})" if brokers.get("error") else "")
            ),
        ),
        findings.result(
            "compliance.health.quorum",
            bool(quorum.get("healthy")),
            observed={
                k: quorum.get(k)
                for k in ("leader", "missing", "lagging", "error")
                if quorum.get(k) is not None
            },
            expected="every voter present and caught up, one leader",
            message="controller quorum: "
            + (
                f"healthy, leader node {quorum.get('leader')}"
                if quorum.get("healthy")
                else quorum.get("error")
                or f"missing or lagging {nodes([*(quorum.get('missing') or []), *(quorum.get('lagging') or [])])}"
            ),
        ),
        findings.result(
            "compliance.health.partitions",
            bool(partitions.get("healthy")),
            observed={
                k: partitions.get(k)
                for k in ("partitions", "offline", "under_min_isr", "under_replicated", "error")
                if partitions.get(k) is not None
            },
            expected="no offline, under-replicated or under-min-ISR partition",
            message="partitions: "
            + (
                f"{partitions.get('partitions')} healthy"
                if partitions.get("healthy")
                else "; ".join(problems) or str(partitions.get("error"))
            ),
        ),
    ]


def _retention_problems(rule: RetentionRule, configs: Mapping[str, str]) -> list[str]:
    problems = []
    cleanup = {part.strip() for part in configs.get("cleanup.policy", "delete").split(",")}
    disallowed = sorted(cleanup - set(rule.cleanup))
    if disallowed:
        problems.append(f"cleanup {', '.join(disallowed)} not allowed (allowed: {', '.join(rule.cleanup)})")
    retention_ms = int(configs.get("retention.ms", "-1"))
    if retention_ms < 0:
        if rule.infinite == "never" or (rule.infinite == "compacted_only" and "compact" not in cleanup):
            problems.append(
                "kept forever (retention.ms=-1)"
                + (", not compacted" if rule.infinite == "compacted_only" else "")
            )
    else:
        days = retention_ms / MS_PER_DAY
        if rule.min_days is not None and days < rule.min_days:
            problems.append(f"retention {days:g} days < {rule.min_days}")
        if rule.max_days is not None and days > rule.max_days:
            problems.append(f"retention {days:g} days > {rule.max_days}")
    if rule.min_days is not None and int(configs.get("retention.bytes", "-1")) >= 0:
        # A size limit deletes old records whatever their age: it would cut the minimum short.
        problems.append(
            f"retention.bytes={configs.get('retention.bytes')} can delete records before {rule.min_days} days"
        )
    return problems


def _retention_text(rule: RetentionRule) -> str:
    parts = []
    if rule.min_days is not None:
        parts.append(f">= {rule.min_days} days (no size limit)")
    if rule.max_days is not None:
        parts.append(f"<= {rule.max_days} days")
    parts.append(
        {
            "never": "never forever",
            "compacted_only": "forever only if compacted",
            "allowed": "forever allowed",
        }[rule.infinite]
    )
    parts.append(f"cleanup {'/'.join(rule.cleanup)}")
    return "; ".join(parts)


def retention(policy: CompliancePolicy, topics: Topics, classes: Mapping[str, str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.retention.per-classification"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    results = []
    for topic, classification in classes.items():
        observed_topic = topics.observed.get(topic)
        if observed_topic is None:
            continue  # a missing topic is the catalog check's finding
        rule = policy.retention[classification]
        configs = observed_topic.configs
        problems = _retention_problems(rule, configs)
        results.append(
            findings.result(
                check_id,
                not problems,
                target=topic,
                observed={
                    key: configs.get(key) for key in ("retention.ms", "retention.bytes", "cleanup.policy")
                },
                expected=f"{classification}: {_retention_text(rule)}",
                message=f"{topic} ({classification}): "
                + ("; ".join(problems) if problems else "retention as the class requires"),
            )
        )
    return results


def auto_create_off(policy: CompliancePolicy, settings: Sequence[BrokerSettings]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.topics.auto-create-off"
    results = []
    for broker in settings:
        if broker.error:
            results.append(findings.unverified(check_id, broker.error, host=broker.host))
            continue
        value = broker.values.get("auto.create.topics.enable")
        results.append(
            findings.result(
                check_id,
                value == "false",
                host=broker.host,
                target=f"node {broker.node_id}",
                observed=value,
                expected="false",
                message=f"automatic topic creation on node {broker.node_id}: {'off' if value == 'false' else 'on'}",
            )
        )
    return results


def undeclared_topics(policy: CompliancePolicy, topics: Topics, declared: Iterable[str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.topics.undeclared"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    known = set(declared)
    extra = [name for name in topics.names if name not in known and not policy.is_internal_topic(name)]
    return [
        findings.result(
            check_id,
            not extra,
            observed=extra or f"{len(topics.names)} topics, all declared or internal",
            expected="only catalog topics (and the cluster's internal ones)",
            message=f"topics outside the catalog: {listing(extra)}"
            if extra
            else "no topic outside the catalog",
        )
    ]


def _catalog_drift(spec: TopicSpec, observed: ObservedTopic) -> list[str]:
    plan = plan_topic(spec, observed)
    drift = [
        f"{key} {observed.configs.get(key)} (catalog {value})" for key, value in plan.set_configs.items()
    ]
    drift += [f"{key} {observed.configs.get(key)} (catalog {spec.configs[key]})" for key in plan.held_configs]
    if observed.partitions != spec.partitions:
        drift.append(f"partitions {observed.partitions} (catalog {spec.partitions})")
    if observed.replication_factor != spec.replication_factor:
        drift.append(f"replication factor {observed.replication_factor} (catalog {spec.replication_factor})")
    return drift


def topics_as_catalog(policy: CompliancePolicy, topics: Topics, specs: Sequence[TopicSpec]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.topics.as-catalog"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    results = []
    for spec in specs:
        expected = {
            "partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            **spec.configs,
        }
        observed_topic = topics.observed.get(spec.topic)
        if observed_topic is None:
            results.append(
                findings.result(
                    check_id,
                    False,
                    target=spec.topic,
                    observed="missing",
                    expected=expected,
                    message=f"{spec.topic}: missing",
                )
            )
            continue
        drift = _catalog_drift(spec, observed_topic)
        results.append(
            findings.result(
                check_id,
                not drift,
                target=spec.topic,
                observed={
                    "partitions": observed_topic.partitions,
                    "replication_factor": observed_topic.replication_factor,
                    **{key: observed_topic.configs.get(key) for key in spec.configs},
                },
                expected=expected,
                message=f"{spec.topic}: " + ("; ".join(drift) if drift else "as the catalog declares"),
            )
        )
    return results
