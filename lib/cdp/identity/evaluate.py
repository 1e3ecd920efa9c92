"""Pairwise precision, recall and F1 of the OneID assignment against a ground truth."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


class PairMetrics:
    """Precision, recall and F1 from pair counts (`predicted_pairs`, `true_pairs`, `true_positive_pairs`)."""

    predicted_pairs: int
    true_pairs: int
    true_positive_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class PairwiseScores(PairMetrics):
    """Counts of record pairs: predicted together, truly together, and both."""

    records: int
    truth_records_unmatched: int
    predicted_pairs: int
    true_pairs: int
    true_positive_pairs: int
    persons: int
    one_ids: int
    over_merged_one_ids: int = 0  # one_ids holding records of more than one true person
    split_persons: int = 0  # true persons whose records are spread over more than one one_id
    largest_one_id: int = 0  # records in the biggest one_id
    largest_person: int = 0  # records of the biggest true person


def _pairs(df: DataFrame, *keys: str) -> DataFrame:
    """Sum over groups of n·(n−1)/2: the number of record pairs sharing the keys."""
    return df.groupBy(*keys).count().agg(F.sum(F.col("count") * (F.col("count") - 1) / 2).cast("long").alias("pairs"))


def pairwise_scores(assignment: DataFrame, truth: DataFrame) -> PairwiseScores:
    """`assignment`: (source, record_key, one_id); `truth`: (source, record_key, person_id).

    Only records present in both are scored; truth records without an assignment
    (those quarantined before identity) are counted apart.
    """
    joined = assignment.join(truth, ["source", "record_key"]).persist()
    predicted = _pairs(joined, "one_id").collect()[0]["pairs"] or 0
    actual = _pairs(joined, "person_id").collect()[0]["pairs"] or 0
    both = _pairs(joined, "one_id", "person_id").collect()[0]["pairs"] or 0
    stats = joined.agg(
        F.count("*").alias("records"), F.count_distinct("person_id").alias("persons"),
        F.count_distinct("one_id").alias("one_ids"),
    ).collect()[0]
    per_one_id = joined.groupBy("one_id").agg(F.count("*").alias("n"), F.count_distinct("person_id").alias("k")).agg(
        F.sum((F.col("k") > 1).cast("int")).alias("over_merged"), F.max("n").alias("largest")
    ).first()
    per_person = joined.groupBy("person_id").agg(F.count("*").alias("n"), F.count_distinct("one_id").alias("k")).agg(
        F.sum((F.col("k") > 1).cast("int")).alias("split"), F.max("n").alias("largest")
    ).first()
    unmatched = truth.join(assignment, ["source", "record_key"], "left_anti").count()
    joined.unpersist()
    return PairwiseScores(
        records=stats["records"], truth_records_unmatched=unmatched, predicted_pairs=int(predicted),
        true_pairs=int(actual), true_positive_pairs=int(both), persons=stats["persons"], one_ids=stats["one_ids"],
        over_merged_one_ids=int(per_one_id["over_merged"] or 0), split_persons=int(per_person["split"] or 0),
        largest_one_id=int(per_one_id["largest"] or 0), largest_person=int(per_person["largest"] or 0),
    )


def read_truth(spark: SparkSession, truth_dir: str) -> DataFrame:
    """The generator's truth/records.csv (source, record_key, person_id); empty keys stay empty strings."""
    path = Path(truth_dir) / "records.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ground truth here. Fix: pass the folder holding records.csv (cdp generate writes DIR/truth).")
    return spark.read.option("header", True).schema("source string, record_key string, person_id string").csv(str(path))


def write_scores(scores: PairwiseScores, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(scores.as_dict(), indent=2) + "\n", encoding="utf-8")
    return target
