"""Hand-written exports with every defect, a source onboarded by YAML alone, reruns and re-sent files."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from cdp.stages.silver import build_silver
from cdp.conf import load_settings
from cdp.stages.bronze import build_bronze
from cdp.lakehouse import new_run_id

AS_OF = date(2026, 11, 1)

# A mini-program shop's order export, onboarded with YAML only (Chinese headers, its own names).
SHOP_SOURCE = {
    "channel": "miniprogram_shop",
    "format": "csv",
    "path": "shop_orders/*.csv",
    "entity": "orders",
    "record_key": "订单号",
    "columns": ["订单号", "下单时间", "实付金额", "收货手机"],
    "mapping": {
        "order_time": {"column": "下单时间", "normaliser": "timestamp"},
        "amount": {"column": "实付金额", "normaliser": "amount"},
        "phone": {"column": "收货手机", "normaliser": "cn_mobile"},
    },
}
KIOSK_SOURCE = {
    "channel": "store_kiosk",
    "format": "jsonl",
    "path": "kiosk_events/*.jsonl",
    "entity": "events",
    "record_key": "event_id",
    "columns": ["event_id", "ts", "device", "phone"],
    "mapping": {
        "event_time": {"column": "ts", "normaliser": "timestamp"},
        "android_id": {"column": "device", "normaliser": "lower"},
        "phone": {"column": "phone", "normaliser": "cn_mobile"},
    },
}
SHOP_PART_1 = """订单号,下单时间,实付金额,收货手机
S1,2026-10-01 10:00:00,100.00,13912345678
S1,2026-10-01 10:00:00,100.00,13912345678
S2,2026-10-02 11:00:00,abc,13912345679
,2026-10-02 12:00:00,50,13912345670
S3,,20,13912345671
S4,2026-10-03 09:00:00,88,13912345672,unexpected
S5,2026-10-04 09:00:00,66.5,+86 139 1234 5672
"""
# Schema drift: a new column; and S5 re-sent with a corrected amount.
SHOP_PART_2 = """订单号,下单时间,实付金额,收货手机,优惠券
S6,2026-10-05 09:00:00,10,13912345673,NEW10
S5,2026-10-06 09:00:00,70,13912345672,
"""
KIOSK_PART_1 = "\n".join([
    '{"event_id":"K1","ts":"2026-10-01 10:00:00","device":"ABCDEF0123456789","phone":"13912345678"}',
    '{"event_id":"K2","ts":{"nested":1},"device":"abcdef0123456789"}',
    '{"event_id":"K3","ts":1759287600000,"device":"0123456789abcdef","app_version":"2.3.1"}',
    '{"event_id":"K4","ts":"2026-10-01',
    '{"event_id":"K5"}',
]) + "\n"


@pytest.fixture(scope="module")
def onboarded(spark, settings, tmp_path_factory):
    conf = tmp_path_factory.mktemp("onboard") / "conf"
    shutil.copytree(settings.conf_dir, conf)
    sources = yaml.safe_load((conf / "sources.yaml").read_text(encoding="utf-8"))
    sources["sources"].update(shop_orders=SHOP_SOURCE, kiosk_events=KIOSK_SOURCE)
    (conf / "sources.yaml").write_text(yaml.safe_dump(sources, allow_unicode=True), encoding="utf-8")
    quality = yaml.safe_load((conf / "quality.yaml").read_text(encoding="utf-8"))
    quality["rules"] += [
        {"name": "shop_rows_valid", "source": "shop_orders", "family": "validity"},
        {"name": "shop_uniqueness", "source": "shop_orders", "family": "uniqueness"},
        {"name": "kiosk_phone_validity", "source": "kiosk_events", "family": "validity", "field": "phone"},
    ]
    (conf / "quality.yaml").write_text(yaml.safe_dump(quality, allow_unicode=True), encoding="utf-8")

    landing = Path(settings.landing)
    (landing / "shop_orders").mkdir(parents=True, exist_ok=True)
    (landing / "kiosk_events").mkdir(parents=True, exist_ok=True)
    (landing / "shop_orders" / "part-1.csv").write_text(SHOP_PART_1, encoding="utf-8")
    (landing / "shop_orders" / "part-2.csv").write_text(SHOP_PART_2, encoding="utf-8")
    (landing / "kiosk_events" / "part-1.jsonl").write_text(KIOSK_PART_1, encoding="utf-8")

    extended = load_settings("test", conf)
    extended.validate_all()
    bronze = {r.source: r for r in build_bronze(spark, extended, "defects-1")}
    silver_run = new_run_id("silver")
    accounting = {a.source: a for a in build_silver(spark, extended, silver_run, AS_OF)}
    return extended, bronze, accounting, silver_run


def quarantine(spark, source):
    rows = spark.table("silver.quarantine").where(F.col("source") == source).collect()
    return sorted((r["record_key"] or "", r["reason"]) for r in rows)


def test_every_row_is_accounted_for(onboarded):
    _, _, accounting, _ = onboarded
    shop, kiosk = accounting["shop_orders"], accounting["kiosk_events"]
    assert (shop.landed, shop.silver, shop.quarantined, shop.duplicates) == (9, 3, 4, 2)
    assert (kiosk.landed, kiosk.silver, kiosk.quarantined, kiosk.duplicates) == (5, 2, 3, 0)


def test_quarantine_reasons(spark, onboarded):
    # Spark keeps the parsed tokens of a line with too many columns, so S4 keeps its key.
    assert quarantine(spark, "shop_orders") == [
        ("", "missing_record_key"), ("S2", "invalid_amount"), ("S3", "missing_order_time"), ("S4", "malformed_record"),
    ]
    assert quarantine(spark, "kiosk_events") == [("", "malformed_record"), ("K2", "invalid_event_time"), ("K5", "missing_event_time")]
    raw = spark.table("silver.quarantine").where((F.col("source") == "shop_orders") & (F.col("record_key") == "S2")).first()
    assert raw["raw_payload"] == '{"订单号":"S2","下单时间":"2026-10-02 11:00:00","实付金额":"abc","收货手机":"13912345679"}'


def test_silver_rows_are_normalised_and_latest_wins(spark, onboarded):
    rows = spark.table("silver.orders").where(F.col("source") == "shop_orders").orderBy("record_key").collect()
    assert [(r["record_key"], str(r["amount"]), r["phone"], r["channel"]) for r in rows] == [
        ("S1", "100.00", "+8613912345678", "miniprogram_shop"),
        ("S5", "70.00", "+8613912345672", "miniprogram_shop"),  # the re-sent version
        ("S6", "10.00", "+8613912345673", "miniprogram_shop"),
    ]
    kiosk = spark.table("silver.events").where(F.col("source") == "kiosk_events").orderBy("record_key").collect()
    assert [(r["record_key"], r["android_id"]) for r in kiosk] == [("K1", "abcdef0123456789"), ("K3", "0123456789abcdef")]


def test_schema_drift_is_kept_and_reported(spark, onboarded):
    _, bronze, _, _ = onboarded
    assert [(Path(d.file).name, d.new_columns, d.missing_columns) for d in bronze["shop_orders"].drift] == [
        ("part-2.csv", ("优惠券",), ())
    ]
    assert [(Path(d.file).name, d.new_columns) for d in bronze["kiosk_events"].drift] == [("part-1.jsonl", ("app_version",))]
    coupon = spark.table("bronze.shop_orders").where(F.col("订单号") == "S6").first()["优惠券"]
    assert coupon == "NEW10"
    assert spark.table("bronze.kiosk_events").where(F.col("event_id") == "K3").first()["app_version"] == "2.3.1"
    reported = {(r["source"], tuple(r["new_columns"])) for r in spark.table("ops.schema_drift").where(F.col("batch_id") == "defects-1").collect()}
    assert reported == {("shop_orders", ("优惠券",)), ("kiosk_events", ("app_version",))}


def test_quality_metrics_for_the_new_source(spark, onboarded):
    rows = spark.table("ops.quality_metrics").where(F.col("run_id") == onboarded[3]).collect()
    metrics = {r["rule"]: (r["checked"], r["failed"]) for r in rows}
    assert metrics["shop_rows_valid"] == (9, 4)
    assert metrics["shop_uniqueness"] == (5, 2)
    assert metrics["kiosk_phone_validity"] == (1, 0)


def test_rerun_changes_nothing_and_a_changed_file_replaces_its_rows(spark, onboarded):
    extended, _, _, _ = onboarded
    again = {r.source: r for r in build_bronze(spark, extended, "defects-2")}
    assert (again["shop_orders"].rows, again["kiosk_events"].rows) == (0, 0)
    accounting = {a.source: a for a in build_silver(spark, extended, new_run_id("silver"), AS_OF)}
    assert (accounting["shop_orders"].landed, accounting["shop_orders"].silver) == (9, 3)

    part_2 = Path(extended.landing) / "shop_orders" / "part-2.csv"
    part_2.write_text(SHOP_PART_2 + "S7,2026-10-07 09:00:00,5,13912345674,\n", encoding="utf-8")
    changed = {r.source: r for r in build_bronze(spark, extended, "defects-3")}
    assert [Path(f).name for f in changed["shop_orders"].changed_files] == ["part-2.csv"]
    assert changed["shop_orders"].rows == 3
    assert spark.table("bronze.shop_orders").count() == 10  # 7 + 3: the old version's 2 rows were replaced


def silver_state(spark, sources=("shop_orders", "kiosk_events")):
    """Every row of the sources in silver, the quarantine and the identifiers, as sorted tuples."""
    state = {}
    for table in ("silver.orders", "silver.events", "silver.quarantine", "silver.identifiers"):
        frame = spark.table(table).where(F.col("source").isin(*sources))
        state[table] = sorted(tuple(str(v) for v in r) for r in frame.select(*sorted(frame.columns)).collect())
    return state


def shop_silver(spark):
    rows = spark.table("silver.orders").where(F.col("source") == "shop_orders").collect()
    return sorted((r["record_key"], str(r["amount"])) for r in rows)


def test_silver_merges_bronze_changes_and_equals_a_rebuild(spark, onboarded):
    extended, _, _, _ = onboarded
    landing = Path(extended.landing)
    build_bronze(spark, extended, "defects-4")
    build_silver(spark, extended, new_run_id("silver"), AS_OF)  # brings silver up to bronze, whatever came before
    quiet = {a.source: a for a in build_silver(spark, extended, new_run_id("silver"), AS_OF)}
    assert (quiet["shop_orders"].mode, quiet["shop_orders"].read) == ("unchanged", 0)

    # Rows added only: S1 re-sent with a new amount, S8 new, S9 refused; K6 new.
    (landing / "shop_orders" / "part-3.csv").write_text(
        "订单号,下单时间,实付金额,收货手机\nS1,2026-10-01 10:00:00,101,13912345678\n"
        "S8,2026-10-08 09:00:00,8,13912345675\nS9,,9,13912345676\n", encoding="utf-8")
    (landing / "kiosk_events" / "part-2.jsonl").write_text(
        '{"event_id":"K6","ts":"2026-10-06 10:00:00","device":"fedcba9876543210"}\n', encoding="utf-8")
    build_bronze(spark, extended, "defects-5")
    added = {a.source: a for a in build_silver(spark, extended, new_run_id("silver"), AS_OF)}
    shop = added["shop_orders"]
    assert (shop.mode, shop.read, shop.landed, shop.silver, shop.quarantined, shop.duplicates) == ("changes", 3, 13, 5, 5, 3)
    assert (added["kiosk_events"].mode, added["kiosk_events"].read, added["kiosk_events"].silver) == ("changes", 1, 3)
    assert shop_silver(spark) == [("S1", "101.00"), ("S5", "70.00"), ("S6", "10.00"), ("S7", "5.00"), ("S8", "8.00")]
    assert ("S9", "missing_order_time") in quarantine(spark, "shop_orders")

    # Rows removed: part-3 sent again without S1, and part-1 sent again with S2's amount fixed: part-1
    # is now the newest file, so its S1 and S5 are the latest deliveries, and S2 leaves the quarantine.
    (landing / "shop_orders" / "part-3.csv").write_text(
        "订单号,下单时间,实付金额,收货手机\nS8,2026-10-08 09:00:00,8,13912345675\nS9,,9,13912345676\n", encoding="utf-8")
    (landing / "shop_orders" / "part-1.csv").write_text(SHOP_PART_1.replace(",abc,", ",12.5,"), encoding="utf-8")
    build_bronze(spark, extended, "defects-6")
    removed = {a.source: a for a in build_silver(spark, extended, new_run_id("silver"), AS_OF)}
    shop = removed["shop_orders"]
    assert (shop.mode, shop.read) == ("changes", 7 + 3 + 7 + 2)  # part-1 and part-3, each out and in again
    assert (shop.landed, shop.silver, shop.quarantined, shop.duplicates) == (12, 6, 4, 2)
    assert removed["kiosk_events"].mode == "unchanged"
    assert shop_silver(spark) == [("S1", "100.00"), ("S2", "12.50"), ("S5", "66.50"), ("S6", "10.00"),
                                  ("S7", "5.00"), ("S8", "8.00")]
    assert ("S2", "invalid_amount") not in quarantine(spark, "shop_orders")
    merged = silver_state(spark)

    rebuilt_accounting = {a.source: a for a in build_silver(spark, extended, new_run_id("silver"), AS_OF, full=True)}
    assert rebuilt_accounting["shop_orders"].mode == "full"
    assert (rebuilt_accounting["shop_orders"].silver, rebuilt_accounting["shop_orders"].duplicates) == (6, 2)
    assert silver_state(spark) == merged


def test_parquet_full_snapshot_source(spark, settings, tmp_path):
    """A Parquet snapshot export (load_mode: full): types kept as text, drift reported, removed files leave."""
    import pandas as pd

    conf = tmp_path / "conf"
    shutil.copytree(settings.conf_dir, conf)
    sources = yaml.safe_load((conf / "sources.yaml").read_text(encoding="utf-8"))
    sources["sources"]["vip_members"] = {
        "channel": "vip_crm", "format": "parquet", "path": "vip_members/*.parquet", "load_mode": "full",
        "entity": "customers", "record_key": "member_no", "columns": ["member_no", "mobile", "level"],
        "mapping": {"member_id": {"column": "member_no"}, "phone": {"column": "mobile", "normaliser": "cn_mobile"}},
    }
    (conf / "sources.yaml").write_text(yaml.safe_dump(sources, allow_unicode=True), encoding="utf-8")
    vip = load_settings("test", conf)
    folder = Path(vip.landing) / "vip_members"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"member_no": ["V1", "V2"], "mobile": [13912345678, 13912345679], "level": ["gold", "silver"]}).to_parquet(folder / "a.parquet")

    first = {r.source: r for r in build_bronze(spark, vip, "vip-1")}["vip_members"]
    assert first.rows == 2
    assert sorted(r["mobile"] for r in spark.table("bronze.vip_members").collect()) == ["13912345678", "13912345679"]

    pd.DataFrame({"member_no": ["V3"], "mobile": [13912345670], "level": ["gold"], "points": [120]}).to_parquet(folder / "b.parquet")
    second = {r.source: r for r in build_bronze(spark, vip, "vip-2")}["vip_members"]
    assert second.rows == 3  # the whole snapshot, reloaded
    assert [(Path(d.file).name, d.new_columns) for d in second.drift] == [("b.parquet", ("points",))]
    assert spark.table("bronze.vip_members").count() == 3

    assert {r.source: r.rows for r in build_bronze(spark, vip, "vip-3")}["vip_members"] == 0  # nothing changed
    (folder / "a.parquet").unlink()
    build_bronze(spark, vip, "vip-4")
    assert sorted(r["member_no"] for r in spark.table("bronze.vip_members").collect()) == ["V3"]
