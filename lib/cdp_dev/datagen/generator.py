"""Generate a deterministic multi-source synthetic Chinese retail customer dataset with its hidden ground truth."""

from __future__ import annotations

import csv
import json
import random
import shutil
import uuid
from bisect import bisect
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar
from urllib.parse import quote

from cdp_dev.datagen import vocab

SOURCES = ("crm_members", "pos_orders", "ecom_orders", "wechat_events", "app_events", "consent_events")

CRM_HEADER = ("会员编号", "姓名", "手机号", "邮箱", "身份证号", "性别", "出生日期", "省份", "城市", "注册时间")
POS_HEADER = (
    "order_id", "store_id", "store_name", "member_phone", "amount", "paid_at", "payment_method", "member_no",
)
ECOM_HEADER = (
    "order_no", "platform", "buyer_account", "receiver_name", "receiver_phone",
    "province", "city", "order_amount", "created_at", "status",
)
CONSENT_HEADER = (
    "consent_id", "subject_type", "subject_value", "purpose", "action", "channel", "occurred_at", "source_system",
)
TRUTH_HEADER = ("source", "record_key", "person_id")
PERSONS_HEADER = ("person_id", "name", "gender", "birth_date", "phone", "email", "id_card", "province", "city")

# Source name -> CSV header; None means JSON lines.
_LAYOUT: dict[str, tuple[str, ...] | None] = {
    "crm_members": CRM_HEADER,
    "pos_orders": POS_HEADER,
    "ecom_orders": ECOM_HEADER,
    "wechat_events": None,
    "app_events": None,
    "consent_events": CONSENT_HEADER,
}

TRAPS = (
    "placeholder_phone_orders", "empty_phone_orders", "bad_amount_orders", "test_email_members",
    "missing_member_id_rows", "typo_receiver_names", "zero_idfa_persons", "junk_android_id_persons",
    "malformed_json_lines", "store_walkin_phones", "shared_tablets", "family_shared_phones", "mistyped_id_cards",
    "household_phones", "name_variant_persons",
)

PLACEHOLDER_PHONE = "13800138000"
TEST_EMAIL = "test@test.com"
ZERO_IDFA = "00000000-0000-0000-0000-000000000000"
JUNK_ANDROID_ID = "9774d56d682e549c"

# Over-merge traps scale with the data but are all planted, at least once each, from this many persons up.
MIN_TRAP_PERSONS = 200
WALKIN_PHONE_RATE = 1 / 5_000  # per person
TABLET_RATE = 1 / 5_000  # per person
FAMILY_PHONE_RATE = 0.005  # pairs per CRM person
MISTYPED_ID_CARD_RATE = 0.003  # per CRM person
HOUSEHOLD_RATE = 0.01  # pairs per CRM person: one phone, no 身份证 anywhere, different name, birth date (and gender)
NAME_VARIANT_RATE = 0.02  # per e-commerce person: every order's receiver name is a variant of theirs
WALKIN_MIN_MEMBERS = 8
MEMBER_CARD_RATE = 0.60  # POS orders of a member on which the card is scanned
APP_LOGIN_RATE = 0.85  # later app sessions that are still logged in; the first one always is
ECOM_RECEIVER_PHONE_RATE = 0.97  # orders that carry the receiver's mobile (couriers need it)
WECHAT_PHONE_LOGIN_RATE = 0.97  # WeChat persons who authorise getPhoneNumber on their first visit

CHANNEL_RATES = {"crm": 0.60, "pos": 0.40, "ecom": 0.50, "wechat": 0.55, "app": 0.35}

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK_CHARS = "10X98765432"

DAY = 86_400
_EPOCH = date(1970, 1, 1)
_CST_OFFSET_MS = 8 * 3600 * 1000  # China has had no DST since 1991, so Asia/Shanghai is a fixed +08:00
_HOURS = tuple(range(24))
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(obj, ensure_ascii=False) builds on every call
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def _cum(weights: Iterable[float]) -> list[float]:
    return list(accumulate(weights))


_SURNAME_CUM = _cum(1 / (rank + 4) for rank in range(len(vocab.SURNAMES)))
_PROVINCE_CUM = _cum(p.weight for p in vocab.PROVINCES)
_DOMAIN_CUM = _cum(vocab.EMAIL_DOMAIN_WEIGHTS)
_PAYMENT_CUM = _cum(vocab.PAYMENT_WEIGHTS)
_ONLINE_CUM = _cum(vocab.ONLINE_HOUR_WEIGHTS)
_STORE_CUM = _cum(vocab.STORE_HOUR_WEIGHTS)
_WECHAT_EVENT_CUM = _cum(vocab.WECHAT_EVENT_WEIGHTS)
_APP_EVENT_CUM = _cum(vocab.APP_EVENT_WEIGHTS)


def _stores_by_city() -> dict[str, tuple[tuple[str, str, str], ...]]:
    grouped: dict[str, tuple[tuple[str, str, str], ...]] = {}
    for store in vocab.STORES:
        grouped[store[2]] = grouped.get(store[2], ()) + (store,)
    return grouped


_STORES_BY_CITY = _stores_by_city()

# The same number as people really type it into different systems.
_PHONE_FORMATS: tuple[Callable[[str], str], ...] = (
    lambda p: p,
    lambda p: f"+86 {p[:3]} {p[3:7]} {p[7:]}",
    lambda p: f"0086 {p}",
    lambda p: f"86-{p[:3]}-{p[3:7]}-{p[7:]}",
    lambda p: f"{p[:3]}-{p[3:7]}-{p[7:]}",
    lambda p: f"(+86){p}",
    lambda p: p.translate(_FULLWIDTH),
    lambda p: f"17951{p}",
)
_PHONE_FORMAT_CUM = _cum((72, 5, 3, 3, 7, 3, 3, 4))

_T = TypeVar("_T")

# (record_key, CSV row or JSON line, person_id)
_Record = tuple[str, list[str] | str, str]


@dataclass(frozen=True)
class GenerationSummary:
    persons: int
    seed: int
    out: Path
    rows: dict[str, int]

    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(slots=True)
class _Person:
    person_id: str
    name: str
    gender: str
    birth: date
    id_card: str
    phone: str
    email: str
    province: vocab.Province
    city: str
    crm: bool
    pos: bool
    ecom: bool
    wechat: bool
    app: bool
    member_id: str = ""
    email_on_file: bool = False  # a CRM row of theirs carries their real email (not the test address)
    openids: tuple[tuple[str, str], ...] = ()  # (appid, openid) of the mini-programs they used
    hidden: bool = False  # never shows a 身份证 (a household member: only the attributes tell them apart)
    variant: str = ""  # the spelling of their name on every e-commerce order (pinyin, full-width, 小-name)


@dataclass(slots=True)
class _Plan:
    """Over-merge traps chosen before any record is drawn; _crm_records adds the duplicate registrations."""

    family_phones: list[str]  # each now the phone of two persons
    shown: set[str]  # person_ids whose CRM rows always show phone and 身份证, so the conflict is visible
    mistyped: dict[str, str]  # person_id -> the 身份证 they typed wrongly when registering a second time
    walkin: dict[str, tuple[str, ...]]  # store_id -> the store's own mobile numbers
    tablets: list[tuple[str, str]]  # (android_id, anonymous_id) of in-store tablets
    second_registrations: list[tuple[str, str]] = field(default_factory=list)  # (member id, mistyped 身份证)
    households: list[tuple[str, str]] = field(default_factory=list)  # person ids sharing a phone, no 身份证
    household_phones: list[str] = field(default_factory=list)


class _Clock:
    """Draws moments as integer seconds of Asia/Shanghai wall-clock time since 1970-01-01 00:00."""

    def __init__(self, as_of: date) -> None:
        self.end = (as_of - _EPOCH).days * DAY  # exclusive upper bound: midnight starting as_of

    def activity(self, rng: random.Random) -> int:
        return self._at(rng, _recent_days_back(rng), _ONLINE_CUM)

    def in_store(self, rng: random.Random) -> int:
        return self._at(rng, _recent_days_back(rng), _STORE_CUM)

    def registration(self, rng: random.Random) -> int:
        return self._at(rng, _below(rng, 3 * 365), _ONLINE_CUM)

    def _at(self, rng: random.Random, days_back: int, hour_cum: list[float]) -> int:
        hour = _pick(rng, _HOURS, hour_cum)
        return self.end - (days_back + 1) * DAY + hour * 3600 + _below(rng, 3600)


def _recent_days_back(rng: random.Random) -> int:
    # Activity is concentrated in the last half year but spans the whole year.
    return _below(rng, 180) if rng.random() < 0.8 else 180 + _below(rng, 185)


@lru_cache(maxsize=None)
def _ymd(day: int) -> tuple[str, str, str]:
    d = _EPOCH + timedelta(days=day)
    return f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}"


def _split(seconds: int) -> tuple[str, str, str, str, str, str]:
    y, m, d = _ymd(seconds // DAY)
    rest = seconds % DAY
    return y, m, d, f"{rest // 3600:02d}", f"{rest // 60 % 60:02d}", f"{rest % 60:02d}"


def _fmt_dash(seconds: int) -> str:
    y, m, d, hh, mm, ss = _split(seconds)
    return f"{y}-{m}-{d} {hh}:{mm}:{ss}"


def _fmt_slash_minutes(seconds: int) -> str:
    y, m, d, hh, mm, _ = _split(seconds)
    return f"{y}/{m}/{d} {hh}:{mm}"


def _fmt_iso_cst(seconds: int) -> str:
    y, m, d, hh, mm, ss = _split(seconds)
    return f"{y}-{m}-{d}T{hh}:{mm}:{ss}+08:00"


def _fmt_millis(millis: int) -> str:
    return f"{_fmt_dash(millis // 1000)}.{millis % 1000:03d}"


def id_card_check_char(first17: str) -> str:
    """GB 11643-1999 check character for the first 17 digits of a 身份证 number."""
    return ID_CHECK_CHARS[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS)) % 11]


def _below(rng: random.Random, n: int) -> int:
    """Uniform integer in [0, n); several times faster than randrange, which dominates generation time."""
    return int(rng.random() * n)


def _choice(rng: random.Random, items: Sequence[_T]) -> _T:
    return items[_below(rng, len(items))]


def _pick(rng: random.Random, items: Sequence[_T], cum: Sequence[float]) -> _T:
    """Weighted choice; same draw as random.choices(k=1) without its per-call overhead."""
    return items[bisect(cum, rng.random() * cum[-1])]


def _unique(used: set[str], draw: Callable[[], str]) -> str:
    value = draw()
    while value in used:
        value = draw()
    used.add(value)
    return value


def _hex(rng: random.Random, width: int) -> str:
    return f"{rng.getrandbits(4 * width):0{width}x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@lru_cache(maxsize=None)
def _count_cum(low: int, high: int) -> tuple[tuple[int, ...], list[float]]:
    # Linearly decreasing odds: most customers are light users.
    values = tuple(range(low, high + 1))
    return values, _cum(high + 1 - v for v in values)


def _count(rng: random.Random, low: int, high: int) -> int:
    values, cum = _count_cum(low, high)
    return _pick(rng, values, cum)


def _messy_phone(rng: random.Random, phone: str) -> str:
    return _pick(rng, _PHONE_FORMATS, _PHONE_FORMAT_CUM)(phone)


def _messy_email(rng: random.Random, email: str) -> str:
    roll = rng.random()
    if roll < 0.06:
        return email.upper()
    if roll < 0.12:
        local, domain = email.split("@")
        return f"{local.capitalize()}@{domain.upper() if roll < 0.09 else domain}"
    if roll < 0.15:
        return f" {email} "
    return email


# ---------------------------------------------------------------- persons


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a non-leap target year
        return day.replace(year=day.year - years, day=28)


def _draw_birth(rng: random.Random, as_of: date) -> date:
    age = min(70, int(rng.triangular(18, 71, 32)))
    latest = _years_before(as_of, age)
    earliest = _years_before(as_of, age + 1) + timedelta(days=1)
    return earliest + timedelta(days=rng.randrange((latest - earliest).days + 1))


def _draw_id_card(rng: random.Random, area: str, birth: date, gender: str) -> str:
    parity = _choice(rng, "13579" if gender == "M" else "02468")
    sequence = f"{rng.randrange(100):02d}{parity}"
    if sequence == "000":  # never issued
        sequence = "002"
    body = f"{area}{birth:%Y%m%d}{sequence}"
    return body + id_card_check_char(body)


def _draw_phone(rng: random.Random) -> str:
    return f"{_choice(rng, vocab.MOBILE_PREFIXES)}{rng.randrange(100_000_000):08d}"


def _draw_email(rng: random.Random, surname: str, given: list[str], birth: date) -> str:
    first = "".join(given)
    initials = "".join(p[0] for p in given)
    local = _choice(rng, (
        surname + first, surname + first, first + surname, surname + initials,
        surname[0] + initials, f"{surname}.{first}", f"{surname}_{first}",
    ))
    digits = _choice(rng, (str(birth.year), f"{birth.year % 100:02d}", f"{birth:%m%d}", str(rng.randrange(10, 10_000))))
    domain = _pick(rng, vocab.EMAIL_DOMAINS, _DOMAIN_CUM)
    return f"{local}{digits}@{domain}"


def _make_person(rng: random.Random, index: int, as_of: date, used: dict[str, set[str]]) -> _Person:
    gender = "M" if rng.random() < 0.5 else "F"
    surname, surname_py = _pick(rng, vocab.SURNAMES, _SURNAME_CUM)
    pool = vocab.GIVEN_FOR[gender]
    given = [_choice(rng, pool) for _ in range(1 if rng.random() < 0.3 else 2)]
    birth = _draw_birth(rng, as_of)
    province = _pick(rng, vocab.PROVINCES, _PROVINCE_CUM)
    city = _choice(rng, province.cities)
    id_card = _unique(used["id_card"], lambda: _draw_id_card(rng, _choice(rng, city.area_codes), birth, gender))
    phone = _unique(used["phone"], lambda: _draw_phone(rng))
    email = ""
    if rng.random() < 0.7:
        pinyin = [py for _, py in given]
        email = _unique(used["email"], lambda: _draw_email(rng, surname_py, pinyin, birth))
    flags = {channel: rng.random() < rate for channel, rate in CHANNEL_RATES.items()}
    if not any(flags.values()):
        flags["ecom"] = True
    return _Person(
        person_id=f"P{index:07d}", name=surname + "".join(c for c, _ in given), gender=gender, birth=birth,
        id_card=id_card, phone=phone, email=email, province=province, city=city.name, **flags,
    )


def _make_persons(rng: random.Random, count: int, as_of: date) -> list[_Person]:
    # The placeholder is pre-reserved so no real customer ever owns the walk-in number.
    used: dict[str, set[str]] = {"id_card": set(), "phone": {PLACEHOLDER_PHONE}, "email": {TEST_EMAIL}}
    return [_make_person(rng, i, as_of, used) for i in range(1, count + 1)]


def _sequential_ids(rng: random.Random, prefix: str, width: int, count: int) -> list[str]:
    # Business keys grow with time, with gaps left by other stores/channels.
    number = rng.randrange(10 ** (width - 1), 3 * 10 ** (width - 1))
    ids = []
    for _ in range(count):
        number += 1 + _below(rng, 9)
        ids.append(f"{prefix}{number:0{width}d}")
    return ids


# ---------------------------------------------------------------- planted over-merge traps


def _trap_count(persons: int, base: int, rate: float) -> int:
    return max(1, round(base * rate)) if persons >= MIN_TRAP_PERSONS else 0


def _share_phones(pairs: Sequence[tuple[_Person, _Person]]) -> list[str]:
    shared = []
    for first, second in pairs:
        # The older one (think of a parent) has no phone of their own and gives the other's everywhere.
        younger, older = sorted((first, second), key=lambda p: p.birth, reverse=True)
        older.phone = younger.phone
        shared.append(younger.phone)
    return shared


def _mistype_id_card(rng: random.Random, id_card: str, used: set[str]) -> str:
    """One digit of the sequence code (positions 15-17) changed, check character recomputed: passes the checksum."""
    def draw() -> str:
        i = 14 + _below(rng, 3)
        # The gender digit keeps its parity so the number still agrees with the declared gender.
        digits = "0123456789" if i < 16 else "13579" if int(id_card[16]) % 2 else "02468"
        body = id_card[:i] + _choice(rng, digits.replace(id_card[i], "")) + id_card[i + 1:17]
        # Sequence 000 is never issued; returning a used number makes _unique draw again.
        return id_card if body[14:] == "000" else body + id_card_check_char(body)
    return _unique(used, draw)


def _walkin_phones(rng: random.Random, count: int, used: set[str]) -> dict[str, tuple[str, ...]]:
    # Never more than half the stores, so placeholder and empty phones stay at the others; big data gets
    # several numbers per store (one per till) instead.
    stores = rng.sample(vocab.STORES, min(count, len(vocab.STORES) // 2))
    phones: dict[str, tuple[str, ...]] = {}
    for k in range(count):
        store_id = stores[k % len(stores)][0]
        phones[store_id] = phones.get(store_id, ()) + (_unique(used, lambda: _draw_phone(rng)),)
    return phones


def _tablets(rng: random.Random, count: int) -> list[tuple[str, str]]:
    used: set[str] = {JUNK_ANDROID_ID}
    return [(_unique(used, lambda: _hex(rng, 16)), _uuid(rng)) for _ in range(count)]


def _plan_traps(rng: random.Random, persons: list[_Person], traps: dict[str, int]) -> _Plan:
    crm = [p for p in persons if p.crm]
    families = _trap_count(len(persons), len(crm), FAMILY_PHONE_RATE)
    mistyped = _trap_count(len(persons), len(crm), MISTYPED_ID_CARD_RATE)
    chosen = rng.sample(crm, min(2 * families + mistyped, len(crm)))
    pairs = list(zip(chosen[:2 * families:2], chosen[1:2 * families:2]))
    used_cards = {p.id_card for p in persons}
    used_phones = {p.phone for p in persons} | {PLACEHOLDER_PHONE}
    plan = _Plan(
        family_phones=_share_phones(pairs),
        shown={p.person_id for p in chosen},
        mistyped={p.person_id: _mistype_id_card(rng, p.id_card, used_cards) for p in chosen[2 * len(pairs):]},
        walkin=_walkin_phones(rng, _trap_count(len(persons), len(persons), WALKIN_PHONE_RATE), used_phones),
        tablets=_tablets(rng, _trap_count(len(persons), len(persons), TABLET_RATE)),
    )
    traps["store_walkin_phones"] = sum(len(phones) for phones in plan.walkin.values())
    traps["shared_tablets"] = len(plan.tablets)
    traps["family_shared_phones"] = len(plan.family_phones)
    traps["mistyped_id_cards"] = len(plan.mistyped)
    return plan


def _plan_households(rng: random.Random, persons: list[_Person], plan: _Plan, traps: dict[str, int]) -> None:
    """Households: two persons (one a CRM member, the other a member or an online buyer) share one phone and never show a 身份证, so
    only their names, birth dates and genders tell them apart; and people whose e-commerce orders
    spell their name another way. Drawn with a generator of their own, so every other record is
    what it was without them."""
    taken = plan.shown | set(plan.mistyped)
    crm = [p for p in persons if p.crm and p.person_id not in taken]
    others = [p for p in persons if p.person_id not in taken and (p.crm or p.ecom)]  # someone whose name shows
    count = min(_trap_count(len(persons), len(crm), HOUSEHOLD_RATE), len(crm) // 2)
    members: set[str] = set()
    for first in rng.sample(crm, count):
        if first.person_id in members:
            continue
        second = next((p for p in rng.sample(others, min(50, len(others)))
                       if p.person_id not in members and p.person_id != first.person_id
                       and abs(p.birth.year - first.birth.year) >= 15), None)
        if second is None:
            continue
        members |= {first.person_id, second.person_id}
        first.hidden = second.hidden = True
        plan.households.append((first.person_id, second.person_id))
    plan.household_phones = _share_phones([(a, b) for a, b in _pairs_of(persons, plan.households)])
    traps["household_phones"] = len(plan.household_phones)
    ecom = [p for p in persons if p.ecom and p.person_id not in members and p.person_id not in taken]
    for person in rng.sample(ecom, min(_trap_count(len(persons), len(ecom), NAME_VARIANT_RATE), len(ecom))):
        person.variant = _name_variant(rng, person.name)
    traps["name_variant_persons"] = sum(1 for p in persons if p.variant)


def _pairs_of(persons: list[_Person], ids: list[tuple[str, str]]) -> list[tuple[_Person, _Person]]:
    by_id = {p.person_id: p for p in persons}
    return [(by_id[a], by_id[b]) for a, b in ids]


_GIVEN_PINYIN = dict(vocab.MALE_GIVEN + vocab.FEMALE_GIVEN + vocab.NEUTRAL_GIVEN)


def _name_variant(rng: random.Random, name: str) -> str:
    """The same name written otherwise: its pinyin (Wang Fang), that in full-width letters, or a
    小-name keeping the surname (王小芳)."""
    surname, surname_py = max((s for s in vocab.SURNAMES if name.startswith(s[0])), key=lambda s: len(s[0]))
    given_py = "".join(_GIVEN_PINYIN[c] for c in name[len(surname):])
    latin = f"{surname_py.capitalize()} {given_py.capitalize()}"
    style = _choice(rng, ("pinyin", "full_width", "xiao"))
    if style == "pinyin":
        return latin
    if style == "full_width":
        return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) for c in latin)
    return surname + "小" + name[-1]


def _e164(phones: Iterable[str]) -> list[str]:
    return [f"+86{phone}" for phone in phones]


def _trap_values(plan: _Plan, traps: dict[str, int]) -> dict[str, list[str]]:
    """Every planted trap value; same-prefixed lists (tablets, mistyped 身份证) are index-aligned.
    A junk value is listed only when some record carries it."""
    walkin = sorted(phone for phones in plan.walkin.values() for phone in phones)
    family = sorted(plan.family_phones)
    placeholder = [PLACEHOLDER_PHONE] if traps["placeholder_phone_orders"] else []
    return {
        "placeholder_phones": placeholder,
        "placeholder_phones_e164": _e164(placeholder),
        "test_emails": [TEST_EMAIL] if traps["test_email_members"] else [],
        "zero_idfas": [ZERO_IDFA] if traps["zero_idfa_persons"] else [],
        "junk_android_ids": [JUNK_ANDROID_ID] if traps["junk_android_id_persons"] else [],
        "store_walkin_phones": walkin,
        "store_walkin_phones_e164": _e164(walkin),
        "shared_tablet_android_ids": [android_id for android_id, _ in plan.tablets],
        "shared_tablet_anonymous_ids": [anonymous_id for _, anonymous_id in plan.tablets],
        "family_shared_phones": family,
        "family_shared_phones_e164": _e164(family),
        "mistyped_id_cards": [id_card for _, id_card in plan.second_registrations],
        "mistyped_id_card_member_ids": [member_id for member_id, _ in plan.second_registrations],
        "household_phones_e164": _e164(sorted(plan.household_phones)),
        "household_person_pairs": [list(pair) for pair in plan.households],
    }


# ---------------------------------------------------------------- CRM


def _messy_name(rng: random.Random, name: str) -> str:
    roll = rng.random()
    if roll < 0.02:
        return f" {name}"
    if roll < 0.04:
        return f"{name} "
    if roll < 0.05:
        return f" {name} "
    if roll < 0.06:
        # Two-character names get padded to three in some forms: 张　伟.
        return f"{name[0]}\u3000{name[1:]}" if len(name) == 2 else f"{name}\u3000"
    return name


def _crm_email(rng: random.Random, person: _Person, traps: dict[str, int]) -> str:
    if rng.random() < 0.01:
        traps["test_email_members"] += 1
        return TEST_EMAIL
    return _messy_email(rng, person.email) if person.email else ""


def _crm_id_card(rng: random.Random, id_card: str, shown: bool, hidden: bool = False) -> str:
    roll = rng.random()
    if hidden:
        return ""
    if roll < 0.30:
        return id_card if shown else ""
    # Hand-typed numbers often carry a lowercase x check character.
    return id_card.lower() if roll < 0.35 else id_card


def _crm_gender(rng: random.Random, gender: str) -> str:
    style = _pick(rng, ({"M": "男", "F": "女"}, {"M": "M", "F": "F"}, {"M": "1", "F": "2"}), (60, 80, 100))
    return style[gender]


def _crm_birth(rng: random.Random, birth: date) -> str:
    return birth.strftime(_pick(rng, ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"), (80, 92, 100)))


def _crm_row(
    rng: random.Random, person: _Person, key: str, id_card: str, registered: int, shown: bool, traps: dict[str, int]
) -> list[str]:
    return [
        key,
        _messy_name(rng, person.name),
        # Members register by SMS code, so the number is always there, if not always typed the same way.
        _messy_phone(rng, person.phone),
        _crm_email(rng, person, traps),
        _crm_id_card(rng, id_card, shown, person.hidden),
        _crm_gender(rng, person.gender),
        _crm_birth(rng, person.birth),
        person.province.name if rng.random() < 0.75 else person.province.short,
        person.city,
        _fmt_dash(registered),
    ]


def _registrations(rng: random.Random, persons: list[_Person], clock: _Clock, plan: _Plan) -> list[tuple]:
    """(registered, person index, is second registration, person), oldest first."""
    entries = []
    for i, person in enumerate(persons):
        if not person.crm:
            continue
        registered = clock.registration(rng)
        if person.person_id in plan.mistyped:
            again = clock.registration(rng)
            registered, again = min(registered, again), max(registered, again)
            entries.append((again, i, True, person))
        entries.append((registered, i, False, person))
    entries.sort()
    return entries


def _crm_records(
    rng: random.Random, persons: list[_Person], clock: _Clock, plan: _Plan, traps: dict[str, int]
) -> list[_Record]:
    members = _registrations(rng, persons, clock, plan)
    records: list[_Record] = []
    for member_id, (registered, _, second, person) in zip(_sequential_ids(rng, "M", 8, len(members)), members):
        shown = person.person_id in plan.shown
        if second:
            # Registered again under a new member id, mistyping the 身份证 so the checksum still passes.
            id_card = plan.mistyped[person.person_id]
            plan.second_registrations.append((member_id, id_card))
            row = _crm_row(rng, person, member_id, id_card, registered, shown, traps)
            person.email_on_file |= row[3] not in ("", TEST_EMAIL)
            records.append((member_id, row, person.person_id))
            continue
        person.member_id = member_id
        key = member_id
        # A guard's trap must stay visible: its rows never lose their member id to this defect.
        if rng.random() < 0.005 and not shown:
            key = ""
            traps["missing_member_id_rows"] += 1
        row = _crm_row(rng, person, key, person.id_card, registered, shown, traps)
        person.email_on_file |= row[3] not in ("", TEST_EMAIL)
        records.append((key, row, person.person_id))
    return records


# ---------------------------------------------------------------- POS


def _draw_amount(rng: random.Random) -> str:
    cents = round(rng.lognormvariate(5.0, 0.9) * 100)
    ending = rng.random()
    # Shelf prices cluster on .00, .90 and .50.
    if ending < 0.4:
        cents = cents // 100 * 100
    elif ending < 0.6:
        cents = cents // 100 * 100 + 90
    elif ending < 0.7:
        cents = cents // 100 * 100 + 50
    cents = min(max(cents, 990), 300_000)
    return f"{cents // 100}.{cents % 100:02d}"


def _pos_amount(rng: random.Random, traps: dict[str, int]) -> str:
    amount = _draw_amount(rng)
    if rng.random() >= 0.005:
        return amount
    traps["bad_amount_orders"] += 1
    whole, cents = amount.split(".")
    return _choice(rng, (f"{whole[:-1]}O.{cents}", "abc", ""))


def _pos_phone(
    rng: random.Random, phone: str, store_phones: tuple[str, ...], traps: dict[str, int]
) -> tuple[str, str]:
    """(phone as keyed in, the store's own number when the cashier keyed that in instead)."""
    roll = rng.random()
    if roll >= 0.03:
        return _messy_phone(rng, phone), ""
    if store_phones:
        # The customer gave no number, so the cashier keys in the store's own mobile.
        own = _choice(rng, store_phones)
        return _messy_phone(rng, own), own
    if roll < 0.02:
        traps["placeholder_phone_orders"] += 1
        return _messy_phone(rng, PLACEHOLDER_PHONE), ""
    traps["empty_phone_orders"] += 1
    return "", ""


def _member_card(rng: random.Random, person: _Person) -> str:
    return person.member_id if person.member_id and rng.random() < MEMBER_CARD_RATE else ""


def _in_store_members(persons: list[_Person]) -> list[_Person]:
    return [p for p in persons if p.pos and p.member_id]


def _walkin_top_up(
    rng: random.Random, persons: list[_Person], clock: _Clock, plan: _Plan,
    carded: dict[str, set[str]], drafts: list[tuple], traps: dict[str, int],
) -> None:
    """Extra card-scanned orders until every store number is shared by WALKIN_MIN_MEMBERS members."""
    regulars = _in_store_members(persons)
    stores = {store[0]: store for store in vocab.STORES}
    for store_id, phones in plan.walkin.items():
        for phone in phones:
            members = carded[phone]
            while len(members) < min(WALKIN_MIN_MEMBERS, len(regulars)):
                person = _choice(rng, regulars)
                if person.person_id in members:
                    continue
                members.add(person.person_id)
                drafts.append((
                    clock.in_store(rng), len(drafts), person.person_id, stores[store_id], _messy_phone(rng, phone),
                    _pos_amount(rng, traps), _pick(rng, vocab.PAYMENT_METHODS, _PAYMENT_CUM), person.member_id,
                ))


def _pos_records(
    rng: random.Random, persons: list[_Person], clock: _Clock, plan: _Plan, traps: dict[str, int]
) -> list[_Record]:
    drafts: list[tuple] = []
    carded: dict[str, set[str]] = {phone: set() for phones in plan.walkin.values() for phone in phones}
    for person in persons:
        if not person.pos:
            continue
        home = _choice(rng, _STORES_BY_CITY.get(person.city, vocab.STORES))
        for _ in range(_count(rng, 1, 6)):
            store = home if rng.random() < 0.8 else _choice(rng, vocab.STORES)
            paid = clock.in_store(rng)
            phone, own = _pos_phone(rng, person.phone, plan.walkin.get(store[0], ()), traps)
            amount = _pos_amount(rng, traps)
            method = _pick(rng, vocab.PAYMENT_METHODS, _PAYMENT_CUM)
            card = _member_card(rng, person)
            if own and card:
                carded[own].add(person.person_id)
            drafts.append((paid, len(drafts), person.person_id, store, phone, amount, method, card))
    _walkin_top_up(rng, persons, clock, plan, carded, drafts, traps)
    drafts.sort()
    return [
        (order_id, [order_id, store[0], store[1], phone, amount, _fmt_slash_minutes(paid), method, card], person_id)
        for order_id, (paid, _, person_id, store, phone, amount, method, card)
        in zip(_sequential_ids(rng, "POS", 10, len(drafts)), drafts)
    ]


# ---------------------------------------------------------------- e-commerce


def _draw_account(rng: random.Random, platform: str) -> str:
    if platform == "tmall":
        return "tb_" + "".join(rng.choices(_ALNUM, k=rng.randint(8, 10)))
    return "jd_" + "".join(rng.choices(_ALNUM, k=12))


def _ecom_accounts(rng: random.Random, used: set[str]) -> tuple[tuple[str, str], ...]:
    roll = rng.random()
    platforms = ("tmall",) if roll < 0.5 else ("jd",) if roll < 0.8 else ("tmall", "jd")
    return tuple((p, _unique(used, lambda: _draw_account(rng, p))) for p in platforms)


def _typo(rng: random.Random, name: str) -> str:
    # Every given-name character has a homophone, so there is always a position to garble.
    i = _choice(rng, [i for i, c in enumerate(name) if c in vocab.HOMOPHONES])
    return name[:i] + _choice(rng, vocab.HOMOPHONES[name[i]]) + name[i + 1:]


def _ecom_status(rng: random.Random, age_days: int) -> str:
    if age_days < 2:
        return "PAID" if rng.random() < 0.6 else "SHIPPED"
    if age_days < 7:
        return _pick(rng, ("SHIPPED", "FINISHED", "REFUNDED"), (60, 90, 100))
    return "REFUNDED" if rng.random() < 0.08 else "FINISHED"


def _ecom_receiver(rng: random.Random, person: _Person, traps: dict[str, int]) -> tuple[str, str]:
    name = person.name
    if rng.random() < 0.05:
        typo = _typo(rng, name)
        if not person.variant:
            name = typo
            traps["typo_receiver_names"] += 1
    name = person.variant or name
    phone = _messy_phone(rng, person.phone) if rng.random() < ECOM_RECEIVER_PHONE_RATE else ""
    return name, phone


def _ecom_records(rng: random.Random, persons: list[_Person], clock: _Clock, traps: dict[str, int]) -> list[_Record]:
    used_accounts: set[str] = set()
    drafts = []
    for person in persons:
        if not person.ecom:
            continue
        accounts = _ecom_accounts(rng, used_accounts)
        for _ in range(_count(rng, 1, 8)):
            platform, account = _choice(rng, accounts)
            created = clock.activity(rng)
            name, phone = _ecom_receiver(rng, person, traps)
            # Each platform exports its own way: JD drops the 省 suffix.
            province = person.province.name if platform == "tmall" else person.province.short
            drafts.append((
                created, len(drafts), person.person_id, platform, account, name, phone, province, person.city,
                _draw_amount(rng), _ecom_status(rng, (clock.end - created) // DAY),
            ))
    drafts.sort()
    numbers = {"tmall": rng.randrange(10**11, 3 * 10**11), "jd": rng.randrange(3 * 10**11, 6 * 10**11)}
    records: list[_Record] = []
    for created, _, person_id, platform, account, name, phone, province, city, amount, status in drafts:
        numbers[platform] += 1 + _below(rng, 9)
        order_no = f"{'T' if platform == 'tmall' else 'J'}{numbers[platform]:012d}"
        row = [order_no, platform, account, name, phone, province, city, amount, _fmt_iso_cst(created), status]
        records.append((order_no, row, person_id))
    return records


# ---------------------------------------------------------------- event streams


def _sessions(rng: random.Random, clock: _Clock, count: int) -> list[list[int]]:
    """Split `count` events into short sessions; returns local wall-clock milliseconds."""
    limit = clock.end * 1000 - 1
    sessions: list[list[int]] = []
    remaining = count
    while remaining:
        size = min(remaining, 1 + _below(rng, 5))
        moment = clock.activity(rng) * 1000 + _below(rng, 1000)
        session = []
        for _ in range(size):
            session.append(min(moment, limit))
            moment += 3_000 + _below(rng, 237_000)
        sessions.append(session)
        remaining -= size
    return sessions


def _event_id(rng: random.Random, prefix: str, used: set[str]) -> str:
    return _unique(used, lambda: prefix + _hex(rng, 12))


_QUOTED_KEYWORDS = tuple(quote(keyword) for keyword in vocab.SEARCH_KEYWORDS)
_PAGE_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "{id}": lambda rng: str(100 + _below(rng, 9900)),
    "{aid}": lambda rng: str(1 + _below(rng, 60)),
    "{kw}": lambda rng: _choice(rng, _QUOTED_KEYWORDS),
}


def _wechat_page(rng: random.Random, event_type: str) -> str:
    template = _choice(rng, vocab.WECHAT_PAGES[event_type])
    for slot, fill in _PAGE_SLOTS.items():
        if slot in template:
            return template.replace(slot, fill(rng))
    return template


def _wechat_identities(rng: random.Random, used: set[str]) -> tuple[tuple[str, str], ...]:
    roll = rng.random()
    apps = vocab.WECHAT_APPS if roll < 0.15 else vocab.WECHAT_APPS[:1] if roll < 0.75 else vocab.WECHAT_APPS[1:]
    return tuple((appid, _unique(used, lambda: prefix + _b64(rng, 28 - len(prefix)))) for appid, prefix in apps)


def _b64(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_B64URL, k=length))


def _wechat_event(
    rng: random.Random, person: _Person, appid: str, openid: str, unionid: str,
    event_type: str, millis: int, used_ids: set[str], phone_login: bool,
) -> dict[str, object]:
    event = {"event_id": _event_id(rng, "wx_", used_ids), "appid": appid, "openid": openid}
    roll = rng.random()
    # unionid only comes back when the session was authorised through the open platform.
    if roll < 0.75:
        event["unionid"] = unionid
    elif roll < 0.875:
        event["unionid"] = None
    event["event_type"] = event_type
    event["page"] = _wechat_page(rng, event_type)
    event["ts"] = millis - _CST_OFFSET_MS
    # A phone login returns the number the user authorised through getPhoneNumber.
    if phone_login or rng.random() < 0.15:
        event["phone"] = person.phone if rng.random() < 0.7 else "+86" + person.phone
    return event


def _wechat_records(rng: random.Random, persons: list[_Person], clock: _Clock) -> list[_Record]:
    used_ids: set[str] = set()
    used_openids: set[str] = set()
    drafts = []
    for person in persons:
        if not person.wechat:
            continue
        openids = _wechat_identities(rng, used_openids)
        unionid = _unique(used_openids, lambda: "oU" + _b64(rng, 26))
        sessions = _sessions(rng, clock, _count(rng, 2, 15))
        first = min(range(len(sessions)), key=lambda k: sessions[k][0])
        authorised = rng.random() < WECHAT_PHONE_LOGIN_RATE
        used: dict[tuple[str, str], None] = {}
        for k, session in enumerate(sessions):
            appid, openid = _choice(rng, openids)
            used[(appid, openid)] = None
            for position, millis in enumerate(session):
                phone_login = authorised and k == first and position == 0
                event_type = (
                    "login" if phone_login
                    else _choice(rng, ("page_view", "login")) if position == 0
                    else _pick(rng, vocab.WECHAT_EVENT_TYPES, _WECHAT_EVENT_CUM)
                )
                event = _wechat_event(rng, person, appid, openid, unionid, event_type, millis, used_ids, phone_login)
                drafts.append((millis, len(drafts), event["event_id"], _JSON.encode(event), person.person_id))
        # Only a mini-program the person really opened can have shown them a consent dialog.
        person.openids = tuple(used)
    drafts.sort()
    return [(event_id, line, person_id) for _, _, event_id, line, person_id in drafts]


def _app_device(rng: random.Random, traps: dict[str, int]) -> dict[str, str]:
    if rng.random() < 0.45:
        if rng.random() < 0.15:
            traps["zero_idfa_persons"] += 1  # user denied App Tracking Transparency
            return {"os": "ios", "idfa": ZERO_IDFA}
        return {"os": "ios", "idfa": _uuid(rng).upper()}
    device = {"os": "android"}
    if rng.random() < 0.6:
        device["oaid"] = _uuid(rng) if rng.random() < 0.7 else _hex(rng, 16)
    if rng.random() < 0.03:
        traps["junk_android_id_persons"] += 1  # the famous Android 2.2 emulator/bug value shared by many devices
        device["android_id"] = JUNK_ANDROID_ID
    else:
        device["android_id"] = _hex(rng, 16)
    return device


def _truncate(rng: random.Random, line: str) -> str:
    # Cut after the event_id value so the defect row can still be traced, before the closing brace so it never parses.
    keep_from = line.index('"', len('{"event_id": "')) + 1
    return line[:rng.randrange(keep_from, len(line))]


def _tablet_drafts(
    rng: random.Random, regulars: list[_Person], clock: _Clock, tablet: tuple[str, str],
    used_ids: set[str], drafts: list[tuple],
) -> None:
    """Members log in one after another on an in-store tablet, each for one to three events."""
    android_id, anonymous_id = tablet
    device = {"os": "android", "android_id": android_id, "anonymous_id": anonymous_id}
    for person in rng.sample(regulars, min(rng.randint(10, 40), len(regulars))):
        # Stores close by 22:00, so even the last session ends before midnight.
        millis = clock.in_store(rng) * 1000 + _below(rng, 1000)
        for position in range(1 + _below(rng, 3)):
            event = {
                "event_id": _event_id(rng, "app_", used_ids), **device, "member_id": person.member_id,
                "event_type": "app_open" if position == 0 else _pick(rng, vocab.APP_EVENT_TYPES, _APP_EVENT_CUM),
                "event_time": _fmt_millis(millis),
            }
            drafts.append((millis, len(drafts), event["event_id"], _JSON.encode(event), person.person_id))
            millis += 3_000 + _below(rng, 237_000)


def _app_records(
    rng: random.Random, persons: list[_Person], clock: _Clock, plan: _Plan, traps: dict[str, int]
) -> list[_Record]:
    used_ids: set[str] = set()
    used_installs = {anonymous_id for _, anonymous_id in plan.tablets}
    drafts: list[tuple] = []
    for person in persons:
        if not person.app:
            continue
        device = _app_device(rng, traps)
        device["anonymous_id"] = _unique(used_installs, lambda: _uuid(rng))
        # Members sign in with their member account; everyone else registered by SMS code.
        account = {"member_id": person.member_id} if person.member_id else {"phone": person.phone}
        sessions = _sessions(rng, clock, _count(rng, 2, 15))
        # Chinese apps force a one-tap phone login on first open; later sessions may have timed out.
        first = min(range(len(sessions)), key=lambda k: sessions[k][0])
        for k, session in enumerate(sessions):
            login = account if k == first or rng.random() < APP_LOGIN_RATE else {}
            for position, millis in enumerate(session):
                event = {"event_id": _event_id(rng, "app_", used_ids), **device, **login}
                event["event_type"] = (
                    "app_open" if position == 0
                    else _pick(rng, vocab.APP_EVENT_TYPES, _APP_EVENT_CUM)
                )
                event["event_time"] = _fmt_millis(millis)
                line = _JSON.encode(event)
                if rng.random() < 0.002:
                    line = _truncate(rng, line)
                    traps["malformed_json_lines"] += 1
                drafts.append((millis, len(drafts), event["event_id"], line, person.person_id))
    regulars = _in_store_members(persons)
    for tablet in plan.tablets:
        _tablet_drafts(rng, regulars, clock, tablet, used_ids, drafts)
    drafts.sort()
    return [(event_id, line, person_id) for _, _, event_id, line, person_id in drafts]


# ---------------------------------------------------------------- consent

_SOURCE_SYSTEM = {"crm": "crm", "store": "crm", "wechat": "cmp", "app": "cmp"}


def _consent_subject(rng: random.Random, person: _Person, purpose: str, channel: str) -> tuple[str, str]:
    if purpose == "marketing_email":
        return "email", _messy_email(rng, person.email)
    # SMS consent is always keyed by the number it texts.
    if purpose != "marketing_sms" and channel == "wechat" and person.openids and rng.random() < 0.7:
        return "openid", _choice(rng, person.openids)[1]
    return "phone", _messy_phone(rng, person.phone)


def _consent_records(rng: random.Random, persons: list[_Person], clock: _Clock) -> list[_Record]:
    drafts = []
    for person in persons:
        if not (person.crm or person.wechat) or rng.random() >= 0.5:
            continue
        reachable = (("crm", person.crm), ("wechat", person.wechat), ("app", person.app), ("store", person.pos))
        channels = [channel for channel, on in reachable if on]
        # Only members who registered with their real email gave the brand an address to email.
        purposes = [p for p in vocab.CONSENT_PURPOSES if person.email_on_file or p != "marketing_email"]
        for purpose in rng.sample(purposes, rng.randint(1, 3)):
            channel = "wechat" if purpose == "marketing_wechat" and person.wechat else _choice(rng, channels)
            subject_type, subject_value = _consent_subject(rng, person, purpose, channel)
            granted = clock.activity(rng)
            common = (person.person_id, subject_type, subject_value, purpose)
            drafts.append((granted, len(drafts), *common, "grant", channel))
            # A third of grants are later withdrawn, which keeps grants near 75% of events.
            if rng.random() < 1 / 3 and clock.end - granted > DAY:
                withdrawn = granted + rng.randrange(3600, clock.end - granted)
                drafts.append((withdrawn, len(drafts), *common, "withdraw", channel))
    drafts.sort()
    records: list[_Record] = []
    for consent_id, (at, _, person_id, s_type, s_value, purpose, action, channel) in zip(
        _sequential_ids(rng, "C", 10, len(drafts)), drafts
    ):
        row = [consent_id, s_type, s_value, purpose, action, channel, _fmt_dash(at), _SOURCE_SYSTEM[channel]]
        records.append((consent_id, row, person_id))
    return records


# ---------------------------------------------------------------- output


def _write_source(landing: Path, source: str, records: list[_Record]) -> None:
    header = _LAYOUT[source]
    directory = landing / source
    directory.mkdir(parents=True)
    half = (len(records) + 1) // 2
    for part, chunk in enumerate((records[:half], records[half:]), start=1):
        path = directory / f"{source}_part-{part:04d}.{'csv' if header else 'jsonl'}"
        with path.open("w", encoding="utf-8", newline="") as handle:
            if header is None:
                handle.write("".join(f"{line}\n" for _, line, _ in chunk))
            else:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(row for _, row, _ in chunk)


def _write_csv(path: Path, header: tuple[str, ...], rows: Iterable[Sequence[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_truth(
    truth: Path, persons: list[_Person], records: dict[str, list[_Record]], manifest: dict[str, object]
) -> None:
    truth.mkdir(parents=True)
    _write_csv(
        truth / "records.csv", TRUTH_HEADER,
        ((source, key, person_id) for source, recs in records.items() for key, _, person_id in recs),
    )
    _write_csv(truth / "persons.csv", PERSONS_HEADER, (
        (p.person_id, p.name, p.gender, p.birth.isoformat(), f"+86{p.phone}", p.email, p.id_card,
         p.province.name, p.city)
        for p in persons
    ))
    (truth / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def generate(persons: int, seed: int, out: Path | str, as_of: date = date(2026, 11, 1)) -> GenerationSummary:
    """Write landing files for every source plus truth/ under `out`; same arguments give byte-identical files."""
    if persons < 1:
        raise ValueError(f"persons must be at least 1, got {persons}")
    out = Path(out)
    rng = random.Random(seed)
    clock = _Clock(as_of)
    people = _make_persons(rng, persons, as_of)
    traps = dict.fromkeys(TRAPS, 0)
    plan = _plan_traps(rng, people, traps)  # shares family phones before any record shows a phone
    _plan_households(random.Random(f"households-{seed}"), people, plan, traps)
    # Order matters: POS and app events reuse CRM member ids, consent reuses WeChat openids.
    records: dict[str, list[_Record]] = {}
    records["crm_members"] = _crm_records(rng, people, clock, plan, traps)
    records["pos_orders"] = _pos_records(rng, people, clock, plan, traps)
    records["ecom_orders"] = _ecom_records(rng, people, clock, traps)
    records["wechat_events"] = _wechat_records(rng, people, clock)
    records["app_events"] = _app_records(rng, people, clock, plan, traps)
    records["consent_events"] = _consent_records(rng, people, clock)

    for stale in (out / "landing", out / "truth"):
        if stale.exists():
            shutil.rmtree(stale)
    for source in SOURCES:
        _write_source(out / "landing", source, records[source])
    rows = {source: len(records[source]) for source in SOURCES}
    manifest = {
        "persons": persons, "seed": seed, "as_of": as_of.isoformat(), "rows": rows, "traps": traps,
        "trap_values": _trap_values(plan, traps),
        "name_variants": {p.person_id: p.variant for p in people if p.variant},
    }
    _write_truth(out / "truth", people, records, manifest)
    return GenerationSummary(persons=persons, seed=seed, out=out, rows=rows)
