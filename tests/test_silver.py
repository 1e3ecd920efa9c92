"""Mapping a source onto its entity: normalised values, and a reason code for every refused row."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp.conf.model import ENTITIES
from cdp.cleanse.mapping import entity_identifiers, latest_per_record_key, map_to_entity, with_consent_subject, with_rejection_reason
from cdp.stages.bronze import delivered_schema


def bronze_rows(spark, source, rows):
    """A bronze-shaped frame: delivered columns as strings, _corrupt_record, and ingestion metadata."""
    schema = delivered_schema(source)
    df = spark.createDataFrame(rows, schema)
    return (df.withColumn("_file", F.lit("file:/landing/pos.csv")).withColumn("_batch_id", F.lit("b1"))
            .withColumn("_ingested_at", F.to_timestamp(F.lit("2026-11-01 08:00:00"))))


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
    entity = ENTITIES["orders"]
    result = bronze_rows(spark, source, rows).transform(map_to_entity("pos_orders", source)).transform(
        with_rejection_reason(entity)
    )
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


def test_resent_records_collapse_to_the_latest(spark):
    df = spark.createDataFrame(
        [("pos", "K1", 1, datetime(2026, 1, 1), "a"), ("pos", "K1", 2, datetime(2026, 1, 2), "a"),
         ("pos", "K2", 3, datetime(2026, 1, 1), "a")],
        "source string, record_key string, v int, _ingested_at timestamp, _file string",
    )
    assert_df_equality(
        latest_per_record_key(df).select("record_key", "v"),
        spark.createDataFrame([("K1", 2), ("K2", 3)], "record_key string, v int"),
        ignore_row_order=True, ignore_nullable=True,
    )


def test_identifiers_from_entity_fields_and_consent_subjects(spark):
    events = spark.createDataFrame(
        [("wechat_events", "E1", "oX1", "oU1", None, None, None, None, None, None),
         ("app_events", "A1", None, None, None, None, "8a7f0c1d2e3b4a59", "3f1e0c9a-5b7d-4e21-9c8a-0d6f2b4e7a13", "M10000001", None)],
        "source string, record_key string, openid string, unionid string, idfa string, oaid string, "
        "android_id string, anonymous_id string, member_id string, phone string",
    )
    consent = spark.createDataFrame(
        [("consent_events", "C1", "phone", "+86 139-1234-5678"), ("consent_events", "C2", "email", " A@QQ.COM "),
         ("consent_events", "C3", "fax", "123")],
        "source string, record_key string, subject_type string, subject_value string",
    ).transform(with_consent_subject)
    got = entity_identifiers(ENTITIES["events"], events).unionByName(
        entity_identifiers(ENTITIES["consent_events"], consent)
    )
    expected = spark.createDataFrame(
        [("wechat_events", "E1", "openid", "oX1"), ("wechat_events", "E1", "unionid", "oU1"),
         ("app_events", "A1", "android_id", "8a7f0c1d2e3b4a59"),
         ("app_events", "A1", "anonymous_id", "3f1e0c9a-5b7d-4e21-9c8a-0d6f2b4e7a13"),
         ("app_events", "A1", "member_id", "M10000001"),
         ("consent_events", "C1", "phone", "+8613912345678"), ("consent_events", "C2", "email", "a@qq.com")],
        "source string, record_key string, id_type string, id_value string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_quality_flags_say_why_a_delivered_value_is_null(spark, settings):
    from cdp.cleanse.mapping import with_quality_flags

    source = settings.sources.sources["pos_orders"]
    rows = [
        ("POS1", "S1", "店", "+86 139 1234 5678", "10", "2026/10/01 10:15", "现金", None, None),
        ("POS2", "S1", "店", "12345", "10", "2026/10/01 10:15", "现金", None, None),   # not a mobile
        ("POS3", "S1", "店", "", "10", "2026/10/01 10:15", "现金", None, None),        # nothing delivered: no flag
    ]
    flagged = bronze_rows(spark, source, rows).transform(map_to_entity("pos_orders", source)).transform(
        with_quality_flags(ENTITIES["orders"])
    )
    assert sorted((r["record_key"], r["quality_flags"]) for r in flagged.collect()) == [
        ("POS1", []), ("POS2", ["invalid_phone"]), ("POS3", []),
    ]
