"""Real-time profiles (`cdp stream`) on the suite's pipeline lakehouse (tests/conftest.py): event files
landed now become realtime tags in one micro-batch; a rerun with nothing new changes nothing; an
unknown device gets a provisional id, which the daily run's identity replaces at the stream's next
start; the realtime tags equal what the daily gold run computes over the same events; and an
erasure reaches what the stream keeps under a provisional id, whose next events then stay out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pyspark.sql import functions as F

from cdp.operations.erasure import erase
from cdp.pipeline import run_stages
from cdp.stages.stream import run_stream
from cdp.tables import REALTIME_EVENTS, REALTIME_TAGS, STREAM_PROGRESS

REALTIME = ["cart_adds_7d", "last_channel", "last_event_at", "last_viewed_page", "views_today"]
UNKNOWN_OPENID = "oTESTunknownDevice000000000001"


def quiet_person(spark, since: datetime) -> tuple[str, str, str]:
    """(one_id, openid, unionid) of a person whose openid names them alone, with no event since `since`
    and none the stream keeps (the unionid: theirs, or a new one when they have none — a second would
    split them)."""
    recent = (spark.table("silver.events").where(F.col("event_time") >= F.lit(since))
              .join(spark.table("identity.oneid_map"), ["source", "record_key"]).select("one_id"))
    if spark.catalog.tableExists(REALTIME_EVENTS):  # another test's stream has seen them
        recent = recent.unionByName(spark.table(REALTIME_EVENTS).select("one_id"))
    row = (spark.table("gold.identity_map").where((F.col("id_type") == "openid") & F.col("id_value").isNotNull())
           .groupBy("id_hash").agg(F.collect_set("one_id").alias("holders"), F.min("id_value").alias("openid"))
           .where(F.size("holders") == 1).select(F.col("holders")[0].alias("one_id"), "openid")
           .join(recent, "one_id", "left_anti").orderBy("one_id").first())
    unionid = (spark.table("silver.identifiers").where(F.col("id_type") == "unionid")
               .join(spark.table("identity.oneid_map").where(F.col("one_id") == row["one_id"]), ["source", "record_key"])
               .agg(F.min("id_value").alias("unionid")).first()["unionid"])
    return row["one_id"], row["openid"], unionid or "oUTESTquietPersonUnion00001"


def records(events: list[tuple], unionids: dict[str, str], first: int = 0, prefix: str = "wx_rt") -> list[str]:
    """Mini-program events as delivered, one JSON object each: (event_type, page, openid, time) each,
    ids <prefix>0000000 on from `first`."""
    return [json.dumps({
        "event_id": f"{prefix}{first + i:07d}", "appid": "wx3c5e7f9a1b2d4c6e", "openid": who, "unionid": unionids[who],
        "event_type": kind, "page": page, "ts": int(at.timestamp() * 1000)}) for i, (kind, page, who, at) in enumerate(events)]


def land(data_dir, name: str, events: list[tuple], unionids: dict[str, str], first: int = 0) -> None:
    """A mini-program event file of `records`."""
    folder = Path(data_dir) / "landing" / "wechat_events"
    (folder / name).write_text("".join(f"{line}\n" for line in records(events, unionids, first)), encoding="utf-8")


def tags_of(spark, table: str, one_id: str) -> dict[str, str]:
    return {r["tag_code"]: r["value"] for r in spark.table(table).where(
        (F.col("one_id") == one_id) & F.col("tag_code").isin(*REALTIME)).collect()}


def test_landed_events_become_realtime_tags_once_and_equal_the_daily_run(spark, settings, data_dir, pipeline_run):
    zone = ZoneInfo(settings.profile.timezone)
    now = datetime.now(zone).replace(microsecond=0)
    person, openid, unionid = quiet_person(spark, now - timedelta(days=settings.pipeline.stream.keep_days))
    unionids = {openid: unionid, UNKNOWN_OPENID: "oUTESTunknownDeviceUnion001"}
    times = [now - timedelta(seconds=s) for s in (30, 20, 10, 5)]
    events = [
        ("page_view", "/pages/index/index", openid, times[0]),
        ("product_view", "/pages/goods/detail?id=42", openid, times[1]),
        ("add_to_cart", "/pages/goods/detail?id=42", openid, times[2]),
        ("page_view", "/pages/search/result?kw=abc", UNKNOWN_OPENID, times[3]),
    ]
    land(data_dir, "wechat_events_part-9101.jsonl", events, unionids)

    first = run_stream(spark, settings, once=True)
    assert first.batches >= 1
    today = now.date()
    views_today = sum(1 for kind, _, who, at in events if who == openid and kind.endswith("view") and at.date() == today)
    assert tags_of(spark, REALTIME_TAGS, person) == {
        "last_event_at": times[2].strftime("%Y-%m-%d %H:%M:%S"), "last_channel": "wechat",
        "last_viewed_page": "/pages/goods/detail?id=42", "views_today": str(views_today), "cart_adds_7d": "1"}
    unknown = spark.table(REALTIME_EVENTS).where(F.col("record_key") == "wx_rt0000003").collect()
    assert [(r["provisional"], r["one_id"][:4]) for r in unknown] == [(True, "tmp_")]
    provisional = unknown[0]["one_id"]
    assert tags_of(spark, REALTIME_TAGS, provisional)["views_today"] == str(int(times[3].date() == today))
    progress = spark.table(STREAM_PROGRESS).orderBy("batch_id").collect()
    assert sum(r["rows"] for r in progress) >= len(events) and progress[-1]["latency_max_s"] is not None

    # nothing new: no batch, nothing written
    kept, tag_rows = spark.table(REALTIME_EVENTS).count(), sorted(map(tuple, spark.table(REALTIME_TAGS).collect()))
    assert run_stream(spark, settings, once=True).batches == 0
    assert (spark.table(REALTIME_EVENTS).count(), sorted(map(tuple, spark.table(REALTIME_TAGS).collect()))) == (
        kept, tag_rows)

    # the daily run learns the unknown device; the stream's next start re-keys its events
    outcomes = run_stages(spark, settings, "all", today)
    assert [o.status for o in outcomes] == ["succeeded"] * 4
    learned = (spark.table("identity.oneid_map").where(F.col("record_key") == "wx_rt0000003")
               .select("one_id").first()["one_id"])
    run_stream(spark, settings, once=True)
    assert [(r["one_id"], r["provisional"]) for r in
            spark.table(REALTIME_EVENTS).where(F.col("record_key") == "wx_rt0000003").collect()] == [(learned, False)]
    assert tags_of(spark, REALTIME_TAGS, provisional) == {}
    for one_id in (person, learned):  # the stream's values are the daily run's, over the same events
        assert tags_of(spark, REALTIME_TAGS, one_id) == tags_of(spark, "gold.customer_tags", one_id), one_id

    # an erasure by an identifier only the stream has seen: its provisional events and tags go, and
    # its next events stay out
    device = "oTESTerasedDevice00000000002"
    unionids[device] = "oUTESTerasedDeviceUnion0002"
    land(data_dir, "wechat_events_part-9102.jsonl", [("page_view", "/pages/index/index", device, now)], unionids, 10)
    run_stream(spark, settings, once=True)
    (kept_event,) = spark.table(REALTIME_EVENTS).where(F.col("record_key") == "wx_rt0000010").collect()
    assert kept_event["provisional"] and tags_of(spark, REALTIME_TAGS, kept_event["one_id"])["views_today"] == "1"
    erase(spark, settings, identifiers=[("openid", device)], reason="ticket 4714", actor="dpo")
    assert spark.table(REALTIME_EVENTS).where(F.col("record_key") == "wx_rt0000010").count() == 0
    assert spark.table(REALTIME_TAGS).where(F.col("one_id") == kept_event["one_id"]).count() == 0
    land(data_dir, "wechat_events_part-9103.jsonl", [("page_view", "/pages/index/index", device, now)], unionids, 11)
    run_stream(spark, settings, once=True)
    assert spark.table(REALTIME_EVENTS).where(F.col("record_key") == "wx_rt0000011").count() == 0
    assert spark.table(STREAM_PROGRESS).orderBy(F.col("finished_at").desc()).first()["erased"] == 1
