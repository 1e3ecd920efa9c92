"""Attribute vetoes on weak links: a family's one phone must not make the mother and her son one person.

An identifier type declared weak (`veto_on_conflict` in conf/identity.yaml) links two groups of
records only when their attributes do not contradict. "Contradict" is the probabilistic model's own
judgement, so the two engines agree on what a name match is: every pair of attribute rows that share
a weak value is compared with the model's comparisons and scored with its match weights (pinyin,
close pinyin and typos in a name, a birth date one digit apart, weigh for a match as they do in the
linker). A pair contradicts when the weights of the type's veto comparisons sum below
`guards.veto_below`; the guards (cdp.identity.guards) then keep two groups apart when every compared
pair across them contradicts, and the value becomes a household link (`households`).
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cdp.identity.linker import LinkResult, compare, score

def weak_pairs(usable: DataFrame, attribute_rows: DataFrame, vetoes: dict[str, list[str]]) -> DataFrame:
    """(id_type, id_value, uid_l, uid_r): distinct attribute rows that carry one weak value.

    `attribute_rows` is (source, record_key, uid): each record's attribute row (the linker's uid)."""
    weak = (
        usable.where(F.col("id_type").isin(sorted(vetoes)))
        .join(attribute_rows, ["source", "record_key"])
        .select("id_type", "id_value", "uid")
        .distinct()
    )
    left, right = weak.alias("l"), weak.alias("r")
    return left.join(
        right,
        (F.col("l.id_type") == F.col("r.id_type")) & (F.col("l.id_value") == F.col("r.id_value"))
        & (F.col("l.uid") < F.col("r.uid")),
    ).select(F.col("l.id_type").alias("id_type"), F.col("l.id_value").alias("id_value"),
             F.col("l.uid").alias("uid_l"), F.col("r.uid").alias("uid_r"))


def scored_pairs(pairs: DataFrame, result: LinkResult, vetoes: dict[str, list[str]]) -> DataFrame:
    """(id_type, id_value, uid_l, uid_r, weight, fields): each pair's veto weight under its type — the
    sum of the model's weights over the type's veto comparisons (a null side weighs 0) — and the
    comparisons that spoke against (weight below 0). Pairs that share none of the fields are left out."""
    distinct = pairs.select("uid_l", "uid_r").distinct()
    weighed = score(compare(distinct, result.prepared, result.spec), result.model, result.spec, result.prepared)
    per_type = []
    for id_type, names in sorted(vetoes.items()):
        total = reduce(lambda a, b: a + b, [F.col(f"w_{n}") for n in names])
        against = F.filter(F.array(*[F.when(F.col(f"w_{n}") < 0, F.lit(n)) for n in names]), lambda c: c.isNotNull())
        # a pair with none of the type's fields on both sides (a POS order has no name) says nothing
        compared = reduce(lambda a, b: a | b, [F.col(n) >= 0 for n in names])
        per_type.append(weighed.where(compared).select("uid_l", "uid_r", F.lit(id_type).alias("id_type"),
                                                       total.alias("weight"), against.alias("fields")))
    weights = reduce(DataFrame.unionByName, per_type)
    return pairs.join(weights, ["uid_l", "uid_r", "id_type"])


def households(refused_edges: DataFrame, identifiers: DataFrame, oneid_map: DataFrame, weak_types: list[str],
               run_id: str) -> DataFrame:
    """identity.households: each weak value (a phone, an e-mail) the attribute veto refused somewhere,
    with every person that holds it (two or more). A value split only by a limit (the same customer
    registered twice with a mistyped 身份证) is no household: nothing says two people share it."""
    vetoed = (refused_edges.where(F.col("id_type").isin(sorted(weak_types)) & F.col("reason").startswith("veto"))
              .select("id_type", "id_value").distinct())
    holders = (
        identifiers.join(vetoed, ["id_type", "id_value"])
        .join(oneid_map, ["source", "record_key"])
        .select("id_type", "id_value", "one_id")
        .distinct()
    )
    shared = holders.groupBy("id_type", "id_value").agg(F.count("*").alias("persons")).where(F.col("persons") > 1)
    household_id = F.concat(F.lit("hh_"), F.lower(F.hex(F.xxhash64(F.concat_ws(":", "id_type", "id_value")))))
    return holders.join(shared.drop("persons"), ["id_type", "id_value"]).select(
        household_id.alias("household_id"), "id_type", "id_value", "one_id", F.lit(run_id).alias("run_id")
    )
