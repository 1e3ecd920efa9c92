"""The words every conf file may use and the syntax checks that need no Spark: normaliser names,
the unmapped-code policies, Java datetime patterns and SQL conditions."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator

# The value normalisers silver offers (cdp.cleanse.normalisers implements each, and checks at import
# that it implements exactly these).
NORMALISER_NAMES = ("trim", "lower", "name", "email", "cn_mobile", "id_card", "timestamp", "date", "amount",
                    "province")
Unmapped = Literal["quarantine", "null", "keep"]

# Pattern letters Spark's datetime parser accepts (docs: "Datetime Patterns"); others are refused there.
_DATETIME_LETTERS = set("GyMLdDQqEFaHhKkmsSnNVzOXxZ")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def known_normaliser(value: str) -> str:
    if value not in NORMALISER_NAMES:
        raise ValueError(f"unknown normaliser '{value}'; choose one of {sorted(NORMALISER_NAMES)}")
    return value


NormaliserName = Annotated[str, AfterValidator(known_normaliser)]


def check_datetime_pattern(pattern: str) -> str:
    """A Java/Spark datetime pattern (dd/MM/yyyy HH:mm), or ValueError naming the letter it cannot use."""
    if pattern.count("'") % 2:
        raise ValueError(f"format '{pattern}' has an unclosed quote")
    unquoted = re.sub(r"'[^']*'", "", pattern)
    bad = sorted({c for c in unquoted if c.isalpha() and c not in _DATETIME_LETTERS})
    if bad:
        raise ValueError(f"format '{pattern}' uses {bad}, which are no datetime pattern letters "
                         "(yyyy MM dd HH mm ss SSS XXX …: see docs/configuration.md)")
    if not any(c in unquoted for c in "yMdHhms"):
        raise ValueError(f"format '{pattern}' reads no date or time")
    return pattern


def check_condition(condition: str) -> str:
    """A SQL condition's outline: non-empty, quotes closed, parentheses balanced. Spark analyses it
    against the delivered columns when silver starts, before anything is written."""
    text = condition.strip()
    if not text:
        raise ValueError("an empty condition")
    bare = _QUOTED.sub("''", text)
    if bare.count("'") % 2 or bare.count('"') % 2:
        raise ValueError(f"condition '{condition}' has an unclosed quote")
    depth = 0
    for char in bare:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise ValueError(f"condition '{condition}' has unbalanced parentheses")
    return condition
