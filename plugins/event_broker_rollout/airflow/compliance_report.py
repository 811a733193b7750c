"""The compliance DAG's report task: publish the findings, write the report with its per-check table and
trend, and fail the run when a blocking check failed."""

from __future__ import annotations

from typing import Any

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.compliance.report import add_sections
from event_broker_rollout.compliance.stage import load, publish_results, summary
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.evidence.audit import audit_result
from event_broker_rollout.evidence.results import Result, report_dir, utcnow


def finish(
    context: Any, dag_id: str, title: str, environment: Environment, results: list[Result], runs: int
) -> str:
    """The report task: publish the findings, write the report with its per-check table and trend, and
    fail the run when a blocking check failed."""
    try:
        setting = load(environment)
    except ValueError as error:  # a ConfigError names the file and YAML paths
        # validate_policy failed for this reason (the report lists that task): nothing to publish or chart.
        return dag_support.publish_report(context, dag_id, title, results, {"not_verified": str(error)})
    run = {
        "dag_id": dag_id,
        "run_id": context["run_id"],
        "environment": environment.name,
        "checked_at": utcnow().isoformat(),
    }
    published = publish_results(setting, run, results)
    audit_result("compliance.report", published)
    results = [*results, published]
    report_json = report_dir(dag_id, context["run_id"]) / "report.json"
    try:
        return dag_support.publish_report(context, dag_id, title, results, summary(results, setting.policy))
    finally:
        if report_json.exists():  # written even when the run fails; absent only if writing itself failed
            add_sections(report_json, setting.policy, runs)
