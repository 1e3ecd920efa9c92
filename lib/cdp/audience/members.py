"""Materialise audiences: a rule over profile and tags, then the consent filter for its purpose."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp.config import Audience
from cdp.privacy.consent import allowed_for


def audience_members(name: str, audience: Audience, people: DataFrame, state: DataFrame, default: str) -> DataFrame:
    """(audience, one_id, purpose, computed_at) for persons matching the rule and consenting to the purpose."""
    selected = people.where(F.expr(audience.condition)).select("one_id")
    return selected.transform(allowed_for(audience.purpose, default, state)).select(
        F.lit(name).alias("audience"), "one_id", F.lit(audience.purpose).alias("purpose"),
        F.current_timestamp().alias("computed_at"),
    )
