"""ops.stage_cursors: the Delta version of each input table a stage has consumed, so its next run
reads only the commits after it (Change Data Feed), and the configuration it consumed it under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cdp.lakehouse import replace_where, sql_string, table_exists
from cdp.tables import STAGE_CURSORS

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
