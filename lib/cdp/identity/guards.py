"""Over-merge guards: a component that breaks a per-person limit is split, weakest links first.

Limits come from the identifier model (conf/identity.yaml): at most `max_per_person` distinct values
of each type (id_card: 1 makes two different 身份证 a must-not-link) and at most
`guards.max_records_per_person` records. A component within every limit is one person as it is.
A component over a limit is rebuilt greedily: identifier values are taken strongest first
(priority, then the number of records carrying the value, then the value itself, so the result is
deterministic), and each value joins the groups of records that carry it unless the join would
break a limit; a refused join leaves the smaller group apart and every record–identifier edge it
refused is reported with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp.conf.identity import IdentityConfig

SPLIT_SCHEMA = (
    "component long, rid long, cluster long, id_type string, id_value string, reason string, conflict array<string>"
)
MAX_CONFLICT_VALUES = 10


@dataclass(frozen=True)
class Limits:
    priority: dict[str, int]
    max_per_person: dict[str, int]
    max_records: int

    @classmethod
    def of(cls, config: IdentityConfig) -> Limits:
        return cls(
            priority={t: s.priority for t, s in config.identifiers.items()},
            max_per_person={t: s.max_per_person for t, s in config.identifiers.items()},
            max_records=config.guards.max_records_per_person,
        )


@dataclass(frozen=True, order=True)
class DroppedEdge:
    rid: int
    id_type: str
    id_value: str
    reason: str
    conflict: tuple[str, ...] = ()  # the values of the type over its limit, both sides together


def split_greedy(edges: Iterable[tuple[int, str, str]], limits: Limits) -> tuple[dict[int, int], list[DroppedEdge]]:
    """Group the records of one component within the limits: record → group root, and the refused edges.

    `edges` are (record id, id_type, id_value). The root of a group is one of its record ids.
    """
    carriers: dict[tuple[str, str], list[int]] = defaultdict(list)
    parent: dict[int, int] = {}
    values: dict[int, dict[str, set[str]]] = {}
    for rid, id_type, id_value in edges:
        carriers[(id_type, id_value)].append(rid)
        if rid not in parent:
            parent[rid] = rid
            values[rid] = defaultdict(set)
        values[rid][id_type].add(id_value)
    size = dict.fromkeys(parent, 1)

    def find(rid: int) -> int:
        root = rid
        while parent[root] != root:
            root = parent[root]
        while parent[rid] != root:
            parent[rid], rid = root, parent[rid]
        return root

    def conflict(a: int, b: int) -> tuple[str, tuple[str, ...]] | None:
        if size[a] + size[b] > limits.max_records:
            return f"records: the person would hold {size[a] + size[b]} records, at most {limits.max_records}", ()
        for id_type in sorted(values[a].keys() | values[b].keys()):
            both = values[a].get(id_type, set()) | values[b].get(id_type, set())
            most = limits.max_per_person.get(id_type)
            if most is not None and len(both) > most:
                reason = f"{id_type}: the person would hold {len(both)} distinct values, at most {most}"
                return reason, tuple(sorted(both)[:MAX_CONFLICT_VALUES])
        return None

    dropped: list[DroppedEdge] = []
    order = sorted(carriers, key=lambda k: (limits.priority.get(k[0], 1 << 30), -len(carriers[k]), k[0], k[1]))
    for id_type, id_value in order:
        rids = carriers[(id_type, id_value)]
        roots = sorted({find(r) for r in rids}, key=lambda r: (-size[r], r))
        base = roots[0]
        for other in roots[1:]:
            found = conflict(base, other)
            if found is None:
                parent[other] = base
                size[base] += size[other]
                for t, vs in values.pop(other).items():
                    values[base][t] |= vs
            else:
                dropped.extend(DroppedEdge(r, id_type, id_value, *found) for r in rids if find(r) == other)
    return {rid: find(rid) for rid in parent}, dropped


def split_frame(pdf: pd.DataFrame, limits: Limits) -> pd.DataFrame:
    """One component's edges (component, rid, id_type, id_value) → SPLIT_SCHEMA rows."""
    groups, dropped = split_greedy(zip(pdf["rid"].tolist(), pdf["id_type"].tolist(), pdf["id_value"].tolist()), limits)
    rows = [(rid, root, None, None, None, None) for rid, root in groups.items()]
    rows += [(d.rid, groups[d.rid], d.id_type, d.id_value, d.reason, list(d.conflict)) for d in dropped]
    out = pd.DataFrame(rows, columns=["rid", "cluster", "id_type", "id_value", "reason", "conflict"])
    out.insert(0, "component", int(pdf["component"].iloc[0]))
    return out


def violating_components(labelled: DataFrame, config: IdentityConfig) -> DataFrame:
    """Components over a limit: (component, violation) from record identifiers labelled with `component`."""
    spark = labelled.sparkSession
    limits = spark.createDataFrame(
        sorted((t, s.max_per_person) for t, s in config.identifiers.items()), "id_type string, max_per_person int"
    )
    over_type = (
        labelled.groupBy("component", "id_type").agg(F.count_distinct("id_value").alias("n"))
        .join(F.broadcast(limits), "id_type")
        .where(F.col("n") > F.col("max_per_person"))
        .select("component", F.concat(F.col("id_type"), F.lit(" x"), F.col("n")).alias("violation"))
    )
    over_size = (
        labelled.groupBy("component").agg(F.count_distinct("rid").alias("n"))
        .where(F.col("n") > config.guards.max_records_per_person)
        .select("component", F.concat(F.lit("records x"), F.col("n")).alias("violation"))
    )
    return over_type.unionByName(over_size).groupBy("component").agg(
        F.concat_ws(", ", F.sort_array(F.collect_list("violation"))).alias("violation")
    )


def split_components(labelled: DataFrame, config: IdentityConfig) -> DataFrame:
    """Split every component over a limit. Returns SPLIT_SCHEMA rows: one per record with its new
    cluster (id_type null), plus one per refused record–identifier edge (with the reason)."""
    bad = violating_components(labelled, config).select("component")
    rows = labelled.join(bad, "component").select("component", "rid", "id_type", "id_value")
    limits = Limits.of(config)
    return rows.groupBy("component").applyInPandas(lambda pdf: split_frame(pdf, limits), SPLIT_SCHEMA)
