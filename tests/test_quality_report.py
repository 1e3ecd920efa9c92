"""The HTML quality report: charts per family and source, latest-run counts, escaping, empty input, writing."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

from cdp.quality.report import MetricRow, render_quality_report, write_quality_report

GENERATED = datetime(2026, 11, 22, 12, 30, tzinfo=timezone.utc)
OLD_RUN = "20261121T020000Z-silver-aaaaaa"
NEW_RUN = "20261122T020000Z-silver-bbbbbb"
VOID_TAGS = {"meta", "link", "br", "hr", "img", "input"}

# (source, rule, family, checked, warn_above, fail_above, failed in the old run, failed in the new run)
RULES = [
    ("crm_members", "crm_phone_completeness", "completeness", 10_000, 0.02, 0.05, 120, 100),
    ("crm_members", "crm_phone_validity", "validity", 10_000, 0.01, 0.03, 50, 150),
    ("crm_members", "crm_member_unique", "uniqueness", 10_000, None, 0.0, 0, 7),
    ("ecom_orders", "orders_amount_validity", "validity", 40_000, 0.01, 0.05, 10, 12),
    ("ecom_orders", "<script>", "completeness", 40_000, 0.05, None, 0, 0),
]


def _status(rate: float, warn: float | None, fail: float | None) -> str:
    if fail is not None and rate > fail:
        return "fail"
    if warn is not None and rate > warn:
        return "warn"
    return "ok"


def _rows() -> list[MetricRow]:
    """Two runs; the old one is all ok so that counting the wrong run shows up."""
    rows = []
    runs = ((OLD_RUN, datetime(2026, 11, 21, 2, 0)), (NEW_RUN, datetime(2026, 11, 22, 2, 0)))
    for run_index, (run_id, computed_at) in enumerate(runs):
        for source, rule, family, checked, warn, fail, *failed_by_run in RULES:
            failed = failed_by_run[run_index]
            rate = failed / checked
            status = "ok" if run_id == OLD_RUN else _status(rate, warn, fail)
            rows.append(MetricRow(run_id, computed_at, source, rule, family, checked, failed, rate, warn, fail, status))
    return rows


class _TagBalance(HTMLParser):
    """Checks that every opened element is closed in order, and collects the ids."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.seen: Counter[str] = Counter()
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        self._note(tag, attrs)
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._note(tag, attrs)

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")

    def _note(self, tag, attrs):
        self.seen[tag] += 1
        self.ids += [value for name, value in attrs if name == "id"]


def _assert_well_formed(html: str) -> _TagBalance:
    parser = _TagBalance()
    parser.feed(html)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    assert [parser.seen[t] for t in ("html", "head", "body", "main", "style")] == [1] * 5
    assert len(parser.ids) == len(set(parser.ids)), "element ids must be unique"
    return parser


def _family_section(html: str, family: str) -> str:
    match = re.search(rf'<section class="panel" id="family-{family}">(.*?)</section>', html, re.S)
    assert match, f"no section for {family}"
    return match.group(1)


def _trend_svg(html: str, source: str) -> str:
    match = re.search(rf'<svg class="trend" id="trend-{source}".*?</svg>', html, re.S)
    assert match, f"no trend chart for {source}"
    return match.group(0)


def test_one_bar_chart_per_family_present_and_none_for_absent():
    html = render_quality_report(_rows(), generated_at=GENERATED)

    for family, rules in (("completeness", 2), ("validity", 2), ("uniqueness", 1)):
        section = _family_section(html, family)
        assert section.count('<svg class="chart"') == 1
        assert section.count('<g class="bar">') == rules
    for absent in ("consistency", "freshness"):
        assert f'id="family-{absent}"' not in html
    assert html.count('<svg class="chart"') == 3


def test_bars_are_coloured_by_status_and_carry_thresholds_and_counts():
    validity = _family_section(render_quality_report(_rows(), generated_at=GENERATED), "validity")
    uniqueness = _family_section(render_quality_report(_rows(), generated_at=GENERATED), "uniqueness")

    warn_bar = re.search(r'<g class="bar"><title>crm_phone_validity.*?</g>', validity, re.S).group(0)
    assert 'fill="#e0a00b"' in warn_bar
    assert "150/10,000" in warn_bar and "1.50%" in warn_bar
    assert warn_bar.count('class="mark mark-warn"') == 1 and warn_bar.count('class="mark mark-fail"') == 1
    fail_bar = re.search(r'<g class="bar">.*?</g>', uniqueness, re.S).group(0)
    assert 'fill="#d64545"' in fail_bar
    assert "mark-warn" not in fail_bar and "mark-fail" in fail_bar


def test_header_counts_the_latest_run_only():
    html = render_quality_report(_rows(), generated_at=GENERATED)

    counts = {key: int(n) for key, n in re.findall(r'id="count-(\w+)">(\d+)<', html)}
    assert counts == {"total": 5, "ok": 3, "warn": 1, "fail": 1}
    assert f'id="latest-run">{NEW_RUN}<' in html
    assert "2026-11-22 12:30:00 UTC" in html


def test_trend_chart_per_source_with_one_line_per_rule():
    html = render_quality_report(_rows(), generated_at=GENERATED)

    crm, orders = _trend_svg(html, "crm_members"), _trend_svg(html, "ecom_orders")
    assert crm.count("<polyline") == 3 and orders.count("<polyline") == 2
    assert crm.count('<circle class="point') == 3 * 2 and orders.count('<circle class="point') == 2 * 2
    assert html.count('<svg class="trend"') == 2
    legend = re.search(r'id="trend-crm_members".*?<ul class="legend">(.*?)</ul>', html, re.S).group(1)
    assert legend.count("<li>") == 3


def test_a_single_run_shows_points_without_lines():
    latest_only = [row for row in _rows() if row.run_id == NEW_RUN]
    html = render_quality_report(latest_only, generated_at=GENERATED)

    assert "<polyline" not in html
    assert _trend_svg(html, "crm_members").count('<circle class="point') == 3
    assert _trend_svg(html, "ecom_orders").count('<circle class="point') == 2


def test_latest_table_has_every_rule_with_percent_and_thresholds():
    html = render_quality_report(_rows(), generated_at=GENERATED)

    table = re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert len(rows) == len(RULES)
    phone = next(row for row in rows if "crm_phone_validity" in row)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", phone)
    assert cells[:8] == ["crm_members", "crm_phone_validity", "validity", "10,000", "150", "1.50%", "1.00%", "3.00%"]
    assert 'badge-warn">warn<' in cells[8]
    unique = next(row for row in rows if "crm_member_unique" in row)
    assert "<td class=\"num\">—</td>" in unique


def test_names_are_escaped_everywhere():
    rows = _rows() + [
        MetricRow(NEW_RUN, datetime(2026, 11, 22, 2, 0), "a<b", 'x"&y', "validity", 1, 0, 0.0, None, None, "ok")
    ]
    html = render_quality_report(rows, generated_at=GENERATED)

    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "a<b" not in html and 'x"&y' not in html
    assert 'id="trend-a&lt;b"' in html and "x&quot;&amp;y" in html
    _assert_well_formed(html)


def test_output_is_well_formed_and_deterministic():
    rows = _rows()
    html = render_quality_report(rows, title="质量", generated_at=GENERATED)

    _assert_well_formed(html)
    assert '<meta charset="utf-8">' in html
    assert render_quality_report(list(reversed(rows)), title="质量", generated_at=GENERATED) == html


def test_a_rerun_row_replaces_the_earlier_one_of_the_same_run():
    rows = _rows()
    first = next(row for row in rows if row.run_id == NEW_RUN and row.rule == "crm_member_unique")
    rerun = MetricRow(**{**first.__dict__, "computed_at": first.computed_at + timedelta(minutes=5),
                         "failed": 0, "rate": 0.0, "status": "ok"})
    html = render_quality_report(rows + [rerun], generated_at=GENERATED)

    counts = {key: int(n) for key, n in re.findall(r'id="count-(\w+)">(\d+)<', html)}
    assert counts == {"total": 5, "ok": 4, "warn": 1, "fail": 0}


def test_empty_input_renders_a_page_saying_so():
    html = render_quality_report([], generated_at=GENERATED)

    assert "No metrics have been recorded yet" in html
    assert "<svg" not in html and "<table" not in html
    assert "Data quality report" in html
    _assert_well_formed(html)


def test_write_creates_folders_and_writes_utf8(tmp_path):
    target = tmp_path / "reports" / "2026" / "quality.html"

    written = write_quality_report(_rows(), target, title="数据质量报告", generated_at=GENERATED)

    assert written == target and target.is_file()
    text = target.read_bytes().decode("utf-8")
    assert "<title>数据质量报告</title>" in text and "<h1>数据质量报告</h1>" in text
    assert text == render_quality_report(_rows(), title="数据质量报告", generated_at=GENERATED)
