"""ops.audit_log: who did what with personal data, append-only (delta.appendOnly) and queryable.

Rows are written for every job run, every export (and every refused one), every erasure, every
vacuum, every change of the role views, every statement run through a role's SQL endpoint, and
every activation delivered (and every entry refused at send time). Rows hold names, counts and
hashed keys, never a clear identifier.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

from pyspark.sql import SparkSession

from cdp.lakehouse import table_exists
from cdp.tables import AUDIT_LOG
AUDIT_SCHEMA = (
    "event_id string, at timestamp, actor string, action string, object string, purpose string, "
    "audience string, rows long, destination string, status string, details string"
)
ACTIONS = ("job_run", "export", "export_refused", "erasure", "erasure_dry_run", "vacuum", "role_views", "steward_rule",
           "maintain", "sql", "activation", "activation_refused")


def current_actor() -> str:
    """CDP_ACTOR (set it to the person or service account on whose behalf a job runs), else the OS user."""
    if os.environ.get("CDP_ACTOR"):
        return os.environ["CDP_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def audit(spark: SparkSession, action: str, *, object: str | None = None, purpose: str | None = None,
          audience: str | None = None, rows: int | None = None, destination: str | None = None,
          status: str = "ok", details: dict[str, Any] | None = None, actor: str | None = None) -> None:
    append_events(spark, [event(action, object=object, purpose=purpose, audience=audience, rows=rows,
                                destination=destination, status=status, details=details, actor=actor)])


def event(action: str, *, object: str | None = None, purpose: str | None = None, audience: str | None = None,
          rows: int | None = None, destination: str | None = None, status: str = "ok",
          details: dict[str, Any] | None = None, actor: str | None = None, at: datetime | None = None) -> tuple:
    """One row of the audit log (append it with append_events)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action '{action}'; one of {ACTIONS}")
    return (uuid4().hex, at or datetime.now(timezone.utc), actor or current_actor(), action, object, purpose, audience,
            rows, destination, status, json.dumps(details or {}, ensure_ascii=False, default=str, sort_keys=True))


def append_events(spark: SparkSession, events: list[tuple]) -> None:
    """The events in one commit."""
    if not events:
        return
    frame = spark.createDataFrame(events, AUDIT_SCHEMA)
    writer = frame.write.format("delta").mode("append")
    if not table_exists(spark, AUDIT_LOG):
        writer = writer.option("delta.appendOnly", "true")
    writer.saveAsTable(AUDIT_LOG)


def last_details(spark: SparkSession, action: str) -> dict[str, Any] | None:
    """The details of the latest successful event of this kind, if any."""
    if not table_exists(spark, AUDIT_LOG):
        return None
    rows = (spark.table(AUDIT_LOG).where(f"action = '{action}' AND status = 'ok'")
            .orderBy("at", ascending=False).select("details").limit(1).collect())
    return json.loads(rows[0]["details"]) if rows else None
