"""Reading and writing the catalog's Delta tables: the I/O edge every stage shares."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import uuid4

from pyspark.sql import DataFrame, SparkSession


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
    if comment:
        set_comment(df.sparkSession, name, comment)


def replace_where(df: DataFrame, name: str, predicate: str) -> None:
    """Atomically replace the rows matching `predicate` (creating the table on first use)."""
    spark = df.sparkSession
    if not table_exists(spark, name):
        df.write.format("delta").mode("overwrite").saveAsTable(name)
        return
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("mergeSchema", "true")
        .saveAsTable(name)
    )


def append(df: DataFrame, name: str) -> None:
    df.write.format("delta").mode("append").option("mergeSchema", "true").saveAsTable(name)


def set_comment(spark: SparkSession, name: str, comment: str) -> None:
    spark.sql(f"COMMENT ON TABLE {name} IS {sql_string(comment)}")


def sql_string(value: str) -> str:
    """A SQL string literal, with quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
