"""The analyst notebooks run on the suite's lakehouse, and each chart shows what the tables hold.

Every expected figure is computed here with a query of its own (or from the generator's manifest),
never from a notebook's output. Runs before tests/test_privacy.py, which erases from the lakehouse.
"""

from __future__ import annotations

import re
import runpy
import warnings
from collections import Counter, defaultdict
from itertools import product
from pathlib import Path

import matplotlib
import pytest
from matplotlib import image
from pyspark.sql import SparkSession

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FIGURES = {
    "oneid_overview": {"oneid_coverage", "records_per_oneid", "refused_identifiers", "quarantine",
                       "row_accounting", "quality_trend"},
    "customer_insight": {"rfm_heatmap", "lifecycle_funnel", "channel_overlap"},
}
STAGES_EN = ["Prospect", "New", "Active", "Dormant", "Churned"]


def run_notebook(name: str, out: Path, cjk_font: bool = True) -> tuple[dict, list[str]]:
    """Execute notebooks/<name>.py as `python notebooks/<name>.py` would, PNGs to `out`, with
    matplotlib's default fonts (and no Chinese one if `cjk_font` is False): the notebook's globals,
    and the warnings of glyphs its charts could not draw."""
    with (pytest.MonkeyPatch.context() as patch, matplotlib.rc_context(),
          warnings.catch_warnings(record=True) as caught):
        warnings.simplefilter("always")
        patch.setenv("CDP_NOTEBOOK_OUT", str(out))
        patch.syspath_prepend(str(NOTEBOOKS))
        if not cjk_font:
            import nbkit

            patch.setattr(nbkit, "font_for", lambda text: None)
        namespace = runpy.run_path(str(NOTEBOOKS / f"{name}.py"), run_name="__main__")
    return namespace, [str(w.message) for w in caught if "missing from font" in str(w.message)]


@pytest.fixture(scope="module")
def executed(spark, pipeline_run, tmp_path_factory):
    """Both notebooks, run once on the suite's lakehouse: (PNG folder, {name: (globals, glyph warnings)})."""
    out = tmp_path_factory.mktemp("notebook_figures")
    return out, {name: run_notebook(name, out) for name in FIGURES}


@pytest.fixture(scope="module")
def overview(executed):
    return executed[1]["oneid_overview"][0]


@pytest.fixture(scope="module")
def insight(executed):
    return executed[1]["customer_insight"][0]


@pytest.fixture(scope="module")
def quarantined(pipeline_run):
    """Rows per source the generator planted as defects, which silver must quarantine."""
    summary, manifest, _ = pipeline_run
    traps = manifest["traps"]
    planted = {"crm_members": traps["missing_member_id_rows"], "pos_orders": traps["bad_amount_orders"],
               "app_events": traps["malformed_json_lines"]}
    return {source: planted.get(source, 0) for source in summary.rows}


def test_notebooks_use_the_active_session_and_draw_every_glyph(spark, executed):
    for name, (namespace, glyph_warnings) in executed[1].items():
        assert namespace["spark"] is spark, name
        assert glyph_warnings == [], name
    assert SparkSession.getActiveSession() is spark  # the notebooks did not stop the suite's session
    assert spark.range(3).count() == 3


def test_every_chart_is_written_as_a_png(executed):
    out = executed[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f}.png" for figs in FIGURES.values() for f in figs)
    for path in out.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path.name
        height, width, _ = image.imread(path).shape
        assert height >= 200 and width >= 400, path.name


def test_rfm_heatmap_counts_each_pair_of_scores(spark, settings, insight):
    scores, spend = defaultdict(dict), {}
    for row in spark.sql("SELECT one_id, tag_code, value FROM gold.customer_tags "
                         "WHERE tag_code IN ('rfm_r', 'rfm_f')").collect():
        scores[row.one_id][row.tag_code] = int(row.value)
    for row in spark.table("gold.customer_profile").select("one_id", "total_spend").collect():
        spend[row.one_id] = float(row.total_spend)
    cells = defaultdict(list)
    for one_id, score in scores.items():
        if len(score) == 2:
            cells[(score["rfm_r"], score["rfm_f"])].append(spend[one_id])
    bins = range(1, settings.tags.tags["rfm_r"].score.bins + 1)

    heatmap = insight["rfm_heatmap"]
    got = {(r.r_score, r.f_score): r.persons for r in heatmap.itertuples()}
    assert got == {cell: len(cells[cell]) for cell in product(bins, bins)}
    both = spark.sql("""SELECT count(*) FROM (
        SELECT one_id FROM gold.customer_tags WHERE tag_code = 'rfm_r'
        INTERSECT SELECT one_id FROM gold.customer_tags WHERE tag_code = 'rfm_f')""").first()[0]
    assert heatmap.persons.sum() == both > 100
    for row in heatmap[heatmap.persons > 0].itertuples():
        cell = cells[(row.r_score, row.f_score)]
        assert row.avg_spend == pytest.approx(sum(cell) / len(cell)), (row.r_score, row.f_score)
    assert heatmap[heatmap.persons == 0].avg_spend.isna().all()


def test_lifecycle_funnel_counts_each_stage_in_the_declared_order(spark, settings, insight):
    declared = re.findall(r"(?:THEN|ELSE) '([^']+)'", settings.tags.tags["lifecycle_stage"].value)
    assert declared == ["潜客", "新客", "活跃", "沉睡", "流失"]
    counts = Counter(r.value for r in spark.sql(
        "SELECT value FROM gold.customer_tags WHERE tag_code = 'lifecycle_stage'").collect())
    funnel = insight["lifecycle_funnel"]
    assert list(funnel.stage) == declared
    assert list(funnel.persons) == [counts[stage] for stage in declared]
    assert funnel.persons.sum() == spark.table("gold.customer_profile").count()
    # Chinese beside English where a font draws it (no glyph went missing: see the first test)
    assert list(funnel.label) == [f"{zh} {en}" if insight["chinese"] else en for zh, en in zip(declared, STAGES_EN)]


def test_channel_overlap_counts_each_combination(spark, insight):
    expected = Counter(frozenset(r.channels or ()) for r in spark.table("gold.customer_profile").select("channels").collect())
    overlap = insight["channel_overlap"]
    names = sorted(set().union(*expected))
    assert insight["channel_names"] == names
    drawn = {frozenset(n for n in names if getattr(row, n)): row.persons for row in overlap.itertuples()}
    named = {frozenset(row.channels.split(" + ")): row.persons for row in overlap.itertuples()}
    assert drawn == named == dict(expected)
    assert list(overlap.persons) == sorted(overlap.persons, reverse=True)
    assert len(overlap) > 10


def test_oneid_coverage_and_records_per_oneid(spark, pipeline_run, quarantined, overview):
    summary = pipeline_run[0]
    persons = defaultdict(set)
    records_of = Counter()
    for row in spark.table("identity.oneid_map").select("source", "one_id").collect():
        persons[row.source].add(row.one_id)
        records_of[row.one_id] += 1
    coverage = overview["oneid_coverage"].set_index("source")
    # every landed row not quarantined is a record with a OneID (the generator sends no duplicates)
    assert coverage.records.to_dict() == {s: n - quarantined[s] for s, n in summary.rows.items()}
    assert coverage.persons.to_dict() == {s: len(ids) for s, ids in persons.items()}
    assert coverage.loc["crm_members", "records_per_person"] == pytest.approx(
        coverage.loc["crm_members", "records"] / len(persons["crm_members"]), abs=0.005)
    distribution = overview["records_per_oneid"]
    assert dict(zip(distribution.record_count, distribution.persons)) == dict(Counter(records_of.values()))
    assert distribution.persons.sum() == len(records_of) == overview["all_persons"]


def test_refused_identifiers_group_the_refused_values(spark, pipeline_run, overview):
    values, records = Counter(), Counter()
    for row in spark.table("identity.suspicious_identifiers").collect():
        values[(row.id_type, row.reason)] += 1
        records[(row.id_type, row.reason)] += row.records
    refused = overview["refused_identifiers"]
    assert {(r.id_type, r.reason): (r.refused_values, r.records) for r in refused.itertuples()} == {
        key: (values[key], records[key]) for key in values}
    if pipeline_run[1]["traps"]["placeholder_phone_orders"]:
        assert ("phone", "blocklisted_value") in values  # 13800138000


def test_quarantine_and_row_accounting_match_the_planted_defects(spark, pipeline_run, quarantined, overview):
    summary = pipeline_run[0]
    grouped = {(r.source, r.reason): r["count"]
               for r in spark.table("silver.quarantine").groupBy("source", "reason").count().collect()}
    quarantine = overview["quarantine"]
    assert {(r.source, r.reason): r.rows for r in quarantine.itertuples()} == grouped
    assert quarantine.groupby("source").rows.sum().to_dict() == {s: n for s, n in quarantined.items() if n}
    assert sum(quarantined.values()) >= 3
    accounting = overview["row_accounting"]
    assert {r.source: (r.landed, r.silver, r.quarantined, r.duplicates, r.balanced) for r in accounting.itertuples()} == {
        s: (n, n - quarantined[s], quarantined[s], 0, True) for s, n in summary.rows.items()}


def test_quality_trend_holds_every_rule_of_every_run(spark, settings, pipeline_run, quarantined, overview):
    summary, _, outcomes = pipeline_run
    trend = overview["quality_trend"]
    runs = {r.run_id for r in spark.sql("SELECT DISTINCT run_id FROM ops.quality_metrics").collect()}
    assert set(trend.run_id) == runs and outcomes["silver"].run_id in runs
    # other suites' silver runs share this lakehouse with their own rules: every recorded row is drawn
    recorded = spark.sql("SELECT run_id, rule FROM ops.quality_metrics").collect()
    assert sorted(zip(trend.run_id, trend.rule)) == sorted((r.run_id, r.rule) for r in recorded)
    silver_run = trend[trend.run_id == outcomes["silver"].run_id].set_index("rule")
    assert set(silver_run.index) == {rule.name for rule in settings.quality.rules}
    for rule, source in (("crm_rows_valid", "crm_members"), ("pos_rows_valid", "pos_orders"),
                         ("app_rows_valid", "app_events")):
        checked, failed, rate = silver_run.loc[rule, ["checked", "failed", "rate"]]
        assert (checked, failed) == (summary.rows[source], quarantined[source]), rule
        assert rate == pytest.approx(quarantined[source] / summary.rows[source]), rule


def test_charts_fall_back_to_english_labels_without_a_chinese_font(spark, pipeline_run, tmp_path):
    namespace, glyph_warnings = run_notebook("customer_insight", tmp_path, cjk_font=False)
    assert list(namespace["lifecycle_funnel"].label) == STAGES_EN
    assert glyph_warnings == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{f}.png" for f in FIGURES["customer_insight"])


def test_font_lookup_reads_font_files_so_no_font_name_can_break_it(tmp_path):
    """matplotlib 3.11 ships a font named "Last Resort High-Efficiency", which is no valid fontconfig
    pattern: the lookup must never parse a name, and a font file FreeType cannot read is passed over."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(NOTEBOOKS))
        import nbkit
    from matplotlib import font_manager

    hyphenated = "Last Resort High-Efficiency"
    with pytest.raises(ValueError):
        font_manager.FontProperties(family=hyphenated)  # what a lookup by name ran into
    latin = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    fonts = [font_manager.FontEntry(fname=str(broken), name="Broken-Font"),
             font_manager.FontEntry(fname=str(latin), name=hyphenated)]

    assert nbkit.font_for("Prospect New", fonts) == hyphenated
    assert nbkit.font_for("潜客", fonts) is None
    assert nbkit.font_for("潜客", fonts[:1]) is None
