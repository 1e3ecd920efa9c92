"""Identifier hygiene and one_id assignment, with explicit expected ids."""

from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp.config import IdentityConfig
from cdp.identity.stage import apply_hygiene, assign_one_ids, identifier_vertex, record_vertex, summarise_refusals


def identifiers(spark, rows):
    return spark.createDataFrame(rows, "source string, record_key string, id_type string, id_value string")


def test_blocklisted_values_and_patterns_never_link(spark, settings):
    rows = [
        ("pos_orders", "P1", "phone", "+8613800138000"),   # walk-in placeholder
        ("pos_orders", "P2", "phone", "+8613800138000"),
        ("pos_orders", "P3", "phone", "+8613912345678"),
        ("crm_members", "M1", "phone", "+8611111111111"),  # one digit repeated
        ("crm_members", "M1", "email", "test@test.com"),
        ("crm_members", "M2", "email", "test@qq.com"),     # test@ pattern
        ("crm_members", "M3", "email", "li@qq.com"),
        ("app_events", "A1", "idfa", "00000000-0000-0000-0000-000000000000"),
        ("app_events", "A2", "android_id", "9774d56d682e549c"),
        ("app_events", "A3", "fax", "123"),
    ]
    usable, refused = apply_hygiene(identifiers(spark, rows), settings.identity)
    assert sorted((r["record_key"], r["id_value"]) for r in usable.collect()) == [
        ("M3", "li@qq.com"), ("P3", "+8613912345678"),
    ]
    summary = {(r["id_type"], r["id_value"]): (r["reason"], r["records"]) for r in summarise_refusals(refused).collect()}
    assert summary == {
        ("phone", "+8613800138000"): ("blocklisted_value", 2),
        ("phone", "+8611111111111"): ("blocklisted_pattern", 1),
        ("email", "test@test.com"): ("blocklisted_value", 1),
        ("email", "test@qq.com"): ("blocklisted_pattern", 1),
        ("idfa", "00000000-0000-0000-0000-000000000000"): ("blocklisted_value", 1),
        ("android_id", "9774d56d682e549c"): ("blocklisted_value", 1),
        ("fax", "123"): ("unknown_identifier_type", 1),
    }


def test_unknown_identifier_types_are_refused_even_without_blocklist(spark):
    config = IdentityConfig(identifier_types=["phone"])
    usable, refused = apply_hygiene(identifiers(spark, [("s", "1", "email", "a@qq.com")]), config)
    assert usable.count() == 0
    assert [r["refusal"] for r in refused.collect()] == ["unknown_identifier_type"]


def test_one_id_is_the_smallest_record_vertex_of_the_component(spark):
    records = spark.createDataFrame(
        [("crm_members", "M1"), ("pos_orders", "P1"), ("pos_orders", "P2")], "source string, record_key string"
    )
    vids = {r["record_key"]: r["vid"] for r in records.select(
        "record_key", record_vertex(F.col("source"), F.col("record_key")).alias("vid")).collect()}
    phone = spark.range(1).select(identifier_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("v")).first()["v"]
    # M1 and P1 share the phone (one component, labelled by the phone vertex), P2 is alone.
    components = spark.createDataFrame(
        [(vids["M1"], phone), (vids["P1"], phone), (vids["P2"], vids["P2"])], "id long, component long"
    )
    anchor = min(vids["M1"], vids["P1"])
    expected = spark.createDataFrame(
        [("crm_members", "M1", f"oid_{anchor & (2**64 - 1):016x}"), ("pos_orders", "P1", f"oid_{anchor & (2**64 - 1):016x}"),
         ("pos_orders", "P2", f"oid_{vids['P2'] & (2**64 - 1):016x}")],
        "source string, record_key string, one_id string",
    )
    assert_df_equality(assign_one_ids(records, components), expected, ignore_row_order=True, ignore_nullable=True)


def test_vertex_ids_are_stable_and_domain_separated(spark):
    row = spark.range(1).select(
        record_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("r"),
        identifier_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("i"),
    ).first()
    assert row["r"] != row["i"]
    again = spark.range(1).select(identifier_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("i")).first()
    assert again["i"] == row["i"]
