"""Erasure (PIPL art. 47, 删除权) of exactly one subject: find the person through the identity graph,
delete their rows from every layer with Delta DELETE, keep a tombstone of hashed keys, and keep
their data out afterwards — without touching anyone who merely shares an identifier with them.

1. Resolve the subject (docs/privacy.md, "Erasure"): a one_id (a retired id is followed to its
   survivor), or an identifier as silver normalises it. An identifier resolves to the persons whose
   records carry it as a person-level identifier: not a value identity refused (a store's walk-in
   phone, a placeholder — asking by one is refused: it identifies nobody), not on a record whose
   link to it a guard refused. More than one person needs `confirm_persons` (`--confirm-persons N`).
2. The subject's records are every record of those one_ids. Their identifiers are the subject's own
   when no other person's record carries them; the others (a family's phone, a refused value) are
   shared: they are deleted where the subject's records hold them, and nowhere else.
3. Delete, per table of bronze, silver, identity and gold: one pass finds the rows of those records
   (bronze by its delivered key), of those one_ids, and rows whose text holds one of the subject's
   own phone, e-mail or 身份证 numbers or another own identifier's exact value (quarantined rows,
   merge causes); one Delta MERGE … WHEN MATCHED THEN DELETE removes them by the SHA-256 of their
   content. The MERGE condition, which the Delta log records, names columns, never a value.
4. Tombstone: `ops.erasure_ledger` gets the keyed hash (HMAC-SHA-256) of each of the subject's own
   identifiers, never of a shared one. Every later bronze run deletes newly landed rows whose
   identifiers hash to a tombstone, so a family member's new row with the shared phone still lands.
5. `vacuum` then removes the files the DELETEs left behind (and old checkpoint files), after the
   configured retention; until then Delta time travel can still read them.

`dry_run` resolves and counts the rows per table, and deletes nothing.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce
from uuid import uuid4

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.audit import audit, current_actor
from cdp.cleanse.mapping import Reading, entity_identifiers, map_to_entity, record_key
from cdp.cleanse.normalisers import NORMALISERS, to_half_width
from cdp.conf import ConfigError, Settings
from cdp.lakehouse import filesystem, table_exists
from cdp.tables import ERASURE_LEDGER as LEDGER
from cdp.tables import IDENTIFIERS, ONEID_MAP, REFUSED, REGISTRY, VIOLATIONS, bronze_table
from cdp.privacy.protect import identifier_hash, keyed_hash_text, load_keys
from cdp.realtime import PROVISIONAL
from cdp.spark import runtime_conf

log = logging.getLogger(__name__)

LEDGER_SCHEMA = (
    "erasure_id string, requested_at timestamp, actor string, reason string, id_type string, "
    "key_hash string, requested boolean"
)
ERASED_LAYERS = ("bronze", "silver", "identity", "gold")
SUBSTRING_TYPES = ("phone", "email", "id_card")  # long enough to be found inside any text


class ErasureError(ValueError):
    """The request cannot be carried out as given (no key, an unknown type); nothing was deleted."""


@dataclass
class Erasure:
    """What an erasure did (or, with dry_run, would do: rows_deleted are the rows it would delete)."""

    erasure_id: str
    one_ids: int
    records: int
    keys: int  # tombstones written (or that would be): the subject's own identifiers
    rows_deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False
    persons: list[str] = field(default_factory=list)  # the subject's one_ids
    shared: int = 0  # identifiers the subject shares with other persons or that identity refused: not tombstoned

    @property
    def total_deleted(self) -> int:
        return sum(self.rows_deleted.values())


# ---------------------------------------------------------------- resolving the subject


def normalised_key(spark: SparkSession, settings: Settings, id_type: str, raw: str) -> str:
    """The value as silver stores it (a phone as +86…, an e-mail lower-case), or ErasureError."""
    types = settings.model.identifier_types
    if id_type not in types:
        raise ErasureError(f"'{id_type}' is not an identifier type. Fix: one of {sorted(types)} (conf/model.yaml).")
    normaliser = NORMALISERS[types[id_type].normaliser]
    value = spark.range(1).select(normaliser(F.lit(raw)).alias("v")).first()["v"]
    if value is None:
        raise ErasureError(f"'{raw}' is not a valid {id_type}: nothing to erase. Fix: give it as silver would "
                           f"accept it (normaliser '{types[id_type].normaliser}': a CN mobile number, an e-mail …).")
    return value


def _survivor(spark: SparkSession, one_id: str) -> str:
    """A retired one_id's survivor (merges followed), or the id itself."""
    if not table_exists(spark, REGISTRY):
        return one_id
    merged = {r["one_id"]: r["merged_into"] for r in
              spark.table(REGISTRY).where(F.col("merged_into").isNotNull()).select("one_id", "merged_into").collect()}
    seen = {one_id}
    while one_id in merged and merged[one_id] not in seen:
        one_id = merged[one_id]
        seen.add(one_id)
    return one_id


@dataclass
class Resolution:
    """The subject: one_ids, records (source, record_key), and the identifiers on those records: the
    subject's own, and those other persons carry too (or identity refused), which are shared."""

    one_ids: set[str]
    records: DataFrame
    own: list[tuple[str, str]]
    shared: list[tuple[str, str]]


def _frame(spark: SparkSession, values: list[tuple[str, str]]) -> DataFrame:
    return spark.createDataFrame(values, "id_type string, id_value string")


def refused_values(spark: SparkSession, values: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Of these values, those identity refused as identifiers (placeholders, shared by strangers), with the reason."""
    if not values or not table_exists(spark, REFUSED):
        return {}
    rows = spark.table(REFUSED).join(_frame(spark, values), ["id_type", "id_value"], "left_semi").collect()
    return {(r["id_type"], r["id_value"]): r["reason"] for r in rows}


def person_carriers(spark: SparkSession, values: list[tuple[str, str]]) -> DataFrame:
    """(source, record_key) of the records that carry one of these values as a person-level identifier:
    not a link a guard refused (identity.violations)."""
    carriers = spark.table(IDENTIFIERS).join(_frame(spark, values), ["id_type", "id_value"], "left_semi")
    if table_exists(spark, VIOLATIONS):
        carriers = carriers.join(spark.table(VIOLATIONS).select("source", "record_key", "id_type", "id_value"),
                                 ["source", "record_key", "id_type", "id_value"], "left_anti")
    return carriers.select("source", "record_key")


def resolve_subject(spark: SparkSession, seeds: list[tuple[str, str]], one_id: str | None,
                    confirm_persons: int | None = None) -> Resolution:
    """The subject the request names, or ErasureError when a value identifies nobody or the request
    reaches more persons than it confirms."""
    refused = refused_values(spark, seeds)
    if refused:
        named = "; ".join(f"{t} {v}: {reason}" for (t, v), reason in sorted(refused.items()))
        raise ErasureError(
            f"refused: {named}. Identity does not use this value as an identifier, so it identifies nobody and "
            f"erasing by it would reach whoever happens to carry it. Fix: name the subject by a one_id "
            f"(cdp explain) or by an identifier of their own; nothing was deleted.")
    oneid_map = spark.table(ONEID_MAP).select("source", "record_key", "one_id")
    seed_records = person_carriers(spark, seeds) if seeds else spark.createDataFrame([], "source string, record_key string")
    one_ids = {r["one_id"] for r in oneid_map.join(seed_records, ["source", "record_key"]).select("one_id").collect()}
    if one_id:
        one_ids.add(_survivor(spark, one_id))
    if len(one_ids) > 1 and confirm_persons != len(one_ids):
        raise ErasureError(
            f"the request resolves to {len(one_ids)} persons ({', '.join(sorted(one_ids))}). Check them with "
            f"--dry-run, then confirm with --confirm-persons {len(one_ids)}; nothing was deleted.")
    mapped = oneid_map.where(F.col("one_id").isin(*one_ids)).select("source", "record_key")
    unmapped = seed_records.join(oneid_map, ["source", "record_key"], "left_anti")  # landed after identity ran
    records = mapped.unionByName(unmapped).distinct().localCheckpoint()
    ids = spark.table(IDENTIFIERS).select("source", "record_key", "id_type", "id_value")
    carried = ids.join(records, ["source", "record_key"], "left_semi").select("id_type", "id_value").distinct()
    # a value is shared when a record of another person carries it (guard-refused or not), or identity refused it
    others = (ids.join(carried, ["id_type", "id_value"], "left_semi").join(records, ["source", "record_key"], "left_anti")
              .join(oneid_map, ["source", "record_key"]).select("id_type", "id_value"))
    values = sorted({(r["id_type"], r["id_value"]) for r in carried.collect()} | set(seeds))
    shared = {(r["id_type"], r["id_value"]) for r in others.distinct().collect()} | set(refused_values(spark, values))
    own = [v for v in values if v not in shared]
    return Resolution(one_ids, records, own, sorted(shared))


def needles(values: list[tuple[str, str]]) -> list[str]:
    """Lower-case text fragments that mark a row as holding one of the subject's identifiers.

    Phones match on their 11 national digits (bronze may hold 138-0013-8000 or +86 138…; spaces and
    dashes are removed before matching), e-mails and 身份证 as they are; any other identifier only as a
    whole JSON value ("value") or a `type:value` cause, so a short member number cannot match inside
    another one.
    """
    found = set()
    for id_type, value in values:
        value = re.sub(r"[\s\-]", "", value.lower())  # as the row text is compared
        if id_type == "phone":
            found.add(value[-11:])
        elif id_type in SUBSTRING_TYPES:
            found.add(value)
        else:
            found.update({f'"{value}"', f':{value}"'})
    return sorted(found)


# ---------------------------------------------------------------- deleting


@dataclass
class Subject:
    """What identifies the subject's rows: one_ids, records (source, record_key) and text fragments."""

    one_ids: set[str]
    records: list[tuple[str, str]]
    needles: list[str]
    hashes: list[str] = field(default_factory=list)  # keyed hashes of the own identifiers (gold.realtime_events)


def _fingerprint(columns: list[tuple[str, str]], prefix: str = "") -> Column:
    """A row's content as one value: SHA-256 of its JSON (binary columns left out)."""
    kept = [F.col(f"{prefix}`{name}`") for name, kind in columns if kind != "binary"]
    return F.sha2(F.to_json(F.struct(*kept)), 256)


def _flat_text(columns: list[tuple[str, str]]) -> Column:
    """A row as one lower-case JSON text, half-width, without spaces and dashes."""
    text = F.to_json(F.struct(*[F.col(f"`{name}`") for name, kind in columns if kind != "binary"]))
    return F.lower(F.regexp_replace(to_half_width(text), r"[\s\-]", ""))


_SEP = "\u0001"


def matching_rows(spark: SparkSession, table: str, subject: Subject, bronze_key: Column | None,
                  by_text: bool) -> list[str]:
    """The content fingerprints of the table's rows that belong to the subject (one pass over it)."""
    frame = spark.table(table)
    columns = [(f.name, f.dataType.typeName()) for f in frame.schema.fields]
    names = {name for name, _ in columns}
    records = sorted(f"{source}{_SEP}{key}" for source, key in subject.records)
    conditions = []
    if "one_id" in names and subject.one_ids:
        conditions.append(F.col("one_id").isin(*sorted(subject.one_ids)))
    for suffix in ("", "_a", "_b"):  # a record, or either record of a pair (a steward's rule)
        if {f"source{suffix}", f"record_key{suffix}"} <= names and records:
            conditions.append(F.concat_ws(_SEP, f"source{suffix}", f"record_key{suffix}").isin(*records))
    if bronze_key is not None and "_source" in names and records:  # a bronze row: its key as silver makes it
        conditions.append(F.concat_ws(_SEP, F.col("_source"), bronze_key).isin(*records))
    if "id_hashes" in names and subject.hashes:  # an event the stream kept, under any id
        conditions.append(F.arrays_overlap("id_hashes", F.array(*[F.lit(h) for h in subject.hashes])))
    if by_text and subject.needles:
        flat = _flat_text(columns)
        conditions.append(F.exists(F.array(*[F.lit(n) for n in subject.needles]), lambda n: F.instr(flat, n) > 0))
    if not conditions:
        return []
    matched = frame.where(reduce(lambda x, y: x | y, conditions)).select(_fingerprint(columns).alias("h")).distinct()
    return [r["h"] for r in matched.collect()]


RESOLVERS = (IDENTIFIERS, ONEID_MAP)  # what resolve_subject reads: erased last, so a rerun after a crash still resolves


def erasable_tables(spark: SparkSession, layers: tuple[str, ...] = ERASED_LAYERS) -> list[str]:
    tables = []
    for database in layers:
        if not spark.catalog.databaseExists(database):
            continue
        tables += [f"{database}.{t.name}" for t in spark.catalog.listTables(database)
                   if t.tableType != "VIEW" and not t.isTemporary]
    return sorted(tables, key=lambda t: (t in RESOLVERS, t))


def delete_rows(spark: SparkSession, settings: Settings, subject: Subject, tables: list[str],
                by_text: bool = True, dry_run: bool = False) -> dict[str, int]:
    """Per table: the subject's rows found by a query, then deleted by one MERGE on their content
    fingerprint (`dry_run`: counted only). The MERGE's condition (which the Delta log records) names
    columns, never a value."""
    bronze_keys = {bronze_table(name): record_key(source) for name, source in settings.sources.sources.items()}

    def erase_from(table: str) -> tuple[str, int]:
        fingerprints = matching_rows(spark, table, subject, bronze_keys.get(table), by_text)
        if not fingerprints or dry_run:
            return table, len(fingerprints)
        rows = spark.createDataFrame([(h,) for h in fingerprints], "h string")
        columns = [(f.name, f.dataType.typeName()) for f in spark.table(table).schema.fields]
        result = (DeltaTable.forName(spark, table).alias("t")
                  .merge(rows.alias("s"), _fingerprint(columns, "t.") == F.col("s.h"))
                  .whenMatchedDelete().execute().first())
        return table, int(result["num_deleted_rows"]) if result is not None else 0

    # The resolvers go last: a rerun after a crash still finds the subject through them.
    counts = [erase_from(t) for t in sorted(tables, key=lambda t: t in RESOLVERS)]
    deleted = {table: count for table, count in counts if count}
    for table, count in deleted.items():
        log.info("erasure: %s: %d rows %s", table, count, "to delete (dry run)" if dry_run else "deleted")
    return deleted


def _record_tombstones(spark: SparkSession, key: bytes, erasure_id: str, actor: str, reason: str,
                       values: list[tuple[str, str]], requested: set[tuple[str, str]]) -> int:
    now = datetime.now(timezone.utc)
    rows = [(erasure_id, now, actor, reason, id_type, keyed_hash_text(f"{id_type}:{value}", key),
             (id_type, value) in requested) for id_type, value in values]
    spark.createDataFrame(rows, LEDGER_SCHEMA).write.format("delta").mode("append").saveAsTable(LEDGER)
    return len(rows)


def erase(spark: SparkSession, settings: Settings, *, phone: str | None = None, email: str | None = None,
          one_id: str | None = None, identifiers: list[tuple[str, str]] = (), reason: str = "subject request",
          actor: str | None = None, dry_run: bool = False, confirm_persons: int | None = None) -> Erasure:
    """Erase one subject everywhere; the tombstone is written before any row is deleted, so a crash
    mid-way is finished by running the same erase again (or, for newly landed data, by bronze).

    The subject: a phone, an e-mail, any identifier (type, value) of conf/model.yaml, or a one_id.
    `dry_run`: resolve and count, delete nothing (audited as erasure_dry_run). A request that resolves
    to more than one person needs `confirm_persons` equal to their number."""
    if not (phone or email or one_id or identifiers):
        raise ErasureError("an erasure needs the subject: --phone, --email, --id TYPE:VALUE or --one-id")
    if not table_exists(spark, IDENTIFIERS) or not table_exists(spark, ONEID_MAP):
        raise ConfigError("erasure resolves subjects through silver.identifiers and identity.oneid_map, which do "
                          "not exist yet. Fix: run `cdp run --stage all` first.")
    hash_key = load_keys(settings).hash_key  # a missing secret fails before anything is deleted
    started = time.perf_counter()
    actor = actor or current_actor()
    asked = [*([("phone", phone)] if phone else []), *([("email", email)] if email else []), *identifiers]
    seeds = [(id_type, normalised_key(spark, settings, id_type, raw)) for id_type, raw in asked]
    subject = resolve_subject(spark, seeds, one_id, confirm_persons)
    erasure_id = f"erasure-{uuid4().hex[:12]}"
    keys = [(r["source"], r["record_key"]) for r in subject.records.collect()]
    hashes = [keyed_hash_text(f"{id_type}:{value}", hash_key) for id_type, value in subject.own]
    # the stream's provisional ids of the subject's own identifiers (cdp.realtime): their tags go too
    provisional = {f"{PROVISIONAL}{h[:16]}" for h in hashes}
    rows = Subject(subject.one_ids | provisional, keys, needles(subject.own), hashes)
    if dry_run:
        tombstones = len(subject.own)
    else:
        tombstones = _record_tombstones(spark, hash_key, erasure_id, actor, reason, subject.own, set(seeds))
    deleted = delete_rows(spark, settings, rows, erasable_tables(spark), dry_run=dry_run)
    result = Erasure(erasure_id, len(subject.one_ids), len(keys), tombstones, deleted,
                     round(time.perf_counter() - started, 1), dry_run, sorted(subject.one_ids), len(subject.shared))
    audit(spark, "erasure_dry_run" if dry_run else "erasure", object=erasure_id, rows=result.total_deleted,
          actor=actor, details={"reason": reason, "one_ids": len(subject.one_ids), "records": len(keys),
                                "keys": tombstones, "shared_identifiers_kept": len(subject.shared),
                                "rows_deleted": deleted})
    return result


def enforce_ledger(spark: SparkSession, settings: Settings, batch_id: str) -> dict[str, int]:
    """Delete this bronze batch's rows whose identifiers hash to a tombstone: erased subjects stay out."""
    if not table_exists(spark, LEDGER):
        return {}
    tombstones = spark.table(LEDGER).select("key_hash").distinct()
    if tombstones.isEmpty():
        return {}
    keys = load_keys(settings)
    reading = Reading(settings.model, tuple(settings.privacy.purposes))
    hits = []
    for name, source in settings.sources.sources.items():
        table = bronze_table(name)
        if not table_exists(spark, table):
            continue
        mapped = spark.table(table).where(F.col("_batch_id") == batch_id).transform(map_to_entity(name, source, reading))
        hashed = entity_identifiers(mapped).withColumn(
            "key_hash", identifier_hash(F.col("id_type"), F.col("id_value"), keys))
        hits.append(hashed.join(F.broadcast(tombstones), "key_hash").select("source", "record_key"))
    if not hits:
        return {}
    records = [(r["source"], r["record_key"]) for r in reduce(DataFrame.unionByName, hits).distinct().collect()]
    if not records:
        return {}
    deleted = delete_rows(spark, settings, Subject(set(), records, []), erasable_tables(spark, ("bronze",)),
                          by_text=False)
    log.warning("erasure: %d newly landed rows belonged to erased subjects and were deleted from bronze",
                sum(deleted.values()))
    return deleted


# ---------------------------------------------------------------- vacuum


@dataclass
class Vacuumed:
    tables: int
    retention_hours: float
    checkpoint_paths_removed: int


def _remove_old_checkpoints(spark: SparkSession, directory: str, cutoff_ms: int) -> int:
    """Delete checkpoint files older than the cutoff (any filesystem Hadoop reaches)."""
    fs, path = filesystem(spark, directory)
    if not fs.exists(path):
        return 0
    removed = 0
    for run_dir in fs.listStatus(path):
        for entry in fs.listStatus(run_dir.getPath()) if run_dir.isDirectory() else [run_dir]:
            if entry.getModificationTime() <= cutoff_ms:
                fs.delete(entry.getPath(), True)
                removed += 1
    return removed


def vacuum(spark: SparkSession, settings: Settings, retention_hours: float | None = None,
           actor: str | None = None) -> Vacuumed:
    """VACUUM every table of every layer with the retention (privacy.yaml default) and drop
    checkpoint files older than it. Below Delta's 168-hour safety check only when asked for."""
    hours = settings.privacy.vacuum_retention_hours if retention_hours is None else retention_hours
    if hours < 0:
        raise ErasureError("--retain-hours must be 0 or more")
    overrides = {
        # Delta lists each table's files with this many tasks (default 10,000: minutes of empty
        # tasks per table on a small cluster); the cluster's own parallelism is plenty.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(spark.sparkContext.defaultParallelism),
        # VACUUM START/END commits in every table's history (3.5x the time of the vacuum itself on
        # small tables); each vacuum is recorded once in ops.audit_log instead.
        "spark.databricks.delta.vacuum.logging.enabled": "false",
    }
    if hours < 168:
        overrides["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
    tables = erasable_tables(spark, ERASED_LAYERS + ("ops",))
    with runtime_conf(spark, overrides):
        for table in tables:
            spark.sql(f"VACUUM {table} RETAIN {hours} HOURS")
    cutoff = int((time.time() - hours * 3600) * 1000)
    removed = _remove_old_checkpoints(spark, settings.checkpoint_dir, cutoff)
    audit(spark, "vacuum", object=",".join(ERASED_LAYERS + ("ops",)), rows=len(tables), actor=actor,
          details={"retention_hours": hours, "checkpoint_paths_removed": removed})
    return Vacuumed(len(tables), hours, removed)
