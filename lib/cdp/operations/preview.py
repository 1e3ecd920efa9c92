"""`cdp audience preview NAME`: an audience's size and breakdown over the current gold tables, before it
is materialised — nothing is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cdp.audience.members import audience_frame, select_audience
from cdp.conf import Settings
from cdp.lakehouse import table_exists
from cdp.tables import CONSENT, PROFILE, TAGS
from cdp.tags.engine import to_wide

DEFAULT_BREAKDOWN = ("lifecycle_stage", "value_tier")


class PreviewError(ValueError):
    """The audience or a breakdown cannot be previewed: says why and what to do."""


@dataclass
class Preview:
    audience: str
    name_zh: str
    purpose: str
    run_date: date
    condition: str
    persons: int  # everyone in gold.customer_profile
    matched: int  # the rule holds
    members: int  # … and consent allows the purpose
    breakdown: dict[str, list[tuple[str | None, int, int]]]  # dimension → (value, matched, members)

    def as_dict(self) -> dict:
        return {
            "audience": self.audience, "name_zh": self.name_zh, "purpose": self.purpose,
            "run_date": self.run_date.isoformat(), "condition": self.condition, "persons": self.persons,
            "matched": self.matched, "members": self.members,
            "breakdown": {d: [{"value": v, "matched": m, "members": n} for v, m, n in rows]
                          for d, rows in self.breakdown.items()},
        }


def check_audience(settings: Settings, name: str) -> None:
    """PreviewError unless audiences.yaml defines `name` (checked before Spark starts)."""
    audiences = settings.audiences.audiences
    if name not in audiences:
        raise PreviewError(f"no audience '{name}' in audiences.yaml; defined: {', '.join(sorted(audiences))}")


def preview(spark: SparkSession, settings: Settings, name: str, by: list[str] | None = None,
            run_date: date | None = None) -> Preview:
    check_audience(settings, name)
    audiences = settings.audiences.audiences
    for table in (PROFILE, TAGS, CONSENT):
        if not table_exists(spark, table):
            raise PreviewError(f"{table} does not exist yet: run the gold stage first (cdp run --stage gold)")
    audience, library = audiences[name], settings.tags
    profile, long = spark.table(PROFILE), spark.table(TAGS)
    if run_date is None:
        run_date = long.agg(F.max("run_date")).collect()[0][0] or date.today()
    dimensions = list(by or DEFAULT_BREAKDOWN)
    for dimension in dimensions:
        if dimension not in library.tags and dimension not in profile.columns:
            raise PreviewError(f"cannot break down by '{dimension}': neither a tag nor a gold.customer_profile column")
    frame = audience_frame(profile, to_wide(long, library), run_date)
    selection = select_audience(frame, audience, library, spark.table(CONSENT),
                                settings.privacy.defaults[audience.purpose])
    member_ids = selection.members.select("one_id", F.lit(True).alias("_is_member"))
    marked = selection.matched.join(member_ids, "one_id", "left").withColumn(
        "_member", F.coalesce("_is_member", F.lit(False))).persist()
    breakdown = {}
    for dimension in dimensions:
        column = F.col(f"tag.`{dimension}`") if dimension in library.tags else F.col(f"profile.`{dimension}`")
        rows = (marked.groupBy(column.cast("string").alias("value"))
                .agg(F.count("*").alias("matched"), F.count_if("_member").alias("members"))
                .orderBy(F.col("matched").desc(), F.col("value")).collect())
        breakdown[dimension] = [(r["value"], r["matched"], r["members"]) for r in rows]
    totals = marked.agg(F.count("*").alias("matched"), F.count_if("_member").alias("members")).collect()[0]
    result = Preview(name, audience.name_zh, audience.purpose, run_date, selection.condition, profile.count(),
                     totals["matched"], totals["members"], breakdown)
    marked.unpersist()
    return result
