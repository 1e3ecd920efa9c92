"""Bronze → silver: map each source onto its canonical entity, standardise, quarantine, deduplicate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cdp.cleanse.entities import ENTITIES, Entity
from cdp.cleanse.idcard import with_id_card_checks
from cdp.cleanse.normalisers import NORMALISERS, normalise_cn_mobile, normalise_email, normalise_text
from cdp.config import Settings, Source
from cdp.ingest.bronze import CORRUPT, bronze_table
from cdp.lakehouse import append, overwrite_table, table_exists
from cdp.quality.rules import METRICS_TABLE, RuleResult, evaluate_source_rules, metrics_frame

log = logging.getLogger(__name__)

QUARANTINE = "silver.quarantine"
IDENTIFIERS = "silver.identifiers"
ACCOUNTING = "ops.row_accounting"
META = ["_file", "_batch_id", "_ingested_at"]

# How a consent event's subject_type names the identifier type, and how its value is normalised.
CONSENT_SUBJECTS = {
    "phone": ("phone", normalise_cn_mobile),
    "email": ("email", normalise_email),
    "openid": ("openid", normalise_text),
    "unionid": ("unionid", normalise_text),
    "member_id": ("member_id", normalise_text),
}


@dataclass
class SourceAccounting:
    """Rows landed in bronze = rows in silver + rows quarantined + duplicates collapsed."""

    source: str
    landed: int
    silver: int
    quarantined: int
    duplicates: int

    @property
    def balanced(self) -> bool:
        return self.landed == self.silver + self.quarantined + self.duplicates


def silver_table(entity: Entity) -> str:
    return f"silver.{entity.table}"


def map_to_entity(source_name: str, source: Source):
    """Select the source's mapped columns, normalised and typed, keeping the raw row for quarantine."""
    entity = ENTITIES[source.entity]

    def transform(bronze: DataFrame) -> DataFrame:
        raw_fields = {f: F.col(f"`{m.column}`") for f, m in source.mapping.items()}
        columns: list[Column] = [
            F.lit(source_name).alias("source"),
            F.lit(source.channel).alias("channel"),
            normalise_text(F.col(f"`{source.record_key}`")).alias("record_key"),
        ]
        for field, spark_type in entity.fields.items():
            if field in source.mapping:
                value = NORMALISERS[source.mapping[field].normaliser](raw_fields[field])
            else:
                value = F.lit(None)
            columns.append(value.cast(spark_type).alias(field))
        # Was anything delivered at all? Tells 'missing' from 'invalid' (quarantine, validity rules).
        # Every entity field gets one (false when unmapped), so sources of an entity union by name.
        for field in entity.fields:
            given = normalise_text(raw_fields[field]).isNotNull() if field in raw_fields else F.lit(False)
            columns.append(given.alias(f"_given_{field}"))
        # Every delivered column, declared or drifted in, so a quarantined row can be replayed.
        delivered = [c for c in bronze.columns if not c.startswith("_")]
        raw_payload = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"`{c}`") for c in delivered])))
        columns += [raw_payload.alias("_raw"), F.col(CORRUPT).isNotNull().alias("_malformed")] + [F.col(m) for m in META]
        return bronze.select(*columns)

    return transform


def with_rejection_reason(entity: Entity):
    """The first rule a row breaks, as a reason code; null when the row is fit for silver."""

    def transform(df: DataFrame) -> DataFrame:
        reason: Column = F.when(F.col("_malformed"), F.lit("malformed_record")).when(
            F.col("record_key").isNull(), F.lit("missing_record_key")
        )
        for field in entity.required:
            reason = reason.when(~F.col(f"_given_{field}"), F.lit(f"missing_{field}")).when(
                F.col(field).isNull(), F.lit(f"invalid_{field}")
            )
        return df.withColumn("_reason", reason)

    return transform


def with_quality_flags(entity: Entity):
    """quality_flags: `invalid_<field>` for each value delivered but not standardisable (now null),
    plus the 身份证's conflicts with declared values — so a row says why a value is missing."""

    def transform(df: DataFrame) -> DataFrame:
        invalid = [
            F.when(F.col(f"_given_{field}") & F.col(field).isNull(), F.lit(f"invalid_{field}"))
            for field in entity.fields
        ]
        flags = F.array_compact(F.array(*invalid))
        if "id_card_conflicts" in df.columns:
            flags = F.concat(flags, F.col("id_card_conflicts"))
        return df.withColumn("quality_flags", flags)

    return transform


def latest_per_record_key(df: DataFrame) -> DataFrame:
    """Re-sent records collapse to one row per (source, record_key): the latest ingested wins."""
    window = Window.partitionBy("source", "record_key").orderBy(F.col("_ingested_at").desc(), F.col("_file").desc())
    return df.withColumn("_rank", F.row_number().over(window)).where(F.col("_rank") == 1).drop("_rank")


def with_consent_subject(df: DataFrame) -> DataFrame:
    """Normalise each consent event's subject by its subject_type (a phone as E.164, an email lower-case…)."""
    id_type = F.lit(None).cast("string")
    value = F.lit(None).cast("string")
    for subject_type, (identifier_type, normalise) in CONSENT_SUBJECTS.items():
        is_type = F.col("subject_type") == subject_type
        id_type = F.when(is_type, F.lit(identifier_type)).otherwise(id_type)
        value = F.when(is_type, normalise(F.col("subject_value"))).otherwise(value)
    return df.withColumn("subject_id_type", id_type).withColumn("subject_id_value", value)


def entity_identifiers(entity: Entity, df: DataFrame) -> DataFrame:
    """(source, record_key, id_type, id_value) for every non-null identifier field of the entity."""
    if entity.table == "consent_events":
        pairs = [(F.col("subject_id_type"), F.col("subject_id_value"))]
    else:
        pairs = [(F.lit(id_type), F.col(field)) for field, id_type in entity.identifiers.items()]
    stacked = F.explode(F.array(*[F.struct(t.alias("id_type"), v.alias("id_value")) for t, v in pairs]))
    return (
        df.select("source", "record_key", stacked.alias("id"))
        .select("source", "record_key", "id.id_type", "id.id_value")
        .where(F.col("id_value").isNotNull() & F.col("id_type").isNotNull())
    )


class QualityGateFailed(RuntimeError):
    """A rule crossed its fail_above threshold: silver was not published (metrics were recorded)."""


def check_quality(
    spark: SparkSession, settings: Settings, checked: dict[str, DataFrame], run_id: str, as_of: date
) -> list[RuleResult]:
    """Evaluate every rule, record the metrics, and refuse to publish when a rule fails."""
    sources = settings.sources.sources
    results: list[RuleResult] = []
    for source_name, source in sources.items():
        rules = [r for r in settings.quality.rules if r.source == source_name]
        if rules and source.entity in checked:
            results += evaluate_source_rules(checked[source.entity], source_name, source, rules, as_of)
    if results:
        append(metrics_frame(spark, run_id, results), METRICS_TABLE)
    for warning in (r for r in results if r.status == "warn"):
        log.warning("quality %s on %s: %.2f%% failed (warn above %.2f%%)", warning.rule.name,
                    warning.rule.source, 100 * warning.rate, 100 * (warning.rule.warn_above or 0))
    failures = [r for r in results if r.status == "fail"]
    if failures:
        detail = "; ".join(f"{r.rule.name} {r.failed}/{r.checked} = {r.rate:.1%} > {r.rule.fail_above:.0%}" for r in failures)
        raise QualityGateFailed(f"quality rules failed, silver not published: {detail} (see {METRICS_TABLE})")
    return results


def build_silver(spark: SparkSession, settings: Settings, run_id: str, as_of: date) -> list[SourceAccounting]:
    """Recompute silver from bronze: one table per entity, the quarantine, identifiers and accounting."""
    sources = settings.sources.sources
    by_entity: dict[str, list[DataFrame]] = {}
    for name, source in sources.items():
        if not table_exists(spark, bronze_table(name)):
            log.warning("silver: no bronze table for source %s yet; run the bronze stage first", name)
            continue
        entity = ENTITIES[source.entity]
        mapped = spark.table(bronze_table(name)).transform(map_to_entity(name, source))
        if entity.table == "customers":
            mapped = mapped.transform(with_id_card_checks())
        by_entity.setdefault(source.entity, []).append(mapped.transform(with_rejection_reason(entity)))

    checked = {
        entity_name: reduce(DataFrame.unionByName, frames).persist()
        for entity_name, frames in by_entity.items()
    }
    try:
        check_quality(spark, settings, checked, run_id, as_of)
        return publish_silver(spark, settings, checked, run_id)
    finally:
        for df in checked.values():
            df.unpersist()


def quarantine_rule(reason: Column) -> Column:
    """The rule family a reason code belongs to."""
    return (
        F.when(reason == "malformed_record", F.lit("parse"))
        .when(reason == "missing_record_key", F.lit("record_key"))
        .otherwise(F.lit("required_fields"))
    )


def publish_silver(
    spark: SparkSession, settings: Settings, checked: dict[str, DataFrame], run_id: str
) -> list[SourceAccounting]:
    """Write each entity table, the quarantine and the identifiers, then account for every row."""
    quarantine_parts, identifier_parts = [], []
    accepted_by_source: dict[str, int] = {}
    for entity_name, df in checked.items():
        entity = ENTITIES[entity_name]
        for row in df.where(F.col("_reason").isNull()).groupBy("source").count().collect():
            accepted_by_source[row["source"]] = row["count"]
        accepted = latest_per_record_key(df.where(F.col("_reason").isNull()))
        if entity_name == "consent_events":
            accepted = accepted.transform(with_consent_subject)
        accepted = accepted.transform(with_quality_flags(entity))
        helper_columns = [c for c in accepted.columns if c.startswith("_given_")] + ["_malformed", "_reason", "_raw"]
        overwrite_table(accepted.drop(*helper_columns), silver_table(entity), f"Canonical {entity_name}, cleansed")
        identifier_parts.append(entity_identifiers(entity, spark.table(silver_table(entity))))
        quarantine_parts.append(
            df.where(F.col("_reason").isNotNull()).select(
                "source", "record_key", quarantine_rule(F.col("_reason")).alias("rule"),
                F.col("_reason").alias("reason"), F.col("_raw").alias("raw_payload"), *META,
            )
        )
    if quarantine_parts:
        overwrite_table(reduce(DataFrame.unionByName, quarantine_parts), QUARANTINE, "Rows refused by silver, with the reason")
    if identifier_parts:
        overwrite_table(reduce(DataFrame.unionByName, identifier_parts).distinct(), IDENTIFIERS, "Normalised identifiers per record")
    return account_rows(spark, settings, accepted_by_source, run_id)


def account_rows(
    spark: SparkSession, settings: Settings, accepted_by_source: dict[str, int], run_id: str
) -> list[SourceAccounting]:
    """Per source: landed, in silver, quarantined and collapsed as duplicates; recorded in ops.

    Each figure is counted on its own table, so a row lost or doubled anywhere breaks the balance.
    """

    def counts_by_source(table: str) -> dict[str, int]:
        return {r["source"]: r["count"] for r in spark.table(table).groupBy("source").count().collect()}

    configured = settings.sources.sources
    silver_counts: dict[str, int] = {}
    for table in sorted({silver_table(ENTITIES[s.entity]) for s in configured.values()}):
        if table_exists(spark, table):
            silver_counts.update(counts_by_source(table))
    quarantined_counts = counts_by_source(QUARANTINE) if table_exists(spark, QUARANTINE) else {}
    results = []
    for name in configured:
        if not table_exists(spark, bronze_table(name)):
            continue
        landed = spark.table(bronze_table(name)).count()
        silver = silver_counts.get(name, 0)
        duplicates = accepted_by_source.get(name, 0) - silver
        results.append(SourceAccounting(name, landed, silver, quarantined_counts.get(name, 0), duplicates))
    rows = [(run_id, a.source, a.landed, a.silver, a.quarantined, a.duplicates) for a in results]
    if rows:
        frame = spark.createDataFrame(
            rows, "run_id string, source string, landed long, silver long, quarantined long, duplicates long"
        ).withColumn("computed_at", F.current_timestamp())
        append(frame, ACCOUNTING)
    return results
