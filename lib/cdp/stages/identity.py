"""The identity stage: hygiene, probabilistic links, the record–identifier graph, components,
over-merge guards, stable one_ids.

A run reads only what silver changed since the run before (ops.stage_cursors, Delta Change Data
Feed on the silver tables and the steward rules): the records added, changed or removed, and the
identifier values they carried or carry. It recomputes the graph components those reach — every
record of a component any of them touches, of a component holding a record that carries one of
those values, and of a component a new probabilistic link reaches — and replaces just their rows.
Every other person is not recomputed and keeps its one_id. It recomputes every person instead on the
first run, when asked (`cdp run --full`), when identity.yaml, the model version or the code changed,
when silver was rebuilt or its feed is gone, when the map was written by anything else (an erasure),
or when the last run stopped while publishing.

Tables written:
  identity.suspicious_identifiers  values refused as links before the graph, with the evidence
  identity.violations              record–identifier links the guards refused after the graph
  identity.households              weak values shared by persons the attribute veto kept apart
  identity.registry                every one_id ever issued: active or retired (and merged into what)
  identity.changes                 new / merge / split / removed, per run, with their causes
  identity.oneid_map               (source, record_key) -> one_id and the record's graph component
  identity.probabilistic_links, identity.match_weights   the probabilistic engine's links and model
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce
from typing import Callable

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp import __version__
from cdp.audit import current_actor
from cdp.conf import Settings
from cdp.cursors import (
    PUBLISHING, Cursor, FeedInput, digest, feed_inputs, mark_publishing, read_cursors, unreadable_feed, write_cursors,
)
from cdp.identity.graph import Persons, Veto, all_records, group_persons
from cdp.identity.guards import STEWARD
from cdp.identity import models
from cdp.identity.hygiene import apply_hygiene, summarise_refusals
from cdp.identity.probabilistic import ProbabilisticLinks, probabilistic_links
from cdp.identity.graph import record_vertex
from cdp.identity.registry import StableIds, assign_stable_ids, oid, with_cause
from cdp.identity.veto import households, scored_pairs, weak_pairs
from cdp.lakehouse import (
    HOUSEKEEPING, commits_after, materialised, overwrite_table, read_changes, replace_rows,
    replace_where, table_exists, table_version,
)
from cdp.logs import first_line, timed_step
from cdp.tables import (
    CHANGES, HOUSEHOLDS, IDENTIFIERS, LINKS, ONEID_MAP, REFUSED, REGISTRY, STEWARD_RULES, VIOLATIONS, WEIGHTS,
    silver_table,
)

log = logging.getLogger(__name__)


@dataclass
class IdentityResult:
    records: int
    one_ids: int
    edges: int
    refused_values: int
    violations: int
    changes: dict[str, int]
    largest_one_id: int
    engine: str
    probabilistic_links: int = 0
    candidate_pairs: int = 0
    mode: str = "full"  # full: every person recomputed; changes: the components silver's changes reach; unchanged
    reached: int = 0  # records this run recomputed
    model_version: int | None = None  # the probabilistic model version it scored with
    seconds: dict[str, float] = field(default_factory=dict)


STAGE = "identity"
KEYS = ["source", "record_key"]
VALUE = ["id_type", "id_value"]
IDENTITY_TABLES = (ONEID_MAP, REGISTRY, REFUSED, VIOLATIONS, HOUSEHOLDS, CHANGES)


@dataclass
class Touched:
    """What silver changed since the last run: the records added, changed or removed, and the
    identifier values they carried before or carry now."""

    records: DataFrame  # source, record_key
    values: DataFrame  # id_type, id_value
    count: int


def build_identity(spark: SparkSession, settings: Settings, run_id: str = "adhoc", full: bool = False) -> IdentityResult:
    """Bring identity up to silver: recompute the components silver's changes reach, or every person."""
    seconds: dict[str, float] = {}
    with timed_step(STAGE, "plan", seconds):
        inputs = silver_inputs(spark, settings)
        frozen = models.newest(spark, settings.identity.probabilistic)[0] if settings.identity.probabilistic.enabled else None
        fingerprint = identity_fingerprint(settings, frozen.version if frozen else None)
        cursors = read_cursors(spark, STAGE)
        reason = "asked for (--full)" if full else why_recompute(spark, settings, inputs, cursors, fingerprint, frozen)
    touched = None
    if reason is None:
        try:
            with timed_step(STAGE, "read_changes", seconds):
                touched = read_touched(spark, inputs, cursors)
        except (PySparkException, Py4JJavaError) as exc:  # the versions were vacuumed away
            reason = f"silver's change feed cannot be read ({first_line(exc)})"
    if reason is not None:
        log.info("identity: recomputing every person: %s", reason)
        result = recompute_all(spark, settings, run_id, seconds, lambda: mark_publishing(spark, STAGE, cursors, run_id))
        fingerprint = identity_fingerprint(settings, result.model_version)  # the version it scored with (or trained)
    elif touched.count == 0:
        log.info("identity: silver has not changed since the last run")
        result = summarise(spark, None, None, None, mode="unchanged")
    else:
        result = recompute_touched(spark, settings, run_id, touched, frozen, seconds,
                                   lambda: mark_publishing(spark, STAGE, cursors, run_id))
    write_cursors(spark, STAGE, [Cursor(i.table, i.version, fingerprint) for i in inputs]
                  + [Cursor(ONEID_MAP, table_version(spark, ONEID_MAP), fingerprint)], run_id)
    result.seconds = seconds
    # What the steps cached is spent: everything published is in Delta.
    spark.catalog.clearCache()
    return result


def silver_inputs(spark: SparkSession, settings: Settings) -> list[FeedInput]:
    """The silver tables identity reads (and the steward rules), each with its Change Data Feed on."""
    return feed_inputs(spark, sorted({silver_table(s.entity) for s in settings.sources.sources.values()}
                                     | {IDENTIFIERS, STEWARD_RULES}))


def identity_fingerprint(settings: Settings, model_version: int | None) -> str:
    """What the persons depend on besides silver: identity.yaml, the model version, the code."""
    return digest({"identity": settings.identity.model_dump(mode="json"), "model_version": model_version,
                   "version": __version__})


def why_recompute(spark: SparkSession, settings: Settings, inputs: list[FeedInput], cursors: dict[str, Cursor],
                  fingerprint: str, frozen: models.FrozenModel | None) -> str | None:
    """Why this run must recompute every person; None when it can recompute what silver's changes reach."""
    if not cursors:
        return "no earlier identity run consumed silver"
    if PUBLISHING in cursors:
        return "the last run stopped while publishing"
    if settings.identity.probabilistic.enabled and frozen is None:
        return "the probabilistic model is due (first use, or its comparisons changed)"
    if any(c.fingerprint != fingerprint for c in cursors.values()):
        return "identity.yaml, the probabilistic model's version or the code changed since the last run"
    read = {i.table for i in inputs}
    if set(cursors) - {ONEID_MAP} != read:
        return f"the silver tables differ from the last run's ({', '.join(sorted((set(cursors) - {ONEID_MAP}) ^ read))})"
    missing = [t for t in IDENTITY_TABLES if not table_exists(spark, t)]
    if missing or ONEID_MAP not in cursors:
        return f"{', '.join(missing) or ONEID_MAP + ' unrecorded'} missing"
    if "component" not in spark.table(ONEID_MAP).columns:
        return f"{ONEID_MAP} holds no graph components (written by an older version)"
    unreadable = unreadable_feed(inputs, cursors)
    if unreadable:
        return unreadable
    for i in inputs:
        if any(op == "OVERWRITE" for _, op in commits_after(spark, i.table, cursors[i.table].version)):
            return f"{i.table} was rewritten whole since the last run (a silver rebuild)"
    foreign = [op for _, op in commits_after(spark, ONEID_MAP, cursors[ONEID_MAP].version) if op not in HOUSEKEEPING]
    if foreign:
        return f"{ONEID_MAP} was written by something else since the last run ({', '.join(sorted(set(foreign)))}: an erasure?)"
    return None


def read_touched(spark: SparkSession, inputs: list[FeedInput], cursors: dict[str, Cursor]) -> Touched:
    """The records and identifier values silver's commits after the cursors added, changed or removed."""
    records, values = [], []
    for i in inputs:
        after = cursors[i.table].version
        if after == i.version:
            continue
        feed = read_changes(spark, i.table, after, i.version)
        if i.table == STEWARD_RULES:  # a rule added or dropped touches both of its records
            records += [feed.select(F.col(f"source_{side}").alias("source"), F.col(f"record_key_{side}").alias("record_key"))
                        for side in ("a", "b")]
            continue
        records.append(feed.select(*KEYS))
        if i.table == IDENTIFIERS:
            values.append(feed.select(*VALUE))
    spark_empty = spark.createDataFrame([], "source string, record_key string")
    changed = reduce(DataFrame.unionByName, records, spark_empty).distinct().transform(materialised)
    carried = reduce(DataFrame.unionByName, values, spark.createDataFrame([], "id_type string, id_value string"))
    return Touched(changed, carried.distinct().transform(materialised), changed.count())


def recompute_all(spark: SparkSession, settings: Settings, run_id: str, seconds: dict[str, float],
                  publishing) -> IdentityResult:
    """Read all of silver, resolve every person, name them, publish: read → transform → write."""
    config = settings.identity
    with timed_step(STAGE, "graph", seconds):
        usable, refused = apply_hygiene(spark.table(IDENTIFIERS), config)
        refused = refused.persist()
        links = link_probabilistically(spark, settings, refused, run_id)
        if links is not None:
            usable = usable.unionByName(links.edges.select(*usable.columns))
        must_link, must_not_link = steward_rules(spark)
        if must_link is not None:
            usable = usable.unionByName(must_link.select(*usable.columns))
        persons = group_persons(all_records(spark, settings), usable, refused, config,
                                attribute_veto(settings, usable, links), must_not_link)
    with timed_step(STAGE, "names", seconds):
        basis = table_version(spark, ONEID_MAP)
        previous = spark.table(ONEID_MAP) if table_exists(spark, ONEID_MAP) else None
        registry = spark.table(REGISTRY) if table_exists(spark, REGISTRY) else None
        stable = name_persons(persons, previous, registry, run_id, basis, model_change(spark, links))
    with timed_step(STAGE, "publish", seconds):
        publishing()
        publish(spark, settings, persons, stable, links, run_id, basis)
    return summarise(spark, persons, stable, links)


def recompute_touched(spark: SparkSession, settings: Settings, run_id: str, touched: Touched,
                      frozen: models.FrozenModel | None, seconds: dict[str, float], publishing) -> IdentityResult:
    """Recompute the components silver's changes reach, and replace only their rows."""
    config = settings.identity

    def identifiers() -> DataFrame:
        return spark.table(IDENTIFIERS)

    def old_map() -> DataFrame:  # read afresh at each use: the map meets itself in these plans
        return spark.table(ONEID_MAP)

    with timed_step(STAGE, "reach", seconds):
        # Hygiene judges a value by every record that carries it: the touched values are judged again.
        carriers = identifiers().join(touched.values, VALUE, "left_semi").select(*KEYS).distinct()
        _, refused_now = apply_hygiene(identifiers().join(carriers, KEYS, "left_semi"), config)
        refused_touched = refused_now.join(touched.values, VALUE, "left_semi").transform(materialised)
        refused_values = (spark.table(REFUSED).select(*VALUE).join(touched.values, VALUE, "left_anti")
                          .unionByName(refused_touched.select(*VALUE)).distinct().transform(materialised))
        # A value refused before and after links nobody either way: its carriers stay where they are.
        still_refused = (spark.table(REFUSED).select(*VALUE).join(touched.values, VALUE, "left_semi")
                         .join(refused_touched.select(*VALUE), VALUE, "left_semi"))
        linking = identifiers().join(touched.values.join(still_refused, VALUE, "left_anti"), VALUE, "left_semi").select(*KEYS)
        components = old_map().join(touched.records.unionByName(linking), KEYS, "left_semi").select("component").distinct()
        current = all_records(spark, settings)
        reached = (old_map().join(components, "component", "left_semi").select(*KEYS).unionByName(touched.records)
                   .join(current, KEYS, "left_semi").distinct().transform(materialised))
    links = None
    records = reached
    if config.probabilistic.enabled:
        with timed_step(STAGE, "links", seconds):
            links, records = link_touched(spark, settings, refused_values, reached, old_map, frozen, run_id)
    with timed_step(STAGE, "graph", seconds):
        records = records.transform(materialised)
        carried = identifiers().join(records, KEYS, "left_semi")
        usable = carried.join(refused_values, VALUE, "left_anti")
        if links is not None:
            usable = usable.unionByName(links.edges.select(*usable.columns))
        must_link, must_not_link = steward_rules(spark)
        if must_link is not None:
            usable = usable.unionByName(must_link.join(records, KEYS, "left_semi").select(*usable.columns))
        persons = group_persons(current.join(records, KEYS, "left_semi"), usable, carried.join(refused_values, VALUE, "left_semi"),
                                config, attribute_veto(settings, usable, links), must_not_link)
    with timed_step(STAGE, "names", seconds):
        basis = table_version(spark, ONEID_MAP)
        # every record of every component reached (the removed ones too): their ids are all this run can move
        reached_components = old_map().join(records.unionByName(touched.records), KEYS, "left_semi").select("component").distinct()
        previous = old_map().join(reached_components, "component", "left_semi").select(*KEYS, "one_id").transform(materialised)
        candidates = records.select(oid(record_vertex(F.col("source"), F.col("record_key"))).alias("one_id"))
        registry = spark.table(REGISTRY).join(previous.select("one_id").unionByName(candidates).distinct(), "one_id", "left_semi")
        stable = name_persons(persons, previous, registry, run_id, basis)
    with timed_step(STAGE, "publish", seconds):
        publishing()
        keys = records.unionByName(touched.records).distinct().transform(materialised)
        if links is not None:
            replace_rows(spark, LINKS, keys, links.links, KEYS)
        refusals = summarise_refusals(refused_touched).withColumn("run_id", F.lit(run_id))
        replace_rows(spark, REFUSED, touched.values, refusals, VALUE)
        replace_rows(spark, VIOLATIONS, keys, violations(persons, stable, run_id), KEYS)
        held = previous.select("one_id").unionByName(stable.oneid_map.select("one_id")).distinct()
        replace_rows(spark, HOUSEHOLDS, held, households(persons.refused_edges, persons.identifiers, stable.oneid_map,
                                                         list(config.vetoes), run_id), ["one_id"])
        replace_rows(spark, REGISTRY, stable.registry, stable.registry, ["one_id"])
        replace_where(stable.changes, CHANGES, f"basis_version = {basis}")
        replace_rows(spark, ONEID_MAP, keys, stable.oneid_map, KEYS)
    reached_count = records.count()
    log.info("identity: %d changed records reached %d records; the rest of the map was not recomputed",
             touched.count, reached_count)
    result = summarise(spark, persons, stable, links, mode="changes")
    result.reached = reached_count
    return result


def link_touched(spark: SparkSession, settings: Settings, refused_values: DataFrame, reached: DataFrame,
                 old_map: Callable[[], DataFrame], frozen: models.FrozenModel, run_id: str) -> tuple[ProbabilisticLinks, DataFrame]:
    """The frozen model's links over the candidate pairs with a reached record, and the records to
    recompute: the reached ones and every record of a component a new link reaches. The links of
    those components no pair of this run changed are carried over."""
    config = settings.identity
    found = probabilistic_links(spark, config.probabilistic, refused_values, config.identifier_types, run_id,
                                model=frozen.model, touched=reached)
    if found.result is None:
        return found, reached
    fresh = found.links.transform(materialised)
    partners = fresh.select(*KEYS).join(reached, KEYS, "left_anti")
    joined = old_map().join(old_map().join(partners, KEYS, "left_semi").select("component").distinct(), "component", "left_semi")
    more = joined.select(*KEYS).join(reached, KEYS, "left_anti").transform(materialised)
    carried = spark.table(LINKS).join(more, KEYS, "left_semi").join(fresh.select("link_id").distinct(), "link_id", "left_anti")
    records = reached.unionByName(more)
    found.links = fresh.unionByName(carried.select(*fresh.columns)).transform(materialised)
    found.attribute_rows = found.attribute_rows.join(records, KEYS, "left_semi")
    found.weights = found.weights.withColumn("model_version", F.lit(frozen.version))
    found.model_version = frozen.version
    return found, records


def link_probabilistically(spark: SparkSession, settings: Settings, refused: DataFrame,
                           run_id: str) -> ProbabilisticLinks | None:
    """The probabilistic engine's links over the records' attributes (None when it is switched off);
    values hygiene refused are no evidence there either."""
    config = settings.identity
    if not config.probabilistic.enabled:
        return None
    frozen, due = models.newest(spark, config.probabilistic)
    found = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, run_id,
                                model=frozen.model if frozen else None)
    if found.result is not None:
        if frozen is None:
            frozen = keep_model(found, settings, due, current_actor(), run_id)
        found.weights = found.weights.withColumn("model_version", F.lit(frozen.version))
        found.model_version = frozen.version
    found.links = found.links.checkpoint()
    return found


def keep_model(found: ProbabilisticLinks, settings: Settings, trigger: str, actor: str, run_id: str) -> models.FrozenModel:
    """Append the model `found` was scored with as the next version of identity.models."""
    rows = found.result.prepared.count()  # the distinct attribute rows the model saw, already checkpointed
    kept = models.save(found.links.sparkSession, found.result.model, settings.identity.probabilistic, trigger, rows, actor,
                       run_id)
    log.info("identity: probabilistic model v%d trained (%s) on %d attribute rows", kept.version, trigger, rows)
    return kept


class ModelNotTrained(RuntimeError):
    """`cdp identity train` found too little data to estimate the model."""


def train_model(spark: SparkSession, settings: Settings, reason: str, actor: str, run_id: str) -> models.FrozenModel:
    """`cdp identity train`: estimate the model on all of silver now and keep it as the next version;
    every later identity run scores with it."""
    config = settings.identity
    if not config.probabilistic.enabled:
        raise ModelNotTrained("probabilistic.enabled is false in identity.yaml: there is no model to train")
    _, refused = apply_hygiene(spark.table(IDENTIFIERS), config)
    found = probabilistic_links(spark, config.probabilistic, refused, config.identifier_types, run_id)
    if found.result is None:
        raise ModelNotTrained("the training rules found no pairs for some comparison (see the log). Fix: land more "
                              "data, or add a training rule in identity.yaml that finds pairs")
    return keep_model(found, settings, reason, actor, run_id)


def steward_rules(spark: SparkSession) -> tuple[DataFrame | None, DataFrame | None]:
    """identity.steward_rules as the graph takes them: must-links as identifier rows of type `steward`
    (the rule id is the value both records carry), must-not-links as record pairs."""
    if not table_exists(spark, STEWARD_RULES):
        return None, None
    rules = spark.table(STEWARD_RULES)
    links = rules.where(F.col("kind") == "must_link")
    must_link = reduce(DataFrame.unionByName, [
        links.select(F.col(f"source_{side}").alias("source"), F.col(f"record_key_{side}").alias("record_key"),
                     F.lit(STEWARD).alias("id_type"), F.col("rule_id").alias("id_value"))
        for side in ("a", "b")
    ])
    must_not_link = rules.where(F.col("kind") == "must_not_link").select(
        "rule_id", "source_a", "record_key_a", "source_b", "record_key_b")
    return must_link, must_not_link


def attribute_veto(settings: Settings, usable: DataFrame, links: ProbabilisticLinks | None) -> Veto | None:
    """The veto on weak links (identifiers' veto_on_conflict), scored by this run's probabilistic model;
    None when no type asks for it or the model could not be trained on this data."""
    vetoes = settings.identity.vetoes
    if not vetoes or links is None or links.result is None or links.attribute_rows is None:
        if vetoes:
            log.warning("identity: no probabilistic model this run, so weak links are not vetoed on attributes")
        return None
    pairs = scored_pairs(weak_pairs(usable, links.attribute_rows, vetoes), links.result, vetoes).checkpoint()
    return Veto(links.attribute_rows, pairs)


def model_change(spark: SparkSession, links: ProbabilisticLinks | None) -> str | None:
    """'model:v1->v2' when this run scores with another model version than the last run did (its
    identity.match_weights): a cause of every merge and split of the run. None otherwise."""
    if links is None or links.model_version is None or not table_exists(spark, WEIGHTS):
        return None
    if "model_version" not in spark.table(WEIGHTS).columns:
        return None
    last = spark.table(WEIGHTS).where(F.col("model_version").isNotNull()).select("model_version").first()
    if last is None or last["model_version"] == links.model_version:
        return None
    return f"model:v{last['model_version']}->v{links.model_version}"


def name_persons(persons: Persons, previous: DataFrame | None, registry: DataFrame | None, run_id: str, basis: int,
                 cause: str | None = None) -> StableIds:
    """Stable one_ids for this run's persons, from the previous map and the registry, materialised
    before any identity table is written (the plan reads the previous map and registry). `cause`:
    what changed besides the data (a new model version), named on every merge and split."""
    persons.clusters = persons.clusters.checkpoint()
    persons.refused_edges = persons.refused_edges.checkpoint()
    stable = assign_stable_ids(
        persons.clusters, previous, registry, persons.identifiers,
        persons.refused_edges.select("source", "record_key", "id_type", "id_value"), run_id,
        datetime.now(timezone.utc).replace(tzinfo=None), basis,
    )
    changes = with_cause(stable.changes, cause) if cause else stable.changes
    return StableIds(stable.oneid_map.checkpoint(), stable.registry.checkpoint(), changes.checkpoint())


def violations(persons: Persons, stable: StableIds, run_id: str) -> DataFrame:
    return persons.refused_edges.join(stable.oneid_map, ["source", "record_key"]).select(
        F.lit(run_id).alias("run_id"), "one_id", "source", "record_key", "id_type", "id_value", "reason", "conflict"
    )


def publish(spark: SparkSession, settings: Settings, persons: Persons, stable: StableIds, links: ProbabilisticLinks | None,
            run_id: str, basis: int) -> None:
    """Write every identity table; the map last, so a crash before it leaves the previous map in force."""
    if links is not None:
        overwrite_table(links.links, LINKS, "Probabilistic links: each record on each side, the score and the field comparisons")
        overwrite_table(links.weights, WEIGHTS, "The probabilistic model: m, u and the match weight of each comparison level")
    else:
        for table in (LINKS, WEIGHTS):
            if table_exists(spark, table):  # the engine was switched off: its old links no longer hold
                spark.sql(f"DELETE FROM {table}")
    overwrite_table(summarise_refusals(persons.refused_values).withColumn("run_id", F.lit(run_id)), REFUSED,
                    "Identifier values refused as links before the graph: blocklisted or shared by strangers")
    overwrite_table(violations(persons, stable, run_id), VIOLATIONS, "Record-identifier links refused by the over-merge guards, and why")
    weak = list(settings.identity.vetoes)
    overwrite_table(households(persons.refused_edges, persons.identifiers, stable.oneid_map, weak, run_id), HOUSEHOLDS,
                    "Weak values shared by persons the attribute veto kept apart: one row per value and person")
    # Registry, then changes, then the map: a crash between them is repaired by the next run, which
    # recomputes the same decisions against the same previous map (changes are keyed by its version).
    overwrite_table(stable.registry, REGISTRY, "Every one_id ever issued: active, or retired and merged into which")
    replace_where(stable.changes, CHANGES, f"basis_version = {basis}")
    overwrite_table(stable.oneid_map, ONEID_MAP, "Every silver record's OneID: (source, record_key) -> one_id")


def summarise(spark: SparkSession, persons: Persons | None, stable: StableIds | None, links: ProbabilisticLinks | None,
              mode: str = "full") -> IdentityResult:
    """The run's figures, read back from what was published (edges, changes and links: this run's)."""
    stats = spark.table(ONEID_MAP).groupBy("one_id").count().agg(
        F.sum("count").alias("records"), F.count("*").alias("one_ids"), F.max("count").alias("largest")
    ).first()
    kinds = {} if stable is None else {
        r["kind"]: r["n"] for r in stable.changes.groupBy("kind").agg(F.count("*").alias("n")).collect()}
    return IdentityResult(
        records=int(stats["records"] or 0),
        one_ids=int(stats["one_ids"] or 0),
        edges=persons.identifiers.count() if persons is not None else 0,
        refused_values=spark.table(REFUSED).count(),
        violations=spark.table(VIOLATIONS).count(),
        changes=kinds,
        largest_one_id=int(stats["largest"] or 0),
        engine=persons.engine if persons is not None else "none",
        probabilistic_links=links.links.select("link_id").distinct().count() if links is not None else 0,
        candidate_pairs=links.result.candidates if links is not None and links.result else 0,
        mode=mode,
        model_version=links.model_version if links is not None else None,
    )
