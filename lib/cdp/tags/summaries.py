"""Per-person daily summaries: what the entity tags count over instead of the raw history.

A summary row is one person's rows of one entity on one day that agree on every column the entity's
tags read, with how many there were: (one_id, summary_day, those columns…, summary_rows). Expanded
back to `summary_rows` copies, it gives every tag aggregate (counts, sums, averages, modes, windows
over days_ago) exactly the value it has over the raw rows, from a table that holds only those
columns, needs no join to the identity map, and changes only for the persons whose records or
identity changed. Time-window tags still move for everyone as days pass: they are recomputed from
the summaries on every run.
"""

from __future__ import annotations

import re

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp.conf.tags import TagLibrary

DAY = "summary_day"
ROWS = "summary_rows"


def read_columns(library: TagLibrary, entity: str, columns: list[str]) -> list[str]:
    """The entity's columns some atomic tag over it names, in the entity's order (a name that only
    appears inside a string literal is kept too: one column more, never one too few)."""
    text = " ".join(library.expression(code) for code, tag in library.tags.items()
                    if tag.layer == "atomic" and tag.source == entity)
    named = {word.lower() for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)}
    return [c for c in columns if c.lower() in named and c not in ("one_id", DAY, ROWS)]


def summarise_days(rows: DataFrame, columns: list[str], time_field: str) -> DataFrame:
    """(one_id, summary_day, columns…, summary_rows) from the entity's rows with their one_id."""
    return rows.groupBy("one_id", F.to_date(time_field).alias(DAY), *columns).agg(F.count("*").alias(ROWS))


def expand(summary: DataFrame) -> DataFrame:
    """Each summary row as the rows it counts, without the count (what the tag engine reads, with
    `summary_day` as the entity's time)."""
    return summary.withColumn("_copy", F.explode(F.sequence(F.lit(1), F.col(ROWS).cast("int")))).drop("_copy", ROWS)
