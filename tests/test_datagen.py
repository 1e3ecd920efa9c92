"""Tests for the synthetic data generator: determinism, truth consistency, valid 身份证 numbers and planted traps."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from cdp_dev.datagen import GenerationSummary, generate, vocab

SEED = 11
PERSONS = 2000
AS_OF = date(2026, 11, 1)
CST = timezone(timedelta(hours=8))

# Pinned for (PERSONS, SEED, AS_OF): any change to the draw order shows up here first.
EXPECTED_ROWS = {
    "crm_members": 1204,
    "pos_orders": 2021,
    "ecom_orders": 3656,
    "wechat_events": 6914,
    "app_events": 4393,
    "consent_events": 2155,
}
EXPECTED_TRAPS = {
    "placeholder_phone_orders": 44,
    "empty_phone_orders": 17,
    "bad_amount_orders": 13,
    "test_email_members": 13,
    "missing_member_id_rows": 10,
    "typo_receiver_names": 177,
    "zero_idfa_persons": 41,
    "junk_android_id_persons": 7,
    "malformed_json_lines": 5,
    "store_walkin_phones": 1,
    "shared_tablets": 1,
    "family_shared_phones": 6,
    "mistyped_id_cards": 4,
    "household_phones": 12,
    "name_variant_persons": 21,
}
TRAP_VALUE_KEYS = [
    "placeholder_phones", "placeholder_phones_e164", "test_emails", "zero_idfas", "junk_android_ids",
    "store_walkin_phones", "store_walkin_phones_e164", "shared_tablet_android_ids", "shared_tablet_anonymous_ids",
    "family_shared_phones", "family_shared_phones_e164", "mistyped_id_cards", "mistyped_id_card_member_ids",
    "household_phones_e164", "household_person_pairs",
]

SOURCES = ("crm_members", "pos_orders", "ecom_orders", "wechat_events", "app_events", "consent_events")
HEADERS = {
    "crm_members": ["会员编号", "姓名", "手机号", "邮箱", "身份证号", "性别", "出生日期", "省份", "城市", "注册时间"],
    "pos_orders": [
        "order_id", "store_id", "store_name", "member_phone", "amount", "paid_at", "payment_method", "member_no",
    ],
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
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
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

    def values(self, key: str) -> list[str]:
        return self.manifest["trap_values"][key]

    def phone_owners(self) -> dict[str, set[str]]:
        """Normalised phone -> truth persons of every landing row that carries it, across all sources."""
        owners: dict[str, set[str]] = defaultdict(set)
        columns = {"crm_members": "手机号", "pos_orders": "member_phone", "ecom_orders": "receiver_phone"}
        for source, column in columns.items():
            owner = self.owner(source)
            for row in self.csv[source]:
                if row[RECORD_KEY[source]] and row[column]:
                    owners[normalize_phone(row[column])].add(owner[row[RECORD_KEY[source]]])
        owner = self.owner("consent_events")
        for row in self.csv["consent_events"]:
            if row["subject_type"] == "phone":
                owners[normalize_phone(row["subject_value"])].add(owner[row["consent_id"]])
        for source in ("wechat_events", "app_events"):
            owner = self.owner(source)
            for event in self.events[source]:
                if event.get("phone"):
                    owners[normalize_phone(event["phone"])].add(owner[event["event_id"]])
        return owners

    def tablet_events(self) -> list[dict]:
        tablets = set(self.values("shared_tablet_android_ids"))
        return [e for e in self.events["app_events"] if e.get("android_id") in tablets]


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
    trap_values = data.manifest["trap_values"]
    assert {key: value for key, value in data.manifest.items() if key != "trap_values"} == {
        "persons": PERSONS, "seed": SEED, "as_of": "2026-11-01", "rows": EXPECTED_ROWS, "traps": EXPECTED_TRAPS,
        "name_variants": data.manifest["name_variants"],  # checked against the orders in test_traps_recounted…
    }
    assert len(trap_values["household_person_pairs"]) == len(trap_values["household_phones_e164"]) == 12
    assert list(trap_values) == TRAP_VALUE_KEYS
    assert trap_values["placeholder_phones"] == [PLACEHOLDER]
    assert trap_values["placeholder_phones_e164"] == ["+86" + PLACEHOLDER]
    assert trap_values["test_emails"] == ["test@test.com"]
    assert trap_values["zero_idfas"] == [ZERO_IDFA] and trap_values["junk_android_ids"] == [JUNK_ANDROID_ID]
    for key, trap in (
        ("store_walkin_phones", "store_walkin_phones"), ("shared_tablet_android_ids", "shared_tablets"),
        ("shared_tablet_anonymous_ids", "shared_tablets"), ("family_shared_phones", "family_shared_phones"),
        ("mistyped_id_cards", "mistyped_id_cards"), ("mistyped_id_card_member_ids", "mistyped_id_cards"),
    ):
        assert len(trap_values[key]) == len(set(trap_values[key])) == EXPECTED_TRAPS[trap], key
    for key in ("store_walkin_phones", "family_shared_phones"):
        assert trap_values[key + "_e164"] == ["+86" + phone for phone in trap_values[key]]
        assert all(MOBILE.match(phone) for phone in trap_values[key])
    for key in ("shared_tablet_android_ids", "shared_tablet_anonymous_ids"):
        assert all(value == value.lower() for value in trap_values[key])
    assert all(re.fullmatch(r"\d{17}[\dX]", card) for card in trap_values["mistyped_id_cards"])
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
    mistyped = dict(zip(data.values("mistyped_id_card_member_ids"), data.values("mistyped_id_cards")))
    for row in data.csv["crm_members"]:
        pid = crm_owner.get(row["会员编号"])
        if pid:
            card = mistyped.get(row["会员编号"], data.persons[pid]["id_card"])
            assert row["姓名"].strip(" \u3000").replace("\u3000", "") == data.persons[pid]["name"]
            # Members register by SMS code: the number is always there.
            assert normalize_phone(row["手机号"]) == phone_of[pid]
            assert row["邮箱"].strip().lower() in ("", "test@test.com", data.persons[pid]["email"])
            assert row["身份证号"] in ("", card, card.lower())
    # A member whose CRM row lost its 会员编号 cannot be cross-checked, so any member id passes for them.
    unkeyed = {r["person_id"] for r in data.truth if r["source"] == "crm_members" and not r["record_key"]}
    card_of = {pid: key for key, pid in crm_owner.items() if key not in mistyped}
    walkin = set(data.values("store_walkin_phones"))
    for source, column in (("pos_orders", "member_phone"), ("ecom_orders", "receiver_phone")):
        owner = data.owner(source)
        for row in data.csv[source]:
            pid = owner[row[RECORD_KEY[source]]]
            assert normalize_phone(row[column]) in ("", PLACEHOLDER, phone_of[pid]) or (
                source == "pos_orders" and normalize_phone(row[column]) in walkin
            )
            if source == "pos_orders" and row["member_no"] and pid not in unkeyed:
                assert row["member_no"] == card_of[pid]
    owner = data.owner("wechat_events")
    openid_people, unionid_people = {}, {}
    for event in data.events["wechat_events"]:
        pid = owner[event["event_id"]]
        assert normalize_phone(event.get("phone") or "") in ("", phone_of[pid])
        assert openid_people.setdefault(event["openid"], pid) == pid
        if event.get("unionid"):
            assert unionid_people.setdefault(event["unionid"], pid) == pid
    owner = data.owner("app_events")
    install_people = defaultdict(set)
    for event in data.events["app_events"]:
        pid = owner[event["event_id"]]
        install_people[event["anonymous_id"]].add(pid)
        assert not ("member_id" in event and "phone" in event)
        if "member_id" in event and pid not in unkeyed:
            assert event["member_id"] == card_of[pid]
        if "phone" in event:
            # Only people who are not members sign in to the app with their phone.
            assert event["phone"] == phone_of[pid] and pid not in card_of and pid not in unkeyed
    tablets = set(data.values("shared_tablet_anonymous_ids"))
    assert all(len(people) == 1 for install, people in install_people.items() if install not in tablets)


def test_persons_have_valid_unique_identifiers(data: Data) -> None:
    codes = {(p.name, c.name): set(c.area_codes) for p in vocab.PROVINCES for c in p.cities}
    assert len({p["id_card"] for p in data.persons.values()}) == PERSONS
    # The only phones shared are the planted family and household phones, each by exactly two persons.
    shared = Counter(p["phone"] for p in data.persons.values())
    assert len(shared) == PERSONS - EXPECTED_TRAPS["family_shared_phones"] - EXPECTED_TRAPS["household_phones"]
    assert sorted(phone for phone, n in shared.items() if n > 1) == sorted(
        data.values("family_shared_phones_e164") + data.values("household_phones_e164"))
    assert set(shared.values()) == {1, 2}
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
    pos_owner, crm_owner = data.owner("pos_orders"), data.owner("crm_members")
    app = data.events["app_events"]
    phone_of = {pid: p["phone"].removeprefix("+86") for pid, p in data.persons.items()}
    device_people = defaultdict(set)
    for event in app:
        device_people[event.get("android_id")].add(app_owner[event["event_id"]])
    crm_phone_people = defaultdict(set)
    for row in crm:
        if row["会员编号"] and row["手机号"]:
            crm_phone_people[normalize_phone(row["手机号"])].add(crm_owner[row["会员编号"]])
    # a household's two persons never show a 身份证; a family phone's do
    shows_card = {crm_owner[r["会员编号"]] for r in crm if r["会员编号"] and r["身份证号"]}
    phone_people = defaultdict(set)
    for person in data.persons.values():
        phone_people[person["phone"]].add(person["person_id"])
    variants = data.manifest["name_variants"]
    variant_orders = defaultdict(set)
    for r in data.csv["ecom_orders"]:
        if ecom_owner[r["order_no"]] in variants:
            variant_orders[ecom_owner[r["order_no"]]].add(r["receiver_name"])
    counted = {
        "placeholder_phone_orders": sum(normalize_phone(r["member_phone"]) == PLACEHOLDER for r in pos),
        "empty_phone_orders": sum(r["member_phone"] == "" for r in pos),
        "bad_amount_orders": sum(not AMOUNT.match(r["amount"]) for r in pos),
        "test_email_members": sum(r["邮箱"].strip().lower() == "test@test.com" for r in crm),
        "missing_member_id_rows": sum(r["会员编号"] == "" for r in crm),
        "typo_receiver_names": sum(  # a person who spells their name otherwise does so on every order
            r["receiver_name"] != data.persons[ecom_owner[r["order_no"]]]["name"] and ecom_owner[r["order_no"]] not in variants
            for r in data.csv["ecom_orders"]
        ),
        "zero_idfa_persons": len({app_owner[e["event_id"]] for e in app if e.get("idfa") == ZERO_IDFA}),
        "junk_android_id_persons": len(
            {app_owner[e["event_id"]] for e in app if e.get("android_id") == JUNK_ANDROID_ID}
        ),
        "malformed_json_lines": len(data.broken["app_events"]) + len(data.broken["wechat_events"]),
        # A number keyed in at the till that is neither empty, the placeholder nor the customer's own.
        "store_walkin_phones": len({
            normalize_phone(r["member_phone"]) for r in pos
            if normalize_phone(r["member_phone"]) not in ("", PLACEHOLDER, phone_of[pos_owner[r["order_id"]]])
        }),
        "shared_tablets": sum(
            len(people) > 1 for device, people in device_people.items() if device not in (None, JUNK_ANDROID_ID)
        ),
        "family_shared_phones": sum(len(people) > 1 and people <= shows_card for people in crm_phone_people.values()),
        "mistyped_id_cards": sum(
            r["身份证号"] != "" and r["身份证号"].upper() != data.persons[crm_owner[r["会员编号"]]]["id_card"]
            for r in crm if r["会员编号"]
        ),
        "household_phones": sum(len(people) > 1 and not people & shows_card for people in phone_people.values()),
        "name_variant_persons": sum(
            orders == {variants[pid]} and variants[pid] != data.persons[pid]["name"] for pid, orders in variant_orders.items()),
    }
    assert counted == data.manifest["traps"] == EXPECTED_TRAPS
    assert all(counted.values())
    assert 0.01 < counted["placeholder_phone_orders"] / len(pos) < 0.035
    assert 0.003 < counted["empty_phone_orders"] / len(pos) < 0.02
    assert 0.005 < counted["test_email_members"] / len(crm) < 0.02


def test_store_walkin_phones_are_shared_by_many_carded_members(data: Data) -> None:
    owner = data.owner("pos_orders")
    phone_people = data.phone_owners()
    for phone in data.values("store_walkin_phones"):
        orders = [r for r in data.csv["pos_orders"] if normalize_phone(r["member_phone"]) == phone]
        assert len({r["store_id"] for r in orders}) == 1  # the number of one store
        carded = {r["member_no"] for r in orders if r["member_no"]}
        assert len(carded) >= 8
        assert len({owner[r["order_id"]] for r in orders if r["member_no"]}) == len(carded)
        # No customer owns it: it appears on POS orders only, never as anyone's own phone.
        assert "+86" + phone not in {p["phone"] for p in data.persons.values()}
        assert phone_people[phone] == {owner[r["order_id"]] for r in orders} and phone != PLACEHOLDER


def test_shared_tablets_carry_many_members(data: Data) -> None:
    owner, crm_owner = data.owner("app_events"), data.owner("crm_members")
    events = data.tablet_events()
    tablets = zip(data.values("shared_tablet_android_ids"), data.values("shared_tablet_anonymous_ids"))
    for android_id, anonymous_id in tablets:
        on_tablet = [e for e in events if e["android_id"] == android_id]
        people = Counter(owner[e["event_id"]] for e in on_tablet)
        assert 10 <= len(people) <= 40 and set(people.values()) <= {1, 2, 3}
        for event in on_tablet:
            assert event["os"] == "android" and "oaid" not in event and event["anonymous_id"] == anonymous_id
            # Every event is signed in, with the member id of the member it belongs to.
            assert crm_owner.get(event["member_id"], owner[event["event_id"]]) == owner[event["event_id"]]
        installed = {e["event_id"] for e in data.events["app_events"] if e["anonymous_id"] == anonymous_id}
        assert installed == {e["event_id"] for e in on_tablet}


def test_family_phones_belong_to_two_people_with_different_id_cards(data: Data) -> None:
    crm_owner = data.owner("crm_members")
    phone_people = data.phone_owners()
    for phone in data.values("family_shared_phones"):
        people = phone_people[phone]
        assert len(people) == 2
        assert {pid for pid, p in data.persons.items() if p["phone"] == "+86" + phone} == people
        cards = {
            pid: {r["身份证号"].upper() for r in data.csv["crm_members"] if crm_owner.get(r["会员编号"]) == pid}
            for pid in people
        }
        first, second = cards.values()
        # Both register with the shared phone and show their own 身份证, which tells them apart.
        assert "" not in first | second and first.isdisjoint(second)
        family_rows = [r for r in data.csv["crm_members"] if crm_owner.get(r["会员编号"]) in people]
        assert all(normalize_phone(r["手机号"]) == phone for r in family_rows)


def test_mistyped_id_cards_pass_the_checksum(data: Data) -> None:
    crm_owner = data.owner("crm_members")
    rows = {r["会员编号"]: r for r in data.csv["crm_members"] if r["会员编号"]}
    for card, member_id in zip(data.values("mistyped_id_cards"), data.values("mistyped_id_card_member_ids")):
        pid = crm_owner[member_id]
        real = data.persons[pid]["id_card"]
        assert card[17] == check_char(card[:17]) and card != real
        differs = [i for i in range(18) if card[i] != real[i]]
        assert len(differs) == 2 and differs[0] in (14, 15, 16) and differs[1] == 17
        assert int(card[16]) % 2 == int(real[16]) % 2  # still the declared gender
        row = rows[member_id]
        assert row["身份证号"].upper() == card
        assert row["姓名"].strip(" \u3000").replace("\u3000", "") == data.persons[pid]["name"]
        assert normalize_phone(row["手机号"]) == data.persons[pid]["phone"].removeprefix("+86")
        # The same person's first registration, under an older member id, carries the real number.
        first = [r for key, r in rows.items() if crm_owner[key] == pid and key != member_id]
        assert len(first) <= 1 and all(r["身份证号"].upper() == real and r["会员编号"] < member_id for r in first)
        unkeyed = {r["person_id"] for r in data.truth if r["source"] == "crm_members" and not r["record_key"]}
        assert first or pid in unkeyed


def test_pos_orders_scan_member_cards(data: Data) -> None:
    owner = data.owner("pos_orders")
    members = {r["person_id"] for r in data.truth if r["source"] == "crm_members"}
    walkin = set(data.values("store_walkin_phones"))
    # The top-up orders that make the store numbers shared always scan a card, so leave them out.
    regular = [r for r in data.csv["pos_orders"] if normalize_phone(r["member_phone"]) not in walkin]
    member_orders = [r for r in regular if owner[r["order_id"]] in members]
    assert 0.52 < sum(bool(r["member_no"]) for r in member_orders) / len(member_orders) < 0.68
    assert not any(r["member_no"] for r in regular if owner[r["order_id"]] not in members)
    no_phone = [r for r in member_orders if normalize_phone(r["member_phone"]) in ("", PLACEHOLDER)]
    assert no_phone and any(r["member_no"] for r in no_phone)


def test_app_sessions_sign_in_with_member_id_or_phone(data: Data) -> None:
    tablet = {e["event_id"] for e in data.tablet_events()}
    events = [e for e in data.events["app_events"] if e["event_id"] not in tablet]
    signed_in = [e for e in events if "member_id" in e or "phone" in e]
    assert 0.86 < len(signed_in) / len(events) < 0.96
    # Every session starts with app_open and is signed in or not as a whole.
    owner = data.owner("app_events")
    opens: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        if event["event_type"] == "app_open":
            opens[owner[event["event_id"]]].append(event)
    # The first open forces a login; a person whose first open was cut off by a malformed line is left out.
    cut = {owner[event_id] for event_id in data.broken["app_events"]}
    firsts, later = [], []
    for pid, person_opens in opens.items():
        person_opens.sort(key=lambda e: e["event_time"])
        if pid not in cut:
            firsts.append(person_opens[0])
        later += person_opens[1:]
    assert len(firsts) > 600 and all("member_id" in e or "phone" in e for e in firsts)
    assert 0.80 < sum("member_id" in e or "phone" in e for e in later) / len(later) < 0.90
    # Members sign in with their member id, the others (about 40 % of app users) with their phone.
    assert 0.3 < sum("phone" in e for e in signed_in) / len(signed_in) < 0.5
    assert all(MOBILE.match(e["phone"]) for e in signed_in if "phone" in e)


def test_wechat_first_event_is_a_phone_login(data: Data) -> None:
    owner = data.owner("wechat_events")
    first: dict[str, dict] = {}
    for event in data.events["wechat_events"]:
        pid = owner[event["event_id"]]
        if pid not in first or event["ts"] < first[pid]["ts"]:
            first[pid] = event
    with_phone = [e for e in first.values() if e["event_type"] == "login" and e.get("phone")]
    assert 0.95 < len(with_phone) / len(first) < 0.99
    later = [e for e in data.events["wechat_events"] if e["event_id"] not in {f["event_id"] for f in first.values()}]
    assert 0.12 < sum("phone" in e for e in later) / len(later) < 0.18


def test_ecom_orders_mostly_carry_the_receiver_phone(data: Data) -> None:
    orders = data.csv["ecom_orders"]
    assert 0.955 < sum(bool(r["receiver_phone"]) for r in orders) / len(orders) < 0.985


def test_consent_subjects_are_identifiers_the_brand_collected(data: Data) -> None:
    owner, crm_owner = data.owner("consent_events"), data.owner("crm_members")
    wechat_owner = data.owner("wechat_events")
    crm_emails = defaultdict(set)  # the real addresses members registered with, not the test address
    for row in data.csv["crm_members"]:
        email = row["邮箱"].strip().lower()
        if row["会员编号"] and email and email != "test@test.com":
            crm_emails[crm_owner[row["会员编号"]]].add(email)
    used_openids = defaultdict(set)
    for event in data.events["wechat_events"]:
        used_openids[wechat_owner[event["event_id"]]].add(event["openid"])
    # A member whose CRM row lost its 会员编号 cannot be cross-checked.
    unkeyed = {r["person_id"] for r in data.truth if r["source"] == "crm_members" and not r["record_key"]}
    by_type: Counter[str] = Counter()
    for row in data.csv["consent_events"]:
        pid, value = owner[row["consent_id"]], row["subject_value"]
        by_type[row["subject_type"]] += 1
        if row["subject_type"] == "email":
            assert row["purpose"] == "marketing_email"
            # Only a member who gave the brand their real email address can be emailed.
            assert value.strip().lower() == data.persons[pid]["email"]
            assert value.strip().lower() in crm_emails[pid] or pid in unkeyed
        elif row["subject_type"] == "openid":
            # The consent dialog was shown in a mini-program the person really opened.
            assert value in used_openids[pid]
        else:
            assert normalize_phone(value) == data.persons[pid]["phone"].removeprefix("+86")
    assert min(by_type.values()) > 100


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
    device_keys = {"os", "idfa", "oaid", "android_id"}
    for event in data.events["app_events"]:
        assert ("idfa" in event) == (event["os"] == "ios") == ("android_id" not in event)
        keys = list(event)
        # The install id comes right after the device keys, then the signed-in account if any.
        devices = 1 + sum(key in device_keys for key in keys)
        assert keys[0] == "event_id" and set(keys[1:devices]) <= device_keys and keys[devices] == "anonymous_id"
        assert keys[devices + 1:] in (["event_type", "event_time"], ["member_id", "event_type", "event_time"],
                                      ["phone", "event_type", "event_time"])
        assert UUID.match(event["anonymous_id"])
    assert all(re.fullmatch(r"(M\d{8})?", r["member_no"]) for r in data.csv["pos_orders"])
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
