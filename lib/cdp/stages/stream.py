"""`cdp stream`: real-time profiles from channel events as their files land (Spark Structured Streaming).

One query follows the landing folders of every source mapped onto the `events` entity (the file
source; each file once, tracked by the query's checkpoint under <lakehouse>/_streams/events). Each
micro-batch:

1. gives the rows bronze's bookkeeping columns and maps and checks them with silver's own code
   (cdp.stages.bronze, cdp.stages.silver.checked_rows): one code path, not a copy. Rows silver would
   refuse are counted, not kept — the daily run reads the same files and quarantines them with a reason;
2. resolves each event to a one_id through the current gold.identity_map (read fresh each batch, so a
   new identity run counts from the next batch), or a provisional id (cdp.realtime);
3. appends the events of the last `stream.keep_days` days to gold.realtime_events — only their
   time, the columns the realtime tags read, and their identifiers' keyed hashes (for re-keying) —
   idempotently (events carrying an identifier of an erased subject, ops.erasure_ledger, stay
   out): a retried batch is the same Delta transaction (txnAppId = the query's id, txnVersion =
   the batch id) and is skipped;
4. recomputes the realtime tags of the batch's persons from their events and MERGEs them into
   gold.realtime_tags (a retried batch computes the same values);
5. appends a row to ops.stream_progress: rows, refused, persons, and the latency from each file's
   landing (its modification time) to the tags' commit.

When the identity map changes (a daily identity and gold run), the stream's next start or batch
re-resolves every kept event — provisional ids learn their person, merged and split persons are re-keyed — and
recomputes the tags of every person whose events moved. Events older than `stream.keep_days` are
dropped then too.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from zoneinfo import ZoneInfo

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.cleanse.mapping import IDS, REASON, Reading
from cdp.conf import Settings
from cdp.conf.sources import Source
from cdp.conf.tags import REALTIME_SOURCE
from cdp.lakehouse import table_exists, table_version
from cdp.privacy.protect import load_keys
from cdp.realtime import (
    hashed_identifiers, kept_columns, person_lookup, realtime_tags, resolved, unidentified,
)
from cdp.stages.bronze import delivered_schema, with_ingestion_metadata, with_position
from cdp.stages.silver import checked_rows
from cdp.tables import (
    CORRUPT_RECORD, ERASURE_LEDGER, IDENTITY_MAP, REALTIME_EVENTS, REALTIME_TAGS, STREAM_PROGRESS,
)

log = logging.getLogger(__name__)

QUERY_NAME = "cdp-events"
TAGS_SCHEMA = "one_id string, tag_code string, value string, tag_version int, as_of date, computed_at timestamp"
PROGRESS_SCHEMA = (
    "query_id string, batch_id long, started_at timestamp, finished_at timestamp, rows long, refused long, "
    "erased long, persons long, provisional long, rekeyed long, identity_version long, latency_p50_s double, "
    "latency_max_s double, seconds double"
)


@dataclass(frozen=True)
class StreamRun:
    batches: int
    rows: int
    seconds: float


def event_sources(settings: Settings) -> dict[str, Source]:
    return {name: s for name, s in settings.sources.sources.items() if s.entity == REALTIME_SOURCE}


def stream_dir(settings: Settings) -> Path:
    return Path(settings.lakehouse) / "_streams" / REALTIME_SOURCE


def landed(spark: SparkSession, settings: Settings, max_files: int) -> DataFrame:
    """Every event source's landing folder as one stream of delivered rows (strings, as bronze reads
    them), with the file's metadata and the source's name."""
    frames = []
    for name, source in event_sources(settings).items():
        reader = (spark.readStream.schema(delivered_schema(source)).option("mode", "PERMISSIVE")
                  .option("columnNameOfCorruptRecord", CORRUPT_RECORD).option("maxFilesPerTrigger", max_files))
        path = str(Path(settings.landing) / source.path)
        frame = reader.option("header", True).csv(path) if source.format == "csv" else reader.json(path)
        frames.append(frame.select("*", "_metadata").withColumn("_source", F.lit(name)))
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


class EventBatches:
    """The foreachBatch function: what each micro-batch does (the module's steps 1–5)."""

    def __init__(self, spark: SparkSession, settings: Settings, query_id: str):
        self.spark, self.settings, self.query_id = spark, settings, query_id
        self.sources = event_sources(settings)
        self.reading = Reading(settings.model, tuple(settings.privacy.purposes))
        self.keys = load_keys(settings)
        self.ranks = {t: i for i, t in enumerate(settings.model.identifier_types)}
        self.library = settings.tags
        self.zone = ZoneInfo(settings.profile.timezone)
        entity_columns = ["channel", *settings.model.entities[REALTIME_SOURCE].fields]  # channel: every mapped row's
        self.columns = kept_columns(self.library, entity_columns)
        self.identity_version = None
        self.lookup: DataFrame | None = None
        self.batches = self.rows = 0

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = datetime.now(timezone.utc)
        spark = self.spark
        rekeyed = self.follow_identity()
        parts = []
        for name, source in self.sources.items():
            rows = batch.where(F.col("_source") == name).drop("_source")
            bronze = rows.transform(with_position).transform(with_ingestion_metadata(name, f"stream-{batch_id}"))
            parts.append(checked_rows(bronze, name, source, self.reading))
        checked = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), parts).localCheckpoint()
        counts = checked.groupBy(F.col(REASON).isNull().alias("fit")).count().collect()
        fit_rows = sum(r["count"] for r in counts if r["fit"])
        refused = sum(r["count"] for r in counts if not r["fit"])
        cutoff = F.date_sub(F.current_date(), self.settings.pipeline.stream.keep_days)
        events = checked.where(F.col(REASON).isNull() & (F.to_date("event_time") >= cutoff))
        people = self.resolve(events)
        erased = self.erased(people)
        people = people.join(erased, ["source", "record_key"], "left_anti")
        rows = (events.join(people, ["source", "record_key"])
                .select("one_id", "provisional", "source", "record_key", *self.columns, "id_hashes",
                        F.col("_file_modified_at").alias("landed_at"), F.current_timestamp().alias("processed_at"),
                        F.lit(batch_id).cast("long").alias("batch_id"))).localCheckpoint()
        self.append_once(rows, REALTIME_EVENTS, batch_id)
        seen = rows.select("one_id", "provisional", "landed_at").distinct().collect()
        persons = sorted({r["one_id"] for r in seen})
        self.refresh_tags(persons)
        finished = datetime.now(timezone.utc)
        latencies = sorted((finished - t.astimezone(timezone.utc)).total_seconds()
                           for t in {r["landed_at"] for r in seen if r["landed_at"]})
        progress = [(self.query_id, batch_id, started, finished, fit_rows + refused, refused, erased.count(), len(persons),
                     len({r["one_id"] for r in seen if r["provisional"]}), rekeyed, self.identity_version,
                     latencies[len(latencies) // 2] if latencies else None, latencies[-1] if latencies else None,
                     (finished - started).total_seconds())]
        self.append_once(spark.createDataFrame(progress, PROGRESS_SCHEMA), STREAM_PROGRESS, batch_id)
        self.batches, self.rows = self.batches + 1, self.rows + fit_rows + refused
        log.info("stream: batch %d: %d rows (%d refused), %d persons", batch_id, fit_rows + refused, refused, len(persons))

    # ------------------------------------------------------------ identity

    def follow_identity(self) -> int:
        """Read the identity map when it changed; then re-resolve every kept event. Returns how many
        events changed person."""
        version = table_version(self.spark, IDENTITY_MAP) if table_exists(self.spark, IDENTITY_MAP) else -1
        if version == self.identity_version:
            return 0
        self.identity_version = version
        if self.lookup is not None:
            self.lookup.unpersist()
        frame = self.spark.table(IDENTITY_MAP) if version >= 0 else self.spark.createDataFrame(
            [], "one_id string, id_hash string")
        self.lookup = person_lookup(frame.select("one_id", "id_hash")).cache()
        return self.rekey() if table_exists(self.spark, REALTIME_EVENTS) else 0

    def resolve(self, events: DataFrame) -> DataFrame:
        identifiers = hashed_identifiers(events, IDS, self.ranks, self.keys)
        people = resolved(identifiers, self.lookup)
        bare = events.select("source", "record_key").join(people, ["source", "record_key"], "left_anti")
        return people.unionByName(unidentified(bare, self.keys))

    def erased(self, people: DataFrame) -> DataFrame:
        """(source, record_key) of the events carrying an identifier of an erased subject
        (ops.erasure_ledger): they stay out, as bronze keeps them out of the daily run."""
        if not table_exists(self.spark, ERASURE_LEDGER):
            return people.select("source", "record_key").limit(0)
        tombstones = self.spark.table(ERASURE_LEDGER).select("key_hash").distinct()
        return (people.select("source", "record_key", F.explode("id_hashes").alias("key_hash"))
                .join(F.broadcast(tombstones), "key_hash").select("source", "record_key").distinct()).localCheckpoint()

    def rekey(self) -> int:
        """Every kept event resolved again through the new map; events older than keep_days dropped;
        the tags of every person who lost or gained events recomputed."""
        spark = self.spark
        kept = spark.table(REALTIME_EVENTS)
        cutoff = F.date_sub(F.current_date(), self.settings.pipeline.stream.keep_days)
        identifiers = kept.select("source", "record_key", F.explode("id_hashes").alias("id_hash"))
        fresh = (identifiers.join(self.lookup, "id_hash", "left")
                 .groupBy("source", "record_key").agg(F.min("one_id").alias("_person")))
        moved = (kept.join(fresh, ["source", "record_key"], "left")
                 .where((F.col("_person").isNotNull() & (F.col("_person") != F.col("one_id")))
                        | (F.to_date("event_time") < cutoff))
                 .select("source", "record_key", "one_id", "_person", (F.to_date("event_time") < cutoff).alias("_old"))
                 ).localCheckpoint()
        count = moved.count()
        if count == 0:
            return 0
        (DeltaTable.forName(spark, REALTIME_EVENTS).alias("t")
         .merge(moved.alias("m"), "t.source = m.source AND t.record_key = m.record_key")
         .whenMatchedDelete(condition="m._old")
         .whenMatchedUpdate(set={"one_id": "m._person", "provisional": "false"})
         .execute())
        touched = {person for r in moved.select("one_id", "_person").distinct().collect()
                   for person in (r["one_id"], r["_person"]) if person is not None}
        self.refresh_tags(sorted(touched))
        log.info("stream: identity map version %s: %d kept events re-keyed or dropped", self.identity_version, count)
        return count

    # ------------------------------------------------------------ writes

    def append_once(self, frame: DataFrame, table: str, batch_id: int) -> None:
        """Append as the batch's one transaction on the table: a retry of the batch is skipped by Delta."""
        (frame.write.format("delta").mode("append").option("txnAppId", self.query_id)
         .option("txnVersion", batch_id).saveAsTable(table))

    def refresh_tags(self, persons: list[str]) -> None:
        """The persons' realtime tags recomputed from their kept events, replacing their rows."""
        if not persons:
            return
        spark = self.spark
        today = datetime.now(self.zone).date()
        events = spark.table(REALTIME_EVENTS).where(F.col("one_id").isin(*persons))
        values = realtime_tags(self.library, events, today, datetime.now(timezone.utc))
        if not table_exists(spark, REALTIME_TAGS):
            spark.createDataFrame([], TAGS_SCHEMA).write.format("delta").saveAsTable(REALTIME_TAGS)
        keys = spark.createDataFrame([(p,) for p in persons], "one_id string")
        staged = (keys.join(values, "one_id", "left").withColumn("_delete", F.col("tag_code").isNull())
                  .unionByName(spark.table(REALTIME_TAGS).join(keys, "one_id").join(
                      values.select("one_id", "tag_code"), ["one_id", "tag_code"], "left_anti")
                      .withColumn("_delete", F.lit(True))))
        columns = {c: f"s.{c}" for c in ("one_id", "tag_code", "value", "tag_version", "as_of", "computed_at")}
        (DeltaTable.forName(spark, REALTIME_TAGS).alias("t")
         .merge(staged.alias("s"), "t.one_id = s.one_id AND t.tag_code <=> s.tag_code")
         .whenMatchedDelete(condition="s._delete")
         .whenMatchedUpdate(set=columns)
         .whenNotMatchedInsert(condition="NOT s._delete", values=columns)
         .execute())


def run_stream(spark: SparkSession, settings: Settings, once: bool = False,
               stop: threading.Event | None = None) -> StreamRun:
    """Follow the landing folders: until stopped (SIGTERM, SIGINT or `stop`), or, with `once`, until
    every file there now is processed."""
    config = settings.pipeline.stream
    checkpoint = stream_dir(settings) / "checkpoint"
    query_id = _query_id(stream_dir(settings))
    handler = EventBatches(spark, settings, query_id)
    handler.follow_identity()  # a start after a daily run re-keys what the stream kept, before new events
    writer = (landed(spark, settings, config.max_files_per_trigger).writeStream.queryName(QUERY_NAME)
              .option("checkpointLocation", str(checkpoint)).foreachBatch(handler))
    writer = writer.trigger(availableNow=True) if once else writer.trigger(
        processingTime=f"{config.trigger_seconds} seconds")
    started = time.perf_counter()
    query = writer.start()
    stop = stop or threading.Event()
    if not once and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(1)
    finally:
        if query.isActive:
            query.stop()  # after the batch in flight: its commits are whole, and the checkpoint says where to resume
    if query.exception() is not None:
        raise query.exception()
    return StreamRun(handler.batches, handler.rows, time.perf_counter() - started)


def _query_id(folder: Path) -> str:
    """The stream's id for Delta's idempotent writes: made once, kept beside its checkpoint."""
    path = folder / "query-id"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"cdp-stream-{uuid.uuid4().hex}\n", encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()
