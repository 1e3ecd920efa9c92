"""ops.stage_cursors: the Delta version of each input table a stage has consumed, so its next run
reads only the commits after it (Change Data Feed), and the configuration it consumed it under."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cdp.lakehouse import ensure_change_feed, replace_where, sql_string, table_exists, table_version
from cdp.tables import STAGE_CURSORS

# A cursor row a stage writes before its first table and drops with its new cursors: found by the
# next run, it says the last one stopped while publishing.
PUBLISHING = "(publishing)"
CURSOR_SCHEMA = "stage string, input_table string, version bigint, fingerprint string, accepted bigint, run_id string"


@dataclass(frozen=True)
class Cursor:
    """A stage has consumed `input_table` up to and including `version`, under the configuration whose
    fingerprint it names. `accepted`: silver's running count of the input's rows it accepted."""

    input_table: str
    version: int
    fingerprint: str
    accepted: int | None = None


def read_cursors(spark: SparkSession, stage: str) -> dict[str, Cursor]:
    if not table_exists(spark, STAGE_CURSORS):
        return {}
    rows = spark.table(STAGE_CURSORS).where(F.col("stage") == stage).collect()
    return {r["input_table"]: Cursor(r["input_table"], r["version"], r["fingerprint"], r["accepted"]) for r in rows}


def write_cursors(spark: SparkSession, stage: str, cursors: list[Cursor], run_id: str) -> None:
    """Replace the stage's cursors in one commit: a run that fails before this leaves the old ones,
    and its rerun reads the same changes again (every stage applies them idempotently)."""
    rows = [(stage, c.input_table, c.version, c.fingerprint, c.accepted, run_id) for c in cursors]
    frame = spark.createDataFrame(rows, CURSOR_SCHEMA).withColumn("recorded_at", F.current_timestamp())
    replace_where(frame, STAGE_CURSORS, f"stage = {sql_string(stage)}")


class Input(Protocol):
    """An input table as a stage found it: its version now, and whether its change feed was on."""

    table: str
    version: int
    feed_was_on: bool


def unreadable_feed(inputs: list[Input], cursors: dict[str, Cursor]) -> str | None:
    """Why some input's changes after its cursor cannot be read (its feed was off, or the table is
    older than the cursor: recreated); None when every one can be."""
    for i in inputs:
        if not i.feed_was_on:
            return f"{i.table} had no change data feed"
        if cursors[i.table].version > i.version:
            return f"{i.table} is older (version {i.version}) than the last run read ({cursors[i.table].version})"
    return None


@dataclass(frozen=True)
class FeedInput:
    """An input table read by its change feed: its version now, and whether the feed was on."""

    table: str
    version: int
    feed_was_on: bool


def feed_inputs(spark: SparkSession, tables: list[str]) -> list[FeedInput]:
    """Each existing table of `tables` with its Change Data Feed turned on (a commit of its own when it
    was off: the version is read after it)."""
    inputs = []
    for table in tables:
        if table_exists(spark, table):
            was_on = ensure_change_feed(spark, table)
            inputs.append(FeedInput(table, table_version(spark, table), was_on))
    return inputs


def digest(described: dict[str, Any]) -> str:
    """A short digest of what a stage's results depend on besides its inputs (configuration, code)."""
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def mark_publishing(spark: SparkSession, stage: str, cursors: dict[str, Cursor], run_id: str) -> None:
    """Before the stage's first table is written: a crash from here on makes its next run recompute everything."""
    write_cursors(spark, stage, [*cursors.values(), Cursor(PUBLISHING, -1, "")], run_id)
