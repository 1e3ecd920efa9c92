"""Select audiences: the rule over profile and tags, then the consent filter for the audience's purpose."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp.conf.audiences import compile_rule
from cdp.conf.audiences import Audience
from cdp.privacy.consent import allowed_for
from cdp.conf.tags import TagLibrary


def audience_frame(profile: DataFrame, tags: DataFrame, run_date: date) -> DataFrame:
    """(one_id, run_date, profile struct, tag struct): what an audience rule reads; persons without a
    tag row get tags as if they had none."""
    profile_struct = F.struct(*[c for c in profile.columns if c != "one_id"]).alias("profile")
    tag_struct = F.struct(*[c for c in tags.columns if c != "one_id"]).alias("tag")
    return profile.select("one_id", profile_struct).join(tags.select("one_id", tag_struct), "one_id", "left").select(
        "one_id", F.lit(run_date).cast("date").alias("run_date"), "profile", "tag"
    )


@dataclass(frozen=True)
class Selection:
    condition: str
    matched: DataFrame  # the frame's rows the rule selects
    members: DataFrame  # of those, the persons whose consent allows the purpose


def select_audience(frame: DataFrame, audience: Audience, library: TagLibrary, state: DataFrame,
                    default: str) -> Selection:
    condition = compile_rule(audience.rule, library)
    matched = frame.where(F.coalesce(F.expr(condition), F.lit(False)))
    return Selection(condition, matched, matched.transform(allowed_for(audience.purpose, default, state)))
