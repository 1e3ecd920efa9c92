"""The gold stage: profile, tags, consent state and consent-filtered audiences, read by analysts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.audience.members import audience_members
from cdp.cleanse.entities import ENTITIES
from cdp.cleanse.silver import silver_table
from cdp.config import Settings
from cdp.identity.mapping import IDENTITY_MAP, build_identity_map
from cdp.identity.stage import ONEID_MAP
from cdp.lakehouse import overwrite_table, table_exists
from cdp.privacy.consent import consent_state
from cdp.profile.golden import build_customer_profile
from cdp.tags.builtin import tag_columns, to_long

PROFILE = "gold.customer_profile"
TAGS = "gold.customer_tags"
CONSENT = "gold.consent_state"
AUDIENCES = "gold.audience_members"


@dataclass
class GoldResult:
    profiles: int
    tag_rows: int
    consent_rows: int
    audience_sizes: dict[str, int]


def build_gold(spark: SparkSession, settings: Settings, as_of: date) -> GoldResult:
    config = settings.gold
    overwrite_table(build_customer_profile(spark, settings), PROFILE, "One row per one_id: the golden record and 360 view")
    profile = spark.table(PROFILE)
    overwrite_table(build_identity_map(spark, settings), IDENTITY_MAP,
                    "Each one_id's identifiers (主账号-子账号 mapping): first/last seen, sources; sensitive values hashed")

    wide = tag_columns(
        profile, as_of=as_of, active_days=config.active_days, high_value_share=config.high_value_share
    ).persist()
    overwrite_table(to_long(wide), TAGS, f"Tags per one_id, as of {as_of.isoformat()}")

    consent_table = silver_table(ENTITIES["consent_events"])
    if table_exists(spark, consent_table):
        state = consent_state(spark.table(consent_table), spark.table(ONEID_MAP))
    else:
        state = spark.createDataFrame([], "one_id string, purpose string, status string, updated_at timestamp, source string, record_key string")
    overwrite_table(state, CONSENT, "Consent per one_id and purpose: the latest event wins, withdrawal on ties")
    state = spark.table(CONSENT)

    people = profile.join(wide, "one_id")
    frames = [
        audience_members(name, audience, people, state, config.purposes[audience.purpose])
        for name, audience in config.audiences.items()
    ]
    if frames:
        members = reduce(DataFrame.unionByName, frames)
        overwrite_table(members, AUDIENCES, "Audience members, consent-filtered for each audience's purpose")
    wide.unpersist()

    sizes = {
        r["audience"]: r["n"]
        for r in spark.table(AUDIENCES).groupBy("audience").agg(F.count("*").alias("n")).collect()
    } if frames else {}
    return GoldResult(
        profiles=spark.table(PROFILE).count(),
        tag_rows=spark.table(TAGS).count(),
        consent_rows=spark.table(CONSENT).count(),
        audience_sizes={name: sizes.get(name, 0) for name in config.audiences},
    )
