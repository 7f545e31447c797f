"""One self-contained HTML page from a :class:`HistoryReport`: inline SVG and CSS, no script.

Lanes on one time axis (UTC): the active region, each region's state, the leader and its
epoch, then markers for failover decisions, refused requests and dead letters; below, the
decision table and the refusals and dead letters in full. Nothing is fetched from the
network, so the file can be mailed, attached to a ticket or opened offline.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from workers.ops.history_report import HistoryReport, Segment

WIDTH = 1100
LABEL_W = 150
PLOT_W = WIDTH - LABEL_W - 20
LANE_H = 26
GAP = 8
STATE_COLOURS = {"up": "#2e9e44", "suspect": "#f0a30a", "down": "#d62728", "unknown": "#9e9e9e"}
# Region colours for the active-region lane, in FAILOVER_REGIONS order.
PALETTE = ("#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
LEADER_COLOURS = ("#5b8def", "#52b788", "#e76f51", "#9b5de5", "#f4a261", "#2a9d8f")

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.meta { color: #555; margin-bottom: 16px; }
table { border-collapse: collapse; margin-top: 4px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.mono { font-family: ui-monospace, monospace; font-size: 12px; }
svg text { font: 12px system-ui, sans-serif; fill: #222; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
            vertical-align: -2px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _utc(at: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime(fmt)


class _Axis:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end

    def x(self, at: float) -> float:
        span = self.end - self.start
        return LABEL_W + (min(max(at, self.start), self.end) - self.start) / span * PLOT_W

    def ticks(self) -> list[float]:
        span = self.end - self.start
        steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
        step = next((s for s in steps if span / s <= 10), 86400 * 7)
        first = (int(self.start // step) + 1) * step
        return [float(t) for t in range(int(first), int(self.end) + 1, step)]


def _lane(
    axis: _Axis,
    y: float,
    label: str,
    segments: Iterable[Segment],
    *,
    colour: dict[str, str],
    kind: str,
) -> list[str]:
    out = [f'<g class="lane" data-lane="{_e(kind)}">']
    out.append(f'<text x="4" y="{y + LANE_H * 0.65:.1f}">{_e(label)}</text>')
    for seg in segments:
        x0, x1 = axis.x(seg.start), axis.x(seg.end)
        width = max(x1 - x0, 1.0)
        fill = colour.get(seg.value, "#bbb")
        out.append(
            f'<rect class="seg" data-value="{_e(seg.value)}" x="{x0:.1f}" y="{y:.1f}"'
            f' width="{width:.1f}" height="{LANE_H}" fill="{fill}">'
            f"<title>{_e(label)}: {_e(seg.value)} from {_utc(seg.start)} to"
            f" {_utc(seg.end)} UTC</title></rect>"
        )
        if width > 60:
            out.append(
                f'<text x="{x0 + 4:.1f}" y="{y + LANE_H * 0.65:.1f}" style="fill:#fff">'
                f"{_e(seg.value)}</text>"
            )
    out.append("</g>")
    return out


def _marks(axis: _Axis, top: float, bottom: float, r: HistoryReport) -> list[str]:
    out = ['<g class="marks">']
    for d in r.decisions:
        x = axis.x(d.at)
        f = d.decision
        out.append(
            f'<line class="decision" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}"'
            ' stroke="#000" stroke-width="2" stroke-dasharray="4 3">'
            f"<title>decision {_e(f.decision_id)}: {_e(f.from_region)} -&gt; {_e(f.to_region)}"
            f" ({_e(f.reason)}, epoch {f.epoch})</title></line>"
        )
        out.append(
            f'<text class="decision-label" x="{x + 3:.1f}" y="{top - 4:.1f}">'
            f"{_e(f.from_region)} → {_e(f.to_region)}</text>"
        )
    y_ref = bottom + 6
    for ref in r.refusals:
        x = axis.x(ref.at)
        out.append(
            f'<path class="refusal" d="M{x:.1f},{y_ref:.1f} l6,12 l-12,0 z" fill="#f0a30a">'
            f"<title>refused {_e(ref.kind)} by {_e(ref.actor)}: {_e(ref.reason)}</title></path>"
        )
    y_dl = bottom + 26
    for letter in r.dead_letters:
        x = axis.x(letter.at)
        out.append(
            f'<path class="dead-letter" d="M{x - 5:.1f},{y_dl:.1f} l10,10 m0,-10 l-10,10"'
            f' stroke="#d62728" stroke-width="2"><title>dead letter from {_e(letter.stream)}:'
            f" {_e(letter.reason)}</title></path>"
        )
    out.append(f'<text x="4" y="{y_ref + 11:.1f}">refused requests</text>')
    out.append(f'<text x="4" y="{y_dl + 9:.1f}">dead letters</text>')
    out.append("</g>")
    return out


def _svg(r: HistoryReport) -> str:
    axis = _Axis(r.start, r.end)
    region_colour = {region: PALETTE[i % len(PALETTE)] for i, region in enumerate(r.regions)}
    body: list[str] = []
    y = 36.0  # room above the lanes for the decision labels
    top = y
    body += _lane(axis, y, "active region", r.active, colour=region_colour, kind="active")
    y += LANE_H + GAP
    for region in r.regions:
        segments = r.states.get(region, [])
        body += _lane(axis, y, region, segments, colour=STATE_COLOURS, kind=f"region:{region}")
        y += LANE_H + GAP
    owners = list(dict.fromkeys(s.value for s in r.leaders))
    labels = {o: f"{o.partition('#')[0]} (epoch {r.epochs.get(o, '?')})" for o in owners}
    colours = {labels[o]: LEADER_COLOURS[i % len(LEADER_COLOURS)] for i, o in enumerate(owners)}
    leaders = [Segment(s.start, s.end, labels[s.value]) for s in r.leaders]
    body += _lane(axis, y, "leader", leaders, colour=colours, kind="leader")
    y += LANE_H + GAP
    body += _marks(axis, top - 18, y, r)
    y += 44
    axis_lines = [f'<g class="axis"><line x1="{LABEL_W}" y1="{y:.1f}" x2="{LABEL_W + PLOT_W}"'
                  f' y2="{y:.1f}" stroke="#444"/>']  # fmt: skip
    for t in axis.ticks():
        x = axis.x(t)
        axis_lines.append(
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + 5:.1f}" stroke="#444"/>'
            f'<text x="{x - 24:.1f}" y="{y + 18:.1f}">{_utc(t, "%H:%M:%S")}</text>'
        )
    axis_lines.append("</g>")
    height = y + 30
    return (
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}"'
        f' height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" role="img"'
        ' aria-label="timeline of the failover history">' + "".join(body + axis_lines) + "</svg>"
    )


def _table(table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    cells = [
        "<tr>" + "".join(f'<td class="mono">{_e(c)}</td>' for c in row) + "</tr>" for row in rows
    ]
    if not cells:
        cells = [f'<tr><td colspan="{len(headers)}">none</td></tr>']
    return f'<table id="{table_id}"><tr>{head}</tr>{"".join(cells)}</table>'


def render(r: HistoryReport) -> str:
    """The report as one HTML document."""
    legend = "".join(
        f'<span><i style="background:{c}"></i>{_e(s)}</span>' for s, c in STATE_COLOURS.items()
    )
    decisions = _table(
        "decisions",
        ["time (UTC)", "decision", "from", "to", "reason", "epoch", "leader", "evidence"],
        (
            [
                _utc(d.at),
                d.decision.decision_id,
                d.decision.from_region,
                d.decision.to_region,
                d.decision.reason,
                str(d.decision.epoch),
                d.decision.leader,
                f"{len(d.decision.evidence)} events",
            ]
            for d in r.decisions
        ),
    )
    refusals = _table(
        "refusals",
        ["time (UTC)", "request", "actor", "region", "target", "why refused"],
        ([_utc(x.at), x.kind, x.actor, x.region, x.target or "", x.reason] for x in r.refusals),
    )
    letters = _table(
        "dead-letters",
        ["time (UTC)", "entry", "from stream", "reason"],
        ([_utc(x.at), x.entry_id, x.stream, x.reason] for x in r.dead_letters),
    )
    span = f"{_utc(r.start)} to {_utc(r.end)} UTC ({r.end - r.start:.1f} s)"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Failover history: {_e(r.namespace)}</title><style>{CSS}</style></head><body>"
        f"<h1>Failover history of namespace {_e(r.namespace)}</h1>"
        f'<div class="meta">{span}; entries {_e(r.first_id)} to {_e(r.last_id)};'
        f" {r.applied} events applied, {len(r.decisions)} failover decisions,"
        f" {len(r.refusals)} refused requests, {len(r.dead_letters)} dead letters,"
        f" {len(r.leaders)} leader terms. Region states are the policy replayed over the"
        " recorded events with the deployed settings; decisions, leaders and dead letters are"
        " as recorded.</div>"
        f'<div class="legend">region state: {legend}</div>'
        f"{_svg(r)}"
        f"<h2>Decisions</h2>{decisions}<h2>Refused requests</h2>{refusals}"
        f"<h2>Dead letters</h2>{letters}</body></html>\n"
    )
