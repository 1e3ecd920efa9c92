"""Bronze → silver: map each source onto its canonical entity, standardise, quarantine, deduplicate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.cleanse.mapping import (
    META, RAW, REASON, Reading, entity_identifiers, helper_columns, latest_per_record_key, map_to_entity,
    quarantine_rule, with_checks, with_quality_flags, with_rejection_reason,
)
from cdp.conf import ConfigError, Settings
from cdp.conf.sources import Source
from cdp.lakehouse import append, overwrite_table, table_exists
from cdp.logs import first_line
from cdp.quality.rules import RuleResult, evaluate_source_rules, metrics_frame
from cdp.tables import IDENTIFIERS, QUALITY_METRICS, QUARANTINE, ROW_ACCOUNTING, bronze_table, silver_table

log = logging.getLogger(__name__)


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
            results += evaluate_source_rules(checked[source.entity], source_name, source, rules, as_of,
                                             settings.model.entities[source.entity].time_field)
    if results:
        append(metrics_frame(spark, run_id, results), QUALITY_METRICS)
    for warning in (r for r in results if r.status == "warn"):
        log.warning("quality %s on %s: %.2f%% failed (warn above %.2f%%)", warning.rule.name,
                    warning.rule.source, 100 * warning.rate, 100 * (warning.rule.warn_above or 0))
    failures = [r for r in results if r.status == "fail"]
    if failures:
        detail = "; ".join(f"{r.rule.name} {r.failed}/{r.checked} = {r.rate:.1%} > {r.rule.fail_above:.0%}" for r in failures)
        raise QualityGateFailed(f"quality rules failed, silver not published: {detail} (see {QUALITY_METRICS})")
    return results


def build_silver(spark: SparkSession, settings: Settings, run_id: str, as_of: date) -> list[SourceAccounting]:
    """Recompute silver from bronze: one table per entity, the quarantine, identifiers and accounting."""
    sources = settings.sources.sources
    reading = Reading(settings.model, tuple(settings.privacy.purposes))
    by_entity: dict[str, list[DataFrame]] = {}
    for name, source in sources.items():
        if not table_exists(spark, bronze_table(name)):
            log.warning("silver: no bronze table for source %s yet; run the bronze stage first", name)
            continue
        entity = reading.entity(source)
        bronze = spark.table(bronze_table(name))
        check_conditions(bronze, name, source, settings)
        mapped = bronze.transform(map_to_entity(name, source, reading)).transform(with_checks(entity))
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


def publish_silver(
    spark: SparkSession, settings: Settings, checked: dict[str, DataFrame], run_id: str
) -> list[SourceAccounting]:
    """Write each entity table, the quarantine and the identifiers, then account for every row."""
    quarantine_parts, identifier_parts, persisted = [], [], []
    accepted_by_source: dict[str, int] = {}
    for entity_name, df in checked.items():
        entity = settings.model.entities[entity_name]
        for row in df.where(F.col(REASON).isNull()).groupBy("source").count().collect():
            accepted_by_source[row["source"]] = row["count"]
        accepted = latest_per_record_key(df.where(F.col(REASON).isNull())).transform(with_quality_flags(entity)).persist()
        overwrite_table(accepted.drop(*helper_columns(accepted.columns)), silver_table(entity_name),
                        f"Canonical {entity_name}, cleansed: {entity.description}")
        identifier_parts.append(entity_identifiers(accepted))
        persisted.append(accepted)
        quarantine_parts.append(
            df.where(F.col(REASON).isNotNull()).select(
                "source", "record_key", quarantine_rule(F.col(REASON)).alias("rule"),
                F.col(REASON).alias("reason"), F.col(RAW).alias("raw_payload"), *META,
            )
        )
    if quarantine_parts:
        overwrite_table(reduce(DataFrame.unionByName, quarantine_parts), QUARANTINE, "Rows refused by silver, with the reason")
    if identifier_parts:
        overwrite_table(reduce(DataFrame.unionByName, identifier_parts).distinct(), IDENTIFIERS, "Normalised identifiers per record")
    for frame in persisted:
        frame.unpersist()
    return account_rows(spark, settings, accepted_by_source, run_id)


def check_conditions(bronze: DataFrame, name: str, source: Source, settings: Settings) -> None:
    """Every `when` of the source analysed by Spark against its delivered columns, before anything is
    written: a ConfigError naming sources.yaml, the key and Spark's reason otherwise."""
    conditions = {f"sources.{name}.mapping.{field}.when": m.when for field, m in source.mapping.items() if m.when}
    conditions |= {f"sources.{name}.identifiers[{i}].when": x.when for i, x in enumerate(source.identifiers) if x.when}
    for key, condition in conditions.items():
        try:
            bronze.where(F.expr(condition)).schema
        except PySparkException as exc:
            raise ConfigError(f"{settings.conf_dir / 'sources.yaml'}: key '{key}': Spark cannot use '{condition}': "
                              f"{first_line(exc)}. Fix: a SQL condition over the delivered columns {source.columns}.") from exc


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
    for table in sorted({silver_table(s.entity) for s in configured.values()}):
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
        append(frame, ROW_ACCOUNTING)
    return results
