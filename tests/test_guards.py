"""Over-merge guards and data-driven suspicion, with explicit expected groups and refusals."""

from __future__ import annotations

from cdp.conf.identity import IdentityConfig
from cdp.identity.guards import Attributes, DroppedEdge, Limits, split_components, split_greedy
from cdp.identity.hygiene import apply_hygiene, shared_values

LIMITS = Limits(
    priority={"id_card": 1, "member_id": 2, "buyer_account": 4, "phone": 6, "android_id": 9},
    max_per_person={"id_card": 1, "member_id": 3, "buyer_account": 4, "phone": 2, "android_id": 5},
    max_records=100,
)


def test_a_family_phone_does_not_join_two_id_cards():
    """A (records 1, 3, 4, 5) and B (record 2) share phone P; B's 身份证 differs, so the phone link to B is refused."""
    edges = [
        (1, "id_card", "110101199001010011"), (1, "phone", "P"), (1, "member_id", "MA"),
        (2, "id_card", "110101195001010022"), (2, "phone", "P"), (2, "member_id", "MB"),
        (3, "phone", "P"), (4, "phone", "P"), (5, "member_id", "MA"),
    ]
    groups, dropped = split_greedy(edges, LIMITS)
    assert groups == {1: 1, 2: 2, 3: 1, 4: 1, 5: 1}
    assert dropped == [DroppedEdge(2, "phone", "P", "id_card: the person would hold 2 distinct values, at most 1",
                                   ("110101195001010022", "110101199001010011"))]


def test_weakest_links_go_first_when_a_person_would_hold_three_phones():
    """Account T links records 1-2 (phones P1, P2); device D then reaches record 3 with a third phone: refused."""
    edges = [
        (1, "buyer_account", "T"), (1, "phone", "P1"), (2, "buyer_account", "T"), (2, "phone", "P2"),
        (3, "phone", "P3"), (3, "android_id", "D"), (1, "android_id", "D"),
    ]
    groups, dropped = split_greedy(edges, LIMITS)
    assert groups == {1: 1, 2: 1, 3: 3}
    assert dropped == [DroppedEdge(3, "android_id", "D", "phone: the person would hold 3 distinct values, at most 2",
                                   ("P1", "P2", "P3"))]


def test_the_group_with_more_records_keeps_a_contested_value_and_ties_go_to_the_lower_record():
    edges = [
        (7, "id_card", "X"), (8, "id_card", "X"),            # 7+8 are one person (two records)
        (9, "id_card", "Y"),
        (7, "phone", "P"), (9, "phone", "P"),
        (20, "id_card", "U"), (21, "id_card", "V"), (21, "phone", "Q"), (20, "phone", "Q"),
    ]
    groups, dropped = split_greedy(edges, LIMITS)
    assert groups == {7: 7, 8: 7, 9: 9, 20: 20, 21: 21}
    assert sorted(dropped) == [
        DroppedEdge(9, "phone", "P", "id_card: the person would hold 2 distinct values, at most 1", ("X", "Y")),
        DroppedEdge(21, "phone", "Q", "id_card: the person would hold 2 distinct values, at most 1", ("U", "V")),
    ]


VETO_LIMITS = Limits(priority=LIMITS.priority, max_per_person=LIMITS.max_per_person, max_records=100, veto_below=-4.0)


def test_a_family_phone_without_id_cards_is_vetoed_by_the_attributes():
    """Mother: CRM record 1 (attribute row 10) and her order 2 (row 10 too: same attributes); son: orders 3
    and 4 on his own account (row 30). All carry phone P. Rows 10 and 30 contradict on name and birth
    date (weight -15.5). The son's group is the larger, so it holds the phone first; the mother's
    records are refused by it, and record 2 joins record 1, the holder it agrees with: two persons."""
    edges = [(1, "member_id", "M"), (1, "phone", "P"), (2, "phone", "P"),
             (3, "buyer_account", "T"), (3, "phone", "P"), (4, "buyer_account", "T"), (4, "phone", "P")]
    attributes = Attributes.of([(1, 10), (2, 10), (3, 30), (4, 30)], [(10, 30, "phone", -15.5, ["name", "birth_date"])])
    groups, dropped = split_greedy(edges, VETO_LIMITS, attributes)
    assert groups == {1: 1, 2: 1, 3: 3, 4: 3}
    reason = "veto: name, birth_date contradict (match weight -15.5 < -4): kept apart as a household"
    assert sorted(dropped) == [DroppedEdge(1, "phone", "P", reason, ("name", "birth_date")),
                               DroppedEdge(2, "phone", "P", reason, ("name", "birth_date"))]


def test_one_agreeing_pair_across_the_groups_lets_a_weak_link_join():
    """The person's orders (row 20: receiver name a nickname) contradict her CRM row 10, but her second
    CRM record (row 11) agrees with row 20 above the threshold: one agreeing pair is enough."""
    edges = [(1, "member_id", "M"), (1, "phone", "P"), (5, "member_id", "M"), (5, "phone", "P"), (2, "phone", "P")]
    attributes = Attributes.of([(1, 10), (5, 11), (2, 20)],
                               [(10, 20, "phone", -6.0, ["name"]), (11, 20, "phone", 3.5, []), (10, 11, "phone", 9.0, [])])
    groups, dropped = split_greedy(edges, VETO_LIMITS, attributes)
    assert groups == {1: 1, 2: 1, 5: 1}
    assert dropped == []


def test_records_with_nothing_to_compare_stay_apart_from_a_household():
    """Phone P: the mother's CRM record 1 (row 10) and her son's order 3 (row 30) contradict; the son's
    app events 5 and 6 (one device, no name) carry P too. Two persons hold P, so nothing says whose
    the events are: they stay a group of their own, refused with the reason."""
    edges = [(1, "phone", "P"), (3, "phone", "P"), (5, "phone", "P"), (5, "android_id", "D"), (6, "android_id", "D")]
    attributes = Attributes.of([(1, 10), (3, 30)], [(10, 30, "phone", -15.5, ["name", "birth_date", "gender"])])
    groups, dropped = split_greedy(edges, VETO_LIMITS, attributes)
    assert groups == {1: 1, 3: 3, 5: 5, 6: 5}
    assert sorted((d.rid, d.reason) for d in dropped) == [
        (3, "veto: name, birth_date, gender contradict (match weight -15.5 < -4): kept apart as a household"),
        (5, "household: phone is held by 2 persons the veto kept apart, and these records carry nothing that tells which"),
    ]


def test_a_group_with_nothing_to_compare_joins_and_other_types_are_not_vetoed():
    """Record 3 (app events, no attributes) joins by the phone; records 1 and 4 contradict under phone
    but share a member id, which no veto rules: one person."""
    edges = [(1, "phone", "P"), (3, "phone", "P"), (1, "member_id", "M"), (4, "member_id", "M")]
    attributes = Attributes.of([(1, 10), (4, 40)], [(10, 40, "phone", -20.0, ["name", "gender"])])
    groups, dropped = split_greedy(edges, VETO_LIMITS, attributes)
    assert groups == {1: 1, 3: 1, 4: 1}
    assert dropped == []


def test_a_steward_must_not_link_keeps_two_records_apart_even_against_a_must_link():
    """Records 1 and 2 share a member id and a steward's must-link, 3 joins 2 by phone; the steward
    said 1 and 3 are different people: 3 stays apart, whatever links it."""
    edges = [(1, "member_id", "M"), (2, "member_id", "M"), (1, "steward", "sr_1"), (3, "steward", "sr_1"),
             (2, "phone", "P"), (3, "phone", "P")]
    limits = Limits(priority={**LIMITS.priority, "steward": 0}, max_per_person=LIMITS.max_per_person, max_records=100)
    groups, dropped = split_greedy(edges, limits, apart={1: {3: "sr_2"}, 3: {1: "sr_2"}})
    assert groups == {1: 1, 2: 1, 3: 3}
    assert sorted((d.rid, d.id_type, d.reason) for d in dropped) == [
        (3, "phone", "steward: must not link (rule sr_2)"),
        (3, "steward", "steward: must not link (rule sr_2)"),
    ]


def test_the_hard_cap_on_records():
    limits = Limits(priority={"phone": 1}, max_per_person={"phone": 5}, max_records=3)
    groups, dropped = split_greedy([(r, "phone", "P") for r in (1, 2, 3, 4, 5)], limits)
    assert groups == {1: 1, 2: 1, 3: 1, 4: 4, 5: 5}
    assert [(d.rid, d.reason) for d in dropped] == [
        (4, "records: the person would hold 4 records, at most 3"),
        (5, "records: the person would hold 4 records, at most 3"),
    ]


def test_only_components_over_a_limit_are_split(spark, settings):
    labelled = spark.createDataFrame(
        [
            (100, 1, "id_card", "110101199001010011"), (100, 1, "phone", "+8613900000001"),
            (100, 2, "id_card", "110101195001010022"), (100, 2, "phone", "+8613900000001"),
            (200, 3, "phone", "+8613900000003"), (200, 4, "phone", "+8613900000003"),
        ],
        "component long, rid long, id_type string, id_value string",
    )
    rows = sorted((tuple(r) for r in split_components(labelled, settings.identity).collect()), key=repr)
    assert rows == [
        (100, 1, 1, None, None, None, None),
        (100, 2, 2, "phone", "+8613900000001", "id_card: the person would hold 2 distinct values, at most 1",
         ["110101195001010022", "110101199001010011"]),
        (100, 2, 2, None, None, None, None),
    ]


def identifiers(spark, rows):
    return spark.createDataFrame(rows, "source string, record_key string, id_type string, id_value string")


def test_a_phone_seen_with_more_member_ids_than_allowed_is_suspended(spark):
    config = IdentityConfig.model_validate({
        "identifiers": {
            "member_id": {"priority": 2, "max_per_person": 3},
            "phone": {"priority": 6, "max_per_person": 2, "max_shared_by": 3},
        },
        "suspicious": {"anchors": ["member_id"], "max_records": 100},
    })
    store_phone = "+8613911112222"
    rows = [("pos", f"S{i}", "phone", store_phone) for i in range(4)]
    rows += [("pos", f"S{i}", "member_id", f"M{i}") for i in range(4)]          # four different members
    rows += [("pos", "F1", "phone", "+8613933334444"), ("pos", "F1", "member_id", "M7"),
             ("pos", "F2", "phone", "+8613933334444"), ("pos", "F2", "member_id", "M8")]  # a couple: two members
    shared = {(r["id_type"], r["id_value"]): (r["reason"], r["anchor_type"], r["degree"]) for r in shared_values(identifiers(spark, rows), config).collect()}
    assert shared == {("phone", store_phone): ("shared_by_strangers", "member_id", 4)}
    usable, refused = apply_hygiene(identifiers(spark, rows), config)
    assert sorted({r["id_value"] for r in usable.where("id_type = 'phone'").collect()}) == ["+8613933334444"]
    assert refused.count() == 4


def test_a_value_on_too_many_records_is_suspended_whatever_its_anchors(spark):
    config = IdentityConfig.model_validate({
        "identifiers": {"phone": {"priority": 6, "max_per_person": 2}},
        "suspicious": {"anchors": [], "max_records": 3},
    })
    rows = [("pos", f"O{i}", "phone", "+8613955556666") for i in range(4)] + [("pos", "X", "phone", "+8613977778888")]
    shared = [tuple(r) for r in shared_values(identifiers(spark, rows), config).collect()]
    assert shared == [("phone", "+8613955556666", "too_many_records", None, 4)]
