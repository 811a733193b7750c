"""Charts a report draws from its own data, as inline SVG (every text in them escaped).

- the migration canary: records produced and consumed per interval, with the security phases marked;
- the health gates: how long each gate waited, per host.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PRODUCED_COLOUR = "#0969da"
CONSUMED_COLOUR = "#1a7f37"
GATE_COLOURS = {"brokers": "#0969da", "partitions": "#8250df", "registry": "#bf8700", "quorum": "#1b7c83"}
_WAITED = re.compile(r"after (\d+(?:\.\d+)?)s")


def _moment(value: Any) -> datetime | None:
    """A time given as epoch seconds or ISO text."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class Interval:
    at: datetime  # the end of the interval
    produced: int
    consumed: int


@dataclass(frozen=True)
class Boundary:
    phase: str
    at: datetime


def intervals_from(raw: Any) -> list[Interval]:
    points = []
    for item in raw or []:
        if not isinstance(item, Mapping):
            continue
        moment = _moment(item.get("at"))
        if moment is None:
            continue
        points.append(Interval(moment, int(item.get("produced") or 0), int(item.get("consumed") or 0)))
    return sorted(points, key=lambda point: point.at)


def boundaries_from(raw: Any) -> list[Boundary]:
    marks = []
    for item in raw or []:
        moment = _moment(item.get("at")) if isinstance(item, Mapping) else None
        if moment is not None:
            marks.append(Boundary(str(item.get("phase")), moment))
    return sorted(marks, key=lambda mark: mark.at)


def canary_svg(intervals: Sequence[Interval], boundaries: Sequence[Boundary], width: int = 1000) -> str:
    """Records produced (acknowledged) and consumed per interval across the migration: one point per
    interval, a dashed line where each security phase was committed on every host."""
    height, left, right, top, bottom = 300, 56, 16, 36, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    start, end = intervals[0].at, intervals[-1].at
    for mark in boundaries:
        start, end = min(start, mark.at), max(end, mark.at)
    span = max((end - start).total_seconds(), 1.0)
    highest = max(1, *(max(p.produced, p.consumed) for p in intervals))

    def x(moment: datetime) -> float:
        return left + (moment - start).total_seconds() / span * plot_w

    def y(count: int) -> float:
        return top + plot_h - count / highest * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart canary" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="12" '
        'aria-label="canary records produced and consumed per interval across the migration">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#8c959f"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#8c959f"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{highest}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for tick in range(5):
        seconds = span * tick / 4
        tx = left + plot_w * tick / 4
        parts.append(
            f'<text x="{tx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{seconds:.0f} s</text>'
        )
    for index, mark in enumerate(boundaries):
        mx = x(mark.at)
        label_y = top - 8 - (index % 2) * 12  # alternate heights: close marks keep readable labels
        # near an edge the label runs inwards from the line instead of centring on it
        anchor = "start" if mx - left < 80 else "end" if width - right - mx < 80 else "middle"
        parts.append(
            f'<line class="phase-boundary" data-phase="{html.escape(mark.phase)}" x1="{mx:.1f}" y1="{top - 4}" '
            f'x2="{mx:.1f}" y2="{top + plot_h}" stroke="#cf222e" stroke-dasharray="4 3"/>'
            f'<text x="{mx:.1f}" y="{label_y}" text-anchor="{anchor}" fill="#cf222e">'
            f"{html.escape(mark.phase)} committed</text>"
        )
    for name, colour, attribute in (
        ("produced", PRODUCED_COLOUR, "produced"),
        ("consumed", CONSUMED_COLOUR, "consumed"),
    ):
        coords = " ".join(f"{x(p.at):.1f},{y(getattr(p, attribute)):.1f}" for p in intervals)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        for point in intervals:
            value = getattr(point, attribute)
            parts.append(
                f'<circle class="point {name}" cx="{x(point.at):.1f}" cy="{y(value):.1f}" r="2.5" fill="{colour}">'
                f"<title>{point.at.strftime('%H:%M:%S')}: {value} {name}</title></circle>"
            )
    legend_y = height - 8
    parts.append(
        f'<rect x="{left}" y="{legend_y - 9}" width="10" height="10" fill="{PRODUCED_COLOUR}"/>'
        f'<text x="{left + 14}" y="{legend_y}">produced (acknowledged)</text>'
        f'<rect x="{left + 180}" y="{legend_y - 9}" width="10" height="10" fill="{CONSUMED_COLOUR}"/>'
        f'<text x="{left + 194}" y="{legend_y}">consumed</text>'
        f'<line x1="{left + 290}" y1="{legend_y - 4}" x2="{left + 310}" y2="{legend_y - 4}" stroke="#cf222e" '
        f'stroke-dasharray="4 3"/><text x="{left + 314}" y="{legend_y}">security phase committed on every host</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def canary_figure(summary: Mapping[str, Any]) -> str:
    intervals = intervals_from(summary.get("migration_intervals"))
    if not intervals:
        return ""
    boundaries = boundaries_from(summary.get("phase_boundaries"))
    seconds = (intervals[-1].at - intervals[0].at).total_seconds()
    totals = summary.get("migration") or {}
    caption = (
        f"Migration canary: records produced and consumed in each of {len(intervals)} intervals over "
        f"{seconds:.0f} s"
        + (
            f"; in total {totals.get('produced')} produced, {totals.get('consumed')} consumed, "
            f"{totals.get('lost')} lost"
            if isinstance(totals, Mapping) and "lost" in totals
            else ""
        )
    )
    return (
        f'<figure id="canary-chart"><figcaption>{html.escape(caption)}</figcaption>'
        f"{canary_svg(intervals, boundaries)}</figure>"
    )


@dataclass(frozen=True)
class GateWait:
    host: str
    gate: str  # brokers, partitions, registry, quorum
    seconds: float
    status: str


def gate_waits(results: Sequence[Mapping[str, Any]]) -> list[GateWait]:
    """Each gate's wait, in the order they ran: ``details.waited_seconds`` (reports from before it was
    recorded carry it only in the message, "healthy after 22.4s")."""
    waits = []
    for result in results:
        check_id = str(result.get("id", ""))
        if not check_id.startswith("gate."):
            continue
        waited = (result.get("details") or {}).get("waited_seconds")
        if not isinstance(waited, int | float):
            match = _WAITED.search(str(result.get("message") or ""))
            if match is None:
                continue
            waited = float(match.group(1))
        gate = check_id.removeprefix("gate.").split("_", 1)[0]
        waits.append(
            GateWait(result.get("host") or "cluster-wide", gate, float(waited), str(result.get("status")))
        )
    return waits


def gate_waits_svg(waits: Sequence[GateWait], width: int = 1000) -> str:
    """One row per host and gate: its waits side by side in the order they ran (one segment each, the
    seconds written in it), the row's total at its end."""
    rows: dict[tuple[str, str], list[GateWait]] = {}
    for wait in waits:
        rows.setdefault((wait.host, wait.gate), []).append(wait)
    label_w, row_h, top, gap = 150, 24, 6, 3
    longest = max(1.0, *(sum(w.seconds for w in items) for items in rows.values()))
    height = top + len(rows) * row_h + 28
    scale = (width - label_w - 130 - gap * max(len(items) for items in rows.values())) / longest
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart gates" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11" '
        'aria-label="health gate waits per host">'
    ]
    for index, ((host, gate), items) in enumerate(rows.items()):
        y = top + index * row_h
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(host)} · {html.escape(gate)}</text>')
        x = float(label_w)
        for number, wait in enumerate(items, start=1):
            length = max(wait.seconds * scale, 2.0)
            colour = "#cf222e" if wait.status == "fail" else GATE_COLOURS.get(wait.gate, "#6e7781")
            parts.append(
                f'<rect class="gate-wait" x="{x:.1f}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" '
                f'fill="{colour}"><title>{html.escape(host)}: {html.escape(gate)} gate #{number}, '
                f"{wait.seconds:.1f} s ({html.escape(wait.status)})</title></rect>"
            )
            if length > 34:
                parts.append(
                    f'<text x="{x + length / 2:.1f}" y="{y + 15}" text-anchor="middle" fill="#fff">'
                    f"{wait.seconds:.1f}</text>"
                )
            x += length + gap
        total = sum(w.seconds for w in items)
        parts.append(
            f'<text x="{x + 2:.1f}" y="{y + 15}">{total:.1f} s ({len(items)} wait{"" if len(items) == 1 else "s"})</text>'
        )
    legend_x = label_w
    for gate, colour in GATE_COLOURS.items():
        if any(w.gate == gate for w in waits):
            parts.append(
                f'<rect x="{legend_x}" y="{height - 16}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{legend_x + 14}" y="{height - 7}">{gate}</text>'
            )
            legend_x += 90
    parts.append(
        f'<rect x="{legend_x}" y="{height - 16}" width="10" height="10" fill="#cf222e"/>'
        f'<text x="{legend_x + 14}" y="{height - 7}">timed out</text></svg>'
    )
    return "".join(parts)


def gates_figure(results: Sequence[Mapping[str, Any]]) -> str:
    waits = gate_waits(results)
    if not waits:
        return ""
    total = sum(w.seconds for w in waits)
    caption = (
        f"Health gates: {len(waits)} waits, {total:.0f} s in all; per host and gate, each wait (seconds) "
        "in the order it ran"
    )
    return (
        f'<figure id="gates-chart"><figcaption>{html.escape(caption)}</figcaption>'
        f"{gate_waits_svg(waits)}</figure>"
    )


def stage_charts(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The charts a report's own data allows (none when it has nothing to chart)."""
    return [chart for chart in (canary_figure(summary), gates_figure(results)) if chart]
