"""conf/quality.yaml: the data-quality rules per source, with their warn and fail thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdp.conf.base import Strict


RuleFamily = Literal["completeness", "validity", "uniqueness", "consistency", "freshness"]


class QualityRule(Strict):
    name: str
    source: str
    family: RuleFamily
    field: str | None = None
    max_age_days: int | None = Field(None, gt=0)
    warn_above: float | None = Field(None, ge=0, le=1)
    fail_above: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _family_arguments(self) -> QualityRule:
        if self.family == "completeness" and not self.field:
            raise ValueError(f"rule '{self.name}': completeness needs 'field'")
        if self.family == "freshness" and not self.max_age_days:
            raise ValueError(f"rule '{self.name}': freshness needs 'max_age_days'")
        if self.family == "consistency" and self.field != "id_card":
            raise ValueError(f"rule '{self.name}': consistency checks field 'id_card' against declared birth date and gender")
        if self.warn_above is not None and self.fail_above is not None and self.warn_above > self.fail_above:
            raise ValueError(f"rule '{self.name}': warn_above must not exceed fail_above")
        return self


class QualityConfig(Strict):
    rules: list[QualityRule]

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, value: list[QualityRule]) -> list[QualityRule]:
        names = [r.name for r in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique; repeated: {repeated}")
        return value
