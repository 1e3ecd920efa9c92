"""Hygiene before the graph: identifier values that must never link records.

Two kinds: values known to be junk (blocklists of values and patterns, from conf), and values the
data itself shows are shared by strangers — one value carried by records of more distinct anchor
identities (member ids, 身份证, unionids, platform accounts) than its type allows.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdp.conf.identity import Blocklist, IdentityConfig

def blocklist_reason(blocklist: Blocklist) -> Column:
    """Why an identifier value must not link records ('blocklisted_value', 'blocklisted_pattern'), else null.

    A flat COALESCE of one test per rule: the expression grows linearly with the blocklist.
    """
    tests = [
        F.when((F.col("id_type") == id_type) & F.col("id_value").isin(*values), F.lit("blocklisted_value"))
        for id_type, values in blocklist.values.items()
    ] + [
        F.when((F.col("id_type") == id_type) & F.col("id_value").rlike(pattern), F.lit("blocklisted_pattern"))
        for id_type, patterns in blocklist.patterns.items()
        for pattern in patterns
    ]
    if not tests:
        return F.lit(None).cast("string")
    return F.coalesce(*tests, F.lit(None).cast("string"))


def apply_hygiene(identifiers: DataFrame, config: IdentityConfig) -> tuple[DataFrame, DataFrame]:
    """Split identifiers into those that may link records and the refused ones.

    Refused rows carry `refusal` (the reason) and, for values suspended as shared by strangers,
    `anchor_type` and `degree` (the evidence).
    """
    checked = identifiers.withColumn(
        "refusal",
        F.when(~F.col("id_type").isin(*config.identifier_types), F.lit("unknown_identifier_type")).otherwise(
            blocklist_reason(config.blocklist)
        ),
    )
    listed_ok = checked.where(F.col("refusal").isNull()).drop("refusal")
    # Materialised once (a few rows): both the usable and the refused side are built from it.
    shared = shared_values(listed_ok, config).withColumnRenamed("reason", "shared_reason").localCheckpoint()
    judged = listed_ok.join(F.broadcast(shared), ["id_type", "id_value"], "left")
    usable = judged.where(F.col("shared_reason").isNull()).select(*identifiers.columns)
    suspended = judged.where(F.col("shared_reason").isNotNull()).withColumnRenamed("shared_reason", "refusal")
    listed = checked.where(F.col("refusal").isNotNull()).select(
        *checked.columns, F.lit(None).cast("string").alias("anchor_type"), F.lit(None).cast("long").alias("degree")
    )
    return usable, listed.unionByName(suspended)


def shared_values(identifiers: DataFrame, config: IdentityConfig) -> DataFrame:
    """Values linked to too many distinct anchors or too many records: (id_type, id_value, reason, anchor_type, degree).

    For a value v of a type with `max_shared_by: n`, its degree is the largest number of distinct
    values of one anchor type found on the records that carry v. A phone seen with 40 member ids is
    a store's walk-in number, not a person's.
    """
    limits = {t: spec.max_shared_by for t, spec in config.identifiers.items() if spec.max_shared_by}
    anchors = config.suspicious.anchors
    spark = identifiers.sparkSession
    parts = []
    if limits and anchors:
        anchor_rows = identifiers.where(F.col("id_type").isin(*anchors)).select(
            "source", "record_key", F.col("id_type").alias("anchor_type"), F.col("id_value").alias("anchor_value")
        )
        checked = identifiers.where(F.col("id_type").isin(*limits)).select("source", "record_key", "id_type", "id_value")
        per_anchor = (
            checked.join(anchor_rows, ["source", "record_key"])
            .where(F.col("anchor_type") != F.col("id_type"))
            .groupBy("id_type", "id_value", "anchor_type")
            .agg(F.count_distinct("anchor_value").alias("degree"))
        )
        limit_rows = spark.createDataFrame(sorted(limits.items()), "id_type string, max_shared_by int")
        degree = per_anchor.groupBy("id_type", "id_value").agg(
            F.max_by("anchor_type", F.struct("degree", "anchor_type")).alias("anchor_type"), F.max("degree").alias("degree")
        )
        parts.append(
            degree.join(F.broadcast(limit_rows), "id_type")
            .where(F.col("degree") > F.col("max_shared_by"))
            .select("id_type", "id_value", F.lit("shared_by_strangers").alias("reason"), "anchor_type",
                    F.col("degree").cast("long").alias("degree"))
        )
    crowded = (
        identifiers.groupBy("id_type", "id_value").agg(F.count("*").alias("records"))
        .where(F.col("records") > config.suspicious.max_records)
        .select("id_type", "id_value", F.lit("too_many_records").alias("reason"),
                F.lit(None).cast("string").alias("anchor_type"), F.col("records").alias("degree"))
    )
    parts.append(crowded)
    combined = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    # One reason per value: the anchor evidence is the more telling one.
    return combined.groupBy("id_type", "id_value").agg(
        F.min_by(F.struct("reason", "anchor_type", "degree"), F.col("reason") != "shared_by_strangers").alias("r")
    ).select("id_type", "id_value", "r.reason", "r.anchor_type", "r.degree")


def summarise_refusals(refused: DataFrame) -> DataFrame:
    """One row per refused value: why, the evidence, how many records carried it, from which sources, examples."""
    return refused.groupBy("id_type", "id_value", F.col("refusal").alias("reason"), "anchor_type", "degree").agg(
        F.count("*").alias("records"),
        F.sort_array(F.collect_set("source")).alias("sources"),
        F.slice(F.sort_array(F.collect_list(F.concat_ws(":", "source", "record_key"))), 1, 5).alias("examples"),
    )
