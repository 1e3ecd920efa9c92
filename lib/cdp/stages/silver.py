"""Bronze → silver: map each source onto its canonical entity, standardise, quarantine, deduplicate.

A run reads only the bronze commits after the versions its last run consumed (ops.stage_cursors,
Delta Change Data Feed) and MERGEs their effect into silver, the quarantine and the identifiers.
It rebuilds everything from bronze instead on the first run, when asked (`cdp run --full`), when
sources.yaml, model.yaml, the consent purposes or the code changed, or when the feed is gone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from functools import reduce

from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp import __version__

from cdp.cleanse.mapping import (
    META, RAW, REASON, Reading, entity_identifiers, helper_columns, latest_per_record_key, map_to_entity,
    quarantine_rule, with_checks, with_quality_flags, with_rejection_reason,
)
from cdp.conf import ConfigError, Settings
from cdp.conf.model import Entity
from cdp.conf.sources import Source
from cdp.cursors import Cursor, digest, read_cursors, unreadable_feed, write_cursors
from cdp.lakehouse import (
    append, ensure_change_feed, overwrite_table, read_changes, read_version, record_write, replace_rows, table_exists,
    table_version,
)
from cdp.logs import first_line, timed_step
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
    mode: str = "full"  # full: rebuilt from all of bronze; changes: bronze's changes merged; unchanged
    read: int = 0  # bronze rows this run read: all of them, or the rows its changes added and removed

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


STAGE = "silver"
ROW_ID = ["_file", "_line", "_batch_id"]  # one bronze row: its file, its line there, the batch that landed it
ADDED = ("insert", "update_postimage")
REMOVED = "_removed"  # a changed row's flag: removed from bronze (else added)
FEED_COLUMNS = ["_change_type", "_commit_version", "_commit_timestamp"]
KEY = ["source", "record_key"]


@dataclass(frozen=True)
class BronzeInput:
    """One source's bronze table, at the version this run reads."""

    name: str
    source: Source
    table: str
    version: int
    feed_was_on: bool


@dataclass
class EntityChanges:
    """One entity's bronze rows added and removed since the last run, net of rows that came and went
    between the two runs, mapped and checked like any bronze row (`_removed` tells which), with the
    counts per source: (added, removed, added and accepted, removed and accepted)."""

    rows: DataFrame
    counts: dict[str, tuple[int, int, int, int]]

    def added(self, source: str | None = None) -> DataFrame:
        rows = self.rows.where(~F.col(REMOVED))
        return rows if source is None else rows.where(F.col("source") == source)

    def removed(self, source: str | None = None) -> DataFrame:
        rows = self.rows.where(F.col(REMOVED))
        return rows if source is None else rows.where(F.col("source") == source)


def silver_fingerprint(settings: Settings) -> str:
    """What silver's rows depend on besides bronze: the sources, the model, the purposes, the code."""
    return digest({"sources": settings.sources.model_dump(mode="json"), "model": settings.model.model_dump(mode="json"),
                        "purposes": sorted(settings.privacy.purposes), "version": __version__})


def bronze_inputs(spark: SparkSession, settings: Settings) -> list[BronzeInput]:
    """The configured sources that have a bronze table, with its Change Data Feed on and its version."""
    inputs = []
    for name, source in settings.sources.sources.items():
        table = bronze_table(name)
        if not table_exists(spark, table):
            log.warning("silver: no bronze table for source %s yet; run the bronze stage first", name)
            continue
        was_on = ensure_change_feed(spark, table)
        inputs.append(BronzeInput(name, source, table, table_version(spark, table), was_on))
    return inputs


def why_rebuild(spark: SparkSession, inputs: list[BronzeInput], cursors: dict[str, Cursor], fingerprint: str) -> str | None:
    """Why this run cannot merge bronze's changes and must rebuild silver whole; None when it can."""
    if not cursors:
        return "no earlier silver run consumed bronze"
    if any(c.fingerprint != fingerprint for c in cursors.values()):
        return "sources.yaml, model.yaml, the consent purposes or the code changed since the last run"
    if set(cursors) != {i.table for i in inputs}:
        return f"the bronze tables differ from the last run's ({', '.join(sorted(set(cursors) ^ {i.table for i in inputs}))})"
    unreadable = unreadable_feed(inputs, cursors)
    if unreadable:
        return unreadable
    missing = [t for t in {silver_table(i.source.entity) for i in inputs} | {IDENTIFIERS, QUARANTINE} if not table_exists(spark, t)]
    if missing:
        return f"{', '.join(sorted(missing))} missing"
    return None


def build_silver(spark: SparkSession, settings: Settings, run_id: str, as_of: date, full: bool = False,
                 seconds: dict[str, float] | None = None) -> list[SourceAccounting]:
    """Bring silver up to bronze: merge bronze's changes since the last run, or rebuild it whole.
    `seconds`, when given, receives the time of each step."""
    seconds = {} if seconds is None else seconds
    reading = Reading(settings.model, tuple(settings.privacy.purposes))
    with timed_step(STAGE, "plan", seconds):
        inputs = bronze_inputs(spark, settings)
        fingerprint = silver_fingerprint(settings)
        cursors = read_cursors(spark, STAGE)
        reason = "asked for (--full)" if full else why_rebuild(spark, inputs, cursors, fingerprint)
    changes: dict[str, EntityChanges] = {}
    if reason is None:
        try:
            with timed_step(STAGE, "read_changes", seconds):
                changes = entity_changes(spark, settings, reading, inputs, cursors)
        except (PySparkException, Py4JJavaError) as exc:
            reason = f"bronze's change feed cannot be read ({first_line(exc)})"
    try:
        if reason is not None:
            log.info("silver: rebuilding from all of bronze: %s", reason)
            return rebuild_silver(spark, settings, reading, inputs, run_id, as_of, fingerprint, seconds)
        return merge_changes(spark, settings, reading, inputs, changes, cursors, run_id, as_of, fingerprint, seconds)
    finally:
        for change in changes.values():
            change.rows.unpersist()


def checked_rows(bronze: DataFrame, name: str, source: Source, reading: Reading, carry: tuple[str, ...] = ()) -> DataFrame:
    """Bronze rows mapped onto the source's entity, checked, with the reason each is refused (if any)."""
    entity = reading.entity(source)
    mapped = bronze.transform(map_to_entity(name, source, reading, carry)).transform(with_checks(entity))
    return mapped.transform(with_rejection_reason(entity))


def rebuild_silver(spark: SparkSession, settings: Settings, reading: Reading, inputs: list[BronzeInput], run_id: str,
                   as_of: date, fingerprint: str, seconds: dict[str, float]) -> list[SourceAccounting]:
    """Recompute silver from bronze: one table per entity, the quarantine, identifiers and accounting."""
    by_entity: dict[str, list[DataFrame]] = {}
    for i in inputs:
        bronze = read_version(spark, i.table, i.version)
        check_conditions(bronze, i.name, i.source, settings)
        by_entity.setdefault(i.source.entity, []).append(checked_rows(bronze, i.name, i.source, reading))

    checked = {
        entity_name: reduce(DataFrame.unionByName, frames).persist()
        for entity_name, frames in by_entity.items()
    }
    try:
        with timed_step(STAGE, "quality", seconds):
            check_quality(spark, settings, checked, run_id, as_of)
        with timed_step(STAGE, "publish", seconds):
            accepted = publish_silver(settings, checked)
    finally:
        for df in checked.values():
            df.unpersist()
    totals = {i.name: accepted.get(i.name, 0) for i in inputs}
    with timed_step(STAGE, "accounting", seconds):
        accounting = account_rows(spark, settings, inputs, totals, run_id, "full", {})
        write_cursors(spark, STAGE, [Cursor(i.table, i.version, fingerprint, totals[i.name]) for i in inputs], run_id)
    return accounting


def publish_silver(settings: Settings, checked: dict[str, DataFrame]) -> dict[str, int]:
    """Write each entity table, the quarantine and the identifiers; the rows accepted per source."""
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
        quarantine_parts.append(df.where(F.col(REASON).isNotNull()).select(*quarantine_columns()))
    if quarantine_parts:
        overwrite_table(reduce(DataFrame.unionByName, quarantine_parts), QUARANTINE, "Rows refused by silver, with the reason")
    if identifier_parts:
        overwrite_table(reduce(DataFrame.unionByName, identifier_parts).distinct(), IDENTIFIERS, "Normalised identifiers per record")
    for frame in persisted:
        frame.unpersist()
    return accepted_by_source


def quarantine_columns() -> list:
    return ["source", "record_key", quarantine_rule(F.col(REASON)).alias("rule"), F.col(REASON).alias("reason"),
            F.col(RAW).alias("raw_payload"), *META]


def _net(rows: DataFrame, other: DataFrame) -> DataFrame:
    """`rows` without those `other` holds too (by ROW_ID, nulls equal): a row inserted and deleted
    between two runs, or deleted and inserted back, is no change."""
    theirs = other.select(*[F.col(c).alias(f"_other{c}") for c in ROW_ID]).distinct()
    condition = reduce(lambda a, b: a & b, [F.col(c).eqNullSafe(F.col(f"_other{c}")) for c in ROW_ID])
    return rows.join(theirs, condition, "left_anti")


def entity_changes(spark: SparkSession, settings: Settings, reading: Reading, inputs: list[BronzeInput],
                   cursors: dict[str, Cursor]) -> dict[str, EntityChanges]:
    """Each entity's bronze changes after the cursors, mapped, materialised and counted in one pass
    (a feed that cannot be read fails here, before anything is written). Unchanged sources are absent."""
    by_entity: dict[str, list[DataFrame]] = {}
    for i in inputs:
        cursor = cursors[i.table]
        if cursor.version == i.version:
            continue
        check_conditions(spark.table(i.table), i.name, i.source, settings)
        feed = read_changes(spark, i.table, cursor.version, i.version)
        flagged = feed.withColumn(REMOVED, ~F.col("_change_type").isin(*ADDED)).drop(*FEED_COLUMNS)
        added, removed = flagged.where(~F.col(REMOVED)), flagged.where(F.col(REMOVED))
        net = _net(added, removed).unionByName(_net(removed, added))
        by_entity.setdefault(i.source.entity, []).append(checked_rows(net, i.name, i.source, reading, carry=(REMOVED,)))
    changes = {}
    for entity_name, frames in by_entity.items():
        rows = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames).persist()
        counted = rows.groupBy("source", REMOVED, F.col(REASON).isNull().alias("accepted")).count().collect()
        counts: dict[str, list[int]] = {}
        for r in counted:
            figures = counts.setdefault(r["source"], [0, 0, 0, 0])
            figures[1 if r[REMOVED] else 0] += r["count"]
            if r["accepted"]:
                figures[3 if r[REMOVED] else 2] += r["count"]
        changes[entity_name] = EntityChanges(rows, {source: tuple(f) for source, f in counts.items()})
    return changes


def merge_changes(spark: SparkSession, settings: Settings, reading: Reading, inputs: list[BronzeInput],
                  changes: dict[str, EntityChanges], cursors: dict[str, Cursor], run_id: str, as_of: date,
                  fingerprint: str, seconds: dict[str, float]) -> list[SourceAccounting]:
    """Merge each changed source's rows into silver, the quarantine and the identifiers."""
    with timed_step(STAGE, "quality", seconds):
        check_quality(spark, settings, {e: c.added() for e, c in changes.items()}, run_id, as_of)
    totals = {i.name: cursors[i.table].accepted or 0 for i in inputs}
    by_name = {i.name: i for i in inputs}
    replaced_keys, new_identifiers, persisted = [], [], []
    for entity_name, change in changes.items():
        entity = settings.model.entities[entity_name]
        fresh_parts, key_parts = [], []
        for source, (_, _, added_accepted, removed_accepted) in sorted(change.counts.items()):
            totals[source] += added_accepted - removed_accepted
            if not added_accepted and not removed_accepted:
                continue  # refused rows only: the quarantine's
            added = change.added(source).where(F.col(REASON).isNull()).drop(REMOVED)
            if not removed_accepted:
                fresh, keys = newer_than_silver(spark, added, entity, silver_table(entity_name))
            else:
                removed = change.removed(source).where(F.col(REASON).isNull()).drop(REMOVED)
                fresh, keys = recomputed(spark, reading, by_name[source], added, removed)
            fresh_parts.append(fresh)
            key_parts.append(keys)
        if not fresh_parts:
            continue
        with timed_step(STAGE, "merge_entities", seconds):
            fresh = reduce(DataFrame.unionByName, fresh_parts).persist()
            persisted.append(fresh)
            keys = reduce(DataFrame.unionByName, key_parts).distinct().persist()
            merge_entity(spark, silver_table(entity_name), fresh, keys)
        replaced_keys.append(keys)
        new_identifiers.append(entity_identifiers(fresh))
    if replaced_keys:
        with timed_step(STAGE, "merge_identifiers", seconds):
            # the replaced records' identifiers go, their fresh ones come (a rerun does both again: the same result)
            replace_rows(spark, IDENTIFIERS, reduce(DataFrame.unionByName, replaced_keys),
                         reduce(DataFrame.unionByName, new_identifiers).distinct(), KEY)
    if changes:
        with timed_step(STAGE, "merge_quarantine", seconds):
            merge_quarantine(spark, list(changes.values()))
    counts = {source: figures for change in changes.values() for source, figures in change.counts.items()}
    modes = {i.name: "changes" if i.name in counts else "unchanged" for i in inputs}
    read = {source: added + removed for source, (added, removed, _, _) in counts.items()}
    with timed_step(STAGE, "accounting", seconds):
        accounting = account_rows(spark, settings, inputs, totals, run_id, modes, read)
        write_cursors(spark, STAGE, [Cursor(i.table, i.version, fingerprint, totals[i.name]) for i in inputs], run_id)
    for frame in (*replaced_keys, *persisted):
        frame.unpersist()
    return accounting


def newer_than_silver(spark: SparkSession, added: DataFrame, entity: Entity, table: str) -> tuple[DataFrame, DataFrame]:
    """Only rows were added: each added record against its silver row, the latest delivery wins.
    (the rows to write, the keys they replace): a key whose silver row stays newer is left alone."""
    flagged = added.transform(with_quality_flags(entity)).withColumn("_fresh", F.lit(True))
    existing = spark.table(table).join(flagged.select(*KEY).distinct(), KEY, "left_semi").withColumn("_fresh", F.lit(False))
    winners = latest_per_record_key(flagged.unionByName(existing, allowMissingColumns=True), prefer="_fresh")
    fresh = winners.where(F.col("_fresh")).drop("_fresh")
    return fresh, fresh.select(*KEY)


def recomputed(spark: SparkSession, reading: Reading, i: BronzeInput, added: DataFrame,
               removed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Rows were removed, so an older delivery may be the latest again: each touched record is
    recomputed from all of its bronze rows. (the rows to write, the keys they replace: a key with
    no accepted row left loses its silver row)."""
    keys = added.select(*KEY).unionByName(removed.select(*KEY)).where(F.col("record_key").isNotNull()).distinct()
    bronze = checked_rows(read_version(spark, i.table, i.version), i.name, i.source, reading)
    accepted = bronze.where(F.col(REASON).isNull()).join(keys, KEY, "left_semi")
    entity = reading.entity(i.source)
    return latest_per_record_key(accepted).transform(with_quality_flags(entity)), keys


def merge_entity(spark: SparkSession, table: str, fresh: DataFrame, keys: DataFrame) -> None:
    """One MERGE: each fresh row replaces or adds its record, and a replaced key without one is deleted."""
    columns = spark.table(table).columns
    gone = keys.join(fresh.select(*KEY), KEY, "left_anti").withColumn("_delete", F.lit(True))
    staged = fresh.select(*columns).withColumn("_delete", F.lit(False)).unionByName(gone, allowMissingColumns=True)
    values = {f"`{c}`": f"s.`{c}`" for c in columns}
    (
        DeltaTable.forName(spark, table).alias("t")
        .merge(staged.alias("s"), "t.source = s.source AND t.record_key = s.record_key")
        .whenMatchedDelete(condition="s._delete")
        .whenMatchedUpdate(set=values)
        .whenNotMatchedInsert(condition="NOT s._delete", values=values)
        .execute()
    )
    record_write(spark, table)


def merge_quarantine(spark: SparkSession, changed: list[EntityChanges]) -> None:
    """Refused rows that landed are added, refused rows bronze no longer holds are removed: one MERGE."""
    staged = reduce(DataFrame.unionByName, [
        c.rows.where(F.col(REASON).isNotNull()).select(*quarantine_columns(), F.col(REMOVED).alias("_remove")) for c in changed])
    columns = spark.table(QUARANTINE).columns
    values = {f"`{c}`": f"s.`{c}`" for c in columns}
    condition = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in ["source", *ROW_ID])
    (
        DeltaTable.forName(spark, QUARANTINE).alias("t")
        .merge(staged.alias("s"), condition)
        .whenMatchedDelete(condition="s._remove")
        .whenNotMatchedInsert(condition="NOT s._remove", values=values)
        .execute()
    )
    record_write(spark, QUARANTINE)


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
    spark: SparkSession, settings: Settings, inputs: list[BronzeInput], accepted: dict[str, int], run_id: str,
    modes: str | dict[str, str], read: dict[str, int],
) -> list[SourceAccounting]:
    """Per source: landed, in silver, quarantined and collapsed as duplicates; recorded in ops.

    Landed, silver and quarantined are counted on their own tables; duplicates are the rows ever
    accepted (a running count a merge run carries forward) less those in silver. So a row lost or
    doubled anywhere breaks the balance.
    """

    def counts_by_source(table: str) -> dict[str, int]:
        return {r["source"]: r["count"] for r in spark.table(table).groupBy("source").count().collect()}

    silver_counts: dict[str, int] = {}
    for table in sorted({silver_table(i.source.entity) for i in inputs}):
        if table_exists(spark, table):
            silver_counts.update(counts_by_source(table))
    quarantined_counts = counts_by_source(QUARANTINE) if table_exists(spark, QUARANTINE) else {}
    results = []
    for i in inputs:
        landed = read_version(spark, i.table, i.version).count()
        silver = silver_counts.get(i.name, 0)
        mode = modes if isinstance(modes, str) else modes[i.name]
        results.append(SourceAccounting(i.name, landed, silver, quarantined_counts.get(i.name, 0),
                                        accepted.get(i.name, 0) - silver, mode, landed if mode == "full" else read.get(i.name, 0)))
    rows = [(run_id, a.source, a.landed, a.silver, a.quarantined, a.duplicates) for a in results]
    if rows:
        frame = spark.createDataFrame(
            rows, "run_id string, source string, landed long, silver long, quarantined long, duplicates long"
        ).withColumn("computed_at", F.current_timestamp())
        append(frame, ROW_ACCOUNTING)
    return results
