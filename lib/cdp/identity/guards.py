"""Over-merge guards: a component that breaks a per-person limit is split, weakest links first.

Limits come from the identifier model (conf/identity.yaml): at most `max_per_person` distinct values
of each type (id_card: 1 makes two different 身份证 a must-not-link) and at most
`guards.max_records_per_person` records. A component within every limit is one person as it is.
A component over a limit is rebuilt greedily: identifier values are taken strongest first
(priority, then the number of records carrying the value, then the value itself, so the result is
deterministic), and each value joins the groups of records that carry it unless the join would
break a limit; a refused join leaves the smaller group apart and every record–identifier edge it
refused is reported with the reason.

Weak identifier types (`veto_on_conflict`) add one more limit: a weak value joins two groups only
when some compared pair of attribute rows across them does not contradict (cdp.identity.veto); when
every compared pair contradicts, the join is refused with reason `veto` and the comparisons that
spoke against. Groups with no compared pair across them (an app's events carry no name) join.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp.conf.identity import IdentityConfig

PAIR_COLUMNS = ("uid_l", "uid_r", "id_type", "weight", "fields")
STEWARD = "steward"  # a steward's must-link: the strongest link there is
APART = "__must_not_link__"  # edge rows that carry a steward's must-not-link: id_value is "<other rid>|<rule id>"

SPLIT_SCHEMA = (
    "component long, rid long, cluster long, id_type string, id_value string, reason string, conflict array<string>"
)
MAX_CONFLICT_VALUES = 10


@dataclass(frozen=True)
class Limits:
    priority: dict[str, int]
    max_per_person: dict[str, int]
    max_records: int
    veto_below: float = 0.0

    @classmethod
    def of(cls, config: IdentityConfig) -> Limits:
        return cls(
            priority={**{t: s.priority for t, s in config.identifiers.items()}, STEWARD: 0},
            max_per_person={t: s.max_per_person for t, s in config.identifiers.items()},
            max_records=config.guards.max_records_per_person,
            veto_below=config.guards.veto_below,
        )


@dataclass
class Attributes:
    """What the veto knows of one component: each record's attribute row, and the compared pairs of
    attribute rows under each weak type."""

    uid: dict[int, int]  # record id -> attribute row (records whose row was never compared are absent)
    pairs: dict[tuple[str, int], list[tuple[int, float, tuple[str, ...]]]]  # (id_type, uid) -> (other uid, weight, fields)

    @classmethod
    def of(cls, uids: Iterable[tuple[int, int | None]], pairs: Iterable[tuple[int, int, str, float, Iterable[str]]]) -> Attributes:
        compared: dict[tuple[str, int], list[tuple[int, float, tuple[str, ...]]]] = defaultdict(list)
        for uid_l, uid_r, id_type, weight, fields in pairs:
            compared[(id_type, uid_l)].append((uid_r, weight, tuple(fields)))
            compared[(id_type, uid_r)].append((uid_l, weight, tuple(fields)))
        # Only rows that were compared count: a POS order's row (a phone, no name) is the same row for
        # every member of a household, and tells nobody apart.
        seen = {uid for _, uid in compared}
        return cls({rid: uid for rid, uid in uids if uid in seen}, dict(compared))

    def weak(self, id_type: str) -> bool:
        """Whether pairs were compared under this type (it has a veto)."""
        return any(key[0] == id_type for key in self.pairs)


NO_ATTRIBUTES = Attributes({}, {})


@dataclass(frozen=True, order=True)
class DroppedEdge:
    rid: int
    id_type: str
    id_value: str
    reason: str
    conflict: tuple[str, ...] = ()  # the values of the type over its limit, both sides together


def split_greedy(edges: Iterable[tuple[int, str, str]], limits: Limits,
                 attributes: Attributes = NO_ATTRIBUTES,
                 apart: dict[int, dict[int, str]] | None = None) -> tuple[dict[int, int], list[DroppedEdge]]:
    """Group the records of one component within the limits: record → group root, and the refused edges.

    `edges` are (record id, id_type, id_value). The root of a group is one of its record ids.
    `apart`: record id → {record id it must never join: the steward's rule id}.
    """
    apart = apart or {}
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
    members: dict[int, set[int]] = {rid: {rid} for rid in parent}
    rows: dict[int, set[int]] = {rid: ({attributes.uid[rid]} if rid in attributes.uid else set()) for rid in parent}

    def find(rid: int) -> int:
        root = rid
        while parent[root] != root:
            root = parent[root]
        while parent[rid] != root:
            parent[rid], rid = root, parent[rid]
        return root

    def contradiction(a: int, b: int, id_type: str) -> tuple[str, tuple[str, ...]] | None:
        """The veto: every compared pair of attribute rows across the groups contradicts."""
        if rows[a] & rows[b]:
            return None
        small, large = sorted((rows[a], rows[b]), key=len)
        best: tuple[float, tuple[str, ...]] | None = None
        for uid in small:
            for other, weight, fields in attributes.pairs.get((id_type, uid), ()):
                if other in large and (best is None or weight > best[0]):
                    best = (weight, fields)
        if best is None or best[0] >= limits.veto_below:
            return None
        weight, fields = best
        against = ", ".join(fields) or "the compared fields"
        return (f"veto: {against} contradict (match weight {weight:.1f} < {limits.veto_below:g}): "
                "kept apart as a household", fields)

    def must_not_link(a: int, b: int) -> tuple[str, tuple[str, ...]] | None:
        small, large = sorted((a, b), key=lambda r: len(members[r]))
        for rid in members[small]:
            for other, rule in apart.get(rid, {}).items():
                if other in members[large]:
                    return f"steward: must not link (rule {rule})", ()
        return None

    def over_limit(a: int, b: int, id_type: str) -> tuple[str, tuple[str, ...]] | None:
        if apart:
            found = must_not_link(a, b)
            if found is not None:
                return found
        if size[a] + size[b] > limits.max_records:
            return f"records: the person would hold {size[a] + size[b]} records, at most {limits.max_records}", ()
        if id_type == STEWARD:
            return None  # a steward's must-link was decided by a person: only a must-not-link or the hard cap stops it
        for limited in sorted(values[a].keys() | values[b].keys()):
            both = values[a].get(limited, set()) | values[b].get(limited, set())
            most = limits.max_per_person.get(limited)
            if most is not None and len(both) > most:
                reason = f"{limited}: the person would hold {len(both)} distinct values, at most {most}"
                return reason, tuple(sorted(both)[:MAX_CONFLICT_VALUES])
        return None

    def join(base: int, other: int) -> None:
        parent[other] = base
        size[base] += size[other]
        members[base] |= members.pop(other)
        rows[base] |= rows.pop(other)
        for t, vs in values.pop(other).items():
            values[base][t] |= vs

    dropped: list[DroppedEdge] = []
    order = sorted(carriers, key=lambda k: (limits.priority.get(k[0], 1 << 30), -len(carriers[k]), k[0], k[1]))
    for id_type, id_value in order:
        rids = carriers[(id_type, id_value)]
        roots = sorted({find(r) for r in rids}, key=lambda r: (-size[r], r))
        # The value's holders: the first group, and the households the veto keeps apart from it. A group
        # over a limit with the first is refused; one the veto refuses joins the first holder it agrees with.
        if attributes.weak(id_type):
            # groups with attributes to compare first: they decide how many persons hold the value
            roots = [r for r in roots if rows[r]] + [r for r in roots if not rows[r]]
        holders = [roots[0]]
        for other in roots[1:]:
            found = over_limit(holders[0], other, id_type)
            if found is None and len(holders) > 1 and not rows[other]:
                found = (f"household: {id_type} is held by {len(holders)} persons the veto kept apart, and these "
                         "records carry nothing that tells which", ())
            if found is None and attributes.pairs:
                found = contradiction(holders[0], other, id_type)
            if found is None:
                join(holders[0], other)
                continue
            dropped.extend(DroppedEdge(r, id_type, id_value, *found) for r in rids if find(r) == other)
            if found[0].startswith("veto"):
                agreeing = next((h for h in holders[1:]
                                 if over_limit(h, other, id_type) is None and contradiction(h, other, id_type) is None), None)
                if agreeing is None:
                    holders.append(other)
                else:
                    join(agreeing, other)
    return {rid: find(rid) for rid in parent}, dropped


def split_frame(pdf: pd.DataFrame, limits: Limits, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One component's edges (component, rid, id_type, id_value, uid) and its compared pairs
    (component, uid_l, uid_r, id_type, weight, fields) → SPLIT_SCHEMA rows."""
    attributes = NO_ATTRIBUTES
    if pairs is not None and len(pairs):
        # uid arrives as text: a nullable 64-bit column would reach pandas as float and lose digits
        uids = zip(pdf["rid"].tolist(), [None if u is None or pd.isna(u) else int(u) for u in pdf["uid"].tolist()])
        attributes = Attributes.of(uids, zip(pairs["uid_l"].tolist(), pairs["uid_r"].tolist(), pairs["id_type"].tolist(),
                                             pairs["weight"].tolist(), pairs["fields"].tolist()))
    is_apart = pdf["id_type"] == APART
    apart: dict[int, dict[int, str]] = defaultdict(dict)
    for rid, value in zip(pdf.loc[is_apart, "rid"].tolist(), pdf.loc[is_apart, "id_value"].tolist()):
        other, rule = value.split("|", 1)
        apart[rid][int(other)] = rule
    edges = pdf.loc[~is_apart]
    groups, dropped = split_greedy(zip(edges["rid"].tolist(), edges["id_type"].tolist(), edges["id_value"].tolist()), limits,
                                   attributes, dict(apart))
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


def split_components(labelled: DataFrame, config: IdentityConfig, pairs: DataFrame | None = None) -> DataFrame:
    """Split every component over a limit, or holding a weak link whose attributes contradict.
    `labelled` is (component, rid, id_type, id_value, uid); `pairs`, the veto's compared pairs
    (component, uid_l, uid_r, id_type, weight, fields). Returns SPLIT_SCHEMA rows: one per record
    with its new cluster (id_type null), plus one per refused record–identifier edge (with the reason)."""
    limits = Limits.of(config)
    bad = violating_components(labelled, config).select("component").unionByName(
        labelled.where(F.col("id_type") == APART).select("component")).distinct()
    if pairs is None:
        rows = labelled.join(bad, "component").select("component", "rid", "id_type", "id_value")
        return rows.groupBy("component").applyInPandas(lambda pdf: split_frame(pdf, limits), SPLIT_SCHEMA)
    contradicted = pairs.where(F.col("weight") < limits.veto_below).select("component")
    # A handful of component ids, materialised: the joins below read the same plans again.
    bad = bad.unionByName(contradicted).distinct().localCheckpoint()
    rows = labelled.join(bad, "component").select("component", "rid", "id_type", "id_value", F.col("uid").cast("string"))
    compared = pairs.join(bad, "component").select("component", *PAIR_COLUMNS)
    return rows.groupBy("component").cogroup(compared.groupBy("component")).applyInPandas(
        lambda pdf, pairs_pdf: split_frame(pdf, limits, pairs_pdf), SPLIT_SCHEMA
    )
