"""The rollout as one request: which stages run, with what, and whether a human must approve first.

Plain Python over the trigger form's values and the environment file; the controller DAG only wires it.
A request is checked before any host is touched: an environment under change control without a
change ticket fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from event_broker_rollout.config.environment import Environment

# The guide's sections in rollout order: the one list of stages (the CLI, the REST client's readiness
# check and the bench read it here).
STAGES = ("preflight", "infrastructure", "security", "schemas", "integration")
# Stages that change hosts or the cluster: under change control they wait for an approval.
CHANGING_STAGES = STAGES[1:]
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
    # The environment's approvers (none listed: anyone but whoever triggered the rollout).
    approver_users: tuple[str, ...] = ()
    approver_roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        data["knowledge_acknowledged"] = list(self.knowledge_acknowledged)
        data["approver_users"] = list(self.approver_users)
        data["approver_roles"] = list(self.approver_roles)
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
            approver_users=tuple(data.get("approver_users") or ()),
            approver_roles=tuple(data.get("approver_roles") or ()),
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
    approvers = environment.approvers
    return RolloutRequest(
        environment=environment.name,
        stages=stages,
        dry_run=dry_run,
        change_ticket=ticket,
        approval_required=approval_required,
        knowledge_acknowledged=knowledge,
        stage_conf={name: stage_conf(name, environment.name, dry_run, knowledge) for name in stages},
        approver_users=tuple(approvers.users) if approvers else (),
        approver_roles=tuple(approvers.roles) if approvers else (),
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


def user_roles_from_config(entries: Iterable[str]) -> dict[str, str]:
    """``user:role[:teams]`` entries (SimpleAuthManager's ``simple_auth_manager_users``) -> {user: role}."""
    roles: dict[str, str] = {}
    for entry in entries:
        user, _, rest = entry.strip().partition(":")
        if user and rest:
            roles[user] = rest.split(":", 1)[0]
    return roles


def _same_role(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()  # Airflow's roles are case-insensitive (admin, ADMIN)


def _responder_names(answer: Mapping[str, Any]) -> set[str]:
    user = answer.get("responded_by_user") or {}
    if not isinstance(user, Mapping):
        return {str(user)} if user else set()
    return {str(user[key]) for key in ("id", "name") if user.get(key)}


def _is_approver(request: RolloutRequest, names: set[str], user_roles: Mapping[str, str] | None) -> bool:
    if not request.approver_users and not request.approver_roles:
        return True  # none listed: anyone Airflow lets answer (separation of duties still holds)
    if names & set(request.approver_users):
        return True
    held = {user_roles[name] for name in names if user_roles and name in user_roles}
    return any(_same_role(role, wanted) for role in held for wanted in request.approver_roles)


def _approver_list(request: RolloutRequest) -> str:
    listed = [*request.approver_users, *(f"role {role}" for role in request.approver_roles)]
    return ", ".join(listed)


def answer_refusal(
    request: RolloutRequest,
    answer: Mapping[str, Any],
    triggered_by: str | None,
    user_roles: Mapping[str, str] | None,
) -> str | None:
    """Why an answer to the approval must not count (None: it counts).

    Separation of duties: an Approve counts only from an approver (when the environment lists them) who
    did not trigger the rollout. A Reject counts from an approver or from whoever triggered the rollout
    (withdrawing one's own change changes nothing). ``user_roles`` maps user names to their Airflow role;
    None when the auth manager cannot tell, and then only approvers listed by name count.
    """
    names = _responder_names(answer)
    who = approval_user(answer)
    if not names:
        return "the answer names no user"
    requester = triggered_by is not None and triggered_by in names
    approver = _is_approver(request, names, user_roles)
    if not approved(answer):
        if requester or approver:
            return None
        return f"{who} is neither an approver ({_approver_list(request)}) nor who triggered this rollout"
    if triggered_by is None:
        return "who triggered this rollout is unknown: no approval can be shown to come from someone else"
    if requester:
        return f"{who} triggered this rollout and may not approve it (separation of duties)"
    if not approver:
        roles_unknown = " (the auth manager does not tell roles)" if user_roles is None else ""
        return f"{who} is not an approver ({_approver_list(request)}){roles_unknown}"
    return None


def approval_assignees(
    request: RolloutRequest, triggered_by: str | None, user_roles: Mapping[str, str] | None
) -> list[str]:
    """The user names for the approval request's ``assigned_users``: Airflow refuses (HTTP 403) an answer from anyone else.

    The listed approvers, roles expanded to the users holding them, plus whoever triggered the rollout
    (who may reject it, and whose approval is refused by the task and so recorded, not just blocked).
    Empty (anyone with access to the DAG may answer; the task checks every answer) when no approvers are
    listed, or when ``user_roles`` is None: then the auth manager's user ids are not known to be user
    names, and role holders cannot be listed.
    """
    if user_roles is None or not (request.approver_users or request.approver_roles):
        return []
    users = set(request.approver_users)
    users |= {
        user
        for user, role in user_roles.items()
        if any(_same_role(role, wanted) for wanted in request.approver_roles)
    }
    if triggered_by:
        users.add(triggered_by)
    return sorted(users)


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
        f"**Stages:** {', '.join(request.stages)}  ",
        f"**May approve:** {_approver_list(request) or 'anyone'}, except whoever triggered the rollout "
        "(who may only reject it)",
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
