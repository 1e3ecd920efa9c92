"""The built-in tags: gender, buyer, repeat buyer, high value (top share by spend), activity, channels."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

TAG_VERSION = 1

# code -> (name_zh, name_en, kind); boolean tags are stored only for persons who have them.
TAGS = {
    "gender": ("性别", "Gender", "value"),
    "buyer": ("已购客户", "Has purchased", "boolean"),
    "repeat_buyer": ("复购客户", "Repeat buyer", "boolean"),
    "high_value": ("高价值客户", "High value (top spend share)", "boolean"),
    "active_recent": ("近期活跃", "Active within the window", "boolean"),
    "wechat_user": ("微信用户", "Uses the WeChat mini-program", "boolean"),
    "app_user": ("APP用户", "Uses the app", "boolean"),
}


def high_value_threshold(profile: DataFrame, share: float):
    """The spend at the top `share` of buyers (approximate percentile; None when nobody bought)."""
    row = profile.where(F.col("order_count") > 0).agg(
        F.percentile_approx("total_spend", 1.0 - share, 10000).alias("threshold")
    ).collect()[0]
    return row["threshold"]


def tag_columns(profile: DataFrame, *, as_of: date, active_days: int, high_value_share: float) -> DataFrame:
    """One row per one_id with a `tag_<code>` column per tag (booleans false when absent)."""
    threshold = high_value_threshold(profile, high_value_share)
    window_start = F.date_sub(F.lit(as_of), active_days - 1)
    high_value = (F.col("order_count") > 0) & (F.col("total_spend") >= F.lit(threshold)) if threshold is not None else F.lit(False)
    channels = F.coalesce(F.col("channels"), F.array().cast("array<string>"))
    return profile.select(
        "one_id",
        F.col("gender").alias("tag_gender"),
        (F.col("order_count") >= 1).alias("tag_buyer"),
        (F.col("order_count") >= 2).alias("tag_repeat_buyer"),
        high_value.alias("tag_high_value"),
        F.coalesce(F.to_date("last_active_at") >= window_start, F.lit(False)).alias("tag_active_recent"),
        F.array_contains(channels, "wechat").alias("tag_wechat_user"),
        F.array_contains(channels, "app").alias("tag_app_user"),
    )


def to_long(wide: DataFrame) -> DataFrame:
    """(one_id, tag_code, value, computed_at, tag_version): a row for each tag a person has."""
    entries = []
    for code, (_, _, kind) in TAGS.items():
        column = F.col(f"tag_{code}")
        value = column.cast("string") if kind == "value" else F.when(column, F.lit("true"))
        entries.append(F.struct(F.lit(code).alias("tag_code"), value.alias("value")))
    return (
        wide.select("one_id", F.explode(F.array(*entries)).alias("t"))
        .where(F.col("t.value").isNotNull())
        .select(
            "one_id", "t.tag_code", "t.value",
            F.current_timestamp().alias("computed_at"), F.lit(TAG_VERSION).alias("tag_version"),
        )
    )
