"""Run the stages in order (bronze → silver → identity → gold) and record each run in ops.job_runs."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable

from pyspark.sql import SparkSession

from cdp.cleanse.silver import build_silver
from cdp.config import Settings
from cdp.gold import build_gold
from cdp.identity.stage import build_identity
from cdp.ingest.bronze import build_bronze
from cdp.lakehouse import append, new_run_id
from cdp.privacy.audit import audit
from cdp.privacy.erasure import enforce_ledger
from cdp.privacy.protect import load_keys

log = logging.getLogger(__name__)

STAGES = ("bronze", "silver", "identity", "gold")
JOB_RUNS = "ops.job_runs"
JOB_RUNS_SCHEMA = (
    "run_id string, stage string, started_at timestamp, ended_at timestamp, "
    "status string, metrics string, error string"
)


class StageFailed(RuntimeError):
    """A stage raised; the message says which stage and why, and ops.job_runs has the trace."""


@dataclass
class StageOutcome:
    stage: str
    run_id: str
    started_at: datetime
    ended_at: datetime
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


def expand_stage(stage: str) -> tuple[str, ...]:
    if stage == "all":
        return STAGES
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)} or all")
    return (stage,)


def _bronze(spark: SparkSession, settings: Settings, run_id: str, as_of: date) -> dict[str, Any]:
    results = build_bronze(spark, settings, batch_id=run_id)
    erased = enforce_ledger(spark, settings, run_id)  # erased subjects' data that landed again
    metrics: dict[str, Any] = {
        r.source: {"rows": r.rows, "new_files": len(r.new_files), "changed_files": len(r.changed_files),
                   "unchanged_files": r.skipped_files, "drifted_files": len(r.drift)}
        for r in results
    }
    metrics["erased_rows"] = erased
    return metrics


def _silver(spark: SparkSession, settings: Settings, run_id: str, as_of: date) -> dict[str, Any]:
    accounting = build_silver(spark, settings, run_id, as_of)
    unbalanced = [a.source for a in accounting if not a.balanced]
    if unbalanced:
        raise RuntimeError(f"row accounting does not balance for {unbalanced}: see ops.row_accounting")
    return {a.source: {"landed": a.landed, "silver": a.silver, "quarantined": a.quarantined,
                       "duplicates": a.duplicates} for a in accounting}


def _identity(spark: SparkSession, settings: Settings, run_id: str, as_of: date) -> dict[str, Any]:
    result = build_identity(spark, settings, run_id)
    return {"records": result.records, "one_ids": result.one_ids, "edges": result.edges,
            "refused_values": result.refused_values, "violations": result.violations, "changes": result.changes,
            "largest_one_id": result.largest_one_id, "engine": result.engine,
            "probabilistic_links": result.probabilistic_links, "candidate_pairs": result.candidate_pairs}


def _gold(spark: SparkSession, settings: Settings, run_id: str, as_of: date) -> dict[str, Any]:
    result = build_gold(spark, settings, as_of, run_id)
    return {"profiles": result.profiles, "tag_rows": result.tag_rows, "consent_rows": result.consent_rows,
            "audiences": result.audience_sizes, "as_of": as_of.isoformat(), "warnings": result.warnings,
            "seconds": result.seconds}


RUNNERS: dict[str, Callable[[SparkSession, Settings, str, date], dict[str, Any]]] = {
    "bronze": _bronze,
    "silver": _silver,
    "identity": _identity,
    "gold": _gold,
}


def record_run(spark: SparkSession, outcome: StageOutcome) -> None:
    row = [(outcome.run_id, outcome.stage, outcome.started_at, outcome.ended_at, outcome.status,
            json.dumps(outcome.metrics, ensure_ascii=False, default=str), outcome.error)]
    append(spark.createDataFrame(row, JOB_RUNS_SCHEMA), JOB_RUNS)
    audit(spark, "job_run", object=outcome.stage, status=outcome.status,
          details={"run_id": outcome.run_id, "seconds": round(outcome.seconds, 1), "error": outcome.error})


def run_stage(spark: SparkSession, settings: Settings, stage: str, as_of: date) -> StageOutcome:
    """Run one stage; success or failure, it is recorded in ops.job_runs. Raises StageFailed on failure."""
    run_id = new_run_id(stage)
    started = datetime.now(timezone.utc)
    try:
        metrics = RUNNERS[stage](spark, settings, run_id, as_of)
    except Exception as exc:
        outcome = StageOutcome(stage, run_id, started, datetime.now(timezone.utc), "failed",
                               error="".join(traceback.format_exception_only(exc)).strip())
        record_run(spark, outcome)
        raise StageFailed(f"stage '{stage}' failed (run {run_id}): {outcome.error}") from exc
    outcome = StageOutcome(stage, run_id, started, datetime.now(timezone.utc), "succeeded", metrics)
    record_run(spark, outcome)
    return outcome


def run_stages(spark: SparkSession, settings: Settings, stage: str, as_of: date,
               on_done: Callable[[StageOutcome], None] | None = None) -> list[StageOutcome]:
    outcomes = []
    stages = expand_stage(stage)
    load_keys(settings)  # a cluster profile without its secrets stops here, before any stage
    for name in stages:
        log.info("stage %s: starting", name)
        outcome = run_stage(spark, settings, name, as_of)
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    return outcomes
