"""Consent state (latest wins, withdrawal on ties) and the purpose filter, with explicit rows."""

from __future__ import annotations

from datetime import datetime

from chispa import assert_df_equality

from cdp.privacy.consent import allowed_for, consent_state

EVENTS = "source string, record_key string, purpose string, action string, occurred_at timestamp"


def test_latest_event_wins_and_ties_resolve_to_withdrawn(spark):
    events = spark.createDataFrame(
        [
            ("consent_events", "C1", "marketing_sms", "grant", datetime(2026, 1, 1)),
            ("consent_events", "C2", "marketing_sms", "withdraw", datetime(2026, 2, 1)),   # later: wins
            ("consent_events", "C3", "marketing_email", "grant", datetime(2026, 3, 1)),
            ("consent_events", "C4", "marketing_email", "withdraw", datetime(2026, 3, 1)),  # same instant
            ("consent_events", "C5", "analytics", "grant", datetime(2026, 1, 1)),
            ("consent_events", "C6", "analytics", "maybe", datetime(2026, 5, 1)),           # not an action
        ],
        EVENTS,
    )
    oneid_map = spark.createDataFrame(
        [("consent_events", f"C{i}", "oid_a") for i in range(1, 7)], "source string, record_key string, one_id string"
    )
    got = consent_state(events, oneid_map).select("one_id", "purpose", "status", "record_key")
    expected = spark.createDataFrame(
        [("oid_a", "marketing_sms", "withdrawn", "C2"), ("oid_a", "marketing_email", "withdrawn", "C4"),
         ("oid_a", "analytics", "granted", "C5")],
        "one_id string, purpose string, status string, record_key string",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_opt_in_needs_a_grant_opt_out_allows_until_withdrawn(spark):
    people = spark.createDataFrame([("granted",), ("withdrawn",), ("silent",)], "one_id string")
    state = spark.createDataFrame(
        [("granted", "p", "granted"), ("withdrawn", "p", "withdrawn")], "one_id string, purpose string, status string"
    )
    opt_in = sorted(r["one_id"] for r in people.transform(allowed_for("p", "opt_in", state)).collect())
    opt_out = sorted(r["one_id"] for r in people.transform(allowed_for("p", "opt_out", state)).collect())
    assert opt_in == ["granted"]
    assert opt_out == ["granted", "silent"]
