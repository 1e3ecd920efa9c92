"""Activation (营销触发), as transforms: audience entries and exits as events with a deterministic key,
and the consent a delivery is checked against at send time.

- **One log, two writers.** gold.activation_events is the record of every entry and exit. The daily
  gold run writes those of the audiences over daily tags only; `cdp stream` writes those of the
  audiences that read a realtime tag (each audience has one writer). A person's membership of an
  audience, as activation knows it, is their latest event there.
- **The key.** The n-th event of a person in an audience is version n: entries are the odd versions
  and exits the even ones. The key is SHA-256 of `audience|one_id|event|version`: a retried batch, a
  replayed run or a resent delivery carries the same key, and a receiver deduplicates by it.
- **Consent at send time.** An entry is delivered only while the person's consent allows the
  audience's purpose: gold.consent_state as the daily run decided it, overridden by the consent
  events `cdp stream` saw after that decision (gold.realtime_consent; a withdrawal wins). Exits are
  always delivered: they tell a tool to stop.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdp.conf.audiences import Audience, referenced_tags
from cdp.conf.tags import TagLibrary
from cdp.privacy.consent import allows

ENTERED, EXITED = "entered", "exited"
ACTIVATION_SCHEMA = (
    "event_key string, audience string, purpose string, one_id string, event string, version int, "
    "occurred_at timestamp, origin string, origin_ref string, landed_at timestamp"
)
PAYLOAD = ("event_key", "audience", "purpose", "one_id", "event", "version", "occurred_at", "origin", "landed_at")
REALTIME_CONSENT_SCHEMA = (
    "one_id string, provisional boolean, purpose string, status string, occurred_at timestamp, source string, "
    "record_key string, id_hashes array<string>, landed_at timestamp, processed_at timestamp, batch_id long"
)


def uses_realtime(audience: Audience, library: TagLibrary) -> bool:
    return any(library.tags[code].realtime for code in referenced_tags(audience.rule) if code in library.tags)


def split_audiences(audiences: dict[str, Audience], library: TagLibrary) -> tuple[dict, dict]:
    """(daily, realtime): the active audiences whose activation the daily run writes, and those the
    stream writes (any realtime tag in the rule)."""
    active = {n: a for n, a in audiences.items() if a.status == "active"}
    realtime = {n: a for n, a in active.items() if uses_realtime(a, library)}
    return {n: a for n, a in active.items() if n not in realtime}, realtime


def audience_codes(audiences: dict[str, Audience], library: TagLibrary) -> list[str]:
    """The tags the audiences' rules read: those they name, or every tag when a rule holds SQL."""
    def has_sql(rule) -> bool:
        if isinstance(rule, dict):
            return "sql" in rule or any(has_sql(v) for v in rule.values())
        return isinstance(rule, list) and any(has_sql(v) for v in rule)

    if any(has_sql(a.rule) for a in audiences.values()):
        return list(library.tags)
    return sorted({code for a in audiences.values() for code in referenced_tags(a.rule)} & set(library.tags))


def event_key(audience: Column, one_id: Column, event: Column, version: Column) -> Column:
    return F.sha2(F.concat_ws("|", audience, one_id, event, version.cast("string")), 256)


def live_state(log: DataFrame) -> DataFrame:
    """(audience, one_id, last_event, version): each pair's latest event (a key written twice counts once)."""
    return (log.dropDuplicates(["event_key"]).groupBy("audience", "one_id")
            .agg(F.max_by("event", "version").alias("last_event"), F.max("version").alias("version")))


def transitions(current: DataFrame, live: DataFrame) -> DataFrame:
    """(audience, one_id, event, version): who entered (in `current`, not a member by `live`) and who
    exited (a member by `live`, not in `current`). Both frames cover the same audiences and persons."""
    now = current.select("audience", "one_id").distinct().withColumn("_now", F.lit(True))
    both = now.join(live, ["audience", "one_id"], "full")
    was = F.coalesce(F.col("last_event") == ENTERED, F.lit(False))
    is_ = F.coalesce(F.col("_now"), F.lit(False))
    event = F.when(is_ & ~was, F.lit(ENTERED)).when(~is_ & was, F.lit(EXITED))
    return (both.withColumn("event", event).where(F.col("event").isNotNull())
            .select("audience", "one_id", "event", (F.coalesce("version", F.lit(0)) + 1).cast("int").alias("version")))


def activation_rows(moves: DataFrame, purposes: dict[str, str], occurred_at: datetime, origin: str, origin_ref: str,
                    landed: DataFrame | None = None) -> DataFrame:
    """The log's rows for `moves` (transitions' output). `landed`: (one_id, landed_at), the earliest
    landing of the events that moved each person (the stream's; null for the daily run)."""
    purpose = F.element_at(F.create_map(*[F.lit(x) for kv in purposes.items() for x in kv]), F.col("audience")) \
        if purposes else F.lit(None).cast("string")
    rows = moves.withColumn("purpose", purpose)
    rows = rows.join(landed, "one_id", "left") if landed is not None else rows.withColumn(
        "landed_at", F.lit(None).cast("timestamp"))
    return rows.select(
        event_key(F.col("audience"), F.col("one_id"), F.col("event"), F.col("version")).alias("event_key"),
        "audience", "purpose", "one_id", "event", "version", F.lit(occurred_at).cast("timestamp").alias("occurred_at"),
        F.lit(origin).alias("origin"), F.lit(origin_ref).alias("origin_ref"), F.col("landed_at").cast("timestamp"))


def as_payload(rows: DataFrame) -> DataFrame:
    """Log rows with their times as ISO 8601 text in the session's time zone, with its offset:
    unambiguous to a receiver."""
    iso = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"
    return rows.withColumns({c: F.date_format(c, iso) for c in ("occurred_at", "landed_at")})


def consent_now(state: DataFrame, realtime: DataFrame | None) -> DataFrame:
    """(one_id, purpose, status): the daily decision (gold.consent_state), unless the stream saw
    consent events of the person and purpose after it; then a withdrawal among them wins, else the
    grant."""
    daily = state.select("one_id", "purpose", F.col("status").alias("_daily"), "updated_at")
    if realtime is None:
        return daily.select("one_id", "purpose", F.col("_daily").alias("status"))
    later = (realtime.join(daily, ["one_id", "purpose"], "left")
             .where(F.col("updated_at").isNull() | (F.col("occurred_at") > F.col("updated_at")))
             .groupBy("one_id", "purpose")
             .agg(F.when(F.count_if(F.col("status") == "withdrawn") > 0, F.lit("withdrawn"))
                  .otherwise(F.lit("granted")).alias("_stream")))
    return (daily.join(later, ["one_id", "purpose"], "full")
            .select("one_id", "purpose", F.coalesce("_stream", "_daily").alias("status")))


def allowed_now(defaults: dict[str, str]) -> Column:
    """Over activation events joined with consent_now's status: whether each may go out — an exit
    always, an entry while its purpose is allowed (`defaults`: purpose → opt_in/opt_out)."""
    allowed = F.lit(False)
    for purpose, default in defaults.items():
        allowed = F.when(F.col("purpose") == purpose, allows("status", default)).otherwise(allowed)
    return (F.col("event") == EXITED) | allowed
