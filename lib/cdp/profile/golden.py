"""The 360° profile: one golden row per one_id, from every silver record the person has."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cdp.conf import Settings
from cdp.conf.gold import PROFILE_COLUMNS, Survivorship
from cdp.conf.model import DataModel
from cdp.lakehouse import sql_string, table_exists
from cdp.privacy.consent import allows
from cdp.privacy.protect import Keys, encrypt, masked
from cdp.tables import IDENTIFIERS, ONEID_MAP, REFUSED, silver_table

PROVENANCE = "struct<source:string, record_key:string, observed_at:timestamp, verified:boolean>"


def person_map(spark: SparkSession, persons: DataFrame | None = None) -> DataFrame:
    """(source, record_key, one_id) of every record, or of the records of `persons` (one_id) only."""
    mapped = spark.table(ONEID_MAP).select("source", "record_key", "one_id")
    return mapped if persons is None else mapped.join(F.broadcast(persons.select("one_id")), "one_id", "left_semi")


def _with_one_id(spark: SparkSession, df: DataFrame, persons: DataFrame | None = None) -> DataFrame:
    return df.join(person_map(spark, persons), ["source", "record_key"])


def attribute_candidates(spark: SparkSession, rules: dict[str, Survivorship], model: DataModel,
                         persons: DataFrame | None = None) -> DataFrame:
    """(one_id, attribute, value, priority, observed_at, verified, source, record_key): every non-null
    candidate value of every golden attribute, from each silver entity that has been built.

    Each entity is joined to its one_ids once, and all its candidates come out of that one pass."""
    by_entity: dict[str, list] = {}
    for attribute, rule in rules.items():
        for priority, candidate in enumerate(rule.candidates, start=1):
            by_entity.setdefault(candidate.entity, []).append((attribute, rule, priority, candidate))
    frames = []
    for entity_name, candidates in by_entity.items():
        entity = model.entities[entity_name]
        table = silver_table(entity_name)
        if not table_exists(spark, table):
            continue
        values = F.array(*[
            F.struct(
                F.lit(attribute).alias("attribute"),
                F.expr(candidate.value).cast(rule.type).cast("string").alias("value"),
                F.lit(priority).alias("priority"),
                (F.col(candidate.time or entity.time_field) if (candidate.time or entity.time_field)
                 else F.lit(None)).cast("timestamp").alias("observed_at"),
                F.coalesce(F.expr(candidate.verified).cast("boolean"), F.lit(False)).alias("verified"),
            )
            for attribute, rule, priority, candidate in candidates
        ])
        rows = _with_one_id(spark, spark.table(table), persons).select(
            "one_id", "source", "record_key", F.explode(values).alias("c"))
        frames.append(rows.select("one_id", "c.*", "source", "record_key")
                      .where(F.col("value").isNotNull() & (F.trim("value") != "")))
    if not frames:
        return spark.createDataFrame([], "one_id string, attribute string, value string, priority int, "
                                         "observed_at timestamp, verified boolean, source string, record_key string")
    return reduce(DataFrame.unionByName, frames)


def _preference(criterion: str) -> Column:
    return {
        "verified": F.col("verified").cast("int"),
        "priority": -F.col("priority"),
        "recency": F.col("observed_at"),
        "frequency": F.col("frequency"),
        "completeness": F.length("value"),
    }[criterion]


def golden_attributes(candidates: DataFrame, rules: dict[str, Survivorship]) -> DataFrame:
    """Per one_id and attribute, the surviving value by the attribute's criteria, and where it came from.

    Returns one_id, one typed column per attribute, and provenance: map attribute → (source,
    record_key, observed_at, verified) of the chosen value.
    """
    if any("frequency" in rule.prefer for rule in rules.values()):
        same_value = Window.partitionBy("one_id", "attribute", "value")
        candidates = candidates.withColumn("frequency", F.count("*").over(same_value))
    aggregations = []
    for attribute, rule in rules.items():
        is_it = F.col("attribute") == attribute
        # ties: the most recent, then the smallest value and record, so a rerun chooses the same
        order = F.struct(*[_preference(c).alias(f"k{i}") for i, c in enumerate(rule.prefer)],
                         F.col("observed_at").alias("latest"), F.col("value").alias("v"), F.col("record_key").alias("r"))
        payload = F.struct("value", "source", "record_key", "observed_at", "verified")
        aggregations.append(F.max_by(F.when(is_it, payload), F.when(is_it, order)).alias(f"_{attribute}"))
    chosen = candidates.groupBy("one_id").agg(*aggregations)
    provenance = F.map_filter(
        F.create_map(*[part for attribute in rules for part in (
            F.lit(attribute), F.col(f"_{attribute}").dropFields("value").cast(PROVENANCE))]),
        lambda _, v: v.isNotNull(),
    )
    return chosen.select(
        "one_id",
        *[F.col(f"_{attribute}.value").cast(rule.type).alias(attribute) for attribute, rule in rules.items()],
        provenance.alias("provenance"),
    )


def activity(spark: SparkSession, model: DataModel, persons: DataFrame | None = None) -> DataFrame:
    """(one_id, channel, ts, is_interaction) for every record: when and where the person was seen
    (interactions: records of the entities the model marks as such — orders, events, tickets)."""
    frames = []
    for entity_name, entity in model.entities.items():
        table = silver_table(entity_name)
        if table_exists(spark, table):
            seen = F.col(entity.time_field) if entity.time_field else F.lit(None)
            frames.append(
                _with_one_id(spark, spark.table(table), persons).select(
                    "one_id", "channel", seen.cast("timestamp").alias("ts"),
                    F.lit(entity.interaction).alias("is_interaction"),
                )
            )
    return reduce(DataFrame.unionByName, frames)


def order_summary(spark: SparkSession, persons: DataFrame | None = None) -> DataFrame:
    """Orders, spend and last purchase per one_id; refunded orders count for neither."""
    orders = _with_one_id(spark, spark.table(silver_table("orders")), persons)
    kept = orders.where(F.coalesce(F.col("status"), F.lit("")) != "refunded")
    return kept.groupBy("one_id").agg(
        F.count("*").alias("order_count"),
        F.sum("amount").cast("decimal(14,2)").alias("total_spend"),
        F.min("order_time").alias("first_order_at"),
        F.max("order_time").alias("last_order_at"),
    )


def contact_points(spark: SparkSession, keys: Keys, persons: DataFrame | None = None) -> DataFrame:
    """Whether a person can be reached by phone or email: the contact masked for display and
    encrypted for the exports that must send to it (never in clear outside silver)."""
    refused = spark.table(REFUSED).select("id_type", "id_value")
    usable = spark.table(IDENTIFIERS).join(refused, ["id_type", "id_value"], "left_anti")
    contacts = _with_one_id(spark, usable.where(F.col("id_type").isin("phone", "email")), persons)
    chosen = contacts.groupBy("one_id").agg(
        F.min(F.when(F.col("id_type") == "phone", F.col("id_value"))).alias("phone"),
        F.min(F.when(F.col("id_type") == "email", F.col("id_value"))).alias("email"),
    )
    return chosen.select(
        "one_id", F.col("phone").isNotNull().alias("has_phone"), F.col("email").isNotNull().alias("has_email"),
        masked("phone", "phone").alias("phone_masked"), masked("email", "email").alias("email_masked"),
        encrypt(F.col("phone"), keys).alias("phone_enc"), encrypt(F.col("email"), keys).alias("email_enc"),
    )


def consent_summary(state: DataFrame, purposes: dict[str, str]) -> DataFrame:
    """Per one_id: the purposes their consent allows now (a grant, or an opt-out purpose not withdrawn)
    and those they withdrew. Persons without any consent event get the defaults (see the profile)."""
    statuses = state.groupBy("one_id").agg(
        F.map_from_entries(F.collect_list(F.struct("purpose", "status"))).alias("statuses")
    )
    return statuses.select("one_id", *[c.alias(n) for n, c in _consent_columns("statuses", purposes).items()])


def _consent_columns(statuses: str, purposes: dict[str, str]) -> dict[str, Column]:
    """consented_purposes and withdrawn_purposes from `statuses`, SQL for a map purpose → status."""
    def status(purpose: str) -> str:
        return f"try_element_at({statuses}, {sql_string(purpose)})"

    allowed = [F.when(allows(status(p), default), F.lit(p)) for p, default in purposes.items()]
    withdrawn = [F.when(F.expr(status(p)) == "withdrawn", F.lit(p)) for p in purposes]
    return {"consented_purposes": F.array_compact(F.array(*allowed)),
            "withdrawn_purposes": F.array_compact(F.array(*withdrawn))}


def build_customer_profile(spark: SparkSession, settings: Settings, consent: DataFrame, keys: Keys,
                           persons: DataFrame | None = None) -> DataFrame:
    """One row per one_id: golden attributes with provenance, reachability, activity, purchases, consent.
    With `persons` (one_id), the rows of those persons only: the rest is not read past the map join."""
    rules = settings.gold.survivorship
    people = person_map(spark, persons).groupBy("one_id").agg(F.count("*").alias("record_count"))
    seen = activity(spark, settings.model, persons).groupBy("one_id").agg(
        F.min("ts").alias("first_seen"),
        F.max("ts").alias("last_seen"),
        F.max(F.when(F.col("is_interaction"), F.col("ts"))).alias("last_active_at"),
        F.sort_array(F.collect_set("channel")).alias("channels"),
    )
    # Persons without any consent event: the purposes' defaults.
    no_events = _consent_columns("CAST(map() AS map<string,string>)", settings.privacy.defaults)
    filled = {
        "provenance": F.coalesce("provenance", F.create_map().cast(f"map<string,{PROVENANCE}>")),
        "has_phone": F.coalesce("has_phone", F.lit(False)),
        "has_email": F.coalesce("has_email", F.lit(False)),
        "order_count": F.coalesce("order_count", F.lit(0)).cast("long"),
        "total_spend": F.coalesce("total_spend", F.lit(0)).cast("decimal(14,2)"),
        **{name: F.coalesce(F.col(name), default) for name, default in no_events.items()},
    }
    return (
        people.join(golden_attributes(attribute_candidates(spark, rules, settings.model, persons), rules), "one_id", "left")
        .join(contact_points(spark, keys, persons), "one_id", "left")
        .join(seen, "one_id", "left")
        .join(order_summary(spark, persons), "one_id", "left")
        .join(consent_summary(consent, settings.privacy.defaults), "one_id", "left")
        # the golden attributes after one_id, then the columns every profile has (PROFILE_COLUMNS)
        .select("one_id", *rules, *[filled.get(name, F.col(name)).alias(name) for name in PROFILE_COLUMNS[1:]])
    )
