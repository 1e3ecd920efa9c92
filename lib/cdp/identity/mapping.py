"""gold.identity_map: each one_id's identifiers (主账号-子账号), as analysts and downstream systems see them."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.conf import Settings
from cdp.conf.model import DataModel
from cdp.identity.graph import all_records
from cdp.lakehouse import table_exists
from cdp.privacy.protect import Keys, identifier_hash, masked
from cdp.tables import IDENTIFIERS, ONEID_MAP, REFUSED, VIOLATIONS


def mask_value(model: DataModel, id_type: str, value: str) -> Column:
    """A display form a person recognises but cannot use, by the type's mask (conf/model.yaml):
    138****8000, 110***********002X, z***@qq.com, oDF3****."""
    shown = masked("prefix", value)
    for name, spec in model.identifier_types.items():
        if spec.mask != "prefix":
            shown = F.when(F.col(id_type) == name, masked(spec.mask, value)).otherwise(shown)
    return shown


def build_identity_map(spark: SparkSession, settings: Settings, keys: Keys, persons: DataFrame | None = None) -> DataFrame:
    """one_id × identifier: first and last seen, how many sources and records carry it.

    Only links that count: values refused before the graph and record links refused by the guards
    are left out. Types with `gold: hash` show no clear value. With `persons` (one_id): theirs only. Every row carries `id_hash`, the keyed
    hash (HMAC-SHA-256) of `type:value`: the join key outside silver, and a masked form.
    """
    identifiers = spark.table(IDENTIFIERS)
    if table_exists(spark, REFUSED):
        identifiers = identifiers.join(spark.table(REFUSED).select("id_type", "id_value"), ["id_type", "id_value"], "left_anti")
    if table_exists(spark, VIOLATIONS):
        refused_edges = spark.table(VIOLATIONS).select("source", "record_key", "id_type", "id_value")
        identifiers = identifiers.join(refused_edges, ["source", "record_key", "id_type", "id_value"], "left_anti")
    hashed = [t for t, spec in settings.identity.identifiers.items() if spec.gold == "hash"]
    mapped = spark.table(ONEID_MAP).select("source", "record_key", "one_id")
    if persons is not None:
        mapped = mapped.join(F.broadcast(persons.select("one_id")), "one_id", "left_semi")
    grouped = (
        identifiers.join(mapped, ["source", "record_key"])
        .join(all_records(spark, settings), ["source", "record_key"], "left")
        .groupBy("one_id", "id_type", "id_value")
        .agg(
            F.min("seen_at").alias("first_seen"), F.max("seen_at").alias("last_seen"),
            F.count_distinct("source").alias("sources"), F.count("*").alias("records"),
        )
    )
    is_hashed = F.col("id_type").isin(*hashed) if hashed else F.lit(False)
    return grouped.select(
        "one_id", "id_type",
        F.when(is_hashed, F.lit(None).cast("string")).otherwise(F.col("id_value")).alias("id_value"),
        identifier_hash(F.col("id_type"), F.col("id_value"), keys).alias("id_hash"),
        mask_value(settings.model, "id_type", "id_value").alias("id_masked"),
        "first_seen", "last_seen", "sources", "records",
    )
