"""Land channel exports in bronze Delta tables exactly once: every value kept as a delivered string."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from cdp.conf import Settings
from cdp.conf.sources import Source
from cdp.lakehouse import append, filesystem, replace_where, sql_string, table_exists
from cdp.tables import CORRUPT_RECORD as CORRUPT
from cdp.tables import INGEST_LOG, SCHEMA_DRIFT, bronze_table

log = logging.getLogger(__name__)

INGEST_LOG_SCHEMA = StructType(
    [
        StructField("source", StringType(), False),
        StructField("file", StringType(), False),
        StructField("size", LongType(), False),
        StructField("modified_ms", LongType(), False),
        StructField("batch_id", StringType(), False),
        StructField("rows", LongType(), False),
    ]
)


@dataclass(frozen=True)
class LandedFile:
    path: str
    size: int
    modified_ms: int  # epoch milliseconds: no time-zone ambiguity between Python, JVM and storage


@dataclass
class BronzeResult:
    source: str
    new_files: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    skipped_files: int = 0
    rows: int = 0
    drift: list[SchemaDrift] = field(default_factory=list)


def delivered_schema(source: Source) -> StructType:
    """Every declared column as a string, plus a column that keeps unparseable lines whole."""
    return _string_schema(list(source.columns))


def list_landed_files(spark: SparkSession, pattern: str) -> list[LandedFile]:
    """Files matching the glob, through Hadoop's FileSystem so s3a://, hdfs:// and local paths all work."""
    fs, path = filesystem(spark, pattern)
    statuses = fs.globStatus(path) or []
    files = [
        LandedFile(
            path=str(s.getPath().toString()),
            size=int(s.getLen()),
            modified_ms=int(s.getModificationTime()),
        )
        for s in statuses
        if s.isFile()
    ]
    return sorted(files, key=lambda f: f.path)


@dataclass(frozen=True)
class SchemaDrift:
    """A landed file whose columns differ from the declared ones: new columns are kept, missing ones are null."""

    file: str
    new_columns: tuple[str, ...]
    missing_columns: tuple[str, ...]


def csv_header(spark: SparkSession, path: str) -> list[str]:
    """The first line of a CSV file, parsed as CSV, read through Hadoop's FileSystem (local, HDFS, S3)."""
    jvm = spark.sparkContext._jvm
    fs, hadoop_path = filesystem(spark, path)
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(fs.open(hadoop_path), "UTF-8"))
    try:
        line = reader.readLine()
    finally:
        reader.close()
    return next(csv.reader([line.lstrip("\ufeff")])) if line else []


def json_keys_per_file(spark: SparkSession, paths: list[str]) -> dict[str, set[str]]:
    """Top-level keys seen in each JSON-lines file (malformed lines contribute none)."""
    keys = (
        spark.read.text(paths)
        .select(F.col("_metadata.file_path").alias("file"), F.explode(F.json_object_keys("value")).alias("key"))
        .distinct()
        .collect()
    )
    found: dict[str, set[str]] = {}
    for row in keys:
        found.setdefault(row["file"], set()).add(row["key"])
    return found


def _as_text(df: DataFrame, column: str):
    data_type = df.schema[column].dataType.typeName()
    value = F.to_json(F.col(f"`{column}`")) if data_type in ("struct", "array", "map") else F.col(f"`{column}`").cast("string")
    return value.alias(column)


def _string_schema(columns: list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in columns] + [StructField(CORRUPT, StringType())])


def _permissive(spark: SparkSession, columns: list[str]):
    return spark.read.schema(_string_schema(columns)).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)


def read_delivered(spark: SparkSession, source: Source, paths: list[str]) -> tuple[DataFrame, list[SchemaDrift]]:
    """Read the files as delivered: strings only, malformed lines kept in _corrupt_record.

    Columns are matched by name. A file with columns beyond the declared ones keeps them
    (bronze's schema grows) and is reported; declared columns a file lacks are null and reported.
    """
    declared = list(source.columns)
    drift: list[SchemaDrift] = []
    if source.format == "csv":
        by_header: dict[tuple[str, ...], list[str]] = {}
        for path in paths:
            by_header.setdefault(tuple(csv_header(spark, path)), []).append(path)
        frames = []
        for header, files in by_header.items():
            columns = list(header) or declared  # an empty file still yields the declared shape
            # enforceSchema=false makes Spark check each file's header against these names.
            frame = _permissive(spark, columns).option("header", True).option("enforceSchema", False).csv(files)
            frames.append(frame.transform(with_position))
            new = tuple(c for c in header if c not in declared)
            missing = tuple(c for c in declared if header and c not in header)
            drift += [SchemaDrift(f, new, missing) for f in files if new or missing]
        df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    elif source.format == "parquet":
        frames = []
        for path in paths:
            # Typed Parquet is kept as text, like every other bronze column; structures as JSON.
            typed = spark.read.parquet(path)
            frames.append(typed.select(*[_as_text(typed, c) for c in typed.columns], "_metadata")
                          .withColumn(CORRUPT, F.lit(None).cast("string")).transform(with_position))
            new = tuple(c for c in typed.columns if c not in declared)
            missing = tuple(c for c in declared if c not in typed.columns)
            if new or missing:
                drift.append(SchemaDrift(path, new, missing))
        df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    else:
        keys = json_keys_per_file(spark, paths)
        extra = sorted(set().union(*keys.values()) - set(declared)) if keys else []
        df = _permissive(spark, declared + extra).json(paths).transform(with_position)
        # Optional JSON keys are often absent, so only new keys count as drift.
        drift += [SchemaDrift(f, tuple(sorted(k - set(declared))), ()) for f, k in sorted(keys.items()) if k - set(declared)]
    for column in declared:
        if column not in df.columns:
            df = df.withColumn(column, F.lit(None).cast("string"))
    return df, drift


def with_position(df: DataFrame, order: bool = True) -> DataFrame:
    """Where each row was delivered: its file and the file's modification time (from the reader's
    own metadata), and what orders the rows within the file (_block, _order; see with_line).
    order=False: no _order (a stream has no monotonically_increasing_id)."""
    return df.select(
        *[F.col(f"`{c}`") for c in df.columns if c != "_metadata"],
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_modification_time").alias("_file_modified_at"),
        F.col("_metadata.file_block_start").alias("_block"),
        *([F.monotonically_increasing_id().alias("_order")] if order else []),
    )


def with_ingestion_metadata(source_name: str, batch_id: str):
    """Bronze's bookkeeping columns, as a transform: the source, the run, when, and each row's line
    in its file (its position among the file's records: blocks in order, rows in order within one)."""

    def transform(df: DataFrame) -> DataFrame:
        in_file = Window.partitionBy("_file").orderBy("_block", "_order")
        return (
            df.withColumn("_line", F.row_number().over(in_file).cast("bigint"))
            .drop("_block", "_order")
            .transform(with_bookkeeping(source_name, batch_id))
        )

    return transform


def with_bookkeeping(source_name: str, batch_id: str):
    """Bronze's source, run and time columns, as a transform."""

    def transform(df: DataFrame) -> DataFrame:
        return (
            df.withColumn("_source", F.lit(source_name))
            .withColumn("_batch_id", F.lit(batch_id))
            .withColumn("_ingested_at", F.current_timestamp())
        )

    return transform


@dataclass(frozen=True)
class IngestHistory:
    """What the ingest log says about one source."""

    versions: frozenset[tuple[str, int, int]] = frozenset()  # (path, size, modified_ms) ever ingested
    latest_batch_files: frozenset[str] = frozenset()  # a full-load source's current snapshot


def read_ingest_history(spark: SparkSession) -> dict[str, IngestHistory]:
    """The ingest log, read once per bronze run, per source."""
    if not table_exists(spark, INGEST_LOG):
        return {}
    rows = spark.table(INGEST_LOG).select("source", "file", "size", "modified_ms", "batch_id", "ingested_at").collect()
    latest_batch: dict[str, tuple] = {}
    for r in rows:
        if r["source"] not in latest_batch or r["ingested_at"] > latest_batch[r["source"]][0]:
            latest_batch[r["source"]] = (r["ingested_at"], r["batch_id"])
    return {
        source: IngestHistory(
            versions=frozenset((r["file"], r["size"], r["modified_ms"]) for r in rows if r["source"] == source),
            latest_batch_files=frozenset(
                r["file"] for r in rows if r["source"] == source and r["batch_id"] == batch[1]
            ),
        )
        for source, batch in latest_batch.items()
    }


def ingest_source(
    spark: SparkSession, settings: Settings, source_name: str, source: Source, batch_id: str,
    history: IngestHistory = IngestHistory(),
) -> BronzeResult:
    """Append new and changed files of one source; a file's rows are replaced as a whole, so reruns never duplicate."""
    result = BronzeResult(source=source_name)
    landed = list_landed_files(spark, f"{settings.landing}/{source.path}")
    todo: list[LandedFile] = []
    seen_paths = {path for path, _, _ in history.versions}
    for f in landed:
        if (f.path, f.size, f.modified_ms) in history.versions:
            result.skipped_files += 1
            continue
        (result.changed_files if f.path in seen_paths else result.new_files).append(f.path)
        todo.append(f)
    if source.load_mode == "full":
        current = {f.path for f in landed}
        if not current:
            log.warning("bronze %s: full load found no files; keeping the previous snapshot", source_name)
            return result
        if not todo and current == history.latest_batch_files:
            return result
        # A snapshot replaces the previous one whole: files that disappeared take their rows along.
        todo, result.skipped_files = list(landed), 0
    if not todo:
        return result

    table = bronze_table(source_name)
    delivered, result.drift = read_delivered(spark, source, [f.path for f in todo])
    df = delivered.transform(with_ingestion_metadata(source_name, batch_id))
    if source.load_mode == "full":
        predicate = "true"
    else:
        predicate = "_file IN (" + ", ".join(sql_string(f.path) for f in todo) + ")"
    # replaceWhere on the files being loaded: a crash before the ingest log is written
    # leaves a rerun that replaces, not duplicates, these files' rows.
    replace_where(df, table, predicate)
    per_file = {
        r["_file"]: r["n"]
        for r in spark.table(table).where(F.col("_batch_id") == batch_id).groupBy("_file").agg(F.count("*").alias("n")).collect()
    }
    result.rows = int(sum(per_file.values()))
    log_rows = [(source_name, f.path, f.size, f.modified_ms, batch_id, int(per_file.get(f.path, 0))) for f in todo]
    entries = spark.createDataFrame(log_rows, INGEST_LOG_SCHEMA).withColumn("ingested_at", F.current_timestamp())
    append(entries, INGEST_LOG)
    if result.drift:
        record_drift(spark, source_name, batch_id, result.drift)
    return result


def record_drift(spark: SparkSession, source_name: str, batch_id: str, drift: list[SchemaDrift]) -> None:
    for d in drift:
        log.warning("schema drift in %s %s: new columns %s, missing columns %s",
                    source_name, d.file, list(d.new_columns), list(d.missing_columns))
    rows = [(source_name, d.file, batch_id, list(d.new_columns), list(d.missing_columns)) for d in drift]
    frame = spark.createDataFrame(
        rows, "source string, file string, batch_id string, new_columns array<string>, missing_columns array<string>"
    ).withColumn("detected_at", F.current_timestamp())
    append(frame, SCHEMA_DRIFT)


def build_bronze(spark: SparkSession, settings: Settings, batch_id: str) -> list[BronzeResult]:
    """Ingest every configured source."""
    history = read_ingest_history(spark)
    results = []
    for name, source in settings.sources.sources.items():
        outcome = ingest_source(spark, settings, name, source, batch_id, history.get(name, IngestHistory()))
        log.info(
            "bronze %s: %d new, %d changed, %d unchanged files, %d rows",
            name, len(outcome.new_files), len(outcome.changed_files), outcome.skipped_files, outcome.rows,
        )
        results.append(outcome)
    return results
