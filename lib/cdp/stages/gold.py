"""The gold stage: consent state, the 360° profile, tags with their history and catalog, and
consent-filtered audiences with theirs — all keyed by the current one_id."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import reduce

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.audience.members import audience_frame, select_audience
from cdp.conf import ConfigError, Settings
from cdp.conf.audiences import compile_rule, referenced_tags
from cdp.conf.tags import TagLibrary
from cdp.identity.mapping import build_identity_map
from cdp.identity.registry import REGISTRY_SCHEMA
from cdp.lakehouse import append, overwrite_table, table_exists
from cdp.logs import first_line, timed_step
from cdp.privacy.consent import CONSENT_STATE_SCHEMA, consent_state
from cdp.privacy.protect import load_keys
from cdp.privacy.views import build_role_views
from cdp.profile.golden import build_customer_profile
from cdp.profile.history import HISTORY_COLUMNS, follow_merges, next_history
from cdp.tables import (
    AUDIENCE_HISTORY, AUDIENCE_RUNS, AUDIENCES, CONSENT, IDENTITY_MAP, ONEID_MAP, PROFILE, REGISTRY, TAG_CATALOG,
    TAG_HISTORY, TAGS, silver_table,
)
from cdp.tags.engine import Inputs, compile_library, compute_tags, empty_tags, to_long

log = logging.getLogger(__name__)

AUDIENCE_RUNS_SCHEMA = (
    "run_id string, run_date date, audience string, purpose string, matched long, members long, "
    "entered long, exited long, computed_at timestamp"
)


@dataclass
class GoldResult:
    profiles: int
    tag_rows: int
    consent_rows: int
    audience_sizes: dict[str, dict[str, int]]  # audience → matched (the rule holds), members (and consent allows)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for sizing
    views: list[str] = field(default_factory=list)  # the role views (re)built


def _entity_rows(spark: SparkSession, settings: Settings, entity: str) -> DataFrame:
    """A silver entity's rows with their one_id (empty, typed, when the entity has no table yet)."""
    table = silver_table(entity)
    if not table_exists(spark, table):
        fields = ", ".join(f"`{name}` {kind}" for name, kind in settings.model.entities[entity].types.items())
        return spark.createDataFrame([], f"one_id string, source string, record_key string, channel string, {fields}")
    return spark.table(table).join(spark.table(ONEID_MAP).select("source", "record_key", "one_id"), ["source", "record_key"])


def tag_inputs(spark: SparkSession, settings: Settings, profile: DataFrame) -> Inputs:
    """The profile, and the rows of every entity the tag library counts over."""
    sources = {t.source for t in settings.tags.tags.values() if t.source not in (None, "profile")}
    entities = settings.model.entities
    return Inputs(profile, {name: (_entity_rows(spark, settings, name), entities[name].time_field) for name in sources})


def deprecated_in_use(library: TagLibrary, audiences: dict) -> list[str]:
    """A warning for each deprecated tag still read by an active tag or audience (标签治理: retire it first)."""
    warnings = []
    for code, tag in library.tags.items():
        if tag.status != "deprecated":
            continue
        tags = [t for t in library.used_by(code) if library.tags[t].status == "active"]
        users = [n for n, a in audiences.items() if a.status == "active" and code in referenced_tags(a.rule)]
        if tags or users:
            warnings.append(f"tag '{code}' is deprecated but still used by tags {tags} and audiences {users}")
    return warnings


def tag_catalog(library: TagLibrary, audiences: dict, persons: dict[str, int], profiles: int, warnings: list[str],
                run_date: date, computed_at: datetime, spark: SparkSession) -> DataFrame:
    """gold.tag_catalog: the YAML's governance fields, the logic, dependencies, usage and coverage
    (`persons`: tag_code → persons tagged)."""
    rows = []
    for code in library.order():
        tag = library.tags[code]
        warning = next((w for w in warnings if w.startswith(f"tag '{code}'")), None)
        rows.append((
            code, tag.name_zh, tag.name_en, tag.layer, tag.category, tag.owner, tag.description, tag.version,
            tag.status, tag.type, tag.source, library.expression(code).strip(), library.depends_on(code),
            library.used_by(code), sorted(n for n, a in audiences.items() if code in referenced_tags(a.rule)),
            tag.tracked, persons.get(code, 0), round(persons.get(code, 0) / profiles, 6) if profiles else 0.0,
            warning, run_date, computed_at,
        ))
    schema = (
        "tag_code string, name_zh string, name_en string, layer string, category string, owner string, "
        "description string, version int, status string, value_type string, source string, logic string, "
        "depends_on array<string>, used_by_tags array<string>, used_by_audiences array<string>, "
        "history_tracked boolean, persons long, coverage double, warning string, run_date date, computed_at timestamp"
    )
    return spark.createDataFrame(rows, schema)


def _history(spark: SparkSession, table: str, keys: list[str], current: DataFrame, run_date: date,
             registry: DataFrame) -> DataFrame:
    """The next state of a membership history table, materialised (it is about to overwrite its source)."""
    if table_exists(spark, table):
        previous = follow_merges(spark, spark.table(table), registry)
    else:
        columns = ", ".join(f"{k} string" for k in keys)
        previous = spark.createDataFrame([], f"{columns}, {HISTORY_COLUMNS}")
    return next_history(previous, current, keys, run_date).checkpoint()


def build_tags(spark: SparkSession, settings: Settings, inputs: Inputs, run_date: date, computed_at: datetime,
               registry: DataFrame, warnings: list[str], profiles: int) -> tuple[DataFrame, int]:
    """Compute the tag library; write customer_tags, tag_history and tag_catalog. Returns the wide tags."""
    library = settings.tags
    wide = compute_tags(spark, library, inputs, run_date).persist()
    overwrite_table(to_long(wide, library, run_date, computed_at), TAGS,
                    "Tags per one_id (标签): boolean tags where true, other tags where they have a value")
    long = spark.table(TAGS)
    tracked = [code for code, tag in library.tags.items() if tag.tracked]
    history = _history(spark, TAG_HISTORY, ["one_id", "tag_code", "value"],
                       long.where(F.col("tag_code").isin(tracked)), run_date, registry)
    overwrite_table(history, TAG_HISTORY, "When each person entered and left each tag value (SCD2: exited_on null = current)")
    persons = {r["tag_code"]: r["n"] for r in long.groupBy("tag_code").agg(F.count("*").alias("n")).collect()}
    catalog = tag_catalog(library, settings.audiences.audiences, persons, profiles, warnings, run_date, computed_at, spark)
    overwrite_table(catalog, TAG_CATALOG, "The tag library (标签库): definitions, owners, versions, usage and coverage")
    return wide, sum(persons.values())


def check_definitions(spark: SparkSession, settings: Settings, inputs: Inputs, run_date: date) -> None:
    """Every tag expression and audience rule against the schemas they will read; nothing runs."""
    compile_library(spark, settings.tags, inputs, run_date)
    frame = audience_frame(inputs.profile, empty_tags(spark, settings.tags), run_date)
    for name, audience in settings.audiences.audiences.items():
        condition = compile_rule(audience.rule, settings.tags)
        try:
            frame.where(F.expr(condition)).schema
        except PySparkException as exc:
            raise ConfigError(f"audiences.yaml: key 'audiences.{name}.rule': Spark cannot use {condition}: "
                              f"{first_line(exc)}") from exc


def build_audiences(spark: SparkSession, settings: Settings, run_id: str, profile: DataFrame, wide: DataFrame,
                    state: DataFrame, run_date: date, computed_at: datetime,
                    registry: DataFrame) -> dict[str, dict[str, int]]:
    """Materialise every active audience, consent-filtered; keep entered/exited history and sizes per run."""
    frame = audience_frame(profile, wide, run_date).persist()
    members, matched, purposes = [], [], {}
    for name, audience in settings.audiences.audiences.items():
        if audience.status != "active":
            continue
        selection = select_audience(frame, audience, settings.tags, state, settings.privacy.defaults[audience.purpose])
        members.append(selection.members.select(F.lit(name).alias("audience"), "one_id",
                                                F.lit(audience.purpose).alias("purpose")))
        matched.append(selection.matched.select(F.lit(name).alias("audience")))
        purposes[name] = audience.purpose
    counts = {name: (purpose, 0) for name, purpose in purposes.items()}
    if matched:
        for r in reduce(DataFrame.unionByName, matched).groupBy("audience").count().collect():
            counts[r["audience"]] = (purposes[r["audience"]], r["count"])
    current = reduce(DataFrame.unionByName, members,
                     spark.createDataFrame([], "audience string, one_id string, purpose string")).checkpoint()
    history = _history(spark, AUDIENCE_HISTORY, ["audience", "one_id"], current, run_date, registry)
    overwrite_table(history, AUDIENCE_HISTORY, "When each person entered and left each audience (SCD2)")
    stays = spark.table(AUDIENCE_HISTORY).where(F.col("exited_on").isNull()).select("audience", "one_id", "entered_on")
    overwrite_table(
        current.join(stays, ["audience", "one_id"], "left").select(
            "audience", "one_id", "purpose", "entered_on", F.lit(run_date).cast("date").alias("run_date"),
            F.lit(computed_at).cast("timestamp").alias("computed_at")),
        AUDIENCES, "Audience members (人群圈选), consent-filtered for each audience's purpose",
    )
    moves = {
        (r["audience"], r["kind"]): r["n"]
        for r in spark.table(AUDIENCE_HISTORY)
        .select("audience", F.when(F.col("exited_on") == F.lit(run_date), "exited")
                .when(F.col("entered_on") == F.lit(run_date), "entered").alias("kind"))
        .where(F.col("kind").isNotNull()).groupBy("audience", "kind").agg(F.count("*").alias("n")).collect()
    }
    sizes = {r["audience"]: r["n"] for r in
             spark.table(AUDIENCES).groupBy("audience").agg(F.count("*").alias("n")).collect()}
    runs = [(run_id, run_date, name, purpose, matched, sizes.get(name, 0), moves.get((name, "entered"), 0),
             moves.get((name, "exited"), 0), computed_at) for name, (purpose, matched) in counts.items()]
    append(spark.createDataFrame(runs, AUDIENCE_RUNS_SCHEMA), AUDIENCE_RUNS)
    frame.unpersist()
    return {name: {"matched": matched, "members": sizes.get(name, 0)} for name, (_, matched) in counts.items()}


def _step(name: str, seconds: dict[str, float]):
    return timed_step("gold", name, seconds)


def build_gold(spark: SparkSession, settings: Settings, as_of: date, run_id: str = "gold") -> GoldResult:
    library, audiences = settings.tags, settings.audiences.audiences
    computed_at = datetime.now()
    seconds: dict[str, float] = {}
    keys = load_keys(settings)  # a missing secret fails here, before anything is read
    warnings = deprecated_in_use(library, audiences)
    for warning in warnings:
        log.warning("gold: %s", warning)

    consent_table = silver_table("consent_events")
    if table_exists(spark, consent_table):
        state = consent_state(spark.table(consent_table), spark.table(ONEID_MAP).select("source", "record_key", "one_id"))
    else:
        state = spark.createDataFrame([], CONSENT_STATE_SCHEMA)
    inputs = tag_inputs(spark, settings, build_customer_profile(spark, settings, state, keys))
    with _step("check", seconds):
        check_definitions(spark, settings, inputs, as_of)  # a bad tag or rule fails before anything is written

    with _step("consent_and_profile", seconds):
        overwrite_table(state, CONSENT, "Consent per one_id and purpose: each identity's latest event; the most "
                                    "restrictive across a person's identities, conflicts flagged")
        state = spark.table(CONSENT)
        overwrite_table(build_customer_profile(spark, settings, state, keys), PROFILE,
                        "One row per one_id: the golden record with provenance, and the 360° view")
        profile = spark.table(PROFILE)
        inputs = replace(inputs, profile=profile)
    with _step("identity_map", seconds):
        overwrite_table(build_identity_map(spark, settings, keys), IDENTITY_MAP,
                        "Each one_id's identifiers (主账号-子账号 mapping): first/last seen, sources; sensitive values hashed")

    registry = spark.table(REGISTRY) if table_exists(spark, REGISTRY) else spark.createDataFrame([], REGISTRY_SCHEMA)
    profiles = profile.count()
    with _step("tags", seconds):
        wide, tag_rows = build_tags(spark, settings, inputs, as_of, computed_at, registry, warnings, profiles)
    with _step("audiences", seconds):
        sizes = build_audiences(spark, settings, run_id, profile, wide, state, as_of, computed_at, registry)
    wide.unpersist()
    with _step("role_views", seconds):
        views = build_role_views(spark, settings)
    return GoldResult(
        profiles=profiles, tag_rows=tag_rows, consent_rows=state.count(), audience_sizes=sizes,
        warnings=warnings, seconds=seconds, views=views,
    )
