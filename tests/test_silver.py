"""Mapping a source onto its entity (conf/model.yaml): normalised and coded values, record keys,
identifiers, a reason code for every refused row, and which delivery of a re-sent record wins."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp.cleanse.mapping import (
    Reading, entity_identifiers, latest_per_record_key, map_to_entity, with_quality_flags, with_rejection_reason,
)
from cdp.conf.sources import Source
from cdp.stages.bronze import delivered_schema


def bronze_rows(spark, source, rows, file="file:/landing/pos.csv", modified="2026-11-01 07:00:00"):
    """A bronze-shaped frame: delivered columns as strings, _corrupt_record, and ingestion metadata
    (the rows' lines in the file are their order here)."""
    df = spark.createDataFrame(rows, delivered_schema(source))
    return (df.withColumn("_file", F.lit(file)).withColumn("_file_modified_at", F.to_timestamp(F.lit(modified)))
            .withColumn("_line", F.monotonically_increasing_id() + 1).withColumn("_batch_id", F.lit("b1"))
            .withColumn("_ingested_at", F.to_timestamp(F.lit("2026-11-01 08:00:00"))))


def mapped(spark, settings, name, source, rows, **where):
    reading = Reading(settings.model, tuple(settings.privacy.purposes))
    entity = settings.model.entities[source.entity]
    return (bronze_rows(spark, source, rows, **where).transform(map_to_entity(name, source, reading))
            .transform(with_rejection_reason(entity)))


def test_pos_orders_are_normalised_and_refused_rows_get_reasons(spark, settings):
    source = settings.sources.sources["pos_orders"]
    rows = [
        ("POS1", "S0101", "上海南京西路店", "+86 139 1234 5678", "128.50", "2026/10/01 10:15", "微信支付", "M10000001", None),
        ("POS2", "S0101", "上海南京西路店", "", "12O.50", "2026/10/01 10:16", "现金", "", None),
        ("POS3", "S0102", "广州天河店", "13912345678", "", "2026/10/02 11:00", "支付宝", None, None),
        ("POS4", "S0102", "广州天河店", "13912345678", "99", "not a time", "支付宝", None, None),
        ("", "S0102", "广州天河店", "13912345678", "99", "2026/10/02 11:00", "支付宝", None, None),
        (None, None, None, None, None, None, None, None, "POS6,S01,\"unclosed"),
    ]
    result = mapped(spark, settings, "pos_orders", source, rows)
    got = [(r["record_key"], r["phone"], r["amount"], r["_reason"]) for r in result.orderBy(F.col("record_key").asc_nulls_last()).collect()]
    assert got == [
        ("POS1", "+8613912345678", Decimal("128.50"), None),
        ("POS2", None, None, "invalid_amount"),
        ("POS3", "+8613912345678", None, "missing_amount"),
        ("POS4", "+8613912345678", Decimal("99.00"), "invalid_order_time"),
        (None, "+8613912345678", Decimal("99.00"), "missing_record_key"),
        (None, None, None, "malformed_record"),
    ]
    malformed = result.where(F.col("_reason") == "malformed_record").first()
    assert malformed["_raw"] == 'POS6,S01,"unclosed'


def test_codes_map_onto_canonical_values_and_an_unknown_code_is_quarantined(spark, settings):
    """GB/T 2261.1 genders (0 unknown, 9 unstated) and words; a code nobody declared refuses the row."""
    source = settings.sources.sources["crm_members"]
    genders = ["1", "2", "0", "9", "男", "女士", "F", "", "3"]
    rows = [(f"M{i}", "王芳", None, None, None, g, None, None, None, None, None) for i, g in enumerate(genders)]
    result = mapped(spark, settings, "crm_members", source, rows)
    got = {r["record_key"]: (r["gender"], r["_reason"]) for r in result.collect()}
    assert [got[f"M{i}"] for i in range(len(genders))] == [
        ("M", None), ("F", None), (None, None), (None, None), ("M", None), ("F", None), ("F", None), (None, None),
        (None, "unmapped_gender"),
    ]


def test_a_source_maps_its_own_codes_and_may_keep_or_drop_unknown_ones(spark, settings):
    """A consent log with its own codes and no id column: the key is a hash of the content, the
    subject type one value for every row; an unknown action or purpose is quarantined, never dropped."""
    source = Source.model_validate({
        "channel": "consent", "format": "csv", "path": "c/*.csv", "entity": "consent_events",
        "record_key": {"hash_of": ["手机号", "用途", "操作", "时间"]},
        "columns": ["手机号", "用途", "操作", "时间"],
        "mapping": {
            "subject_type": {"value": "phone"}, "subject_value": {"column": "手机号"},
            "purpose": {"column": "用途", "values": {"SMS01": "marketing_sms", "WX01": "marketing_wechat"}},
            "action": {"column": "操作", "values": {"1": "grant", "0": "withdraw"}},
            "occurred_at": {"column": "时间"},
        },
    }, context={"model": settings.model, "purposes": list(settings.privacy.purposes)})
    rows = [("13912340001", "SMS01", "1", "2026-10-01 10:00:00", None),
            ("13912340001", "SMS01", "1", "2026-10-01 10:00:00", None),   # an exact re-send: the same key
            ("13912340001", "wx01", "0", "2026-10-02 10:00:00", None),    # codes compare case-insensitively
            ("13912340002", "SMS01", "9", "2026-10-03 10:00:00", None),
            ("13912340002", "XX99", "1", "2026-10-03 10:00:00", None),
            ("13912340003", "marketing_email", "withdraw", "2026-10-04 10:00:00", None)]  # canonical as is
    result = mapped(spark, settings, "consent_log", source, rows).orderBy("_line").collect()
    assert [(r["purpose"], r["action"], r["subject_id_type"], r["subject_id_value"], r["_reason"]) for r in result] == [
        ("marketing_sms", "grant", "phone", "+8613912340001", None),
        ("marketing_sms", "grant", "phone", "+8613912340001", None),
        ("marketing_wechat", "withdraw", "phone", "+8613912340001", None),
        ("marketing_sms", None, "phone", "+8613912340002", "unmapped_action"),
        (None, "grant", "phone", "+8613912340002", "unmapped_purpose"),
        ("marketing_email", "withdraw", "phone", "+8613912340003", None),
    ]
    keys = [r["record_key"] for r in result]
    assert keys[0] == keys[1] and len(set(keys)) == 5 and all(k.startswith("h") and len(k) == 33 for k in keys)


def test_formats_time_zones_and_epochs_per_field(spark, settings):
    model = settings.model
    source = Source.model_validate({
        "channel": "service", "format": "csv", "path": "t/*.csv", "entity": "service_tickets",
        "record_key": ["渠道", "工单号"], "columns": ["渠道", "工单号", "创建时间", "关闭时间", "邮箱"],
        "timezone": "Asia/Shanghai",
        "mapping": {
            "opened_at": {"column": "创建时间", "formats": ["dd/MM/yyyy HH:mm"]},
            "closed_at": {"column": "关闭时间", "epoch": "seconds"},
            "email": {"column": "邮箱"},
            "contact_channel": {"column": "渠道"},
        },
    }, context={"model": model})
    rows = [("phone", "T1", "03/11/2026 09:05", "1793671500", "A@QQ.com", None),
            ("phone", "T2", "2026-11-03 09:05", None, None, None),       # not dd/MM/yyyy: refused with the raw row
            ("", "T3", "03/11/2026 09:05", None, None, None)]           # part of the key missing
    shown = {"opened": F.date_format("opened_at", "yyyy-MM-dd HH:mm"), "closed": F.date_format("closed_at", "yyyy-MM-dd HH:mm")}
    result = {r["record_key"]: r for r in mapped(spark, settings, "tickets", source, rows).withColumns(shown).collect()}
    ticket = result["phone\u001fT1"]
    assert ticket["opened"] == "2026-11-03 09:05"  # shown in the session's time zone, which is the source's
    assert ticket["closed"] == "2026-11-03 10:05"  # 1793671500 s = 02:05 UTC = 10:05 in Shanghai
    assert (ticket["email"], ticket["_reason"]) == ("a@qq.com", None)
    assert result["phone\u001fT2"]["_reason"] == "invalid_opened_at" and "2026-11-03 09:05" in result["phone\u001fT2"]["_raw"]
    assert [r["_reason"] for k, r in result.items() if k is None] == ["missing_record_key"]

    utc = source.model_copy(update={"timezone": "UTC"})
    in_utc = mapped(spark, settings, "tickets", utc, rows[:1]).withColumns(shown).first()
    assert in_utc["opened"] == "2026-11-03 17:05"  # 09:05 UTC, shown in Shanghai time


def test_identifiers_from_fields_from_columns_where_a_condition_holds_and_from_a_consent_subject(spark, settings):
    """One device-id column is an IDFA when os is iOS and an Android ID otherwise."""
    app = Source.model_validate({
        "channel": "app", "format": "jsonl", "path": "a/*.jsonl", "entity": "events", "record_key": "id",
        "columns": ["id", "os", "device_id", "ts", "member"],
        "mapping": {"event_time": {"column": "ts", "epoch": "milliseconds"}, "os": {"column": "os"},
                    "member_id": {"column": "member"}},
        "identifiers": [{"type": "idfa", "column": "device_id", "when": "lower(os) = 'ios'"},
                        {"type": "android_id", "column": "device_id", "when": "lower(os) = 'android'"}],
    }, context={"model": settings.model})
    rows = [("A1", "iOS", "3F1E0C9A-5B7D-4E21-9C8A-0D6F2B4E7A13", "1761984000000", "M1", None),
            ("A2", "Android", "8A7F0C1D2E3B4A59", "1761984000000", None, None),
            ("A3", "HarmonyOS", "ZZ", "1761984000000", None, None)]
    got = entity_identifiers(mapped(spark, settings, "app_log", app, rows))
    expected = spark.createDataFrame(
        [("app_log", "A1", "idfa", "3f1e0c9a-5b7d-4e21-9c8a-0d6f2b4e7a13"), ("app_log", "A1", "member_id", "M1"),
         ("app_log", "A2", "android_id", "8a7f0c1d2e3b4a59")],
        "source string, record_key string, id_type string, id_value string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_latest_delivery_wins_by_file_time_then_file_name_then_line(spark):
    df = spark.createDataFrame(
        [("pos", "K1", "old file", datetime(2026, 1, 1), "b.csv", 9), ("pos", "K1", "new file", datetime(2026, 1, 2), "a.csv", 1),
         ("pos", "K2", "line 1", datetime(2026, 1, 1), "a.csv", 1), ("pos", "K2", "line 2", datetime(2026, 1, 1), "a.csv", 2),
         ("pos", "K3", "a.csv", datetime(2026, 1, 1), "a.csv", 5), ("pos", "K3", "b.csv", datetime(2026, 1, 1), "b.csv", 1)],
        "source string, record_key string, v string, _file_modified_at timestamp, _file string, _line long",
    )
    assert_df_equality(
        latest_per_record_key(df).select("record_key", "v"),
        spark.createDataFrame([("K1", "new file"), ("K2", "line 2"), ("K3", "b.csv")], "record_key string, v string"),
        ignore_row_order=True, ignore_nullable=True,
    )


def test_a_newer_invalid_version_is_quarantined_and_the_older_valid_one_stays(spark, settings):
    """Documented in docs/configuration.md (sources.yaml): only versions fit for silver compete."""
    source = settings.sources.sources["pos_orders"]
    older = mapped(spark, settings, "pos_orders", source,
                   [("P1", "S1", "店", "13912345678", "10", "2026/10/01 10:15", "现金", None, None)],
                   file="file:/landing/pos-1.csv", modified="2026-10-01 12:00:00")
    newer = mapped(spark, settings, "pos_orders", source,
                   [("P1", "S1", "店", "13912345678", "ten", "2026/10/01 10:15", "现金", None, None)],
                   file="file:/landing/pos-2.csv", modified="2026-10-02 12:00:00")
    both = older.unionByName(newer)
    kept = latest_per_record_key(both.where(F.col("_reason").isNull())).collect()
    refused = both.where(F.col("_reason").isNotNull()).collect()
    assert [(r["record_key"], r["amount"], r["_file"]) for r in kept] == [("P1", Decimal("10.00"), "file:/landing/pos-1.csv")]
    assert [(r["record_key"], r["_reason"], r["_file"]) for r in refused] == [("P1", "invalid_amount", "file:/landing/pos-2.csv")]


def test_quality_flags_say_why_a_delivered_value_is_null(spark, settings):
    source = settings.sources.sources["pos_orders"]
    rows = [
        ("POS1", "S1", "店", "+86 139 1234 5678", "10", "2026/10/01 10:15", "现金", None, None),
        ("POS2", "S1", "店", "12345", "10", "2026/10/01 10:15", "现金", None, None),   # not a mobile
        ("POS3", "S1", "店", "", "10", "2026/10/01 10:15", "现金", None, None),        # nothing delivered: no flag
    ]
    flagged = mapped(spark, settings, "pos_orders", source, rows).transform(
        with_quality_flags(settings.model.entities["orders"]))
    assert sorted((r["record_key"], r["quality_flags"]) for r in flagged.collect()) == [
        ("POS1", []), ("POS2", ["invalid_phone"]), ("POS3", []),
    ]
