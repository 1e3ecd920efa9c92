"""Stable OneIDs: carry one_id assignments across runs and record every change.

Each run recomputes the persons (clusters of records) from all of silver, then names them from the
previous run's assignment (identity.oneid_map) and the registry of every one_id ever issued
(identity.registry):

* each previous one_id is kept by the cluster holding most of its records (ties: the lower
  cluster label), so new data for a person keeps the person's id and, when a person splits, the
  larger part keeps the id;
* a cluster keeping several previous ids is a merge: the oldest id survives (registry creation
  time, then the id), the others are retired with `merged_into`;
* a cluster keeping none gets a new id, 'oid_' + the hex of its smallest record vertex, so a full
  rebuild from scratch names every unchanged person as before; a retired or still-used id is never
  issued again.

Every new id, merge, split and removal is a row of identity.changes, with the identifier values
that caused it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

REGISTRY_SCHEMA = (
    "one_id string, status string, created_run string, created_at timestamp, "
    "retired_run string, retired_at timestamp, merged_into string"
)
CHANGES_SCHEMA = (
    "run_id string, changed_at timestamp, kind string, one_id string, old_ids array<string>, "
    "records long, causes array<string>, basis_version long"
)
MAX_CAUSES = 20


@dataclass
class StableIds:
    oneid_map: DataFrame  # source, record_key, one_id (and component, when the clusters carry it)
    registry: DataFrame  # REGISTRY_SCHEMA
    changes: DataFrame  # CHANGES_SCHEMA


def oid(anchor: Column) -> Column:
    return F.concat(F.lit("oid_"), F.lower(F.lpad(F.hex(anchor), 16, "0")))


def _empty(spark: SparkSession, schema: str) -> DataFrame:
    return spark.createDataFrame([], schema)


@dataclass
class Inheritance:
    """How this run's clusters relate to the previous run's one_ids."""

    overlap: DataFrame  # prev_id, cluster, n: records of each previous id in each cluster
    keepers: DataFrame  # prev_id, cluster: the cluster that keeps each previous id
    survivors: DataFrame  # cluster, survivor, kept_ids: per cluster keeping ids, the id it goes on with
    gone: DataFrame  # prev_id: previous ids no cluster keeps (all their records are gone)


def assign_stable_ids(
    clusters: DataFrame,
    previous: DataFrame | None,
    registry: DataFrame | None,
    identifiers: DataFrame,
    refused_edges: DataFrame,
    run_id: str,
    now: datetime,
    basis_version: int,
) -> StableIds:
    """Name this run's clusters.

    clusters:      source, record_key, rid (record vertex), cluster (label) — every record
    previous:      source, record_key, one_id — the last published assignment, or None
    registry:      REGISTRY_SCHEMA, or None
    identifiers:   source, record_key, id_type, id_value — the links used this run
    refused_edges: source, record_key, id_type, id_value — links the guards refused this run
    """
    spark = clusters.sparkSession
    previous = (previous.select("source", "record_key", "one_id") if previous is not None
                else _empty(spark, "source string, record_key string, one_id string"))
    registry = registry if registry is not None else _empty(spark, REGISTRY_SCHEMA)
    run, at = F.lit(run_id), F.lit(now).cast("timestamp")

    current = clusters.join(previous.withColumnRenamed("one_id", "prev_id"), ["source", "record_key"], "left").persist()
    inheritance = inherit_ids(current, previous, registry, at)
    named = name_clusters(clusters, inheritance, previous, registry, run).persist()
    # the map keeps each record's graph component (when given): what a later run over part of the graph starts from
    component = ["component"] if "component" in clusters.columns else []
    oneid_map = current.join(named.select("cluster", "one_id"), "cluster").select("source", "record_key", "one_id", *component)
    changes = (
        record_changes(current, named, inheritance, identifiers, refused_edges)
        .select(run.alias("run_id"), at.alias("changed_at"), "kind", "one_id", "old_ids", "records", "causes",
                F.lit(basis_version).cast("long").alias("basis_version"))
    )
    return StableIds(oneid_map=oneid_map, registry=next_registry(registry, named, inheritance, run, at), changes=changes)


def inherit_ids(current: DataFrame, previous: DataFrame, registry: DataFrame, at: Column) -> Inheritance:
    """Each previous one_id is kept by the cluster holding most of its records (ties: the lower
    label); of the ids a cluster keeps, the oldest survives (registry creation time, then the id)."""
    overlap = current.where(F.col("prev_id").isNotNull()).groupBy("prev_id", "cluster").agg(F.count("*").alias("n"))
    by_share = Window.partitionBy("prev_id").orderBy(F.col("n").desc(), F.col("cluster"))
    keepers = overlap.withColumn("rank", F.row_number().over(by_share)).where("rank = 1").select("prev_id", "cluster")
    created = registry.select(F.col("one_id").alias("prev_id"), "created_at")
    kept = keepers.join(created, "prev_id", "left").withColumn("created_at", F.coalesce("created_at", at))
    survivors = kept.groupBy("cluster").agg(
        F.min_by("prev_id", F.struct("created_at", "prev_id")).alias("survivor"),
        F.sort_array(F.collect_list("prev_id")).alias("kept_ids"),
    )
    gone = previous.select(F.col("one_id").alias("prev_id")).distinct().join(keepers, "prev_id", "left_anti")
    return Inheritance(overlap, keepers, survivors, gone)


def name_clusters(clusters: DataFrame, inheritance: Inheritance, previous: DataFrame, registry: DataFrame,
                  run: Column) -> DataFrame:
    """cluster, records, one_id, survivor, kept_ids: the surviving id, else 'oid_' + the hex of the
    smallest record vertex — unless that id was ever used, then one derived from the run."""
    sizes = clusters.groupBy("cluster").agg(F.min("rid").alias("anchor"), F.count("*").alias("records"))
    # Any id the registry holds is taken: a run over part of the graph sees only part of the map.
    taken = (
        registry.select("one_id")
        .unionByName(previous.select("one_id")).distinct()
        .withColumn("taken", F.lit(True))
    )
    return (
        sizes.join(inheritance.survivors, "cluster", "left")
        .withColumn("candidate", oid(F.col("anchor")))
        .join(taken.withColumnRenamed("one_id", "candidate"), "candidate", "left")
        .withColumn(
            "one_id",
            F.coalesce(
                F.col("survivor"),
                F.when(F.col("taken").isNull(), F.col("candidate")).otherwise(oid(F.xxhash64(F.lit("oid"), "anchor", run))),
            ),
        )
        .select("cluster", "records", "one_id", "survivor", "kept_ids")
    )


def record_changes(current: DataFrame, named: DataFrame, inheritance: Inheritance, identifiers: DataFrame,
                   refused_edges: DataFrame) -> DataFrame:
    """kind, one_id, old_ids, records, causes: every new id, merge, split and removal, with the
    identifier values that bridged a merge and the links refused on a person that split."""
    overlap, keepers = inheritance.overlap, inheritance.keepers
    empty = F.array().cast("array<string>")
    origins = current.select("source", "record_key", "cluster", F.coalesce("prev_id", F.lit("(new)")).alias("origin"))
    bridging = (
        identifiers.join(origins, ["source", "record_key"])
        .groupBy("cluster", "id_type", "id_value")
        .agg(F.count_distinct("origin").alias("origins"))
        .where("origins > 1")
        .groupBy("cluster")
        .agg(F.slice(F.sort_array(F.collect_list(F.concat_ws(":", "id_type", "id_value"))), 1, MAX_CAUSES).alias("causes"))
    )
    # the links the guards refused on records of each previous person: why it split
    refusals = (
        refused_edges.join(origins, ["source", "record_key"])
        .groupBy(F.col("origin").alias("prev_id"))
        .agg(F.collect_set(F.concat_ws(":", "id_type", "id_value")).alias("refused"))
    )
    had_previous = overlap.select("cluster").distinct().withColumn("had_previous", F.lit(True))
    new_rows = (
        named.join(had_previous, "cluster", "left").where(F.col("had_previous").isNull())
        .select(F.lit("new").alias("kind"), "one_id", empty.alias("old_ids"), "records", empty.alias("causes"))
    )
    merge_rows = (
        named.where(F.size("kept_ids") > 1).join(bridging, "cluster", "left")
        .select(F.lit("merge").alias("kind"), "one_id", F.col("kept_ids").alias("old_ids"), "records",
                F.coalesce("causes", empty).alias("causes"))
    )
    split_rows = (
        overlap.join(keepers.withColumnRenamed("cluster", "keeper"), "prev_id")
        .where(F.col("cluster") != F.col("keeper"))
        .join(refusals, "prev_id", "left")
        .groupBy("cluster").agg(
            F.sort_array(F.collect_list("prev_id")).alias("old_ids"),
            F.slice(F.sort_array(F.array_distinct(F.flatten(F.collect_list(F.coalesce("refused", empty))))), 1, MAX_CAUSES).alias("causes"),
        )
        .join(named, "cluster")
        .select(F.lit("split").alias("kind"), "one_id", "old_ids", "records", "causes")
    )
    removed_rows = inheritance.gone.select(
        F.lit("removed").alias("kind"), F.col("prev_id").alias("one_id"), F.array("prev_id").alias("old_ids"),
        F.lit(0).cast("long").alias("records"), empty.alias("causes"),
    )
    return new_rows.unionByName(merge_rows).unionByName(split_rows).unionByName(removed_rows)


def with_cause(changes: DataFrame, cause: str) -> DataFrame:
    """Every merge and split of the run also names `cause` first (a new model version, say)."""
    named = F.slice(F.concat(F.array(F.lit(cause)), F.array_remove("causes", cause)), 1, MAX_CAUSES)
    return changes.withColumn("causes", F.when(F.col("kind").isin("merge", "split"), named).otherwise(F.col("causes")))


def next_registry(registry: DataFrame, named: DataFrame, inheritance: Inheritance, run: Column, at: Column) -> DataFrame:
    """The registry after this run: ids merged away or gone are retired, new ids are issued, and ids
    of a previous map the registry never saw are entered."""
    retired_by_merge = named.where(F.size("kept_ids") > 1).select(
        F.explode("kept_ids").alias("one_id"), F.col("survivor").alias("merged_into")
    ).where(F.col("one_id") != F.col("merged_into"))
    retired = retired_by_merge.unionByName(
        inheritance.gone.select(F.col("prev_id").alias("one_id"), F.lit(None).cast("string").alias("merged_into"))
    )
    issued = named.where(F.col("survivor").isNull()).select("one_id").withColumn("issued", F.lit(True))
    marked = retired.withColumn("retire", F.lit(True))
    now_retired = F.col("retire").isNotNull()
    carried = (
        registry.join(marked.withColumnRenamed("merged_into", "merged_now"), "one_id", "left")
        .join(issued, "one_id", "left")
        .where(F.col("issued").isNull())
        .select(
            "one_id",
            F.when(now_retired, F.lit("retired")).otherwise(F.col("status")).alias("status"),
            "created_run", "created_at",
            F.when(now_retired, run).otherwise(F.col("retired_run")).alias("retired_run"),
            F.when(now_retired, at).otherwise(F.col("retired_at")).alias("retired_at"),
            F.when(now_retired, F.col("merged_now")).otherwise(F.col("merged_into")).alias("merged_into"),
        )
    )
    # ids in the previous map the registry never saw (a map older than the registry)
    unregistered = (
        named.where(F.col("survivor").isNotNull()).select(F.col("survivor").alias("one_id"), F.lit(None).cast("string").alias("merged_into"))
        .unionByName(retired)
        .join(registry.select("one_id"), "one_id", "left_anti")
        .join(marked.select("one_id", "retire"), "one_id", "left")
        .select(
            "one_id", F.when(now_retired, F.lit("retired")).otherwise(F.lit("active")).alias("status"),
            F.lit(None).cast("string").alias("created_run"), F.lit(None).cast("timestamp").alias("created_at"),
            F.when(now_retired, run).alias("retired_run"), F.when(now_retired, at).alias("retired_at"), "merged_into",
        )
    )
    fresh = issued.select(
        "one_id", F.lit("active").alias("status"), run.alias("created_run"), at.alias("created_at"),
        F.lit(None).cast("string").alias("retired_run"), F.lit(None).cast("timestamp").alias("retired_at"),
        F.lit(None).cast("string").alias("merged_into"),
    )
    return carried.unionByName(unregistered).unionByName(fresh)
