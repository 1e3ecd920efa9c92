"""Persons from the identity graph: records and identifier values are vertices, each record's
identifiers its edges; connected components, then the over-merge guards, give the persons."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import reduce
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.conf import Settings
from cdp.conf.identity import IdentityConfig
from cdp.identity.components import connected_components
from cdp.identity.guards import APART, PAIR_COLUMNS, STEWARD, split_components
from cdp.identity.hygiene import apply_hygiene
from cdp.lakehouse import table_exists
from cdp.tables import silver_table

log = logging.getLogger(__name__)


@dataclass
class Persons:
    """What the graph made of the records."""

    clusters: DataFrame  # source, record_key, rid (record vertex), cluster (its person), component (its graph component)
    identifiers: DataFrame  # source, record_key, id_type, id_value: the identifiers that could link
    refused_values: DataFrame  # hygiene's refusals (apply_hygiene): values no record may link by
    refused_edges: DataFrame  # source, record_key, id_type, id_value, reason, conflict: links the guards cut
    engine: str  # the connected-components engine that ran


def record_vertex(source: Column, record_key: Column) -> Column:
    """A record's vertex id: a 64-bit hash of (source, record_key), domain-separated from identifiers."""
    return F.xxhash64(F.lit("record"), source, record_key)


def identifier_vertex(id_type: Column, id_value: Column) -> Column:
    """An identifier's vertex id: a 64-bit hash of `id_type:value`, the same in every run."""
    return F.xxhash64(F.lit("identifier"), F.concat_ws(":", id_type, id_value))


def all_records(spark: SparkSession, settings: Settings) -> DataFrame:
    """Every silver record (with or without identifiers), with when it happened: each gets a one_id."""
    frames = []
    for entity_name in sorted({s.entity for s in settings.sources.sources.values()}):
        entity = settings.model.entities[entity_name]
        table = silver_table(entity_name)
        if table_exists(spark, table):
            seen = F.col(entity.time_field) if entity.time_field else F.lit(None).cast("timestamp")
            frames.append(spark.table(table).select("source", "record_key", seen.cast("timestamp").alias("seen_at")))
    if not frames:
        raise RuntimeError("identity: no silver tables found. Fix: run `cdp run --stage silver` first.")
    return reduce(DataFrame.unionByName, frames)


def resolve_persons(records: DataFrame, identifiers: DataFrame, config: IdentityConfig,
                    linked: Callable[[DataFrame], DataFrame] | None = None,
                    must_not_link: DataFrame | None = None) -> Persons:
    """Hygiene, then the graph: records (source, record_key) grouped into persons by their identifiers
    (source, record_key, id_type, id_value).

    `linked`, given the values hygiene refused, returns more identifier rows (the probabilistic
    engine's links); they enter the graph and the guards like any other identifier."""
    # a steward's must-links are no delivered values: hygiene has nothing to say about them
    usable, refused = apply_hygiene(identifiers.where(F.col("id_type") != STEWARD), config)
    usable = usable.unionByName(identifiers.where(F.col("id_type") == STEWARD).select(*usable.columns))
    if linked is not None:
        refused = refused.persist()
        usable = usable.unionByName(linked(refused).select(*usable.columns))
    return group_persons(records, usable, refused, config, must_not_link=must_not_link)


def apart_rows(must_not_link: DataFrame, labelled: DataFrame) -> DataFrame:
    """A steward's must-not-links as edge rows of the split (guards.APART), both ways, for the rules
    whose two records fell into one component."""
    sides = []
    for this, that in (("a", "b"), ("b", "a")):
        sides.append(must_not_link.select(
            record_vertex(F.col(f"source_{this}"), F.col(f"record_key_{this}")).alias("rid"),
            F.concat_ws("|", record_vertex(F.col(f"source_{that}"), F.col(f"record_key_{that}")).cast("string"),
                        F.col("rule_id")).alias("id_value"),
            record_vertex(F.col(f"source_{that}"), F.col(f"record_key_{that}")).alias("other"),
        ))
    both = reduce(DataFrame.unionByName, sides)
    component = labelled.select("rid", "component")
    return (both.join(component, "rid")
            .join(component.select(F.col("rid").alias("other"), F.col("component").alias("other_component")), "other")
            .where(F.col("component") == F.col("other_component"))
            .select("rid", F.lit(APART).alias("id_type"), "id_value", "component"))


@dataclass
class Veto:
    """What the attribute veto on weak links needs (cdp.identity.veto)."""

    attribute_rows: DataFrame  # source, record_key, uid: each record's attribute row
    pairs: DataFrame  # id_type, id_value, uid_l, uid_r, weight, fields: compared pairs under each weak value


def group_persons(records: DataFrame, usable: DataFrame, refused: DataFrame, config: IdentityConfig,
                  veto: Veto | None = None, must_not_link: DataFrame | None = None) -> Persons:
    """Connected components of the record–identifier graph, split where a guard refuses a link.

    `must_not_link`: (rule_id, source_a, record_key_a, source_b, record_key_b), a steward's rules
    that two records are never one person."""
    records = records.select("source", "record_key", record_vertex(F.col("source"), F.col("record_key")).alias("rid"))
    usable = usable.withColumn("rid", record_vertex(F.col("source"), F.col("record_key"))).persist()

    edges = usable.select(F.col("rid").alias("src"), identifier_vertex(F.col("id_type"), F.col("id_value")).alias("dst"))
    vertices = records.select(F.col("rid").alias("id")).unionByName(edges.select(F.col("dst").alias("id"))).distinct()
    components, engine = connected_components(vertices, edges, config.components)
    log.info("identity: connected components computed with the %s engine", engine)

    labelled = records.join(components.withColumnRenamed("id", "rid"), "rid").persist()
    edges_in = usable.join(labelled.select("rid", "component"), "rid")
    if must_not_link is not None:
        edges_in = edges_in.unionByName(apart_rows(must_not_link, labelled), allowMissingColumns=True)
    if veto is None:
        split = split_components(edges_in.select("component", "rid", "id_type", "id_value"), config).persist()
    else:
        rows = veto.attribute_rows.select(record_vertex(F.col("source"), F.col("record_key")).alias("rid"), "uid")
        value_component = edges_in.select("id_type", "id_value", "component").distinct()
        # materialised (pairs of a few attribute rows per weak value): the split groups it beside the
        # edges, and both come from the same labelled plan
        pairs = veto.pairs.join(value_component, ["id_type", "id_value"]).select("component", *PAIR_COLUMNS).localCheckpoint()
        split = split_components(
            edges_in.join(rows, "rid", "left").select("component", "rid", "id_type", "id_value", "uid"), config, pairs
        ).persist()
    regrouped = split.where(F.col("id_type").isNull()).select("rid", "cluster")
    clusters = labelled.join(regrouped, "rid", "left").select(
        "source", "record_key", "rid", F.coalesce("cluster", "component").alias("cluster"), "component"
    )
    refused_edges = split.where(F.col("id_type").isNotNull()).join(labelled.select("rid", "source", "record_key"), "rid").select(
        "source", "record_key", "id_type", "id_value", "reason", "conflict"
    )
    return Persons(clusters, usable.drop("rid"), refused, refused_edges, engine)
