"""Consent, erasure, PII protection, role views and the audit log, on the suite's pipeline lakehouse
(the 400-person run of tests/conftest.py). The tests run in file order: exports first, then an
erasure, a vacuum, and a bronze/silver run with a withdrawal and the erased subject landing again."""

from __future__ import annotations

import base64
import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from cdp.conf import ConfigError, load_settings
from cdp.operations.erasure import ErasureError, erasable_tables, erase, resolve_subject
from cdp.tables import ERASURE_LEDGER as LEDGER, STEWARD_RULES
from cdp.operations.export import ExportRefused, export_audience
from cdp.operations.steward import add_rule
from cdp.privacy.protect import (
    aes_gcm_decrypt, aes_gcm_encrypt, decrypt, encrypt, hmac_hex, keyed_hash, keyed_hash_text, load_keys, masked,
)
from cdp.privacy.views import view_definitions

ROOT = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 11, 1)
AUDIENCE, PURPOSE = "winback_sms", "marketing_sms"


# ---------------------------------------------------------------- building blocks


def test_keyed_hash_is_hmac_sha256_rfc4231(spark, settings):
    values = pd.Series(["what do ya want for nothing?", "Test Using Larger Than Block-Size Key - Hash Key First", None])
    short, long = hmac_hex(values, b"Jefe"), hmac_hex(values, b"\xaa" * 131)
    assert short[0] == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"  # RFC 4231 case 2
    assert long[1] == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"  # RFC 4231 case 6
    assert short[2] is None
    assert keyed_hash_text("what do ya want for nothing?", b"Jefe") == short[0]
    # in Spark, the executors find the suite's (development) key and hash as the driver does
    keys = load_keys(settings)
    frame = spark.createDataFrame([(values[0],), (None,)], "v string").coalesce(1)
    assert [r[0] for r in frame.select(keyed_hash(F.col("v"), keys)).collect()] == [
        keyed_hash_text(values[0], keys.hash_key), None]


def test_masks_show_enough_to_recognise_and_no_more(spark):
    row = spark.createDataFrame(
        [("+8613800138000", "11010519491231002X", "zhang.wei@qq.com", "张伟", "欧阳娜娜", date(1990, 3, 7))],
        "phone string, card string, email string, name string, long_name string, birth date",
    ).select(masked("phone", "phone"), masked("id_card", "card"), masked("email", "email"),
             masked("name", "name"), masked("name", "long_name"), masked("year", "birth")).first()
    assert tuple(row) == ("138****8000", "110***********002X", "z***@qq.com", "张*", "欧***", date(1990, 1, 1))


def test_encryption_round_trip_key_rotation_and_sparks_layout(spark, settings):
    old, new = bytes(range(32)), bytes(range(32, 64))
    sealed = aes_gcm_encrypt(pd.Series(["+8613800138000", None]), old)
    assert len(sealed[0]) == 12 + 14 + 16 and sealed[1] is None  # IV, the 14 bytes, the tag
    assert list(aes_gcm_decrypt(sealed, new, previous=old)) == ["+8613800138000", None]  # during a rotation
    assert list(aes_gcm_decrypt(sealed, new)) == [None, None]  # after it: the old key is gone
    # in Spark, with the suite's (development) keys; the layout is Spark's own aes_encrypt's, both ways
    keys = load_keys(settings)
    frame = spark.createDataFrame([("+8613800138000",)], "phone string").select(
        encrypt(F.col("phone"), keys).alias("ours"), F.aes_encrypt("phone", F.lit(keys.encryption_key)).alias("sparks"))
    row = frame.select(decrypt(F.col("ours"), keys), F.aes_decrypt("ours", F.lit(keys.encryption_key)).cast("string"),
                       decrypt(F.col("sparks"), keys)).first()
    assert frame.schema["ours"].dataType.typeName() == "binary"
    assert tuple(row) == ("+8613800138000",) * 3


def test_a_cluster_profile_without_secrets_fails_naming_the_variables(monkeypatch):
    for name, value in {"CDP_LAKEHOUSE": "s3a://bucket/cdp", "CDP_LANDING": "s3a://bucket/landing",
                        "CDP_CHECKPOINT_DIR": "s3a://bucket/checkpoints"}.items():
        monkeypatch.setenv(name, value)
    for name in ("CDP_HASH_KEY", "CDP_ENCRYPTION_KEY", "CDP_ENCRYPTION_KEY_PREVIOUS"):
        monkeypatch.delenv(name, raising=False)
    cluster = load_settings("cluster", ROOT / "conf")
    with pytest.raises(ConfigError) as missing:
        load_keys(cluster)
    assert "profile 'cluster' needs the secret(s) CDP_HASH_KEY, CDP_ENCRYPTION_KEY" in str(missing.value)
    assert "dev_secrets: false" in str(missing.value)
    monkeypatch.setenv("CDP_HASH_KEY", "a-long-enough-hash-key-for-the-test")
    monkeypatch.setenv("CDP_ENCRYPTION_KEY", "not base64!")
    with pytest.raises(ConfigError, match="CDP_ENCRYPTION_KEY is not base64"):
        load_keys(cluster)
    monkeypatch.setenv("CDP_ENCRYPTION_KEY", base64.b64encode(b"k" * 32).decode())
    keys = load_keys(cluster)
    assert (keys.encryption_key, keys.development) == (b"k" * 32, False)


# ---------------------------------------------------------------- scanning for clear identifiers


def silver_identifiers(spark) -> dict[str, set[str]]:
    rows = (spark.table("silver.identifiers").where(F.col("id_type").isin("phone", "email", "id_card"))
            .select("id_type", "id_value").distinct().collect())
    found: dict[str, set[str]] = {"phone": set(), "email": set(), "id_card": set()}
    for r in rows:
        value = r["id_value"]
        found[r["id_type"]].add(value[-11:] if r["id_type"] == "phone" else value.lower())
    return found


def clear_identifiers_in(text: str, known: dict[str, set[str]]) -> set[str]:
    """Known phones (11 national digits anywhere in a run of digits), 身份证 and e-mails in a text."""
    hits = set()
    for run in re.findall(r"\d{11,}", text):
        hits |= {run[i:i + 11] for i in range(len(run) - 10)} & known["phone"]
    hits |= {m.lower() for m in re.findall(r"\d{17}[\dXx]", text)} & known["id_card"]
    hits |= {m.lower() for m in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text)} & known["email"]
    return hits


def clear_identifiers_in_table(spark, table: str, known: dict[str, set[str]]) -> set[str]:
    frame = spark.table(table)
    text_columns = [F.col(f"`{f.name}`") for f in frame.schema.fields if f.dataType.typeName() != "binary"]
    hits = set()
    for row in frame.select(F.to_json(F.struct(*text_columns)).alias("j")).collect():
        hits |= clear_identifiers_in(row["j"], known)
    return hits


def test_no_clear_phone_email_or_id_card_in_gold_or_the_analyst_views(spark, pipeline_run):
    known = silver_identifiers(spark)
    assert min(len(v) for v in known.values()) > 50  # the generated persons have all three kinds
    assert len(clear_identifiers_in_table(spark, "silver.customers", known)) > 100  # the scan finds them where they are
    objects = [f"gold.{t.name}" for t in spark.catalog.listTables("gold")]
    objects += [f"analyst.{t.name}" for t in spark.catalog.listTables("analyst")]
    # 12 gold tables (two of them daily summaries, one the activation log the daily run writes), 9 analyst views
    assert len(objects) == 21
    assert {o: clear_identifiers_in_table(spark, o, known) for o in objects} == {o: set() for o in objects}


def test_role_views_follow_the_classification(spark, settings, pipeline_run):
    def names(schema):
        return {t.name for t in spark.catalog.listTables(schema)}

    gold_tables = {"customer_profile", "identity_map", "customer_tags", "tag_history", "tag_catalog", "consent_state",
                   "audience_members", "audience_history", "audience_runs"}
    assert names("analyst") == names("steward") == gold_tables
    assert names("marketer") == {"audience_members", "audience_runs", "tag_catalog"}
    profile = set(spark.table("gold.customer_profile").columns)
    assert profile - set(spark.table("analyst.customer_profile").columns) == {"phone_enc", "email_enc"}
    assert set(spark.table("gold.identity_map").columns) - set(spark.table("analyst.identity_map").columns) == {"id_value"}
    assert set(spark.table("steward.customer_profile").columns) == profile

    pairs = (spark.table("gold.customer_profile").alias("g")
             .join(spark.table("analyst.customer_profile").alias("a"), "one_id")
             .where(F.col("g.name").isNotNull())
             .select("g.name", F.col("a.name").alias("shown"), "g.birth_date",
                     F.col("a.birth_date").alias("shown_birth")).collect())
    assert len(pairs) == spark.table("gold.customer_profile").where(F.col("name").isNotNull()).count() > 100
    assert all(p["shown"] == p["name"][0] + "*" * (len(p["name"]) - 1) for p in pairs)
    assert all(p["shown_birth"] == (p["birth_date"].replace(month=1, day=1) if p["birth_date"] else None) for p in pairs)



def test_the_marketer_view_keeps_only_members_whose_consent_allows_the_purpose_now(spark, settings, pipeline_run):
    """The view's own SQL over hand-made members and consent: opt_in needs a grant, opt_out holds until withdrawn."""
    members = spark.createDataFrame(
        [("a", f"p{i}", purpose, None, None, None) for i, purpose in enumerate(
            ["marketing_sms", "marketing_sms", "marketing_sms", "analytics", "analytics", "analytics"])],
        "audience string, one_id string, purpose string, entered_on date, run_date date, computed_at timestamp")
    consent = spark.createDataFrame(
        [("p0", "marketing_sms", "granted"), ("p1", "marketing_sms", "withdrawn"),   # p2: never said (opt_in)
         ("p3", "analytics", "withdrawn"), ("p4", "analytics", "granted"),          # p5: never said (opt_out)
         ("p1", "analytics", "granted")],                                           # another purpose: no effect
        "one_id string, purpose string, status string")
    members.createOrReplaceTempView("hand_members")
    consent.createOrReplaceTempView("hand_consent")
    select = (view_definitions(spark, settings)["marketer.audience_members"]
              .replace("gold.audience_members", "hand_members").replace("gold.consent_state", "hand_consent"))
    assert sorted(r["one_id"] for r in spark.sql(select).collect()) == ["p0", "p4", "p5"]


# ---------------------------------------------------------------- exports


def exported_rows(folder: Path) -> dict[str, str]:
    lines = [line.rstrip("\n").split(",") for f in sorted(folder.glob("*.csv")) for line in f.open(encoding="utf-8")]
    assert lines[0] == ["one_id", "phone", "audience", "purpose"]
    return {row[0]: row[1] for row in lines[1:]}


@pytest.fixture(scope="module")
def first_export(spark, settings, pipeline_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "winback"
    result = export_audience(spark, settings, AUDIENCE, PURPOSE, str(folder), actor="crm-team")
    return result, exported_rows(folder)


def test_an_export_without_a_purpose_is_refused_and_audited(spark, settings, pipeline_run, tmp_path):
    with pytest.raises(ExportRefused, match="no purpose declared"):
        export_audience(spark, settings, AUDIENCE, None, str(tmp_path / "out"), actor="someone")
    with pytest.raises(ExportRefused, match="'newsletter' is not a purpose in privacy.yaml"):
        export_audience(spark, settings, AUDIENCE, "newsletter", str(tmp_path / "out"), actor="someone")
    assert not (tmp_path / "out").exists()
    refused = spark.table("ops.audit_log").where(F.col("destination") == str(tmp_path / "out")).collect()
    assert sorted((r["action"], r["status"], r["actor"], r["purpose"] or "") for r in refused) == [
        ("export_refused", "refused", "someone", ""), ("export_refused", "refused", "someone", "newsletter")]


def test_an_export_carries_the_consenting_members_and_their_phone(spark, first_export):
    result, rows = first_export
    members = {r["one_id"] for r in spark.table("gold.audience_members").where(F.col("audience") == AUDIENCE).collect()}
    phones = (spark.table("silver.identifiers").where(F.col("id_type") == "phone")
              .join(spark.table("identity.suspicious_identifiers").select("id_type", "id_value"), ["id_type", "id_value"], "left_anti")
              .join(spark.table("identity.oneid_map"), ["source", "record_key"])
              .where(F.col("one_id").isin(*members)).groupBy("one_id").agg(F.min("id_value").alias("phone")).collect())
    assert len(members) >= 3
    assert rows == {r["one_id"]: r["phone"] for r in phones}
    assert (result.rows, result.members, result.without_consent) == (len(rows), len(members), 0)
    audited = spark.table("ops.audit_log").where((F.col("action") == "export") & (F.col("actor") == "crm-team")).first()
    assert (audited["audience"], audited["purpose"], audited["rows"], audited["destination"]) == (
        AUDIENCE, PURPOSE, len(rows), result.destination)


# ---------------------------------------------------------------- erasure


def subjects(first_export) -> tuple[tuple[str, str], tuple[str, str]]:
    """(one_id, phone) of the person to erase and of the person who withdraws consent."""
    people = sorted(first_export[1].items())
    return people[0], people[1]


def rows_holding(spark, table: str, digits: str) -> int:
    frame = spark.table(table)
    text = F.to_json(F.struct(*[F.col(f"`{f.name}`") for f in frame.schema.fields if f.dataType.typeName() != "binary"]))
    return frame.where(F.instr(F.regexp_replace(F.translate(text, "０１２３４５６７８９", "0123456789"), r"[\s\-]", ""),
                               digits) > 0).count()


def searchable(text: str) -> str:
    """Text as it is searched for personal values: half-width digits, no spaces or hyphens, lower case."""
    return re.sub(r"[\s\-]", "", text.translate(str.maketrans("０１２３４５６７８９", "0123456789"))).lower()


def files_holding(root: Path, values: dict[str, str]) -> dict[str, list[str]]:
    """For each value (by its label), every file under root whose content holds it: Parquet decoded,
    anything else as bytes."""
    wanted = {label: searchable(value) for label, value in values.items()}
    found: dict[str, list[str]] = {label: [] for label in values}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            text = searchable(json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str))
        else:
            text = searchable(path.read_bytes().decode("utf-8", errors="replace"))
        for label, value in wanted.items():
            if value in text:
                found[label].append(str(path.relative_to(root)))
    return found


@pytest.fixture(scope="module")
def personal_values(spark, first_export) -> dict[str, dict[str, str]]:
    """Read before any erasure: two persons the other tests leave alone (the first to be erased by the
    file test, the second kept), each with one of every kind of personal value — phone (its 11
    digits), e-mail, 身份证 number, name — that no other person's record carries."""
    spoken_for = {one_id for one_id, _ in subjects(first_export)} | set(first_export[1])
    owners = spark.table("identity.oneid_map").select("source", "record_key", "one_id")
    values = (spark.table("silver.identifiers").where(F.col("id_type").isin("phone", "email", "id_card"))
              .select("source", "record_key", F.col("id_type").alias("kind"), F.col("id_value").alias("value"))
              .unionByName(spark.table("silver.customers").select("source", "record_key", F.lit("name").alias("kind"),
                                                                  F.col("name").alias("value")))
              .unionByName(spark.table("silver.orders").select("source", "record_key", F.lit("name").alias("kind"),
                                                               F.col("receiver_name").alias("value")))
              .where(F.col("value").isNotNull()).join(owners, ["source", "record_key"]))
    own = (values.groupBy("kind", "value").agg(F.collect_set("one_id").alias("holders"))
           .where(F.size("holders") == 1).select("kind", "value", F.col("holders")[0].alias("one_id"))
           .where(~F.col("one_id").isin(*spoken_for))
           .groupBy("one_id", "kind").agg(F.min("value").alias("value"))
           .groupBy("one_id").agg(F.map_from_entries(F.collect_list(F.struct("kind", "value"))).alias("values"))
           .where(F.size("values") == 4).orderBy("one_id").limit(2).collect())
    return {r["one_id"]: {**r["values"], "phone": r["values"]["phone"][-11:]} for r in own}


def test_erasure_removes_the_subject_from_every_table(spark, settings, first_export, personal_values):
    # personal_values is read here, before the erasure, for the file search after maintenance
    (one_id, phone), _ = subjects(first_export)
    digits = phone[-11:]
    tables = erasable_tables(spark)
    assert sum(rows_holding(spark, t, digits) for t in tables) > 0
    # a steward's rule naming one of the subject's records goes with the subject
    own, other = [f"{r['source']}:{r['record_key']}" for r in spark.sql(f"""
        (SELECT source, record_key FROM identity.oneid_map WHERE one_id = '{one_id}' ORDER BY source, record_key LIMIT 1)
        UNION ALL
        (SELECT source, record_key FROM identity.oneid_map WHERE one_id <> '{one_id}' ORDER BY source, record_key LIMIT 1)
    """).collect()]
    rule = add_rule(spark, "must_not_link", own, other, "not the same person", actor="steward")
    result = erase(spark, settings, phone=digits, reason="ticket 4711", actor="dpo")
    assert spark.table(STEWARD_RULES).where(F.col("rule_id") == rule.rule_id).count() == 0

    assert result.one_ids == 1 and result.records > 0
    assert {"gold.customer_profile", "identity.oneid_map", "silver.identifiers"} <= set(result.rows_deleted)
    assert {t: rows_holding(spark, t, digits) for t in tables} == {t: 0 for t in tables}
    with_one_id = [t for t in tables if "one_id" in spark.table(t).columns]
    assert {t: spark.table(t).where(F.col("one_id") == one_id).count() for t in with_one_id} == {t: 0 for t in with_one_id}

    ledger = spark.table(LEDGER).where(F.col("erasure_id") == result.erasure_id).collect()
    assert len(ledger) == result.keys >= 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", r["key_hash"]) for r in ledger)
    requested = [r for r in ledger if r["requested"]]
    assert [(r["id_type"], r["key_hash"], r["actor"], r["reason"]) for r in requested] == [
        ("phone", keyed_hash_text(f"phone:{phone}", load_keys(settings).hash_key), "dpo", "ticket 4711")]
    assert (rows_holding(spark, LEDGER, digits), rows_holding(spark, "ops.audit_log", digits)) == (0, 0)
    audited = spark.table("ops.audit_log").where(F.col("action") == "erasure").collect()
    assert [(r["object"], r["actor"], r["rows"]) for r in audited] == [(result.erasure_id, "dpo", result.total_deleted)]


def test_erasing_one_member_of_a_family_keeps_the_other_and_their_shared_phone(spark, settings, data_dir,
                                                                               first_export):
    """A phone several persons share (a household: the veto kept them apart) is nobody's alone. Asked
    by that phone, the erasure takes the person it identifies (the holder whose link to it no guard
    refused), deletes that person and their records only, and never tombstones the phone: the other
    members' records, profiles and one_ids stay, and a new row with the phone lands."""
    from cdp.pipeline import run_stages

    spoken_for = {one_id for one_id, _ in subjects(first_export)} | set(first_export[1])  # the later tests' persons
    households = spark.sql("""SELECT id_value, sort_array(collect_set(one_id)) AS members FROM identity.households
                              WHERE id_type = 'phone' GROUP BY id_value ORDER BY id_value""").collect()
    assert households, "the generator plants households that share a phone"
    # the first household whose phone identifies a person the later tests leave alone
    phone, members, subject = next((h["id_value"], h["members"], held) for h in households
                                   for held in [resolve_subject(spark, [("phone", h["id_value"])], None).one_ids]
                                   if len(held) == 1 and not held & spoken_for)
    (subject,) = subject
    others = [m for m in members if m != subject]
    assert subject in members and others

    def records_of(one_id: str) -> list[tuple]:
        return sorted(tuple(r) for r in spark.table("identity.oneid_map").where(F.col("one_id") == one_id)
                      .select("source", "record_key").collect())

    subject_records, other_records = records_of(subject), {o: records_of(o) for o in others}
    dry = erase(spark, settings, phone=phone[-11:], dry_run=True, actor="dpo")
    assert (dry.persons, dry.records, dry.dry_run) == ([subject], len(subject_records), True)
    assert dry.rows_deleted["identity.oneid_map"] == len(subject_records)
    assert dry.shared >= 1  # the phone, which the other members' records carry too
    assert records_of(subject) == subject_records  # a dry run deletes nothing
    # a request naming two persons must say so
    two = sorted([subject, others[0]])
    with pytest.raises(ErasureError, match=f"resolves to 2 persons \\({', '.join(two)}\\).*--confirm-persons 2"):
        erase(spark, settings, phone=phone[-11:], one_id=others[0], actor="dpo")
    both = erase(spark, settings, phone=phone[-11:], one_id=others[0], dry_run=True, confirm_persons=2, actor="dpo")
    assert (both.persons, both.records) == (two, len(subject_records) + len(other_records[others[0]]))

    result = erase(spark, settings, phone=phone[-11:], reason="ticket 4712", actor="dpo")
    assert (result.persons, result.records, result.shared, result.dry_run) == ([subject], len(subject_records),
                                                                              dry.shared, False)
    assert result.rows_deleted == dry.rows_deleted and result.keys == dry.keys
    assert (records_of(subject), {o: records_of(o) for o in others}) == ([], other_records)
    profiles = spark.table("gold.customer_profile")
    assert profiles.where(F.col("one_id").isin(*others)).count() == len(others)
    assert profiles.where(F.col("one_id") == subject).count() == 0
    ledger = {r["key_hash"] for r in spark.table(LEDGER).where(F.col("erasure_id") == result.erasure_id).collect()}
    assert len(ledger) == result.keys
    assert keyed_hash_text(f"phone:{phone}", load_keys(settings).hash_key) not in ledger

    # a new row with the shared phone (another member's) lands, and nothing of it is deleted
    land(data_dir / "landing" / "crm_members", "crm_members_part-9002.csv",
         "会员编号,姓名,手机号,邮箱,身份证号,性别,出生日期,省份,城市,注册时间",
         f"M99999992,测试,{phone[-11:]},,,,,,,2026-11-02 11:00:00")
    outcomes = {o.stage: o for o in run_stages(spark, settings, "bronze", AS_OF) + run_stages(spark, settings, "silver", AS_OF)}
    assert outcomes["bronze"].metrics["erased_rows"] == {}
    assert spark.table("silver.customers").where(F.col("record_key") == "M99999992").count() == 1


def test_erasing_by_a_refused_placeholder_phone_is_refused_and_deletes_nothing(spark, settings):
    placeholder = spark.sql("""SELECT id_value, reason FROM identity.suspicious_identifiers WHERE id_type = 'phone'
                               ORDER BY id_value LIMIT 1""").first()
    carriers = spark.table("silver.identifiers").where(F.col("id_value") == placeholder["id_value"]).count()
    assert carriers > 0
    with pytest.raises(ErasureError, match=f"refused: phone \\{placeholder['id_value']}: .*identifies nobody"):
        erase(spark, settings, phone=placeholder["id_value"][-11:], actor="dpo")
    assert spark.table("silver.identifiers").where(F.col("id_value") == placeholder["id_value"]).count() == carriers


def test_after_maintenance_no_file_under_the_lakehouse_holds_the_erased_persons_values(spark, settings, lakehouse,
                                                                                        first_export, personal_values):
    """cdp maintain: every table compacted (the per-person tables Z-ordered), then vacuumed at once. After
    an erasure and maintenance, the erased person's phone, e-mail, 身份证 number and name are in no file
    under the lakehouse — Delta data and logs, change-feed files, checkpoints, the catalog — while another
    person's are; nor is the phone of the subject erased earlier."""
    from cdp.operations.maintenance import maintain
    from cdp.tables import LAYOUT

    (erased, erased_values), (kept, kept_values) = sorted(personal_values.items())
    assert sorted(erased_values) == sorted(kept_values) == ["email", "id_card", "name", "phone"]
    erase(spark, settings, one_id=erased, reason="ticket 4713", actor="dpo")
    before = files_holding(lakehouse, erased_values)
    assert all(any(f.endswith(".parquet") for f in files) for files in before.values()), before  # old versions: time travel
    result = maintain(spark, settings, retention_hours=0)
    assert {o.table for o in result.optimized if o.zorder_by} == {t for t in LAYOUT if spark.catalog.tableExists(t)}
    assert result.vacuumed.tables == len(result.optimized) >= 30
    assert files_holding(lakehouse, erased_values) == {"email": [], "id_card": [], "name": [], "phone": []}
    assert files_holding(lakehouse, {"phone": subjects(first_export)[0][1][-11:]}) == {"phone": []}  # the first erasure's
    kept_files = files_holding(lakehouse, kept_values)
    assert {kind: any("silver.db/" in f for f in files) for kind, files in kept_files.items()} == {
        "email": True, "id_card": True, "name": True, "phone": True}


def land(folder: Path, name: str, header: str, row: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"{header}\n{row}\n", encoding="utf-8")


def test_a_withdrawal_leaves_the_next_export_and_an_erased_subject_stays_out(spark, settings, data_dir, first_export,
                                                                            tmp_path):
    from cdp.pipeline import run_stages

    (erased_id, erased_phone), (withdrawn_id, withdrawn_phone) = subjects(first_export)
    landing = data_dir / "landing"
    land(landing / "consent_events", "consent_events_part-9001.csv",
         "consent_id,subject_type,subject_value,purpose,action,channel,occurred_at,source_system",
         f"C9000000001,phone,{withdrawn_phone[-11:]},marketing_sms,withdraw,crm,2026-11-02 09:00:00,cmp")
    land(landing / "crm_members", "crm_members_part-9001.csv", "会员编号,姓名,手机号,邮箱,身份证号,性别,出生日期,省份,城市,注册时间",
         f"M99999991,测试,{erased_phone[-11:]},,,,,,,2026-11-02 10:00:00")
    outcomes = {o.stage: o for o in run_stages(spark, settings, "bronze", AS_OF) + run_stages(spark, settings, "silver", AS_OF)}

    assert outcomes["bronze"].metrics["erased_rows"] == {"bronze.crm_members": 1}
    layers = erasable_tables(spark, ("bronze", "silver"))
    assert {t: rows_holding(spark, t, erased_phone[-11:]) for t in layers} == {t: 0 for t in layers}
    again = export_audience(spark, settings, AUDIENCE, PURPOSE, str(tmp_path / "again"))
    expected = {k: v for k, v in first_export[1].items() if k not in (erased_id, withdrawn_id)}
    assert exported_rows(tmp_path / "again") == expected
    assert (again.without_consent, again.members) == (1, len(first_export[1]) - 1)


def test_the_audit_log_is_append_only_and_saw_every_kind_of_event(spark, first_export):
    properties = {r["key"]: r["value"] for r in spark.sql("SHOW TBLPROPERTIES ops.audit_log").collect()}
    assert properties["delta.appendOnly"] == "true"
    actions = {r["action"] for r in spark.table("ops.audit_log").select("action").distinct().collect()}
    assert actions == {"job_run", "export", "export_refused", "erasure", "erasure_dry_run", "vacuum", "role_views",
                       "steward_rule", "maintain"}
    with pytest.raises(Exception, match="(?i)append"):
        spark.sql("DELETE FROM ops.audit_log WHERE action = 'erasure'")
