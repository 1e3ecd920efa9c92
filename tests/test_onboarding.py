"""Another retailer's exports onboarded by YAML alone (tests/retailer_b): a new identifier type, its
own codes, formats, epochs and entities, an export without an id column, one column that is two
identifier types — through every stage, with explicit expected rows."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from cli import BIN, ROOT, cdp
from pyspark.sql import functions as F

RETAILER = Path(__file__).resolve().parent / "retailer_b"
RUN_DATE = "2026-11-06"

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long


def merged(base: dict, addition: dict) -> dict:
    """`addition` laid over `base`: mappings merged key by key, anything else replaced."""
    result = dict(base)
    for key, value in addition.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def retailer_conf(target: Path) -> Path:
    """The shipped conf, with the retailer's sources and quality rules, and its additions to the model."""
    shutil.copytree(ROOT / "conf", target)
    for name in ("sources.yaml", "quality.yaml"):
        shutil.copy2(RETAILER / "conf" / name, target / name)
    for name in ("model", "identity"):
        shipped = yaml.safe_load((target / f"{name}.yaml").read_text(encoding="utf-8"))
        addition = yaml.safe_load((RETAILER / "conf" / f"{name}.add.yaml").read_text(encoding="utf-8"))
        (target / f"{name}.yaml").write_text(yaml.safe_dump(merged(shipped, addition), allow_unicode=True),
                                             encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def retailer(tmp_path_factory, cli_env):
    work = tmp_path_factory.mktemp("retailer_b")
    conf = retailer_conf(work / "conf")
    landing = work / "landing"
    shutil.copytree(RETAILER / "landing", landing)
    # the CRM's second export is the newer delivery (latest wins by file time, then name, then line)
    os.utime(landing / "crm" / "members_20261101.csv", (1_790_000_000, 1_790_000_000))
    os.utime(landing / "crm" / "members_20261102.csv", (1_790_090_000, 1_790_090_000))
    env = {**cli_env, "CDP_LAKEHOUSE": str(work / "lakehouse"), "CDP_LANDING": str(landing)}
    run = cdp(env, "run", "--stage", "all", "--as-of", RUN_DATE, "--conf-dir", str(conf), timeout=900)
    return work / "lakehouse", run


def table(spark, lakehouse: Path, name: str):
    database, table_name = name.split(".")
    return spark.read.format("delta").load(str(lakehouse / "warehouse" / f"{database}.db" / table_name))


def rows(frame, *columns) -> list[tuple]:
    return sorted(tuple(r) for r in frame.select(*columns).collect())


def test_every_stage_ran_on_the_retailers_model(retailer):
    _, run = retailer
    for stage in ("bronze", "silver", "identity", "gold"):
        assert f"{stage} succeeded" in run.stdout


def test_service_tickets_are_an_entity_of_their_own_with_a_declared_time_format(spark, retailer):
    lakehouse, _ = retailer
    tickets = table(spark, lakehouse, "silver.service_tickets")
    assert rows(tickets, "record_key", F.date_format("opened_at", "yyyy-MM-dd HH:mm"), "name", "phone", "email",
                "category", "status", "contact_channel") == [
        ("T01", "2026-11-03 09:05", "李娜", None, "lina@qq.com", "退货", "closed", "phone"),
        ("T02", "2026-11-04 14:30", "王先生", "+8613912340002", None, "咨询", "open", "wechat"),
        ("T04", "2026-11-05 16:45", "赵女士", None, "zhaomin.z@163.com", "咨询", "closed", "email"),
    ]


def test_gender_codes_and_the_latest_delivery_of_a_member(spark, retailer):
    """GB/T 2261.1: 0 and 9 carry no gender. VIP002's newer delivery wins; VIP003's newer one has a
    gender code nobody declared: it is quarantined and the older, valid one stays."""
    lakehouse, _ = retailer
    customers = table(spark, lakehouse, "silver.customers")
    assert rows(customers, "record_key", "name", "gender", "phone", "email", F.col("birth_date").cast("string")) == [
        ("VIP001", "李娜", "F", "+8613912340001", "lina@qq.com", "1988-03-12"),
        ("VIP002", "王强", "M", "+8613912340002", "wq@163.com", "1990-07-01"),
        ("VIP003", "赵敏", None, "+8613912340004", None, "1992-12-24"),
        ("VIP005", "孙悟", None, "+8613912340006", None, None),
    ]


def test_jd_orders_with_currency_amounts_a_constant_platform_and_mapped_statuses(spark, retailer):
    lakehouse, _ = retailer
    orders = table(spark, lakehouse, "silver.orders")
    assert rows(orders, "record_key", F.col("amount").cast("string"), "platform", "status", "phone") == [
        ("JD1001", "1299.00", "jd", "completed", "+8613912340001"),
        ("JD1002", "89.90", "jd", "completed", "+8613912340002"),
        ("JD1003", "45.00", "jd", "cancelled", None),
    ]


def test_a_consent_log_with_its_own_codes_and_no_id_column(spark, retailer):
    lakehouse, _ = retailer
    consent = table(spark, lakehouse, "silver.consent_events")
    assert rows(consent, "subject_id_type", "subject_id_value", "purpose", "action") == [
        ("phone", "+8613912340001", "marketing_email", "withdraw"),
        ("phone", "+8613912340001", "marketing_sms", "grant"),
        ("phone", "+8613912340004", "marketing_wechat", "grant"),
    ]
    keys = [r["record_key"] for r in consent.collect()]
    assert all(k.startswith("h") and len(k) == 33 for k in keys)


def test_quarantine_holds_every_refused_row_with_its_reason(spark, retailer):
    lakehouse, _ = retailer
    quarantine = table(spark, lakehouse, "silver.quarantine")
    refused = {(r["source"], r["record_key"] if not (r["record_key"] or "").startswith("h") else "(hash)", r["reason"])
               for r in quarantine.collect()}
    assert refused == {
        ("crm_vip", "VIP004", "unmapped_gender"),
        ("crm_vip", "VIP003", "unmapped_gender"),
        ("jd_orders", "JD1004", "invalid_amount"),
        ("service_tickets", "T03", "invalid_opened_at"),
        ("consent_log", "(hash)", "unmapped_action"),
        ("consent_log", "(hash)", "unmapped_purpose"),
    }
    assert quarantine.count() == 6
    raw = {r["reason"]: r["raw_payload"] for r in quarantine.where(F.col("source") == "consent_log").collect()}
    assert '"操作":"9"' in raw["unmapped_action"] and '"用途代码":"TEL99"' in raw["unmapped_purpose"]
    assert '"创建时间":"2026-11-05 10:00"' in quarantine.where(F.col("record_key") == "T03").first()["raw_payload"]


def test_identifiers_by_condition_and_the_new_jd_pin_type(spark, retailer):
    lakehouse, _ = retailer
    identifiers = table(spark, lakehouse, "silver.identifiers").where(F.col("source").isin("app_log", "jd_orders"))
    assert rows(identifiers, "source", "record_key", "id_type", "id_value") == [
        ("app_log", "E1", "idfa", "6d92078a-8246-4ba4-ae5b-76104861e7dc"),
        ("app_log", "E1", "jd_pin", "jd_lina88"),
        ("app_log", "E2", "android_id", "9c3b2f1a7e5d4c01"),
        ("app_log", "E2", "jd_pin", "wq_1990"),
        ("app_log", "E3", "idfa", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        ("app_log", "E3", "jd_pin", "jd_zhou"),
        ("app_log", "E4", "android_id", "9c3b2f1a7e5d4c01"),
        ("jd_orders", "JD1001", "jd_pin", "jd_lina88"),
        ("jd_orders", "JD1001", "phone", "+8613912340001"),
        ("jd_orders", "JD1002", "jd_pin", "wq_1990"),
        ("jd_orders", "JD1002", "phone", "+8613912340002"),
        ("jd_orders", "JD1003", "jd_pin", "jd_zhou"),
    ]


def test_one_ids_join_the_retailers_records_across_every_channel(spark, retailer):
    lakehouse, _ = retailer
    oneid_map = table(spark, lakehouse, "identity.oneid_map").collect()
    persons: dict[str, set[str]] = {}
    for r in oneid_map:
        key = "consent" if r["source"] == "consent_log" else r["record_key"]
        persons.setdefault(r["one_id"], set()).add(f"{r['source']}:{key}")
    assert sorted(sorted(p) for p in persons.values()) == sorted(sorted(p) for p in [
        {"crm_vip:VIP001", "jd_orders:JD1001", "app_log:E1", "service_tickets:T01", "consent_log:consent"},
        {"crm_vip:VIP002", "jd_orders:JD1002", "app_log:E2", "app_log:E4", "service_tickets:T02"},
        {"jd_orders:JD1003", "app_log:E3"},
        {"crm_vip:VIP003", "consent_log:consent"},
        {"crm_vip:VIP005"},
        {"service_tickets:T04"},
    ])
    assert len(oneid_map) == 4 + 3 + 4 + 3 + 3  # every silver record has a one_id


def test_row_accounting_holds_for_every_source(spark, retailer):
    lakehouse, _ = retailer
    accounting = {r["source"]: (r["landed"], r["silver"], r["quarantined"], r["duplicates"])
                  for r in table(spark, lakehouse, "ops.row_accounting").collect()}
    assert accounting == {
        "crm_vip": (7, 4, 2, 1),          # VIP002 delivered twice: the newer delivery is kept
        "jd_orders": (4, 3, 1, 0),
        "app_log": (4, 4, 0, 0),
        "service_tickets": (4, 3, 1, 0),
        "consent_log": (6, 3, 2, 1),      # an exact re-send has the same content, hence the same key
    }
    assert all(landed == kept + refused + duplicates for landed, kept, refused, duplicates in accounting.values())


def test_the_new_identifier_type_reaches_gold_and_erasure(spark, retailer, cli_env):
    lakehouse, _ = retailer
    identity_map = table(spark, lakehouse, "gold.identity_map")
    assert rows(identity_map.where(F.col("id_type") == "jd_pin"), "id_value", "id_masked") == [
        ("jd_lina88", "jd_l****"), ("jd_zhou", "jd_z****"), ("wq_1990", "wq_1****"),
    ]
    conf = lakehouse.parent / "conf"
    env = {**cli_env, "CDP_LAKEHOUSE": str(lakehouse), "CDP_LANDING": str(lakehouse.parent / "landing")}
    dry = cdp(env, "erase", "--id", "jd_pin:JD_ZHOU", "--dry-run", "--conf-dir", str(conf))
    assert re.search(r"^dry run, nothing deleted: 1 person\(s\) \(oid_\w+\), 2 record\(s\); would delete \d+ rows",
                     dry.stdout, re.M), dry.stdout
    assert "  identity.oneid_map: 2\n" in dry.stdout, dry.stdout
    assert table(spark, lakehouse, "identity.oneid_map").where(F.col("record_key").isin("JD1003", "E3")).count() == 2
    erased = cdp(env, "erase", "--id", "jd_pin:JD_ZHOU", "--reason", "DSR-B-1", "--conf-dir", str(conf))
    assert re.search(r"^erasure-\w+: 1 person\(s\) \(oid_\w+\), 2 record\(s\)", erased.stdout, re.M), erased.stdout
    assert table(spark, lakehouse, "identity.oneid_map").where(F.col("record_key").isin("JD1003", "E3")).count() == 0
    assert table(spark, lakehouse, "silver.orders").where(F.col("record_key") == "JD1003").count() == 0
    unknown = cdp_failure(env, "erase", "--id", "qq:12345", "--conf-dir", str(conf))
    assert unknown.returncode == 2 and "'qq' is not an identifier type" in unknown.stderr


def cdp_failure(env, *args: str):
    import subprocess

    return subprocess.run([str(BIN / "cdp"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
