"""conf/gold.yaml: survivorship of the golden record, and the columns every profile has."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from cdp.conf.base import Strict, require_snake_case


Criterion = Literal["verified", "priority", "recency", "frequency", "completeness"]


class Candidate(Strict):
    """Where an attribute's value can come from: a silver entity and a Spark SQL expression over its row."""

    entity: str
    value: str
    time: str | None = None  # when the value was observed; default: the entity's own time field
    verified: str = "false"  # a condition marking the value as verified (e.g. read off a valid 身份证)

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, value: str, info: ValidationInfo) -> str:
        model = (info.context or {}).get("model")
        if model is not None and (value not in model.entities or model.entities[value].subject is not None):
            raise ValueError(f"'{value}' is not a silver entity with person attributes; one of "
                             f"{sorted(e for e, spec in model.entities.items() if spec.subject is None)}")
        return value


class Survivorship(Strict):
    """One golden attribute: its candidates, listed in priority order, and how to choose among them."""

    type: Literal["string", "date"] = "string"
    candidates: list[Candidate] = Field(min_length=1)
    prefer: list[Criterion] = Field(default_factory=lambda: ["priority", "recency"], min_length=1)

    @field_validator("prefer")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each criterion once: {value}")
        return value


# gold.customer_profile's columns beside the golden attributes, in order (the attributes follow one_id).
PROFILE_COLUMNS = (
    "one_id", "provenance", "has_phone", "has_email", "phone_masked", "email_masked", "phone_enc", "email_enc",
    "channels", "first_seen", "last_seen",
    "last_active_at", "record_count", "order_count", "total_spend", "first_order_at", "last_order_at",
    "consented_purposes", "withdrawn_purposes",
)


class GoldConfig(Strict):
    survivorship: dict[str, Survivorship]

    @field_validator("survivorship")
    @classmethod
    def _attribute_names(cls, value: dict[str, Survivorship]) -> dict[str, Survivorship]:
        require_snake_case(value, "attribute", "a gold.customer_profile column", reserved=PROFILE_COLUMNS)
        return value
