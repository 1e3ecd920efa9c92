"""Erasure (PIPL art. 47, 删除权): find a subject through the identity graph, delete their rows from
every layer with Delta DELETE, keep a tombstone of hashed keys, and keep their data out afterwards.

1. Resolve: the given phone / email (normalised as silver does) or one_id (a retired id is followed
   to its survivor) → the records carrying it → their one_ids → every record of those one_ids →
   every identifier on those records (a shared, suspicious identifier such as a store's walk-in
   phone is not followed unless it is the one asked for) → every record carrying one of them.
2. Delete, per table of bronze, silver, identity and gold: one pass finds the rows of those records
   (bronze by its delivered key), of those one_ids, and rows whose text holds one of the subject's
   phone, e-mail or 身份证 numbers or another identifier's exact value (quarantined rows, refused
   links, merge causes); one Delta MERGE … WHEN MATCHED THEN DELETE removes them by the SHA-256 of
   their content. The MERGE condition, which the Delta log records, names columns, never a value.
3. Tombstone: `ops.erasure_ledger` gets the keyed hash (HMAC-SHA-256) of each identifier, no clear
   value. Every later bronze run deletes newly landed rows whose identifiers hash to a tombstone.
4. `vacuum` then removes the files the DELETEs left behind (and old checkpoint files), after the
   configured retention; until then Delta time travel can still read them.
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
from cdp.tables import HOUSEHOLDS, IDENTIFIERS, ONEID_MAP, REFUSED, REGISTRY, bronze_table
from cdp.privacy.protect import identifier_hash, keyed_hash_text, load_keys

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
    erasure_id: str
    one_ids: int
    records: int
    keys: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

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


def resolve_subject(spark: SparkSession, seeds: list[tuple[str, str]], one_id: str | None
                    ) -> tuple[set[str], DataFrame, list[tuple[str, str]]]:
    """(one_ids, records (source, record_key), identifiers (type, value)) of the subject."""
    ids = spark.table(IDENTIFIERS).select("source", "record_key", "id_type", "id_value")
    oneid_map = spark.table(ONEID_MAP).select("source", "record_key", "one_id")
    seed_frame = spark.createDataFrame(seeds, "id_type string, id_value string")
    seed_records = ids.join(seed_frame, ["id_type", "id_value"]).select("source", "record_key")
    one_ids = {r["one_id"] for r in oneid_map.join(seed_records, ["source", "record_key"]).select("one_id").collect()}
    if one_id:
        one_ids.add(_survivor(spark, one_id))
    records = (oneid_map.where(F.col("one_id").isin(*one_ids)).select("source", "record_key")
               .unionByName(seed_records).distinct())
    found = ids.join(records, ["source", "record_key"]).select("id_type", "id_value").distinct()
    # Shared values belong to nobody in particular: a store's walk-in phone (refused), a family's phone
    # (a household): the subject's own records go, the other holders' records stay.
    for shared in (REFUSED, HOUSEHOLDS):
        if table_exists(spark, shared):
            found = found.join(spark.table(shared).select("id_type", "id_value"), ["id_type", "id_value"], "left_anti")
    values = sorted({(r["id_type"], r["id_value"]) for r in found.collect()} | set(seeds))
    value_frame = spark.createDataFrame(values, "id_type string, id_value string")
    records = records.unionByName(ids.join(value_frame, ["id_type", "id_value"]).select("source", "record_key")).distinct()
    return one_ids, records.localCheckpoint(), values


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
                by_text: bool = True) -> dict[str, int]:
    """Per table: the subject's rows found by a query, then deleted by one MERGE on their content
    fingerprint. The MERGE's condition (which the Delta log records) names columns, never a value."""
    bronze_keys = {bronze_table(name): record_key(source) for name, source in settings.sources.sources.items()}

    def erase_from(table: str) -> tuple[str, int]:
        fingerprints = matching_rows(spark, table, subject, bronze_keys.get(table), by_text)
        if not fingerprints:
            return table, 0
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
        log.info("erasure: %s: %d rows deleted", table, count)
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
          actor: str | None = None) -> Erasure:
    """Erase one subject everywhere; the tombstone is written before any row is deleted, so a crash
    mid-way is finished by running the same erase again (or, for newly landed data, by bronze).

    The subject: a phone, an e-mail, any identifier (type, value) of conf/model.yaml, or a one_id."""
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
    one_ids, records, values = resolve_subject(spark, seeds, one_id)
    erasure_id = f"erasure-{uuid4().hex[:12]}"
    tombstones = _record_tombstones(spark, hash_key, erasure_id, actor, reason, values, set(seeds))
    keys = [(r["source"], r["record_key"]) for r in records.collect()]
    record_count = len(keys)
    subject = Subject(one_ids, keys, needles(values))
    deleted = delete_rows(spark, settings, subject, erasable_tables(spark))
    result = Erasure(erasure_id, len(one_ids), record_count, tombstones, deleted,
                     round(time.perf_counter() - started, 1))
    audit(spark, "erasure", object=erasure_id, rows=result.total_deleted, actor=actor,
          details={"reason": reason, "one_ids": len(one_ids), "records": record_count, "keys": tombstones,
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
    previous = {key: spark.conf.get(key, None) for key in overrides}
    tables = erasable_tables(spark, ERASED_LAYERS + ("ops",))
    try:
        for key, value in overrides.items():
            spark.conf.set(key, value)
        for table in tables:
            spark.sql(f"VACUUM {table} RETAIN {hours} HOURS")
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
    cutoff = int((time.time() - hours * 3600) * 1000)
    removed = _remove_old_checkpoints(spark, settings.checkpoint_dir, cutoff)
    audit(spark, "vacuum", object=",".join(ERASED_LAYERS + ("ops",)), rows=len(tables), actor=actor,
          details={"retention_hours": hours, "checkpoint_paths_removed": removed})
    return Vacuumed(len(tables), hours, removed)
