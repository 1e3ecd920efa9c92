"""Consent state per one_id and purpose (latest event wins), and the filter that enforces it."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

ACTION_STATUS = {"grant": "granted", "withdraw": "withdrawn"}


def consent_state(consent_events: DataFrame, oneid_map: DataFrame) -> DataFrame:
    """(one_id, purpose, status, updated_at, source, record_key): the latest event per person and purpose.

    Events at the same instant resolve to the more restrictive one (withdrawn).
    """
    status = F.element_at(F.create_map(*[F.lit(x) for kv in ACTION_STATUS.items() for x in kv]), F.col("action"))
    events = consent_events.join(oneid_map, ["source", "record_key"]).withColumn("status", status).where(
        F.col("status").isNotNull()
    )
    latest = Window.partitionBy("one_id", "purpose").orderBy(
        F.col("occurred_at").desc(), (F.col("status") == "withdrawn").desc(), F.col("record_key")
    )
    return (
        events.withColumn("_n", F.row_number().over(latest))
        .where(F.col("_n") == 1)
        .select("one_id", "purpose", "status", F.col("occurred_at").alias("updated_at"), "source", "record_key")
    )


def allowed_for(purpose: str, default: str, state: DataFrame) -> DataFrame:
    """A filter transform keeping persons whose consent allows `purpose` (opt_in needs a grant)."""

    def transform(people: DataFrame) -> DataFrame:
        current = state.where(F.col("purpose") == purpose).select("one_id", "status")
        joined = people.join(current, "one_id", "left")
        allowed = F.col("status") == "granted" if default == "opt_in" else F.coalesce(F.col("status"), F.lit("granted")) == "granted"
        return joined.where(F.coalesce(allowed, F.lit(False))).drop("status")

    return transform
