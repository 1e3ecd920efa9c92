"""Bronze rows onto a canonical entity: mapped, normalised and typed; why a row is refused; its identifiers.

Pure transforms over DataFrames (cdp.stages.silver reads bronze and writes silver). A mapped row
carries helper columns until silver is written: `REASON` (null when the row is fit for silver),
`MALFORMED`, `given(field)` (was anything delivered at all) and `RAW` (the row as delivered).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cdp.cleanse.normalisers import NORMALISERS, normalise_cn_mobile, normalise_email, normalise_text
from cdp.conf.model import ENTITIES, Entity
from cdp.conf.sources import Source
from cdp.tables import CORRUPT_RECORD as CORRUPT
from cdp.tables import INGEST_COLUMNS as META
REASON = "_reason"
MALFORMED = "_malformed"
RAW = "_raw"


def given(field: str) -> str:
    """The helper column saying whether the source delivered anything for `field`."""
    return f"_given_{field}"


def helper_columns(columns: list[str]) -> list[str]:
    """The helper columns among `columns`: dropped before a mapped row is written to silver."""
    return [c for c in columns if c.startswith("_given_")] + [MALFORMED, REASON, RAW]


# How a consent event's subject_type names the identifier type, and how its value is normalised.
CONSENT_SUBJECTS = {
    "phone": ("phone", normalise_cn_mobile),
    "email": ("email", normalise_email),
    "openid": ("openid", normalise_text),
    "unionid": ("unionid", normalise_text),
    "member_id": ("member_id", normalise_text),
}


def map_to_entity(source_name: str, source: Source):
    """Select the source's mapped columns, normalised and typed, keeping the raw row for quarantine."""
    entity = ENTITIES[source.entity]

    def transform(bronze: DataFrame) -> DataFrame:
        raw_fields = {f: F.col(f"`{m.column}`") for f, m in source.mapping.items()}
        columns: list[Column] = [
            F.lit(source_name).alias("source"),
            F.lit(source.channel).alias("channel"),
            normalise_text(F.col(f"`{source.record_key}`")).alias("record_key"),
        ]
        for field, spark_type in entity.fields.items():
            if field in source.mapping:
                value = NORMALISERS[source.mapping[field].normaliser](raw_fields[field])
            else:
                value = F.lit(None)
            columns.append(value.cast(spark_type).alias(field))
        # Was anything delivered at all? Tells 'missing' from 'invalid' (quarantine, validity rules).
        # Every entity field gets one (false when unmapped), so sources of an entity union by name.
        for field in entity.fields:
            delivered = normalise_text(raw_fields[field]).isNotNull() if field in raw_fields else F.lit(False)
            columns.append(delivered.alias(given(field)))
        # Every delivered column, declared or drifted in, so a quarantined row can be replayed.
        delivered = [c for c in bronze.columns if not c.startswith("_")]
        raw_payload = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"`{c}`") for c in delivered])))
        columns += [raw_payload.alias(RAW), F.col(CORRUPT).isNotNull().alias(MALFORMED)] + [F.col(m) for m in META]
        return bronze.select(*columns)

    return transform


def with_rejection_reason(entity: Entity):
    """The first rule a row breaks, as a reason code; null when the row is fit for silver."""

    def transform(df: DataFrame) -> DataFrame:
        reason: Column = F.when(F.col(MALFORMED), F.lit("malformed_record")).when(
            F.col("record_key").isNull(), F.lit("missing_record_key")
        )
        for field in entity.required:
            reason = reason.when(~F.col(given(field)), F.lit(f"missing_{field}")).when(
                F.col(field).isNull(), F.lit(f"invalid_{field}")
            )
        return df.withColumn(REASON, reason)

    return transform


def with_quality_flags(entity: Entity):
    """quality_flags: `invalid_<field>` for each value delivered but not standardisable (now null),
    plus the 身份证's conflicts with declared values — so a row says why a value is missing."""

    def transform(df: DataFrame) -> DataFrame:
        invalid = [
            F.when(F.col(given(field)) & F.col(field).isNull(), F.lit(f"invalid_{field}"))
            for field in entity.fields
        ]
        flags = F.array_compact(F.array(*invalid))
        if "id_card_conflicts" in df.columns:
            flags = F.concat(flags, F.col("id_card_conflicts"))
        return df.withColumn("quality_flags", flags)

    return transform


def latest_per_record_key(df: DataFrame) -> DataFrame:
    """Re-sent records collapse to one row per (source, record_key): the latest ingested wins."""
    window = Window.partitionBy("source", "record_key").orderBy(F.col("_ingested_at").desc(), F.col("_file").desc())
    return df.withColumn("_rank", F.row_number().over(window)).where(F.col("_rank") == 1).drop("_rank")


def with_consent_subject(df: DataFrame) -> DataFrame:
    """Normalise each consent event's subject by its subject_type (a phone as E.164, an email lower-case…)."""
    id_type = F.lit(None).cast("string")
    value = F.lit(None).cast("string")
    for subject_type, (identifier_type, normalise) in CONSENT_SUBJECTS.items():
        is_type = F.col("subject_type") == subject_type
        id_type = F.when(is_type, F.lit(identifier_type)).otherwise(id_type)
        value = F.when(is_type, normalise(F.col("subject_value"))).otherwise(value)
    return df.withColumn("subject_id_type", id_type).withColumn("subject_id_value", value)


def entity_identifiers(entity: Entity, df: DataFrame) -> DataFrame:
    """(source, record_key, id_type, id_value) for every non-null identifier field of the entity."""
    if entity.table == "consent_events":
        pairs = [(F.col("subject_id_type"), F.col("subject_id_value"))]
    else:
        pairs = [(F.lit(id_type), F.col(field)) for field, id_type in entity.identifiers.items()]
    stacked = F.explode(F.array(*[F.struct(t.alias("id_type"), v.alias("id_value")) for t, v in pairs]))
    return (
        df.select("source", "record_key", stacked.alias("id"))
        .select("source", "record_key", "id.id_type", "id.id_value")
        .where(F.col("id_value").isNotNull() & F.col("id_type").isNotNull())
    )


def quarantine_rule(reason: Column) -> Column:
    """The rule family a reason code belongs to."""
    return (
        F.when(reason == "malformed_record", F.lit("parse"))
        .when(reason == "missing_record_key", F.lit("record_key"))
        .otherwise(F.lit("required_fields"))
    )
