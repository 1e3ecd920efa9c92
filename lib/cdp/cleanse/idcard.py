"""Birth date and gender derived from a 身份证, and their conflicts with what the customer declared.

Every function first runs its input through ``normalise_id_card``, so raw or already
normalised values both work, and only an 18-character number with a valid GB 11643-1999
check character yields anything. Documented decision: 15-digit (pre-1999) numbers are not
accepted as identifiers because they carry no check digit and cannot be verified
(``normalise_id_card`` returns null for them), so nothing is derived from them.
Built-in Spark functions only, null-safe under ANSI mode.
"""

from __future__ import annotations

from typing import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cdp.cleanse.normalisers import normalise_id_card

BIRTH_DATE_CONFLICT = "birth_date_conflict"
GENDER_CONFLICT = "gender_conflict"


def id_card_birth_date(id_card: Column) -> Column:
    """The birth date in digits 7–14 of a valid 身份证 as a date; null if invalid or not a real calendar date."""
    digits = F.substring(normalise_id_card(id_card), 7, 8)
    return F.try_to_date(digits, "yyyyMMdd")


def id_card_gender(id_card: Column) -> Column:
    """'M' when the 17th digit of a valid 身份证 is odd, 'F' when even; null if invalid."""
    digit = F.substring(normalise_id_card(id_card), 17, 1).try_cast("int")
    return F.when(digit % 2 == 1, F.lit("M")).when(digit % 2 == 0, F.lit("F"))


def id_card_conflicts(id_card: Column, declared_birth_date: Column, declared_gender: Column) -> Column:
    """Array of conflict codes between the 身份证 and the declared birth date / gender; empty, never null."""
    derived_birth_date = id_card_birth_date(id_card)
    derived_gender = id_card_gender(id_card)
    birth_date_conflict = F.when(
        derived_birth_date.isNotNull() & declared_birth_date.isNotNull() & (derived_birth_date != declared_birth_date),
        F.lit(BIRTH_DATE_CONFLICT),
    )
    gender_conflict = F.when(
        derived_gender.isNotNull() & declared_gender.isNotNull() & (derived_gender != declared_gender),
        F.lit(GENDER_CONFLICT),
    )
    return F.array_compact(F.array(birth_date_conflict, gender_conflict))


def with_id_card_checks(
    id_card_field: str = "id_card",
    birth_date_field: str | None = "birth_date",
    gender_field: str | None = "gender",
) -> Callable[[DataFrame], DataFrame]:
    """A ``df.transform`` step adding id_card_birth_date, id_card_gender and id_card_conflicts (with
    the declared birth date and gender, where the entity has them)."""

    def transform(df: DataFrame) -> DataFrame:
        id_card = F.col(id_card_field)
        none = F.lit(None)
        declared_birth = F.col(birth_date_field) if birth_date_field else none.cast("date")
        declared_gender = F.col(gender_field) if gender_field else none.cast("string")
        return df.withColumns(
            {
                "id_card_birth_date": id_card_birth_date(id_card),
                "id_card_gender": id_card_gender(id_card),
                "id_card_conflicts": id_card_conflicts(id_card, declared_birth, declared_gender),
            }
        )

    return transform
