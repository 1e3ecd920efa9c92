"""Steward controls: a data steward's must-link and must-not-link rules between two records.

`cdp identity merge --record A --record B` says A and B are one person; `cdp identity split` says
they are two. Rules live in identity.steward_rules (Delta) and every later identity run — and a full
rebuild — applies them: a must-link is the strongest link in the graph, a must-not-link refuses any
link that would put the two records in one person, and a must-link never overrides a must-not-link.
Each rule is audited in ops.audit_log; erasing a record drops the rules that name it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cdp.audit import audit, current_actor
from cdp.lakehouse import table_exists
from cdp.tables import ONEID_MAP, STEWARD_RULES

Kind = Literal["must_link", "must_not_link"]
RULES_SCHEMA = ("rule_id string, kind string, source_a string, record_key_a string, source_b string, "
                "record_key_b string, reason string, actor string, created_at timestamp")


class StewardError(ValueError):
    """A rule that cannot be written: an unknown record, a record paired with itself."""


@dataclass(frozen=True)
class Rule:
    rule_id: str
    kind: Kind
    a: tuple[str, str]
    b: tuple[str, str]
    created: bool  # False: the same rule was already in force (a rerun never duplicates)


def parse_record(text: str) -> tuple[str, str]:
    source, sep, key = text.partition(":")
    if not sep or not source or not key:
        raise StewardError(f"--record '{text}' is not SOURCE:KEY, e.g. crm_members:M10000123")
    return source, key


def rule_id(kind: Kind, a: tuple[str, str], b: tuple[str, str]) -> str:
    """The same two records and kind give the same id, in either order."""
    first, second = sorted([a, b])
    digest = hashlib.sha256("\u0001".join([kind, *first, *second]).encode("utf-8")).hexdigest()[:16]
    return f"sr_{digest}"


def add_rule(spark: SparkSession, kind: Kind, record_a: str, record_b: str, reason: str,
             actor: str | None = None) -> Rule:
    """Write one rule (once), audited; both records must be in identity.oneid_map."""
    a, b = parse_record(record_a), parse_record(record_b)
    if a == b:
        raise StewardError(f"--record {record_a} is given twice: a rule needs two different records")
    if not table_exists(spark, ONEID_MAP):
        raise StewardError(f"{ONEID_MAP} does not exist yet. Fix: run `cdp run --stage identity` first.")
    known = {(r["source"], r["record_key"]) for r in spark.table(ONEID_MAP).where(
        ((F.col("source") == a[0]) & (F.col("record_key") == a[1])) | ((F.col("source") == b[0]) & (F.col("record_key") == b[1]))
    ).select("source", "record_key").collect()}
    for record in (a, b):
        if record not in known:
            raise StewardError(f"no record {record[0]}:{record[1]} in {ONEID_MAP} (quarantined records have no one_id: "
                               "see silver.quarantine)")
    first, second = sorted([a, b])
    identifier = rule_id(kind, a, b)
    exists = table_exists(spark, STEWARD_RULES) and spark.table(STEWARD_RULES).where(
        F.col("rule_id") == identifier).limit(1).count() > 0
    who = actor or current_actor()
    if not exists:
        row = [(identifier, kind, *first, *second, reason, who, datetime.now(timezone.utc).replace(tzinfo=None))]
        spark.createDataFrame(row, RULES_SCHEMA).write.format("delta").mode("append").saveAsTable(STEWARD_RULES)
    audit(spark, "steward_rule", object=STEWARD_RULES, status="ok" if not exists else "unchanged", actor=who,
          details={"rule_id": identifier, "kind": kind, "records": 2, "reason": reason})
    return Rule(identifier, kind, first, second, created=not exists)
