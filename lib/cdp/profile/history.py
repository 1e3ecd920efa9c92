"""Membership history as slowly changing dimension type 2: when a person entered and left a tag value
or an audience. One row per stay: (keys…, entered_on, exited_on), exited_on null while it lasts.

Chosen over daily snapshots: a snapshot keeps every membership every day (persons × tags × days),
while a stay is written once when it starts and once when it ends.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

HISTORY_COLUMNS = "entered_on date, exited_on date"


def survivors(registry: DataFrame) -> dict[str, str | None]:
    """Each retired one_id → the active one_id now holding its records (merges followed to the end of
    the chain), or None when its records are gone."""
    retired = {r["one_id"]: r["merged_into"] for r in
               registry.where(F.col("status") == "retired").select("one_id", "merged_into").collect()}
    resolved: dict[str, str | None] = {}
    for start in retired:
        current, seen = start, {start}
        while current in retired and retired[current] is not None and retired[current] not in seen:
            current = retired[current]
            seen.add(current)
        resolved[start] = None if current in retired else current
    return resolved


def follow_merges(spark: SparkSession, rows: DataFrame, registry: DataFrame) -> DataFrame:
    """Rows keyed by one_id, moved to the survivor of each retired id; rows of removed persons dropped."""
    mapping = survivors(registry)
    if not mapping:
        return rows
    moves = spark.createDataFrame(list(mapping.items()), "one_id string, _survivor string")
    moved = rows.join(F.broadcast(moves.withColumn("_retired", F.lit(True))), "one_id", "left")
    return (
        moved.where(F.col("_retired").isNull() | F.col("_survivor").isNotNull())
        .withColumn("one_id", F.coalesce("_survivor", "one_id"))
        .drop("_survivor", "_retired")
    )


def next_history(previous: DataFrame, current: DataFrame, keys: list[str], run_date: date) -> DataFrame:
    """The history after this run: stays that continue are untouched, stays not in `current` end on
    the run date (or vanish, if they began on it: a rerun of the same day), new ones begin on it."""
    run = F.lit(run_date).cast("date")
    previous = previous.select(*keys, "entered_on", "exited_on")
    ended_before = previous.where(F.col("exited_on").isNotNull())
    open_ = previous.where(F.col("exited_on").isNull()).groupBy(*keys).agg(F.min("entered_on").alias("entered_on"))
    now = current.select(*keys).distinct()
    staying = open_.join(now, keys, "left_semi").withColumn("exited_on", F.lit(None).cast("date"))
    leaving = (open_.join(now, keys, "left_anti").where(F.col("entered_on") < run)
               .withColumn("exited_on", run))
    entering = now.join(open_, keys, "left_anti").select(*keys, run.alias("entered_on"),
                                                         F.lit(None).cast("date").alias("exited_on"))
    return ended_before.unionByName(staying).unionByName(leaving).unionByName(entering)
