"""The 360° profile: one golden row per one_id, from every silver record the person has."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.cleanse.entities import ENTITIES
from cdp.cleanse.silver import IDENTIFIERS, silver_table
from cdp.config import Settings
from cdp.identity.stage import ONEID_MAP, REFUSED
from cdp.lakehouse import table_exists

# Survivorship: a CRM profile outranks what an order's receiver fields say; within a rank, the newest wins.
ATTRIBUTE_SOURCES = {
    "customers": {"rank": 1, "time": "registered_at", "name": "name", "gender": "gender",
                  "birth_date": "birth_date", "province": "province", "city": "city"},
    "orders": {"rank": 2, "time": "order_time", "name": "receiver_name", "gender": None,
               "birth_date": None, "province": "province", "city": "city"},
}
ATTRIBUTES = ("name", "gender", "birth_date", "province", "city")


def mask_cn_mobile(e164: Column) -> Column:
    """+8613800138000 → 138****8000: enough for a person to recognise, not to dial."""
    national = F.regexp_replace(e164, r"^\+86", "")
    return F.concat(F.substring(national, 1, 3), F.lit("****"), F.substring(national, -4, 4))


def _with_one_id(spark: SparkSession, df: DataFrame) -> DataFrame:
    return df.join(spark.table(ONEID_MAP), ["source", "record_key"])


def attribute_candidates(spark: SparkSession) -> DataFrame:
    """(one_id, rank, ts, name, gender, birth_date, province, city) from every entity that carries them."""
    frames = []
    for entity_name, spec in ATTRIBUTE_SOURCES.items():
        table = silver_table(ENTITIES[entity_name])
        if not table_exists(spark, table):
            continue
        columns = [F.lit(spec["rank"]).alias("rank"), F.col(spec["time"]).alias("ts")]
        for attribute in ATTRIBUTES:
            column = spec[attribute]
            spark_type = ENTITIES["customers"].fields[attribute]
            columns.append((F.col(column) if column else F.lit(None)).cast(spark_type).alias(attribute))
        frames.append(_with_one_id(spark, spark.table(table)).select("one_id", *columns))
    return reduce(DataFrame.unionByName, frames)


def golden_attributes(candidates: DataFrame) -> DataFrame:
    """Per attribute, the best non-null value: lowest rank first, then the most recent."""
    aggregations = []
    for attribute in ATTRIBUTES:
        preference = F.when(F.col(attribute).isNotNull(), F.struct(-F.col("rank"), F.col("ts")))
        aggregations.append(F.max_by(attribute, preference).alias(attribute))
    return candidates.groupBy("one_id").agg(*aggregations)


def activity(spark: SparkSession) -> DataFrame:
    """(one_id, channel, ts, is_interaction) for every record: when and where the person was seen."""
    frames = []
    for entity in ENTITIES.values():
        table = silver_table(entity)
        if table_exists(spark, table):
            frames.append(
                _with_one_id(spark, spark.table(table)).select(
                    "one_id", "channel", F.col(entity.time_field).alias("ts"),
                    F.lit(entity.table in ("orders", "events")).alias("is_interaction"),
                )
            )
    return reduce(DataFrame.unionByName, frames)


def order_summary(spark: SparkSession) -> DataFrame:
    """Orders, spend and last purchase per one_id; refunded orders count for neither."""
    orders = _with_one_id(spark, spark.table(silver_table(ENTITIES["orders"])))
    kept = orders.where(F.coalesce(F.col("status"), F.lit("")) != "refunded")
    return kept.groupBy("one_id").agg(
        F.count("*").alias("order_count"),
        F.sum("amount").cast("decimal(14,2)").alias("total_spend"),
        F.max("order_time").alias("last_order_at"),
    )


def contact_points(spark: SparkSession, settings: Settings) -> DataFrame:
    """Whether a person can be reached by phone or email, with a masked phone for display."""
    refused = spark.table(REFUSED).select("id_type", "id_value")
    usable = spark.table(IDENTIFIERS).join(refused, ["id_type", "id_value"], "left_anti")
    contacts = _with_one_id(spark, usable.where(F.col("id_type").isin("phone", "email")))
    return contacts.groupBy("one_id").agg(
        F.max(F.col("id_type") == "phone").alias("has_phone"),
        F.max(F.col("id_type") == "email").alias("has_email"),
        mask_cn_mobile(F.min(F.when(F.col("id_type") == "phone", F.col("id_value")))).alias("phone_masked"),
    )


def build_customer_profile(spark: SparkSession, settings: Settings) -> DataFrame:
    """One row per one_id: golden attributes, reachability, activity and purchases."""
    people = spark.table(ONEID_MAP).groupBy("one_id").agg(F.count("*").alias("record_count"))
    seen = activity(spark).groupBy("one_id").agg(
        F.min("ts").alias("first_seen"),
        F.max("ts").alias("last_seen"),
        F.max(F.when(F.col("is_interaction"), F.col("ts"))).alias("last_active_at"),
        F.sort_array(F.collect_set("channel")).alias("channels"),
    )
    return (
        people.join(golden_attributes(attribute_candidates(spark)), "one_id", "left")
        .join(contact_points(spark, settings), "one_id", "left")
        .join(seen, "one_id", "left")
        .join(order_summary(spark), "one_id", "left")
        .select(
            "one_id", *ATTRIBUTES,
            F.coalesce("has_phone", F.lit(False)).alias("has_phone"),
            F.coalesce("has_email", F.lit(False)).alias("has_email"),
            "phone_masked", "channels", "first_seen", "last_seen", "last_active_at", "record_count",
            F.coalesce("order_count", F.lit(0)).cast("long").alias("order_count"),
            F.coalesce("total_spend", F.lit(0)).cast("decimal(14,2)").alias("total_spend"),
            "last_order_at",
        )
    )
