"""Bronze rows onto an entity of the data model (conf/model.yaml), as each source's mapping says
(conf/sources.yaml): fields parsed and normalised, codes mapped (码值映射), record keys made,
identifiers collected; why a row is refused; which version of a re-sent record wins.

Pure transforms over DataFrames (cdp.stages.silver reads bronze and writes silver). A mapped row
carries helper columns until silver is written: `REASON` (null when the row is fit for silver),
`MALFORMED`, `given(field)` (was anything delivered at all), `unmapped(field)` (a code the maps do
not know, under the quarantine policy), `IDS` (the record's identifiers) and `RAW` (the row as
delivered).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cdp.cleanse.idcard import with_id_card_checks
from cdp.cleanse.normalisers import NORMALISERS, TIMESTAMP_FORMATS, normalise_date, normalise_text, normalise_timestamp
from cdp.conf.model import DataModel, Entity
from cdp.conf.sources import FieldMapping, HashKey, Source
from cdp.tables import CORRUPT_RECORD as CORRUPT
from cdp.tables import INGEST_COLUMNS

REASON = "_reason"
MALFORMED = "_malformed"
RAW = "_raw"
IDS = "_ids"
ORDER = ["_file_modified_at", "_file", "_line"]  # bronze's order of deliveries: the latest wins
META = list(INGEST_COLUMNS)  # what a quarantined row keeps of bronze's bookkeeping columns
_KEY_SEPARATOR = "\u001f"


def given(field: str) -> str:
    """The helper column saying whether the source delivered anything for `field`."""
    return f"_given_{field}"


def unmapped(field: str) -> str:
    """The helper column saying the field's code is unknown to its maps and the policy is quarantine."""
    return f"_unmapped_{field}"


def helper_columns(columns: list[str]) -> list[str]:
    """The helper columns among `columns`: dropped before a mapped row is written to silver."""
    return [c for c in columns if c.startswith(("_given_", "_unmapped_"))] + [MALFORMED, REASON, RAW, IDS]


@dataclass(frozen=True)
class Reading:
    """What mapping a source needs besides the source: the model, and the purposes consent codes map onto."""

    model: DataModel
    purposes: tuple[str, ...] = ()

    def entity(self, source: Source) -> Entity:
        return self.model.entities[source.entity]


def record_key(source: Source) -> Column:
    """The record's key: one column, several joined, or a hash of the content of `hash_of` (stable
    across reruns: an exact re-send gets the same key). Null when the columns deliver nothing."""
    columns = [normalise_text(F.col(f"`{c}`")) for c in source.key_columns]
    if isinstance(source.record_key, str):
        return columns[0]
    delivered = F.concat_ws(_KEY_SEPARATOR, *[F.coalesce(c, F.lit("")) for c in columns])
    if isinstance(source.record_key, HashKey):
        anything = reduce(lambda a, b: a | b, [c.isNotNull() for c in columns])
        return F.when(anything, F.concat(F.lit("h"), F.substring(F.sha2(delivered, 256), 1, 32)))
    every = reduce(lambda a, b: a & b, [c.isNotNull() for c in columns])
    return F.when(every, delivered)


def _delivered(source: Source, mapped: FieldMapping) -> Column:
    raw = F.col(f"`{mapped.column}`") if mapped.column is not None else F.lit(mapped.value)
    return F.when(F.expr(mapped.when), raw) if mapped.when else raw


def parsed_value(reading: Reading, source: Source, field: str) -> Column:
    """The field's value, parsed and normalised (null when it cannot be), before any code map."""
    entity_name = source.entity
    spec = reading.model.entities[entity_name].fields[field]
    mapped = source.mapping[field]
    raw = _delivered(source, mapped)
    if spec.type == "timestamp" and (mapped.formats or mapped.timezone or source.timezone or mapped.epoch):
        formats = tuple(mapped.formats) or TIMESTAMP_FORMATS
        return normalise_timestamp(raw, formats, mapped.timezone or source.timezone, mapped.epoch)
    if spec.type == "date" and mapped.formats:
        return normalise_date(raw, tuple(mapped.formats))
    name = mapped.normaliser or reading.model.normaliser_of(entity_name, field)
    return NORMALISERS[name](raw)


def coded_value(reading: Reading, source: Source, field: str, value: Column) -> tuple[Column, Column | None]:
    """(the canonical value, whether the code is unknown and must quarantine the row) for a field with
    a code map — the model's, with the source's own codes over it; the value unchanged otherwise."""
    spec = reading.model.entities[source.entity].fields[field]
    mapped = source.mapping[field]
    model_map = reading.model.value_maps.get(spec.values) if spec.values else None
    if model_map is None and not mapped.values:
        return value, None
    codes = {**(model_map.values if model_map else {}), **mapped.values}
    closed = reading.model.closed_set(spec.values, list(reading.purposes)) if spec.values else None
    entries = {c.lower(): c for c in closed or []} | {k.lower(): v for k, v in codes.items()}
    lookup = F.create_map(*[part for k, v in entries.items() for part in (F.lit(k), F.lit(v).cast("string"))])
    key = F.lower(value)
    known = F.map_contains_key(lookup, key)
    policy = mapped.unmapped or (model_map.policy if model_map else "keep")
    fallback = value if policy == "keep" else F.lit(None).cast("string")
    canonical = F.when(value.isNull(), F.lit(None)).when(known, F.element_at(lookup, key)).otherwise(fallback)
    unknown = (value.isNotNull() & ~known) if policy == "quarantine" else None
    return canonical, unknown


def _typed_identifier(reading: Reading, id_type: Column, value: Column) -> Column:
    """`value` normalised as its identifier type's values are (the type is data: a CASE over the types)."""
    result = F.lit(None).cast("string")
    for name, spec in reading.model.identifier_types.items():
        result = F.when(id_type == name, NORMALISERS[spec.normaliser](value)).otherwise(result)
    return result


def map_to_entity(source_name: str, source: Source, reading: Reading, carry: tuple[str, ...] = ()):
    """Select the source's mapped fields, parsed, normalised, coded and typed; its record key and
    identifiers; the raw row for the quarantine; the delivery order for latest-wins; and the bronze
    columns named in `carry` as they are (a change feed's flags)."""
    entity = reading.entity(source)

    def transform(bronze: DataFrame) -> DataFrame:
        columns: list[Column] = [
            F.lit(source_name).alias("source"),
            F.lit(source.channel).alias("channel"),
            record_key(source).alias("record_key"),
        ]
        values: dict[str, Column] = {}
        unknown_codes: dict[str, Column] = {}
        for field, spec in entity.fields.items():
            if field in source.mapping:
                value, unknown = coded_value(reading, source, field, parsed_value(reading, source, field))
                if unknown is not None:
                    unknown_codes[field] = unknown
            else:
                value = F.lit(None)
            values[field] = value.cast(spec.spark_type)
            columns.append(values[field].alias(field))
        subject = None
        if entity.subject is not None:
            subject_type = values[entity.subject.type]
            subject = (subject_type, _typed_identifier(reading, subject_type, values[entity.subject.value]))
            columns += [subject[0].alias("subject_id_type"), subject[1].alias("subject_id_value")]
        # Was anything delivered at all? Tells 'missing' from 'invalid' (quarantine, validity rules).
        # Every entity field gets one (false when unmapped), so sources of an entity union by name.
        for field in entity.fields:
            mapped = source.mapping.get(field)
            delivered = normalise_text(_delivered(source, mapped)).isNotNull() if mapped else F.lit(False)
            columns.append(delivered.alias(given(field)))
            columns.append(unknown_codes.get(field, F.lit(False)).alias(unmapped(field)))
        columns.append(identifiers_column(reading, source, entity, values, subject).alias(IDS))
        # Every delivered column, declared or drifted in, so a quarantined row can be replayed.
        delivered = [c for c in bronze.columns if not c.startswith("_")]
        raw_payload = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"`{c}`") for c in delivered])))
        columns += [raw_payload.alias(RAW), F.col(CORRUPT).isNotNull().alias(MALFORMED)]
        # bronze's bookkeeping, and the delivery order (absent from bronze tables older than it: null)
        columns += [F.col(c) if c in bronze.columns else F.lit(None).cast(kind).alias(c) for c, kind in INGEST_COLUMNS.items()]
        return bronze.select(*columns, *carry)

    return transform


def identifiers_column(reading: Reading, source: Source, entity: Entity, values: dict[str, Column],
                       subject: tuple[Column, Column] | None = None) -> Column:
    """array<struct<id_type, id_value>>: the entity's identifier fields, the source's extra identifiers
    (each where its condition holds, normalised as its type's values) and a consent event's subject
    (its type and normalised value, as map_to_entity made them)."""
    pairs = [(F.lit(id_type), values[field]) for field, id_type in entity.identifiers.items()]
    for extra in source.identifiers:
        raw = F.col(f"`{extra.column}`")
        raw = F.when(F.expr(extra.when), raw) if extra.when else raw
        pairs.append((F.lit(extra.type), NORMALISERS[reading.model.identifier_types[extra.type].normaliser](raw)))
    if subject is not None:
        pairs.append(subject)
    if not pairs:
        return F.array().cast("array<struct<id_type:string,id_value:string>>")
    return F.array(*[F.struct(t.cast("string").alias("id_type"), v.cast("string").alias("id_value")) for t, v in pairs])


def with_rejection_reason(entity: Entity):
    """The first rule a row breaks, as a reason code; null when the row is fit for silver."""

    def transform(df: DataFrame) -> DataFrame:
        reason: Column = F.when(F.col(MALFORMED), F.lit("malformed_record")).when(
            F.col("record_key").isNull(), F.lit("missing_record_key")
        )
        for field in entity.required:
            reason = reason.when(~F.col(given(field)), F.lit(f"missing_{field}"))
            reason = reason.when(F.col(unmapped(field)), F.lit(f"unmapped_{field}"))
            reason = reason.when(F.col(field).isNull() & ~F.col(unmapped(field)), F.lit(f"invalid_{field}"))
        for field in entity.fields:
            if field not in entity.required:
                reason = reason.when(F.col(unmapped(field)), F.lit(f"unmapped_{field}"))
        return df.withColumn(REASON, reason)

    return transform


def with_checks(entity: Entity):
    """The 身份证's own birth date and gender, and their conflicts with the declared ones, for an
    entity with an id_card field (customers)."""
    if "id_card" not in entity.identifiers.values():
        return lambda df: df
    id_card = next(f for f, t in entity.identifiers.items() if t == "id_card")
    birth = "birth_date" if "birth_date" in entity.fields else None
    gender = "gender" if "gender" in entity.fields else None
    return with_id_card_checks(id_card, birth, gender)


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


def latest_per_record_key(df: DataFrame, prefer: str | None = None) -> DataFrame:
    """Re-sent records collapse to one row per (source, record_key): the latest delivery wins, by a
    total order — the file's modification time, then its name, then the record's line in it. Between
    two copies of one delivery (silver's row and its bronze row read again), the `prefer` column wins."""
    order = [F.col(c).desc_nulls_last() for c in ORDER] + ([F.col(prefer).desc()] if prefer else [])
    window = Window.partitionBy("source", "record_key").orderBy(*order)
    return df.withColumn("_rank", F.row_number().over(window)).where(F.col("_rank") == 1).drop("_rank")


def entity_identifiers(df: DataFrame) -> DataFrame:
    """(source, record_key, id_type, id_value) for every identifier a mapped row carries."""
    return (
        df.select("source", "record_key", F.explode(IDS).alias("id"))
        .select("source", "record_key", "id.id_type", "id.id_value")
        .where(F.col("id_value").isNotNull() & F.col("id_type").isNotNull())
    )


def quarantine_rule(reason: Column) -> Column:
    """The rule family a reason code belongs to."""
    return (
        F.when(reason == "malformed_record", F.lit("parse"))
        .when(reason == "missing_record_key", F.lit("record_key"))
        .when(reason.startswith("unmapped_"), F.lit("code_map"))
        .otherwise(F.lit("required_fields"))
    )

