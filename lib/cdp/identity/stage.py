"""The identity stage: hygiene, the record–identifier graph, components, over-merge guards, stable one_ids.

Tables written (all replaced atomically each run, except identity.changes which grows):
  identity.suspicious_identifiers  values refused as links before the graph, with the evidence
  identity.violations              record–identifier links the guards refused after the graph
  identity.registry                every one_id ever issued: active or retired (and merged into what)
  identity.changes                 new / merge / split / removed, per run, with their causes
  identity.oneid_map               (source, record_key) -> one_id for every silver record
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import reduce
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.cleanse.entities import ENTITIES
from cdp.cleanse.silver import IDENTIFIERS, silver_table
from cdp.config import IdentityConfig, Settings
from cdp.identity.components import connected_components
from cdp.identity.guards import split_components
from cdp.identity.hygiene import apply_hygiene, summarise_refusals
from cdp.identity.probabilistic import LINKS, WEIGHTS, ProbabilisticLinks, probabilistic_links
from cdp.identity.registry import assign_stable_ids
from cdp.lakehouse import overwrite_table, replace_where, table_exists

log = logging.getLogger(__name__)

ONEID_MAP = "identity.oneid_map"
REFUSED = "identity.suspicious_identifiers"
VIOLATIONS = "identity.violations"
REGISTRY = "identity.registry"
CHANGES = "identity.changes"


@dataclass
class IdentityResult:
    records: int
    one_ids: int
    edges: int
    refused_values: int
    violations: int
    changes: dict[str, int]
    largest_one_id: int
    engine: str
    probabilistic_links: int = 0
    candidate_pairs: int = 0


def record_vertex(source: Column, record_key: Column) -> Column:
    """A record's vertex id: a 64-bit hash of (source, record_key), domain-separated from identifiers."""
    return F.xxhash64(F.lit("record"), source, record_key)


def identifier_vertex(id_type: Column, id_value: Column) -> Column:
    """An identifier's vertex id: a 64-bit hash of `id_type:value`, the same in every run."""
    return F.xxhash64(F.lit("identifier"), F.concat_ws(":", id_type, id_value))


def all_records(spark: SparkSession, settings: Settings) -> DataFrame:
    """Every silver record (with or without identifiers), with when it happened: each gets a one_id."""
    frames = []
    for entity_name in sorted({s.entity for s in settings.sources.sources.values()}):
        entity = ENTITIES[entity_name]
        table = silver_table(entity)
        if table_exists(spark, table):
            seen = F.col(entity.time_field) if entity.time_field else F.lit(None).cast("timestamp")
            frames.append(spark.table(table).select("source", "record_key", seen.cast("timestamp").alias("seen_at")))
    if not frames:
        raise RuntimeError("identity: no silver tables found. Fix: run `cdp run --stage silver` first.")
    return reduce(DataFrame.unionByName, frames)


def table_version(spark: SparkSession, name: str) -> int:
    """The Delta version of a table, -1 when it does not exist yet."""
    if not table_exists(spark, name):
        return -1
    return int(spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"])


def resolve_persons(
    records: DataFrame, identifiers: DataFrame, config: IdentityConfig,
    linked: Callable[[DataFrame], DataFrame] | None = None,
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame, str]:
    """Records (source, record_key) grouped into persons by their identifiers (source, record_key,
    id_type, id_value): (clusters, usable identifiers, refused values, refused edges, engine).

    `linked`, given the values hygiene refused, returns more identifier rows (the probabilistic
    engine's links); they enter the graph and the guards like any other identifier."""
    records = records.select("source", "record_key", record_vertex(F.col("source"), F.col("record_key")).alias("rid"))
    usable, refused = apply_hygiene(identifiers, config)
    if linked is not None:
        refused = refused.persist()
        usable = usable.unionByName(linked(refused).select(*usable.columns))
    usable = usable.withColumn("rid", record_vertex(F.col("source"), F.col("record_key"))).persist()

    edges = usable.select(F.col("rid").alias("src"), identifier_vertex(F.col("id_type"), F.col("id_value")).alias("dst"))
    vertices = records.select(F.col("rid").alias("id")).unionByName(edges.select(F.col("dst").alias("id"))).distinct()
    components, engine = connected_components(vertices, edges, config.components)
    log.info("identity: connected components computed with the %s engine", engine)

    labelled = records.join(components.withColumnRenamed("id", "rid"), "rid").persist()
    split = split_components(
        usable.join(labelled.select("rid", "component"), "rid").select("component", "rid", "id_type", "id_value"), config
    ).persist()
    regrouped = split.where(F.col("id_type").isNull()).select("rid", "cluster")
    clusters = labelled.join(regrouped, "rid", "left").select(
        "source", "record_key", "rid", F.coalesce("cluster", "component").alias("cluster")
    )
    refused_edges = split.where(F.col("id_type").isNotNull()).join(labelled.select("rid", "source", "record_key"), "rid").select(
        "source", "record_key", "id_type", "id_value", "reason", "conflict"
    )
    return clusters, usable.drop("rid"), refused, refused_edges, engine


def build_identity(spark: SparkSession, settings: Settings, run_id: str = "adhoc") -> IdentityResult:
    config = settings.identity
    found: list[ProbabilisticLinks] = []

    def linked(refused: DataFrame) -> DataFrame:
        found.append(probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, run_id))
        found[0].links = found[0].links.checkpoint()
        return found[0].edges

    clusters, usable, refused, refused_edges, engine = resolve_persons(
        all_records(spark, settings), spark.table(IDENTIFIERS), config, linked if config.probabilistic.enabled else None
    )
    # Materialised before any identity table is replaced: the plan reads the previous map and registry.
    clusters = clusters.checkpoint()
    refused_edges = refused_edges.checkpoint()
    previous = spark.table(ONEID_MAP) if table_exists(spark, ONEID_MAP) else None
    registry = spark.table(REGISTRY) if table_exists(spark, REGISTRY) else None
    basis = table_version(spark, ONEID_MAP)
    stable = assign_stable_ids(
        clusters, previous, registry, usable, refused_edges.select("source", "record_key", "id_type", "id_value"), run_id,
        datetime.now(timezone.utc).replace(tzinfo=None), basis,
    )
    new_map, new_registry, changes = (stable.oneid_map.checkpoint(), stable.registry.checkpoint(), stable.changes.checkpoint())

    if found:
        overwrite_table(found[0].links, LINKS, "Probabilistic links: each record on each side, the score and the field comparisons")
        overwrite_table(found[0].weights, WEIGHTS, "The probabilistic model: m, u and the match weight of each comparison level")
    else:
        for table in (LINKS, WEIGHTS):
            if table_exists(spark, table):  # the engine was switched off: its old links no longer hold
                spark.sql(f"DELETE FROM {table}")
    overwrite_table(summarise_refusals(refused).withColumn("run_id", F.lit(run_id)), REFUSED,
                    "Identifier values refused as links before the graph: blocklisted or shared by strangers")
    violations = refused_edges.join(new_map, ["source", "record_key"]).select(
        F.lit(run_id).alias("run_id"), "one_id", "source", "record_key", "id_type", "id_value", "reason", "conflict"
    )
    overwrite_table(violations, VIOLATIONS, "Record-identifier links refused by the over-merge guards, and why")
    # Registry, then changes, then the map: a crash between them is repaired by the next run, which
    # recomputes the same decisions against the same previous map (changes are keyed by its version).
    overwrite_table(new_registry, REGISTRY, "Every one_id ever issued: active, or retired and merged into which")
    replace_where(changes, CHANGES, f"basis_version = {basis}")
    overwrite_table(new_map, ONEID_MAP, "Every silver record's OneID: (source, record_key) -> one_id")

    stats = spark.table(ONEID_MAP).groupBy("one_id").count().agg(
        F.sum("count").alias("records"), F.count("*").alias("one_ids"), F.max("count").alias("largest")
    ).first()
    kinds = {r["kind"]: r["n"] for r in changes.groupBy("kind").agg(F.count("*").alias("n")).collect()}
    result = IdentityResult(
        records=int(stats["records"] or 0),
        one_ids=int(stats["one_ids"] or 0),
        edges=usable.count(),
        refused_values=spark.table(REFUSED).count(),
        violations=spark.table(VIOLATIONS).count(),
        changes=kinds,
        largest_one_id=int(stats["largest"] or 0),
        engine=engine,
        probabilistic_links=spark.table(LINKS).select("link_id").distinct().count() if found else 0,
        candidate_pairs=found[0].result.candidates if found and found[0].result else 0,
    )
    # What resolve_persons and assign_stable_ids cached is spent: everything published is in Delta.
    spark.catalog.clearCache()
    return result
