"""The second engine in the identity stage: probabilistic links between records with no shared identifier.

Records that carry person attributes (conf `probabilistic.attributes`: a CRM member's name, birth date
and city; an order's receiver name and city) are compared with the Fellegi–Sunter linker. Records
with identical attributes are compared once (the 20 orders of one receiver are one attribute row).
Each pair at or above the threshold becomes an identifier value of type `probabilistic` carried by
the records on both sides, so it enters the same graph, the same guards (its priority is the weakest:
deterministic evidence wins a conflict) and the same explanations as a phone or a member id.

Values refused by hygiene (a blocklisted or shared phone) are not evidence here either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.conf.identity import Linkage
from cdp.identity.linker import LinkResult, Model, NotTrainable, level_labels, link
from cdp.lakehouse import table_exists
from cdp.tables import silver_table

log = logging.getLogger(__name__)

PROBABILISTIC = "probabilistic"  # the identifier type of a probabilistic link


@dataclass
class ProbabilisticLinks:
    links: DataFrame  # identity.probabilistic_links: one row per link and record, with the score and the field comparisons
    weights: DataFrame  # identity.match_weights: the model, one row per comparison level
    result: LinkResult | None  # None when the model could not be trained on this data
    attribute_rows: DataFrame | None = None  # source, record_key, uid: each compared record's attribute row
    model_version: int | None = None  # the identity.models version the links were scored with

    @property
    def edges(self) -> DataFrame:
        """(source, record_key, id_type, id_value): what enters the graph, one identifier value per link."""
        return self.links.select("source", "record_key", F.lit(PROBABILISTIC).alias("id_type"),
                                 F.col("link_id").alias("id_value"))


def attribute_records(spark: SparkSession, spec: Linkage) -> DataFrame:
    """(source, record_key, <field>...) for every silver record with at least one compared attribute."""
    fields = sorted({f for mapping in spec.attributes.values() for f in mapping})
    frames = []
    for entity_name, mapping in sorted(spec.attributes.items()):
        table = silver_table(entity_name)
        if not table_exists(spark, table):
            continue
        columns = [F.col(mapping[f]).cast("string").alias(f) if f in mapping else F.lit(None).cast("string").alias(f)
                   for f in fields]
        present = reduce(lambda a, b: a | b, [F.col(c).isNotNull() for c in mapping.values()])
        frames.append(spark.table(table).where(present).select("source", "record_key", *columns))
    if not frames:
        return spark.createDataFrame([], ", ".join(["source string", "record_key string", *[f"{f} string" for f in fields]]))
    return reduce(DataFrame.unionByName, frames)


def without_refused(records: DataFrame, refused: DataFrame, fields: list[str]) -> DataFrame:
    """Null out attribute values that hygiene refused as identifiers (a walk-in phone is no evidence)."""
    out = records
    for field in fields:
        bad = refused.where(F.col("id_type") == field).select(F.col("id_value").alias(field)).distinct()
        bad = bad.withColumn(f"_refused_{field}", F.lit(True))
        out = out.join(F.broadcast(bad), field, "left").withColumn(
            field, F.when(F.col(f"_refused_{field}").isNull(), F.col(field))
        ).drop(f"_refused_{field}")
    return out


def probabilistic_links(
    spark: SparkSession, spec: Linkage, refused: DataFrame, identifier_types: list[str], run_id: str,
    records: DataFrame | None = None, model: Model | None = None, touched: DataFrame | None = None,
) -> ProbabilisticLinks:
    """Link records (default: every silver record with a compared attribute, `attribute_records`),
    scored with `model` when given (a frozen one: cdp.identity.models), else with one trained here.
    `touched` (source, record_key; with `model`): only the pairs with a touched record's attribute
    row on either side are scored, and `attribute_rows` are the rows of the records those pairs reach."""
    records = attribute_records(spark, spec) if records is None else records
    fields = [c for c in records.columns if c not in ("source", "record_key")]
    records = without_refused(records, refused, [f for f in fields if f in identifier_types])
    # One attribute row per distinct tuple: records with identical attributes are compared once.
    keyed = records.withColumn("uid", F.xxhash64(*[F.coalesce(F.col(f), F.lit("\u0000")) for f in fields])).persist()
    rows = keyed.select("uid", *fields).dropDuplicates(["uid"])
    try:
        # identifiers' frequencies (a phone's holders) are counted on each run's data, never kept in a model
        touched_rows = None if touched is None else keyed.join(touched, ["source", "record_key"], "left_semi").select("uid")
        result = link(rows, spec, model=model, counted=frozenset(f for f in fields if f in identifier_types),
                      touched=touched_rows)
    except NotTrainable as exc:
        # Too little data to estimate the model (a first small load): no probabilistic links this run.
        log.warning("identity: probabilistic engine skipped: %s", exc)
        return _no_links(spark)
    links = result.links.localCheckpoint()
    link_id = F.concat(F.lit("pl_"), F.lower(F.hex(F.xxhash64("uid_l", "uid_r"))))
    names = list(spec.comparisons)
    comparisons = F.array(*[
        F.struct(
            F.lit(name).alias("field"),
            F.when(F.col(name) >= 0, F.element_at(
                F.array(*[F.lit(label) for label in level_labels(spec.comparisons[name])]), F.col(name) + 1)).alias("level"),
            F.round(F.col(f"w_{name}"), 3).alias("weight"),
        )
        for name in names
    ])
    rules = F.element_at(F.array(*[F.lit(rule) for rule in spec.blocking]), F.col("rule") + 1)
    scored = links.select(
        link_id.alias("link_id"), "uid_l", "uid_r",
        F.round("match_probability", 6).alias("match_probability"), F.round("match_weight", 3).alias("match_weight"),
        rules.alias("blocking_rule"),
        F.filter(comparisons, lambda c: c["level"].isNotNull()).alias("comparisons"),
    )
    sides = scored.select("*", F.explode(F.array(F.struct(F.lit("l").alias("side"), F.col("uid_l").alias("uid")),
                                                 F.struct(F.lit("r").alias("side"), F.col("uid_r").alias("uid")))).alias("s"))
    table = (
        sides.join(keyed.select("uid", "source", "record_key"), F.col("s.uid") == F.col("uid"))
        .select("link_id", F.col("s.side").alias("side"), "source", "record_key", "match_probability", "match_weight",
                "blocking_rule", "comparisons", F.lit(run_id).alias("run_id"))
    )
    model = result.model.as_dict()
    weights = spark.createDataFrame(
        [(name, i, lvl["level"], lvl["m"], lvl["u"], lvl["weight"], spec.comparisons[name].term_frequency)
         for name, levels in model["comparisons"].items() for i, lvl in enumerate(levels)],
        "comparison string, level int, label string, m double, u double, weight double, term_frequency boolean",
    ).withColumns({"random_match": F.lit(model["random_match"]), "run_id": F.lit(run_id),
                   "model_version": F.lit(None).cast("int")})  # set once the model has a version
    log.info("identity: probabilistic engine: %d candidate pairs %s, training %s, random match %.3g", result.candidates,
             json.dumps(result.pairs_per_rule, ensure_ascii=False), json.dumps(model["training"], ensure_ascii=False),
             model["random_match"])
    return ProbabilisticLinks(table, weights, result, keyed.select("source", "record_key", "uid"))


LINKS_SCHEMA = (
    "link_id string, side string, source string, record_key string, match_probability double, match_weight double, "
    "blocking_rule string, comparisons array<struct<field:string, level:string, weight:double>>, run_id string"
)
WEIGHTS_SCHEMA = ("comparison string, level int, label string, m double, u double, weight double, term_frequency boolean, "
                  "random_match double, run_id string, model_version int")


def _no_links(spark: SparkSession) -> ProbabilisticLinks:
    return ProbabilisticLinks(spark.createDataFrame([], LINKS_SCHEMA), spark.createDataFrame([], WEIGHTS_SCHEMA), None)
