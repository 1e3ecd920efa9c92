"""The shipped tag library on a hand-built dataset, every expected value worked out by hand; and the
library's dependency resolution with each of its errors."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
import yaml

from cdp.tags.engine import Inputs, TagDefinitionError, compile_library, compute_tags, to_long
from cdp.conf.tags import TagLibrary

RUN = date(2026, 11, 1)


def at(days_ago: int, hour: int = 12) -> datetime:
    return datetime.combine(RUN - timedelta(days=days_ago), datetime.min.time()) + timedelta(hours=hour)


PROFILE_SCHEMA = (
    "one_id string, gender string, birth_date date, province string, channels array<string>, has_phone boolean, "
    "first_seen timestamp, last_active_at timestamp"
)
ORDERS_SCHEMA = "one_id string, order_time timestamp, amount decimal(12,2), status string, payment_method string, channel string"
EVENTS_SCHEMA = "one_id string, event_time timestamp, event_type string, page string, channel string"

KW_DRESS = "%E8%BF%9E%E8%A1%A3%E8%A3%99"  # 连衣裙
KW_LIPSTICK = "%E5%8F%A3%E7%BA%A2"  # 口红


@pytest.fixture(scope="module")
def inputs(spark):
    profile = spark.createDataFrame([
        ("p1", "F", date(1990, 6, 15), "广东省", ["pos", "wechat"], True, at(400), at(5)),
        ("p2", "M", date(2001, 11, 2), "浙江省", ["ecommerce"], True, at(300), at(5)),  # 24: birthday tomorrow
        ("p3", None, None, None, ["ecommerce"], False, at(10), at(10)),
        ("p4", "F", date(1960, 1, 1), "北京市", ["pos"], True, at(500), at(2)),
        ("p5", None, None, None, ["wechat"], False, at(45), at(1)),
        ("p6", "M", date(1985, 3, 3), "上海市", ["pos", "ecommerce"], True, at(400), at(20)),
        ("p7", "F", None, None, ["pos"], True, at(100), at(100)),
        ("p8", None, None, None, ["ecommerce"], False, at(3), at(3)),
    ], PROFILE_SCHEMA)
    d = Decimal
    orders = spark.createDataFrame([
        ("p1", at(5), d("100.00"), None, "微信支付", "pos"),
        ("p1", at(50), d("200.00"), None, "支付宝", "pos"),
        ("p1", at(200), d("300.00"), None, "微信支付", "pos"),
        # p2 ties p1 on recency, frequency and spend; its payment methods tie 1–1
        ("p2", at(5), d("100.00"), "finished", "支付宝", "ecommerce"),
        ("p2", at(50), d("200.00"), "finished", "微信支付", "ecommerce"),
        ("p2", at(200), d("300.00"), "finished", None, "ecommerce"),
        ("p3", at(10), d("1000.00"), "finished", None, "ecommerce"),
        ("p4", at(300), d("50.00"), None, "现金", "pos"),
        ("p4", at(2), d("500.00"), "refunded", None, "ecommerce"),  # refunded: not a purchase
        ("p6", at(20), d("80.00"), None, "银联", "pos"),
        ("p6", at(400), d("70.00"), "finished", None, "ecommerce"),  # outside the 365-day RFM window
        ("p7", at(100), d("200.00"), None, "现金", "pos"),
        ("p8", at(3), d("900.00"), "refunded", None, "ecommerce"),  # only a refund: zero purchases
        ("p1", at(-1), d("5000.00"), None, "现金", "pos"),  # after the run date: not seen
    ], ORDERS_SCHEMA)
    events = spark.createDataFrame([
        ("p5", at(1), "page_view", "/pages/index/index", "wechat"),
        ("p5", at(2), "page_view", "/pages/index/index", "wechat"),
        ("p5", at(3), "page_view", "/pages/goods/detail?id=1", "wechat"),
        ("p5", at(4), "page_view", f"/pages/search/result?kw={KW_DRESS}", "wechat"),
        ("p5", at(5), "page_view", f"/pages/search/result?kw={KW_DRESS}", "wechat"),
        ("p5", at(6), "page_view", f"/pages/search/result?kw={KW_LIPSTICK}", "wechat"),
        ("p5", at(45), "page_view", "/pages/index/index", "wechat"),  # outside 30 days
        ("p5", at(-1), "page_view", "/pages/index/index", "wechat"),  # after the run date
        ("p5", at(3), "add_to_cart", "/pages/goods/detail?id=1", "wechat"),
        ("p1", at(40), "coupon_claim", "/pages/coupon/center", "wechat"),
    ], EVENTS_SCHEMA)
    return Inputs(profile, {"orders": (orders, "order_time"), "events": (events, "event_time")})


@pytest.fixture(scope="module")
def tags(spark, settings, inputs):
    wide = compute_tags(spark, settings.tags, inputs, RUN)
    return {row["one_id"]: row.asDict() for row in wide.collect()}


def column(tags, code):
    return {one_id: row[code] for one_id, row in sorted(tags.items())}


def test_rfm_scores_quintiles_with_ties(tags):
    # Buyers in the window: recency days 5,5,10,300,20,100 → edges 5,10,20,100 (lower is better);
    # purchases 3,3,1,1,1,1 → edges 1,1,1,3; spend 600,600,1000,50,80,200 → edges 80,200,600,600.
    assert column(tags, "rfm_r") == {"p1": 5, "p2": 5, "p3": 4, "p4": 1, "p5": None, "p6": 3, "p7": 2, "p8": None}
    assert column(tags, "rfm_f") == {"p1": 4, "p2": 4, "p3": 1, "p4": 1, "p5": None, "p6": 1, "p7": 1, "p8": None}
    assert column(tags, "rfm_m") == {"p1": 3, "p2": 3, "p3": 5, "p4": 1, "p5": None, "p6": 1, "p7": 2, "p8": None}


def test_rfm_segments(tags):
    assert column(tags, "rfm_segment") == {
        "p1": "重要价值客户", "p2": "重要价值客户", "p3": "重要发展客户", "p4": "一般挽留客户",
        "p5": None, "p6": "一般发展客户", "p7": "一般挽留客户", "p8": None,
    }


def test_lifecycle_stage(tags):
    assert column(tags, "lifecycle_stage") == {
        "p1": "活跃", "p2": "活跃", "p3": "新客", "p4": "流失", "p5": "潜客", "p6": "活跃", "p7": "沉睡", "p8": "潜客",
    }


def test_value_tier_is_the_top_spend_decile(tags):
    # lifetime spend 600,600,1000,50,150,200 → decile edges 100,150,175,200,400,600,600,600,800
    assert column(tags, "spend_decile") == {"p1": 6, "p2": 6, "p3": 10, "p4": 1, "p5": None, "p6": 2, "p7": 4, "p8": None}
    assert column(tags, "value_tier") == {
        "p1": "中价值", "p2": "中价值", "p3": "高价值", "p4": "低价值", "p5": None, "p6": "低价值", "p7": "低价值", "p8": None,
    }
    assert [k for k, v in column(tags, "high_value").items() if v] == ["p3"]


def test_purchases_refunds_and_preferences(tags):
    assert column(tags, "purchase_count") == {"p1": 3, "p2": 3, "p3": 1, "p4": 1, "p5": 0, "p6": 2, "p7": 1, "p8": 0}
    assert column(tags, "refund_count") == {"p1": 0, "p2": 0, "p3": 0, "p4": 1, "p5": 0, "p6": 0, "p7": 0, "p8": 1}
    assert column(tags, "avg_order_value")["p1"] == Decimal("200.00")
    assert column(tags, "preferred_payment") == {
        "p1": "微信支付", "p2": "微信支付", "p3": None, "p4": "现金", "p5": None, "p6": "银联", "p7": "现金", "p8": None,
    }
    assert [k for k, v in column(tags, "omnichannel").items() if v] == ["p6"]  # a store purchase and an old online one
    assert [k for k, v in column(tags, "repeat_buyer").items() if v] == ["p1", "p2", "p6"]


def test_event_windows_and_search_interest(tags):
    assert column(tags, "views_30d") == {"p1": 0, "p2": 0, "p3": 0, "p4": 0, "p5": 6, "p6": 0, "p7": 0, "p8": 0}
    assert column(tags, "cart_adds_30d")["p5"] == 1
    assert column(tags, "coupon_claims_90d")["p1"] == 1
    assert column(tags, "top_search_keyword") == {
        "p1": None, "p2": None, "p3": None, "p4": None, "p5": "连衣裙", "p6": None, "p7": None, "p8": None,
    }
    assert [k for k, v in column(tags, "intent_not_converted").items() if v] == ["p5"]
    assert [k for k, v in column(tags, "highly_active").items() if v] == ["p5"]


def test_realtime_tags_over_events(tags):
    """The tags `cdp stream` keeps current, as the daily run computes them (events after the run date
    unseen; times in the session's zone, Asia/Shanghai, for times made at noon UTC)."""
    assert {c: column(tags, c)["p5"] for c in ("last_event_at", "last_channel", "last_viewed_page", "views_today",
                                               "cart_adds_7d")} == {
        "last_event_at": "2026-10-31 20:00:00", "last_channel": "wechat", "last_viewed_page": "/pages/index/index",
        "views_today": 0, "cart_adds_7d": 1}
    assert {c: column(tags, c)["p1"] for c in ("last_event_at", "last_viewed_page", "views_today")} == {
        "last_event_at": "2026-09-22 20:00:00", "last_viewed_page": None, "views_today": 0}
    assert column(tags, "last_event_at")["p2"] is None


def test_profile_tags_and_scenarios(tags):
    assert column(tags, "age_band") == {
        "p1": "35-44", "p2": "18-24", "p3": None, "p4": "55+", "p5": None, "p6": "35-44", "p7": None, "p8": None,
    }
    assert column(tags, "gender")["p1"] == "女"
    assert [k for k, v in column(tags, "cart_recovery").items() if v] == ["p5"]
    assert [k for k, v in column(tags, "new_customer_nurture").items() if v] == ["p3"]
    assert [k for k, v in column(tags, "active_recent").items() if v] == ["p1", "p2", "p3", "p4", "p5", "p6", "p8"]


def test_long_form_keeps_true_booleans_and_values(spark, settings, inputs):
    wide = compute_tags(spark, settings.tags, inputs, RUN).where("one_id = 'p8'")
    rows = {(r["tag_code"], r["value"]) for r in to_long(wide, settings.tags, RUN, datetime(2026, 11, 1, 3)).collect()}
    assert rows == {
        ("tenure_days", "3"), ("active_recent", "true"), ("purchase_count", "0"), ("refund_count", "1"),
        ("views_30d", "0"), ("cart_adds_30d", "0"), ("coupon_claims_90d", "0"), ("lifecycle_stage", "潜客"),
        ("views_today", "0"), ("cart_adds_7d", "0"),
    }


# ---------------------------------------------------------------- the library's own rules


def test_tags_over_the_daily_summaries_equal_tags_over_the_rows(spark, settings, inputs, tags):
    """Gold counts over per-person daily summaries, not over silver: every tag of every person comes
    out as it does over the raw rows, and the summaries keep only the columns the tags name."""
    from cdp.tags.summaries import DAY, expand, read_columns, summarise_days

    entities, kept = {}, {}
    for name, (rows, time_field) in inputs.entities.items():
        kept[name] = read_columns(settings.tags, name, rows.columns)
        summary = summarise_days(rows, kept[name], time_field)
        entities[name] = (expand(summary), DAY)
        kept[name + "_rows"] = summary.count()
    assert kept == {"orders": ["amount", "status", "payment_method", "channel"], "orders_rows": 14,
                    "events": ["event_time", "event_type", "page", "channel"], "events_rows": 10}
    wide = compute_tags(spark, settings.tags, Inputs(inputs.profile, entities), RUN)
    assert {row["one_id"]: row.asDict() for row in wide.collect()} == tags
    # Two rows of a day that agree on every read column are one summary row that counts 2.
    twice = inputs.entities["events"][0].where("one_id = 'p5' AND event_type = 'add_to_cart'")
    doubled = summarise_days(twice.unionByName(twice), ["event_type", "page"], "event_time")
    assert [(r["one_id"], r[DAY], r["summary_rows"]) for r in doubled.collect()] == [("p5", RUN - timedelta(days=3), 2)]


def library(tags: dict, params: dict | None = None) -> TagLibrary:
    base = {"name_zh": "标签", "name_en": "Tag", "category": "test", "owner": "tests", "description": "d"}
    return TagLibrary.model_validate({"params": params or {}, "tags": {c: {**base, **t} for c, t in tags.items()}})


ATOMIC = {"layer": "atomic", "type": "integer", "source": "profile", "value": "1"}


def test_tags_are_ordered_after_what_they_read():
    lib = library({
        "s": {"layer": "scenario", "type": "boolean", "value": "d2 AND a > 0"},
        "d2": {"layer": "derived", "type": "boolean", "value": "d1 OR a > ${n}"},
        "d1": {"layer": "derived", "type": "boolean", "value": "a > 1 AND 'd2' <> ''"},  # 'd2' is text, not a tag
        "a": ATOMIC,
    }, {"n": 3})
    assert lib.order() == ["a", "d1", "d2", "s"]
    assert lib.depends_on("d2") == ["a", "d1"]
    assert lib.used_by("d1") == ["d2"]
    assert lib.expression("d2") == "d1 OR a > 3"


@pytest.mark.parametrize("tags, params, message", [
    ({"a": ATOMIC, "x": {"layer": "derived", "type": "boolean", "value": "y AND a > 0"},
      "y": {"layer": "derived", "type": "boolean", "value": "x"}}, {}, "tag 'x': dependency cycle x → y → x"),
    ({"x": {"layer": "derived", "type": "boolean", "value": "x"}}, {}, "tag 'x': dependency cycle x → x"),
    ({"a": ATOMIC, "d": {"layer": "derived", "type": "boolean", "value": "s"},
      "s": {"layer": "scenario", "type": "boolean", "value": "a > 0"}}, {}, "tag 'd' (derived) reads 's' (scenario)"),
    ({"a": {**ATOMIC, "value": "${missing}"}}, {}, "tag 'a': parameter ${missing} is not defined"),
    ({"a": {**ATOMIC, "source": None}}, {}, "an atomic tag needs `source"),
    ({"a": ATOMIC, "d": {"layer": "derived", "type": "integer", "source": "orders", "value": "a"}}, {},
     "`source` is for atomic tags only"),
    ({"one_id": ATOMIC}, {}, "tag code 'one_id' is reserved"),
    ({"a": {**ATOMIC, "type": "string", "score": {"bins": 5}}}, {}, "a scored tag is an integer"),
])
def test_library_errors_name_the_tag(tags, params, message):
    with pytest.raises(ValueError, match=message.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")):
        library(tags, params)


@pytest.mark.parametrize("tags, message", [
    ({"a": ATOMIC, "d": {"layer": "derived", "type": "boolean", "value": "a > 0 AND nope"}},
     r"tag 'd' \(derived\): .*nope.*Fix: derived and scenario tags read tags only"),
    ({"a": {**ATOMIC, "value": "coalesce(gender,"}}, r"tag 'a' \(atomic\): .*(?i:syntax)"),
    ({"a": {**ATOMIC, "type": "boolean", "value": "gender"}},
     r"tag 'a' \(atomic\): declared boolean but its value is string"),
    ({"o": {**ATOMIC, "source": "orders", "value": "amount"}}, r"tag 'o' \(atomic\): .*Fix: an atomic orders tag is an aggregate"),
    ({"a": {**ATOMIC, "value": "no_such_column + 1"}}, r"tag 'a' \(atomic\): .*no_such_column"),
])
def test_invalid_expressions_fail_before_any_data_is_read(spark, inputs, tags, message):
    with pytest.raises(TagDefinitionError, match=message):
        compile_library(spark, library(tags), inputs, RUN)


def test_the_shipped_library_has_three_layers_and_compiles(spark, settings, inputs):
    lib = settings.tags
    layers = [t.layer for t in lib.tags.values()]
    assert len(lib.tags) >= 20 and {layer: layers.count(layer) for layer in set(layers)} == {
        "atomic": 29, "derived": 11, "scenario": 4}
    compile_library(spark, lib, inputs, RUN)


def test_docs_tags_md_is_rendered_from_the_shipped_yaml(settings):
    from pathlib import Path

    from cdp.tags.docs import render

    committed = (Path(__file__).resolve().parents[1] / "docs" / "tags.md").read_text(encoding="utf-8")
    assert committed == render(settings.tags), "docs/tags.md is stale: run `cdp tags doc -o docs/tags.md`"
    assert yaml.safe_load((Path(settings.conf_dir) / "tags.yaml").read_text(encoding="utf-8"))["tags"].keys() == settings.tags.tags.keys()
