"""The identity stage: hygiene on identifiers, the record–identifier graph, components → one_id."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.cleanse.entities import ENTITIES
from cdp.cleanse.silver import IDENTIFIERS, silver_table
from cdp.config import Blocklist, IdentityConfig, Settings
from cdp.identity.components import connected_components
from cdp.lakehouse import overwrite_table, table_exists

log = logging.getLogger(__name__)

ONEID_MAP = "identity.oneid_map"
REFUSED = "identity.suspicious_identifiers"


@dataclass
class IdentityResult:
    records: int
    one_ids: int
    edges: int
    refused_values: int
    engine: str


def record_vertex(source: Column, record_key: Column) -> Column:
    """A record's vertex id: a 64-bit hash of (source, record_key), domain-separated from identifiers."""
    return F.xxhash64(F.lit("record"), source, record_key)


def identifier_vertex(id_type: Column, id_value: Column) -> Column:
    """An identifier's vertex id: a 64-bit hash of `id_type:value`, the same in every run."""
    return F.xxhash64(F.lit("identifier"), F.concat_ws(":", id_type, id_value))


def blocklist_reason(blocklist: Blocklist) -> Column:
    """Why an identifier value must not link records ('blocklisted_value', 'blocklisted_pattern'), else null."""
    reason = F.lit(None).cast("string")
    for id_type, values in blocklist.values.items():
        reason = F.when((F.col("id_type") == id_type) & F.col("id_value").isin(*values), F.lit("blocklisted_value")).otherwise(reason)
    for id_type, patterns in blocklist.patterns.items():
        for pattern in patterns:
            matches = (F.col("id_type") == id_type) & F.col("id_value").rlike(pattern)
            reason = F.when(reason.isNull() & matches, F.lit("blocklisted_pattern")).otherwise(reason)
    return reason


def apply_hygiene(identifiers: DataFrame, config: IdentityConfig) -> tuple[DataFrame, DataFrame]:
    """Split identifiers into those that may link records and the refused ones (with a reason)."""
    checked = identifiers.withColumn(
        "refusal",
        F.when(~F.col("id_type").isin(*config.identifier_types), F.lit("unknown_identifier_type")).otherwise(
            blocklist_reason(config.blocklist)
        ),
    )
    usable = checked.where(F.col("refusal").isNull()).drop("refusal")
    refused = checked.where(F.col("refusal").isNotNull())
    return usable, refused


def summarise_refusals(refused: DataFrame) -> DataFrame:
    """One row per refused value: how many records carried it, from which sources, a few examples."""
    return refused.groupBy("id_type", "id_value", "refusal").agg(
        F.count("*").alias("records"),
        F.sort_array(F.collect_set("source")).alias("sources"),
        F.slice(F.sort_array(F.collect_list(F.concat_ws(":", "source", "record_key"))), 1, 5).alias("examples"),
    ).withColumnRenamed("refusal", "reason")


def all_records(spark: SparkSession, settings: Settings) -> DataFrame:
    """Every silver record (with or without identifiers): each gets a one_id."""
    frames = []
    for entity_name in sorted({s.entity for s in settings.sources.sources.values()}):
        table = silver_table(ENTITIES[entity_name])
        if table_exists(spark, table):
            frames.append(spark.table(table).select("source", "record_key"))
    if not frames:
        raise RuntimeError("identity: no silver tables found. Fix: run `cdp run --stage silver` first.")
    return reduce(DataFrame.unionByName, frames)


def assign_one_ids(records: DataFrame, components: DataFrame) -> DataFrame:
    """one_id = 'oid_' + hex of the smallest record vertex in the component."""
    labelled = records.withColumn("vid", record_vertex(F.col("source"), F.col("record_key"))).join(
        components.withColumnRenamed("id", "vid"), "vid"
    )
    anchor = labelled.groupBy("component").agg(F.min("vid").alias("anchor"))
    return labelled.join(anchor, "component").select(
        "source",
        "record_key",
        F.concat(F.lit("oid_"), F.lower(F.lpad(F.hex("anchor"), 16, "0"))).alias("one_id"),
    )


def build_identity(spark: SparkSession, settings: Settings) -> IdentityResult:
    config = settings.identity
    records = all_records(spark, settings).persist()
    usable, refused = apply_hygiene(spark.table(IDENTIFIERS), config)
    overwrite_table(summarise_refusals(refused), REFUSED, "Identifier values refused as links, and why")

    edges = usable.select(
        record_vertex(F.col("source"), F.col("record_key")).alias("src"),
        identifier_vertex(F.col("id_type"), F.col("id_value")).alias("dst"),
    ).persist()
    vertices = records.select(record_vertex(F.col("source"), F.col("record_key")).alias("id")).unionByName(
        edges.select(F.col("dst").alias("id"))
    ).distinct()
    components, engine = connected_components(vertices, edges, config.components)
    log.info("identity: connected components computed with the %s engine", engine)

    oneid_map = assign_one_ids(records, components)
    overwrite_table(oneid_map, ONEID_MAP, "Every silver record's OneID: (source, record_key) -> one_id")
    stats = spark.table(ONEID_MAP).agg(F.count("*").alias("records"), F.count_distinct("one_id").alias("one_ids")).collect()[0]
    result = IdentityResult(
        records=stats["records"],
        one_ids=stats["one_ids"],
        edges=edges.count(),
        refused_values=spark.table(REFUSED).count(),
        engine=engine,
    )
    edges.unpersist()
    records.unpersist()
    return result
