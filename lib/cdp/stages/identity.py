"""The identity stage: hygiene, probabilistic links, the record–identifier graph, components,
over-merge guards, stable one_ids.

Tables written (all replaced atomically each run, except identity.changes which grows):
  identity.suspicious_identifiers  values refused as links before the graph, with the evidence
  identity.violations              record–identifier links the guards refused after the graph
  identity.households              weak values shared by persons the attribute veto kept apart
  identity.registry                every one_id ever issued: active or retired (and merged into what)
  identity.changes                 new / merge / split / removed, per run, with their causes
  identity.oneid_map               (source, record_key) -> one_id for every silver record
  identity.probabilistic_links, identity.match_weights   the probabilistic engine's links and model
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.audit import current_actor
from cdp.conf import Settings
from cdp.identity.graph import Persons, Veto, all_records, group_persons
from cdp.identity.guards import STEWARD
from cdp.identity import models
from cdp.identity.hygiene import apply_hygiene, summarise_refusals
from cdp.identity.probabilistic import ProbabilisticLinks, probabilistic_links
from cdp.identity.registry import StableIds, assign_stable_ids, with_cause
from cdp.identity.veto import households, scored_pairs, weak_pairs
from cdp.lakehouse import overwrite_table, replace_where, table_exists, table_version
from cdp.tables import CHANGES, HOUSEHOLDS, STEWARD_RULES, IDENTIFIERS, LINKS, ONEID_MAP, REFUSED, REGISTRY, VIOLATIONS, WEIGHTS

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


def build_identity(spark: SparkSession, settings: Settings, run_id: str = "adhoc") -> IdentityResult:
    """Read silver, resolve persons, name them, publish: read → transform → write."""
    config = settings.identity
    usable, refused = apply_hygiene(spark.table(IDENTIFIERS), config)
    refused = refused.persist()
    links = link_probabilistically(spark, settings, refused, run_id)
    if links is not None:
        usable = usable.unionByName(links.edges.select(*usable.columns))
    must_link, must_not_link = steward_rules(spark)
    if must_link is not None:
        usable = usable.unionByName(must_link.select(*usable.columns))
    persons = group_persons(all_records(spark, settings), usable, refused, config, attribute_veto(settings, usable, links),
                            must_not_link)
    basis = table_version(spark, ONEID_MAP)
    stable = name_persons(spark, persons, run_id, basis, model_change(spark, links))
    publish(spark, settings, persons, stable, links, run_id, basis)
    result = summarise(spark, persons, stable, links)
    # What the steps cached is spent: everything published is in Delta.
    spark.catalog.clearCache()
    return result


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


def name_persons(spark: SparkSession, persons: Persons, run_id: str, basis: int, cause: str | None = None) -> StableIds:
    """Stable one_ids for this run's persons, from the previous map and the registry, materialised
    before any identity table is replaced (the plan reads the previous map and registry). `cause`:
    what changed besides the data (a new model version), named on every merge and split."""
    persons.clusters = persons.clusters.checkpoint()
    persons.refused_edges = persons.refused_edges.checkpoint()
    previous = spark.table(ONEID_MAP) if table_exists(spark, ONEID_MAP) else None
    registry = spark.table(REGISTRY) if table_exists(spark, REGISTRY) else None
    stable = assign_stable_ids(
        persons.clusters, previous, registry, persons.identifiers,
        persons.refused_edges.select("source", "record_key", "id_type", "id_value"), run_id,
        datetime.now(timezone.utc).replace(tzinfo=None), basis,
    )
    changes = with_cause(stable.changes, cause) if cause else stable.changes
    return StableIds(stable.oneid_map.checkpoint(), stable.registry.checkpoint(), changes.checkpoint())


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
    violations = persons.refused_edges.join(stable.oneid_map, ["source", "record_key"]).select(
        F.lit(run_id).alias("run_id"), "one_id", "source", "record_key", "id_type", "id_value", "reason", "conflict"
    )
    overwrite_table(violations, VIOLATIONS, "Record-identifier links refused by the over-merge guards, and why")
    weak = list(settings.identity.vetoes)
    overwrite_table(households(persons.refused_edges, persons.identifiers, stable.oneid_map, weak, run_id), HOUSEHOLDS,
                    "Weak values shared by persons the attribute veto kept apart: one row per value and person")
    # Registry, then changes, then the map: a crash between them is repaired by the next run, which
    # recomputes the same decisions against the same previous map (changes are keyed by its version).
    overwrite_table(stable.registry, REGISTRY, "Every one_id ever issued: active, or retired and merged into which")
    replace_where(stable.changes, CHANGES, f"basis_version = {basis}")
    overwrite_table(stable.oneid_map, ONEID_MAP, "Every silver record's OneID: (source, record_key) -> one_id")


def summarise(spark: SparkSession, persons: Persons, stable: StableIds, links: ProbabilisticLinks | None) -> IdentityResult:
    """The run's figures, read back from what was published."""
    stats = spark.table(ONEID_MAP).groupBy("one_id").count().agg(
        F.sum("count").alias("records"), F.count("*").alias("one_ids"), F.max("count").alias("largest")
    ).first()
    kinds = {r["kind"]: r["n"] for r in stable.changes.groupBy("kind").agg(F.count("*").alias("n")).collect()}
    return IdentityResult(
        records=int(stats["records"] or 0),
        one_ids=int(stats["one_ids"] or 0),
        edges=persons.identifiers.count(),
        refused_values=spark.table(REFUSED).count(),
        violations=spark.table(VIOLATIONS).count(),
        changes=kinds,
        largest_one_id=int(stats["largest"] or 0),
        engine=persons.engine,
        probabilistic_links=spark.table(LINKS).select("link_id").distinct().count() if links is not None else 0,
        candidate_pairs=links.result.candidates if links is not None and links.result else 0,
    )
