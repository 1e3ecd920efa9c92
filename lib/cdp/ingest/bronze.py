"""Land channel exports in bronze Delta tables exactly once: every value kept as a delivered string."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from cdp.config import Settings, Source
from cdp.lakehouse import append, replace_where, sql_string, table_exists

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
INGEST_LOG = "ops.ingest_log"
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


def bronze_table(source_name: str) -> str:
    return f"bronze.{source_name}"


def delivered_schema(source: Source) -> StructType:
    """Every delivered column as a string, plus a column that keeps unparseable lines whole."""
    return StructType([StructField(c, StringType()) for c in source.columns] + [StructField(CORRUPT, StringType())])


def list_landed_files(spark: SparkSession, pattern: str) -> list[LandedFile]:
    """Files matching the glob, through Hadoop's FileSystem so s3a://, hdfs:// and local paths all work."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(pattern)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
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


def read_delivered(spark: SparkSession, source: Source, paths: list[str]) -> DataFrame:
    """Read the files as delivered: strings only, malformed lines kept in _corrupt_record."""
    reader = (
        spark.read.schema(delivered_schema(source))
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
    )
    if source.format == "csv":
        # enforceSchema=false: a header that no longer matches the declared columns fails loudly
        # instead of silently shifting values into the wrong columns.
        df = reader.option("header", True).option("enforceSchema", False).csv(paths)
    else:
        df = reader.json(paths)
    return df.withColumn("_file", F.col("_metadata.file_path"))


def with_ingestion_metadata(source_name: str, batch_id: str):
    """Bronze's bookkeeping columns, as a transform."""

    def transform(df: DataFrame) -> DataFrame:
        return (
            df.withColumn("_source", F.lit(source_name))
            .withColumn("_batch_id", F.lit(batch_id))
            .withColumn("_ingested_at", F.current_timestamp())
        )

    return transform


def already_ingested(spark: SparkSession, source_name: str) -> set[tuple[str, int, int]]:
    """Versions the ingest log holds for a source: (path, size, modified_ms)."""
    if not table_exists(spark, INGEST_LOG):
        return set()
    rows = spark.table(INGEST_LOG).where(F.col("source") == source_name).select("file", "size", "modified_ms").collect()
    return {(r["file"], r["size"], r["modified_ms"]) for r in rows}


def ingest_source(
    spark: SparkSession, settings: Settings, source_name: str, source: Source, batch_id: str
) -> BronzeResult:
    """Append new and changed files of one source; a file's rows are replaced as a whole, so reruns never duplicate."""
    result = BronzeResult(source=source_name)
    landed = list_landed_files(spark, f"{settings.landing}/{source.path}")
    seen = already_ingested(spark, source_name)
    todo: list[LandedFile] = []
    seen_paths = {path for path, _, _ in seen}
    for f in landed:
        if (f.path, f.size, f.modified_ms) in seen:
            result.skipped_files += 1
            continue
        (result.changed_files if f.path in seen_paths else result.new_files).append(f.path)
        todo.append(f)
    if not todo:
        return result

    table = bronze_table(source_name)
    df = read_delivered(spark, source, [f.path for f in todo]).transform(
        with_ingestion_metadata(source_name, batch_id)
    )
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
    return result


def build_bronze(spark: SparkSession, settings: Settings, batch_id: str) -> list[BronzeResult]:
    """Ingest every configured source."""
    results = []
    for name, source in settings.sources.sources.items():
        outcome = ingest_source(spark, settings, name, source, batch_id)
        log.info(
            "bronze %s: %d new, %d changed, %d unchanged files, %d rows",
            name, len(outcome.new_files), len(outcome.changed_files), outcome.skipped_files, outcome.rows,
        )
        results.append(outcome)
    return results
