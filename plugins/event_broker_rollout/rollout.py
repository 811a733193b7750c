"""The rollout as one request: which stages run, with what, and whether a human must approve first.

Plain Python over the trigger form's values and the environment file; the controller DAG only wires it.
A request is checked before any host is touched: an environment under change control without a
change ticket fails here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from event_broker_rollout.environment import Environment

STAGES = ("preflight", "infrastructure", "security", "schemas", "integration")
# Stages that change hosts or the cluster: under change control they wait for an approval.
CHANGING_STAGES = ("infrastructure", "security", "schemas", "integration")
# Stages whose DAG has a dry-run mode (plan only). The others would change the cluster even when asked
# for a plan, so a dry-run rollout skips them and says so.
DRY_RUN_STAGES = ("preflight", "infrastructure", "schemas")
# The stage whose dry run is the plan an approver reads (host files, installs, restarts).
PLAN_STAGE = "infrastructure"

# A change ticket as change boards number them: PROJECT-123, CHG0012345, RFC-2026-001 ...
TICKET_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*$")


class RolloutRequestError(ValueError):
    """The trigger form asks for something this rollout must not do; nothing was touched."""


def stage_dag_id(stage: str) -> str:
    return f"event_broker_{stage}"


@dataclass(frozen=True)
class RolloutRequest:
    environment: str
    stages: tuple[str, ...]
    dry_run: bool
    change_ticket: str | None
    approval_required: bool
    knowledge_acknowledged: tuple[str, ...] = ()
    stage_conf: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        data["knowledge_acknowledged"] = list(self.knowledge_acknowledged)
        data["stage_conf"] = {name: dict(conf) for name, conf in self.stage_conf.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutRequest:
        return cls(
            environment=data["environment"],
            stages=tuple(data["stages"]),
            dry_run=bool(data["dry_run"]),
            change_ticket=data.get("change_ticket"),
            approval_required=bool(data["approval_required"]),
            knowledge_acknowledged=tuple(data.get("knowledge_acknowledged", ())),
            stage_conf={name: dict(conf) for name, conf in (data.get("stage_conf") or {}).items()},
        )


def build_request(environment: Environment, params: Mapping[str, Any]) -> RolloutRequest:
    """Validate the trigger form against the environment; every problem is reported at once."""
    problems: list[str] = []
    wanted = list(params.get("stages") or STAGES)
    unknown = [name for name in wanted if name not in STAGES]
    if unknown:
        problems.append(f"stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
    stages = tuple(name for name in STAGES if name in wanted)  # always in the guide's order
    if not stages and not unknown:
        problems.append("stages: choose at least one stage")
    dry_run = bool(params.get("dry_run", False))
    ticket = str(params.get("change_ticket") or "").strip() or None
    if ticket is not None and not TICKET_PATTERN.match(ticket):
        problems.append(f"change_ticket: {ticket!r} is not a ticket number (letters, digits and dashes)")
    changes_something = not dry_run and any(name in CHANGING_STAGES for name in stages)
    approval_required = environment.requires_approval and changes_something
    if approval_required and ticket is None:
        problems.append(
            f"change_ticket: environment {environment.name!r} is under change control; "
            "a rollout that changes it needs the change ticket that authorises it"
        )
    if problems:
        raise RolloutRequestError("; ".join(problems))
    knowledge = tuple(params.get("knowledge_acknowledged") or ())
    return RolloutRequest(
        environment=environment.name,
        stages=stages,
        dry_run=dry_run,
        change_ticket=ticket,
        approval_required=approval_required,
        knowledge_acknowledged=knowledge,
        stage_conf={name: stage_conf(name, environment.name, dry_run, knowledge) for name in stages},
    )


def stage_conf(stage: str, environment: str, dry_run: bool, knowledge: Sequence[str]) -> dict[str, Any]:
    """The run conf a stage DAG gets: only the params that stage's trigger form has."""
    conf: dict[str, Any] = {"environment": environment}
    if stage in DRY_RUN_STAGES and stage != "preflight":
        conf["dry_run"] = dry_run
    if stage == "preflight":
        conf["knowledge_acknowledged"] = list(knowledge)
    return conf


@dataclass(frozen=True)
class StageDecision:
    run: bool
    reason: str = ""
    conf: Mapping[str, Any] = field(default_factory=dict)


def decide_stage(request: RolloutRequest, stage: str, approval: Mapping[str, Any] | None) -> StageDecision:
    """Whether a stage task triggers its DAG in this rollout, and with which conf."""
    if stage not in request.stages:
        return StageDecision(False, f"{stage} was not chosen for this rollout")
    if request.dry_run and stage not in DRY_RUN_STAGES:
        return StageDecision(False, f"{stage} has no dry-run mode: it would change the cluster")
    if stage in CHANGING_STAGES and request.approval_required and not approved(approval):
        return StageDecision(False, f"{stage} needs an approval and {approval_outcome(approval)}")
    return StageDecision(True, conf=request.stage_conf[stage])


def plan_decision(request: RolloutRequest) -> StageDecision:
    """The dry run an approver reads: only when an approval is needed and the plan stage will run."""
    if not request.approval_required:
        return StageDecision(False, "no approval needed: no plan to show")
    if PLAN_STAGE not in request.stages:
        return StageDecision(False, f"{PLAN_STAGE} was not chosen: no host plan to show")
    return StageDecision(True, conf={**request.stage_conf[PLAN_STAGE], "dry_run": True})


def approved(approval: Mapping[str, Any] | None) -> bool:
    return bool(approval) and list((approval or {}).get("chosen_options") or []) == ["Approve"]


def approval_outcome(approval: Mapping[str, Any] | None) -> str:
    if not approval:
        return "none was given"
    verdict = "approved" if approved(approval) else "rejected"
    return f"was {verdict} by {approval_user(approval)} at {approval.get('responded_at')}"


def approval_user(approval: Mapping[str, Any]) -> str:
    user = approval.get("responded_by_user") or {}
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "unknown")
    return str(user)


def approval_body(
    request: RolloutRequest,
    preflight_report: Mapping[str, Any] | None,
    plan_report: Mapping[str, Any] | None,
    limit: int = 60,
) -> str:
    """Markdown for the approver: what was asked, what preflight found, and the dry-run plan per host."""
    lines = [
        f"**Environment:** `{request.environment}`  ",
        f"**Change ticket:** `{request.change_ticket}`  ",
        f"**Stages:** {', '.join(request.stages)}",
        "",
    ]
    if preflight_report is not None:
        counts = preflight_report.get("counts", {})
        lines += [
            f"**Preflight:** {preflight_report.get('status')} "
            f"({counts.get('pass', 0)} passed, {counts.get('warn', 0)} warnings, {counts.get('fail', 0)} failed)",
            "",
        ]
    if plan_report is None:
        lines.append("No host plan: the infrastructure stage is not part of this rollout.")
        return "\n".join(lines)
    planned = [r for r in plan_report.get("results", []) if str(r.get("id", "")).startswith("plan.")]
    lines.append(f"**Plan ({len(planned)} change(s) on hosts):**")
    lines.append("")
    if not planned:
        lines.append("Every host is already as desired: nothing will be installed, written or restarted.")
    for result in planned[:limit]:
        lines.append(f"- `{result.get('host') or 'cluster'}` — {result.get('message')}")
    if len(planned) > limit:
        lines.append(f"- … and {len(planned) - limit} more (see the dry-run report)")
    later = [name for name in request.stages if name in CHANGING_STAGES and name != PLAN_STAGE]
    if later:
        lines += [
            "",
            f"After approval, these stages also run and change the cluster: {', '.join(later)}.",
        ]
    return "\n".join(lines)
