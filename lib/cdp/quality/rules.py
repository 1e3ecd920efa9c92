"""Evaluate the configured data-quality rules on a silver run's mapped rows, into metric rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.cleanse.mapping import MALFORMED, REASON, given
from cdp.conf.quality import QualityRule
from cdp.conf.sources import Source
from cdp.quality.metrics import MetricRow
from cdp.tables import QUALITY_METRICS
METRICS_SCHEMA = (
    "run_id string, computed_at timestamp, source string, rule string, family string, checked long, "
    "failed long, rate double, warn_above double, fail_above double, status string"
)


@dataclass(frozen=True)
class RuleResult:
    rule: QualityRule
    checked: int
    failed: int

    @property
    def rate(self) -> float:
        return self.failed / self.checked if self.checked else 0.0

    @property
    def status(self) -> str:
        if self.rule.fail_above is not None and self.rate > self.rule.fail_above:
            return "fail"
        if self.rule.warn_above is not None and self.rate > self.rule.warn_above:
            return "warn"
        return "ok"


def _count(condition: Column) -> Column:
    return F.sum(F.when(condition, 1).otherwise(0))


def rule_columns(rule: QualityRule, source: Source) -> tuple[Column, Column]:
    """(checked, failed) aggregate expressions for one rule over the source's mapped rows.

    Rows carry the mapping's helper columns (REASON null when accepted, MALFORMED, given(field)) and
    the normalised canonical fields (see cdp.cleanse.mapping.map_to_entity).
    """
    accepted = F.col(REASON).isNull()
    readable = ~F.col(MALFORMED)
    if rule.family == "completeness":
        return _count(accepted), _count(accepted & F.col(rule.field).isNull())
    if rule.family == "validity" and rule.field:
        delivered = readable & F.col(given(rule.field))
        return _count(delivered), _count(delivered & F.col(rule.field).isNull())
    if rule.family == "validity":
        return F.count(F.lit(1)), _count(~accepted)
    if rule.family == "uniqueness":
        return _count(accepted), _count(accepted) - F.count_distinct(F.when(accepted, F.col("record_key")))
    if rule.family == "consistency":
        comparable = accepted & F.col("id_card").isNotNull() & (
            F.col("birth_date").isNotNull() | F.col("gender").isNotNull()
        )
        return _count(comparable), _count(comparable & (F.size("id_card_conflicts") > 0))
    raise ValueError(f"rule '{rule.name}': family {rule.family} is not an aggregate rule")


def evaluate_source_rules(
    mapped: DataFrame, source_name: str, source: Source, rules: list[QualityRule], as_of: date,
    time_field: str | None,
) -> list[RuleResult]:
    """All rules of one source in one pass over its mapped rows (`time_field`: the entity's, for freshness)."""
    rows = mapped.where(F.col("source") == source_name)
    # The newest record's calendar day in the session time zone (the channels' local time).
    newest = F.max(F.when(F.col(REASON).isNull(), F.col(time_field))) if time_field else F.lit(None)
    aggregates: list[Column] = [F.to_date(newest).alias("_latest")]
    for i, rule in enumerate(rules):
        if rule.family != "freshness":
            checked, failed = rule_columns(rule, source)
            aggregates += [checked.alias(f"c{i}"), failed.alias(f"f{i}")]
    values = rows.agg(*aggregates).first()
    results = []
    for i, rule in enumerate(rules):
        if rule.family == "freshness":
            latest: date | None = values["_latest"]
            stale = latest is None or latest < as_of - timedelta(days=rule.max_age_days)
            results.append(RuleResult(rule, 1, int(stale)))
        else:
            results.append(RuleResult(rule, int(values[f"c{i}"] or 0), int(values[f"f{i}"] or 0)))
    return results


def metrics_frame(spark: SparkSession, run_id: str, results: list[RuleResult]) -> DataFrame:
    rows = [
        (run_id, None, r.rule.source, r.rule.name, r.rule.family, r.checked, r.failed, r.rate,
         r.rule.warn_above, r.rule.fail_above, r.status)
        for r in results
    ]
    return spark.createDataFrame(rows, METRICS_SCHEMA).withColumn("computed_at", F.current_timestamp())


def read_metric_rows(spark: SparkSession, runs: int) -> list[MetricRow]:
    """The metrics of the latest `runs` silver runs, as report rows."""
    metrics = spark.table(QUALITY_METRICS)
    latest = [r["run_id"] for r in metrics.select("run_id").distinct().orderBy(F.col("run_id").desc()).limit(runs).collect()]
    return [
        MetricRow(**{k: row[k] for k in MetricRow.__dataclass_fields__})
        for row in metrics.where(F.col("run_id").isin(*latest)).collect()
    ]
