"""The tag library (标签库) in conf/tags.yaml: definitions, governance fields, and their dependency order.

Three layers, as the business defines them:

- **atomic** (原子标签): straight from data — a row expression over the profile, or an aggregate
  over the person's orders or events (windows relative to the run date through `days_ago`);
  optionally scored into quantile bins (`score`), which is how RFM scores are made.
- **derived** (衍生标签): an expression over atomic and other derived tags.
- **scenario** (场景标签): an expression over any tags, for a campaign.

Everything here is checked without Spark when the file loads (structure, layers, references,
cycles, parameters); `cdp.tags.engine.compile_library` then checks each expression against the
real schemas before anything is written.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cdp.conf.base import Strict, require_snake_case

Layer = Literal["atomic", "derived", "scenario"]
TagType = Literal["boolean", "string", "integer", "decimal", "double", "date"]
SPARK_TYPES = {
    "boolean": "boolean", "string": "string", "integer": "int", "decimal": "decimal(14,2)",
    "double": "double", "date": "date",
}
# What a tag of each layer may read: atomic tags read data, the others read tags.
LAYER_RANK = {"atomic": 0, "derived": 1, "scenario": 2}
RESERVED = {"one_id", "run_date", "days_ago", "tag", "profile"}
REALTIME_SOURCE = "events"  # the entity whose sources `cdp stream` follows

_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_IDENTIFIER = re.compile(r"`([^`]+)`|\b([A-Za-z_][A-Za-z0-9_]*)\b")


class Score(Strict):
    """Bin the tag's value into `bins` quantiles among persons who have a value: 1 (lowest) … bins.

    Bin edges are the exact percentiles at 1/bins, 2/bins, …; equal values always get the same
    score (ties never split), so a bin can hold more or fewer than its share.
    """

    bins: int = Field(5, ge=2, le=100)
    higher_is_better: bool = True


class Tag(Strict):
    name_zh: str
    name_en: str
    layer: Layer
    category: str
    owner: str
    description: str
    version: int = Field(1, ge=1)
    status: Literal["active", "deprecated"] = "active"
    type: TagType
    # atomic: profile (a row expression) | an entity with a time field (an aggregate over the person's rows)
    source: str | None = None
    value: str
    default: str | int | float | bool | None = None  # atomic aggregates: for persons with no rows
    score: Score | None = None
    # gold.tag_history keeps when persons entered and left each value; by default for categories
    # (boolean, string and scored tags), not for measures that change every day (days since …)
    history: bool | None = None
    # also kept current by `cdp stream` in gold.realtime_tags, from each event as it lands (an
    # aggregate over the person's events, with the same expression the daily run computes)
    realtime: bool = False

    @model_validator(mode="after")
    def _layer_fields(self, info: ValidationInfo) -> Tag:
        model = (info.context or {}).get("model")
        sources = ["profile", *model.with_time()] if model is not None else None
        if self.source is not None and sources is not None and self.source not in sources:
            raise ValueError(f"source '{self.source}' is neither `profile` nor an entity with a time field: "
                             f"one of {sources} (conf/model.yaml)")
        if self.layer == "atomic":
            if self.source is None:
                raise ValueError("an atomic tag needs `source: profile` or an entity with a time field (orders, events …)")
        else:
            for key in ("source", "score", "default"):
                if getattr(self, key) is not None:
                    raise ValueError(f"`{key}` is for atomic tags only; a {self.layer} tag reads other tags")
        if self.score is not None and self.type != "integer":
            raise ValueError("a scored tag is an integer (its bin, 1 … bins); set `type: integer`")
        if self.realtime and (self.layer != "atomic" or self.source != REALTIME_SOURCE or self.score is not None):
            raise ValueError(f"a realtime tag is an unscored atomic aggregate over `source: {REALTIME_SOURCE}`, "
                             "the entity `cdp stream` reads as it lands")
        if self.default is not None and self.source == "profile":
            raise ValueError("`default` is for orders/events aggregates (persons with no rows); use coalesce() here")
        return self

    @property
    def spark_type(self) -> str:
        return SPARK_TYPES[self.type]

    @property
    def tracked(self) -> bool:
        if self.history is not None:
            return self.history
        return self.type in ("boolean", "string") or self.score is not None


def identifiers(expression: str) -> set[str]:
    """Names an expression mentions outside string literals (a superset of its column references)."""
    stripped = _QUOTED.sub(" ", expression)
    return {quoted or bare for quoted, bare in _IDENTIFIER.findall(stripped)}


class TagLibrary(Strict):
    params: dict[str, int | float | str] = Field(default_factory=dict)
    tags: dict[str, Tag]

    @field_validator("tags")
    @classmethod
    def _codes(cls, tags: dict[str, Tag]) -> dict[str, Tag]:
        require_snake_case(tags, "tag code", "a column name", reserved=RESERVED)
        return tags

    @model_validator(mode="after")
    def _references(self) -> TagLibrary:
        for code, tag in self.tags.items():
            for name in _PARAM.findall(tag.value):
                if name not in self.params:
                    raise ValueError(f"tag '{code}': parameter ${{{name}}} is not defined under params "
                                     f"(defined: {sorted(self.params)})")
            for name in self.depends_on(code):
                if LAYER_RANK[self.tags[name].layer] > LAYER_RANK[tag.layer]:
                    raise ValueError(f"tag '{code}' ({tag.layer}) reads '{name}' ({self.tags[name].layer}); "
                                     "derived tags read atomic and derived tags, scenario tags read any")
        self.order()  # raises on a cycle
        return self

    def expression(self, code: str) -> str:
        """The tag's value with ${params} substituted."""
        return _PARAM.sub(lambda m: str(self.params[m.group(1)]), self.tags[code].value)

    def depends_on(self, code: str) -> list[str]:
        """Tags this tag reads (itself included, if it does: that is a cycle); atomic tags read data."""
        if self.tags[code].layer == "atomic":
            return []
        return sorted(name for name in identifiers(self.expression(code)) if name in self.tags)

    def used_by(self, code: str) -> list[str]:
        return sorted(other for other in self.tags if code in self.depends_on(other))

    def order(self) -> list[str]:
        """Every tag code, each after the tags it reads; a cycle raises naming its tags."""
        done: list[str] = []
        state: dict[str, str] = {}

        def visit(code: str, path: list[str]) -> None:
            if state.get(code) == "done":
                return
            if state.get(code) == "visiting":
                cycle = path[path.index(code):] + [code]
                raise ValueError(f"tag '{code}': dependency cycle {' → '.join(cycle)}")
            state[code] = "visiting"
            for name in self.depends_on(code):
                visit(name, path + [code])
            state[code] = "done"
            done.append(code)

        for code in sorted(self.tags, key=lambda c: (LAYER_RANK[self.tags[c].layer], c)):
            visit(code, [])
        return done
