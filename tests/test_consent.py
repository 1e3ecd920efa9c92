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


SUBJECT_EVENTS = (
    "source string, record_key string, purpose string, action string, occurred_at timestamp, "
    "subject_id_type string, subject_id_value string"
)


def test_a_merge_of_a_consenting_and_a_withdrawn_identity_is_withdrawn_and_flagged(spark):
    events = spark.createDataFrame(
        [
            # oid_a: the phone granted SMS last, the email had withdrawn it earlier → withdrawn, conflict
            ("consent_events", "P1", "marketing_sms", "grant", datetime(2026, 3, 1), "phone", "+8613912345678"),
            ("consent_events", "E1", "marketing_sms", "withdraw", datetime(2026, 2, 1), "email", "a@qq.com"),
            # oid_a: one identity changed its mind → its latest counts, no conflict
            ("consent_events", "P2", "analytics", "withdraw", datetime(2026, 1, 1), "phone", "+8613912345678"),
            ("consent_events", "P3", "analytics", "grant", datetime(2026, 4, 1), "phone", "+8613912345678"),
            # oid_b: two identities that agree
            ("consent_events", "B1", "marketing_sms", "grant", datetime(2026, 1, 1), "phone", "+8613800001111"),
            ("consent_events", "B2", "marketing_sms", "grant", datetime(2026, 5, 1), "openid", "oX8a_b"),
        ],
        SUBJECT_EVENTS,
    )
    oneid_map = spark.createDataFrame(
        [("consent_events", k, "oid_a") for k in ("P1", "E1", "P2", "P3")]
        + [("consent_events", k, "oid_b") for k in ("B1", "B2")],
        "source string, record_key string, one_id string",
    )
    got = consent_state(events, oneid_map).select("one_id", "purpose", "status", "record_key", "subjects", "conflict")
    expected = spark.createDataFrame(
        [("oid_a", "marketing_sms", "withdrawn", "E1", 2, True), ("oid_a", "analytics", "granted", "P3", 1, False),
         ("oid_b", "marketing_sms", "granted", "B2", 2, False)],
        "one_id string, purpose string, status string, record_key string, subjects int, conflict boolean",
    )
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
