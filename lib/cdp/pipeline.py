"""Run the stages in order (bronze → silver → identity → gold) and record each run in ops.job_runs."""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable

from pyspark.sql import SparkSession

from cdp.audit import audit
from cdp.conf import Settings
from cdp.lakehouse import OnWrite, append, new_run_id, recording_writes, table_exists
from cdp.operations.erasure import enforce_ledger
from cdp.privacy.protect import load_keys
from cdp.stages.bronze import build_bronze
from cdp.stages.gold import build_gold
from cdp.stages.identity import build_identity
from cdp.stages.silver import build_silver
from cdp.tables import IDENTIFIERS, JOB_RUNS, ONEID_MAP, bronze_table, silver_table

log = logging.getLogger(__name__)

STAGES = ("bronze", "silver", "identity", "gold")
JOB_RUNS_SCHEMA = (
    "run_id string, stage string, started_at timestamp, ended_at timestamp, "
    "status string, metrics string, error string, rows_in map<string,bigint>, rows_out map<string,bigint>"
)


class StageFailed(RuntimeError):
    """A stage raised; the message says which stage failed, why, and what to do next."""

    def __init__(self, outcome: "StageOutcome", not_run: tuple[str, ...] = ()):
        self.outcome = outcome
        self.not_run = not_run
        super().__init__(failure_message(outcome, not_run))


@dataclass
class StageOutcome:
    stage: str
    run_id: str
    started_at: datetime
    ended_at: datetime
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rows_in: dict[str, int] = field(default_factory=dict)  # rows of each table (or landed source) the stage read
    rows_out: dict[str, int] = field(default_factory=dict)  # rows each table's commits in this run added
    full: bool = False  # asked to rebuild from bronze (--full)

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


def expand_stage(stage: str) -> tuple[str, ...]:
    if stage == "all":
        return STAGES
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; choose one of {', '.join(STAGES)} or all")
    return (stage,)


def _bronze(spark: SparkSession, settings: Settings, run_id: str, as_of: date, full: bool) -> dict[str, Any]:
    results = build_bronze(spark, settings, batch_id=run_id)
    erased = enforce_ledger(spark, settings, run_id)  # erased subjects' data that landed again
    metrics: dict[str, Any] = {
        r.source: {"rows": r.rows, "new_files": len(r.new_files), "changed_files": len(r.changed_files),
                   "unchanged_files": r.skipped_files, "drifted_files": len(r.drift)}
        for r in results
    }
    metrics["erased_rows"] = erased
    return metrics


def _silver(spark: SparkSession, settings: Settings, run_id: str, as_of: date, full: bool) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    accounting = build_silver(spark, settings, run_id, as_of, full=full, seconds=seconds)
    unbalanced = [a.source for a in accounting if not a.balanced]
    if unbalanced:
        raise RuntimeError(f"row accounting does not balance for {unbalanced}: see ops.row_accounting")
    metrics: dict[str, Any] = {a.source: {"mode": a.mode, "read": a.read, "landed": a.landed, "silver": a.silver,
                                          "quarantined": a.quarantined, "duplicates": a.duplicates} for a in accounting}
    metrics["seconds"] = seconds
    return metrics


def _identity(spark: SparkSession, settings: Settings, run_id: str, as_of: date, full: bool) -> dict[str, Any]:
    result = build_identity(spark, settings, run_id, full=full)
    return {"mode": result.mode, "reached": result.reached, "seconds": result.seconds, "records": result.records, "one_ids": result.one_ids, "edges": result.edges,
            "refused_values": result.refused_values, "violations": result.violations, "changes": result.changes,
            "largest_one_id": result.largest_one_id, "engine": result.engine,
            "probabilistic_links": result.probabilistic_links, "candidate_pairs": result.candidate_pairs}


def _gold(spark: SparkSession, settings: Settings, run_id: str, as_of: date, full: bool) -> dict[str, Any]:
    result = build_gold(spark, settings, as_of, run_id, full=full)
    return {"mode": result.mode, "persons_recomputed": result.persons_recomputed, "profiles": result.profiles, "tag_rows": result.tag_rows, "consent_rows": result.consent_rows,
            "audiences": result.audience_sizes, "as_of": as_of.isoformat(), "warnings": result.warnings,
            "seconds": result.seconds}


def _silver_entity_tables(settings: Settings) -> list[str]:
    return [silver_table(e) for e in settings.model.entities]


def _counts(spark: SparkSession, tables: list[str]) -> dict[str, int]:
    """Rows per table; a plain count of a Delta table is answered from its log, without a scan."""
    return {t: spark.table(t).count() for t in tables if table_exists(spark, t)}


def rows_in(spark: SparkSession, settings: Settings, stage: str, metrics: dict[str, Any]) -> dict[str, int]:
    """What the stage read: bronze the landed files' rows per source, silver the bronze rows it
    accounted for, identity and gold the tables they read, counted once the stage is done."""
    if stage == "bronze":
        return {f"landing/{source}": m["rows"] for source, m in metrics.items() if source != "erased_rows"}
    if stage == "silver":
        return {bronze_table(source): m["read"] for source, m in metrics.items() if source != "seconds"}
    if stage == "identity":
        return _counts(spark, [IDENTIFIERS, *_silver_entity_tables(settings)])
    return _counts(spark, [*_silver_entity_tables(settings), ONEID_MAP])


RUNNERS: dict[str, Callable[[SparkSession, Settings, str, date, bool], dict[str, Any]]] = {
    "bronze": _bronze,
    "silver": _silver,
    "identity": _identity,
    "gold": _gold,
}


def failure_message(outcome: StageOutcome, not_run: tuple[str, ...]) -> str:
    """What failed, why, and what to do: every stage reruns safely, so the fix is to rerun it."""
    lines = [f"stage '{outcome.stage}' failed (run {outcome.run_id}): {outcome.error}"]
    if outcome.rows_out:
        lines.append(f"  written before the failure: {', '.join(sorted(outcome.rows_out))} "
                     "(each write is one atomic commit; the rerun replaces or skips them)")
    if not_run:
        lines.append(f"  not run: {', '.join(not_run)}")
    as_of = outcome.metrics.get("as_of")
    lines.append(f"  the trace is in ops.job_runs (cdp sql -e \"SELECT error FROM ops.job_runs WHERE run_id = "
                 f"'{outcome.run_id}'\"); once the cause is fixed: cdp run --stage {outcome.stage}"
                 + (" --full" if outcome.full else "") + (f" --as-of {as_of}" if as_of else ""))
    return "\n".join(lines)


def record_run(spark: SparkSession, outcome: StageOutcome) -> None:
    row = [(outcome.run_id, outcome.stage, outcome.started_at, outcome.ended_at, outcome.status,
            json.dumps(outcome.metrics, ensure_ascii=False, default=str), outcome.error,
            outcome.rows_in, outcome.rows_out)]
    append(spark.createDataFrame(row, JOB_RUNS_SCHEMA), JOB_RUNS)
    audit(spark, "job_run", object=outcome.stage, status=outcome.status,
          details={"run_id": outcome.run_id, "seconds": round(outcome.seconds, 1), "error": outcome.error})
    log.info("stage=%s status=%s run_id=%s seconds=%.1f rows_in=%d rows_out=%d tables_written=%d",
             outcome.stage, outcome.status, outcome.run_id, outcome.seconds, sum(outcome.rows_in.values()),
             sum(outcome.rows_out.values()), len(outcome.rows_out))


def run_stage(spark: SparkSession, settings: Settings, stage: str, as_of: date,
              on_write: OnWrite | None = None, full: bool = False) -> StageOutcome:
    """Run one stage; success or failure, it is recorded in ops.job_runs, with the rows it read and
    the rows each of its writes committed. Returns the failed outcome rather than raising."""
    run_id = new_run_id(stage)
    started = datetime.now(timezone.utc)
    with recording_writes(on_write) as written:
        try:
            metrics = RUNNERS[stage](spark, settings, run_id, as_of, full)
            read, status, error = rows_in(spark, settings, stage, metrics), "succeeded", None
        except Exception as exc:
            metrics, read, status = {"as_of": as_of.isoformat()}, {}, "failed"
            error = "".join(traceback.format_exception_only(exc)).strip()
            log.error("stage=%s status=failed run_id=%s", stage, run_id, exc_info=exc)
    outcome = StageOutcome(stage, run_id, started, datetime.now(timezone.utc), status, metrics, error,
                           rows_in=read, rows_out=dict(written), full=full)
    record_run(spark, outcome)
    return outcome


def run_stages(spark: SparkSession, settings: Settings, stage: str, as_of: date,
               on_done: Callable[[StageOutcome], None] | None = None,
               on_start: Callable[[str], OnWrite | None] | None = None, full: bool = False) -> list[StageOutcome]:
    """Run the stages in order. on_start(stage) may return a listener for the stage's writes (progress);
    on_done hears each outcome. `full`: rebuild from bronze rather than merge bronze's changes. A failed stage stops the run: StageFailed names it and the stages not run."""
    outcomes = []
    stages = expand_stage(stage)
    load_keys(settings)  # a cluster profile without its secrets stops here, before any stage
    for position, name in enumerate(stages):
        log.info("stage=%s status=starting as_of=%s", name, as_of.isoformat())
        outcome = run_stage(spark, settings, name, as_of, on_start(name) if on_start else None, full=full)
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
        if outcome.status == "failed":
            raise StageFailed(outcome, stages[position + 1:])
    return outcomes
