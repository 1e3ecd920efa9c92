"""Column-in, Column-out normalisers for the values channels deliver (phones, emails, ids, dates…).

Each returns null for a value it cannot standardise, never a guess; the silver stage
turns a null from a non-empty input into a quarantine reason or a quality flag.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

from cdp.conf.vocabulary import NORMALISER_NAMES

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space, as typed on Chinese keyboards.
_FULL_WIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
_HALF_WIDTH = "".join(chr(c) for c in range(0x21, 0x7F)) + " "

EMAIL_PATTERN = r"^[a-z0-9._%+\-]+@[a-z0-9\-]+(\.[a-z0-9\-]+)*\.[a-z]{2,}$"
ID_CARD_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CARD_CHECK_CHARS = "10X98765432"

TIMESTAMP_FORMATS = (
    "yyyy-MM-dd HH:mm:ss",
    "yyyy-MM-dd HH:mm:ss.SSS",
    "yyyy-MM-dd'T'HH:mm:ssXXX",
    "yyyy-MM-dd'T'HH:mm:ss",
    "yyyy/MM/dd HH:mm:ss",
    "yyyy/MM/dd HH:mm",
    "yyyy-MM-dd HH:mm",
    "yyyy-MM-dd",
)
DATE_FORMATS = ("yyyy-MM-dd", "yyyy/MM/dd", "yyyyMMdd", "yyyy.MM.dd")

_PROVINCE_FULL_NAMES = {
    "北京": "北京市", "上海": "上海市", "天津": "天津市", "重庆": "重庆市",
    "内蒙古": "内蒙古自治区", "广西": "广西壮族自治区", "西藏": "西藏自治区",
    "宁夏": "宁夏回族自治区", "新疆": "新疆维吾尔自治区",
    "香港": "香港特别行政区", "澳门": "澳门特别行政区",
}


def blank_to_null(col: Column) -> Column:
    """Trim and turn '' into null, so 'missing' has one representation."""
    trimmed = F.trim(col)
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def to_half_width(col: Column) -> Column:
    """Full-width letters, digits, punctuation and spaces to their ASCII forms."""
    return F.translate(col, _FULL_WIDTH, _HALF_WIDTH)


def normalise_text(col: Column) -> Column:
    return blank_to_null(to_half_width(col))


def normalise_lower(col: Column) -> Column:
    return F.lower(normalise_text(col))


def normalise_name(col: Column) -> Column:
    """Half-width, trimmed; Chinese names lose inner spaces ('王 小明' → '王小明')."""
    text = normalise_text(col)
    return F.when(text.rlike(r"[\u4e00-\u9fff]"), F.regexp_replace(text, r"\s+", "")).otherwise(
        F.regexp_replace(text, r"\s+", " ")
    )


def normalise_email(col: Column) -> Column:
    """Trim and lower-case; a value that fails the syntax check becomes null."""
    text = F.lower(normalise_text(col))
    return F.when(text.rlike(EMAIL_PATTERN), text)


def normalise_id_card(col: Column) -> Column:
    """18-digit 身份证 (GB 11643-1999) with a correct check character, upper-case X; else null.

    15-digit (pre-1999) numbers carry no check digit and cannot be verified: they become null.
    """
    text = F.upper(F.regexp_replace(normalise_text(col), r"\s", ""))
    weighted = sum(
        (F.substring(text, i + 1, 1).cast("int") * weight for i, weight in enumerate(ID_CARD_WEIGHTS)),
        F.lit(0),
    )
    expected = F.substring(F.lit(ID_CARD_CHECK_CHARS), (weighted % 11) + 1, 1)
    well_formed = text.rlike(r"^[1-9]\d{16}[\dX]$")
    return F.when(well_formed & (F.substring(text, 18, 1) == expected), text)


def normalise_timestamp(col: Column, formats: tuple[str, ...] = TIMESTAMP_FORMATS, timezone: str | None = None,
                        epoch: str | None = None) -> Column:
    """A timestamp: the first of `formats` that parses (default: the channels' shapes, and 13-digit
    epoch milliseconds), read in `timezone` (default: the session's) unless the text carries an
    offset; or seconds / milliseconds since 1970-01-01 UTC (`epoch`). Anything else: null."""
    text = normalise_text(col)
    if epoch is not None:
        number = F.when(text.rlike(r"^-?\d+$"), text.cast("long"))
        return F.timestamp_seconds(number) if epoch == "seconds" else F.timestamp_millis(number)
    if timezone is None:
        parsed = [F.try_to_timestamp(text, F.lit(fmt)) for fmt in formats]
    else:  # the wall-clock time of that zone: the zone's id is appended and parsed with the text
        zoned = F.concat(text, F.lit(f" {timezone}"))
        parsed = [F.try_to_timestamp(zoned, F.lit(f"{fmt} VV")) for fmt in formats]
    if formats is TIMESTAMP_FORMATS:
        parsed.insert(0, F.when(text.rlike(r"^\d{13}$"), F.timestamp_millis(text.cast("long"))))
    return F.coalesce(*parsed)


def normalise_date(col: Column, formats: tuple[str, ...] = DATE_FORMATS) -> Column:
    text = normalise_text(col)
    return F.coalesce(*[F.to_date(F.try_to_timestamp(text, F.lit(fmt))) for fmt in formats])


def normalise_amount(col: Column) -> Column:
    """Money as decimal(12,2): thousands separators, currency signs and words (¥ ￥ $ € RMB CNY 元)
    go; '12O.50' or 'abc' become null rather than a guess."""
    text = F.regexp_replace(F.upper(normalise_text(col)), r"[,¥￥$€£\s]|RMB|CNY|元", "")
    return F.when(text.rlike(r"^-?\d+(\.\d+)?$"), text.try_cast("decimal(12,2)"))


def normalise_province(col: Column) -> Column:
    """广东 / 广东省 → 广东省; municipalities and autonomous regions get their full names."""
    text = F.regexp_replace(normalise_text(col), r"\s", "")
    mapping = F.create_map(*[F.lit(x) for pair in _PROVINCE_FULL_NAMES.items() for x in pair])
    full = F.element_at(mapping, text)
    already_full = text.rlike("(省|市|自治区|特别行政区)$")
    return F.when(text.isNull(), None).when(already_full, text).otherwise(
        F.coalesce(full, F.concat(text, F.lit("省")))
    )


def _e164_cn_mobile(raw: str | None) -> str | None:
    import phonenumbers

    if raw is None:
        return None
    text = raw.strip()
    # IP-dial prefixes (17951, 12593, 17911) are dialled before the number to route it cheaply.
    digits = "".join(ch for ch in text if ch.isdigit())
    for prefix in ("17951", "12593", "17911"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            text = digits[len(prefix):]
            break
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != 86 or not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.number_type(number) not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def e164_cn_mobile_values(values: pd.Series) -> pd.Series:
    """phonenumbers over a batch, parsing each distinct value once."""
    distinct = {v: _e164_cn_mobile(v) for v in values.dropna().unique()}
    return pd.Series([distinct.get(v) if isinstance(v, str) else None for v in values], index=values.index, dtype=object)


# A pandas UDF because libphonenumber's rules (prefixes, lengths, number types) are not
# expressible with built-ins; batches of Arrow data keep the Python overhead small.
_e164_cn_mobile_udf = pandas_udf(e164_cn_mobile_values, StringType())


def normalise_cn_mobile(col: Column) -> Column:
    """CN mobile number to E.164 (+8613800138000) with phonenumbers; invalid → null."""
    return _e164_cn_mobile_udf(to_half_width(col))


NORMALISERS: dict[str, Callable[[Column], Column]] = {
    "trim": normalise_text,
    "lower": normalise_lower,
    "name": normalise_name,
    "email": normalise_email,
    "cn_mobile": normalise_cn_mobile,
    "id_card": normalise_id_card,
    "timestamp": normalise_timestamp,
    "date": normalise_date,
    "amount": normalise_amount,
    "province": normalise_province,
}
if tuple(NORMALISERS) != NORMALISER_NAMES:  # conf validates names against the vocabulary: keep them one list
    raise RuntimeError(f"cdp.cleanse.normalisers implements {list(NORMALISERS)}, but conf offers {list(NORMALISER_NAMES)}")
