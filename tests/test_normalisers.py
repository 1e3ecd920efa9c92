"""Each normaliser against the variants real channel exports deliver, with explicit expected values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp.cleanse import normalisers as N


def normalised(spark, normaliser, values, spark_type="string"):
    """[(input, output)] for each input value, in input order."""
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, raw string")
    rows = df.select("i", "raw", normaliser(F.col("raw")).cast(spark_type).alias("out")).orderBy("i").collect()
    return [(r["raw"], r["out"]) for r in rows]


def test_cn_mobile_variants_to_e164(spark):
    values = [
        "13800138000", "+86 138 0013 8000", "0086 13912345678", "86-139-1234-5678", "139-1234-5678",
        "(+86)13912345678", "１３９１２３４５６７８", "1795113912345678", " 139 1234 5678 ",
        "1391234567", "23912345678", "010-12345678", "abc", "", None, "+1 650 253 0000",
    ]
    assert normalised(spark, N.normalise_cn_mobile, values) == [
        ("13800138000", "+8613800138000"),  # valid for libphonenumber: blocklists catch it later
        ("+86 138 0013 8000", "+8613800138000"),
        ("0086 13912345678", "+8613912345678"),
        ("86-139-1234-5678", "+8613912345678"),
        ("139-1234-5678", "+8613912345678"),
        ("(+86)13912345678", "+8613912345678"),
        ("１３９１２３４５６７８", "+8613912345678"),
        ("1795113912345678", "+8613912345678"),
        (" 139 1234 5678 ", "+8613912345678"),
        ("1391234567", None),      # ten digits
        ("23912345678", None),     # not a mobile prefix
        ("010-12345678", None),    # a Beijing landline is not a mobile
        ("abc", None),
        ("", None),
        (None, None),
        ("+1 650 253 0000", None),  # not a Chinese number
    ]


def test_email_trimmed_lowercased_and_checked(spark):
    values = ["  Zhang.Wei@QQ.com ", "ＬＩ＠163.COM", "wang@163", "no-at-sign.com", "a b@qq.com", "", None]
    assert normalised(spark, N.normalise_email, values) == [
        ("  Zhang.Wei@QQ.com ", "zhang.wei@qq.com"),
        ("ＬＩ＠163.COM", "li@163.com"),
        ("wang@163", None),
        ("no-at-sign.com", None),
        ("a b@qq.com", None),
        ("", None),
        (None, None),
    ]


def test_id_card_check_digit(spark):
    values = ["11010519491231002X", "11010519491231002x", " 110105194912310021 ", "110105491231002", "11010519491231002", None]
    assert normalised(spark, N.normalise_id_card, values) == [
        ("11010519491231002X", "11010519491231002X"),
        ("11010519491231002x", "11010519491231002X"),
        (" 110105194912310021 ", None),  # wrong check character
        ("110105491231002", None),       # 15-digit: no check digit to verify
        ("11010519491231002", None),
        (None, None),
    ]


def test_timestamps_in_channel_formats(spark):
    # Rendered in the session time zone (Asia/Shanghai, from conf): China wall-clock values read back unchanged.
    values = [
        "2026-03-01 12:34:56", "2026/03/01 12:34", "2026-03-01T12:34:56+08:00", "2026-03-01T04:34:56Z",
        "1772339696000", "2026-03-01 12:34:56.789", "yesterday", None,
    ]
    as_text = lambda c: F.date_format(N.normalise_timestamp(c), "yyyy-MM-dd HH:mm:ss.SSS")  # noqa: E731
    assert [o for _, o in normalised(spark, as_text, values)] == [
        "2026-03-01 12:34:56.000",
        "2026-03-01 12:34:00.000",
        "2026-03-01 12:34:56.000",
        "2026-03-01 12:34:56.000",
        "2026-03-01 12:34:56.000",
        "2026-03-01 12:34:56.789",
        None,
        None,
    ]


def test_timestamps_in_declared_formats_zones_and_epochs(spark):
    """What a source may declare per field (sources.yaml: formats, timezone, epoch)."""
    def shown(**declared):
        return lambda c: F.date_format(N.normalise_timestamp(c, **declared), "yyyy-MM-dd HH:mm")

    values = ["03/11/2026 09:05", "2026-11-03 09:05", None]
    assert [o for _, o in normalised(spark, shown(formats=("dd/MM/yyyy HH:mm",)), values)] == [
        "2026-11-03 09:05", None, None]
    assert [o for _, o in normalised(spark, shown(formats=("dd/MM/yyyy HH:mm",), timezone="Europe/London"), values)] == [
        "2026-11-03 17:05", None, None]  # 09:05 in London (GMT in November) is 17:05 in Shanghai
    assert [o for _, o in normalised(spark, shown(epoch="seconds"), ["1793671500", "soon", None])] == [
        "2026-11-03 10:05", None, None]  # 02:05 UTC
    assert [o for _, o in normalised(spark, shown(epoch="milliseconds"), ["1793671500000", "soon"])] == [
        "2026-11-03 10:05", None]


def test_dates(spark):
    values = ["1990-05-17", "1990/05/17", "19900517", "1990.05.17", "17/05/1990", None]
    got = [o for _, o in normalised(spark, N.normalise_date, values, "date")]
    assert got == [dt.date(1990, 5, 17)] * 4 + [None, None]


def test_amounts(spark):
    values = ["128.50", "1,280.00", "¥99", " 12 ", "12O.50", "abc", "", None, "￥1,299.00", "RMB 1,299", "1299元", "$12.5"]
    got = [o for _, o in normalised(spark, N.normalise_amount, values, "decimal(12,2)")]
    assert got == [Decimal("128.50"), Decimal("1280.00"), Decimal("99.00"), Decimal("12.00"), None, None, None, None,
                   Decimal("1299.00"), Decimal("1299.00"), Decimal("1299.00"), Decimal("12.50")]


def test_province_full_names(spark):
    values = ["广东", "广东省", "上海", "上海市", "广西", "内蒙古自治区", " 浙江 ", None]
    got = [o for _, o in normalised(spark, N.normalise_province, values)]
    assert got == ["广东省", "广东省", "上海市", "上海市", "广西壮族自治区", "内蒙古自治区", "浙江省", None]


def test_names(spark):
    values = ["  王 小明 ", "王\u3000小明", "Ｌｉ  Ｌｅｉ", "", None]
    got = [o for _, o in normalised(spark, N.normalise_name, values)]
    assert got == ["王小明", "王小明", "Li Lei", None, None]


def test_e164_batch_parses_each_distinct_value_once():
    import pandas as pd

    series = pd.Series(["13912345678", None, "13912345678", "bad"])
    assert N.e164_cn_mobile_values(series).tolist() == ["+8613912345678", None, "+8613912345678", None]


@pytest.mark.parametrize("normaliser", sorted(N.NORMALISERS))
def test_every_normaliser_keeps_null_as_null(spark, normaliser):
    df = spark.createDataFrame([(None,)], "raw string")
    result = df.select(N.NORMALISERS[normaliser](F.col("raw")).alias("out"))
    assert_df_equality(result.select(F.col("out").isNull().alias("is_null")),
                       spark.createDataFrame([(True,)], "is_null boolean"), ignore_nullable=True)
