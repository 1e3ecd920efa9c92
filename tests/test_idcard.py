"""身份证-derived birth date and gender, and conflicts with declared values, with explicit expected rows.

Numbers below are constructed with valid GB 11643-1999 check characters
("10X98765432"[sum(d_i * w_i) % 11], weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2).
"""

from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import functions as F

from cdp.cleanse.idcard import id_card_birth_date, id_card_conflicts, id_card_gender, with_id_card_checks

FEMALE_1949 = "11010519491231002X"   # born 1949-12-31, 17th digit 2 → F
MALE_1990 = "44030419900307123X"     # born 1990-03-07, 17th digit 3 → M
FEMALE_1990 = "440304199003071248"   # born 1990-03-07, 17th digit 4 → F
LEAP_2000 = "11010520000229003X"     # born 2000-02-29 (leap year), 17th digit 3 → M
FEB_30 = "310115199902300058"        # valid check digit, impossible date 1999-02-30
NOT_LEAP_1900 = "110105190002290041"  # valid check digit, 1900-02-29 does not exist
MONTH_13 = "110105199913010056"      # valid check digit, month 13
DAY_00 = "110105199901000061"        # valid check digit, day 00
BAD_CHECK = "110105194912310021"     # FEMALE_1949 with a wrong check character
FIFTEEN_DIGITS = "110105491231002"   # pre-1999 format: cannot be verified, nothing derived

DERIVED_SCHEMA = "i int, id_card string, birth_date date, gender string"


def test_birth_date_and_gender_from_valid_and_invalid_numbers(spark):
    inputs = [
        FEMALE_1949, "11010519491231002x", " 1101 0519 4912 3100 2X ", MALE_1990, FEMALE_1990, LEAP_2000,
        FEB_30, NOT_LEAP_1900, MONTH_13, DAY_00, BAD_CHECK, FIFTEEN_DIGITS, "", None,
    ]
    df = spark.createDataFrame(list(enumerate(inputs)), "i int, id_card string")
    actual = df.select(
        "i", "id_card",
        id_card_birth_date(F.col("id_card")).alias("birth_date"),
        id_card_gender(F.col("id_card")).alias("gender"),
    )
    expected = spark.createDataFrame(
        [
            (0, FEMALE_1949, dt.date(1949, 12, 31), "F"),
            (1, "11010519491231002x", dt.date(1949, 12, 31), "F"),       # lower-case x
            (2, " 1101 0519 4912 3100 2X ", dt.date(1949, 12, 31), "F"),  # spaced as printed
            (3, MALE_1990, dt.date(1990, 3, 7), "M"),
            (4, FEMALE_1990, dt.date(1990, 3, 7), "F"),
            (5, LEAP_2000, dt.date(2000, 2, 29), "M"),
            (6, FEB_30, None, "M"),         # check digit fine, date impossible: no date, gender still read
            (7, NOT_LEAP_1900, None, "F"),
            (8, MONTH_13, None, "M"),
            (9, DAY_00, None, "F"),
            (10, BAD_CHECK, None, None),
            (11, FIFTEEN_DIGITS, None, None),
            (12, "", None, None),
            (13, None, None, None),
        ],
        DERIVED_SCHEMA,
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_conflicts_between_id_card_and_declared_values(spark):
    rows = [
        (0, FEMALE_1949, dt.date(1949, 12, 31), "F"),  # both agree
        (1, FEMALE_1949, dt.date(1950, 1, 1), "F"),    # birth date differs
        (2, FEMALE_1949, dt.date(1949, 12, 31), "M"),  # gender differs
        (3, MALE_1990, dt.date(1991, 3, 7), "F"),      # both differ
        (4, MALE_1990, None, None),                   # nothing declared
        (5, MALE_1990, None, "F"),                    # only gender declared, differs
        (6, MALE_1990, dt.date(1990, 7, 3), None),     # only birth date declared (day/month swapped)
        (7, None, dt.date(1990, 3, 7), "M"),           # no 身份证
        (8, FEB_30, dt.date(1999, 3, 2), "F"),         # no derivable date; gender M differs
        (9, BAD_CHECK, dt.date(2000, 1, 1), "M"),      # invalid number: nothing to compare
        (10, FIFTEEN_DIGITS, dt.date(2000, 1, 1), "M"),
    ]
    df = spark.createDataFrame(rows, DERIVED_SCHEMA)
    actual = df.select(
        "i", id_card_conflicts(F.col("id_card"), F.col("birth_date"), F.col("gender")).alias("conflicts")
    )
    expected = spark.createDataFrame(
        [
            (0, []),
            (1, ["birth_date_conflict"]),
            (2, ["gender_conflict"]),
            (3, ["birth_date_conflict", "gender_conflict"]),
            (4, []),
            (5, ["gender_conflict"]),
            (6, ["birth_date_conflict"]),
            (7, []),
            (8, ["gender_conflict"]),
            (9, []),
            (10, []),
        ],
        "i int, conflicts array<string>",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_conflicts_is_never_null(spark):
    df = spark.createDataFrame([(None, None, None)], "id_card string, birth_date date, gender string")
    row = df.select(id_card_conflicts(F.col("id_card"), F.col("birth_date"), F.col("gender")).alias("c")).first()
    assert row["c"] == []


def test_with_id_card_checks_transform_with_default_and_custom_fields(spark):
    df = spark.createDataFrame(
        [
            (0, FEMALE_1949, dt.date(1949, 12, 31), "F"),
            (1, MALE_1990, dt.date(1990, 3, 8), "F"),
            (2, None, dt.date(1990, 3, 8), "M"),
        ],
        DERIVED_SCHEMA,
    )
    expected = spark.createDataFrame(
        [
            (0, FEMALE_1949, dt.date(1949, 12, 31), "F", dt.date(1949, 12, 31), "F", []),
            (1, MALE_1990, dt.date(1990, 3, 8), "F", dt.date(1990, 3, 7), "M", ["birth_date_conflict", "gender_conflict"]),
            (2, None, dt.date(1990, 3, 8), "M", None, None, []),
        ],
        DERIVED_SCHEMA + ", id_card_birth_date date, id_card_gender string, id_card_conflicts array<string>",
    )
    assert_df_equality(df.transform(with_id_card_checks()), expected, ignore_nullable=True)

    renamed = df.toDF("i", "sfz", "dob", "sex")
    custom = renamed.transform(with_id_card_checks(id_card_field="sfz", birth_date_field="dob", gender_field="sex"))
    assert_df_equality(custom, expected.toDF(*renamed.columns, *expected.columns[4:]), ignore_nullable=True)
