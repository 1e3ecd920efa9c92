"""Housekeeping for a lakehouse that is merged into every day: compact each table's small files and
lay out the tables read by person (OPTIMIZE … ZORDER BY one_id), then VACUUM what no version within
the retention needs. `cdp maintain`, and the daily DAG's last task.

Per-file statistics are off by default (docs/privacy.md); a laid-out table keeps them for its layout
columns only (delta.dataSkippingStatsColumns), which are pseudonymous ids and codes: a reader of
one_id's rows skips the files whose one_id range excludes it, and no phone number reaches the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from cdp.audit import audit
from cdp.conf import Settings
from cdp.lakehouse import ensure_property
from cdp.operations.erasure import ERASED_LAYERS, Vacuumed, erasable_tables, vacuum
from cdp.tables import LAYOUT

log = logging.getLogger(__name__)
STATS_COLUMNS = "delta.dataSkippingStatsColumns"


@dataclass(frozen=True)
class Optimized:
    table: str
    zorder_by: tuple[str, ...]  # empty: compacted only
    files_removed: int
    files_added: int
    seconds: float


@dataclass(frozen=True)
class Maintained:
    optimized: list[Optimized]
    vacuumed: Vacuumed | None


def optimize(spark: SparkSession, table: str, zorder_by: tuple[str, ...] = ()) -> Optimized:
    """OPTIMIZE one table, Z-ordered by `zorder_by` when given; a table with nothing to compact is left as is."""
    started = time.perf_counter()
    if zorder_by:
        ensure_property(spark, table, STATS_COLUMNS, ",".join(zorder_by))  # statistics on these columns only
    clause = f" ZORDER BY ({', '.join(zorder_by)})" if zorder_by else ""
    metrics = spark.sql(f"OPTIMIZE {table}{clause}").first()["metrics"]
    return Optimized(table, zorder_by, int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"]),
                     round(time.perf_counter() - started, 2))


def maintain(spark: SparkSession, settings: Settings, retention_hours: float | None = None, vacuum_files: bool = True,
             actor: str | None = None) -> Maintained:
    """OPTIMIZE every table of every layer (the LAYOUT tables Z-ordered), then VACUUM them all."""
    done = []
    for table in erasable_tables(spark, ERASED_LAYERS + ("ops",)):
        result = optimize(spark, table, LAYOUT.get(table, ()))
        log.info("maintain: %s %d files -> %d in %.1fs%s", table, result.files_removed, result.files_added,
                 result.seconds, f" (z-ordered by {', '.join(result.zorder_by)})" if result.zorder_by else "")
        done.append(result)
    audit(spark, "maintain", object=",".join(ERASED_LAYERS + ("ops",)), rows=len(done), actor=actor,
          details={"files_removed": sum(o.files_removed for o in done), "files_added": sum(o.files_added for o in done),
                   "zordered": sorted(o.table for o in done if o.zorder_by)})
    vacuumed = vacuum(spark, settings, retention_hours, actor=actor) if vacuum_files else None
    return Maintained(done, vacuumed)
