"""`cdp stream`: real-time profiles and audiences from channel events as their files land (Spark
Structured Streaming).

One query follows the landing folders of every source mapped onto the `events` or the
`consent_events` entity (the file source; each file once, tracked by the query's checkpoint under
<lakehouse>/_streams/events), or their Kafka topics (stream.kafka; each batch's messages are
archived to the landing folder for the daily run; checkpoint under <lakehouse>/_streams/events-kafka).
The query's own plan gives the rows bronze's bookkeeping columns and maps and checks them with
silver's own code (cdp.stages.bronze, cdp.stages.silver.checked_rows): one code path, not a copy,
analysed once. Each micro-batch:

1. counts the rows silver would refuse, and does not keep them — the daily run reads the same files
   and quarantines them with a reason;
2. resolves each event to a one_id through the current gold.identity_map (read fresh each batch, so a
   new identity run counts from the next batch), or a provisional id (cdp.realtime); events carrying
   an identifier of an erased subject (ops.erasure_ledger) stay out;
3. resolves the consent records the same way;
4. computes the realtime tags of the batch's persons from their kept events and the batch's own;
5. evaluates the real-time audiences (cdp.activation: those whose rule names a realtime tag) for the
   persons of its events and consent records, with those tags and that consent: who entered and who
   left since the activation log's last event for them;
6. commits, the activation events first — appended to gold.activation_events and, with a pusher
   (`cdp stream --deliver-to`), delivered at once — then the events of the last `stream.keep_days`
   days to gold.realtime_events (only their time, the columns the realtime tags read, and their
   identifiers' keyed hashes, for re-keying) and the consent records to gold.realtime_consent. Each
   append is the batch's Delta transaction (txnAppId = the query's id, txnVersion = the batch id): a
   retried batch's is skipped, and it computes the same tags and finds no transitions it has logged
   already;
7. keeps its row for ops.stream_progress (rows, refused, persons, activation events, the seconds of
   each step, the latency from each file's landing — its modification time — to the commits) and its
   tags for the next publish: every `stream.publish_seconds` when the stream is idle, at most
   `stream.publish_max_seconds` apart beside batches that run back to back (the stream's
   loop), and at stop, one MERGE of the batches' tags into gold.realtime_tags and one append of their progress rows. Only
   the commits a delivery waits for are made by every batch (each commit costs a second or more).

The batches run without Spark's code generation (`stream.codegen`): their plans' time literals
change every batch, so every batch compiled its plans again (~370 classes, ~5 s) for a few thousand
rows. What reads every kept row (the sweep, re-keying, the tags' read) keeps it on.

When the identity map changes (a daily identity and gold run), the stream's next start or batch
re-resolves every kept event and consent record — provisional ids learn their person, merged and
split persons are re-keyed — and sweeps: every person it holds tags of and every member of a
real-time audience gets their tags recomputed as of today and the audiences evaluated again (the
sweep also runs when the day changes: time-window exits). Rows older than `stream.keep_days` are
dropped then too.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Callable, Protocol
from zoneinfo import ZoneInfo

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cdp.activation import (
    PAYLOAD, activation_rows, as_payload, audience_codes, consent_now, live_state, split_audiences,
    transitions,
)
from cdp.audience.members import audience_frame, select_audience
from cdp.cleanse.mapping import IDS, REASON, Reading
from cdp.conf import ConfigError, Settings
from cdp.conf.sources import Source
from cdp.conf.tags import REALTIME_SOURCE
from cdp.lakehouse import append, filesystem, log_version, table_exists
from cdp.logs import timed_step
from cdp.privacy.consent import CONSENT_STATE_SCHEMA, action_status
from cdp.privacy.protect import load_keys
from cdp.realtime import (
    current_tags, hashed_identifiers, kept_columns, person_lookup, realtime_tags, resolved, unidentified,
)
from cdp.spark import runtime_conf
from cdp.stages.bronze import delivered_schema, with_bookkeeping, with_position
from cdp.stages.silver import checked_rows
from cdp.tags.engine import to_wide
from cdp.tables import (
    ACTIVATION_EVENTS, CONSENT, CORRUPT_RECORD, ERASURE_LEDGER, IDENTITY_MAP, PROFILE, REALTIME_CONSENT,
    REALTIME_EVENTS, REALTIME_TAGS, STREAM_PROGRESS, TAGS,
)

log = logging.getLogger(__name__)

QUERY_NAME = "cdp-events"
TAGS_SCHEMA = "one_id string, tag_code string, value string, tag_version int, as_of date, computed_at timestamp"
PROGRESS_SCHEMA = (
    "query_id string, batch_id long, started_at timestamp, finished_at timestamp, rows long, refused long, "
    "erased long, persons long, provisional long, rekeyed long, identity_version long, latency_p50_s double, "
    "latency_max_s double, seconds double, consents long, activations long, step_seconds string"
)
CHANGED = "NOT (t.value <=> s.value AND t.tag_version <=> s.tag_version AND t.as_of <=> s.as_of)"
CONSENT_SOURCE = "consent_events"  # the entity whose rows the stream also follows: consent as it changes


class Pusher(Protocol):
    """Delivery from the batch (cdp.operations.activate.Pusher): what `cdp stream --deliver-to` passes."""

    def push(self, events: list[dict], txn: tuple[str, int]) -> object: ...

    def catch_up(self) -> object: ...

    def behind(self) -> bool: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class StreamRun:
    batches: int
    rows: int
    seconds: float


def followed_sources(settings: Settings) -> dict[str, Source]:
    """The sources the stream reads: events, and consent records."""
    return {name: s for name, s in settings.sources.sources.items() if s.entity in (REALTIME_SOURCE, CONSENT_SOURCE)}


def stream_sources(settings: Settings) -> dict[str, Source]:
    """The sources the stream reads: the followed ones, or over Kafka those stream.kafka.topics names."""
    followed = followed_sources(settings)
    if not settings.pipeline.stream.kafka.enabled:
        return followed
    return {name: followed[name] for name in kafka_topics(settings).values()}


def stream_dir(settings: Settings) -> Path:
    """The query's folder (its checkpoint and its id): one for the landing folders, another for Kafka,
    so that switching between them starts a query of its own rather than one whose batch ids clash."""
    name = f"{REALTIME_SOURCE}-kafka" if settings.pipeline.stream.kafka.enabled else REALTIME_SOURCE
    return Path(settings.lakehouse) / "_streams" / name


def landed(spark: SparkSession, settings: Settings, max_files: int) -> dict[str, DataFrame]:
    """Each followed source as a stream of delivered rows (strings, as bronze reads them), with a
    `_metadata` of where each came from (the file source's own, or its Kafka equivalent): from the
    landing folders, or from Kafka when stream.kafka names brokers. One streaming source each, in
    the sources' order (a query's checkpoint records its sources by position)."""
    if settings.pipeline.stream.kafka.enabled:
        return landed_kafka(spark, settings)
    frames = {}
    for name, source in followed_sources(settings).items():
        reader = (spark.readStream.schema(delivered_schema(source)).option("mode", "PERMISSIVE")
                  .option("columnNameOfCorruptRecord", CORRUPT_RECORD).option("maxFilesPerTrigger", max_files))
        path = f"{settings.landing.rstrip('/')}/{source.path}"  # as bronze reads it: a local folder or a URI
        frame = reader.option("header", True).csv(path) if source.format == "csv" else reader.json(path)
        frames[name] = frame.select("*", "_metadata")
    return frames


def kafka_topics(settings: Settings) -> dict[str, str]:
    """topic -> source, of stream.kafka.topics: each a followed source delivered as JSON lines (its
    messages are archived as such for the daily run), one topic each, whose landing glob takes the
    archive's files."""
    topics = settings.pipeline.stream.kafka.topics
    where = f"{settings.conf_dir / 'pipeline.yaml'}: key 'stream.kafka.topics'"
    followed = followed_sources(settings)
    if not topics:
        raise ConfigError(f"{where} is empty, but stream.kafka.bootstrap_servers names brokers. Fix: name the topic "
                          f"of each source to follow (source: topic), of {sorted(followed)}.")
    unknown = sorted(set(topics) - set(followed))
    if unknown:
        raise ConfigError(f"{where} names {unknown}, which the stream does not follow. Fix: name sources of "
                          f"the events or consent_events entity: {sorted(followed)}.")
    if len(set(topics.values())) < len(topics):
        raise ConfigError(f"{where} gives two sources one topic. Fix: one topic per source (a message says "
                          "nothing of its source but its topic).")
    if not any(followed[name].entity == REALTIME_SOURCE for name in topics):
        raise ConfigError(f"{where} names no source of the events entity: the stream keeps realtime tags of events. "
                          f"Fix: add one of {sorted(n for n, s in followed.items() if s.entity == REALTIME_SOURCE)}.")
    for name in topics:
        if followed[name].format != "jsonl":
            raise ConfigError(f"{where} names '{name}', whose format is {followed[name].format}: a Kafka message "
                              "is one JSON record, archived to the landing folder as a JSON line for the daily "
                              f"run. Fix: set format: jsonl for '{name}' in sources.yaml, or leave it out of the topics.")
        archive_path(settings, name, "check", 0)
    return {topic: name for name, topic in topics.items()}


def archive_path(settings: Settings, name: str, query_id: str, batch_id: int) -> str:
    """Where a batch's messages of a source are archived: a file its landing glob takes, the first
    '*' of the glob's last part replaced by the query's id and the batch's."""
    pattern = followed_sources(settings)[name].path
    folder, _, last = pattern.rpartition("/")
    if any(c in folder for c in "*?[") or any(c in last for c in "?[") or last.count("*") != 1:
        raise ConfigError(
            f"{settings.conf_dir / 'sources.yaml'}: key 'sources.{name}.path' is '{pattern}': the stream over Kafka "
            "archives each batch's messages as one file the daily run must find, and cannot name one this glob takes. "
            "Fix: a folder and one '*' in the file name (wechat_events/*.jsonl).")
    file = last.replace("*", f"kafka-{query_id}-{batch_id:09d}", 1)
    return f"{settings.landing.rstrip('/')}/{folder + '/' if folder else ''}{file}"


def landed_kafka(spark: SparkSession, settings: Settings) -> dict[str, DataFrame]:
    """Each source's topic as delivered rows (a Kafka source each): each message's value is one
    record, a JSON object of its source's columns, read as the file source reads a JSON line
    (strings; what does not parse is kept whole in the corrupt-record column, for silver's checks
    to refuse), and kept raw in `_value` for the archive. Where it came from stands in for the
    file's metadata: the file is kafka://<topic>/<partition>, its modification time the message's
    timestamp (when the broker took it), its block the offset."""
    kafka = settings.pipeline.stream.kafka
    sources = followed_sources(settings)
    frames = {}
    for topic, name in kafka_topics(settings).items():
        reader = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap_servers)
                  .option("subscribe", topic).option("startingOffsets", kafka.starting_offsets)
                  .option("failOnDataLoss", "true"))
        if kafka.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", kafka.max_offsets_per_trigger)
        for key, value in kafka.options.items():
            reader = reader.option(f"kafka.{key}", value)
        schema = delivered_schema(sources[name])
        record = F.from_json("_value", schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD})
        where = F.struct(F.concat(F.lit("kafka://"), F.col("topic"), F.lit("/"), F.col("partition").cast("string"))
                         .alias("file_path"), F.col("timestamp").alias("file_modification_time"),
                         F.col("offset").alias("file_block_start"))
        frames[name] = (reader.load().withColumn("_value", F.col("value").cast("string"))
                        .select(record.alias("_record"), "_value", where.alias("_metadata"))
                        .select(*[F.col("_record").getField(f.name).alias(f.name) for f in schema.fields], "_value",
                                "_metadata"))
    return frames


def _union(frames: list[DataFrame]) -> DataFrame:
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


class EventBatches:
    """The foreachBatch function: what each micro-batch does (the module's steps 1–6)."""

    def __init__(self, spark: SparkSession, settings: Settings, query_id: str, pusher: Pusher | None = None):
        self.spark, self.settings, self.query_id = spark, settings, query_id
        self.sources = stream_sources(settings)
        self.kafka = settings.pipeline.stream.kafka.enabled
        self.entity_columns: dict[str, list[str]] = {}  # each entity's checked columns (mapped)
        self.reading = Reading(settings.model, tuple(settings.privacy.purposes))
        self.keys = load_keys(settings)
        self.ranks = {t: i for i, t in enumerate(settings.model.identifier_types)}
        self.library = settings.tags
        self.zone = ZoneInfo(settings.profile.timezone)
        entity_columns = ["channel", *settings.model.entities[REALTIME_SOURCE].fields]  # channel: every mapped row's
        self.columns = kept_columns(self.library, entity_columns)
        _, self.audiences = split_audiences(settings.audiences.audiences, self.library)
        self.codes = audience_codes(self.audiences, self.library)
        self._daily: tuple[DataFrame, ...] | None = None
        self._daily_versions: tuple[int, ...] | None = None
        self.identity_version = None
        self.swept_on = None
        self.lookup: DataFrame | None = None
        self.pusher = pusher
        self.present: set[str] = set()  # tables known to exist
        # table -> (its version, what the stream keeps of it): the erased identifiers, the realtime
        # audiences' membership (advanced by the stream's own appends), gold.realtime_consent
        self.kept: dict[str, tuple[int, DataFrame]] = {}
        self.batches = self.rows = 0
        self.pending: list[DataFrame] = []  # the batches' realtime tags since the last publish (materialised)
        self.progress: list[tuple] = []  # the progress rows since the last publish
        self.progress_floor: int | None = None  # the last batch whose progress row is written
        self.published_at = time.monotonic()
        self.state = threading.Lock()  # pending and progress, between the batches and a publish (held briefly)
        self.writing = threading.Lock()  # a publish's writes, and the sweep's MERGE of the tags: one at a time
        self.inline = True  # publish from the batch; run_stream's loop publishes instead while it follows
        self.committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdp-stream-commit")
        self.running, self.ended = False, 0.0  # whether a batch runs; when the last one ended (monotonic)

    def mapped(self, landed_rows: dict[str, DataFrame]) -> DataFrame:
        """The query's input as silver maps and checks it (cdp.stages.silver.checked_rows: one code
        path), each row with its entity (`_entity`): part of the query's plan, analysed once when it
        starts. Built in every batch instead, the mapping's plans took 1.4–1.5 s of the driver's
        time each batch. A streamed row's line is its block (a file's split start; a message's
        offset): bronze numbers a file's lines with a window, which a stream has not."""
        frames: list[DataFrame] = []
        self.entity_columns = {}
        carry = ("_value",) if self.kafka else ()
        for name, source in self.sources.items():
            bronze = (with_position(landed_rows[name], order=False).withColumnRenamed("_block", "_line")
                      .transform(with_bookkeeping(name, "stream")))
            checked = checked_rows(bronze, name, source, self.reading, carry)
            known = self.entity_columns.setdefault(source.entity, [])
            known.extend(c for c in checked.columns if c not in known)
            frames.append(checked.withColumn("_entity", F.lit(source.entity)))
        return _union(frames)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        self.running = True
        try:
            self.run_batch(batch, batch_id)
        finally:
            self.running, self.ended = False, time.monotonic()
        if self.inline:
            self.publish(due_only=True)

    def run_batch(self, batch: DataFrame, batch_id: int) -> None:
        started = datetime.now(timezone.utc)
        spark = self.spark
        seconds: dict[str, float] = {}
        log.info("stream: batch %d started", batch_id)
        with timed_step("stream", "identity", seconds):
            rekeyed = self.follow_identity()
            if self.swept_on != self.today():
                self.sweep()
        with timed_step("stream", "map", seconds):
            # read and mapped once (one job), each entity's rows then taken from the materialised batch
            mapped = batch.localCheckpoint()
            checked = {entity: mapped.where(F.col("_entity") == entity).select(*columns)
                       for entity, columns in self.entity_columns.items()}
            counts = {(r["_entity"], r["fit"]): r["count"] for r in mapped.groupBy(
                "_entity", F.col(REASON).isNull().alias("fit")).count().collect()}
            fit_rows = sum(n for (_, fit), n in counts.items() if fit)
            refused = sum(n for (_, fit), n in counts.items() if not fit)
        if self.kafka:
            with timed_step("stream", "archive", seconds):
                self.archive(mapped.select("source", "_value", "_file", "_line"), batch_id)
        with timed_step("stream", "events", seconds):
            cutoff = F.date_sub(F.current_date(), self.settings.pipeline.stream.keep_days)
            events = checked[REALTIME_SOURCE].where(F.col(REASON).isNull() & (F.to_date("event_time") >= cutoff))
            people, n_erased = self.unerased(self.resolve(events), count=True)
            rows = (events.join(people, ["source", "record_key"])
                    .select("one_id", "provisional", "source", "record_key", *self.columns, "id_hashes",
                            F.col("_file_modified_at").alias("landed_at"), F.current_timestamp().alias("processed_at"),
                            F.lit(batch_id).cast("long").alias("batch_id"))).localCheckpoint()
        with timed_step("stream", "consent", seconds):
            consents = (self.consent_rows(checked[CONSENT_SOURCE], batch_id)
                        if counts.get((CONSENT_SOURCE, True)) else None)
            touched = rows.select("one_id", "provisional", "landed_at", F.lit(True).alias("event"))
            if consents is not None:
                touched = touched.unionByName(
                    consents.select("one_id", "provisional", "landed_at", F.lit(False).alias("event")))
            seen = touched.distinct().collect()
        persons = sorted({r["one_id"] for r in seen if r["event"]})
        moved = sorted({r["one_id"] for r in seen})
        acted = self.frame_of(moved) if moved else None
        # The kept events commit while the tags and audiences are computed (their driver's work
        # leaves a core idle): a read of the kept events that sees them counts each event once.
        keeping = self.committer.submit(self.append_once, rows, REALTIME_EVENTS, batch_id)
        try:
            with timed_step("stream", "tags", seconds):
                # of everyone the batch moved, from the events kept so far and the batch's own
                values = self.tags_of(acted, rows) if acted is not None else None
            with timed_step("stream", "audiences", seconds):
                landed = spark.createDataFrame(
                    sorted({(r["one_id"], r["landed_at"]) for r in seen if r["landed_at"]}),
                    "one_id string, landed_at timestamp").groupBy("one_id").agg(F.min("landed_at").alias("landed_at"))
                activations, logged = self.evaluate(acted, f"{self.query_id}:{batch_id}", landed, values,
                                                    consents) if acted is not None else (None, [])
            with timed_step("stream", "write", seconds):
                self.write(batch_id, keeping, consents if any(not r["event"] for r in seen) else None,
                           activations, logged)
        finally:
            wait([keeping])  # a failed batch still leaves no commit of its own running
        finished = datetime.now(timezone.utc)
        latencies = sorted((finished - t.astimezone(timezone.utc)).total_seconds()
                           for t in {r["landed_at"] for r in seen if r["landed_at"]})
        progress = ((
            self.query_id, batch_id, started, finished, fit_rows + refused, refused, n_erased, len(persons),
            len({r["one_id"] for r in seen if r["provisional"]}), rekeyed, self.identity_version,
            latencies[len(latencies) // 2] if latencies else None, latencies[-1] if latencies else None,
            (finished - started).total_seconds(), sum(1 for r in seen if not r["event"]), len(logged),
            json.dumps(seconds, sort_keys=True)))
        with self.state:
            if values is not None and persons:
                self.pending.append(values)
            self.progress.append(progress)
        self.batches, self.rows = self.batches + 1, self.rows + fit_rows + refused
        log.info("stream: batch %d: %d rows (%d refused), %d persons, %d activation events; %s", batch_id,
                 fit_rows + refused, refused, len(persons), len(logged), seconds)

    def archive(self, rows: DataFrame, batch_id: int) -> None:
        """Over Kafka: the batch's messages of each source, as delivered, one JSON line each in offset
        order, in one file its landing glob takes (archive_path), so the daily run ingests them as it
        ingests any delivery (bronze, silver's checks and quarantine, identity). Written under a
        hidden name and renamed; a replayed batch finds its file whole and leaves it."""
        by_source: dict[str, list[str]] = {}
        for row in rows.orderBy("source", "_file", "_line").collect():
            by_source.setdefault(row["source"], []).append(row["_value"] or "")
        for name, values in by_source.items():
            data = "".join(f"{v}\n" for v in values).encode("utf-8")
            target = archive_path(self.settings, name, self.query_id, batch_id)
            fs, path = filesystem(self.spark, target)
            if fs.exists(path) and fs.getFileStatus(path).getLen() == len(data):
                continue
            hidden = path.getParent().toString() + "/." + path.getName() + ".tmp"
            temporary = self.spark.sparkContext._jvm.org.apache.hadoop.fs.Path(hidden)
            out = fs.create(temporary, True)
            try:
                out.write(bytearray(data))
            finally:
                out.close()
            fs.delete(path, False)
            if not fs.rename(temporary, path):
                raise OSError(f"stream: could not rename {hidden} to {target}")
            log.info("stream: batch %d: %d messages of %s archived to %s", batch_id, len(values), name, target)

    def busy(self) -> bool:
        """Whether batches run back to back: one runs now, or the last ended less than a trigger
        interval (and a second) ago. (The query's own status said idle between most batches.)"""
        return self.running or time.monotonic() - self.ended < self.settings.pipeline.stream.trigger_seconds + 1

    def publish(self, due_only: bool = False, busy: bool = False) -> None:
        """What the batches leave to a periodic write: one MERGE of the realtime tags the batches since
        the last publish computed (each person's from the latest batch that moved them) into
        gold.realtime_tags, the progress rows of those batches as one append, and the pusher's audit
        rows and cursor. While the stream follows, run_stream's loop publishes, beside the batches
        rather than between them: a publish (~3–6 s of commits) held back every file that landed
        meanwhile. A crash before a publish loses nothing the tags are made of: the batches
        commit their events, and the next start's sweep recomputes everyone's. A progress row of a
        batch replayed after a crash, whose row was written before it, is not written twice.
        `due_only`: only when a batch came since the last publish and `publish_seconds` have passed
        since it — `publish_max_seconds` while the stream is `busy` (batches back to back, which a
        publish beside them slows by seconds: its commits take the same two cores)."""
        config = self.settings.pipeline.stream
        with self.writing:
            with self.state:
                waited = time.monotonic() - self.published_at
                if due_only and not (self.progress and waited >= (
                        config.publish_max_seconds if busy else config.publish_seconds)):
                    return
                pending, progress = self.pending, self.progress
                self.pending, self.progress = [], []
            self._publish(pending, progress)

    def _publish(self, pending: list[DataFrame], progress: list[tuple]) -> None:
        started, seconds = time.perf_counter(), {}
        if pending:
            with timed_step("stream", "publish tags", seconds):
                values = reduce(DataFrame.unionByName, [
                    frame.withColumn("_batch", F.lit(n)) for n, frame in enumerate(pending)])
                latest = (values.withColumn("_last", F.max("_batch").over(Window.partitionBy("one_id")))
                          .where(F.col("_batch") == F.col("_last")).drop("_batch", "_last").localCheckpoint())
                self.merge_tags(latest.select("one_id").distinct(), latest)
        with timed_step("stream", "publish progress", seconds):
            if self.progress_floor is None:
                last = (self.spark.table(STREAM_PROGRESS).where(F.col("query_id") == self.query_id)
                        .agg(F.max("batch_id")).first()[0] if self.exists(STREAM_PROGRESS) else None)
                self.progress_floor = -1 if last is None else last
            rows = [row for row in progress if row[1] > self.progress_floor]
            if rows:
                self.append_once(self.spark.createDataFrame(rows, PROGRESS_SCHEMA), STREAM_PROGRESS, rows[-1][1])
                self.progress_floor = rows[-1][1]
        if self.pusher is not None:  # the pushes' audit and cursor: so an idle stream does not hold them back
            with timed_step("stream", "publish audit", seconds):
                self.pusher.flush()
        self.published_at = time.monotonic()
        log.info("stream: published the realtime tags and %d progress rows in %.1fs %s", len(rows),
                 time.perf_counter() - started, seconds)

    def write(self, batch_id: int, keeping: Future, consents: DataFrame | None, activations: DataFrame | None,
              logged: list[dict]) -> None:
        """The batch's commits: the activation events (with a pusher, delivered as soon as they are
        logged), the consent records, and the kept events' append under way (`keeping`) waited for.
        Each is the batch's Delta transaction, skipped on a replay. The tags wait for the next publish."""
        if logged:
            self.log_activations(activations, logged, (f"{self.query_id}-activation", batch_id))
        elif self.pusher is not None and self.pusher.behind():
            self.pusher.catch_up()  # what another writer (a daily run) logged since
        if consents is not None:
            self.append_once(consents, REALTIME_CONSENT, batch_id)
        keeping.result()

    def today(self):
        return datetime.now(self.zone).date()

    def frame_of(self, persons: list[str]) -> DataFrame:
        return self.spark.createDataFrame([(p,) for p in persons], "one_id string")

    # ------------------------------------------------------------ identity

    def follow_identity(self) -> int:
        """Read the identity map when it changed; then re-resolve every kept event and consent record,
        and sweep. Returns how many rows changed person."""
        version = self.version(IDENTITY_MAP)
        if version == self.identity_version:
            return 0
        self.identity_version = version
        if self.lookup is not None:
            self.lookup.unpersist()
        frame = self.spark.table(IDENTITY_MAP) if version >= 0 else self.spark.createDataFrame(
            [], "one_id string, id_hash string")
        self.lookup = person_lookup(frame.select("one_id", "id_hash")).cache()
        with code_generation(self.spark, True):  # over every kept row: compiled code pays for itself
            count = sum(self.rekey(table, time_column) for table, time_column in
                        ((REALTIME_EVENTS, "event_time"), (REALTIME_CONSENT, "occurred_at")) if self.exists(table))
        if count:
            log.info("stream: identity map version %s: %d kept rows re-keyed or dropped", self.identity_version, count)
        self.sweep()  # the daily run may have changed profiles, daily tags and consent: every audience member again
        return count

    def resolve(self, rows: DataFrame) -> DataFrame:
        identifiers = hashed_identifiers(rows, IDS, self.ranks, self.keys)
        people = resolved(identifiers, self.lookup)
        bare = rows.select("source", "record_key").join(people, ["source", "record_key"], "left_anti")
        return people.unionByName(unidentified(bare, self.keys))

    def unerased(self, people: DataFrame, count: bool = False) -> tuple[DataFrame, int]:
        """`people` without the rows of erased subjects, and (`count`) how many those were."""
        erased = self.erased(people)
        if erased is None:
            return people, 0
        return people.join(erased, ["source", "record_key"], "left_anti"), erased.count() if count else 0

    def erased(self, people: DataFrame) -> DataFrame | None:
        """(source, record_key) of the rows carrying an identifier of an erased subject
        (ops.erasure_ledger): they stay out, as bronze keeps them out of the daily run. None while
        nobody was ever erased."""
        if not self.exists(ERASURE_LEDGER):
            return None
        tombstones = self.per_version(  # read again after each erasure
            ERASURE_LEDGER, lambda: self.spark.table(ERASURE_LEDGER).select("key_hash").distinct().cache())
        return (people.select("source", "record_key", F.explode("id_hashes").alias("key_hash"))
                .join(F.broadcast(tombstones), "key_hash").select("source", "record_key").distinct()).localCheckpoint()

    def rekey(self, table: str, time_column: str) -> int:
        """Every kept row of `table` resolved again through the new map; rows older than keep_days dropped."""
        kept = self.spark.table(table)
        cutoff = F.date_sub(F.current_date(), self.settings.pipeline.stream.keep_days)
        identifiers = kept.select("source", "record_key", F.explode("id_hashes").alias("id_hash"))
        fresh = (identifiers.join(self.lookup, "id_hash", "left")
                 .groupBy("source", "record_key").agg(F.min("one_id").alias("_person")))
        old = F.to_date(time_column) < cutoff
        moved = (kept.join(fresh, ["source", "record_key"], "left")
                 .where((F.col("_person").isNotNull() & (F.col("_person") != F.col("one_id"))) | old)
                 .select("source", "record_key", "_person", old.alias("_old"))).localCheckpoint()
        count = moved.count()
        if count:
            (DeltaTable.forName(self.spark, table).alias("t")
             .merge(moved.alias("m"), "t.source = m.source AND t.record_key = m.record_key")
             .whenMatchedDelete(condition="m._old")
             .whenMatchedUpdate(set={"one_id": "m._person", "provisional": "false"})
             .execute())
        return count

    # ------------------------------------------------------------ consent and audiences

    def consent_rows(self, checked: DataFrame, batch_id: int) -> DataFrame:
        """The batch's consent records of the last keep_days days, resolved to a person: what
        gold.realtime_consent keeps (activation checks it at send time until the daily run folds them in)."""
        cutoff = F.date_sub(F.current_date(), self.settings.pipeline.stream.keep_days)
        fit = checked.where(F.col(REASON).isNull() & (F.to_date("occurred_at") >= cutoff))
        people, _ = self.unerased(self.resolve(fit))
        rows = (fit.join(people, ["source", "record_key"])
                .select("one_id", "provisional", "purpose", action_status(F.col("action")).alias("status"), "occurred_at", "source",
                        "record_key", "id_hashes", F.col("_file_modified_at").alias("landed_at"),
                        F.current_timestamp().alias("processed_at"), F.lit(batch_id).cast("long").alias("batch_id"))
                ).localCheckpoint()
        return rows

    def sweep(self) -> int:
        """Every person the stream holds events or tags of, and every member of a realtime audience: tags
        recomputed as of today (a time window moved, a day began) and audiences evaluated again — the
        exits no new event would bring."""
        with code_generation(self.spark, True):  # over everyone: compiled code pays for itself
            return self._sweep()

    def _sweep(self) -> int:
        spark = self.spark
        self.swept_on = self.today()
        persons = spark.createDataFrame([], "one_id string")
        for table in (REALTIME_EVENTS, REALTIME_TAGS):  # events re-keyed to a person; tags of a person re-keyed away
            if self.exists(table):
                persons = persons.unionByName(spark.table(table).select("one_id"))
        if self.exists(ACTIVATION_EVENTS) and self.audiences:
            persons = persons.unionByName(self.live(None).where(F.col("last_event") == "entered").select("one_id"))
        persons = persons.distinct().localCheckpoint()
        values = None
        if self.exists(REALTIME_EVENTS):
            values = self.tags_of(persons, None)
        with self.writing:  # after a publish under way, never beside it: its older tags would land last
            if values is not None:
                self.merge_tags(persons, values)
            with self.state:
                self.pending.clear()  # every person with events was among them, as of now
        rows, logged = self.evaluate(persons, f"{self.query_id}:sweep:{datetime.now(timezone.utc).isoformat()}",
                                     None, values, None)
        self.log_activations(rows, logged, None)
        return len(logged)

    def live(self, persons: DataFrame | None) -> DataFrame:
        """The realtime audiences' membership as the activation log says (of `persons`, or everyone's),
        from the state the stream keeps of it: read from the log once, then advanced by the stream's
        own appends (log_activations), and read again whenever another writer committed to the log.
        Read back every batch instead, the log (a file more per batch) cost a snapshot update and a
        scan of all its files for each batch's persons."""
        state = self.per_version(ACTIVATION_EVENTS, lambda: live_state(
            self.spark.table(ACTIVATION_EVENTS).where(F.col("audience").isin(*self.audiences))).localCheckpoint())
        return state if persons is None else state.join(persons, "one_id", "left_semi")

    def kept_consent(self, persons: DataFrame) -> DataFrame | None:
        """The persons' rows of gold.realtime_consent, from a copy read once per version of the table
        (consent records are few; a Delta read of it cost each batch ~0.2 s). None: no table yet."""
        if not self.exists(REALTIME_CONSENT):
            return None
        return self.per_version(REALTIME_CONSENT, lambda: self.spark.table(REALTIME_CONSENT).localCheckpoint()).join(
            persons, "one_id", "left_semi")

    def per_version(self, table: str, read: Callable[[], DataFrame]) -> DataFrame:
        """What the stream keeps of `table` (`read` from it, materialised), read again only when the
        table has another version."""
        version = self.version(table)
        kept = self.kept.get(table)
        if kept is None or kept[0] != version:
            if kept is not None:
                kept[1].unpersist()
            kept = self.kept[table] = (version, read())
        return kept[1]

    def daily_side(self) -> tuple[DataFrame, DataFrame, DataFrame] | None:
        """(profile, daily tags wide over the codes the realtime audiences read, consent state) of
        everyone, cached until a gold run writes a new version of one of them (a stream-static join)."""
        spark = self.spark
        if not self.exists(PROFILE):
            return None
        versions = tuple(self.version(t) for t in (PROFILE, TAGS, CONSENT))
        if versions != self._daily_versions:
            for frame in self._daily or ():
                frame.unpersist()
            empty = "one_id string, tag_code string, value string"
            daily = to_wide(spark.table(TAGS) if versions[1] >= 0 else spark.createDataFrame([], empty),
                            self.library, self.codes)
            state = spark.table(CONSENT) if versions[2] >= 0 else spark.createDataFrame([], CONSENT_STATE_SCHEMA)
            self._daily = tuple(f.cache() for f in (spark.table(PROFILE), daily, state))
            self._daily_versions = versions
        return self._daily

    def evaluate(self, persons: DataFrame, ref: str, landed: DataFrame | None, values: DataFrame | None,
                 consents: DataFrame | None) -> tuple[DataFrame | None, list[dict]]:
        """The realtime audiences for `persons`: who entered and who exited since the log's last event
        for them — the log's rows to append (materialised), and the same in payload form, oldest
        first. `values`: their realtime tags, just computed from their kept events (None: no events
        are kept yet; gold.realtime_tags, published every few batches, is not read); `consents`: the
        batch's consent records, not yet appended."""
        spark = self.spark
        daily_side = self.daily_side() if self.audiences else None
        if daily_side is None:
            return None, []
        persons = F.broadcast(persons)
        profile, daily, state = (f.join(persons, "one_id", "left_semi") for f in daily_side)
        stream = values.select("one_id", "tag_code", "value") if values is not None else spark.createDataFrame(
            [], "one_id string, tag_code string, value string")
        frame = audience_frame(profile, current_tags(self.library, daily, stream, self.codes), self.today())
        realtime = self.kept_consent(persons)
        if consents is not None:
            realtime = consents if realtime is None else realtime.unionByName(consents)
        consent = consent_now(state, realtime)
        defaults = self.settings.privacy.defaults
        current = reduce(DataFrame.unionByName, [
            select_audience(frame, audience, self.library, consent, defaults[audience.purpose]).members
            .select(F.lit(name).alias("audience"), "one_id") for name, audience in self.audiences.items()])
        live = self.live(persons) if self.exists(ACTIVATION_EVENTS) else spark.createDataFrame(
            [], "audience string, one_id string, last_event string, version int")
        rows = activation_rows(transitions(current, live), {n: a.purpose for n, a in self.audiences.items()},
                               datetime.now(timezone.utc), "stream", ref, landed).localCheckpoint()
        return rows, [r.asDict() for r in as_payload(rows).orderBy("occurred_at", "audience", "one_id", "version")
                      .select(*PAYLOAD).collect()]

    def log_activations(self, rows: DataFrame | None, logged: list[dict], txn: tuple[str, int] | None) -> None:
        """Append the evaluated entries and exits to gold.activation_events (as one transaction of the
        batch); then hand them to the pusher, if the stream delivers."""
        if not logged:
            return
        kept = self.kept.get(ACTIVATION_EVENTS)
        append(rows, ACTIVATION_EVENTS, txn, change_feed=True)
        self.present.add(ACTIVATION_EVENTS)
        if self.pusher is not None:  # first: nothing else stands between the commit and the delivery
            if txn is None:
                self.pusher.catch_up()
            else:
                self.pusher.push(logged, txn)
        if kept is not None and self.version(ACTIVATION_EVENTS) == kept[0] + 1:  # this append alone came since
            moved = rows.select("audience", "one_id", F.col("event").alias("last_event"), "version")
            self.kept[ACTIVATION_EVENTS] = (kept[0] + 1, kept[1].join(moved, ["audience", "one_id"], "left_anti")
                                            .unionByName(moved).localCheckpoint())
        else:  # skipped (a replayed batch's), or another writer's commit came between: read it again
            self.kept.pop(ACTIVATION_EVENTS, None)

    # ------------------------------------------------------------ writes

    def append_once(self, frame: DataFrame, table: str, batch_id: int) -> None:
        """Append as the batch's one transaction on the table: a retry of the batch is skipped by Delta."""
        append(frame, table, (self.query_id, batch_id))
        self.present.add(table)

    def tags_of(self, persons: DataFrame, batch_rows: DataFrame | None) -> DataFrame:
        """The persons' realtime tags from their kept events (and `batch_rows`, the batch's events not
        yet appended; a replayed batch's rows are kept already and count once), materialised."""
        spark = self.spark
        persons = F.broadcast(persons)
        events = spark.table(REALTIME_EVENTS).join(persons, "one_id", "left_semi") if self.exists(REALTIME_EVENTS) else None
        if batch_rows is not None:
            events = batch_rows if events is None else events.unionByName(batch_rows.select(*events.columns))
        with code_generation(spark, True):  # it reads every kept event: compiled code pays for itself (~30 %)
            return realtime_tags(self.library, events, self.today(), datetime.now(timezone.utc)).localCheckpoint()

    def merge_tags(self, persons: DataFrame, values: DataFrame) -> None:
        """Replace the persons' rows of gold.realtime_tags with `values`."""
        spark = self.spark
        if not self.exists(REALTIME_TAGS):
            spark.createDataFrame([], TAGS_SCHEMA).write.format("delta").saveAsTable(REALTIME_TAGS)
            self.present.add(REALTIME_TAGS)
        persons = F.broadcast(persons)
        staged = (persons.join(values, "one_id", "left").withColumn("_delete", F.col("tag_code").isNull())
                  .unionByName(spark.table(REALTIME_TAGS).join(persons, "one_id", "left_semi").join(
                      values.select("one_id", "tag_code"), ["one_id", "tag_code"], "left_anti")
                      .withColumn("_delete", F.lit(True))))
        columns = {c: f"s.{c}" for c in ("one_id", "tag_code", "value", "tag_version", "as_of", "computed_at")}
        (DeltaTable.forName(spark, REALTIME_TAGS).alias("t")
         .merge(staged.alias("s"), "t.one_id = s.one_id AND t.tag_code <=> s.tag_code")
         .whenMatchedDelete(condition="s._delete")
         .whenMatchedUpdate(condition=CHANGED, set=columns)  # an unchanged value keeps its row and computed_at
         .whenNotMatchedInsert(condition="NOT s._delete", values=columns)
         .execute())

    # ------------------------------------------------------------ tables

    def exists(self, table: str) -> bool:
        """Whether the table exists, asked of the catalog until it does (tables appear; none is dropped)."""
        if table not in self.present and table_exists(self.spark, table):
            self.present.add(table)
        return table in self.present

    def version(self, table: str) -> int:
        return log_version(self.spark, table) if self.exists(table) else -1


def code_generation(spark: SparkSession, on: bool):
    """Spark's code generation (whole-stage, and of expressions: interpreted when off) on or off for
    a block (a context manager). Off suits a micro-batch: its plans are compiled again every batch
    (the time literals in them change), which costs more than interpreting a few thousand rows."""
    return runtime_conf(spark, {"spark.sql.codegen.wholeStage": "true" if on else "false",
                                "spark.sql.codegen.factoryMode": "FALLBACK" if on else "NO_CODEGEN"})


def run_stream(spark: SparkSession, settings: Settings, once: bool = False,
               stop: threading.Event | None = None, pusher: Pusher | None = None) -> StreamRun:
    """Follow the landing folders: until stopped (SIGTERM, SIGINT or `stop`), or, with `once`, until
    every file there now is processed. `pusher`: deliver each batch's activation events as it logs
    them, and between batches whatever else the log gained (a daily run's, the start's sweep's)."""
    config = settings.pipeline.stream
    checkpoint = stream_dir(settings) / "checkpoint"
    query_id = _query_id(stream_dir(settings))
    handler = EventBatches(spark, settings, query_id, pusher)
    # A batch is seconds of events: a few shuffle partitions, and no adaptive execution, whose
    # re-planning submitted a job per query stage — about 20 jobs in an audience evaluation of a few
    # hundred persons (batches 6.5 -> 5.3 s median at 200 events/s; docs/performance.md)
    small = {"spark.sql.shuffle.partitions": str(config.shuffle_partitions), "spark.sql.adaptive.enabled": "false"}
    if "://" not in settings.landing or settings.landing.startswith("file:"):
        # Each trigger the file source lists every file its glob matches (the folder's, not only the
        # new ones): past 32, as a Spark job of a task per file (~0.2 s between batches, measured).
        # On a local folder the driver lists a thousand in less; an object store keeps Spark's way.
        small["spark.sql.sources.parallelPartitionDiscovery.threshold"] = str(max(32, config.max_files_per_trigger))
    with code_generation(spark, config.codegen), runtime_conf(spark, small):
        handler.follow_identity()  # a start after a daily run re-keys what the stream kept, before new events
        writer = (handler.mapped(landed(spark, settings, config.max_files_per_trigger)).writeStream.queryName(QUERY_NAME)
                  .option("checkpointLocation", str(checkpoint)).foreachBatch(handler))
        writer = writer.trigger(availableNow=True) if once else writer.trigger(
            processingTime=f"{config.trigger_seconds} seconds")
        started = time.perf_counter()
        query = writer.start()
        stop = stop or threading.Event()
        if not once and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        handler.inline = once
        try:
            while query.isActive and not stop.is_set():
                query.awaitTermination(1)
                if not once:  # beside a batch in flight, too, once publish_max_seconds have passed
                    handler.publish(due_only=True, busy=handler.busy())
                    if not query.status["isTriggerActive"] and pusher is not None and pusher.behind():
                        pusher.catch_up()  # between batches
        finally:
            if query.isActive:
                query.stop()  # after the batch in flight: its commits are whole, and the checkpoint says where to resume
        failure = query.exception()
        try:  # what the batches left to the next publish, and the pusher's audit and cursor
            handler.publish()
            if pusher is not None:
                pusher.flush()
        except Exception:
            if failure is None:
                raise
            log.exception("stream: the tags and progress rows could not be published after the failed batch")
        finally:
            handler.committer.shutdown()
    if failure is not None:
        raise failure
    if pusher is not None and pusher.behind():
        pusher.catch_up()
    return StreamRun(handler.batches, handler.rows, time.perf_counter() - started)


def _query_id(folder: Path) -> str:
    """The stream's id for Delta's idempotent writes: made once, kept beside its checkpoint."""
    path = folder / "query-id"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"cdp-stream-{uuid.uuid4().hex}\n", encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()
