"""The gold stage: consent state, the 360° profile, tags with their history and catalog, and
consent-filtered audiences with theirs — all keyed by the current one_id.

A run recomputes the per-person tables (consent state, profile, identity map, the daily summaries
the tags count over) for the persons whose records, identifiers or identity changed since the run
before (ops.stage_cursors; Delta Change Data Feed on silver and on the identity tables gold reads),
and replaces just their rows. Tags and audiences, whose time windows move for everyone as days pass,
are then recomputed for every person from those compact tables: one row per person, and the
summaries, never the raw history. Everything is recomputed from silver on the first run, on
`cdp run --full`, when the tag library, audiences, gold, privacy, model or identity configuration or
the code changed, when an input was rewritten whole (a silver rebuild, an identity recompute of every
person) or written by something else (an erasure), when a change feed is gone, or when the last run
stopped while publishing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import reduce

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp import __version__

from cdp.activation import ACTIVATION_SCHEMA, activation_rows, live_state, split_audiences, transitions
from cdp.audience.members import audience_frame, select_audience
from cdp.conf import ConfigError, Settings
from cdp.conf.audiences import compile_rule, referenced_tags
from cdp.conf.tags import TagLibrary
from cdp.identity.mapping import build_identity_map
from cdp.identity.registry import REGISTRY_SCHEMA
from cdp.cursors import (
    PUBLISHING, Cursor, FeedInput, digest, feed_inputs, mark_publishing, read_cursors, unreadable_feed, write_cursors,
)
from cdp.lakehouse import (
    HOUSEKEEPING, append, commits_after, materialised, overwrite_table, read_changes,
    read_version, replace_rows, table_exists,
)
from cdp.logs import first_line, timed_step
from cdp.privacy.consent import CONSENT_STATE_SCHEMA, consent_state
from cdp.privacy.protect import load_keys
from cdp.privacy.views import build_role_views
from cdp.profile.golden import build_customer_profile, person_map
from cdp.profile.history import HISTORY_COLUMNS, follow_merges, next_history, survivors
from cdp.tables import (
    ACTIVATION_EVENTS,
    AUDIENCE_HISTORY, AUDIENCE_RUNS, AUDIENCES, CONSENT, IDENTIFIERS, IDENTITY_MAP, ONEID_MAP, PROFILE, REFUSED,
    REGISTRY, TAG_CATALOG, TAG_HISTORY, TAGS, VIOLATIONS, daily_table, silver_table,
)
from cdp.tags.engine import Inputs, compile_library, compute_tags, empty_tags, to_long
from cdp.tags.summaries import DAY, expand, read_columns, summarise_days

log = logging.getLogger(__name__)

AUDIENCE_RUNS_SCHEMA = (
    "run_id string, run_date date, audience string, purpose string, matched long, members long, "
    "entered long, exited long, computed_at timestamp, activations long"
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
    mode: str = "full"  # full: every person recomputed from silver; changes: the persons that changed
    persons_recomputed: int = 0  # persons whose profile, consent and summaries this run recomputed


STAGE = "gold"
KEYS = ["source", "record_key"]
VALUE = ["id_type", "id_value"]
PER_PERSON = (CONSENT, PROFILE, IDENTITY_MAP)  # replaced by one_id on a run over changes
# A run over changes restricts every read to the changed persons by broadcasting their one_ids:
# beyond this many, it recomputes every person instead.
MOST_PERSONS = 2_000_000
# Inputs written by the stages before gold in the ways gold can follow by their change feed.
FOLLOWED = ("WRITE", "MERGE", *HOUSEKEEPING)


def _entity_rows(spark: SparkSession, settings: Settings, entity: str, persons: DataFrame | None = None) -> DataFrame:
    """A silver entity's rows with their one_id (of `persons` only, when given; empty and typed when
    the entity has no table yet)."""
    table = silver_table(entity)
    if not table_exists(spark, table):
        fields = ", ".join(f"`{name}` {kind}" for name, kind in settings.model.entities[entity].types.items())
        return spark.createDataFrame([], f"one_id string, source string, record_key string, channel string, {fields}")
    return spark.table(table).join(person_map(spark, persons), ["source", "record_key"])


def tag_entities(settings: Settings) -> list[str]:
    """The entities some tag counts over (each has a daily summary)."""
    return sorted({t.source for t in settings.tags.tags.values() if t.source not in (None, "profile")})


def daily_summary(spark: SparkSession, settings: Settings, entity: str, persons: DataFrame | None = None) -> DataFrame:
    """The entity's per-person daily summary (tags.summaries), from its silver rows."""
    rows = _entity_rows(spark, settings, entity, persons)
    time_field = settings.model.entities[entity].time_field
    return summarise_days(rows, read_columns(settings.tags, entity, rows.columns), time_field)


def tag_inputs(spark: SparkSession, settings: Settings, profile: DataFrame) -> Inputs:
    """The profile, and each summarised entity's rows as the tags count them (from gold's summaries)."""
    return Inputs(profile, {name: (expand(spark.table(daily_table(name))), DAY) for name in tag_entities(settings)})


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


def write_history(spark: SparkSession, table: str, keys: list[str], current: DataFrame, run_date: date,
                  registry: DataFrame, comment: str) -> int:
    """Bring a membership history table to `current`, rewriting only the rows of the persons whose
    stays change: a stay begins or ends, or the person's one_id was retired since the last run (its
    stays move to the survivor). Returns how many persons' rows were rewritten."""
    if not table_exists(spark, table):
        columns = ", ".join(f"{k} string" for k in keys)
        empty = spark.createDataFrame([], f"{columns}, {HISTORY_COLUMNS}")
        overwrite_table(next_history(empty, current, keys, run_date), table, comment)
        return spark.table(table).select("one_id").distinct().count()
    stored = spark.table(table)
    moves = survivors(registry, stored)
    previous = follow_merges(spark, stored, moves)
    open_ = previous.where(F.col("exited_on").isNull()).select(*keys).distinct()
    now = current.select(*keys).distinct()
    moved = spark.createDataFrame([(i,) for pair in moves.items() for i in pair if i is not None], "one_id string")
    persons = (open_.exceptAll(now).unionByName(now.exceptAll(open_)).select("one_id")
               .unionByName(moved).distinct().transform(materialised))
    changed = persons.count()
    if not changed:  # nobody's stays change (a rerun, a quiet day): no commit, the table as it was
        return 0
    rows = next_history(previous.join(persons, "one_id", "left_semi"), current.join(persons, "one_id", "left_semi"),
                        keys, run_date).transform(materialised)  # computed before its source is rewritten
    replace_rows(spark, table, persons, rows, ["one_id"])
    return changed


def build_tags(spark: SparkSession, settings: Settings, inputs: Inputs, run_date: date, computed_at: datetime,
               registry: DataFrame, warnings: list[str], profiles: int) -> tuple[DataFrame, int]:
    """Compute the tag library for every person; write customer_tags, tag_history and tag_catalog.
    Returns the wide tags."""
    library = settings.tags
    wide = compute_tags(spark, library, inputs, run_date).persist()
    overwrite_table(to_long(wide, library, run_date, computed_at), TAGS,
                    "Tags per one_id (标签): boolean tags where true, other tags where they have a value")
    long = spark.table(TAGS)
    tracked = [code for code, tag in library.tags.items() if tag.tracked]
    write_history(spark, TAG_HISTORY, ["one_id", "tag_code", "value"], long.where(F.col("tag_code").isin(tracked)),
                  run_date, registry, "When each person entered and left each tag value (SCD2: exited_on null = current)")
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
    write_history(spark, AUDIENCE_HISTORY, ["audience", "one_id"], current, run_date, registry,
                  "When each person entered and left each audience (SCD2)")
    activations = log_activations(spark, settings, current, run_id, computed_at)
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
             moves.get((name, "exited"), 0), computed_at, activations.get(name, 0))
            for name, (purpose, matched) in counts.items()]
    append(spark.createDataFrame(runs, AUDIENCE_RUNS_SCHEMA), AUDIENCE_RUNS)
    frame.unpersist()
    return {name: {"matched": matched, "members": sizes.get(name, 0)} for name, (_, matched) in counts.items()}


def log_activations(spark: SparkSession, settings: Settings, current: DataFrame, run_id: str,
                    computed_at: datetime) -> dict[str, int]:
    """Append to gold.activation_events who entered and who left each audience over daily tags since
    the log's last event for them (the stream writes those of the realtime audiences). A rerun finds
    its own events in the log and adds none. Returns the events per audience."""
    daily, _ = split_audiences(settings.audiences.audiences, settings.tags)
    if not daily:
        return {}
    log_ = (spark.table(ACTIVATION_EVENTS).where(F.col("audience").isin(*daily)) if table_exists(spark, ACTIVATION_EVENTS)
            else spark.createDataFrame([], ACTIVATION_SCHEMA))
    moves = transitions(current.where(F.col("audience").isin(*daily)), live_state(log_))
    rows = activation_rows(moves, {n: a.purpose for n, a in daily.items()}, computed_at, "daily", run_id).checkpoint()
    counts = {r["audience"]: r["n"] for r in rows.groupBy("audience").agg(F.count("*").alias("n")).collect()}
    if counts:
        append(rows, ACTIVATION_EVENTS, change_feed=True)
    return counts


def _step(name: str, seconds: dict[str, float]):
    return timed_step("gold", name, seconds)


def gold_inputs(spark: SparkSession, settings: Settings) -> list[FeedInput]:
    """What the per-person tables are computed from, each with its Change Data Feed on: the silver
    entities and identifiers, the map, and the identity tables that decide which identifiers count."""
    return feed_inputs(spark, sorted({silver_table(e) for e in settings.model.entities}
                                     | {IDENTIFIERS, ONEID_MAP, REFUSED, VIOLATIONS}))


def gold_fingerprint(settings: Settings) -> str:
    """What gold's tables depend on besides its inputs: the tag library, audiences, survivorship,
    consent defaults, the data model, identity.yaml (which identifiers show hashed), the code."""
    described = {name: getattr(settings, name).model_dump(mode="json")
                 for name in ("tags", "audiences", "gold", "privacy", "model", "identity")}
    described["version"] = __version__
    return digest(described)


def gold_tables(settings: Settings) -> list[str]:
    return [*PER_PERSON, *(daily_table(e) for e in tag_entities(settings))]


def why_rebuild(spark: SparkSession, settings: Settings, inputs: list[FeedInput], cursors: dict[str, Cursor],
                fingerprint: str) -> str | None:
    """Why this run must recompute every person from silver; None when it can follow the changes."""
    if not cursors:
        return "no earlier gold run recorded what it read"
    if PUBLISHING in cursors:
        return "the last run stopped while publishing"
    if any(c.fingerprint != fingerprint for c in cursors.values()):
        return "the tags, audiences, gold, privacy, model or identity configuration or the code changed since the last run"
    read = {i.table for i in inputs}
    if set(cursors) != read:
        return f"the input tables differ from the last run's ({', '.join(sorted(set(cursors) ^ read))})"
    missing = [t for t in gold_tables(settings) if not table_exists(spark, t)]
    if missing:
        return f"{', '.join(missing)} missing"
    unreadable = unreadable_feed(inputs, cursors)
    if unreadable:
        return unreadable
    for i in inputs:
        operations = {op for _, op in commits_after(spark, i.table, cursors[i.table].version)}
        if "OVERWRITE" in operations:
            return f"{i.table} was rewritten whole since the last run"
        foreign = operations - set(FOLLOWED)
        if foreign:
            return f"{i.table} was written by something else since the last run ({', '.join(sorted(foreign))}: an erasure?)"
    return None


def changed_persons(spark: SparkSession, inputs: list[FeedInput], cursors: dict[str, Cursor]) -> DataFrame:
    """The one_ids (current, and former) whose gold rows the commits after the cursors can have
    changed: persons with a record added, changed or removed in silver or its identifiers; carriers of
    an identifier value refused now and not before, or the reverse; persons with a record–identifier
    link the guards refuse now and not before, or the reverse; and every person the map gave a record
    or took one from. Identity rewrites the rows of every component it reaches: a row written again
    as it was (the same one_id, the same refusal) changes nobody."""
    records, values, moved = [], [], []
    for i in inputs:
        after = cursors[i.table].version
        if after == i.version:
            continue
        feed = read_changes(spark, i.table, after, i.version)
        if i.table == REFUSED:
            values.append(net_change(spark, i.table, after, feed, VALUE))
        elif i.table == VIOLATIONS:
            records.append(net_change(spark, i.table, after, feed, [*KEYS, *VALUE]).select(*KEYS))
        elif i.table == ONEID_MAP:
            moved.append(net_change(spark, i.table, after, feed, [*KEYS, "one_id"], KEYS).select("one_id"))
        else:  # silver entities and identifiers
            records.append(feed.select(*KEYS))
    if values:
        carriers = spark.table(IDENTIFIERS).join(reduce(DataFrame.unionByName, values).distinct(), VALUE, "left_semi")
        records.append(carriers.select(*KEYS))
    persons = moved
    if records:
        changed = reduce(DataFrame.unionByName, records).distinct()
        persons.append(spark.table(ONEID_MAP).join(changed, KEYS, "left_semi").select("one_id"))
    empty = spark.createDataFrame([], "one_id string")
    return reduce(DataFrame.unionByName, persons, empty).distinct().transform(materialised)


def net_change(spark: SparkSession, table: str, after: int, feed: DataFrame, columns: list[str],
               keys: list[str] | None = None) -> DataFrame:
    """`columns` of the rows the feed's commits left different: present at version `after` and not
    now, or now and not then, among the rows whose `keys` (default: the columns) the feed names."""
    keys = keys or columns
    named = feed.select(*keys).distinct()
    before = read_version(spark, table, after).join(named, keys, "left_semi").select(*columns)
    now = spark.table(table).join(named, keys, "left_semi").select(*columns)
    return before.subtract(now).unionByName(now.subtract(before))


def consent_of(spark: SparkSession, persons: DataFrame | None) -> DataFrame:
    """Consent state per one_id and purpose (of `persons` only, when given)."""
    consent_table = silver_table("consent_events")
    if not table_exists(spark, consent_table):
        return spark.createDataFrame([], CONSENT_STATE_SCHEMA)
    return consent_state(spark.table(consent_table), person_map(spark, persons))


def publish_persons(spark: SparkSession, settings: Settings, keys, persons: DataFrame | None) -> None:
    """Consent state, profile, identity map and daily summaries: of every person (persons None), or
    the rows of `persons` replaced."""
    def write(table: str, rows: DataFrame, comment: str) -> None:
        if persons is None:
            overwrite_table(rows, table, comment)
        else:
            replace_rows(spark, table, persons, rows, ["one_id"])

    write(CONSENT, consent_of(spark, persons), "Consent per one_id and purpose: each identity's latest event; the "
          "most restrictive across a person's identities, conflicts flagged")
    state = spark.table(CONSENT) if persons is None else spark.table(CONSENT).join(persons, "one_id", "left_semi")
    write(PROFILE, build_customer_profile(spark, settings, state, keys, persons),
          "One row per one_id: the golden record with provenance, and the 360° view")
    write(IDENTITY_MAP, build_identity_map(spark, settings, keys, persons),
          "Each one_id's identifiers (主账号-子账号 mapping): first/last seen, sources; sensitive values hashed")
    for entity in tag_entities(settings):
        write(daily_table(entity), daily_summary(spark, settings, entity, persons),
              f"Per person and day, the {entity} rows the tags count over, counted (summary_rows)")


def build_gold(spark: SparkSession, settings: Settings, as_of: date, run_id: str = "gold",
               full: bool = False) -> GoldResult:
    """Bring gold up to silver and identity: the per-person tables of the persons that changed (or of
    every person), then tags and audiences for everyone from those."""
    library, audiences = settings.tags, settings.audiences.audiences
    computed_at = datetime.now()
    seconds: dict[str, float] = {}
    keys = load_keys(settings)  # a missing secret fails here, before anything is read
    warnings = deprecated_in_use(library, audiences)
    for warning in warnings:
        log.warning("gold: %s", warning)

    with _step("check", seconds):
        # a bad tag or rule fails before anything is written (against the schemas, over no rows)
        profile_schema = build_customer_profile(spark, settings, spark.createDataFrame([], CONSENT_STATE_SCHEMA), keys)
        entities = {e: (_entity_rows(spark, settings, e).withColumn(DAY, F.lit(None).cast("date")), DAY)
                    for e in tag_entities(settings)}
        check_definitions(spark, settings, Inputs(profile_schema, entities), as_of)
    with _step("plan", seconds):
        inputs = gold_inputs(spark, settings)
        fingerprint = gold_fingerprint(settings)
        cursors = read_cursors(spark, STAGE)
        reason = "asked for (--full)" if full else why_rebuild(spark, settings, inputs, cursors, fingerprint)
    persons, recomputed = None, 0
    if reason is None:
        try:
            with _step("read_changes", seconds):
                persons = changed_persons(spark, inputs, cursors)
                recomputed = persons.count()
        except (PySparkException, Py4JJavaError) as exc:  # the versions were vacuumed away
            reason = f"a change feed cannot be read ({first_line(exc)})"
    if reason is None and recomputed > MOST_PERSONS:
        reason = f"{recomputed:,} persons changed, more than the {MOST_PERSONS:,} a run over changes takes"
    if reason is not None:
        persons = None
        log.info("gold: recomputing every person from silver: %s", reason)
    else:
        log.info("gold: %d persons changed since the last run", recomputed)

    with _step("persons", seconds):
        mark_publishing(spark, STAGE, cursors, run_id)
        if persons is None or recomputed:  # nobody changed: the per-person tables stand as they are
            publish_persons(spark, settings, keys, persons)
    profile = spark.table(PROFILE)
    state = spark.table(CONSENT)
    registry = spark.table(REGISTRY) if table_exists(spark, REGISTRY) else spark.createDataFrame([], REGISTRY_SCHEMA)
    profiles = profile.count()
    with _step("tags", seconds):
        wide, tag_rows = build_tags(spark, settings, tag_inputs(spark, settings, profile), as_of, computed_at,
                                    registry, warnings, profiles)
    with _step("audiences", seconds):
        sizes = build_audiences(spark, settings, run_id, profile, wide, state, as_of, computed_at, registry)
    wide.unpersist()
    with _step("role_views", seconds):
        views = build_role_views(spark, settings)
    write_cursors(spark, STAGE, [Cursor(i.table, i.version, fingerprint) for i in inputs], run_id)
    return GoldResult(
        profiles=profiles, tag_rows=tag_rows, consent_rows=state.count(), audience_sizes=sizes,
        warnings=warnings, seconds=seconds, views=views, mode="full" if persons is None else "changes",
        persons_recomputed=profiles if persons is None else recomputed,
    )
