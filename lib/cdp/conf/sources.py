"""conf/sources.yaml: each channel export, its delivered columns, and how they map onto an entity of
the data model (conf/model.yaml): fields, identifiers, record keys, formats, time zones and codes.

Checked against the model when loaded: the validators read it from the validation context
(`model`, and `purposes` for consent purpose codes), so an error names this file and its key."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cdp.conf.base import Strict, require_snake_case
from cdp.conf.vocabulary import NormaliserName, Unmapped, check_condition, check_datetime_pattern


class FieldMapping(Strict):
    """Where a field's value comes from — a delivered column, or one value for every row of the
    source (`value`: an export of phone numbers only says subject_type: phone) — and how it is read."""

    column: str | None = None
    value: str | None = None
    normaliser: NormaliserName | None = None  # default: the field's (conf/model.yaml)
    formats: list[str] = Field(default_factory=list)  # date/timestamp: Java datetime patterns, tried in order
    timezone: str | None = None  # timestamp: the zone of the delivered wall-clock time (default: the source's)
    epoch: Literal["seconds", "milliseconds"] | None = None  # timestamp: a number since 1970-01-01 UTC
    values: dict[str, str | None] = Field(default_factory=dict)  # delivered code → canonical value
    unmapped: Unmapped | None = None  # a code neither here nor in the field's map (default: the map's)
    when: str | None = None  # SQL over the delivered columns: the value counts only where it holds

    @field_validator("values", mode="before")
    @classmethod
    def _codes_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k).lower() if isinstance(k, bool) else str(k): v for k, v in value.items()}
        return value

    @field_validator("formats")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_datetime_pattern(pattern)
        return value

    @field_validator("when")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        return check_condition(value) if value is not None else None

    @model_validator(mode="after")
    def _one_origin(self) -> FieldMapping:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of `column` (a delivered column) or `value` (the same for every row)")
        return self


class SourceIdentifier(Strict):
    """An identifier read from a column, beyond the entity's identifier fields, where `when` holds."""

    type: str
    column: str
    when: str | None = None

    @field_validator("when")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        return check_condition(value) if value is not None else None


class HashKey(Strict):
    """A record key made from the content of these columns, for exports without an id column."""

    hash_of: list[str] = Field(min_length=1)


class Source(Strict):
    channel: str
    format: Literal["csv", "jsonl", "parquet"]
    path: str
    # incremental: each new or changed file is added once; full: every delivery is a complete
    # snapshot, and when the set of files changes the source's bronze table is reloaded whole.
    load_mode: Literal["incremental", "full"] = "incremental"
    entity: str
    # one column, several columns (joined), or {hash_of: [columns]}
    record_key: str | list[str] | HashKey
    columns: list[str]
    timezone: str | None = None  # the zone of the source's timestamps without an offset (default: the profile's)
    mapping: dict[str, FieldMapping]
    identifiers: list[SourceIdentifier] = Field(default_factory=list)

    @property
    def key_columns(self) -> list[str]:
        if isinstance(self.record_key, HashKey):
            return self.record_key.hash_of
        return [self.record_key] if isinstance(self.record_key, str) else list(self.record_key)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Source:
        model = (info.context or {}).get("model")
        for column in self.key_columns:
            if column not in self.columns:
                raise ValueError(f"record_key column '{column}' is not among columns {self.columns}")
        for field, mapped in self.mapping.items():
            if mapped.column is not None and mapped.column not in self.columns:
                raise ValueError(f"mapping.{field}.column '{mapped.column}' is not among columns")
        for i, extra in enumerate(self.identifiers):
            if extra.column not in self.columns:
                raise ValueError(f"identifiers[{i}].column '{extra.column}' is not among columns")
        if model is not None:
            self._against(model, (info.context or {}).get("purposes"))
        return self

    def _against(self, model: Any, purposes: list[str] | None) -> None:
        """The checks that need the data model (and, for consent purposes, privacy.yaml's purposes)."""
        if self.entity not in model.entities:
            raise ValueError(f"entity '{self.entity}' is not one of {sorted(model.entities)} (conf/model.yaml)")
        entity = model.entities[self.entity]
        for field, mapped in self.mapping.items():
            if field not in entity.fields:
                raise ValueError(f"mapping field '{field}' is not a field of entity '{self.entity}' "
                                 f"(fields: {sorted(entity.fields)})")
            spec = entity.fields[field]
            expected = model.normaliser_of(self.entity, field)
            if spec.identifier and mapped.normaliser not in (None, expected):
                raise ValueError(f"mapping.{field}: field '{field}' carries identifier type '{spec.identifier}', "
                                 f"whose normaliser is '{expected}'; a source cannot read it as "
                                 f"'{mapped.normaliser}'. Fix: leave `normaliser` out")
            if (mapped.formats or mapped.timezone) and spec.type not in ("date", "timestamp"):
                raise ValueError(f"mapping.{field}: formats and timezone apply to date and timestamp fields; "
                                 f"'{field}' is a {spec.type}")
            if mapped.epoch and spec.type != "timestamp":
                raise ValueError(f"mapping.{field}: epoch applies to timestamp fields; '{field}' is a {spec.type}")
            if (mapped.values or mapped.unmapped) and spec.type != "string":
                raise ValueError(f"mapping.{field}: values and unmapped apply to string fields; '{field}' is a {spec.type}")
            closed = model.closed_set(spec.values, purposes)
            stray = sorted({v for v in mapped.values.values() if v is not None} - set(closed)) if closed is not None else []
            if stray:
                raise ValueError(f"mapping.{field}.values maps codes onto {stray}, which are not among the canonical "
                                 f"values of '{field}': {sorted(closed)}")
        missing = [f for f in entity.required if f not in self.mapping]
        if missing:
            raise ValueError(f"entity '{self.entity}' requires mapping for {missing}")
        for i, extra in enumerate(self.identifiers):
            if extra.type not in model.identifier_types:
                raise ValueError(f"identifiers[{i}].type '{extra.type}' is not one of the identifier_types "
                                 f"{sorted(model.identifier_types)} (conf/model.yaml). Fix: declare it there "
                                 "and in identity.yaml")


class SourcesConfig(Strict):
    sources: dict[str, Source]

    @field_validator("sources")
    @classmethod
    def _snake_case_names(cls, value: dict[str, Source]) -> dict[str, Source]:
        require_snake_case(value, "source name", "a table name")
        return value

