"""conf/identity.yaml: identifier types, hygiene, over-merge guards, components and the probabilistic engine."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cdp.conf.base import Strict


class Components(Strict):
    """GraphFrames' connectedComponents: which algorithm, and how (docs/performance.md measures them)."""

    algorithm: Literal["two_phase", "graphx", "randomized_contraction"] = "graphx"
    broadcast_threshold: int = -1
    checkpoint_interval: int = 2


class Blocklist(Strict):
    values: dict[str, list[str]] = Field(default_factory=dict)
    patterns: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for id_type, patterns in value.items():
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"pattern '{pattern}' for {id_type} is not a regex: {exc}") from exc
        return value


class IdentifierType(Strict):
    """How strongly one identifier type (declared in conf/model.yaml, with its normaliser) links, and
    how many of it one person may have."""

    priority: int = Field(ge=1)  # 1 is the strongest; stronger links are kept first when a component must split
    max_per_person: int = Field(ge=1)  # more distinct values in one person is an over-merge: the weakest links go
    max_shared_by: int | None = Field(default=None, ge=1)  # distinct anchor identities one value may link; more = suspended
    gold: Literal["clear", "hash"] = "clear"  # how gold.identity_map shows the value
    # A weak type (a family's phone, a shared e-mail): a link by it between two groups of records is
    # refused when these comparisons of the probabilistic model say the groups are different people.
    veto_on_conflict: list[str] = Field(default_factory=list)


class Guards(Strict):
    max_records_per_person: int = Field(default=5000, ge=1)  # hard cap on a OneID's size
    # A pair of records contradicts when the match weights of its veto comparisons sum below this
    # (log2 odds: -4 is 16 to 1 against being one person); two groups linked only by a weak value
    # are kept apart when every compared pair across them contradicts.
    veto_below: float = -4.0


class Suspicion(Strict):
    """Data-driven detection of values shared by strangers (a store's walk-in phone, a shared tablet)."""

    anchors: list[str] = Field(default_factory=list)  # identifier types that stand for one person each
    max_records: int = Field(default=10000, ge=1)  # a value on more records than this is suspended whatever its anchors


class FieldComparison(Strict):
    """How one field of two records is compared: agreement levels, strongest first."""

    column: str  # the attribute compared (a column of the linker's input)
    kind: Literal["exact", "jaro_winkler", "levenshtein", "date", "name_zh"]
    # jaro_winkler: similarity floors below exact, e.g. [0.92, 0.8]; levenshtein: distance ceilings
    # above exact, e.g. [1, 2]; date and name_zh have fixed levels (docs/identity.md).
    thresholds: list[float] = Field(default_factory=list)
    term_frequency: bool = False  # an exact match on a rare value weighs more than on a common one

    @model_validator(mode="after")
    def _thresholds_fit(self) -> FieldComparison:
        if self.kind in ("jaro_winkler", "levenshtein") and not self.thresholds:
            raise ValueError(f"{self.kind} on '{self.column}' needs thresholds, e.g. [0.92, 0.8] or [1, 2]")
        if self.kind in ("exact", "date", "name_zh") and self.thresholds:
            raise ValueError(f"{self.kind} on '{self.column}' takes no thresholds")
        if self.kind == "jaro_winkler" and any(not 0 < t < 1 for t in self.thresholds):
            raise ValueError(f"jaro_winkler thresholds on '{self.column}' must lie between 0 and 1")
        if self.thresholds != sorted(self.thresholds, reverse=self.kind == "jaro_winkler"):
            raise ValueError(f"thresholds on '{self.column}' must go from the strongest agreement to the weakest")
        return self


def rule_columns(rule: str) -> set[str]:
    """The attribute columns a blocking rule reads (l.x / r.x; x__pinyin counts as x)."""
    return {name.split("__")[0] for name in re.findall(r"\b[lr]\.([A-Za-z_][A-Za-z0-9_]*)", rule)}


class Linkage(Strict):
    """The probabilistic engine (Fellegi–Sunter, weights estimated by EM without labels)."""

    enabled: bool = False
    # entity -> compared field -> the silver column that holds it (records without any are not compared).
    # A field named like an identifier type (phone, email) loses values refused by hygiene.
    attributes: dict[str, dict[str, str]] = Field(default_factory=dict)
    # SQL conditions over l.<column> and r.<column>; a pair is a candidate when any of them holds.
    blocking: list[str] = Field(default_factory=list)
    comparisons: dict[str, FieldComparison] = Field(default_factory=dict)
    # Rules whose pairs train m by EM (default: the blocking rules). Within a rule's pairs the fields
    # it reads agree by construction, so a rule trains only the other comparisons; each comparison
    # is trained by the first rule that does not read it.
    training: list[str] = Field(default_factory=list)
    threshold: float = Field(default=0.5, gt=0, lt=1)  # match probability at or above which a pair links
    u_sample_pairs: int = Field(default=1_000_000, ge=1000)  # random pairs that estimate non-match agreement
    em_iterations: int = Field(default=50, ge=1)
    em_tolerance: float = Field(default=1e-6, gt=0)

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Linkage:
        if self.enabled and (not self.blocking or not self.comparisons):
            raise ValueError("an enabled probabilistic engine needs blocking rules and comparisons")
        for rule in [*self.blocking, *self.training]:
            if "l." not in rule or "r." not in rule:
                raise ValueError(f"rule '{rule}' must compare l.<column> with r.<column>")
        training = self.training or self.blocking
        for name, comparison in self.comparisons.items():
            if training and all(comparison.column in rule_columns(rule) for rule in training):
                raise ValueError(f"every training rule reads '{comparison.column}', so comparison '{name}' cannot be "
                                 "trained: add a training rule that does not use it")
        model = (info.context or {}).get("model")
        for entity, mapping in self.attributes.items() if model is not None else ():
            if entity not in model.entities:
                raise ValueError(f"attributes names unknown entity '{entity}'; one of {sorted(model.entities)}")
            missing = sorted(set(mapping.values()) - set(model.entities[entity].fields))
            if missing:
                raise ValueError(f"attributes.{entity} maps columns {missing} that silver {entity} does not have")
        if self.attributes:
            fields = {f for mapping in self.attributes.values() for f in mapping}
            for name, comparison in self.comparisons.items():
                if comparison.column not in fields:
                    raise ValueError(f"comparison '{name}' compares '{comparison.column}', which no entity under attributes provides")
        return self


class IdentityConfig(Strict):
    components: Components = Field(default_factory=Components)
    identifiers: dict[str, IdentifierType]
    guards: Guards = Field(default_factory=Guards)
    suspicious: Suspicion = Field(default_factory=Suspicion)
    blocklist: Blocklist = Field(default_factory=Blocklist)
    probabilistic: Linkage = Field(default_factory=Linkage)

    @property
    def identifier_types(self) -> list[str]:
        return list(self.identifiers)

    @model_validator(mode="after")
    def _types_known(self, info: ValidationInfo) -> IdentityConfig:
        model = (info.context or {}).get("model")
        if model is not None:
            declared = set(model.identifier_types) | {"probabilistic"}
            unknown = sorted(set(self.identifiers) - declared)
            if unknown:
                raise ValueError(f"identifiers {unknown} are not declared in conf/model.yaml identifier_types. "
                                 "Fix: declare each there with its normaliser")
            unruled = sorted(set(model.identifier_types) - set(self.identifiers))
            if unruled:
                raise ValueError(f"identifier types {unruled} of conf/model.yaml have no rule here. Fix: give each "
                                 "identifiers.<type>: {priority: …, max_per_person: …}")
        for where, names in (
            ("blocklist.values", self.blocklist.values),
            ("blocklist.patterns", self.blocklist.patterns),
            ("suspicious.anchors", self.suspicious.anchors),
        ):
            unknown = sorted(set(names) - set(self.identifiers))
            if unknown:
                raise ValueError(f"{where} names unknown identifier types {unknown}; declare them under identifiers")
        if self.probabilistic.enabled:
            if "probabilistic" not in self.identifiers:
                raise ValueError("probabilistic.enabled needs an identifier type 'probabilistic' (its priority and "
                                 "max_per_person rule its links in the guards)")
            if not self.probabilistic.attributes:
                raise ValueError("probabilistic.enabled needs probabilistic.attributes (which silver fields are compared)")
        for id_type, rule in self.identifiers.items():
            if rule.veto_on_conflict and not self.probabilistic.enabled:
                raise ValueError(f"identifiers.{id_type}.veto_on_conflict uses the probabilistic model's comparisons. "
                                 "Fix: set probabilistic.enabled: true, or remove veto_on_conflict")
            unknown = sorted(set(rule.veto_on_conflict) - set(self.probabilistic.comparisons))
            if unknown:
                raise ValueError(f"identifiers.{id_type}.veto_on_conflict names {unknown}, which are not comparisons; "
                                 f"one of {sorted(self.probabilistic.comparisons)}")
        return self

    @property
    def vetoes(self) -> dict[str, list[str]]:
        """Weak identifier type -> the comparisons whose contradiction refuses a link by it."""
        return {t: rule.veto_on_conflict for t, rule in self.identifiers.items() if rule.veto_on_conflict}
