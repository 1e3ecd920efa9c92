"""The stability measure of the OneID benchmark, on hand-made before/after maps."""

from __future__ import annotations

from cdp_dev.bench.oneid import stability


def frame(spark, rows):
    return spark.createDataFrame(rows, "source string, record_key string, one_id string")


def test_stability_counts_untouched_persons_merges_and_split_parts(spark):
    before = frame(spark, [
        ("s", "x1", "X"), ("s", "x2", "X"),                     # untouched, keeps X
        ("s", "u1", "U"),                                       # untouched, but renamed: a failure
        ("s", "a1", "A"), ("s", "b1", "B"), ("s", "b2", "B"),   # A and B merge into B through new n1
        ("s", "c1", "C"), ("s", "c2", "C"), ("s", "c3", "C"),   # C loses c3 to D
        ("s", "d1", "D"),
    ])
    after = frame(spark, [
        ("s", "x1", "X"), ("s", "x2", "X"),
        ("s", "u1", "U2"),
        ("s", "a1", "B"), ("s", "b1", "B"), ("s", "b2", "B"), ("s", "n1", "B"),
        ("s", "c1", "C"), ("s", "c2", "C"), ("s", "c3", "D"), ("s", "d1", "D"),
    ])
    result = stability(before, after)
    assert result == {
        "persons_before": 6,
        "untouched": 4,            # X, U, C, D: no new record in the one_ids their records sit in
        "untouched_kept_one_id": 2,   # X and D; U was renamed, and C's c3 left it
        "untouched_kept_share": 0.5,
        "evenly_split_persons": [],
        "merges_observed": [("B", ("A", "B"))],
        "moves_observed": [("D", "C")],
    }


def test_a_person_a_new_record_reaches_through_a_shared_value_is_touched(spark):
    """A new family member's record with the family phone reaches the person who held the phone alone
    (the veto may split them): touched, though no new record sits in their one_ids afterwards. A
    value refused before and after (a walk-in phone) reaches nobody."""
    before = frame(spark, [("s", "f1", "F"), ("s", "f2", "F"), ("s", "f3", "F"), ("s", "w1", "W")])
    after = frame(spark, [("s", "f1", "F"), ("s", "f2", "F2"), ("s", "f3", "F"), ("s", "w1", "W"),
                          ("s", "n1", "N"), ("s", "n2", "M")])
    identifiers = spark.createDataFrame([
        ("s", "f2", "phone", "+8613900000001"), ("s", "n1", "phone", "+8613900000001"),  # the family phone
        ("s", "w1", "phone", "+8613900000009"), ("s", "n2", "phone", "+8613900000009"),  # a walk-in phone
    ], "source string, record_key string, id_type string, id_value string")
    inert = spark.createDataFrame([("phone", "+8613900000009")], "id_type string, id_value string")
    result = stability(before, after, identifiers, inert)
    assert (result["untouched"], result["untouched_kept_one_id"], result["moves_observed"]) == (1, 1, [("F2", "F")])
    unaware = stability(before, after)  # by shared one_ids alone, F looks untouched and split without a cause
    assert (unaware["untouched"], unaware["untouched_kept_one_id"]) == (2, 1)
