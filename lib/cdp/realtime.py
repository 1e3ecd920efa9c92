"""Real-time profiles (实时画像), as transforms: events resolved to a person as they land, and the
realtime tags of conf/tags.yaml computed over each person's recent events.

- **Resolution.** An event's identifiers are hashed with the hash key (as gold.identity_map's
  `id_hash`) and looked up in the current identity map: the identifier of the highest-ranked type
  (the model's order of identifier types) that names exactly one person decides. A value several
  persons hold (a household's phone) decides nothing. An event no identifier resolves gets a
  provisional id, `tmp_` and its first identifier's keyed hash: the same unknown device keeps one
  provisional id until an identity run learns it, and the stream re-keys its rows then.
- **Tags.** The realtime tags are aggregates over the person's events, with the expression the
  daily run uses (cdp.tags.engine), evaluated as of today over the events the stream keeps.
"""

from __future__ import annotations

from datetime import date, datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cdp.conf.tags import REALTIME_SOURCE, TagLibrary
from cdp.privacy.protect import Keys, identifier_hash
from cdp.tags.engine import Inputs, aggregated, defaults, to_long, to_wide
from cdp.tags.summaries import read_columns

PROVISIONAL = "tmp_"
EVENT_TIME = "event_time"


def realtime_codes(library: TagLibrary) -> list[str]:
    return [code for code, tag in library.tags.items() if tag.realtime]


def kept_columns(library: TagLibrary, columns: list[str]) -> list[str]:
    """The event columns the stream keeps: its time and what the tags over events read — no identifier."""
    return [EVENT_TIME, *[c for c in read_columns(library, REALTIME_SOURCE, columns) if c != EVENT_TIME]]


def hashed_identifiers(events: DataFrame, ids_column: str, ranks: dict[str, int], keys: Keys) -> DataFrame:
    """(source, record_key, id_rank, id_hash) for each identifier of each event."""
    return (events.select("source", "record_key", F.explode(ids_column).alias("id"))
            .where(F.col("id.id_value").isNotNull() & F.col("id.id_type").isin(*ranks))
            .select("source", "record_key", rank_of(F.col("id.id_type"), ranks).alias("id_rank"),
                    identifier_hash(F.col("id.id_type"), F.col("id.id_value"), keys).alias("id_hash")))


def rank_of(id_type: Column, ranks: dict[str, int]) -> Column:
    result = F.lit(None).cast("int")
    for name, rank in ranks.items():
        result = F.when(id_type == name, F.lit(rank)).otherwise(result)
    return result


def person_lookup(identity_map: DataFrame) -> DataFrame:
    """(id_hash, one_id) for each hashed identifier exactly one person holds."""
    return (identity_map.groupBy("id_hash").agg(F.collect_set("one_id").alias("holders"))
            .where(F.size("holders") == 1).select("id_hash", F.col("holders")[0].alias("one_id")))


def resolved(identifiers: DataFrame, lookup: DataFrame) -> DataFrame:
    """(source, record_key, one_id, provisional, id_hashes) per event: the best-ranked identifier that
    names one person decides; else a provisional id from the best-ranked identifier. `identifiers`:
    (source, record_key, id_rank, id_hash)."""
    known = identifiers.join(lookup, "id_hash", "left")
    best = Window.partitionBy("source", "record_key").orderBy(F.col("one_id").isNull(), "id_rank", "id_hash")
    return (known.withColumn("_n", F.row_number().over(best))
            .groupBy("source", "record_key")
            .agg(F.max(F.when(F.col("_n") == 1, F.col("one_id"))).alias("_person"),
                 F.max(F.when(F.col("_n") == 1, F.col("id_hash"))).alias("_first"),
                 F.sort_array(F.collect_set("id_hash")).alias("id_hashes"))
            .select("source", "record_key",
                    F.coalesce("_person", F.concat(F.lit(PROVISIONAL), F.substring("_first", 1, 16))).alias("one_id"),
                    F.col("_person").isNull().alias("provisional"), "id_hashes"))


def unidentified(events: DataFrame, keys: Keys) -> DataFrame:
    """Events without any identifier: a provisional id of their own (the keyed hash of source:record_key)."""
    return events.select("source", "record_key",
                         F.concat(F.lit(PROVISIONAL), F.substring(identifier_hash(F.col("source"), F.col("record_key"),
                                                                                  keys), 1, 16)).alias("one_id"),
                         F.lit(True).alias("provisional"), F.array().cast("array<string>").alias("id_hashes"))


def latest_events(events: DataFrame) -> DataFrame:
    """One row per (source, record_key): an event delivered twice counts once (the latest delivery)."""
    order = Window.partitionBy("source", "record_key").orderBy(F.col("landed_at").desc(), F.col("batch_id").desc())
    return events.withColumn("_n", F.row_number().over(order)).where("_n = 1").drop("_n")


def realtime_tags(library: TagLibrary, events: DataFrame, today: date, computed_at: datetime) -> DataFrame:
    """(one_id, tag_code, value, tag_version, as_of, computed_at) for each person with events: each
    realtime tag as the daily run computes it as of `today`, over these events (one per record)."""
    codes = realtime_codes(library)
    wide = aggregated(library, Inputs(events.limit(0), {REALTIME_SOURCE: (latest_events(events), EVENT_TIME)}),
                      REALTIME_SOURCE, codes, today)
    wide = wide.withColumns(defaults(library, codes))
    return to_long(wide, library, today, computed_at, codes).withColumnRenamed("run_date", "as_of")


def current_tags(library: TagLibrary, daily: DataFrame, realtime: DataFrame, codes: list[str]) -> DataFrame:
    """One typed column per tag of `codes`: the daily run's values (`daily`: to_wide of
    gold.customer_tags over `codes`), the realtime tags replaced by the stream's (`realtime`: rows of
    gold.realtime_tags) for each person the stream has them of."""
    live = [c for c in codes if library.tags[c].realtime]
    stream = to_wide(realtime, library, live).select(
        "one_id", F.lit(True).alias("_rt"), *[F.col(c).alias(f"_rt_{c}") for c in live])
    both = daily.join(stream, "one_id", "full")
    return both.select("one_id", *[
        (F.when(F.col("_rt"), F.col(f"_rt_{code}")).otherwise(F.col(code)) if code in live else F.col(code)).alias(code)
        for code in codes])
