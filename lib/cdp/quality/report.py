"""Render `ops.quality_metrics` rows as one self-contained HTML data-quality report with inline SVG charts."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from cdp.quality.metrics import MetricRow

__all__ = ["MetricRow", "render_quality_report", "write_quality_report"]

FAMILY_ORDER = ("completeness", "validity", "uniqueness", "consistency", "freshness")
STATUSES = ("ok", "warn", "fail")
STATUS_COLORS = {"ok": "#2f9e5b", "warn": "#e0a00b", "fail": "#d64545"}
OTHER_STATUS_COLOR = "#8a94a6"
# Categorical line colours that stay apart from each other on white; they repeat past ten rules.
SERIES_COLORS = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#b07aa1", "#edc948", "#9c755f", "#ff9da7", "#5b6b7f",
)

CHART_WIDTH = 980
BAR_LABEL_WIDTH = 250
BAR_VALUE_WIDTH = 72
BAR_AXIS_HEIGHT = 26
BAR_ROW_HEIGHT = 40
BAR_HEIGHT = 14
TREND_HEIGHT = 250
TREND_LEFT, TREND_RIGHT, TREND_TOP, TREND_BOTTOM = 56, 44, 14, 44
MAX_RUN_LABELS = 8
RULE_LABEL_CHARS = 34
SOURCE_LABEL_CHARS = 20

Scale = Callable[[float], float]


def render_quality_report(
    rows: Sequence[MetricRow], *, title: str = "Data quality report", generated_at: datetime | None = None
) -> str:
    """The whole report as one HTML page; the same rows and `generated_at` always give the same text."""
    generated_at = generated_at or datetime.now(timezone.utc)
    rows = _dedupe(rows)
    runs = sorted({row.run_id for row in rows})
    latest = sorted((row for row in rows if row.run_id == runs[-1]), key=_row_key) if runs else []
    header = _header(title, generated_at, runs, latest)
    if not rows:
        return _page(title, header + _empty_notice())
    return _page(title, header + _family_sections(latest) + _trend_sections(rows, runs) + _latest_table(latest))


def write_quality_report(rows: Sequence[MetricRow], path: str | Path, **kwargs) -> Path:
    """Render the report to `path` (UTF-8), creating its folders; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_quality_report(rows, **kwargs), encoding="utf-8")
    return target


# --- data -----------------------------------------------------------------------------------------


def _dedupe(rows: Iterable[MetricRow]) -> list[MetricRow]:
    """One row per (run, source, rule), the last computed: re-running a job appends to the metrics table."""
    kept: dict[tuple[str, str, str], MetricRow] = {}
    for row in rows:
        key = (row.run_id, row.source, row.rule)
        if key not in kept or row.computed_at >= kept[key].computed_at:
            kept[key] = row
    return list(kept.values())


def _family_rank(family: str) -> tuple[int, str]:
    """Known families in pipeline order, any others after them alphabetically."""
    return (FAMILY_ORDER.index(family), family) if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)


def _row_key(row: MetricRow) -> tuple:
    return (row.source, _family_rank(row.family), row.rule)


def _group(rows: Iterable[MetricRow], key: Callable[[MetricRow], str]) -> dict[str, list[MetricRow]]:
    groups: dict[str, list[MetricRow]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _status_counts(rows: Iterable[MetricRow]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        if row.status in counts:
            counts[row.status] += 1
    return counts


# --- formatting -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(rate: float) -> str:
    # A handful of failures in millions of rows must not read as a clean 0.00%.
    if 0 < rate < 0.00005:
        return "<0.01%"
    return f"{rate * 100:.2f}%"


def _threshold(value: float | None) -> str:
    return "—" if value is None else _pct(value)


def _tick_pct(value: float) -> str:
    return f"{value * 100:.4f}".rstrip("0").rstrip(".") + "%"


def _fmt_time(moment: datetime) -> str:
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} {moment.tzname()}" if moment.tzinfo else text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nice_domain(values: Iterable[float | None]) -> float:
    """The smallest 1/2/5×10^k above the values (at most 100%), so that small rates still show as bars."""
    top = max((v for v in values if v is not None), default=0.0) * 1.1
    if top <= 0:
        return 0.01
    # Below 0.01% the tick labels would all round to "0%"; such rates still show through the minimum bar width.
    top = max(top, 0.0001)
    power = 10 ** math.floor(math.log10(top))
    return min(next(step * power for step in (1, 2, 5, 10) if step * power >= top), 1.0)


def _ticks(domain: float) -> list[float]:
    # Fifths of a 1 or 5 and quarters of a 2 keep every tick a round number.
    lead = round(domain / 10 ** math.floor(math.log10(domain)))
    divisions = 4 if lead == 2 else 5
    return [domain * i / divisions for i in range(divisions + 1)]


def _linear(domain: float, start: float, end: float) -> Scale:
    """Map a rate in [0, domain] onto [start, end], clamping outliers to the ends."""
    return lambda rate: start + (end - start) * min(max(rate, 0.0) / domain, 1.0)


# --- page -----------------------------------------------------------------------------------------


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n{body}"
        '<footer>Built from <code>ops.quality_metrics</code>. Failure rate = failed / checked; a rule warns '
        "or fails when its rate is above that threshold.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def _header(title: str, generated_at: datetime, runs: list[str], latest: list[MetricRow]) -> str:
    facts = [("Generated", _e(_fmt_time(generated_at)))]
    if runs:
        computed = _fmt_time(max(row.computed_at for row in latest))
        facts += [
            ("Latest run", f'<code id="latest-run">{_e(runs[-1])}</code> <span class="muted">{_e(computed)}</span>'),
            ("Runs recorded", str(len(runs))),
            ("Sources", str(len({row.source for row in latest}))),
        ]
    fact_list = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return (
        '<header class="report-header">\n<div>\n<p class="eyebrow">Data quality</p>\n'
        f'<h1>{_e(title)}</h1>\n<dl class="facts">{fact_list}</dl>\n</div>\n'
        f"{_status_cards(latest) if latest else ''}</header>\n"
    )


def _status_cards(latest: list[MetricRow]) -> str:
    counts = _status_counts(latest)
    labels = {"ok": "OK", "warn": "Warn", "fail": "Fail"}
    cards = [("total", "Rules", len(latest))] + [(s, labels[s], counts[s]) for s in STATUSES]
    body = "".join(
        f'<div class="card card-{key}"><span class="count" id="count-{key}">{count}</span>'
        f'<span class="card-label">{label}</span></div>'
        for key, label, count in cards
    )
    return f'<div class="cards" aria-label="Rules in the latest run by status">{body}</div>\n'


def _empty_notice() -> str:
    return (
        '<section class="panel empty" id="no-metrics">\n<h2>No metrics yet</h2>\n'
        "<p>No metrics have been recorded yet. This report fills in once a quality run has written "
        "to <code>ops.quality_metrics</code>.</p>\n</section>\n"
    )


# --- latest run, one bar chart per family ---------------------------------------------------------


def _family_sections(latest: list[MetricRow]) -> str:
    by_family = _group(latest, key=lambda row: row.family)
    panels = "".join(_family_panel(family, by_family[family]) for family in sorted(by_family, key=_family_rank))
    return (
        '<section class="block" id="latest-by-family">\n<h2>Latest run by rule family</h2>\n'
        '<p class="lead">Failure rate of each rule in the latest run.</p>\n'
        f"{_status_key()}{panels}</section>\n"
    )


def _status_key() -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{STATUS_COLORS[s]}"></span>{s}</li>' for s in STATUSES
    )
    marks = (
        '<li><span class="swatch mark-key mark-key-warn"></span>warn threshold</li>'
        '<li><span class="swatch mark-key mark-key-fail"></span>fail threshold</li>'
    )
    return f'<ul class="key">{items}{marks}</ul>\n'


def _family_panel(family: str, rows: list[MetricRow]) -> str:
    rows = sorted(rows, key=lambda row: (row.source, row.rule))
    counts = _status_counts(rows)
    summary = " · ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    return (
        f'<section class="panel" id="family-{_e(family)}">\n'
        f'<h3>{_e(family.capitalize())} <span class="muted">{_plural(len(rows), "rule")} · {summary}</span></h3>\n'
        f"{_bar_chart(family, rows)}</section>\n"
    )


def _bar_chart(family: str, rows: list[MetricRow]) -> str:
    domain = _nice_domain([row.rate for row in rows] + [t for row in rows for t in (row.warn_above, row.fail_above)])
    left, right = BAR_LABEL_WIDTH, CHART_WIDTH - BAR_VALUE_WIDTH
    height = BAR_AXIS_HEIGHT + len(rows) * BAR_ROW_HEIGHT + 4
    x = _linear(domain, left, right)
    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {height}" width="{CHART_WIDTH}" height="{height}" '
        f'role="img" aria-label="{_e(f"Failure rate per {family} rule in the latest run")}">\n',
        *_bar_axis(domain, x, BAR_AXIS_HEIGHT, height),
        *(_bar_row(row, BAR_AXIS_HEIGHT + i * BAR_ROW_HEIGHT, x, left, right) for i, row in enumerate(rows)),
        "</svg>\n",
    ]
    return "".join(parts)


def _bar_axis(domain: float, x: Scale, top: int, bottom: int) -> list[str]:
    parts = []
    for tick in _ticks(domain):
        px = x(tick)
        parts.append(f'<line class="grid" x1="{px:.1f}" y1="{top - 4}" x2="{px:.1f}" y2="{bottom}"/>')
        parts.append(f'<text class="tick" x="{px:.1f}" y="{top - 9}" text-anchor="middle">{_tick_pct(tick)}</text>\n')
    return parts


def _bar_row(row: MetricRow, top: int, x: Scale, left: int, right: int) -> str:
    bar_y = top + 13
    width = x(row.rate) - left
    if row.failed and width < 2:
        # A non-zero failure count stays visible even where its rate rounds to nothing at this scale.
        width = 2.0
    color = STATUS_COLORS.get(row.status, OTHER_STATUS_COLOR)
    tooltip = (
        f"{row.rule} ({row.source}): {row.failed:,} of {row.checked:,} failed, {_pct(row.rate)} — {row.status}; "
        f"warn above {_threshold(row.warn_above)}, fail above {_threshold(row.fail_above)}"
    )
    return "".join([
        f'<g class="bar"><title>{_e(tooltip)}</title>\n',
        f'<text class="label" x="0" y="{top + 18}">{_e(_truncate(row.rule, RULE_LABEL_CHARS))}</text>\n',
        f'<text class="sublabel" x="0" y="{top + 33}">{_e(_truncate(row.source, SOURCE_LABEL_CHARS))}'
        f" · {row.failed:,}/{row.checked:,}</text>\n",
        f'<rect class="track" x="{left}" y="{bar_y}" width="{right - left}" height="{BAR_HEIGHT}" rx="3"/>\n',
        f'<rect class="fill" x="{left}" y="{bar_y}" width="{width:.1f}" height="{BAR_HEIGHT}" rx="3" '
        f'fill="{color}"/>\n',
        *_threshold_marks(row, x, bar_y),
        f'<text class="value" x="{right + 10}" y="{bar_y + 11}">{_pct(row.rate)}</text>\n',
        "</g>\n",
    ])


def _threshold_marks(row: MetricRow, x: Scale, bar_y: int) -> list[str]:
    marks = []
    for kind, value in (("warn", row.warn_above), ("fail", row.fail_above)):
        if value is not None:
            px = x(value)
            marks.append(
                f'<line class="mark mark-{kind}" x1="{px:.1f}" y1="{bar_y - 5}" x2="{px:.1f}" '
                f'y2="{bar_y + BAR_HEIGHT + 5}"/>\n'
            )
    return marks


# --- trend over runs, one line chart per source ---------------------------------------------------


def _trend_sections(rows: list[MetricRow], runs: list[str]) -> str:
    by_run = _group(rows, key=lambda row: row.run_id)
    run_starts = {run: min(row.computed_at for row in run_rows) for run, run_rows in by_run.items()}
    by_source = _group(rows, key=lambda row: row.source)
    panels = "".join(_trend_panel(source, by_source[source], runs, run_starts) for source in sorted(by_source))
    return (
        '<section class="block" id="trends">\n<h2>Trend over runs</h2>\n'
        '<p class="lead">Failure rate of each rule by run, oldest on the left, one chart per source; '
        "a coloured ring marks a warn or fail result.</p>\n"
        f"{panels}</section>\n"
    )


def _trend_panel(source: str, rows: list[MetricRow], runs: list[str], run_starts: dict[str, datetime]) -> str:
    present = {row.run_id for row in rows}
    source_runs = [run for run in runs if run in present]
    by_rule = _group(sorted(rows, key=_row_key), key=lambda row: row.rule)
    order = {run: i for i, run in enumerate(source_runs)}
    series = [(rule, sorted(points, key=lambda row: order[row.run_id])) for rule, points in by_rule.items()]
    return (
        f'<section class="panel">\n<h3>{_e(source)} <span class="muted">{_plural(len(series), "rule")} · '
        f"{_plural(len(source_runs), 'run')}</span></h3>\n"
        f"{_trend_chart(source, series, source_runs, run_starts)}{_trend_legend(series)}</section>\n"
    )


def _trend_chart(
    source: str, series: list[tuple[str, list[MetricRow]]], source_runs: list[str], run_starts: dict[str, datetime]
) -> str:
    left, right = TREND_LEFT, CHART_WIDTH - TREND_RIGHT
    top, bottom = TREND_TOP, TREND_HEIGHT - TREND_BOTTOM
    domain = _nice_domain(row.rate for _, points in series for row in points)
    y = _linear(domain, bottom, top)
    # A single run sits in the middle rather than on the y axis.
    slots = {run: (i + 0.5 if len(source_runs) == 1 else i) for i, run in enumerate(source_runs)}
    x_slot = _linear(max(len(source_runs) - 1, 1), left, right)

    def x(run: str) -> float:
        return x_slot(slots[run])

    parts = [
        f'<svg class="trend" id="trend-{_e(source)}" viewBox="0 0 {CHART_WIDTH} {TREND_HEIGHT}" '
        f'width="{CHART_WIDTH}" height="{TREND_HEIGHT}" role="img" '
        f'aria-label="{_e(f"Failure rate by run for {source}")}">\n',
        *_trend_y_axis(domain, y, left, right),
        *_trend_x_axis(source_runs, run_starts, x, bottom),
        *(
            _trend_series(rule, points, x, y, SERIES_COLORS[i % len(SERIES_COLORS)])
            for i, (rule, points) in enumerate(series)
        ),
        "</svg>\n",
    ]
    return "".join(parts)


def _trend_y_axis(domain: float, y: Scale, left: int, right: int) -> list[str]:
    parts = []
    for tick in _ticks(domain):
        py = y(tick)
        css = "axis" if tick == 0 else "grid"
        parts.append(f'<line class="{css}" x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{_tick_pct(tick)}</text>\n')
    return parts


def _trend_x_axis(
    source_runs: list[str], run_starts: dict[str, datetime], x: Callable[[str], float], bottom: int
) -> list[str]:
    # Label every step-th run counting back from the newest, so the latest is always labelled and none overlap.
    step = math.ceil(len(source_runs) / MAX_RUN_LABELS)
    parts = []
    for i, run in enumerate(source_runs):
        if (len(source_runs) - 1 - i) % step:
            continue
        px = x(run)
        parts.append(
            f'<text class="tick" x="{px:.1f}" y="{bottom + 18}" text-anchor="middle"><title>{_e(run)}</title>'
            f'<tspan x="{px:.1f}">run {i + 1}</tspan>'
            f'<tspan x="{px:.1f}" dy="14">{_e(run_starts[run].strftime("%m-%d %H:%M"))}</tspan></text>\n'
        )
    return parts


def _trend_series(rule: str, points: list[MetricRow], x: Callable[[str], float], y: Scale, color: str) -> str:
    coords = [(x(row.run_id), y(row.rate)) for row in points]
    parts = ['<g class="series">\n']
    if len(coords) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in coords)
        parts.append(f'<polyline points="{path}" stroke="{color}"/>\n')
    for row, (px, py) in zip(points, coords):
        tooltip = f"{rule} · {row.run_id}: {_pct(row.rate)} ({row.failed:,}/{row.checked:,}) — {row.status}"
        parts.append(
            f'<circle class="point point-{_e(row.status)}" cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}">'
            f"<title>{_e(tooltip)}</title></circle>\n"
        )
    parts.append("</g>\n")
    return "".join(parts)


def _trend_legend(series: list[tuple[str, list[MetricRow]]]) -> str:
    items = []
    for i, (rule, points) in enumerate(series):
        latest = points[-1]
        items.append(
            f'<li><span class="swatch" style="background:{SERIES_COLORS[i % len(SERIES_COLORS)]}"></span>'
            f'{_e(rule)} <span class="muted">{_pct(latest.rate)}</span> {_badge(latest.status)}</li>'
        )
    return f'<ul class="legend">{"".join(items)}</ul>\n'


# --- latest run, full table -----------------------------------------------------------------------


def _badge(status: str) -> str:
    return f'<span class="badge badge-{_e(status)}">{_e(status)}</span>'


def _latest_table(latest: list[MetricRow]) -> str:
    columns = [("Source", ""), ("Rule", ""), ("Family", ""), ("Checked", "num"), ("Failed", "num"),
               ("Failure rate", "num"), ("Warn above", "num"), ("Fail above", "num"), ("Status", "")]
    head = "".join(f'<th class="{css}">{name}</th>' if css else f"<th>{name}</th>" for name, css in columns)
    body = "".join(
        "<tr>"
        f"<td>{_e(row.source)}</td><td>{_e(row.rule)}</td><td>{_e(row.family)}</td>"
        f'<td class="num">{row.checked:,}</td><td class="num">{row.failed:,}</td>'
        f'<td class="num">{_pct(row.rate)}</td><td class="num">{_threshold(row.warn_above)}</td>'
        f'<td class="num">{_threshold(row.fail_above)}</td><td>{_badge(row.status)}</td>'
        "</tr>\n"
        for row in latest
    )
    return (
        '<section class="block" id="latest-table">\n<h2>Latest run details</h2>\n'
        f'<p class="lead">All rules in run <code>{_e(latest[0].run_id)}</code></p>\n'
        f'<div class="table-wrap">\n<table>\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}</tbody>\n</table>\n</div>\n"
        "</section>\n"
    )


# The status colours are defined once above and handed to the stylesheet as variables.
CSS = ":root { " + " ".join(f"--{s}: {c};" for s, c in STATUS_COLORS.items()) + " }\n" + """
* { box-sizing: border-box; }
body {
  margin: 0; background: #f4f6f9; color: #1f2937;
  font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
        "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif;
}
main { max-width: 1080px; margin: 0 auto; padding: 32px 24px 48px; }
code {
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
  background: #eef1f5; padding: 1px 6px; border-radius: 4px;
}
.muted { color: #6b7280; font-weight: 400; font-size: 13px; }
.report-header {
  display: flex; flex-wrap: wrap; justify-content: space-between; align-items: flex-end; gap: 24px;
  padding-bottom: 24px; margin-bottom: 28px; border-bottom: 1px solid #e5e7eb;
}
.eyebrow {
  margin: 0; color: #6b7280; font-size: 12px; font-weight: 600; letter-spacing: .08em; text-transform: uppercase;
}
h1 { margin: 4px 0 12px; font-size: 28px; line-height: 1.2; }
h2 { margin: 0 0 4px; font-size: 20px; }
h3 { margin: 0 0 10px; font-size: 16px; }
.facts { display: grid; grid-template-columns: auto 1fr; gap: 4px 16px; margin: 0; font-size: 13px; }
.facts dt { color: #6b7280; }
.facts dd { margin: 0; }
.cards { display: flex; gap: 12px; }
.card {
  min-width: 92px; padding: 10px 16px 12px; text-align: center; background: #fff;
  border: 1px solid #e5e7eb; border-top: 4px solid #9ca3af; border-radius: 8px;
}
.card-ok { border-top-color: var(--ok); }
.card-warn { border-top-color: var(--warn); }
.card-fail { border-top-color: var(--fail); }
.count { display: block; font-size: 28px; font-weight: 700; line-height: 1.2; font-variant-numeric: tabular-nums; }
.card-label { color: #6b7280; font-size: 12px; letter-spacing: .06em; text-transform: uppercase; }
.block { margin-bottom: 36px; }
.lead { margin: 0 0 14px; color: #6b7280; }
.panel {
  margin-bottom: 16px; padding: 18px 20px 16px; background: #fff;
  border: 1px solid #e5e7eb; border-radius: 10px; box-shadow: 0 1px 2px rgba(16, 24, 40, .04);
}
.empty p { margin: 4px 0 0; color: #4b5563; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; font-size: 12px; fill: #1f2937; }
svg .label { font-size: 13px; font-weight: 600; }
svg .sublabel, svg .tick { font-size: 11px; fill: #6b7280; }
svg .value { font-variant-numeric: tabular-nums; }
svg .grid { stroke: #eceff3; }
svg .axis { stroke: #9ca3af; }
svg .track { fill: #f1f3f6; }
svg .mark { stroke-width: 2.5; }
svg .mark-warn { stroke: #a16207; stroke-dasharray: 3 2; }
svg .mark-fail { stroke: #7f1d1d; }
svg polyline { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
svg .point { stroke: #fff; stroke-width: 1.5; }
svg .point-warn { stroke: var(--warn); stroke-width: 2.5; }
svg .point-fail { stroke: var(--fail); stroke-width: 2.5; }
.key, .legend {
  display: flex; flex-wrap: wrap; gap: 6px 20px; margin: 0 0 14px; padding: 0; list-style: none; font-size: 12.5px;
}
.key { color: #6b7280; }
.legend { margin: 12px 0 0; padding-top: 12px; border-top: 1px solid #f0f2f5; }
.swatch {
  display: inline-block; width: 12px; height: 12px; margin-right: 6px; border-radius: 3px; vertical-align: -1px;
}
.mark-key { width: 0; height: 14px; border-radius: 0; vertical-align: -2px; }
.mark-key-warn { border-left: 2.5px dashed #a16207; }
.mark-key-fail { border-left: 2.5px solid #7f1d1d; }
.badge {
  display: inline-block; padding: 0 8px; border-radius: 999px; background: #eef1f5; color: #4b5563;
  font-size: 11px; font-weight: 600; letter-spacing: .04em; line-height: 18px; text-transform: uppercase;
}
.badge-ok { background: #e6f4ec; color: #1e6b3e; }
.badge-warn { background: #fdf3d8; color: #8a5a00; }
.badge-fail { background: #fbe4e4; color: #a12a2a; }
.table-wrap { overflow-x: auto; background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th, td { padding: 8px 12px; text-align: left; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
th {
  background: #f8fafc; color: #6b7280; font-size: 11.5px; font-weight: 600; letter-spacing: .04em;
  text-transform: uppercase;
}
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover { background: #f8fafc; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
footer { padding-top: 16px; border-top: 1px solid #e5e7eb; color: #6b7280; font-size: 12px; }
@media print {
  body { background: #fff; }
  .panel { box-shadow: none; break-inside: avoid; }
}
"""
