"""Pairwise precision/recall on a hand-counted example."""

from __future__ import annotations

import pytest

from cdp.identity.evaluate import pairwise_scores


def test_pairwise_scores_hand_counted(spark):
    # Truth: A = {1,2,3}, B = {4,5}. Predicted: {1,2}, {3,4,5}; record 6 was quarantined (no one_id).
    truth = spark.createDataFrame(
        [("s", str(k), p) for k, p in [(1, "A"), (2, "A"), (3, "A"), (4, "B"), (5, "B"), (6, "B")]],
        "source string, record_key string, person_id string",
    )
    assignment = spark.createDataFrame(
        [("s", str(k), o) for k, o in [(1, "x"), (2, "x"), (3, "y"), (4, "y"), (5, "y")]],
        "source string, record_key string, one_id string",
    )
    scores = pairwise_scores(assignment, truth)
    # predicted pairs: 1 + 3 = 4; true pairs: 3 + 1 = 4; both: (1,2) and (4,5) = 2
    assert (scores.predicted_pairs, scores.true_pairs, scores.true_positive_pairs) == (4, 4, 2)
    assert (scores.records, scores.truth_records_unmatched, scores.persons, scores.one_ids) == (5, 1, 2, 2)
    assert scores.precision == pytest.approx(0.5)
    assert scores.recall == pytest.approx(0.5)
    assert scores.f1 == pytest.approx(0.5)
    # y holds A's 3 and B's 4, 5: one over-merged one_id; A is split over x and y; B (4, 5 scored) is not.
    assert (scores.over_merged_one_ids, scores.split_persons, scores.largest_one_id, scores.largest_person) == (1, 1, 3, 3)
