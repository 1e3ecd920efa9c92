"""Identifier hygiene and one_id assignment, with explicit expected ids."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import functions as F

from cdp.conf.identity import IdentityConfig
from cdp.identity.hygiene import apply_hygiene, summarise_refusals
from cdp.identity.registry import assign_stable_ids
from cdp.identity.graph import identifier_vertex, record_vertex, resolve_persons


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
    config = IdentityConfig.model_validate({"identifiers": {"phone": {"priority": 1, "max_per_person": 2}}})
    usable, refused = apply_hygiene(identifiers(spark, [("s", "1", "email", "a@qq.com")]), config)
    assert usable.count() == 0
    assert [r["refusal"] for r in refused.collect()] == ["unknown_identifier_type"]


FAMILY_PHONE, STORE_PHONE = "+8613911110001", "+8613922220000"
GRAPH = [
    ("crm_members", "M1", "member_id", "M1"), ("crm_members", "M1", "phone", FAMILY_PHONE),
    ("crm_members", "M1", "id_card", "110101199001011236"),
    ("crm_members", "M2", "member_id", "M2"), ("crm_members", "M2", "phone", FAMILY_PHONE),   # a parent on the child's phone
    ("crm_members", "M2", "id_card", "110101195001012228"),
    ("pos_orders", "O1", "phone", FAMILY_PHONE), ("pos_orders", "O1", "member_id", "M1"),
    ("pos_orders", "O2", "phone", "+8613800138000"), ("pos_orders", "O2", "member_id", "M2"),  # walk-in placeholder
    *[("pos_orders", f"W{i}", "phone", STORE_PHONE) for i in range(1, 5)],                       # the store's own phone
    *[("pos_orders", f"W{i}", "member_id", f"M{i}") for i in range(1, 5)],
    ("app_events", "E1", "anonymous_id", "a1"), ("app_events", "E1", "member_id", "M1"),
    ("app_events", "E2", "anonymous_id", "a1"),                                                  # same install, not logged in
    ("app_events", "Z1", "idfa", "00000000-0000-0000-0000-000000000000"),
]


def test_persons_from_a_graph_with_every_trap(spark, settings):
    idents = identifiers(spark, GRAPH)
    records = idents.select("source", "record_key").distinct()
    persons = resolve_persons(records, idents, settings.identity)
    clusters, usable, refused, refused_edges = persons.clusters, persons.identifiers, persons.refused_values, persons.refused_edges
    oneid_map = assign_stable_ids(clusters, None, None, usable, refused_edges.select("source", "record_key", "id_type", "id_value"), "r1", datetime(2026, 11, 1), -1).oneid_map
    groups: dict[str, set[str]] = {}
    for row in oneid_map.collect():
        groups.setdefault(row["one_id"], set()).add(row["record_key"])
    assert groups == {
        "oid_95ddf29886ae5a0f": {"M1", "O1", "W1", "E1", "E2"},
        "oid_e80839f6a4d89c47": {"M2", "O2", "W2"},
        "oid_65b226b61b9b546e": {"W3"},
        "oid_e06c3a08d0717ca5": {"W4"},
        "oid_96ee1cc5c1e4da8b": {"Z1"},
    }
    assert sorted(tuple(r) for r in refused_edges.collect()) == [
        ("crm_members", "M2", "phone", FAMILY_PHONE, "id_card: the person would hold 2 distinct values, at most 1",
         ["110101195001012228", "110101199001011236"]),
    ]
    reasons = {(r["id_value"], r["reason"], r["degree"]) for r in summarise_refusals(refused).collect()}
    assert reasons == {
        ("+8613800138000", "blocklisted_value", None),
        (STORE_PHONE, "shared_by_strangers", 4),
        ("00000000-0000-0000-0000-000000000000", "blocklisted_value", None),
    }


def test_vertex_ids_are_stable_and_domain_separated(spark):
    row = spark.range(1).select(
        record_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("r"),
        identifier_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("i"),
    ).first()
    assert row["r"] != row["i"]
    again = spark.range(1).select(identifier_vertex(F.lit("phone"), F.lit("+8613912345678")).alias("i")).first()
    assert again["i"] == row["i"]


def test_steward_rules_link_and_keep_apart_and_must_not_link_wins(spark, settings):
    """A steward merged membership M1 with M9 (nothing links them) and said the walk-in order O1, on
    M1's phone, is someone else; M1 and O2 carry both a must-link and a must-not-link: apart."""
    phone = "+8613912340001"
    rows = [
        ("crm_members", "M1", "member_id", "M1"), ("crm_members", "M1", "phone", phone),
        ("crm_members", "M9", "member_id", "M9"), ("pos_orders", "O1", "phone", phone),
        ("pos_orders", "O2", "member_id", "M2"),
        # must-links, as the identity stage adds them: both records carry the rule id
        ("crm_members", "M1", "steward", "sr_merge"), ("crm_members", "M9", "steward", "sr_merge"),
        ("crm_members", "M1", "steward", "sr_both"), ("pos_orders", "O2", "steward", "sr_both"),
    ]
    idents = identifiers(spark, rows)
    must_not_link = spark.createDataFrame(
        [("sr_split", "crm_members", "M1", "pos_orders", "O1"), ("sr_not", "pos_orders", "O2", "crm_members", "M1")],
        "rule_id string, source_a string, record_key_a string, source_b string, record_key_b string")
    persons = resolve_persons(idents.select("source", "record_key").distinct(), idents, settings.identity,
                              must_not_link=must_not_link)
    groups: dict[int, set[str]] = {}
    for row in persons.clusters.collect():
        groups.setdefault(row["cluster"], set()).add(row["record_key"])
    assert sorted(map(sorted, groups.values())) == [["M1", "M9"], ["O1"], ["O2"]]
    # sr_both comes first (steward links, then by value), when M1 and O2 are still one record each: the
    # group with the lower record id keeps the value, so M1's edge to it is the refused one
    assert sorted((r["record_key"], r["id_type"], r["reason"]) for r in persons.refused_edges.collect()) == [
        ("M1", "steward", "steward: must not link (rule sr_not)"),
        ("O1", "phone", "steward: must not link (rule sr_split)"),
    ]
