"""`cdp activate`: deliver audience entries and exits (gold.activation_events) to a marketing tool.

- **What goes.** The log's rows added after the destination's cursor (its Change Data Feed, by
  commit version), oldest first, of one audience or all. Each entry is checked against consent as it
  stands at send time (cdp.activation.consent_now: the daily decision, overridden by the consent
  records the stream saw since); a refused entry is not sent, and the refusal is audited. Exits go.
- **Where.** A webhook (`--to webhook URL`): a JSON POST of up to `chunk` events, `{"events": [...]}`;
  a 2xx acknowledges them. A 5xx, a 408, a 429, a timeout or a refused connection is retried with
  exponential backoff (0.5 s doubling to 30 s) up to `max_attempts`; any other status stops the run
  (the receiver refuses the payload: retrying will not help). A folder (`--to dir DIR`): one JSONL
  file per chunk, named by its versions and position, written whole (temporary file, then rename).
- **At least once.** The cursor (ops.activation_cursors, per destination and audience filter) moves
  past a commit version only when every event of it was acknowledged or refused; a stopped or failed
  run resends from there. Every event carries its deterministic key (`event_key`): a receiver
  deduplicates by it.
- **Audit.** One ops.audit_log row per acknowledged chunk (action `activation`) and per refused entry
  (`activation_refused`, with the reason).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.activation import ENTERED, PAYLOAD, REALTIME_CONSENT_SCHEMA, allowed_now, as_payload, consent_now
from cdp.audit import append_events, event
from cdp.conf import Settings
from cdp.lakehouse import latest_transaction, log_version, read_changes, replace_where, sql_string, table_exists, table_version
from cdp.privacy.consent import CONSENT_STATE_SCHEMA
from cdp.tables import ACTIVATION_CURSORS, ACTIVATION_EVENTS, CONSENT, REALTIME_CONSENT

log = logging.getLogger(__name__)

ALL = "*"  # the audience filter of a destination that takes every audience
CURSOR_SCHEMA = "destination string, audience string, version long, delivered long, refused long, updated_at timestamp"
RETRIED_STATUS = (408, 425, 429)


class DeliveryError(RuntimeError):
    """A destination did not acknowledge: the cursor stays before the events it did not take."""


class Sender(Protocol):
    name: str

    def send(self, events: list[dict], label: str) -> int:
        """Deliver the events; return the attempts it took. Raises DeliveryError."""


@dataclass
class Webhook:
    url: str
    timeout: float = 10.0
    max_attempts: int = 8
    first_backoff: float = 0.5
    max_backoff: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    @property
    def name(self) -> str:
        return f"webhook:{self.url}"

    def send(self, events: list[dict], label: str) -> int:
        body = json.dumps({"events": events}, ensure_ascii=False, default=str).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "X-CDP-Batch": label,
            "Idempotency-Key": hashlib.sha256("|".join(e["event_key"] for e in events).encode()).hexdigest()})
        backoff = self.first_backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                return attempt
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code not in RETRIED_STATUS:
                    raise DeliveryError(f"{self.url} refused the events with HTTP {exc.code} ({exc.reason}); "
                                        "they are not retried: fix the receiver or the payload, then run again") from exc
                why = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, socket.timeout) as exc:
                why = type(getattr(exc, "reason", exc)).__name__
            if attempt < self.max_attempts:
                log.warning("activate: %s: %s, attempt %d of %d; retrying in %.1f s", self.url, why, attempt,
                            self.max_attempts, backoff)
                self.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        raise DeliveryError(f"{self.url} did not acknowledge after {self.max_attempts} attempts (last: {why})")


@dataclass
class Folder:
    path: Path

    @property
    def name(self) -> str:
        return f"dir:{Path(self.path).resolve()}"

    def send(self, events: list[dict], label: str) -> int:
        folder = Path(self.path)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"activation-{label}.jsonl"
        temporary = folder / f".{target.name}.{os.getpid()}.tmp"
        temporary.write_text("".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events),
                             encoding="utf-8")
        temporary.replace(target)
        return 1


def sender(kind: str, target: str, option: str = "--to", **options) -> Sender:
    """The destination of `OPTION KIND TARGET`; ValueError says what is wrong and its fix, naming `option`."""
    fix = f"Fix: {option} webhook https://host/path, or {option} dir /path/to/folder."
    if kind == "webhook":
        if not target.startswith(("http://", "https://")):
            raise ValueError(f"{option} webhook takes an http(s) URL, not '{target}'. {fix}")
        return Webhook(target, **options)
    if kind == "dir":
        return Folder(Path(target))
    raise ValueError(f"{option} takes 'webhook URL' or 'dir DIR', not '{kind}'. {fix}")


@dataclass
class Delivery:
    destination: str
    audience: str
    from_version: int
    to_version: int
    delivered: int = 0
    refused: int = 0
    chunks: int = 0
    attempts: int = 0
    seconds: float = 0.0
    refusals: dict[str, int] = field(default_factory=dict)  # reason → entries


def read_cursor(spark: SparkSession, destination: str, audience: str) -> tuple[int, int, int]:
    """(version, delivered, refused) so far; version -1 for a new destination (everything is new)."""
    if not table_exists(spark, ACTIVATION_CURSORS):
        return -1, 0, 0
    rows = spark.table(ACTIVATION_CURSORS).where(
        (F.col("destination") == destination) & (F.col("audience") == audience)).collect()
    return (rows[0]["version"], rows[0]["delivered"], rows[0]["refused"]) if rows else (-1, 0, 0)


def write_cursor(spark: SparkSession, destination: str, audience: str, version: int, delivered: int,
                 refused: int) -> None:
    frame = spark.createDataFrame([(destination, audience, version, delivered, refused, datetime.now(timezone.utc))],
                                  CURSOR_SCHEMA)
    replace_where(frame, ACTIVATION_CURSORS,
                  f"destination = {sql_string(destination)} AND audience = {sql_string(audience)}")


# what Spark and Delta say when a version's files or log entries are gone (VACUUM, log retention)
GONE = ("FILE_NOT_EXIST", "FileNotFoundException", "DELTA_CHANGE_DATA_FILE_NOT_FOUND", "VERSION_NOT_FOUND",
        "DELTA_VERSIONS_NOT_CONTIGUOUS", "DELTA_FILE_NOT_FOUND")


def logged_after(spark: SparkSession, after: int, up_to: int, audience: str) -> DataFrame:
    """The log's rows added after version `after`, as of version `up_to`, each with `_commit_version`
    (materialised). Read from the change feed; a new destination (after -1) takes the rows the log
    holds, and so does a cursor whose versions the feed no longer holds (a VACUUM removed their change
    files, as it does after an erasure): the rows of `up_to` not in the cursor's version, or all of
    them when that version is gone too — at least once, as always: the receiver dedupes by event_key."""
    def rows_at(version: int) -> DataFrame:
        frame = spark.read.format("delta").option("versionAsOf", int(version)).table(ACTIVATION_EVENTS)
        return frame if audience == ALL else frame.where(F.col("audience") == audience)

    def stamped(frame: DataFrame) -> DataFrame:
        return frame.withColumn("_commit_version", F.lit(int(up_to)).cast("long")).localCheckpoint()

    if after >= 0:
        changes = read_changes(spark, ACTIVATION_EVENTS, after, up_to).where(F.col("_change_type") == "insert")
        if audience != ALL:
            changes = changes.where(F.col("audience") == audience)
        try:
            # a row erased since it was logged (cdp erase) is still in the feed's history: only rows the
            # table holds now go out
            return (changes.drop("_change_type", "_commit_timestamp").dropDuplicates(["event_key"])
                    .join(rows_at(up_to).select("event_key"), "event_key", "left_semi").localCheckpoint())
        except Exception as exc:  # noqa: BLE001 - only "gone" is expected; anything else is raised
            _raise_unless_gone(exc)
        log.warning("activate: the change feed of %s no longer holds versions %d..%d (vacuumed); "
                    "sending the log's rows not in version %d instead", ACTIVATION_EVENTS, after + 1, up_to, after)
        try:
            return stamped(rows_at(up_to).join(rows_at(after).select("event_key"), "event_key", "left_anti"))
        except Exception as exc:  # noqa: BLE001
            _raise_unless_gone(exc)
    return stamped(rows_at(up_to))


def _raise_unless_gone(exc: Exception) -> None:
    if not any(marker in str(exc) for marker in GONE):
        raise exc


def pending(spark: SparkSession, settings: Settings, after: int, up_to: int, audience: str) -> list[dict]:
    """The log's new events after version `after` up to `up_to`, oldest first, each with `allowed`
    (consent at send time) and `_commit_version`."""
    changes = logged_after(spark, after, up_to, audience)
    persons = changes.where(F.col("event") == ENTERED).select("one_id").distinct()
    state = (spark.table(CONSENT) if table_exists(spark, CONSENT)
             else spark.createDataFrame([], CONSENT_STATE_SCHEMA)).join(persons, "one_id", "left_semi")
    realtime = (spark.table(REALTIME_CONSENT) if table_exists(spark, REALTIME_CONSENT)
                else spark.createDataFrame([], REALTIME_CONSENT_SCHEMA)).join(persons, "one_id", "left_semi")
    consent = consent_now(state, realtime)
    rows = (as_payload(changes.join(consent, ["one_id", "purpose"], "left")
                       .withColumn("allowed", allowed_now(settings.privacy.defaults)))
            .orderBy("_commit_version", "occurred_at", "audience", "one_id", "version")
            .select(*PAYLOAD, "status", "allowed", "_commit_version").collect())
    return [r.asDict() for r in rows]


def send_chunk(to: Sender, part: list[dict], first: int, last: int, index: int, audience: str,
               result: Delivery) -> tuple:
    """Send one chunk of payloads (from log versions first..last), count it in `result`, and return
    its audit event. Raises DeliveryError."""
    attempts = to.send(part, f"{first:08d}-{last:08d}-{index:05d}")
    result.chunks, result.attempts, result.delivered = result.chunks + 1, result.attempts + attempts, \
        result.delivered + len(part)
    return event("activation", object=ACTIVATION_EVENTS, rows=len(part), destination=to.name,
                 audience=None if audience == ALL else audience,
                 details={"versions": [first, last], "attempts": attempts,
                          "audiences": sorted({e["audience"] for e in part}),
                          "entered": sum(e["event"] == ENTERED for e in part)})


def deliver(spark: SparkSession, settings: Settings, to: Sender, audience: str = ALL, chunk: int = 500) -> Delivery:
    """One round: everything new since the cursor, delivered or refused; then the cursor moves past
    every version whose events all went (a failure stops the round there, and raises)."""
    started = time.perf_counter()
    after, delivered_before, refused_before = read_cursor(spark, to.name, audience)
    latest = table_version(spark, ACTIVATION_EVENTS)
    result = Delivery(to.name, audience, after, after)
    if latest <= after:
        return result
    events = pending(spark, settings, after, latest, audience)
    going = [e for e in events if e["allowed"]]
    done = after if going else latest  # the versions wholly delivered or refused
    sent: list[tuple] = []
    try:
        for start in range(0, len(going), chunk):
            part = going[start:start + chunk]
            sent.append(send_chunk(to, [{k: e[k] for k in PAYLOAD} for e in part], part[0]["_commit_version"],
                                   part[-1]["_commit_version"], start // chunk, audience, result))
            done = going[start + chunk]["_commit_version"] - 1 if start + chunk < len(going) else latest
    finally:
        refused = [e for e in events if not e["allowed"] and e["_commit_version"] <= done]
        for e in refused:
            reason = "consent withdrawn" if e["status"] == "withdrawn" else "no consent"
            result.refusals[reason] = result.refusals.get(reason, 0) + 1
            sent.append(event("activation_refused", object=e["event_key"], purpose=e["purpose"],
                              audience=e["audience"], rows=1, destination=to.name, status="refused",
                              details={"one_id": e["one_id"], "event": e["event"], "reason": reason}))
        result.refused = len(refused)
        append_events(spark, sent)
        if done > after:
            write_cursor(spark, to.name, audience, done, delivered_before + result.delivered,
                         refused_before + result.refused)
        result.to_version = done
        result.seconds = time.perf_counter() - started
    return result


def follow(spark: SparkSession, settings: Settings, to: Sender, audience: str = ALL, chunk: int = 500,
           interval: float = 1.0, stop: threading.Event | None = None,
           on_round: Callable[[Delivery], None] | None = None) -> int:
    """Deliver round after round until `stop` is set (SIGTERM or Ctrl-C from the CLI); between rounds
    only the log's version is looked at (a listing of its _delta_log). Returns the rounds that
    delivered or refused events (a commit without new events, such as a VACUUM's, moves the cursor
    only)."""
    stop = stop or threading.Event()
    known, rounds = read_cursor(spark, to.name, audience)[0], 0
    while not stop.is_set():
        if table_version(spark, ACTIVATION_EVENTS) > known:
            result = deliver(spark, settings, to, audience, chunk)
            known = result.to_version
            if result.delivered or result.refused:  # not a round that only stepped over other commits
                rounds += 1
                if on_round is not None:
                    on_round(result)
        stop.wait(interval)
    return rounds


class Pusher:
    """Delivery from inside the process that writes the log (`cdp stream --deliver-to`): a batch hands
    over the events it has just appended, and when that commit is the first after the destination's
    cursor they go out at once — no change-feed read, no consent lookup again: the batch evaluated
    the audiences under consent as it stood a moment before (its daily state and every consent
    record the stream has seen, its own batch's included). Otherwise (commits of another writer in
    between, such as a daily gold run, or a replayed batch whose append Delta skipped) a whole
    `deliver` round catches up. Rounds and the writes of the audit and cursor are one at a time
    (`saving`); a push takes only the lock of the state in memory, so it never waits for a flush's commits.

    The audit of the pushes and then the cursor are written by `flush` — the stream's publish
    (stream.publish_seconds when idle, publish_max_seconds while busy) and at stop, outside the
    batches — and before a round: a Delta commit of a second or more on every batch otherwise. A crash in between resends, on restart, what was
    pushed since they were last written, and audits it then: at least once, as always (the receiver
    dedupes by event_key), and no acknowledged delivery without its audit row once the cursor is
    past it."""

    def __init__(self, spark: SparkSession, settings: Settings, to: Sender, audience: str = ALL, chunk: int = 500):
        self.spark, self.settings, self.to, self.audience, self.chunk = spark, settings, to, audience, chunk
        # Two locks, always taken in this order: `saving` for the writes of the audit and the cursor
        # and for the rounds (one at a time, so a cursor is never written after a later one); `lock`
        # for the state in memory, held briefly and never while writing: a push that waited for a
        # flush's two commits waited ~1.5 s (more beside a batch) before the delivery went out.
        self.saving = threading.Lock()
        self.lock = threading.Lock()
        self.cursor: tuple[int, int, int] | None = None  # (version, delivered, refused), as last read or written
        self.delivered = self.failures = 0
        self.logged = False  # whether gold.activation_events exists
        self.unsaved = False  # whether pushes moved the cursor since it was last written
        self.audits: list[tuple] = []  # audit events of the pushes since the cursor was last written

    def catch_up(self) -> Delivery | None:
        """A `deliver` round: everything after the cursor."""
        with self.saving:
            return self._round()

    def behind(self) -> bool:
        """Whether the log has commits after the cursor: one listing of its _delta_log."""
        with self.lock:
            if not self.logged:
                self.logged = table_exists(self.spark, ACTIVATION_EVENTS)
                if not self.logged:
                    return False
            if self.cursor is None:
                self.cursor = read_cursor(self.spark, self.to.name, self.audience)
            return log_version(self.spark, ACTIVATION_EVENTS) > self.cursor[0]

    def push(self, events: list[dict], txn: tuple[str, int]) -> Delivery | None:
        """`events` (as_payload rows, oldest first) were just appended as transaction `txn`. A
        destination that does not acknowledge stops nothing but its own delivery: the cursor stays,
        and the next catch-up resends (None)."""
        with self.lock:
            if self.cursor is None:
                self.cursor = read_cursor(self.spark, self.to.name, self.audience)
            after, delivered_before, refused_before = self.cursor
            version, app_id, txn_version = latest_transaction(self.spark, ACTIVATION_EVENTS)
            pushed = (app_id, txn_version) == txn and version == after + 1
            if pushed:
                started = time.perf_counter()
                going = [{k: e[k] for k in PAYLOAD} for e in events if self.audience in (ALL, e["audience"])]
                result = Delivery(self.to.name, self.audience, after, after)
                audit = []
                try:
                    for start in range(0, len(going), self.chunk):
                        audit.append(send_chunk(self.to, going[start:start + self.chunk], version, version,
                                                start // self.chunk, self.audience, result))
                except DeliveryError as exc:
                    failure = exc
                else:
                    failure = None
                    self.cursor = (version, delivered_before + result.delivered, refused_before)
                    self.unsaved = True
                    self.delivered += result.delivered
                    result.to_version, result.seconds = version, time.perf_counter() - started
                self.audits.extend(audit)
        if not pushed:
            return self.catch_up()
        if failure is not None:
            with self.saving:
                self._failed(failure)
            return None
        return result

    def flush(self) -> None:
        """Write the pushes' audit and the cursor, if pushes moved it since they were last written."""
        with self.saving:
            self._save()

    def _save(self) -> None:
        """(`saving` held.) The audit rows first: a cursor past a delivery its audit row does not
        record is never written."""
        with self.lock:
            audits, self.audits = self.audits, []
            cursor = self.cursor if self.unsaved else None
            self.unsaved = False
        try:
            if audits:
                append_events(self.spark, audits)
                audits = []
            if cursor is not None:
                write_cursor(self.spark, self.to.name, self.audience, *cursor)
        except BaseException:
            with self.lock:  # for the next attempt, before whatever came since
                self.audits[:0] = audits
                self.unsaved = self.unsaved or cursor is not None
            raise

    def _round(self) -> Delivery | None:
        """(`saving` held.)"""
        self._save()  # `deliver` starts from the written cursor
        with self.lock:
            self.cursor = None  # read again after the round: a failed one moved it part of the way
        try:
            result = deliver(self.spark, self.settings, self.to, self.audience, self.chunk)
        except DeliveryError as exc:
            self._failed(exc)
            return None
        with self.lock:
            self.delivered += result.delivered
        return result

    def _failed(self, exc: DeliveryError) -> None:
        """(`saving` held.)"""
        self._save()  # what earlier pushes delivered
        with self.lock:
            self.cursor, self.failures = None, self.failures + 1
        log.warning("activate: %s; the cursor stays before the events not acknowledged, and the stream "
                    "sends them again between batches", exc)
