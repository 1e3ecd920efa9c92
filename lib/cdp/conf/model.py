"""conf/model.yaml: the canonical data model (字段标准库) — identifier types, code maps (码值映射) and
the entities silver holds, with their fields. Everything that reads entities reads this."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdp.conf.base import Strict, require_snake_case
from cdp.conf.vocabulary import NormaliserName, Unmapped

FieldType = Literal["string", "date", "timestamp", "decimal", "long"]
SPARK_TYPES = {"string": "string", "date": "date", "timestamp": "timestamp", "decimal": "decimal(12,2)",
               "long": "bigint"}
# What a field's values go through when its declaration names no normaliser.
DEFAULT_NORMALISERS = {"string": "trim", "date": "date", "timestamp": "timestamp", "decimal": "amount", "long": "trim"}
# Columns every silver table has besides its fields: a field may not take their names.
RESERVED_COLUMNS = ("source", "channel", "record_key", "quality_flags", "one_id", "subject_id_type",
                    "subject_id_value", "id_card_birth_date", "id_card_gender", "id_card_conflicts")
MASKS = ("phone", "email", "id_card", "prefix")


class IdentifierType(Strict):
    """A kind of identifier: how its values are normalised and how gold.identity_map shows them.
    How strongly it links (priority, limits) is identity.yaml's."""

    normaliser: NormaliserName = "trim"
    mask: Literal["phone", "email", "id_card", "prefix"] = "prefix"
    description: str = ""


class ValueMap(Strict):
    """Delivered codes → canonical values. `canonical`: the closed set (a list, `purposes` or
    `identifier_types`), or none for an open set."""

    canonical: list[str] | Literal["purposes", "identifier_types"] | None = None
    values: dict[str, str | None] = Field(default_factory=dict)
    unmapped: Unmapped | None = None  # default: quarantine for a closed set, keep for an open one

    @field_validator("values", mode="before")
    @classmethod
    def _keys_as_text(cls, value):
        # YAML reads 1: M as an int key and yes: as a bool: codes are text
        if isinstance(value, dict):
            return {str(k).lower() if isinstance(k, bool) else str(k): v for k, v in value.items()}
        return value

    @property
    def policy(self) -> str:
        return self.unmapped or ("keep" if self.canonical is None else "quarantine")


class EntityField(Strict):
    type: FieldType = "string"
    normaliser: NormaliserName | None = None  # default: the identifier type's, else the type's
    identifier: str | None = None  # an identifier type of identifier_types
    values: str | None = None  # a code map of value_maps
    required: bool = False
    description: str = ""

    @property
    def spark_type(self) -> str:
        return SPARK_TYPES[self.type]


class Subject(Strict):
    """A record whose identifier's type is data: `type` names a field holding the type, `value` its value."""

    type: str
    value: str


class Entity(Strict):
    """One silver table's shape; every source of the entity maps some of its columns onto these fields."""

    description: str = ""
    time_field: str | None = None  # when a record happened (first/last seen, recency, tag windows)
    interaction: bool = False  # its records are activity (the profile's last_active_at)
    subject: Subject | None = None
    fields: dict[str, EntityField] = Field(min_length=1)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(name for name, f in self.fields.items() if f.required)

    @property
    def identifiers(self) -> dict[str, str]:
        """field → identifier type, for the fields that carry identifiers."""
        return {name: f.identifier for name, f in self.fields.items() if f.identifier}

    @property
    def types(self) -> dict[str, str]:
        """field → Spark type."""
        return {name: f.spark_type for name, f in self.fields.items()}

    @model_validator(mode="after")
    def _consistent(self) -> Entity:
        require_snake_case(self.fields, "field", "a silver column", reserved=RESERVED_COLUMNS)
        if self.time_field is not None and self.time_field not in self.fields:
            raise ValueError(f"time_field '{self.time_field}' is not one of its fields {sorted(self.fields)}")
        if self.time_field is not None and self.fields[self.time_field].type not in ("timestamp", "date"):
            raise ValueError(f"time_field '{self.time_field}' must be a timestamp or date field")
        if self.subject is not None:
            for part in ("type", "value"):
                if getattr(self.subject, part) not in self.fields:
                    raise ValueError(f"subject.{part} '{getattr(self.subject, part)}' is not one of its fields")
        return self


class DataModel(Strict):
    identifier_types: dict[str, IdentifierType] = Field(min_length=1)
    value_maps: dict[str, ValueMap] = Field(default_factory=dict)
    entities: dict[str, Entity] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> DataModel:
        require_snake_case(self.identifier_types, "identifier type", "an id_type in silver.identifiers",
                           reserved=("probabilistic",))
        require_snake_case(self.entities, "entity", "a silver table name",
                           reserved=("quarantine", "identifiers"))
        for name, value_map in self.value_maps.items():
            if isinstance(value_map.canonical, list):
                stray = sorted({v for v in value_map.values.values() if v is not None} - set(value_map.canonical))
                if stray:
                    raise ValueError(f"value_maps.{name} maps codes onto {stray}, which are not among its "
                                     f"canonical values {value_map.canonical}")
            if value_map.canonical == "identifier_types":
                stray = sorted({v for v in value_map.values.values() if v is not None} - set(self.identifier_types))
                if stray:
                    raise ValueError(f"value_maps.{name} maps codes onto {stray}, which are not declared "
                                     f"identifier_types")
        for entity_name, entity in self.entities.items():
            for field_name, spec in entity.fields.items():
                where = f"entities.{entity_name}.fields.{field_name}"
                if spec.identifier is not None and spec.identifier not in self.identifier_types:
                    raise ValueError(f"{where}: identifier '{spec.identifier}' is not one of the identifier_types "
                                     f"{sorted(self.identifier_types)}")
                if spec.identifier is not None and spec.normaliser not in (None, self.normaliser_of(entity_name, field_name)):
                    raise ValueError(f"{where}: an identifier field takes its type's normaliser "
                                     f"'{self.identifier_types[spec.identifier].normaliser}'; leave `normaliser` out")
                if spec.values is not None and spec.values not in self.value_maps:
                    raise ValueError(f"{where}: values '{spec.values}' is not one of the value_maps "
                                     f"{sorted(self.value_maps)}")
                if spec.values is not None and spec.type != "string":
                    raise ValueError(f"{where}: a code map applies to string fields only")
        return self

    def normaliser_of(self, entity: str, field: str) -> str:
        """The normaliser a field's values go through: its identifier type's, its own, or its type's."""
        spec = self.entities[entity].fields[field]
        if spec.identifier is not None:
            return self.identifier_types[spec.identifier].normaliser
        return spec.normaliser or DEFAULT_NORMALISERS[spec.type]

    def closed_set(self, value_map: str | None, purposes: list[str] | None = None) -> list[str] | None:
        """The canonical values of a code map, or None for an open set (or purposes not known here)."""
        if value_map is None:
            return None
        canonical = self.value_maps[value_map].canonical
        if canonical == "identifier_types":
            return list(self.identifier_types)
        if canonical == "purposes":
            return purposes
        return canonical

    def with_time(self) -> list[str]:
        """The entities whose records happen at a time: tags can count over them."""
        return [name for name, e in self.entities.items() if e.time_field is not None]

