"""Compute the tag library: atomic tags from profile, orders and events, scores, then derived and scenario tags.

The inputs are plain DataFrames keyed by one_id, so the engine runs on a hand-built dataset as well
as on gold: `profile` (one row per one_id), and the rows of each entity a tag counts over (orders,
events, service tickets … one row per record, with one_id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StructType

from cdp.logs import first_line
from cdp.conf.tags import TagLibrary

class TagDefinitionError(ValueError):
    """A tag whose expression Spark cannot use: names the tag, what is wrong and the fix."""


@dataclass(frozen=True)
class Inputs:
    """What tags read: the profile (one row per one_id), and each entity's rows with their one_id and
    the field that says when each happened (entity → (rows, time field))."""

    profile: DataFrame
    entities: dict[str, tuple[DataFrame, str]] = field(default_factory=dict)

    def source(self, name: str, run_date: date) -> DataFrame:
        """The source's rows as the tags see them: with run_date, and days_ago for the aggregates."""
        run = F.lit(run_date).cast("date")
        if name == "profile":
            return self.profile.withColumn("run_date", run)
        rows, time = self.entities[name]  # windows count days back from the run date
        rows = rows.withColumn("run_date", run).withColumn("days_ago", F.datediff(run, F.to_date(time)))
        return rows.where(F.col("days_ago") >= 0)  # a run as of a past date does not see the future


def _empty(spark: SparkSession, schema: StructType) -> DataFrame:
    return spark.createDataFrame([], schema)


def _failure(code: str, layer: str, exc: Exception, hint: str) -> TagDefinitionError:
    return TagDefinitionError(f"tags.yaml: tag '{code}' ({layer}): {first_line(exc)}. Fix: {hint}")


def empty_tags(spark: SparkSession, library: TagLibrary) -> DataFrame:
    """No rows, one typed column per tag: what derived tags and audience rules are checked against."""
    columns = ", ".join(f"`{code}` {tag.spark_type}" for code, tag in library.tags.items())
    return spark.createDataFrame([], f"one_id string, {columns}")


def compile_library(spark: SparkSession, library: TagLibrary, inputs: Inputs, run_date: date) -> None:
    """Check every expression against the real schemas (no data is read): syntax, references, types.

    Raises TagDefinitionError naming the tag. Derived and scenario tags see only tag columns.
    """
    tags_frame = empty_tags(spark, library)
    for code in library.order():
        tag = library.tags[code]
        expression = library.expression(code)
        if tag.layer != "atomic":
            hint = f"derived and scenario tags read tags only, one of {sorted(library.tags)}"
        elif tag.source == "profile":
            hint = "an atomic profile tag is a row expression over gold.customer_profile's columns and run_date"
        else:
            hint = (f"an atomic {tag.source} tag is an aggregate (count_if, sum … FILTER (WHERE …), max) over "
                    f"the person's {tag.source} rows, which have run_date and days_ago")
        try:
            if tag.layer != "atomic":
                frame = tags_frame.select(F.expr(expression).alias(code))
            elif tag.source == "profile":
                frame = _empty(spark, inputs.source("profile", run_date).schema).select(F.expr(expression).alias(code))
            else:
                rows = _empty(spark, inputs.source(tag.source, run_date).schema)
                frame = rows.groupBy("one_id").agg(F.expr(expression).alias(code))
            result_type = frame.schema[code].dataType
        except PySparkException as exc:
            raise _failure(code, tag.layer, exc, hint) from exc
        if tag.type == "boolean" and not isinstance(result_type, BooleanType):
            raise TagDefinitionError(
                f"tags.yaml: tag '{code}' ({tag.layer}): declared boolean but its value is {result_type.simpleString()}. "
                "Fix: make the value a condition, or declare the type it has."
            )


def _scored(frame: DataFrame, library: TagLibrary, codes: list[str]) -> DataFrame:
    """Replace each scored tag's raw value by its quantile bin (exact percentiles, ties never split)."""
    if not codes:
        return frame
    edges_of = {
        code: [k / library.tags[code].score.bins for k in range(1, library.tags[code].score.bins)] for code in codes
    }
    row = frame.agg(*[
        F.percentile(F.col(code).cast("double"), edges_of[code]).alias(code) for code in codes
    ]).collect()[0]
    columns = {}
    for code in codes:
        score = library.tags[code].score
        edges = row[code]
        value = F.col(code).cast("double")
        if edges is None:  # nobody has a value
            columns[code] = F.lit(None).cast("int")
            continue
        above = sum((F.when(value > F.lit(edge), 1).otherwise(0) for edge in edges), F.lit(0))
        binned = (F.lit(1) + above) if score.higher_is_better else (F.lit(score.bins) - above)
        columns[code] = F.when(value.isNotNull(), binned.cast("int"))
    return frame.withColumns(columns)


def compute_tags(spark: SparkSession, library: TagLibrary, inputs: Inputs, run_date: date) -> DataFrame:
    """One row per profile one_id, one typed column per tag (booleans are never null: absent is false).

    Check the library first with compile_library (the gold stage does, before it writes anything)."""
    atomic = [c for c in library.order() if library.tags[c].layer == "atomic"]

    def typed(code: str, column: Column) -> Column:
        return column.cast(library.tags[code].spark_type).alias(code)

    frame = inputs.source("profile", run_date).select(
        "one_id", *[typed(c, F.expr(library.expression(c))) for c in atomic if library.tags[c].source == "profile"]
    )
    for source in sorted({library.tags[c].source for c in atomic} - {"profile"}):
        codes = [c for c in atomic if library.tags[c].source == source]
        if codes:
            frame = frame.join(aggregated(library, inputs, source, codes, run_date), "one_id", "left")
            frame = frame.withColumns(defaults(library, codes))
    frame = _scored(frame, library, [c for c in atomic if library.tags[c].score is not None])
    for code in library.order():
        if library.tags[code].layer != "atomic":
            frame = frame.withColumn(code, typed(code, F.expr(library.expression(code))))
    booleans = {c: F.coalesce(F.col(c), F.lit(False)) for c, t in library.tags.items() if t.type == "boolean"}
    return frame.withColumns(booleans).select("one_id", *library.tags)


def aggregated(library: TagLibrary, inputs: Inputs, source: str, codes: list[str], run_date: date) -> DataFrame:
    """(one_id, code…): the unscored atomic aggregates `codes` over each person's rows of `source`
    (persons without rows are absent: see defaults)."""
    return inputs.source(source, run_date).groupBy("one_id").agg(
        *[F.expr(library.expression(c)).cast(library.tags[c].spark_type).alias(c) for c in codes])


def defaults(library: TagLibrary, codes: list[str]) -> dict[str, Column]:
    """Each aggregate's `default` where it has none (a person without rows)."""
    return {c: F.coalesce(F.col(c), F.lit(library.tags[c].default).cast(library.tags[c].spark_type))
            for c in codes if library.tags[c].default is not None}


def to_long(wide: DataFrame, library: TagLibrary, run_date: date, computed_at: datetime,
            codes: list[str] | None = None) -> DataFrame:
    """(one_id, tag_code, value, tag_version, run_date, computed_at): boolean tags only where true,
    other tags where they have a value; every tag of the library, or `codes`."""
    entries = []
    for code in codes or list(library.tags):
        tag = library.tags[code]
        column = F.col(code)
        value = F.when(column, F.lit("true")) if tag.type == "boolean" else column.cast("string")
        entries.append(F.struct(F.lit(code).alias("tag_code"), value.alias("value"),
                                F.lit(tag.version).alias("tag_version")))
    return (
        wide.select("one_id", F.explode(F.array(*entries)).alias("t"))
        .where(F.col("t.value").isNotNull())
        .select("one_id", "t.tag_code", "t.value", "t.tag_version",
                F.lit(run_date).cast("date").alias("run_date"), F.lit(computed_at).cast("timestamp").alias("computed_at"))
    )


def to_wide(long: DataFrame, library: TagLibrary, codes: list[str] | None = None) -> DataFrame:
    """gold.customer_tags back to one typed column per tag (for audience previews over the stored
    tags); `codes`: these tags only."""
    codes = list(library.tags) if codes is None else codes
    pivoted = long.where(F.col("tag_code").isin(*codes)).groupBy("one_id").pivot("tag_code", codes).agg(F.first("value"))
    columns = []
    for code, tag in ((c, library.tags[c]) for c in codes):
        if tag.type == "boolean":
            columns.append(F.coalesce(F.col(code) == "true", F.lit(False)).alias(code))
        else:
            columns.append(F.col(code).cast(tag.spark_type).alias(code))
    return pivoted.select("one_id", *columns)
