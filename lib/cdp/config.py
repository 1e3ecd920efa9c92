"""Load and validate conf/*.yaml once, failing fast with the file, the key and the fix."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from cdp.cleanse.entities import ENTITIES
from cdp.cleanse.normalisers import NORMALISERS
from cdp.confbase import Strict, require_snake_case
from cdp.tags.library import TagLibrary


class ConfigError(Exception):
    """A configuration problem a person can fix: names the file, the key and the fix."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, *, file: Path, key: str) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset ${VAR} without a default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{file}: key '{key}' needs environment variable {name}, which is not set. "
            f"Fix: export {name}=... or give a default as ${{{name}:-value}}."
        )

    return _ENV_REF.sub(substitute, value)


def required_variables(value: str) -> list[str]:
    """The ${VAR} a value reads without a default: what every environment running it must export."""
    return [match.group(1) for match in _ENV_REF.finditer(value) if match.group(2) is None]


_Strict = Strict


# ---------------------------------------------------------------- pipeline.yaml


class Profile(_Strict):
    master: str | None = None
    lakehouse: str
    landing: str
    metastore: Literal["embedded", "external"] = "embedded"
    checkpoint_dir: str | None = None
    timezone: str = "Asia/Shanghai"
    # A laptop or test profile may fall back to fixed development keys when CDP_HASH_KEY /
    # CDP_ENCRYPTION_KEY are unset; a cluster profile must not (privacy.yaml `secrets`).
    dev_secrets: bool = False
    spark_conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # YAML reads 8 as an int and true as a bool; Spark wants strings.
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value


class Jars(_Strict):
    packages: list[str]
    staged_dir: str | None = None
    graphframes_package: str

    @field_validator("packages")
    @classmethod
    def _maven_coordinates(cls, value: list[str]) -> list[str]:
        for coordinate in value:
            if coordinate.count(":") != 2:
                raise ValueError(f"'{coordinate}' is not a Maven coordinate group:artifact:version")
        return value


class PipelineConfig(_Strict):
    default_profile: str
    profiles: dict[str, Profile]
    jars: Jars

    @model_validator(mode="after")
    def _default_exists(self) -> PipelineConfig:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile '{self.default_profile}' is not one of {sorted(self.profiles)}"
            )
        return self


# ---------------------------------------------------------------- sources.yaml


def known_normaliser(value: str) -> str:
    if value not in NORMALISERS:
        raise ValueError(f"unknown normaliser '{value}'; choose one of {sorted(NORMALISERS)}")
    return value


NormaliserName = Annotated[str, AfterValidator(known_normaliser)]


class FieldMapping(_Strict):
    column: str
    normaliser: NormaliserName = "trim"



class Source(_Strict):
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


class SourcesConfig(_Strict):
    sources: dict[str, Source]

    @field_validator("sources")
    @classmethod
    def _snake_case_names(cls, value: dict[str, Source]) -> dict[str, Source]:
        require_snake_case(value, "source name", "a table name")
        return value


# ---------------------------------------------------------------- identity.yaml


class Components(_Strict):
    engine: Literal["auto", "graphframes", "dataframe"] = "auto"
    algorithm: Literal["two_phase", "graphx", "randomized_contraction"] = "two_phase"
    broadcast_threshold: int = -1
    checkpoint_interval: int = 2


class Blocklist(_Strict):
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


class IdentifierType(_Strict):
    """One kind of identifier: how strongly it links, and how many of it one person may have."""

    priority: int = Field(ge=1)  # 1 is the strongest; stronger links are kept first when a component must split
    max_per_person: int = Field(ge=1)  # more distinct values in one person is an over-merge: the weakest links go
    normaliser: NormaliserName = "trim"  # the silver normaliser that produced the value (see docs/configuration.md)
    max_shared_by: int | None = Field(default=None, ge=1)  # distinct anchor identities one value may link; more = suspended
    gold: Literal["clear", "hash"] = "clear"  # how gold.identity_map shows the value



class Guards(_Strict):
    max_records_per_person: int = Field(default=5000, ge=1)  # hard cap on a OneID's size


class Suspicion(_Strict):
    """Data-driven detection of values shared by strangers (a store's walk-in phone, a shared tablet)."""

    anchors: list[str] = Field(default_factory=list)  # identifier types that stand for one person each
    max_records: int = Field(default=10000, ge=1)  # a value on more records than this is suspended whatever its anchors


class FieldComparison(_Strict):
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


class Linkage(_Strict):
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
    def _complete(self) -> Linkage:
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
        for entity, mapping in self.attributes.items():
            if entity not in ENTITIES:
                raise ValueError(f"attributes names unknown entity '{entity}'; one of {sorted(ENTITIES)}")
            missing = sorted(set(mapping.values()) - set(ENTITIES[entity].fields))
            if missing:
                raise ValueError(f"attributes.{entity} maps columns {missing} that silver {entity} does not have")
        if self.attributes:
            fields = {f for mapping in self.attributes.values() for f in mapping}
            for name, comparison in self.comparisons.items():
                if comparison.column not in fields:
                    raise ValueError(f"comparison '{name}' compares '{comparison.column}', which no entity under attributes provides")
        return self


class IdentityConfig(_Strict):
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
    def _types_known(self) -> IdentityConfig:
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
        return self


# ---------------------------------------------------------------- gold.yaml


Criterion = Literal["verified", "priority", "recency", "frequency", "completeness"]


class Candidate(_Strict):
    """Where an attribute's value can come from: a silver entity and a Spark SQL expression over its row."""

    entity: str
    value: str
    time: str | None = None  # when the value was observed; default: the entity's own time field
    verified: str = "false"  # a condition marking the value as verified (e.g. read off a valid 身份证)

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, value: str) -> str:
        if value not in ENTITIES or value == "consent_events":
            raise ValueError(f"'{value}' is not a silver entity with person attributes; one of "
                             f"{sorted(e for e in ENTITIES if e != 'consent_events')}")
        return value


class Survivorship(_Strict):
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


PROFILE_COLUMNS = (
    "one_id", "provenance", "has_phone", "has_email", "phone_masked", "email_masked", "phone_enc", "email_enc",
    "channels", "first_seen", "last_seen",
    "last_active_at", "record_count", "order_count", "total_spend", "first_order_at", "last_order_at",
    "consented_purposes", "withdrawn_purposes",
)


class GoldConfig(_Strict):
    survivorship: dict[str, Survivorship]

    @field_validator("survivorship")
    @classmethod
    def _attribute_names(cls, value: dict[str, Survivorship]) -> dict[str, Survivorship]:
        require_snake_case(value, "attribute", "a gold.customer_profile column", reserved=PROFILE_COLUMNS)
        return value


# ---------------------------------------------------------------- privacy.yaml

Level = Literal["public", "internal", "sensitive", "highly_sensitive"]
LEVELS: tuple[str, ...] = ("public", "internal", "sensitive", "highly_sensitive")
MASKS = ("phone", "id_card", "email", "name", "year", "hide")


class Purpose(_Strict):
    """A purpose personal data may be used for (PIPL: 目的明确), its consent default and what an export carries."""

    default: Literal["opt_in", "opt_out"]  # opt_in: needs a grant; opt_out: allowed until withdrawn
    description: str
    contact: Literal["phone", "email", "phone_sha256", "none"] = "none"


class ColumnClass(_Strict):
    level: Level
    mask: Literal["phone", "id_card", "email", "name", "year", "hide"] | None = None


class Secrets(_Strict):
    """Names of the environment variables holding the keys; the keys themselves never live in conf."""

    hash_key_env: str = "CDP_HASH_KEY"
    encryption_key_env: str = "CDP_ENCRYPTION_KEY"
    previous_encryption_key_env: str = "CDP_ENCRYPTION_KEY_PREVIOUS"


class Role(_Strict):
    description: str
    tables: list[str] = Field(min_length=1)  # gold tables this role gets a view of
    clear: list[Level]  # levels shown as stored
    masked: list[Level] = Field(default_factory=list)  # levels shown through the column's mask
    consented_only: bool = False  # rows with a purpose are kept only while consent allows it


class PrivacyConfig(_Strict):
    purposes: dict[str, Purpose] = Field(min_length=1)
    secrets: Secrets = Field(default_factory=Secrets)
    vacuum_retention_hours: int = Field(168, ge=0)
    layers: dict[Literal["bronze", "silver", "identity", "ops"], Level]
    classification: dict[str, dict[str, Level | ColumnClass]]
    roles: dict[str, Role] = Field(min_length=1)

    @property
    def defaults(self) -> dict[str, str]:
        """purpose → opt_in | opt_out."""
        return {name: p.default for name, p in self.purposes.items()}

    def column(self, table: str, column: str) -> ColumnClass | None:
        entry = self.classification.get(table, {}).get(column)
        return ColumnClass(level=entry) if isinstance(entry, str) else entry

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyConfig:
        require_snake_case(self.purposes, "purpose", "a consent purpose")
        require_snake_case(self.roles, "role", "a SQL schema of views")
        for table in self.classification:
            if not table.startswith("gold."):
                raise ValueError(f"classification.{table}: list gold tables here; other layers take "
                                 f"their level from `layers`")
        for name, role in self.roles.items():
            for table in role.tables:
                if table not in self.classification:
                    raise ValueError(f"roles.{name}.tables: '{table}' is not classified; "
                                     f"add it under classification first")
                for column in self.classification[table]:
                    entry = self.column(table, column)
                    if entry.level in role.masked and entry.mask is None:
                        raise ValueError(f"classification.{table}.{column}: role '{name}' sees "
                                         f"{entry.level} columns masked, so this column needs a `mask` "
                                         f"(one of {', '.join(MASKS)})")
        return self


# ---------------------------------------------------------------- audiences.yaml


Comparison = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_null",
                     "within_days", "before", "after"]


class Audience(_Strict):
    name_zh: str
    description: str
    owner: str
    purpose: str
    status: Literal["active", "paused"] = "active"
    rule: dict[str, Any]  # all / any / not / a condition: see cdp.audience.rules


class AudiencesConfig(_Strict):
    audiences: dict[str, Audience]


# ---------------------------------------------------------------- quality.yaml

RuleFamily = Literal["completeness", "validity", "uniqueness", "consistency", "freshness"]


class QualityRule(_Strict):
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


class QualityConfig(_Strict):
    rules: list[QualityRule]

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, value: list[QualityRule]) -> list[QualityRule]:
        names = [r.name for r in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique; repeated: {repeated}")
        return value


# ---------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def _expand_tree(node: Any, *, file: Path, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _expand_tree(v, file=file, key=f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, file=file, key=f"{key}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return expand_env(node, file=file, key=key)
    return node


def load_model(path: Path, model: type[M], *, expand: bool = True) -> M:
    """Read one YAML file into a pydantic model, or raise ConfigError naming file, key and fix."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Fix: create it, or point CDP_CONF_DIR at the conf folder.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}.")
    if expand:
        raw = _expand_tree(raw, file=path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(whole file)"
            problems.append(f"  key '{key}': {err['msg']}")
        raise ConfigError(
            f"{path}: invalid configuration\n" + "\n".join(problems)
            + "\nFix: correct the keys above (see docs/configuration.md)."
        ) from exc


def default_conf_dir() -> Path:
    """CDP_CONF_DIR, else ./conf, else the conf/ folder of the source checkout."""
    if os.environ.get("CDP_CONF_DIR"):
        return Path(os.environ["CDP_CONF_DIR"]).resolve()
    cwd_conf = Path.cwd() / "conf"
    if (cwd_conf / "pipeline.yaml").is_file():
        return cwd_conf.resolve()
    return (Path(__file__).resolve().parents[2] / "conf").resolve()


@dataclass(frozen=True)
class Settings:
    """Everything a run needs: the chosen profile with resolved paths, and every conf file."""

    conf_dir: Path
    profile_name: str
    pipeline: PipelineConfig

    @property
    def profile(self) -> Profile:
        return self.pipeline.profiles[self.profile_name]

    @property
    def root(self) -> Path:
        return self.conf_dir.parent

    def resolve(self, location: str) -> str:
        """Absolute local path for a relative location; URIs (s3a://, hdfs://) pass through."""
        if "://" in location or location.startswith("/"):
            return location
        return str((self.root / location).resolve())

    @property
    def lakehouse(self) -> str:
        return self.resolve(self.profile.lakehouse)

    @property
    def landing(self) -> str:
        return self.resolve(self.profile.landing)

    @property
    def checkpoint_dir(self) -> str:
        if self.profile.checkpoint_dir:
            return self.resolve(self.profile.checkpoint_dir)
        return f"{self.lakehouse}/_checkpoints"

    @property
    def warehouse(self) -> str:
        return f"{self.lakehouse}/warehouse"

    @property
    def reports_dir(self) -> str:
        return f"{self.lakehouse}/reports"

    @cached_property
    def sources(self) -> SourcesConfig:
        return load_model(self.conf_dir / "sources.yaml", SourcesConfig)

    @cached_property
    def identity(self) -> IdentityConfig:
        return load_model(self.conf_dir / "identity.yaml", IdentityConfig)

    @cached_property
    def gold(self) -> GoldConfig:
        return load_model(self.conf_dir / "gold.yaml", GoldConfig)

    @cached_property
    def privacy(self) -> PrivacyConfig:
        return load_model(self.conf_dir / "privacy.yaml", PrivacyConfig)

    @cached_property
    def tags(self) -> TagLibrary:
        # ${name} in tags.yaml are the library's own params, not environment variables
        return load_model(self.conf_dir / "tags.yaml", TagLibrary, expand=False)

    @cached_property
    def audiences(self) -> AudiencesConfig:
        config = load_model(self.conf_dir / "audiences.yaml", AudiencesConfig)
        check_audiences(config, self.gold, self.privacy, self.tags, self.conf_dir / "audiences.yaml")
        return config

    @cached_property
    def quality(self) -> QualityConfig:
        return load_model(self.conf_dir / "quality.yaml", QualityConfig)

    def validate_all(self) -> None:
        """Load every conf file now, so a bad one fails before any Spark work starts."""
        _ = self.sources, self.identity, self.gold, self.privacy, self.tags, self.audiences
        check_quality_rules(self.quality, self.sources, self.conf_dir / "quality.yaml")


def check_audiences(config: AudiencesConfig, gold: GoldConfig, privacy: PrivacyConfig, tags: TagLibrary,
                    file: Path) -> None:
    """Each audience's purpose is declared and its rule is well formed over known tags."""
    from cdp.audience.rules import RuleError, compile_rule

    for name, audience in config.audiences.items():
        if audience.purpose not in privacy.purposes:
            raise ConfigError(f"{file}: key 'audiences.{name}.purpose': '{audience.purpose}' is not a declared "
                              f"purpose. Fix: one of {sorted(privacy.purposes)} (privacy.yaml purposes).")
        try:
            compile_rule(audience.rule, tags, set(PROFILE_COLUMNS) | set(gold.survivorship))
        except RuleError as exc:
            raise ConfigError(f"{file}: key 'audiences.{name}.rule': {exc}") from exc


def check_quality_rules(quality: QualityConfig, sources: SourcesConfig, file: Path) -> None:
    """Every rule names a configured source and, where it has one, a field that source maps."""
    for index, rule in enumerate(quality.rules):
        where = f"{file}: key 'rules[{index}]' ({rule.name})"
        source = sources.sources.get(rule.source)
        if source is None:
            raise ConfigError(f"{where}: source '{rule.source}' is not in sources.yaml. Fix: one of {sorted(sources.sources)}.")
        if rule.field and rule.field not in source.mapping:
            raise ConfigError(
                f"{where}: field '{rule.field}' is not mapped by source '{rule.source}'. "
                f"Fix: one of {sorted(source.mapping)}."
            )
        if rule.family == "consistency" and source.entity != "customers":
            raise ConfigError(f"{where}: consistency rules apply to customers sources only.")


def load_settings(profile: str | None = None, conf_dir: Path | str | None = None, *, expand: bool = True) -> Settings:
    """Load conf/pipeline.yaml and pick a profile (argument, CDP_PROFILE, or default_profile).

    expand=False keeps the profile's ${VAR} references as written: a release package is built once
    and each deployment fills them from its own environment at run time.
    """
    directory = Path(conf_dir).resolve() if conf_dir else default_conf_dir()
    pipeline_file = directory / "pipeline.yaml"
    # Profiles are expanded lazily: a cluster profile's required variables must not
    # break a laptop run that never uses that profile.
    pipeline = load_model(pipeline_file, PipelineConfig, expand=False)
    name = profile or os.environ.get("CDP_PROFILE") or pipeline.default_profile
    if name not in pipeline.profiles:
        raise ConfigError(
            f"{pipeline_file}: profile '{name}' is not defined under 'profiles'. "
            f"Fix: use one of {sorted(pipeline.profiles)}."
        )
    if not expand:
        return Settings(conf_dir=directory, profile_name=name, pipeline=pipeline)
    chosen = Profile.model_validate(
        _expand_tree(pipeline.profiles[name].model_dump(), file=pipeline_file, key=f"profiles.{name}")
    )
    jars = Jars.model_validate(_expand_tree(pipeline.jars.model_dump(), file=pipeline_file, key="jars"))
    resolved = pipeline.model_copy(update={"profiles": {**pipeline.profiles, name: chosen}, "jars": jars})
    return Settings(conf_dir=directory, profile_name=name, pipeline=resolved)
