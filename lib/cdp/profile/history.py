"""Membership history as slowly changing dimension type 2: when a person entered and left a tag value
or an audience. One row per stay: (keys…, entered_on, exited_on), exited_on null while it lasts.

Chosen over daily snapshots: a snapshot keeps every membership every day (persons × tags × days),
while a stay is written once when it starts and once when it ends. A run rewrites only the rows of
the persons whose stays change (gold's write_history).
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

HISTORY_COLUMNS = "entered_on date, exited_on date"


def survivors(registry: DataFrame, ids: DataFrame | None = None) -> dict[str, str | None]:
    """Each retired one_id → the active one_id now holding its records (merges followed to the end of
    the chain), or None when its records are gone. With `ids` (one_id): only the retired ones among
    them, and the ids their chains pass through — what a table holding those ids needs, without
    collecting every id ever retired."""
    rows = registry.where(F.col("status") == "retired").select("one_id", "merged_into")
    if ids is None:
        retired = {r["one_id"]: r["merged_into"] for r in rows.collect()}
    else:
        retired = {}
        found = rows.join(ids.select("one_id").distinct(), "one_id", "left_semi").collect()
        while found:
            retired.update({r["one_id"]: r["merged_into"] for r in found})
            nxt = sorted({r["merged_into"] for r in found if r["merged_into"] is not None} - set(retired))
            found = rows.where(F.col("one_id").isin(*nxt)).collect() if nxt else []
    resolved: dict[str, str | None] = {}
    for start in retired:
        current, seen = start, {start}
        while current in retired and retired[current] is not None and retired[current] not in seen:
            current = retired[current]
            seen.add(current)
        resolved[start] = None if current in retired else current
    return resolved


def follow_merges(spark: SparkSession, rows: DataFrame, moves: dict[str, str | None]) -> DataFrame:
    """Rows keyed by one_id, moved to the survivor of each retired id (`moves`, from survivors);
    rows of removed persons dropped."""
    if not moves:
        return rows
    table = spark.createDataFrame(list(moves.items()), "one_id string, _survivor string")
    moved = rows.join(F.broadcast(table.withColumn("_retired", F.lit(True))), "one_id", "left")
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
