"""Every stage on a small generated dataset, in the suite's session: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import math
from datetime import date

import pytest
from pyspark.sql import functions as F

from cdp.tables import silver_table
from cdp_dev.demo import EXAMPLE_QUERY
from cdp.identity.evaluate import pairwise_scores, read_truth
from cdp.stages.bronze import build_bronze

AS_OF = date(2026, 11, 1)


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run


def test_every_landed_row_reaches_silver_or_quarantine(spark, run):
    summary, manifest, outcomes = run
    silver_run = outcomes["silver"].run_id
    accounting = {r["source"]: r for r in spark.table("ops.row_accounting").where(F.col("run_id") == silver_run).collect()}
    assert set(accounting) == set(summary.rows)
    for source, rows in summary.rows.items():
        a = accounting[source]
        assert a["landed"] == rows, source
        assert a["landed"] == a["silver"] + a["quarantined"] + a["duplicates"], source
        assert a["duplicates"] == 0, source  # the generator sends no record twice
    traps = manifest["traps"]
    quarantined = {s: accounting[s]["quarantined"] for s in accounting}
    assert quarantined == {
        "crm_members": traps["missing_member_id_rows"],
        "pos_orders": traps["bad_amount_orders"],
        "ecom_orders": 0,
        "wechat_events": 0,
        "app_events": traps["malformed_json_lines"],
        "consent_events": 0,
    }


def test_quarantine_reasons_name_the_rule(spark, run):
    reasons = {
        (r["source"], r["reason"]) for r in spark.table("silver.quarantine").select("source", "reason").distinct().collect()
    }
    assert reasons <= {
        ("crm_members", "missing_record_key"),
        ("pos_orders", "invalid_amount"),
        ("pos_orders", "missing_amount"),
        ("app_events", "malformed_record"),
    }
    raw = spark.table("silver.quarantine").where(F.col("raw_payload").isNull()).count()
    assert raw == 0


def test_second_bronze_run_adds_nothing(spark, settings, run):
    before = {s: spark.table(f"bronze.{s}").count() for s in run[0].rows}
    results = build_bronze(spark, settings, batch_id="rerun")
    assert {r.source: (r.rows, len(r.new_files), len(r.changed_files)) for r in results} == {
        s: (0, 0, 0) for s in run[0].rows
    }
    assert {s: spark.table(f"bronze.{s}").count() for s in run[0].rows} == before


def test_oneid_precision_and_recall(spark, run, data_dir):
    scores = pairwise_scores(spark.table("identity.oneid_map"), read_truth(spark, str(data_dir / "truth")))
    # Deterministic links only. Records with no usable identifier of their own person (a walk-in
    # order on the placeholder phone, a WeChat user who never shared a phone) bound recall; a
    # family's shared phone on records without a 身份证 costs a little precision.
    assert scores.precision >= 0.995
    assert scores.recall >= 0.98
    assert scores.largest_one_id <= scores.largest_person
    assert scores.truth_records_unmatched == sum(
        run[1]["traps"][k] for k in ("missing_member_id_rows", "bad_amount_orders", "malformed_json_lines")
    )


def test_planted_junk_identifiers_are_refused(spark, run):
    refused = {(r["id_type"], r["id_value"]) for r in spark.table("identity.suspicious_identifiers").collect()}
    traps = run[1]["traps"]
    expected = set()
    if traps["placeholder_phone_orders"]:
        expected.add(("phone", "+8613800138000"))
    if traps["zero_idfa_persons"]:
        expected.add(("idfa", "00000000-0000-0000-0000-000000000000"))
    if traps["junk_android_id_persons"]:
        expected.add(("android_id", "9774d56d682e549c"))
    if traps["test_email_members"]:
        expected.add(("email", "test@test.com"))
    assert expected and expected <= refused


def test_every_planted_identity_trap_is_caught(spark, run):
    from cdp_dev.bench.oneid import caught_traps

    caught = caught_traps(spark, run[1]["trap_values"])
    assert {k: v["caught"] for k, v in caught.items()} == {k: v["planted"] for k, v in caught.items()}
    guarded = ("store_walkin_phones_e164", "shared_tablet_android_ids", "family_shared_phones_e164", "mistyped_id_cards")
    assert all(caught[k]["planted"] >= 1 for k in guarded)


def test_households_stay_apart_and_name_variants_stay_one_person(spark, run, data_dir):
    """The planted households (one phone, no 身份证, different name and birth year) are two persons
    each, and their phones — with the family phone whose members' 身份证 differ — are the households
    (a customer registered twice with a mistyped 身份证 is split too, but no veto makes it a household);
    persons whose orders spell their name in pinyin, full-width or as a 小-name stay one person."""
    from cdp_dev.bench.oneid import households_and_variants

    manifest = run[1]
    figures = households_and_variants(spark, manifest, read_truth(spark, str(data_dir / "truth")))
    assert figures == {"household_pairs": 2, "household_pairs_kept_apart": 2, "households_listed": 3,
                       "name_variant_persons": 4, "name_variant_persons_one_one_id": 4,
                       "name_variant_persons_split_by_a_veto": 0}
    values = manifest["trap_values"]
    listed = {r["id_value"] for r in spark.table("identity.households").select("id_value").distinct().collect()}
    assert listed == set(values["household_phones_e164"]) | set(values["family_shared_phones_e164"])
    # the family phone is split by its two 身份证 first; the son's orders, which show none, by the veto
    vetoed = spark.table("identity.violations").where(F.col("reason").startswith("veto")).collect()
    assert {r["id_value"] for r in vetoed} == set(values["household_phones_e164"]) | set(values["family_shared_phones_e164"])
    assert all(set(r["conflict"]) <= {"name", "birth_date", "gender"} and r["conflict"] for r in vetoed)


def test_explain_shows_links_and_refusals(spark, run):
    from cdp.identity.explain import explain

    refused = spark.table("identity.violations").orderBy("source", "record_key", "id_type").first()
    found = explain(spark, record=f"{refused['source']}:{refused['record_key']}")
    assert found.one_id == refused["one_id"] and found.status == "active"
    entry = next(r for r in found.refused if (r["id_type"], r["id_value"]) == (refused["id_type"], refused["id_value"]))
    assert entry["reason"] == refused["reason"]
    assert f"{refused['source']}:{refused['record_key']}" in entry["records"]
    assert entry["also_on"] and refused["one_id"] not in entry["also_on"]  # the value links another person
    assert [c["kind"] for c in found.changes] == ["new"]
    assert found.record_count == spark.table("identity.oneid_map").where(F.col("one_id") == found.one_id).count()


def test_probabilistic_engine_costs_no_accuracy_on_the_generated_data(spark, settings, run, data_dir):
    from cdp.identity.graph import all_records, resolve_persons
    from cdp.tables import IDENTIFIERS

    truth = read_truth(spark, str(data_dir / "truth"))
    engine_on = pairwise_scores(spark.table("identity.oneid_map"), truth)
    config = settings.identity
    off = config.model_copy(update={"probabilistic": config.probabilistic.model_copy(update={"enabled": False})})
    clusters = resolve_persons(all_records(spark, settings), spark.table(IDENTIFIERS), off).clusters
    engine_off = pairwise_scores(clusters.select("source", "record_key", F.col("cluster").cast("string").alias("one_id")), truth)
    # Off, nothing vetoes a shared phone: the planted households and the family phone fuse two people
    # each. On, the model's veto keeps them apart, at the price of the records that carry nothing but
    # the shared phone (they stay with neither member): precision first, and a better F1.
    assert (engine_on.over_merged_one_ids, engine_off.over_merged_one_ids) == (0, 3), (engine_on, engine_off)
    assert engine_on.precision == 1.0 > engine_off.precision
    assert engine_on.f1 > engine_off.f1 and engine_on.recall > 0.98
    assert spark.table("identity.probabilistic_links").where(F.col("match_probability") < 0.99).count() == 0
    spark.catalog.clearCache()


def test_explain_shows_a_probabilistic_link_field_by_field(spark, settings, run):
    from cdp.identity.explain import explain

    # A link between two records that share no identifier: only the probabilistic engine joins them.
    row = spark.sql("""
        SELECT l.link_id, l.source, l.record_key FROM identity.probabilistic_links l
        JOIN identity.probabilistic_links r ON r.link_id = l.link_id AND l.side = 'l' AND r.side = 'r'
        LEFT ANTI JOIN (
            SELECT a.source AS ls, a.record_key AS lk, b.source AS rs, b.record_key AS rk
            FROM silver.identifiers a JOIN silver.identifiers b USING (id_type, id_value)
        ) shared ON shared.ls = l.source AND shared.lk = l.record_key AND shared.rs = r.source AND shared.rk = r.record_key
        LEFT ANTI JOIN identity.violations v ON v.id_type = 'probabilistic' AND v.id_value = l.link_id
        ORDER BY l.link_id LIMIT 1
    """).first()
    found = explain(spark, record=f"{row['source']}:{row['record_key']}")
    link = next(x for x in found.links if x["id_value"] == row["link_id"])
    assert link["id_type"] == "probabilistic"
    assert link["match_probability"] >= settings.identity.probabilistic.threshold
    fields = {c["field"]: c["level"] for c in link["comparisons"]}
    assert fields["name"] in ("exact", "same pinyin") and fields["city"] == "exact"
    assert link["match_weight"] == pytest.approx(
        sum(c["weight"] for c in link["comparisons"]) + math.log2(
            spark.table("identity.match_weights").first()["random_match"]
            / (1 - spark.table("identity.match_weights").first()["random_match"])), abs=0.01)


def test_gold_identity_map_hashes_sensitive_values(spark, run):
    rows = spark.sql("""
        SELECT id_type, count(*) AS n, count(id_value) AS clear, count(id_hash) AS hashed
        FROM gold.identity_map GROUP BY id_type
    """).collect()
    by_type = {r["id_type"]: (r["n"], r["clear"], r["hashed"]) for r in rows}
    for id_type in ("phone", "email", "id_card"):
        n, clear, hashed = by_type[id_type]
        assert (clear, hashed) == (0, n), id_type
    n, clear, _ = by_type["member_id"]
    assert clear == n
    one_ids = spark.sql("SELECT count(DISTINCT one_id) FROM gold.identity_map").first()[0]
    with_identifier = spark.sql(
        "SELECT count(DISTINCT m.one_id) FROM identity.oneid_map m JOIN silver.identifiers i USING (source, record_key)"
        " LEFT ANTI JOIN identity.suspicious_identifiers s ON s.id_type = i.id_type AND s.id_value = i.id_value"
        " LEFT ANTI JOIN identity.violations v"
        "   ON v.source = i.source AND v.record_key = i.record_key AND v.id_type = i.id_type AND v.id_value = i.id_value"
    ).first()[0]
    assert one_ids == with_identifier


def test_gold_is_queryable_with_sql_and_consistent(spark, run):
    profiles, one_ids = spark.sql(
        "SELECT (SELECT count(*) FROM gold.customer_profile), (SELECT count(DISTINCT one_id) FROM identity.oneid_map)"
    ).first()
    assert profiles == one_ids > 0
    duplicated = spark.sql("SELECT one_id FROM gold.customer_profile GROUP BY one_id HAVING count(*) > 1").count()
    assert duplicated == 0


def test_audience_members_all_consented_to_its_purpose(spark, run):
    without_grant = spark.sql("""
        SELECT a.one_id FROM gold.audience_members a
        LEFT JOIN gold.consent_state c ON c.one_id = a.one_id AND c.purpose = a.purpose
        WHERE c.status IS NULL OR c.status <> 'granted'
    """).count()
    assert without_grant == 0
    eligible_but_withdrawn = spark.sql("""
        SELECT p.one_id FROM gold.customer_profile p
        JOIN gold.customer_tags t ON t.one_id = p.one_id AND t.tag_code = 'high_value'
        JOIN gold.consent_state c ON c.one_id = p.one_id AND c.purpose = 'marketing_sms' AND c.status = 'withdrawn'
        JOIN gold.audience_members a ON a.one_id = p.one_id
    """).count()
    assert eligible_but_withdrawn == 0


def test_golden_values_come_from_the_records_their_provenance_names(spark, run):
    """Every surviving name and city is the value of the exact silver record the provenance names."""
    checked = spark.sql("""
        WITH chosen AS (
          SELECT p.one_id, p.name, p.city, p.gender,
                 p.provenance['name'] AS pn, p.provenance['city'] AS pc, p.provenance['gender'] AS pg
          FROM gold.customer_profile p)
        SELECT
          count_if(x.name IS NOT NULL) AS named,
          count_if(x.name = coalesce(cn.name, o.receiver_name)) AS name_matches,
          count_if(x.city IS NOT NULL) AS with_city,
          count_if(x.city = coalesce(cc.city, oc.city)) AS city_matches,
          count_if(x.pg.verified) AS verified_gender,
          count_if(x.pg.verified AND x.gender = cg.id_card_gender) AS verified_from_id_card,
          count_if(x.name IS NULL AND x.pn IS NOT NULL) AS provenance_without_value
        FROM chosen x
        LEFT JOIN silver.customers cn ON cn.source = x.pn.source AND cn.record_key = x.pn.record_key
        LEFT JOIN silver.orders o ON o.source = x.pn.source AND o.record_key = x.pn.record_key
        LEFT JOIN silver.customers cc ON cc.source = x.pc.source AND cc.record_key = x.pc.record_key
        LEFT JOIN silver.orders oc ON oc.source = x.pc.source AND oc.record_key = x.pc.record_key
        LEFT JOIN silver.customers cg ON cg.source = x.pg.source AND cg.record_key = x.pg.record_key
    """).first()
    assert checked["named"] > 0 and checked["name_matches"] == checked["named"]
    assert checked["with_city"] > 0 and checked["city_matches"] == checked["with_city"]
    assert checked["verified_gender"] > 0 and checked["verified_from_id_card"] == checked["verified_gender"]
    assert checked["provenance_without_value"] == 0


def test_tags_audiences_and_history_hold_only_current_one_ids(spark, settings, run):
    for table in ("gold.customer_tags", "gold.tag_history", "gold.audience_members", "gold.audience_history"):
        stray = spark.sql(f"SELECT one_id FROM {table} LEFT ANTI JOIN identity.oneid_map USING (one_id)").count()
        assert stray == 0, table
    catalog = {r["tag_code"]: r for r in spark.table("gold.tag_catalog").collect()}
    assert set(catalog) == set(settings.tags.tags)
    profiles = spark.table("gold.customer_profile").count()
    tagged = {r["tag_code"]: r["n"] for r in spark.sql(
        "SELECT tag_code, count(*) AS n FROM gold.customer_tags GROUP BY tag_code").collect()}
    for code, row in catalog.items():
        assert row["persons"] == tagged.get(code, 0), code
        assert row["coverage"] == round(tagged.get(code, 0) / profiles, 6), code
    assert catalog["lifecycle_stage"]["persons"] == profiles  # every person has a stage
    assert catalog["rfm_segment"]["depends_on"] == ["rfm_f", "rfm_m", "rfm_r"]
    assert catalog["high_value"]["used_by_audiences"] == ["high_value_sms"]
    runs = spark.sql("SELECT audience, members, matched FROM gold.audience_runs").collect()
    sizes = {r["audience"]: r["n"] for r in spark.sql(
        "SELECT audience, count(*) AS n FROM gold.audience_members GROUP BY audience").collect()}
    assert {r["audience"] for r in runs} == set(settings.audiences.audiences)
    for r in runs:
        assert r["members"] == sizes.get(r["audience"], 0) <= r["matched"], r["audience"]


def test_rfm_segment_query_covers_every_buyer_in_the_window(spark, run):
    import re
    from pathlib import Path

    cookbook = (Path(__file__).resolve().parents[1] / "docs" / "sql-cookbook.md").read_text(encoding="utf-8")
    query = re.search(r"## RFM segments.*?```sql\n(.*?)```", cookbook, flags=re.S).group(1)
    assert query.strip() == EXAMPLE_QUERY  # what `make demo` shows
    segments = {r["rfm_segment"]: r for r in spark.sql(query).collect()}
    assert set(segments) <= {"重要价值客户", "重要发展客户", "重要保持客户", "重要挽留客户",
                             "一般价值客户", "一般发展客户", "一般保持客户", "一般挽留客户"}
    assert len(segments) >= 6
    buyers_in_window = spark.sql("""
        SELECT count(DISTINCT m.one_id) FROM silver.orders o JOIN identity.oneid_map m USING (source, record_key)
        WHERE coalesce(o.status, '') <> 'refunded' AND datediff(DATE'2026-11-01', to_date(o.order_time)) BETWEEN 0 AND 364
    """).first()[0]
    assert sum(r["persons"] for r in segments.values()) == buyers_in_window
    assert segments["重要价值客户"]["avg_spend"] > segments["一般挽留客户"]["avg_spend"]


def test_job_runs_record_each_stage(spark, settings, run):
    rows = spark.table("ops.job_runs").where(F.col("status") == "succeeded").select("stage").collect()
    assert sorted({r["stage"] for r in rows}) == ["bronze", "gold", "identity", "silver"]
    identity = json.loads(
        spark.table("ops.job_runs").where(F.col("stage") == "identity").orderBy(F.col("ended_at").desc()).first()["metrics"]
    )
    assert identity["engine"] == f"graphframes ({settings.identity.components.algorithm})"
    assert identity["records"] == spark.table("identity.oneid_map").count()


def test_job_runs_count_rows_in_and_out_per_table(spark, settings, run):
    """rows_out comes from each Delta commit's own metrics; here it must agree with what every stage
    counted its own way (the generator's files, silver's accounting, identity's and gold's results)."""
    summary, _, outcomes = run
    bronze, silver, identity, gold = (outcomes[s] for s in ("bronze", "silver", "identity", "gold"))
    recorded = {r["run_id"]: r for r in spark.table("ops.job_runs").collect()}
    for outcome in outcomes.values():
        assert (recorded[outcome.run_id]["rows_in"], recorded[outcome.run_id]["rows_out"]) == (outcome.rows_in, outcome.rows_out)

    files = spark.table("ops.ingest_log").where(F.col("batch_id") == bronze.run_id).count()
    assert bronze.rows_in == {f"landing/{source}": rows for source, rows in summary.rows.items()}
    assert bronze.rows_out == {**{f"bronze.{source}": rows for source, rows in summary.rows.items()}, "ops.ingest_log": files}

    assert silver.rows_in == {f"bronze.{source}": rows for source, rows in summary.rows.items()}
    per_entity: dict[str, int] = {}
    per_source = {source: counts for source, counts in silver.metrics.items() if source != "seconds"}
    assert set(per_source) == set(summary.rows) and {c["mode"] for c in per_source.values()} == {"full"}
    assert set(silver.metrics["seconds"]) == {"plan", "quality", "publish", "accounting"}
    for source, counts in per_source.items():
        table = silver_table(settings.sources.sources[source].entity)
        per_entity[table] = per_entity.get(table, 0) + counts["silver"]
    assert {t: silver.rows_out[t] for t in per_entity} == per_entity
    assert silver.rows_out["silver.quarantine"] == sum(c["quarantined"] for c in per_source.values())
    assert silver.rows_out["ops.row_accounting"] == len(summary.rows)

    assert identity.rows_in["silver.identifiers"] == silver.rows_out["silver.identifiers"]
    assert identity.rows_out["identity.oneid_map"] == identity.metrics["records"]
    assert gold.rows_in["identity.oneid_map"] == identity.metrics["records"]
    assert (gold.rows_out["gold.customer_profile"], gold.rows_out["gold.customer_tags"]) == (
        gold.metrics["profiles"], gold.metrics["tag_rows"])


def run_metrics(spark, run_id: str) -> dict[str, tuple[int, int, str]]:
    rows = spark.table("ops.quality_metrics").where(F.col("run_id") == run_id).collect()
    return {r["rule"]: (r["checked"], r["failed"], r["status"]) for r in rows}


def test_quality_metrics_count_the_planted_defects(spark, settings, run):
    summary, manifest, _ = run
    traps = manifest["traps"]
    metrics = run_metrics(spark, run[2]["silver"].run_id)
    assert set(metrics) == {r.name for r in settings.quality.rules}
    assert metrics["crm_rows_valid"][:2] == (summary.rows["crm_members"], traps["missing_member_id_rows"])
    assert metrics["pos_rows_valid"][:2] == (summary.rows["pos_orders"], traps["bad_amount_orders"])
    assert metrics["app_rows_valid"][:2] == (summary.rows["app_events"], traps["malformed_json_lines"])
    assert metrics["crm_member_uniqueness"][1] == 0
    assert metrics["crm_id_card_consistency"][1] == 0  # the generator declares what the 身份证 says
    assert metrics["crm_phone_validity"][1] == 0       # every phone format it writes is a valid mobile
    assert all(metrics[name][0] == 1 for name in ("pos_freshness", "app_freshness", "wechat_freshness"))


def test_failing_quality_rule_blocks_publication(spark, settings, run, tmp_path):
    import shutil

    import yaml

    from cdp.conf import load_settings
    from cdp.pipeline import StageFailed, run_stages

    conf = tmp_path / "conf"
    shutil.copytree(settings.conf_dir, conf)
    quality = yaml.safe_load((conf / "quality.yaml").read_text(encoding="utf-8"))
    assert run_metrics(spark, run[2]["silver"].run_id)["ecom_phone_completeness"][1] > 0  # some orders lack a phone
    for rule in quality["rules"]:
        if rule["name"] == "ecom_phone_completeness":
            rule.update(warn_above=0.0, fail_above=0.0)  # any order without a receiver phone now fails the run
    (conf / "quality.yaml").write_text(yaml.safe_dump(quality, allow_unicode=True), encoding="utf-8")
    strict = load_settings("test", conf)

    # A merge run checks the rows it publishes: none changed, none fail. A rebuild republishes them all.
    assert run_stages(spark, strict, "silver", AS_OF)[0].metrics["ecom_orders"]["mode"] == "unchanged"
    version_before = spark.sql("DESCRIBE HISTORY silver.orders LIMIT 1").first()["version"]
    with pytest.raises(StageFailed, match=r"ecom_phone_completeness \d+/\d+") as failed:
        run_stages(spark, strict, "silver", AS_OF, full=True)
    assert spark.sql("DESCRIBE HISTORY silver.orders LIMIT 1").first()["version"] == version_before
    strict_run = failed.value.outcome.run_id
    # what a person reads at 3 a.m.: the cause, what was written, and the command that resumes
    message = str(failed.value).splitlines()
    assert message[0].startswith(f"stage 'silver' failed (run {strict_run}): cdp.stages.silver.QualityGateFailed: ")
    assert message[1] == ("  written before the failure: ops.quality_metrics (each write is one atomic commit; "
                          "the rerun replaces or skips them)")
    assert message[2].endswith("once the cause is fixed: cdp run --stage silver --full --as-of 2026-11-01")
    job = spark.table("ops.job_runs").where(F.col("run_id") == strict_run).first()
    assert (job["status"], job["rows_out"]) == ("failed", {"ops.quality_metrics": len(settings.quality.rules)})
    assert job["error"].startswith("cdp.stages.silver.QualityGateFailed: ") and "ecom_phone_completeness" in job["error"]
    recorded = spark.table("ops.quality_metrics").where(F.col("run_id") == strict_run)
    assert {r["rule"]: r["status"] for r in recorded.where(F.col("status") == "fail").collect()} == {
        "ecom_phone_completeness": "fail"
    }


def test_quality_report_from_recorded_metrics(spark, run, tmp_path):
    from cdp.quality.report import write_quality_report
    from cdp.quality.rules import read_metric_rows

    silver_run = run[2]["silver"].run_id
    rows = [r for r in read_metric_rows(spark, 50) if r.run_id == silver_run]
    assert len(rows) == len(run_metrics(spark, silver_run))
    html = write_quality_report(rows, tmp_path / "quality.html").read_text(encoding="utf-8")
    for family in ("completeness", "validity", "uniqueness", "consistency", "freshness"):
        assert f'id="family-{family}"' in html


def test_every_cookbook_query_runs_and_returns_rows(spark, run):
    import re
    from pathlib import Path

    cookbook = (Path(__file__).resolve().parents[1] / "docs" / "sql-cookbook.md").read_text(encoding="utf-8")
    queries = re.findall(r"```sql\n(.*?)```", cookbook, flags=re.S)
    assert len(queries) >= 10
    quarantined = spark.table("silver.quarantine").count()  # may be 0 for a small generated set
    for query in queries:
        rows = spark.sql(query).collect()
        if "FROM silver.quarantine" in query:
            assert sum(r["rows"] for r in rows) == quarantined
        else:
            assert rows, f"no rows from:\n{query}"
    accounting = spark.sql(queries[9]).collect()
    assert accounting and all(r["balanced"] for r in accounting)


def test_tags_and_audiences_follow_a_merge_and_forget_the_retired_id(spark, settings, run):
    """Record a merge the way the identity stage does (the records move to the survivor; the other id is
    retired with merged_into), run gold a day later: every tag, stay and membership is the survivor's."""
    from datetime import date

    from cdp.stages.gold import build_gold

    keep, gone = spark.sql("""
        SELECT (SELECT min(p.one_id) FROM gold.customer_profile p
                 WHERE p.order_count > 0 AND NOT array_contains(p.channels, 'wechat')),
               (SELECT min(a.one_id) FROM gold.audience_members a
                  JOIN gold.customer_tags t ON t.one_id = a.one_id AND t.tag_code = 'wechat_user')
    """).first()
    assert keep and gone

    def open_stays(one_id):
        return {(r["tag_code"], r["value"]): r["entered_on"] for r in spark.sql(
            f"SELECT * FROM gold.tag_history WHERE one_id = '{one_id}' AND exited_on IS NULL").collect()}

    only_gone = set(open_stays(gone)) - set(open_stays(keep))
    was_member = {r["audience"] for r in spark.sql(
        f"SELECT audience FROM gold.audience_members WHERE one_id = '{gone}'").collect()}
    spark.sql(f"UPDATE identity.oneid_map SET one_id = '{keep}' WHERE one_id = '{gone}'")
    spark.sql(f"UPDATE identity.registry SET status = 'retired', merged_into = '{keep}', retired_run = 'test' "
              f"WHERE one_id = '{gone}'")

    build_gold(spark, settings, date(2026, 11, 2), "gold-after-merge")

    for table in ("gold.customer_profile", "gold.customer_tags", "gold.tag_history", "gold.consent_state",
                  "gold.audience_members", "gold.audience_history", "gold.identity_map"):
        assert spark.table(table).where(F.col("one_id") == gone).count() == 0, table
    merged = open_stays(keep)
    carried = only_gone & set(merged)
    assert ("wechat_user", "true") in carried
    assert {merged[key] for key in carried} == {date(2026, 11, 1)}  # the stay began with the retired id
    stays = {r["audience"]: r["entered_on"] for r in spark.sql(
        f"SELECT audience, entered_on FROM gold.audience_members WHERE one_id = '{keep}'").collect()}
    assert {stays[a] for a in was_member & set(stays)} <= {date(2026, 11, 1)}


def test_a_bad_tag_stops_gold_before_any_table_is_written(spark, run, tmp_path):
    import shutil
    from datetime import date
    from pathlib import Path

    import yaml

    from cdp.conf import load_settings
    from cdp.stages.gold import build_gold
    from cdp.tags.engine import TagDefinitionError

    conf = tmp_path / "conf"
    shutil.copytree(Path(__file__).resolve().parents[1] / "conf", conf)
    tags = yaml.safe_load((conf / "tags.yaml").read_text(encoding="utf-8"))
    tags["tags"]["churn_risk"]["value"] = "repeat_buyer AND lifecycle = '沉睡'"  # lifecycle is no tag
    (conf / "tags.yaml").write_text(yaml.safe_dump(tags, allow_unicode=True), encoding="utf-8")
    versions = {t: spark.sql(f"DESCRIBE HISTORY {t} LIMIT 1").first()["version"]
                for t in ("gold.consent_state", "gold.customer_profile", "gold.customer_tags", "gold.audience_runs")}
    with pytest.raises(TagDefinitionError, match=r"tags.yaml: tag 'churn_risk' \(derived\): .*lifecycle"):
        build_gold(spark, load_settings("test", conf), date(2026, 11, 3), "gold-bad-tag")
    assert versions == {t: spark.sql(f"DESCRIBE HISTORY {t} LIMIT 1").first()["version"] for t in versions}


def test_bench_reference_partitions_the_identity_graph_like_networkx(spark, settings, run):
    """make bench solves the identity stage's edge list with scipy; on the suite's graph that gives
    exactly networkx's components (the engine itself is checked against networkx in test_components)."""
    import networkx as nx

    from cdp_dev.bench.pipeline import identity_edges, scipy_components

    pairs = identity_edges(spark, settings).toPandas()
    vertex_count, components, labels = scipy_components(pairs["src"], pairs["dst"])
    graph = nx.Graph()
    graph.add_edges_from(zip(pairs["src"], pairs["dst"]))
    expected = {frozenset(c) for c in nx.connected_components(graph)}
    assert (vertex_count, components) == (graph.number_of_nodes(), len(expected))
    assert {frozenset(group.index) for _, group in labels.groupby(labels)} == expected


def test_steward_split_and_merge_shape_the_next_run_and_a_rebuild(spark, settings, run):
    """A steward splits a member from an order the identifiers put with her, merges two members the
    data keeps apart (a must-link is not held to the per-person limits: two 身份证 would not stop
    it), and asks to merge the split pair again: the next identity run keeps the split (a must-link
    never overrides a must-not-link) and makes the merge; so does a rebuild from scratch (every
    identity table but the rules and the model set aside). Put back, the tables give the persons and
    ids of before. Through both runs the probabilistic model trained on first use scores unchanged."""
    from cdp.operations.steward import add_rule
    from cdp.pipeline import run_stages
    from cdp.tables import MODEL_FREQUENCIES, MODELS, STEWARD_RULES

    def one_id(record):
        source, key = record.split(":")
        return spark.table("identity.oneid_map").where((F.col("source") == source) & (F.col("record_key") == key)) \
            .first()["one_id"]

    pair = spark.sql("""
        SELECT min(c.record_key) AS member, min(o.record_key) AS order_key
        FROM identity.oneid_map c JOIN identity.oneid_map o ON c.one_id = o.one_id
        WHERE c.source = 'crm_members' AND o.source = 'ecom_orders' GROUP BY c.one_id ORDER BY c.one_id LIMIT 1
    """).first()
    member, order = f"crm_members:{pair['member']}", f"ecom_orders:{pair['order_key']}"
    first, second = [f"crm_members:{r['record_key']}" for r in spark.sql(
        f"SELECT min(record_key) AS record_key FROM identity.oneid_map WHERE source = 'crm_members' "
        f"AND one_id <> '{one_id(member)}' GROUP BY one_id ORDER BY record_key LIMIT 2").collect()]
    before = {r: one_id(r) for r in (member, order, first, second)}
    assert before[member] == before[order] and before[first] != before[second]

    kept = (STEWARD_RULES, MODELS, MODEL_FREQUENCIES)  # the rules and the model outlive every rebuild
    versions = {f"identity.{t.name}": spark.sql(f"DESCRIBE HISTORY identity.{t.name} LIMIT 1").first()["version"]
                for t in spark.catalog.listTables("identity") if f"identity.{t.name}" not in kept}
    split = add_rule(spark, "must_not_link", member, order, "a mother's membership, her son's order", actor="steward")
    merged = add_rule(spark, "must_link", first, second, "one customer, two memberships", actor="steward")
    again = add_rule(spark, "must_link", order, member, "merge them back", actor="steward")
    assert add_rule(spark, "must_not_link", order, member, "twice", actor="steward").created is False
    assert spark.table(STEWARD_RULES).count() == 3

    def check():
        after = {r: one_id(r) for r in (member, order, first, second)}
        assert after[member] != after[order] and after[first] == after[second]
        refused = spark.table("identity.violations").where(F.col("id_type") == "steward").collect()
        assert {(r["id_value"], r["reason"]) for r in refused} == {(again.rule_id, f"steward: must not link (rule {split.rule_id})")}

    run_stages(spark, settings, "identity", AS_OF)
    check()
    audited = spark.sql("SELECT details FROM ops.audit_log WHERE action = 'steward_rule' AND status = 'ok'").collect()
    assert sorted(json.loads(r["details"])["rule_id"] for r in audited) == sorted([split.rule_id, merged.rule_id, again.rule_id])

    # A rebuild from scratch: the run's tables back as they were before the rules, then set aside.
    for table, version in versions.items():
        spark.sql(f"RESTORE TABLE {table} TO VERSION AS OF {version}")
        spark.sql(f"ALTER TABLE {table} RENAME TO {table}_kept")
    run_stages(spark, settings, "identity", AS_OF)
    check()

    for table in spark.catalog.listTables("identity"):
        if f"identity.{table.name}" not in (*kept, *[f"{t}_kept" for t in versions]):
            spark.sql(f"DROP TABLE identity.{table.name}")
    for table in versions:
        spark.sql(f"ALTER TABLE {table}_kept RENAME TO {table}")
    spark.sql(f"DELETE FROM {STEWARD_RULES}")
    assert {r: one_id(r) for r in (member, order, first, second)} == before
    versions = spark.table(MODELS).groupBy("model_version", "trigger", "run_id").count().collect()
    assert [(r["model_version"], r["trigger"], "-identity-" in r["run_id"]) for r in versions] == [(1, "first use", True)]
    assert [r["model_version"] for r in spark.table("identity.match_weights").select("model_version").distinct().collect()] == [1]


def test_identity_train_keeps_a_new_version_as_the_newest_model(spark, settings, run):
    """cdp identity train appends version 2 (the reason kept as its trigger); the newest version fits the
    shipped comparisons, and a changed comparison asks for a new model instead of scoring with it."""
    from cdp.identity import models
    from cdp.stages.identity import train_model
    from cdp.tables import MODELS

    kept = train_model(spark, settings, "quarterly refresh", "analyst-7", "train-test")
    spec = settings.identity.probabilistic
    newest, due = models.newest(spark, spec)
    assert (kept.version, newest.version, due, newest.trigger) == (2, 2, "", "quarterly refresh")
    assert newest.model.m == kept.model.m and newest.model.u == kept.model.u
    assert newest.model.random_match == kept.model.random_match and newest.attribute_rows == kept.attribute_rows > 400
    rows = spark.table(MODELS).where("model_version = 2").select("actor", "run_id").distinct().collect()
    assert [(r["actor"], r["run_id"]) for r in rows] == [("analyst-7", "train-test")]
    changed = spec.model_copy(update={"comparisons": {**spec.comparisons, "city": spec.comparisons["city"].model_copy(
        update={"term_frequency": False})}})
    assert models.newest(spark, changed) == (None, models.CONFIG_CHANGED)
    # The run that next scores with version 2 names the change on its merges and splits.
    from cdp.identity.probabilistic import ProbabilisticLinks
    from cdp.stages.identity import model_change

    assert model_change(spark, ProbabilisticLinks(None, None, None, model_version=2)) == "model:v1->v2"
    assert model_change(spark, ProbabilisticLinks(None, None, None, model_version=1)) is None


def test_maintain_lays_out_the_map_by_one_id_with_statistics_on_one_id_alone(spark, run):
    """OPTIMIZE … ZORDER BY one_id rewrites the map without changing a row; the files it adds carry
    per-file statistics on one_id and on nothing else (no record key, no identifier value)."""
    from pathlib import Path

    from cdp.operations.maintenance import optimize
    from cdp.tables import ONEID_MAP

    before = sorted(tuple(r) for r in spark.table(ONEID_MAP).collect())
    files_before = spark.sql(f"DESCRIBE DETAIL {ONEID_MAP}").first()["numFiles"]
    result = optimize(spark, ONEID_MAP, ("one_id",))
    detail = spark.sql(f"DESCRIBE DETAIL {ONEID_MAP}").first()
    assert sorted(tuple(r) for r in spark.table(ONEID_MAP).collect()) == before
    assert (result.zorder_by, result.files_removed, result.files_added) == (("one_id",), files_before, detail["numFiles"])
    assert detail["properties"]["delta.dataSkippingStatsColumns"] == "one_id"
    log_dir = Path(detail["location"].removeprefix("file:")) / "_delta_log"
    newest = max(log_dir.glob("*.json"))
    added = [json_line["add"] for json_line in map(json.loads, newest.read_text().splitlines()) if "add" in json_line]
    assert len(added) == detail["numFiles"]
    for action in added:
        stats = json.loads(action["stats"])
        assert set(stats["minValues"]) == set(stats["maxValues"]) == {"one_id"}


def test_identity_and_gold_recompute_only_what_changed_and_equal_a_full_recompute(spark, settings, run, data_dir):
    """Increments of POS orders: a new person, a new order of a member, an order that carries one
    member's number and another person's phone (a merge), then that order corrected without the
    phone (a split); then a consent withdrawal. Each incremental run recomputes only the components
    its changes reach and names the merge and the split, and gold recomputes only the persons they
    changed; what they leave, a rebuild from bronze (`cdp run --full`) then finds nothing to change
    in: the same one_id for every record, the same links, refusals, violations, households and registry,
    and the same profiles, identity map, tag values, consent states and audience members."""
    from cdp.pipeline import run_stages

    def state():
        tables = {
            "map": "SELECT source, record_key, one_id FROM identity.oneid_map",
            "links": "SELECT link_id, side, source, record_key, match_weight FROM identity.probabilistic_links",
            "violations": "SELECT source, record_key, id_type, id_value, reason FROM identity.violations",
            "households": "SELECT household_id, one_id FROM identity.households",
            "refused": "SELECT id_type, id_value, reason, records FROM identity.suspicious_identifiers",
            "registry": "SELECT one_id, status, merged_into FROM identity.registry",
        }
        return {name: sorted(tuple(r) for r in spark.sql(query).collect()) for name, query in tables.items()}

    def gold_state():
        tables = {
            "profile": "SELECT * EXCEPT (phone_enc, email_enc) FROM gold.customer_profile",
            "identity_map": "SELECT * FROM gold.identity_map",
            "tags": "SELECT one_id, tag_code, value FROM gold.customer_tags",
            "consent": "SELECT * FROM gold.consent_state",
            "audiences": "SELECT audience, one_id, purpose, entered_on FROM gold.audience_members",
            "tag_history": "SELECT * FROM gold.tag_history",
        }
        return {name: sorted(str(tuple(r)) for r in spark.sql(query).collect()) for name, query in tables.items()}

    def one_id(source, key):
        return spark.table("identity.oneid_map").where((F.col("source") == source) & (F.col("record_key") == key)).first()["one_id"]

    gold_runs = []

    def land(name, lines, source="pos_orders"):
        folder = data_dir / "landing" / source
        header = (folder / f"{source}_part-0001.csv").read_text(encoding="utf-8").splitlines()[0]
        (folder / name).write_text(header + "\n" + "".join(f"{line}\n" for line in lines), encoding="utf-8")
        for stage in ("bronze", "silver"):
            run_stages(spark, settings, stage, AS_OF)
        metrics = run_stages(spark, settings, "identity", AS_OF)[0].metrics
        gold_runs.append(run_stages(spark, settings, "gold", AS_OF)[0].metrics)
        return metrics

    # Two persons each with one member number and one phone and no 身份证 (a merge the guards allow).
    pick = spark.sql("""
        WITH kinds AS (
          SELECT m.one_id, i.id_type, count(DISTINCT i.id_value) AS n, min(i.id_value) AS v
          FROM silver.identifiers i JOIN identity.oneid_map m USING (source, record_key)
          GROUP BY m.one_id, i.id_type)
        SELECT one_id, max(CASE WHEN id_type = 'member_id' THEN v END) AS member,
               max(CASE WHEN id_type = 'phone' THEN v END) AS phone
        FROM kinds GROUP BY one_id
        HAVING sum(CASE WHEN id_type = 'member_id' THEN n END) = 1 AND sum(CASE WHEN id_type = 'phone' THEN n END) = 1
           AND sum(CASE WHEN id_type = 'id_card' THEN n ELSE 0 END) = 0
           AND one_id NOT IN (SELECT one_id FROM identity.households)
        ORDER BY one_id LIMIT 2""").collect()
    (a, b) = pick
    assert a["one_id"] != b["one_id"]
    run_stages(spark, settings, "identity", AS_OF)  # whatever earlier tests did to identity, recomputed
    run_stages(spark, settings, "gold", AS_OF)  # and to gold
    records = spark.table("identity.oneid_map").count()
    persons = spark.table("gold.customer_profile").count()

    first = land("pos_orders_part-9001.csv", [
        "POSX1,S0301,广州天河城店,13700000001,10.00,2026/10/30 10:00,现金,MX-NEW-1",
        f"POSX2,S0301,广州天河城店,,20.00,2026/10/30 11:00,现金,{a['member']}",
        f"POSX3,S0301,广州天河城店,{b['phone'].removeprefix('+86')},30.00,2026/10/30 12:00,现金,{a['member']}",
    ])
    assert first["mode"] == "changes" and 3 <= first["reached"] < records // 4, first
    assert first["changes"] == {"new": 1, "merge": 1}
    survivor = one_id("pos_orders", "POSX3")
    assert survivor in (a["one_id"], b["one_id"]) and one_id("pos_orders", "POSX2") == survivor
    merged = spark.table("identity.changes").where((F.col("kind") == "merge") & (F.col("one_id") == survivor)) \
        .orderBy(F.desc("changed_at")).first()
    assert sorted(merged["old_ids"]) == sorted([a["one_id"], b["one_id"]])

    second = land("pos_orders_part-9002.csv", [  # the order corrected: it carried no phone after all
        f"POSX3,S0301,广州天河城店,,30.00,2026/10/30 12:00,现金,{a['member']}",
    ])
    assert second["mode"] == "changes" and second["changes"] == {"split": 1}, second
    holders = spark.sql(f"""SELECT DISTINCT m.one_id FROM silver.identifiers i JOIN identity.oneid_map m
                            USING (source, record_key) WHERE i.id_type = 'phone' AND i.id_value = '{b['phone']}'""")
    apart = [r["one_id"] for r in holders.collect()]
    assert len(apart) == 1 and apart[0] != one_id("pos_orders", "POSX3") == one_id("pos_orders", "POSX2")
    withdrawn = land("consent_events_part-9003.csv", [
        f"CX9003,phone,{b['phone'].removeprefix('+86')},marketing_sms,withdraw,crm,2026-10-31 09:00:00,crm",
    ], source="consent_events")
    assert withdrawn["mode"] == "changes" and withdrawn["changes"] == {}, withdrawn
    holder = spark.sql("""SELECT status FROM gold.consent_state c JOIN identity.oneid_map m USING (one_id)
                           WHERE m.source = 'consent_events' AND m.record_key = 'CX9003' AND c.purpose = 'marketing_sms'""")
    assert [r["status"] for r in holder.collect()] == ["withdrawn"]
    # Gold followed each increment: only the persons it changed were recomputed.
    assert [(g["mode"], 1 <= g["persons_recomputed"] <= 6) for g in gold_runs] == [("changes", True)] * 3, gold_runs
    assert gold_runs[-1]["profiles"] == persons + 1  # the new person of the first increment
    incremental, incremental_gold = state(), gold_state()
    # `cdp run --full`: silver rebuilt from all of bronze, every person recomputed in identity and gold.
    rebuilt = {o.stage: o.metrics for o in run_stages(spark, settings, "all", AS_OF, full=True)}
    assert (rebuilt["identity"]["mode"], rebuilt["identity"]["changes"]) == ("full", {})
    assert (rebuilt["gold"]["mode"], rebuilt["gold"]["persons_recomputed"]) == ("full", persons + 1)
    assert state() == incremental
    assert gold_state() == incremental_gold
    quiet = run_stages(spark, settings, "identity", AS_OF)[0].metrics
    assert (quiet["mode"], quiet["changes"]) == ("unchanged", {})
    quiet_gold = run_stages(spark, settings, "gold", AS_OF)[0].metrics
    assert (quiet_gold["mode"], quiet_gold["persons_recomputed"]) == ("changes", 0)

    # When the next run must recompute everything instead, and why.
    from cdp.cursors import PUBLISHING, mark_publishing, read_cursors, write_cursors
    from cdp.identity import models
    from cdp.stages.identity import identity_fingerprint, silver_inputs, why_recompute

    def reason():
        frozen = models.newest(spark, settings.identity.probabilistic)[0]
        return why_recompute(spark, settings, silver_inputs(spark, settings), read_cursors(spark, "identity"),
                             identity_fingerprint(settings, frozen.version), frozen)

    spark.sql("OPTIMIZE identity.oneid_map")
    assert reason() is None  # housekeeping is no change
    cursors = read_cursors(spark, "identity")
    mark_publishing(spark, "identity", cursors, "test")
    assert reason() == "the last run stopped while publishing"
    write_cursors(spark, "identity", [c for c in cursors.values() if c.input_table != PUBLISHING], "test")
    spark.sql("UPDATE identity.oneid_map SET one_id = one_id WHERE source = 'pos_orders' AND record_key = 'POSX1'")
    assert reason() == "identity.oneid_map was written by something else since the last run (UPDATE: an erasure?)"
