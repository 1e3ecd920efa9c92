"""Stable OneIDs across runs: keep, merge (oldest survives), split (larger part keeps), new, removed."""

from __future__ import annotations

from datetime import datetime

import pytest

from cdp.identity.registry import assign_stable_ids, with_cause

T1, T2, T3 = datetime(2026, 11, 1, 2), datetime(2026, 11, 2, 2), datetime(2026, 11, 3, 2)


def clusters(spark, rows):
    return spark.createDataFrame(rows, "source string, record_key string, rid long, cluster long")


def idents(spark, rows):
    return spark.createDataFrame(rows, "source string, record_key string, id_type string, id_value string")


def run(spark, cluster_rows, ident_rows, previous, registry, run_id, now, refused_rows=()):
    result = assign_stable_ids(
        clusters(spark, cluster_rows), previous, registry, idents(spark, ident_rows), idents(spark, list(refused_rows)),
        run_id, now, basis_version=0,
    )
    oneid_map = result.oneid_map.localCheckpoint()
    registry_rows = result.registry.localCheckpoint()
    changes = result.changes.localCheckpoint()
    return oneid_map, registry_rows, changes


def as_dict(oneid_map):
    return {f"{r['source']}:{r['record_key']}": r["one_id"] for r in oneid_map.collect()}


def change_rows(changes):
    return sorted((r["kind"], r["one_id"], tuple(r["old_ids"]), r["records"], tuple(r["causes"])) for r in changes.collect())


def registry_rows(registry):
    return sorted((r["one_id"], r["status"], r["created_run"], r["retired_run"], r["merged_into"]) for r in registry.collect())


RUN1_CLUSTERS = [
    ("crm", "M1", 10, 10), ("pos", "O1", 11, 10),   # person A
    ("crm", "M2", 20, 20), ("pos", "O2", 21, 20),   # person B
    ("app", "E3", 30, 30),                          # person C (an app install, not logged in)
]
RUN1_IDENTS = [
    ("crm", "M1", "member_id", "M1"), ("crm", "M1", "phone", "+8613900000001"), ("pos", "O1", "phone", "+8613900000001"),
    ("crm", "M2", "member_id", "M2"), ("crm", "M2", "phone", "+8613900000002"), ("pos", "O2", "phone", "+8613900000002"),
    ("app", "E3", "anonymous_id", "a3"),
]
A, B, C = "oid_000000000000000a", "oid_0000000000000014", "oid_000000000000001e"


@pytest.fixture(scope="module")
def first(spark):
    return run(spark, RUN1_CLUSTERS, RUN1_IDENTS, None, None, "r1", T1)


@pytest.fixture(scope="module")
def second(spark, first):
    """C's install logs in as member M1 (E4: A and C merge); B buys again (O5); a new person E6 appears."""
    cluster_rows = [
        ("crm", "M1", 10, 10), ("pos", "O1", 11, 10), ("app", "E3", 30, 10), ("app", "E4", 40, 10),
        ("crm", "M2", 20, 5), ("pos", "O2", 21, 5), ("pos", "O5", 5, 5),
        ("app", "E6", 1, 1),
    ]
    ident_rows = RUN1_IDENTS + [
        ("app", "E4", "member_id", "M1"), ("app", "E4", "anonymous_id", "a3"),
        ("pos", "O5", "phone", "+8613900000002"), ("app", "E6", "anonymous_id", "a6"),
    ]
    return run(spark, cluster_rows, ident_rows, first[0], first[1], "r2", T2)


def test_first_run_issues_one_new_id_per_person(first):
    oneid_map, registry, changes = first
    assert as_dict(oneid_map) == {"crm:M1": A, "pos:O1": A, "crm:M2": B, "pos:O2": B, "app:E3": C}
    assert change_rows(changes) == [("new", A, (), 2, ()), ("new", B, (), 2, ()), ("new", C, (), 1, ())]
    assert registry_rows(registry) == [(A, "active", "r1", None, None), (B, "active", "r1", None, None),
                                       (C, "active", "r1", None, None)]


def test_new_data_keeps_ids_and_a_merge_keeps_the_oldest(second):
    oneid_map, registry, changes = second
    assert as_dict(oneid_map) == {
        "crm:M1": A, "pos:O1": A, "app:E3": A, "app:E4": A,
        # O5's record vertex is now B's smallest, yet B keeps its id
        "crm:M2": B, "pos:O2": B, "pos:O5": B,
        "app:E6": "oid_0000000000000001",
    }
    assert change_rows(changes) == [
        ("merge", A, (A, C), 4, ("anonymous_id:a3", "member_id:M1")),
        ("new", "oid_0000000000000001", (), 1, ()),
    ]
    assert registry_rows(registry) == [
        ("oid_0000000000000001", "active", "r2", None, None),
        (A, "active", "r1", None, None), (B, "active", "r1", None, None), (C, "retired", "r1", "r2", A),
    ]


def test_a_new_model_version_is_named_first_among_the_causes_of_merges_and_splits(second):
    _, _, changes = second
    assert change_rows(with_cause(changes, "model:v1->v2")) == [
        ("merge", A, (A, C), 4, ("model:v1->v2", "anonymous_id:a3", "member_id:M1")),
        ("new", "oid_0000000000000001", (), 1, ()),
    ]


def test_the_oldest_id_survives_a_merge_even_when_it_is_not_the_smallest(spark, second):
    """E6's id (issued in r2) sorts before B's (issued in r1), yet B survives: age first, then the id."""
    cluster_rows = [
        ("crm", "M1", 10, 10), ("pos", "O1", 11, 10), ("app", "E3", 30, 10), ("app", "E4", 40, 10),
        ("crm", "M2", 20, 5), ("pos", "O2", 21, 5), ("pos", "O5", 5, 5), ("app", "E6", 1, 5),
    ]
    oneid_map, registry, changes = run(spark, cluster_rows, RUN1_IDENTS, second[0], second[1], "r3", T3)
    assert as_dict(oneid_map)["app:E6"] == B
    assert [c[:3] for c in change_rows(changes)] == [("merge", B, ("oid_0000000000000001", B))]


def test_a_split_leaves_the_id_with_the_larger_part_and_never_reissues_it(spark, second):
    """B splits: O2 and O5 stay together (the larger part keeps B); M2 alone gets a new id. Its natural
    candidate (oid_…14, from its record vertex 20) is B itself, still in use, so it gets a run-salted id."""
    cluster_rows = [
        ("crm", "M1", 10, 10), ("pos", "O1", 11, 10), ("app", "E3", 30, 10), ("app", "E4", 40, 10),
        ("crm", "M2", 20, 20), ("pos", "O2", 21, 5), ("pos", "O5", 5, 5),
        ("app", "E6", 1, 1),
    ]
    refused = [("crm", "M2", "phone", "+8613900000002")]
    oneid_map, registry, changes = run(spark, cluster_rows, RUN1_IDENTS, second[0], second[1], "r3", T3, refused)
    ids = as_dict(oneid_map)
    assert (ids["pos:O2"], ids["pos:O5"]) == (B, B)
    assert ids["crm:M2"] == "oid_35f50ce2e76b77d4"
    assert change_rows(changes) == [("split", "oid_35f50ce2e76b77d4", (B,), 1, ("phone:+8613900000002",))]


def test_a_person_whose_records_are_gone_is_removed(spark, second):
    cluster_rows = [
        ("crm", "M1", 10, 10), ("pos", "O1", 11, 10), ("app", "E3", 30, 10), ("app", "E4", 40, 10),
        ("crm", "M2", 20, 5), ("pos", "O2", 21, 5), ("pos", "O5", 5, 5),
    ]
    oneid_map, registry, changes = run(spark, cluster_rows, RUN1_IDENTS, second[0], second[1], "r3", T3)
    assert change_rows(changes) == [("removed", "oid_0000000000000001", ("oid_0000000000000001",), 0, ())]
    assert ("oid_0000000000000001", "retired", "r2", "r3", None) in registry_rows(registry)


def test_unchanged_rerun_changes_nothing(spark, second):
    oneid_map, registry, changes = second
    again = run(spark, [
        ("crm", "M1", 10, 10), ("pos", "O1", 11, 10), ("app", "E3", 30, 10), ("app", "E4", 40, 10),
        ("crm", "M2", 20, 5), ("pos", "O2", 21, 5), ("pos", "O5", 5, 5), ("app", "E6", 1, 1),
    ], RUN1_IDENTS, oneid_map, registry, "r3", T3)
    assert as_dict(again[0]) == as_dict(oneid_map)
    assert change_rows(again[2]) == []
    assert registry_rows(again[1]) == registry_rows(registry)


def test_a_rebuild_from_scratch_names_unchanged_persons_as_before(spark, first):
    rebuilt = run(spark, RUN1_CLUSTERS, RUN1_IDENTS, None, None, "rebuild", T3)
    assert as_dict(rebuilt[0]) == as_dict(first[0])
