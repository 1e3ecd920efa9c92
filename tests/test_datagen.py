"""Tests for the synthetic data generator: determinism, truth consistency, valid 身份证 numbers and planted traps."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from cdp.datagen import GenerationSummary, generate, vocab

SEED = 11
PERSONS = 2000
AS_OF = date(2026, 11, 1)
CST = timezone(timedelta(hours=8))

# Pinned for (PERSONS, SEED, AS_OF): any change to the draw order shows up here first.
EXPECTED_ROWS = {
    "crm_members": 1200,
    "pos_orders": 2060,
    "ecom_orders": 3492,
    "wechat_events": 6949,
    "app_events": 4515,
    "consent_events": 2161,
}
EXPECTED_TRAPS = {
    "placeholder_phone_orders": 148,
    "empty_phone_orders": 51,
    "bad_amount_orders": 12,
    "test_email_members": 17,
    "missing_member_id_rows": 6,
    "typo_receiver_names": 196,
    "zero_idfa_persons": 55,
    "junk_android_id_persons": 10,
    "malformed_json_lines": 8,
}

SOURCES = ("crm_members", "pos_orders", "ecom_orders", "wechat_events", "app_events", "consent_events")
HEADERS = {
    "crm_members": ["会员编号", "姓名", "手机号", "邮箱", "身份证号", "性别", "出生日期", "省份", "城市", "注册时间"],
    "pos_orders": ["order_id", "store_id", "store_name", "member_phone", "amount", "paid_at", "payment_method"],
    "ecom_orders": [
        "order_no", "platform", "buyer_account", "receiver_name", "receiver_phone",
        "province", "city", "order_amount", "created_at", "status",
    ],
    "consent_events": [
        "consent_id", "subject_type", "subject_value", "purpose", "action", "channel", "occurred_at", "source_system",
    ],
}
RECORD_KEY = {
    "crm_members": "会员编号", "pos_orders": "order_id", "ecom_orders": "order_no", "consent_events": "consent_id",
}

PLACEHOLDER = "13800138000"
ZERO_IDFA = "00000000-0000-0000-0000-000000000000"
JUNK_ANDROID_ID = "9774d56d682e549c"
MOBILE = re.compile(r"^1(3\d|5[0-35-9]|7[6-8]|8\d|9[89])\d{8}$")
AMOUNT = re.compile(r"^\d+\.\d{2}$")
EVENT_ID = re.compile(r'^\{"event_id": "((?:wx|app)_[0-9a-f]{12})"')
TO_ASCII_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def normalize_phone(raw: str) -> str:
    """Independent re-implementation of what the pipeline must do with the messy phone formats."""
    digits = re.sub(r"\D", "", raw.translate(TO_ASCII_DIGITS))
    for prefix in ("17951", "0086", "86"):
        if len(digits) > 11 and digits.startswith(prefix):
            digits = digits[len(prefix):]
    return digits


def check_char(first17: str) -> str:
    weights = [2 ** (17 - i) % 11 for i in range(17)]  # derivation of 7 9 10 5 8 4 2 1 6 3 ...
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def file_hashes(out: Path) -> dict[str, str]:
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for sub in ("landing", "truth")
        for path in sorted((out / sub).rglob("*"))
        if path.is_file()
    }


def read_csv(out: Path, source: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted((out / "landing" / source).glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def read_lines(out: Path, source: str) -> list[str]:
    return [
        line
        for path in sorted((out / "landing" / source).glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def parse_events(lines: list[str]) -> tuple[list[dict], list[str]]:
    """Return (parsed events, event_ids of malformed lines)."""
    parsed, broken = [], []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            broken.append(EVENT_ID.match(line).group(1))
    return parsed, broken


@dataclasses.dataclass
class Data:
    out: Path
    summary: GenerationSummary
    csv: dict[str, list[dict[str, str]]]
    events: dict[str, list[dict]]
    broken: dict[str, list[str]]
    truth: list[dict[str, str]]
    persons: dict[str, dict[str, str]]
    manifest: dict

    def owner(self, source: str) -> dict[str, str]:
        return {r["record_key"]: r["person_id"] for r in self.truth if r["source"] == source and r["record_key"]}


def load(out: Path, summary: GenerationSummary) -> Data:
    events, broken = {}, {}
    for source in ("wechat_events", "app_events"):
        events[source], broken[source] = parse_events(read_lines(out, source))
    with (out / "truth" / "records.csv").open(encoding="utf-8", newline="") as handle:
        truth = list(csv.DictReader(handle))
    with (out / "truth" / "persons.csv").open(encoding="utf-8", newline="") as handle:
        persons = {row["person_id"]: row for row in csv.DictReader(handle)}
    return Data(
        out=out, summary=summary, csv={s: read_csv(out, s) for s in HEADERS}, events=events, broken=broken,
        truth=truth, persons=persons, manifest=json.loads((out / "truth" / "manifest.json").read_text("utf-8")),
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    out = tmp_path_factory.mktemp("datagen")
    return load(out, generate(PERSONS, SEED, out))


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first, second = generate(300, 5, tmp_path / "a"), generate(300, 5, str(tmp_path / "b"))
    hashes = file_hashes(tmp_path / "a")
    assert len(hashes) == 6 * 2 + 3
    assert hashes == file_hashes(tmp_path / "b")
    assert first.rows == second.rows


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    generate(300, 5, tmp_path / "a")
    generate(300, 6, tmp_path / "b")
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate(300, 5, out)
    (out / "landing" / "crm_members" / "stale.csv").write_text("x\n", encoding="utf-8")
    (out / "truth" / "old.json").write_text("{}", encoding="utf-8")
    (out / "keep.txt").write_text("not ours", encoding="utf-8")
    generate(40, 5, out)
    generate(40, 5, tmp_path / "fresh")
    assert file_hashes(out) == file_hashes(tmp_path / "fresh")
    assert (out / "keep.txt").read_text(encoding="utf-8") == "not ours"


def test_summary_and_manifest_figures(data: Data) -> None:
    assert data.summary.rows == EXPECTED_ROWS
    assert data.summary.total_rows() == sum(EXPECTED_ROWS.values()) == len(data.truth)
    assert (data.summary.persons, data.summary.seed, data.summary.out) == (PERSONS, SEED, data.out)
    assert data.manifest == {
        "persons": PERSONS, "seed": SEED, "as_of": "2026-11-01", "rows": EXPECTED_ROWS, "traps": EXPECTED_TRAPS,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.summary.persons = 1  # type: ignore[misc]


def test_file_layout_headers_and_encoding(data: Data) -> None:
    for source in SOURCES:
        ext = "csv" if source in HEADERS else "jsonl"
        names = sorted(p.name for p in (data.out / "landing" / source).iterdir())
        assert names == [f"{source}_part-0001.{ext}", f"{source}_part-0002.{ext}"]
        sizes = []
        for name in names:
            raw = (data.out / "landing" / source / name).read_bytes()
            assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw
            lines = raw.decode("utf-8").splitlines()
            if ext == "csv":
                assert next(csv.reader(lines[:1])) == HEADERS[source]
                lines = lines[1:]
            sizes.append(len(lines))
        assert sizes[0] - sizes[1] in (0, 1)


def test_truth_matches_every_landing_row(data: Data) -> None:
    landing = Counter()
    for source, key in RECORD_KEY.items():
        landing.update((source, row[key]) for row in data.csv[source])
    for source in ("wechat_events", "app_events"):
        landing.update((source, event["event_id"]) for event in data.events[source])
        landing.update((source, event_id) for event_id in data.broken[source])
    truth = Counter((row["source"], row["record_key"]) for row in data.truth)
    assert truth == landing
    assert Counter(row["source"] for row in data.truth) == Counter(EXPECTED_ROWS)
    assert {row["person_id"] for row in data.truth} == set(data.persons)
    non_empty = [key for key in truth if key[1]]
    assert len(non_empty) == len(set(non_empty)) and all(truth[key] == 1 for key in non_empty)


def test_landing_identifiers_agree_with_truth_persons(data: Data) -> None:
    phone_of = {pid: p["phone"].removeprefix("+86") for pid, p in data.persons.items()}
    crm_owner = data.owner("crm_members")
    for row in data.csv["crm_members"]:
        pid = crm_owner.get(row["会员编号"])
        if pid:
            assert row["姓名"].strip(" \u3000").replace("\u3000", "") == data.persons[pid]["name"]
            assert row["手机号"] == "" or normalize_phone(row["手机号"]) == phone_of[pid]
            assert row["邮箱"].strip().lower() in ("", "test@test.com", data.persons[pid]["email"])
            assert row["身份证号"] in ("", data.persons[pid]["id_card"], data.persons[pid]["id_card"].lower())
    for source, column in (("pos_orders", "member_phone"), ("ecom_orders", "receiver_phone")):
        owner = data.owner(source)
        for row in data.csv[source]:
            assert normalize_phone(row[column]) in ("", PLACEHOLDER, phone_of[owner[row[RECORD_KEY[source]]]])
    owner = data.owner("wechat_events")
    openid_people, unionid_people = {}, {}
    for event in data.events["wechat_events"]:
        pid = owner[event["event_id"]]
        assert normalize_phone(event.get("phone") or "") in ("", phone_of[pid])
        assert openid_people.setdefault(event["openid"], pid) == pid
        if event.get("unionid"):
            assert unionid_people.setdefault(event["unionid"], pid) == pid
    owner = data.owner("app_events")
    member_of = {pid: key for key, pid in crm_owner.items()}
    for event in data.events["app_events"]:
        # A member whose CRM row lost its 会员编号 cannot be cross-checked, so any id passes for them.
        if "member_id" in event:
            assert member_of.get(owner[event["event_id"]], event["member_id"]) == event["member_id"]


def test_persons_have_valid_unique_identifiers(data: Data) -> None:
    codes = {(p.name, c.name): set(c.area_codes) for p in vocab.PROVINCES for c in p.cities}
    for column in ("id_card", "phone"):
        assert len({p[column] for p in data.persons.values()}) == PERSONS
    emails = [p["email"] for p in data.persons.values() if p["email"]]
    assert len(emails) == len(set(emails)) and 0.65 < len(emails) / PERSONS < 0.75
    assert check_char("11010519491231002") == "X"
    for person in data.persons.values():
        card, birth = person["id_card"], date.fromisoformat(person["birth_date"])
        assert re.fullmatch(r"\d{17}[\dX]", card)
        assert card[17] == check_char(card[:17])
        assert card[6:14] == birth.strftime("%Y%m%d")
        assert int(card[16]) % 2 == (1 if person["gender"] == "M" else 0)
        assert card[:6] in codes[(person["province"], person["city"])]
        age = AS_OF.year - birth.year - ((AS_OF.month, AS_OF.day) < (birth.month, birth.day))
        assert 18 <= age <= 70
        assert MOBILE.match(person["phone"].removeprefix("+86")) and person["phone"] != "+86" + PLACEHOLDER
        assert person["email"] == person["email"].lower().strip()
        assert re.fullmatch(r"P\d{7}", person["person_id"])


def test_traps_recounted_from_files_match_manifest(data: Data) -> None:
    pos, crm = data.csv["pos_orders"], data.csv["crm_members"]
    ecom_owner, app_owner = data.owner("ecom_orders"), data.owner("app_events")
    app = data.events["app_events"]
    counted = {
        "placeholder_phone_orders": sum(normalize_phone(r["member_phone"]) == PLACEHOLDER for r in pos),
        "empty_phone_orders": sum(r["member_phone"] == "" for r in pos),
        "bad_amount_orders": sum(not AMOUNT.match(r["amount"]) for r in pos),
        "test_email_members": sum(r["邮箱"].strip().lower() == "test@test.com" for r in crm),
        "missing_member_id_rows": sum(r["会员编号"] == "" for r in crm),
        "typo_receiver_names": sum(
            r["receiver_name"] != data.persons[ecom_owner[r["order_no"]]]["name"] for r in data.csv["ecom_orders"]
        ),
        "zero_idfa_persons": len({app_owner[e["event_id"]] for e in app if e.get("idfa") == ZERO_IDFA}),
        "junk_android_id_persons": len(
            {app_owner[e["event_id"]] for e in app if e.get("android_id") == JUNK_ANDROID_ID}
        ),
        "malformed_json_lines": len(data.broken["app_events"]) + len(data.broken["wechat_events"]),
    }
    assert counted == data.manifest["traps"] == EXPECTED_TRAPS
    assert all(counted.values())
    assert 0.05 < counted["placeholder_phone_orders"] / len(pos) < 0.11
    assert 0.005 < counted["test_email_members"] / len(crm) < 0.02


def test_channel_membership_rates(data: Data) -> None:
    people = {source: set() for source in SOURCES}
    for row in data.truth:
        people[row["source"]].add(row["person_id"])
    expected = {"crm_members": 0.60, "pos_orders": 0.40, "wechat_events": 0.55, "app_events": 0.35}
    for source, rate in expected.items():
        assert abs(len(people[source]) / PERSONS - rate) < 0.04, source
    # E-commerce also takes the people who drew no channel at all.
    assert 0.48 < len(people["ecom_orders"]) / PERSONS < 0.58
    assert people["consent_events"] <= people["crm_members"] | people["wechat_events"]
    assert set().union(*people.values()) == set(data.persons)


def test_value_formats(data: Data) -> None:
    assert all(re.fullmatch(r"(M\d{8})?", r["会员编号"]) for r in data.csv["crm_members"])
    assert {r["性别"] for r in data.csv["crm_members"]} == {"男", "女", "M", "F", "1", "2"}
    assert all(re.fullmatch(r"POS\d{10}", r["order_id"]) for r in data.csv["pos_orders"])
    assert all(re.fullmatch(r"S\d{4}", r["store_id"]) for r in data.csv["pos_orders"])
    for row in data.csv["ecom_orders"]:
        prefix, account = ("T", "tb_") if row["platform"] == "tmall" else ("J", "jd_")
        assert re.fullmatch(prefix + r"\d{12}", row["order_no"]) and row["buyer_account"].startswith(account)
        assert AMOUNT.match(row["order_amount"]) and row["status"] in {"PAID", "SHIPPED", "FINISHED", "REFUNDED"}
    for event in data.events["wechat_events"]:
        assert re.fullmatch(r"wx_[0-9a-f]{12}", event["event_id"]) and re.fullmatch(r"wx[0-9a-f]{16}", event["appid"])
        assert len(event["openid"]) == 28 and event["openid"].startswith("o") and isinstance(event["ts"], int)
        assert event.get("unionid") is None or (len(event["unionid"]) == 28 and event["unionid"].startswith("oU"))
    for event in data.events["app_events"]:
        assert ("idfa" in event) == (event["os"] == "ios") == ("android_id" not in event)
    consent = data.csv["consent_events"]
    assert all(re.fullmatch(r"C\d{10}", r["consent_id"]) for r in consent)
    assert {r["subject_type"] for r in consent} == {"phone", "email", "openid"}
    assert 0.68 < sum(r["action"] == "grant" for r in consent) / len(consent) < 0.82


def all_moments(out: Path) -> tuple[list[datetime], list[datetime]]:
    """(activity timestamps, registration timestamps) as aware datetimes."""
    def local(text: str, fmt: str) -> datetime:
        return datetime.strptime(text, fmt).replace(tzinfo=CST)

    moments = [local(r["paid_at"], "%Y/%m/%d %H:%M") for r in read_csv(out, "pos_orders")]
    moments += [datetime.fromisoformat(r["created_at"]) for r in read_csv(out, "ecom_orders")]
    moments += [local(r["occurred_at"], "%Y-%m-%d %H:%M:%S") for r in read_csv(out, "consent_events")]
    wechat, _ = parse_events(read_lines(out, "wechat_events"))
    moments += [datetime.fromtimestamp(e["ts"] / 1000, CST) for e in wechat]
    app, _ = parse_events(read_lines(out, "app_events"))
    moments += [local(e["event_time"], "%Y-%m-%d %H:%M:%S.%f") for e in app]
    registered = [local(r["注册时间"], "%Y-%m-%d %H:%M:%S") for r in read_csv(out, "crm_members")]
    return moments, registered


@pytest.mark.parametrize("as_of", [AS_OF, date(2028, 2, 29)])
def test_timestamps_lie_in_the_year_before_as_of(tmp_path: Path, as_of: date) -> None:
    generate(400, 3, tmp_path, as_of=as_of)
    end = datetime.combine(as_of, time(), CST)
    moments, registered = all_moments(tmp_path)
    assert moments and all(end - timedelta(days=365) <= m < end for m in moments)
    assert sum(m >= end - timedelta(days=180) for m in moments) / len(moments) > 0.7
    assert all(end - timedelta(days=3 * 365) <= m < end for m in registered)


@pytest.mark.parametrize("persons", [0, -3])
def test_rejects_non_positive_person_count(tmp_path: Path, persons: int) -> None:
    with pytest.raises(ValueError, match="persons must be at least 1"):
        generate(persons, 1, tmp_path)
    assert not (tmp_path / "landing").exists()


def test_two_persons(tmp_path: Path) -> None:
    summary = generate(2, 9, tmp_path)
    with (tmp_path / "truth" / "records.csv").open(encoding="utf-8", newline="") as handle:
        truth = list(csv.DictReader(handle))
    assert {r["person_id"] for r in truth} == {"P0000001", "P0000002"}
    assert len(truth) == summary.total_rows() > 0
    assert len(list((tmp_path / "landing").rglob("*_part-000[12].*"))) == 12


def test_vocabulary_sizes() -> None:
    assert len({s for s, _ in vocab.SURNAMES}) >= 60
    given = {c for c, _ in vocab.MALE_GIVEN + vocab.FEMALE_GIVEN + vocab.NEUTRAL_GIVEN}
    assert len(given) >= 150 and given <= set(vocab.HOMOPHONES)
    provinces = [p for p in vocab.PROVINCES if p.name.endswith(("省", "自治区"))]
    assert len(provinces) >= 12 and all(2 <= len(p.cities) <= 4 for p in provinces)
    for province in vocab.PROVINCES:
        prefixes = {code[:2] for city in province.cities for code in city.area_codes}
        assert len(prefixes) == 1 and province.name.startswith(province.short)
    assert all(re.fullmatch(r"[a-z]+", py) for _, py in vocab.SURNAMES)
