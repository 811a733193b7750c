"""The one renderer of every report page: stage runs, the rollout, compliance and the day-2 DAGs.

Input is a report's JSON (what ``StageReport.to_dict`` writes) plus, optionally, charts and sections a
caller drew. The page reads top-down the way a change board asks: the verdict and who/when/which change,
then what needs attention (failures before warnings, each with what to do), what changed (by host and
kind), the figures, and last the proof: every result grouped by phase (kind of check) and host, with
passes collapsed. ``observed``/``expected``/``details`` are shown as key/value lists, never as JSON.
Plain HTML, CSS and inline SVG: no script, no network, prints on A4/Letter.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from event_broker_rollout.evidence import report_charts
from event_broker_rollout.evidence.runs import is_child_run_id

STATUS_COLOURS = {
    "pass": "#1a7f37",
    "ok": "#1a7f37",
    "changed": "#0969da",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "skipped": "#6e7781",
}
# Worst first: the order of rows within a group and of the attention list.
STATUS_ORDER = ("fail", "warn", "changed", "pass", "ok", "skipped")
# Rows shown without opening anything; the rest (passes, no-ops, skips) are collapsed.
VISIBLE_STATUSES = ("fail", "warn", "changed")

# Readable names of the phases (the first part of a check id), in no particular order: a report lists
# phases in the order its results first mention them.
PHASE_NAMES = {
    "rollout": "Stages and approval",
    "task": "Airflow tasks",
    "host": "Host reachability",
    "hw": "Hardware",
    "os": "Operating system",
    "sw": "Software",
    "net": "Network",
    "sec": "Security prerequisites",
    "data": "Data prerequisites",
    "knowledge": "Knowledge prerequisites",
    "infra": "Host configuration and services",
    "gate": "Health gates",
    "security": "Security phases",
    "scram": "SCRAM users",
    "canary": "Migration canary",
    "acl": "ACLs",
    "quota": "Quotas",
    "tls": "TLS, probed from outside",
    "auth": "Authentication",
    "authz": "Authorization",
    "registry": "Schema registry",
    "catalog": "Event catalog",
    "schema": "Schemas",
    "schemas": "Schemas",
    "topic": "Topics",
    "integration": "Integration flow",
    "compliance.tls": "Compliance: transmission security (TLS)",
    "compliance.auth": "Compliance: authentication",
    "compliance.authz": "Compliance: authorization",
    "compliance.acl": "Compliance: ACLs",
    "compliance.host": "Compliance: secrets on the hosts",
    "compliance.durability": "Compliance: durability",
    "compliance.retention": "Compliance: retention",
    "compliance.topics": "Compliance: topics as the catalog declares",
    "compliance.registry": "Compliance: schema registry",
    "compliance.health": "Compliance: cluster health",
    "compliance.audit": "Compliance: audit controls",
    "compliance.results": "Compliance: results published",
}

# What to do about a failed or warned check, by the longest matching check-id prefix. A result's own
# ``details["remediation"]`` wins over this table.
REMEDIATION_HINTS = {
    "rollout.stage": "Open the stage's report (link in the row) and fix its first failure; then clear the "
    "failed stage task in the rollout run to resume from there.",
    "rollout.approval": "Ask a listed approver (not the person who triggered the rollout) to answer the "
    "approval task, or trigger a new rollout once the change is approved.",
    "rollout.request": "Correct the trigger form (environment, change ticket, stages) and trigger again.",
    "task.": "Open the task's log in Airflow (Grid view, the failed task) for the error; fix it and clear "
    "the task to re-run it.",
    "host.": "Check the host is up and reachable over SSH from the Airflow workers (address, key, user).",
    "hw.": "Give the host the sizing profile's CPU, memory or disk, or choose a smaller sizing profile.",
    "os.": "Apply the operating-system setting on the host (see expected) and re-run preflight.",
    "sw.": "Install the expected software version on the host (make setup provides the artefacts).",
    "net.": "Open the port or route between the hosts named in the row (firewall, listener address).",
    "sec.": "Provide the TLS material or credentials the environment file names (see expected).",
    "data.": "Free or provision the data directory on the host (path, free space, ownership).",
    "knowledge.": "Have the operating team confirm the knowledge prerequisite in the trigger form.",
    "infra.": "Inspect the service on that host (systemctl status, journal); re-run the stage: it only "
    "changes what differs.",
    "gate.brokers_registered": "A broker did not rejoin after its restart: check kafka on that host "
    "(systemctl status kafka, journal). The rolling restart stopped there; fix it and clear the gate.",
    "gate.partitions_healthy": "Partitions stayed under-replicated or offline: wait for replication or "
    "check the lagging broker's disk and network, then clear the gate.",
    "gate.registry_healthy": "The schema registry did not come up healthy: check schema-registry on its "
    "host (systemctl status, journal) and its connection to Kafka.",
    "gate.": "A health gate timed out: the observed state names what was missing.",
    "security.": "The security phase could not be recorded on the host: check SSH access and "
    "/etc/event-broker on it, then re-run the stage (phases already reached are kept).",
    "scram.": "Creating SCRAM users needs the INTERNAL mTLS listener: check the node certificate and "
    "that the listeners phase is committed.",
    "canary.zero_loss": "Acknowledged records were lost during the migration: stop further changes, read "
    "canary.log in the run's report folder and the brokers' logs around the phase boundaries.",
    "canary.no_duplicates": "Records were read twice: check the canary's producer idempotence and the "
    "consumer group's commits in canary.log.",
    "canary.": "The migration canary did not run through: see canary.log in the run's report folder.",
    "acl.": "Make the ACLs match the components file (re-run the security stage), then re-verify.",
    "quota.": "Set the quota the components file declares (re-run the security stage).",
    "tls.": "The listener accepts what the TLS policy forbids (or refuses what it needs): check the "
    "broker's listener and cipher settings and its certificate.",
    "auth.": "A client without valid credentials got in (or a valid one was refused): check the SASL "
    "settings and SCRAM users against the components file.",
    "authz.": "A principal can do more than its ACLs allow: check allow.everyone.if.no.acl.found is off "
    "and remove the extra ACLs.",
    "registry.": "Check the schema registry's settings against the environment file.",
    "catalog.": "Fix the event catalog entry named in the row (make validate shows the problem).",
    "schema.": "Make the schema change compatible (or register it under a new subject), then re-run.",
    "integration.": "Follow the failed flow step in the row: producer, topic, consumer or schema.",
    "compliance.tls": "A listener accepts plaintext or a protocol/cipher the policy forbids: re-run the "
    "security stage (it restores the secured listeners) and find who changed the broker's settings.",
    "compliance.auth": "Unauthenticated or unapproved access is possible: remove unknown SCRAM users and "
    "check the SASL listener settings (re-run the security stage).",
    "compliance.authz": "A principal can reach PHI it should not: remove the undeclared or wildcard ACLs "
    "and re-run the security stage.",
    "compliance.acl": "ACLs drifted from the components file: re-run the security stage.",
    "compliance.host": "Fix the file's mode or owner on the host (secrets 0600, owned by the service user) "
    "and remove passwords from plain configuration.",
    "compliance.durability": "Restore the topic's replication and min.insync.replicas (re-run the schemas stage).",
    "compliance.retention": "Set the topic's retention as the catalog declares (re-run the schemas stage).",
    "compliance.topics": "Make the topics match the catalog: re-run the schemas stage; delete undeclared "
    "topics after checking who created them.",
    "compliance.registry": "Set the subject's compatibility as the catalog declares (re-run the schemas stage).",
    "compliance.health": "Bring the missing broker or lagging controller back (see the host's service log).",
    "compliance.audit": "Check the audit topic exists and the rollout's audit publisher runs.",
}
GENERIC_HINT = "See the observed and expected values; fix the cause and re-run the stage."

# Summary keys drawn as charts rather than listed.
CHART_SUMMARY_KEYS = ("migration_intervals", "phase_boundaries")


def remediation(result: Mapping[str, Any]) -> str:
    """What to do about a failed or warned result: its own hint (recorded in the report or the result's
    details), else the table's longest prefix match."""
    for own in (result.get("remediation"), (result.get("details") or {}).get("remediation")):
        if isinstance(own, str) and own:
            return own
    check_id = str(result.get("id", ""))
    matches = [prefix for prefix in REMEDIATION_HINTS if check_id.startswith(prefix)]
    return REMEDIATION_HINTS[max(matches, key=len)] if matches else GENERIC_HINT


def phase_of(check_id: str) -> str:
    """The first part of a check id; compliance checks (``compliance.tls.x``) by their second part."""
    parts = re.split(r"[.\[]", check_id, maxsplit=2)
    return ".".join(parts[:2]) if parts[0] == "compliance" and len(parts) > 1 else parts[0]


def phase_title(phase: str) -> str:
    return PHASE_NAMES.get(phase, phase)


def kind_of(check_id: str) -> str:
    """A change's kind: its id without the target in brackets (``infra.file[/etc/x]`` -> ``infra.file``)."""
    return check_id.split("[", 1)[0]


def target_of(check_id: str) -> str:
    match = re.search(r"\[(.*)\]$", check_id)
    return match.group(1) if match else ""


def _label(key: Any) -> str:
    return html.escape(str(key).replace("_", " "))


def _parsed_json(text: str) -> Any:
    """A string that holds a JSON object or array (older reports stored some so): its value, else None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


_INLINE_KEYS = 8  # a flat mapping up to this size reads best on one line ("pass 10 · fail 2")


def _scalar(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float | bool) and "\n" not in str(value))


def value_html(value: Any) -> str:
    """A value as people read it: scalars as text, mappings as key/value lists, lists as lists."""
    if value is None:
        return '<span class="none">—</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return html.escape(f"{value:,}" if isinstance(value, int) and abs(value) >= 10000 else str(value))
    if isinstance(value, str):
        parsed = _parsed_json(value)
        if parsed is not None:
            return value_html(parsed)
        if "\n" in value:
            return f"<pre>{html.escape(value)}</pre>"
        return html.escape(value)
    if isinstance(value, Mapping):
        if not value:
            return '<span class="none">none</span>'
        if len(value) <= _INLINE_KEYS and all(_scalar(v) for v in value.values()):
            pairs = "".join(
                f'<span class="pair"><span class="k">{_label(k)}</span> {value_html(v)}</span>'
                for k, v in value.items()
            )
            return f'<span class="kvi">{pairs}</span>'
        items = "".join(f"<dt>{_label(k)}</dt><dd>{value_html(v)}</dd>" for k, v in value.items())
        return f'<dl class="kv">{items}</dl>'
    if isinstance(value, list | tuple | set | frozenset):
        items_list = list(value)
        if not items_list:
            return '<span class="none">none</span>'
        if all(_scalar(item) for item in items_list):
            return ", ".join(value_html(item) for item in items_list)
        return '<ol class="items">' + "".join(f"<li>{value_html(item)}</li>" for item in items_list) + "</ol>"
    return html.escape(str(value))


def _href(relative: str) -> str:
    """A relative link with each path segment quoted (run ids hold ':' and '+')."""
    return html.escape(
        "/".join(quote(part, safe="") if part != ".." else part for part in relative.split("/"))
    )


def _report_link(value: Any, text: str) -> str:
    if isinstance(value, str) and value.endswith(".html"):
        return f'<a class="report-link" href="{_href(value)}">{html.escape(text)}</a>'
    return ""


def details_html(details: Mapping[str, Any]) -> str:
    """A result's details: a link to the report it points at, the rest collapsed as key/value pairs."""
    link = _report_link(details.get("report"), "open the stage report")
    shown = {
        k: v for k, v in details.items() if k not in ("remediation", "report") and v not in (None, "", {}, [])
    }
    more = f'<details class="more"><summary>details</summary>{value_html(shown)}</details>' if shown else ""
    return (f"<br>{link}" if link else "") + more


def _status_html(result: Mapping[str, Any]) -> str:
    status = str(result.get("status"))
    advisory = (
        ' <span class="advisory">advisory</span>'
        if result.get("severity") == "advisory" and status in ("warn", "fail")
        else ""
    )
    return f'<span class="status s-{html.escape(status)}">{html.escape(status)}</span>{advisory}'


def _row(result: Mapping[str, Any], *, with_host: bool, with_hint: bool) -> str:
    status = str(result.get("status"))
    cells = [
        f'<td class="id"><code>{html.escape(str(result.get("id")))}</code></td>',
        f'<td class="st">{_status_html(result)}</td>',
    ]
    if with_host:
        cells.append(f"<td>{html.escape(result.get('host') or 'cluster-wide')}</td>")
    cells.append(
        f'<td class="what">{html.escape(str(result.get("message") or ""))}'
        f"{details_html(result.get('details') or {})}</td>"
    )
    cells.append(f"<td>{value_html(result.get('observed'))}</td>")
    cells.append(f"<td>{value_html(result.get('expected'))}</td>")
    if with_hint:
        cells.append(f'<td class="hint">{html.escape(remediation(result))}</td>')
    return f'<tr class="r-{html.escape(status)}" data-status="{html.escape(status)}">{"".join(cells)}</tr>'


def _table(rows: Sequence[Mapping[str, Any]], *, with_host: bool = False, with_hint: bool = False) -> str:
    head = ["check", "status", *(["host"] if with_host else []), "what", "observed", "expected"]
    if with_hint:
        head.append("what to do")
    cols = "".join(f'<col class="c-{name.replace(" ", "-")}">' for name in head)
    body = "".join(_row(r, with_host=with_host, with_hint=with_hint) for r in rows)
    return (
        f"<table><colgroup>{cols}</colgroup><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _by_status(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rank = {status: index for index, status in enumerate(STATUS_ORDER)}
    return sorted(results, key=lambda r: rank.get(str(r.get("status")), len(rank)))


def _tally(results: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[str(result.get("status"))] = counts.get(str(result.get("status")), 0) + 1
    return " ".join(
        f'<span class="badge b-{status}">{counts[status]} {status}</span>'
        for status in STATUS_ORDER
        if status in counts
    )


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _when(data: Mapping[str, Any]) -> str:
    start, end = _parse_time(data.get("started_at")), _parse_time(data.get("finished_at"))
    if start is None:
        return "—"
    text = start.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if end is not None:
        seconds = (end - start).total_seconds()
        text += (
            f" to {end.strftime('%H:%M:%S')} ({seconds / 60:.1f} min)"
            if seconds >= 120
            else f" ({seconds:.0f} s)"
        )
    return html.escape(text)


def _approval(data: Mapping[str, Any]) -> str:
    approval = next((r for r in data.get("results", []) if r.get("id") == "rollout.approval"), None)
    if approval is not None:
        return _status_html(approval) + " " + html.escape(str(approval.get("message") or ""))
    if is_child_run_id(str(data.get("run_id", ""))):
        return "given in the rollout this run is part of"
    return "not asked: the stage was run directly, not through a rollout"


def _rollout_link(data: Mapping[str, Any]) -> str:
    run_id = str(data.get("run_id", ""))
    prefix, _, controller_run = run_id.partition("__")
    if prefix not in ("rollout", "plan") or not controller_run:
        return ""
    href = _href(f"../../event_broker_rollout/{controller_run}/report.html")
    what = "the plan shown to the approver of" if prefix == "plan" else "part of"
    return f'<dt>rollout</dt><dd>{what} <a href="{href}">rollout {html.escape(controller_run)}</a></dd>'


def header_html(data: Mapping[str, Any], title: str) -> str:
    summary = data.get("summary") or {}
    verdict = str(data.get("status", "failed"))
    ticket = summary.get("change_ticket") or data.get("change_ticket")
    who = data.get("triggered_by") or summary.get("triggered_by")
    fields = [
        ("environment", html.escape(str(data.get("environment", "")))),
        ("when (UTC)", _when(data)),
        ("triggered by", html.escape(str(who)) if who else '<span class="none">not recorded</span>'),
        ("change ticket", html.escape(str(ticket)) if ticket else '<span class="none">none given</span>'),
        ("approval", _approval(data)),
        (
            "DAG run",
            f"<code>{html.escape(str(data.get('dag_id', '')))}</code> / "
            f"<code>{html.escape(str(data.get('run_id', '')))}</code>",
        ),
    ]
    meta = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in fields) + _rollout_link(data)
    return (
        f'<header class="verdict-{html.escape(verdict)}"><h1>{html.escape(title)} '
        f'<span class="verdict">{html.escape(verdict.upper())}</span></h1>'
        f'<dl class="meta">{meta}</dl><p class="tally">{_tally(data.get("results", []))}</p></header>'
    )


def attention_html(results: Sequence[Mapping[str, Any]]) -> str:
    flagged = _by_status([r for r in results if r.get("status") in ("fail", "warn")])
    if not flagged:
        return '<section id="attention"><h2>Needs attention</h2><p class="ok">No failures, no warnings.</p></section>'
    return (
        f'<section id="attention"><h2>Needs attention ({len(flagged)})</h2>'
        f"{_table(flagged, with_host=True, with_hint=True)}</section>"
    )


def changes_html(results: Sequence[Mapping[str, Any]]) -> str:
    changed = [r for r in results if r.get("status") == "changed"]
    stage_rows = [r for r in results if _stage_changes(r)]
    if stage_rows:
        return _stage_changes_html(stage_rows)
    if not changed:
        return '<section id="changed"><h2>What changed</h2><p>Nothing: every change was already in place or none was needed.</p></section>'
    by_host: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for result in changed:
        by_host.setdefault(result.get("host") or "cluster-wide", {}).setdefault(
            kind_of(str(result.get("id"))), []
        ).append(result)
    rows = []
    for host in sorted(by_host, key=lambda name: (name == "cluster-wide", name)):
        for kind, items in by_host[host].items():
            targets = [target_of(str(r.get("id"))) or str(r.get("message") or "") for r in items]
            rows.append(
                f"<tr><td>{html.escape(host)}</td><td><code>{html.escape(kind)}</code></td>"
                f'<td class="num">{len(items)}</td><td>{_targets_html(targets)}</td></tr>'
            )
    return (
        f'<section id="changed"><h2>What changed ({len(changed)})</h2><table class="changes">'
        '<colgroup><col class="c-host"><col class="c-kind"><col class="c-num"><col></colgroup>'
        "<thead><tr><th>host</th><th>kind</th><th>count</th><th>what</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


_LONG_TARGET_LIST = 8


def _targets_html(targets: Sequence[str]) -> str:
    """Each distinct target once (with how often when more than once); a long list collapsed."""
    seen: dict[str, int] = {}
    for target in targets:
        seen[target] = seen.get(target, 0) + 1
    items = [html.escape(t) + (f" <small>&times;{n}</small>" if n > 1 else "") for t, n in seen.items()]
    if len(items) <= _LONG_TARGET_LIST:
        return ", ".join(items)
    listing = "".join(f"<li>{item}</li>" for item in items)
    return (
        f'<details class="targets"><summary>{", ".join(items[:3])}, … ({len(items)} in all)</summary>'
        f"<ul>{listing}</ul></details>"
    )


def _stage_changes(result: Mapping[str, Any]) -> int:
    """The changes a rollout's stage row reports its stage made (0 for any other result)."""
    observed = result.get("observed")
    if not str(result.get("id", "")).startswith("rollout.stage[") or not isinstance(observed, Mapping):
        return 0
    changes = observed.get("changes")
    return changes if isinstance(changes, int) else 0


def _stage_changes_html(rows: Sequence[Mapping[str, Any]]) -> str:
    body = "".join(
        f'<tr><td>{html.escape(target_of(str(r.get("id"))))}</td><td class="num">{_stage_changes(r)}</td>'
        f"<td>{_report_link((r.get('details') or {}).get('report'), 'the stage report lists them by host and kind')}</td></tr>"
        for r in rows
    )
    total = sum(_stage_changes(r) for r in rows)
    return (
        f'<section id="changed"><h2>What changed ({total})</h2><table class="changes">'
        '<colgroup><col class="c-kind"><col class="c-num"><col></colgroup>'
        f"<thead><tr><th>stage</th><th>changes</th><th>where</th></tr></thead><tbody>{body}</tbody></table></section>"
    )


def summary_html(summary: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in summary.items() if k not in CHART_SUMMARY_KEYS}
    if not shown:
        return ""
    return f'<section id="summary"><h2>Summary</h2>{value_html(shown)}</section>'


def results_html(results: Sequence[Mapping[str, Any]]) -> str:
    """Every result, by phase then host; in each group failures first and passes collapsed."""
    phases: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for result in results:
        phases.setdefault(phase_of(str(result.get("id"))), {}).setdefault(
            result.get("host") or "cluster-wide", []
        ).append(result)
    blocks = []
    for phase, hosts in phases.items():
        everything = [r for rows in hosts.values() for r in rows]
        flagged = any(r.get("status") in ("fail", "warn") for r in everything)
        groups = []
        for host in sorted(hosts, key=lambda name: (name != "cluster-wide", name)):
            rows = _by_status(hosts[host])
            visible = [r for r in rows if r.get("status") in VISIBLE_STATUSES]
            quiet = [r for r in rows if r.get("status") not in VISIBLE_STATUSES]
            heading = (
                f"<h4>{html.escape(host)} {_tally(rows)}</h4>"
                if len(hosts) > 1 or host != "cluster-wide"
                else ""
            )
            parts = [heading]
            if visible:
                parts.append(_table(visible))
            if quiet:
                parts.append(
                    f'<details class="quiet"><summary>{len(quiet)} passed, unchanged or skipped</summary>'
                    f"{_table(quiet)}</details>"
                )
            groups.append(f'<div class="host">{"".join(parts)}</div>')
        blocks.append(
            f'<details class="phase"{" open" if flagged else ""}><summary><span class="phase-name">'
            f"{html.escape(phase_title(phase))}</span> {_tally(everything)}</summary>{''.join(groups)}</details>"
        )
    return f'<section id="results"><h2>All results, by phase and host</h2>{"".join(blocks)}</section>'


STYLE = """
:root { --border: #d0d7de; --muted: #656d76; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 1240px; padding: 0 1rem;
  color: #1f2328; }
h1 { margin: 0 0 .5rem; font-size: 1.6rem; } h2 { margin: 1.6rem 0 .5rem; font-size: 1.2rem;
  border-bottom: 1px solid var(--border); padding-bottom: .2rem; } h4 { margin: .8rem 0 .3rem; }
header { border-left: 8px solid var(--border); padding: .6rem 1rem; background: #f6f8fa; }
header.verdict-passed { border-color: #1a7f37; } header.verdict-failed { border-color: #cf222e; }
.verdict-passed .verdict { color: #1a7f37; } .verdict-failed .verdict { color: #cf222e; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd, dl.kv dd { margin: 0; }
dl.kv { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 0 .6rem; margin: 0; }
dl.kv dt { color: var(--muted); } dl.kv dl.kv { border-left: 2px solid var(--border); padding-left: .4rem; }
ol.items { margin: 0; padding-left: 1.2rem; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; margin: .3rem 0 .8rem; }
th, td { border: 1px solid var(--border); padding: .3rem .45rem; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }
.kvi .pair { margin-right: .6rem; display: inline-block; max-width: 100%; } .kvi .k { color: var(--muted); }
details.targets ul { margin: .2rem 0; padding-left: 1.2rem; columns: 2; }
th { background: #f6f8fa; font-weight: 600; }
col.c-check { width: 20%; } col.c-status { width: 7.5%; } col.c-host { width: 8%; }
col.c-kind { width: 16%; } col.c-num { width: 6%; } col.c-what-to-do { width: 20%; }
td.num { text-align: right; } td.what { white-space: pre-line; }
code { font-size: .92em; }
pre { white-space: pre-wrap; margin: .2rem 0; font-size: .85em; max-height: 24rem; overflow: auto; }
tr.r-fail { background: #ffebe9; } tr.r-warn { background: #fff8c5; } tr.r-changed { background: #ddf4ff; }
.status { font-weight: 600; } .s-pass, .s-ok { color: #1a7f37; } .s-fail { color: #cf222e; }
.s-warn { color: #9a6700; } .s-changed { color: #0969da; } .s-skipped { color: #6e7781; }
.advisory { font-size: .8em; color: var(--muted); }
.none { color: var(--muted); }
.badge { display: inline-block; color: #fff; border-radius: 1rem; padding: 0 .55rem; margin-right: .25rem;
  font-size: .85em; font-weight: 600; }
.b-pass, .b-ok { background: #1a7f37; } .b-fail { background: #cf222e; } .b-warn { background: #9a6700; }
.b-changed { background: #0969da; } .b-skipped { background: #6e7781; }
details.phase { border: 1px solid var(--border); border-radius: 6px; margin: .5rem 0; padding: .3rem .7rem; }
details.phase > summary { cursor: pointer; font-weight: 600; }
details.quiet > summary, details.more > summary { cursor: pointer; color: var(--muted); }
td.hint { font-size: .92em; }
figure { margin: 1rem 0; } figcaption { color: var(--muted); font-size: .9em; }
svg { max-width: 100%; height: auto; }
p.ok { color: #1a7f37; font-weight: 600; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { font-size: 9.5pt; margin: 0; max-width: none; padding: 0; }
  header { background: none; }
  tr, figure, dl.kv { break-inside: avoid; }
  h2, h4 { break-after: avoid; }
  thead { display: table-header-group; }
  /* The proof prints in full: closed groups open (browsers with ::details-content), diffs stay out. */
  details.phase::details-content, details.quiet::details-content, details.targets::details-content {
    content-visibility: visible; display: block; }
  details.more { display: none; }
  details > summary { list-style: none; }
  details.phase { border: none; padding: 0; }
  a { color: inherit; text-decoration: none; }
  pre { max-height: none; overflow: visible; }
}
"""


def render(
    data: Mapping[str, Any],
    *,
    title: str | None = None,
    figures: Sequence[str] = (),
    sections: Sequence[str] = (),
) -> str:
    """The page for a report's JSON. ``figures`` (inline SVG or HTML the caller built from escaped values)
    follow the summary; ``sections`` (a report kind's own tables) come before the per-phase results."""
    page_title = title or str(data.get("title") or data.get("dag_id") or "Report")
    results = list(data.get("results") or [])
    summary = data.get("summary") or {}
    charts = [*report_charts.stage_charts(summary, results), *figures]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(page_title)} — {html.escape(str(data.get("run_id", "")))}</title>
<style>{STYLE}</style></head><body>
{header_html(data, page_title)}
{attention_html(results)}
{changes_html(results)}
{summary_html(summary)}
{"".join(charts)}
{"".join(sections)}
{results_html(results)}
</body></html>
"""
