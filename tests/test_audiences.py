"""Audience rules (人群圈选) compiled and evaluated on hand-made persons; membership history (SCD2) and how
it follows OneID merges and removals."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from cdp.activation import split_audiences
from cdp.audience.members import audience_frame, select_audience
from cdp.conf.audiences import RuleError, compile_rule, referenced_tags
from cdp.conf.audiences import Audience
from cdp.lakehouse import table_version
from cdp.stages.gold import write_history
from cdp.profile.history import next_history, survivors

RUN = date(2026, 11, 1)


@pytest.fixture(scope="module")
def frame(spark, settings):
    profile = spark.createDataFrame([
        ("a", True, datetime(2026, 10, 30, 9), 3),
        ("b", True, datetime(2026, 9, 1, 9), 0),
        ("c", False, datetime(2026, 10, 31, 23), 1),
        ("d", True, None, 7),
    ], "one_id string, has_phone boolean, last_seen timestamp, order_count long")
    tags = spark.createDataFrame([
        ("a", True, "活跃", 5),
        ("b", False, "潜客", None),
        ("c", True, "流失", 2),
        # d has no tag row at all
    ], "one_id string, high_value boolean, lifecycle_stage string, rfm_r int")
    return audience_frame(profile, tags, RUN)


def members(frame, settings, rule, state=None, purpose="analytics"):
    state = state if state is not None else frame.sparkSession.createDataFrame([], "one_id string, purpose string, status string")
    audience = Audience(name_zh="测试", description="t", owner="tests", purpose=purpose, rule=rule)
    selection = select_audience(frame, audience, settings.tags, state, settings.privacy.defaults[purpose])
    return sorted(r["one_id"] for r in selection.members.collect())


@pytest.mark.parametrize("rule, expected", [
    ({"tag": "high_value"}, ["a", "c"]),
    ({"all": [{"tag": "high_value"}, {"field": "has_phone", "eq": True}]}, ["a"]),
    ({"any": [{"tag": "lifecycle_stage", "in": ["潜客", "流失"]}, {"field": "order_count", "gte": 7}]}, ["b", "c", "d"]),
    ({"not": {"tag": "lifecycle_stage", "eq": "流失"}}, ["a", "b", "d"]),  # d has no stage: NOT holds
    ({"tag": "rfm_r", "between": [2, 4]}, ["c"]),
    ({"field": "last_seen", "within_days": 3}, ["a", "c"]),  # 10-30 and 10-31 are within 3 days of 11-01
    ({"field": "last_seen", "before": "2026-10-01"}, ["b"]),
    ({"tag": "rfm_r", "is_null": True}, ["b", "d"]),
    ({"sql": "profile.order_count > 2 AND tag.rfm_r IS NULL"}, ["d"]),
])
def test_rules_select_exactly_these_persons(frame, settings, rule, expected):
    assert members(frame, settings, rule) == expected


def test_consent_filters_members_but_not_matches(spark, frame, settings):
    state = spark.createDataFrame([("a", "marketing_sms", "granted"), ("c", "marketing_sms", "withdrawn")],
                                  "one_id string, purpose string, status string")
    assert members(frame, settings, {"tag": "high_value"}, state, "marketing_sms") == ["a"]  # opt-in: c withdrew
    state = spark.createDataFrame([("c", "analytics", "withdrawn")], "one_id string, purpose string, status string")
    assert members(frame, settings, {"tag": "high_value"}, state, "analytics") == ["a"]  # opt-out: c withdrew


def test_compiled_sql_quotes_values(settings):
    rule = {"all": [{"tag": "lifecycle_stage", "in": ["活跃", "it's"]}, {"not": {"field": "city", "eq": "北京市"}}]}
    assert compile_rule(rule, settings.tags) == (
        "((tag.`lifecycle_stage` IN ('活跃', 'it\\'s')) AND (NOT coalesce((profile.`city` = '北京市'), FALSE)))"
    )
    assert referenced_tags({"any": [{"tag": "a"}, {"not": {"tag": "b", "eq": 1}}]}) == {"a", "b"}
    assert compile_rule({"tag": "last_viewed_page", "starts_with": "/pages/activity/"}, settings.tags) == (
        "startswith(tag.`last_viewed_page`, '/pages/activity/')")


def test_an_audience_naming_a_realtime_tag_is_written_by_the_stream(settings):
    daily, realtime = split_audiences(settings.audiences.audiences, settings.tags)
    assert sorted(realtime) == ["activity_page_wechat", "cart_coupon_wechat"]
    assert sorted(daily) == ["high_value_sms", "holiday_push_wechat", "new_customer_email", "winback_sms"]


@pytest.mark.parametrize("rule, message", [
    ({"tag": "vip"}, r"rule: unknown tag 'vip'"),
    ({"tag": "lifecycle_stage"}, r"'lifecycle_stage' needs a comparison"),
    ({"all": [{"tag": "buyer"}, {"field": "city", "eq": "x", "ne": "y"}]}, r"rule.all\[1\]: one comparison per condition"),
    ({"any": []}, r"rule.any: expected a non-empty list"),
    ({"tag": "rfm_r", "between": [1]}, r"`between` takes \[low, high\]"),
    ({"field": "last_seen", "within_days": 0}, r"`within_days` takes a whole number of days"),
    ({"field": "last_seen", "after": "yesterday"}, r"'yesterday' is not a date"),
    ({"tag": "buyer", "field": "city"}, r"exactly one `tag` or `field`"),
    ({"field": "city", "like": "x"}, r"unknown comparison \['like'\]"),
    ({"field": "city", "starts_with": ""}, r"`starts_with` takes a non-empty text"),
])
def test_malformed_rules_say_where(settings, rule, message):
    with pytest.raises(RuleError, match=message):
        compile_rule(rule, settings.tags, {"city", "last_seen"})


# ---------------------------------------------------------------- history (SCD2)

HISTORY = "one_id string, tag_code string, value string, entered_on date, exited_on date"


def rows(df, *columns):
    return sorted(tuple(r[c] for c in columns) for r in df.collect())


def test_stays_continue_end_and_begin(spark):
    previous = spark.createDataFrame([
        ("a", "vip", "true", date(2026, 10, 1), None),      # continues
        ("a", "stage", "活跃", date(2026, 9, 1), None),      # ends: now 沉睡
        ("b", "vip", "true", date(2026, 8, 1), date(2026, 9, 1)),  # ended before: untouched
    ], HISTORY)
    current = spark.createDataFrame([("a", "vip", "true"), ("a", "stage", "沉睡"), ("b", "vip", "true")],
                                    "one_id string, tag_code string, value string")
    result = next_history(previous, current, ["one_id", "tag_code", "value"], RUN)
    assert rows(result, "one_id", "tag_code", "value", "entered_on", "exited_on") == [
        ("a", "stage", "沉睡", RUN, None),
        ("a", "stage", "活跃", date(2026, 9, 1), RUN),
        ("a", "vip", "true", date(2026, 10, 1), None),
        ("b", "vip", "true", date(2026, 8, 1), date(2026, 9, 1)),
        ("b", "vip", "true", RUN, None),  # came back
    ]
    # the same run again changes nothing; a stay that began today and is gone again vanishes
    again = next_history(result, current, ["one_id", "tag_code", "value"], RUN)
    assert rows(again, "one_id", "tag_code", "value", "entered_on", "exited_on") == rows(
        result, "one_id", "tag_code", "value", "entered_on", "exited_on")
    gone = next_history(result, current.where("tag_code = 'vip'"), ["one_id", "tag_code", "value"], RUN)
    assert ("a", "stage", "沉睡") not in {r[:3] for r in rows(gone, "one_id", "tag_code", "value")}


def test_survivors_follow_merge_chains(spark):
    registry = spark.createDataFrame([
        ("x", "retired", "y"), ("y", "retired", "z"), ("z", "active", None), ("gone", "retired", None),
    ], "one_id string, status string, merged_into string")
    assert survivors(registry) == {"x": "z", "y": "z", "gone": None}
    # Of the ids a table holds only: x, and y which its chain passes through; not gone.
    held = spark.createDataFrame([("x",), ("z",), ("x",)], "one_id string")
    assert survivors(registry, held) == {"x": "z", "y": "z"}


def test_history_follows_merges_and_forgets_removed_persons(spark):
    """Tags and audience memberships follow the surviving one_id; no rows remain for retired ids."""
    spark.sql("CREATE DATABASE IF NOT EXISTS gold")
    table = "gold.test_merge_history"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    spark.createDataFrame([
        ("old", "vip", "true", date(2026, 5, 1), None),    # old was merged into keep
        ("keep", "vip", "true", date(2026, 7, 1), None),
        ("old", "stage", "活跃", date(2026, 6, 1), None),
        ("old", "stage", "新客", date(2026, 4, 1), date(2026, 6, 1)),
        ("gone", "vip", "true", date(2026, 3, 1), None),   # gone's records were deleted
    ], HISTORY).write.format("delta").saveAsTable(table)
    registry = spark.createDataFrame([
        ("old", "retired", "keep"), ("keep", "active", None), ("gone", "retired", None),
    ], "one_id string, status string, merged_into string")
    current = spark.createDataFrame([("keep", "vip", "true"), ("keep", "stage", "活跃")],
                                    "one_id string, tag_code string, value string")
    rewritten = write_history(spark, table, ["one_id", "tag_code", "value"], current, RUN, registry, "test")
    assert rewritten == 3  # old, gone (retired) and keep (their survivor); nobody else's rows
    assert rows(spark.table(table), "one_id", "tag_code", "value", "entered_on", "exited_on") == [
        ("keep", "stage", "新客", date(2026, 4, 1), date(2026, 6, 1)),
        ("keep", "stage", "活跃", date(2026, 6, 1), None),
        ("keep", "vip", "true", date(2026, 5, 1), None),  # the earlier stay of the merged id
    ]
    # The same run again: nobody's stays change, so nothing is rewritten and nothing is committed.
    version = table_version(spark, table)
    assert write_history(spark, table, ["one_id", "tag_code", "value"], current, RUN, registry, "test") == 0
    assert table_version(spark, table) == version
    spark.sql(f"DROP TABLE {table}")


def test_a_deprecated_tag_still_in_use_is_flagged(settings):
    from cdp.stages.gold import deprecated_in_use

    library = settings.tags.model_copy(deep=True)
    assert deprecated_in_use(library, settings.audiences.audiences) == []  # shipped: active_recent is unused
    library.tags["high_value"].status = "deprecated"
    assert deprecated_in_use(library, settings.audiences.audiences) == [
        "tag 'high_value' is deprecated but still used by tags [] and audiences ['high_value_sms']"
    ]
    library.tags["repeat_buyer"].status = "deprecated"
    assert deprecated_in_use(library, {}) == [  # high_value: no audiences given, and no tag reads it
        "tag 'repeat_buyer' is deprecated but still used by tags ['churn_risk', 'new_customer_nurture'] and audiences []"
    ]
