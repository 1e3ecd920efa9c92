"""Consent state per one_id and purpose, and the filter that enforces it.

Each subject identifier (a phone, an email, an openid … that gave or withdrew consent) keeps its own
latest event. When a person's identities disagree — the phone granted SMS marketing, the email
withdrew it — the most restrictive state wins (withdrawn) and the row is flagged as a conflict: a
OneID merge must never turn a withdrawal into a grant.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

ACTION_STATUS = {"grant": "granted", "withdraw": "withdrawn"}
CONSENT_STATE_SCHEMA = (
    "one_id string, purpose string, status string, updated_at timestamp, source string, record_key string, "
    "subjects int, conflict boolean"
)


def action_status(action: Column) -> Column:
    """A consent record's action (grant, withdraw) as the status it sets (granted, withdrawn); null otherwise."""
    return F.element_at(F.create_map(*[F.lit(x) for kv in ACTION_STATUS.items() for x in kv]), action)


def consent_state(consent_events: DataFrame, oneid_map: DataFrame) -> DataFrame:
    """(one_id, purpose, status, updated_at, source, record_key, subjects, conflict).

    Per subject identifier, the latest event counts (events at the same instant resolve to the
    withdrawal); per person, withdrawn if any of their subjects' latest is a withdrawal. The deciding
    event (source, record_key, updated_at) is the latest event with the resulting status.
    """
    status = action_status(F.col("action"))
    if {"subject_id_type", "subject_id_value"} <= set(consent_events.columns):
        subject = F.concat_ws(":", "subject_id_type", "subject_id_value")
    else:  # events without a resolved subject count as one subject
        subject = F.lit("")
    events = (
        consent_events.join(oneid_map, ["source", "record_key"])
        .withColumn("status", status).withColumn("subject", subject)
        .where(F.col("status").isNotNull())
    )
    latest = Window.partitionBy("one_id", "purpose", "subject").orderBy(
        F.col("occurred_at").desc(), (F.col("status") == "withdrawn").desc(), F.col("record_key")
    )
    per_subject = events.withColumn("_n", F.row_number().over(latest)).where(F.col("_n") == 1)
    decided = per_subject.groupBy("one_id", "purpose").agg(
        F.max_by(F.struct("status", F.col("occurred_at").alias("updated_at"), "source", "record_key"),
                 F.struct((F.col("status") == "withdrawn").alias("restrictive"), "occurred_at",
                          F.col("record_key").alias("key"))).alias("d"),
        F.count("*").cast("int").alias("subjects"),
        (F.countDistinct("status") > 1).alias("conflict"),
    )
    return decided.select("one_id", "purpose", "d.status", "d.updated_at", "d.source", "d.record_key",
                          "subjects", "conflict")


def allows_sql(status: str, default: str) -> str:
    """The one consent predicate, as SQL over a person's status for one purpose (`status`: granted,
    withdrawn, or null when the person never said): an opt_in purpose needs a grant, an opt_out
    purpose is allowed until withdrawn. Never null. Every consent filter (profile, audiences,
    exports, role views) is built from it."""
    if default == "opt_in":
        return f"coalesce({status} = 'granted', false)"
    return f"coalesce({status}, 'granted') = 'granted'"


def allows(status: str, default: str) -> Column:
    """allows_sql as a Column."""
    return F.expr(allows_sql(status, default))


def allowed_for(purpose: str, default: str, state: DataFrame) -> DataFrame:
    """A filter transform keeping persons whose consent allows `purpose` (opt_in needs a grant)."""

    def transform(people: DataFrame) -> DataFrame:
        current = state.where(F.col("purpose") == purpose).select("one_id", "status")
        return people.join(current, "one_id", "left").where(allows("status", default)).drop("status")

    return transform
