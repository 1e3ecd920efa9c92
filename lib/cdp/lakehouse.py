"""Reading and writing the catalog's Delta tables: the I/O edge every stage shares."""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Callable, Iterator
from uuid import uuid4

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

OnWrite = Callable[[str, "int | None"], None]
# The writes of the running stage: table → rows written, and who to tell about each write.
_recording: ContextVar[tuple[dict[str, int], OnWrite | None] | None] = ContextVar("cdp_writes", default=None)
_COMMIT_FILE = re.compile(r"\d{20}\.json")
CHANGE_FEED = "delta.enableChangeDataFeed"


def new_run_id(stage: str) -> str:
    """Sortable and unique: UTC time, the stage, and a random suffix."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{stage}-{uuid4().hex[:6]}"


def table_exists(spark: SparkSession, name: str) -> bool:
    return spark.catalog.tableExists(name)


def overwrite_table(df: DataFrame, name: str, comment: str | None = None) -> None:
    """Replace a table's contents atomically (one Delta commit); readers never see it half-written."""
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .saveAsTable(name)
    )
    record_write(df.sparkSession, name)  # before the comment, which is a commit of its own
    if comment:
        set_comment(df.sparkSession, name, comment)


def replace_where(df: DataFrame, name: str, predicate: str) -> None:
    """Atomically replace the rows matching `predicate` (creating the table on first use)."""
    spark = df.sparkSession
    if not table_exists(spark, name):
        df.write.format("delta").mode("overwrite").saveAsTable(name)
    else:
        (
            df.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", predicate)
            .option("mergeSchema", "true")
            .saveAsTable(name)
        )
    record_write(spark, name)


def append(df: DataFrame, name: str, txn: tuple[str, int] | None = None, change_feed: bool = False) -> None:
    """Append `df`. `txn` (app id, version): Delta skips the append when that writer already committed
    that version (a retried batch). `change_feed`: a table this append creates records its changes."""
    writer = df.write.format("delta").mode("append").option("mergeSchema", "true")
    if txn is not None:
        writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
    if change_feed and not table_exists(df.sparkSession, name):
        writer = writer.option("delta.enableChangeDataFeed", "true")
    writer.saveAsTable(name)
    record_write(df.sparkSession, name)


@contextmanager
def recording_writes(on_write: OnWrite | None = None) -> Iterator[dict[str, int]]:
    """Collect, while the block runs, the rows each table write commits ({table: rows}); on_write
    hears of every write as it lands (a progress display). Rows come from the Delta commit itself."""
    written: dict[str, int] = {}
    token = _recording.set((written, on_write))
    try:
        yield written
    finally:
        _recording.reset(token)


def record_write(spark: SparkSession, name: str) -> None:
    """Tell the running stage's recorder of a write just committed to `name` (a MERGE made elsewhere)."""
    active = _recording.get()
    if active is None:
        return
    written, on_write = active
    rows = committed_rows(spark, name)
    written[name] = written.get(name, 0) + (rows or 0)
    log.info("wrote table=%s rows=%s", name, rows)
    if on_write:
        on_write(name, rows)


def committed_rows(spark: SparkSession, name: str) -> int | None:
    """Rows added by the table's latest commit: numOutputRows minus the rows a replaceWhere copied
    unchanged, from the commit's own metrics in _delta_log (one small file; DESCRIBE HISTORY costs
    ten times more). None when the commit cannot be read: the count is for reporting only."""
    try:
        for action in latest_commit(spark, name)[1]:
            info = action.get("commitInfo")
            if info is not None:
                metrics = info.get("operationMetrics", {})
                return int(metrics.get("numOutputRows", 0)) - int(metrics.get("numCopiedRows", 0))
    except Exception as exc:  # noqa: BLE001 — never fail a stage over its row report
        log.warning("rows written to %s unknown: %s", name, exc)
    return None


_LOCATIONS: dict[tuple[str, str], str] = {}


def table_location(spark: SparkSession, name: str) -> str:
    """A table's storage location, asked of the catalog once per application (a managed table keeps
    its location; a metastore round trip costs tens of milliseconds, which a stream pays every batch)."""
    key = (spark.sparkContext.applicationId, name)
    if key not in _LOCATIONS:
        jvm = spark._jvm
        database, table = name.split(".")
        identifier = jvm.org.apache.spark.sql.catalyst.TableIdentifier(table, jvm.scala.Some(database))
        _LOCATIONS[key] = spark._jsparkSession.sessionState().catalog().getTableMetadata(identifier).location().toString()
    return _LOCATIONS[key]


def _latest_commit(spark: SparkSession, name: str):
    """(FileSystem, the table's _delta_log, the newest commit file's name), from a listing of the log."""
    location = table_location(spark, name)
    fs, log_dir = filesystem(spark, location.rstrip("/") + "/_delta_log")
    latest = max(n for n in (s.getPath().getName() for s in fs.listStatus(log_dir)) if _COMMIT_FILE.fullmatch(n))
    return fs, log_dir, latest


def latest_commit(spark: SparkSession, name: str) -> tuple[int, list[dict]]:
    """(version, actions) of the table's newest commit: one listing and one small file of its _delta_log."""
    jvm = spark._jvm
    fs, log_dir, latest = _latest_commit(spark, name)
    stream = fs.open(jvm.org.apache.hadoop.fs.Path(log_dir, latest))
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    return int(latest.split(".")[0]), [json.loads(line) for line in text.splitlines() if line.strip()]


def latest_transaction(spark: SparkSession, name: str) -> tuple[int, str | None, int | None]:
    """(version, txn app id, txn version) of the table's newest commit: which writer's idempotent
    transaction (append's `txn`) that commit was."""
    version, actions = latest_commit(spark, name)
    txn = next((a["txn"] for a in actions if "txn" in a), {})
    return version, txn.get("appId"), txn.get("version")


def table_version(spark: SparkSession, name: str) -> int:
    """The table's current Delta version, from a listing of _delta_log; -1 when there is no table yet."""
    if not table_exists(spark, name):
        return -1
    return log_version(spark, name)


def log_version(spark: SparkSession, name: str) -> int:
    """The current Delta version of a table that exists: one listing of its _delta_log."""
    return int(_latest_commit(spark, name)[2].split(".")[0])


def read_version(spark: SparkSession, name: str, version: int) -> DataFrame:
    """The table as of one Delta version: a stage reads its input at the version it records."""
    return spark.sql(f"SELECT * FROM {name} VERSION AS OF {int(version)}")


def ensure_property(spark: SparkSession, name: str, key: str, value: str) -> bool:
    """Set a table property unless it already holds `value` (one commit, only then); True when it did."""
    shown = spark.sql(f"SHOW TBLPROPERTIES {name} ({sql_string(key)})").collect()
    if shown and str(shown[0]["value"]).lower() == value.lower():
        return True
    spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({sql_string(key)} = {sql_string(value)})")
    return False


def ensure_change_feed(spark: SparkSession, name: str) -> bool:
    """Turn on the table's Change Data Feed when it is off; True when it was on already."""
    return ensure_property(spark, name, CHANGE_FEED, "true")


def read_changes(spark: SparkSession, name: str, after_version: int, up_to_version: int) -> DataFrame:
    """The rows inserted, deleted and updated by the table's commits after `after_version`, up to and
    including `up_to_version` (Delta Change Data Feed: the row, _change_type, _commit_version)."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", int(after_version) + 1)
        .option("endingVersion", int(up_to_version))
        .table(name)
    )


# Operations that rewrite a whole table: its change feed says every row went and came back.
_REWRITES = ("CREATE TABLE AS SELECT", "CREATE OR REPLACE TABLE AS SELECT", "REPLACE TABLE AS SELECT",
             "CREATE OR REPLACE TABLE", "REPLACE TABLE", "RESTORE", "TRUNCATE")
HOUSEKEEPING = ("OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES")


def commits_after(spark: SparkSession, name: str, version: int) -> list[tuple[int, str]]:
    """(version, operation) of the table's commits after `version`, oldest first; a whole-table
    overwrite reads as 'OVERWRITE' (a replaceWhere keeps its name, WRITE)."""
    rows = spark.sql(f"DESCRIBE HISTORY {name}").where(f"version > {int(version)}").select(
        "version", "operation", "operationParameters").collect()
    out = []
    for row in sorted(rows, key=lambda r: r["version"]):
        parameters = row["operationParameters"] or {}
        overwrite = row["operation"] == "WRITE" and parameters.get("mode") == "Overwrite" and not parameters.get("predicate")
        out.append((int(row["version"]), "OVERWRITE" if overwrite or row["operation"] in _REWRITES else row["operation"]))
    return out


def replace_rows(spark: SparkSession, name: str, keys: DataFrame, rows: DataFrame, on: list[str]) -> None:
    """Delete the rows whose `on` columns match a key, then append `rows`: two commits (the caller
    makes a crash between them harmless)."""
    from delta.tables import DeltaTable

    condition = " AND ".join(f"t.`{c}` <=> k.`{c}`" for c in on)
    DeltaTable.forName(spark, name).alias("t").merge(keys.select(*on).distinct().alias("k"), condition).whenMatchedDelete().execute()
    append(rows.select(*spark.table(name).columns), name)


def materialised(frame: DataFrame) -> DataFrame:
    """The frame computed once (a local checkpoint), under fresh column ids: frames that derive from
    the same tables (the map joined to itself) meet in unions and joins, where Spark's optimizer
    fails on shared ids (InferFiltersFromConstraints: "key not found")."""
    kept = frame.localCheckpoint()
    return kept.select(*[F.col(f"`{c}`").alias(c) for c in kept.columns])


def filesystem(spark: SparkSession, path: str):
    """(Hadoop FileSystem, Hadoop Path) for a location: local paths, hdfs://, s3a:// alike."""
    hadoop_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path


def set_comment(spark: SparkSession, name: str, comment: str) -> None:
    """The table's comment, unless it holds it already: COMMENT ON TABLE is a Delta commit (a second
    commit after every overwrite, which keeps the comment), the catalog's description a lookup."""
    if spark.catalog.getTable(name).description != comment:
        spark.sql(f"COMMENT ON TABLE {name} IS {sql_string(comment)}")


def sql_string(value: str) -> str:
    """A SQL string literal, with quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
