"""conf/sources.yaml: each channel export, its delivered columns and how they map onto an entity."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, field_validator, model_validator

from cdp.conf.base import Strict, require_snake_case
from cdp.conf.model import ENTITIES

# The value normalisers silver offers (cdp.cleanse.normalisers implements each, and checks at import
# that it implements exactly these): the vocabulary every conf file may name.
NORMALISER_NAMES = ("trim", "lower", "name", "email", "cn_mobile", "id_card", "gender", "timestamp", "date",
                    "amount", "province")


def known_normaliser(value: str) -> str:
    if value not in NORMALISER_NAMES:
        raise ValueError(f"unknown normaliser '{value}'; choose one of {sorted(NORMALISER_NAMES)}")
    return value


NormaliserName = Annotated[str, AfterValidator(known_normaliser)]


class FieldMapping(Strict):
    column: str
    normaliser: NormaliserName = "trim"



class Source(Strict):
    channel: str
    format: Literal["csv", "jsonl", "parquet"]
    path: str
    # incremental: each new or changed file is added once; full: every delivery is a complete
    # snapshot, and when the set of files changes the source's bronze table is reloaded whole.
    load_mode: Literal["incremental", "full"] = "incremental"
    entity: str
    record_key: str
    columns: list[str]
    mapping: dict[str, FieldMapping]

    @model_validator(mode="after")
    def _consistent(self) -> Source:
        if self.entity not in ENTITIES:
            raise ValueError(f"entity '{self.entity}' is not one of {sorted(ENTITIES)}")
        if self.record_key not in self.columns:
            raise ValueError(f"record_key '{self.record_key}' is not among columns {self.columns}")
        entity = ENTITIES[self.entity]
        for field, mapped in self.mapping.items():
            if field not in entity.fields:
                raise ValueError(
                    f"mapping field '{field}' is not a field of entity '{self.entity}' "
                    f"(fields: {sorted(entity.fields)})"
                )
            if mapped.column not in self.columns:
                raise ValueError(f"mapping.{field}.column '{mapped.column}' is not among columns")
        missing = [f for f in entity.required if f not in self.mapping]
        if missing:
            raise ValueError(f"entity '{self.entity}' requires mapping for {missing}")
        return self


class SourcesConfig(Strict):
    sources: dict[str, Source]

    @field_validator("sources")
    @classmethod
    def _snake_case_names(cls, value: dict[str, Source]) -> dict[str, Source]:
        require_snake_case(value, "source name", "a table name")
        return value
