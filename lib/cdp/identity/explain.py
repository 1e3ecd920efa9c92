"""Why a set of records is one person: the identifiers that link them, the links refused, the history."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cdp.identity.probabilistic import PROBABILISTIC
from cdp.lakehouse import table_exists
from cdp.tables import CHANGES, HOUSEHOLDS, IDENTIFIERS, STEWARD_RULES, LINKS, ONEID_MAP, REFUSED, REGISTRY, VIOLATIONS

MAX_LISTED = 50


class NotFound(LookupError):
    """The one_id or record is not in the identity tables."""


@dataclass
class Explanation:
    one_id: str
    asked: str
    status: str  # active | retired (then merged_into names the id that holds the records now)
    merged_into: str | None = None
    record_count: int = 0
    records: list[str] = field(default_factory=list)  # source:record_key (the first MAX_LISTED)
    # id_type, id_value, records: the evidence that joins records; a probabilistic link also carries
    # match_probability, match_weight, blocking_rule and comparisons (field, level, weight)
    links: list[dict] = field(default_factory=list)
    own_identifiers: int = 0  # identifier values carried by one record only (no link)
    # id_type, id_value, reason, records, conflict (values over the limit), also_on (one_ids where the value links)
    refused: list[dict] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)  # run_id, kind, one_id, old_ids, causes
    # household_id, id_type, id_value, members: weak values this person shares with others kept apart
    households: list[dict] = field(default_factory=list)
    # rule_id, kind (must_link / must_not_link), records, reason, actor: the stewards' rules on these records
    steward_rules: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _required(spark: SparkSession) -> None:
    for table in (ONEID_MAP, IDENTIFIERS):
        if not table_exists(spark, table):
            raise NotFound(f"{table} does not exist yet. Fix: run `cdp run --stage identity` first.")


def one_id_of_record(spark: SparkSession, record: str) -> str:
    """The one_id of 'SOURCE:KEY'."""
    source, sep, key = record.partition(":")
    if not sep or not source or not key:
        raise NotFound(f"--record '{record}' is not SOURCE:KEY, e.g. crm_members:M10000123")
    row = spark.table(ONEID_MAP).where((F.col("source") == source) & (F.col("record_key") == key)).first()
    if row is None:
        raise NotFound(f"no record {record} in {ONEID_MAP} (quarantined records have no one_id: see silver.quarantine)")
    return row["one_id"]


def explain(spark: SparkSession, one_id: str | None = None, record: str | None = None) -> Explanation:
    """The person holding `one_id` (a retired id: its survivor) or the record SOURCE:KEY, and why."""
    _required(spark)
    asked = one_id or record or ""
    if record:
        one_id = one_id_of_record(spark, record)
    if not one_id:
        raise NotFound("give --one-id ONE_ID or --record SOURCE:KEY")
    status, merged_into = registry_status(spark, one_id)
    current = merged_into or one_id
    records = spark.table(ONEID_MAP).where(F.col("one_id") == current).select("source", "record_key").persist()
    keys = sorted(f"{r['source']}:{r['record_key']}" for r in records.collect())
    if not keys and status == "active":
        raise NotFound(f"one_id {one_id} holds no records in {ONEID_MAP} (unknown, or all its records are gone)")

    carried, linked, scores = carried_identifiers(spark, records)
    grouped = judged_identifiers(spark, carried)
    kept_by = where_refused_values_link(spark, grouped, current)
    links = sorted(
        ({"id_type": r["id_type"], "id_value": r["id_value"], "records": r["records"], **scores.get(r["id_value"], {})}
         for r in grouped if r["reason"] is None and len(r["records"]) > 1),
        key=lambda d: (-len(d["records"]), d["id_type"], d["id_value"]),
    )
    own = sum(1 for r in grouped if r["reason"] is None and len(r["records"]) == 1)
    refused = sorted(
        ({"id_type": r["id_type"], "id_value": r["id_value"], "reason": r["reason"], "records": r["records"][:MAX_LISTED],
          "conflict": list(r["conflict"] or []), "also_on": kept_by.get((r["id_type"], r["id_value"]), []),
          **scores.get(r["id_value"], {})}
         for r in grouped if r["reason"] is not None),
        key=lambda d: (d["id_type"], d["id_value"]),
    )
    changes = change_history(spark, one_id, current)
    rules = steward_rules_of(spark, records)
    records.unpersist()
    if linked is not None:
        linked.unpersist()
    return Explanation(
        one_id=one_id, asked=asked, status=status, merged_into=merged_into, record_count=len(keys), records=keys[:MAX_LISTED],
        links=links[:MAX_LISTED], own_identifiers=own, refused=refused[:MAX_LISTED], changes=changes,
        households=households_of(spark, current), steward_rules=rules,
    )


def steward_rules_of(spark: SparkSession, records: DataFrame) -> list[dict]:
    """The stewards' rules (identity.steward_rules) that name any of the person's records."""
    if not table_exists(spark, STEWARD_RULES):
        return []
    rules = spark.table(STEWARD_RULES)
    mine = [rules.join(records.select(F.col("source").alias(f"source_{side}"), F.col("record_key").alias(f"record_key_{side}")),
                       [f"source_{side}", f"record_key_{side}"]).select("rule_id") for side in ("a", "b")]
    found = rules.join(mine[0].unionByName(mine[1]).distinct(), "rule_id").orderBy("created_at", "rule_id").collect()
    return [{"rule_id": r["rule_id"], "kind": r["kind"], "records": [f"{r['source_a']}:{r['record_key_a']}",
             f"{r['source_b']}:{r['record_key_b']}"], "reason": r["reason"], "actor": r["actor"]} for r in found]


def households_of(spark: SparkSession, one_id: str) -> list[dict]:
    """The households (identity.households) the person belongs to, with the other members."""
    if not table_exists(spark, HOUSEHOLDS):
        return []
    table = spark.table(HOUSEHOLDS)
    mine = table.where(F.col("one_id") == one_id).select("household_id")
    rows = (table.join(mine, "household_id").groupBy("household_id", "id_type", "id_value")
            .agg(F.sort_array(F.collect_set("one_id")).alias("members")).orderBy("household_id").collect())
    return [{"household_id": r["household_id"], "id_type": r["id_type"], "id_value": r["id_value"],
             "members": [m for m in r["members"] if m != one_id]} for r in rows]


def registry_status(spark: SparkSession, one_id: str) -> tuple[str, str | None]:
    """('active', None), or ('retired', the id it was merged into) as the registry says."""
    if table_exists(spark, REGISTRY):
        entry = spark.table(REGISTRY).where(F.col("one_id") == one_id).first()
        if entry is not None and entry["status"] == "retired":
            return "retired", entry["merged_into"]
    return "active", None


def carried_identifiers(spark: SparkSession, records: DataFrame) -> tuple[DataFrame, DataFrame | None, dict[str, dict]]:
    """(the records' identifiers, with each probabilistic link as an identifier of type `probabilistic`;
    the links touching the records, persisted, or None; each link's score and field comparisons)."""
    carried = spark.table(IDENTIFIERS).join(records, ["source", "record_key"])
    if not table_exists(spark, LINKS):
        return carried, None, {}
    touching = spark.table(LINKS).join(records, ["source", "record_key"]).select("link_id").distinct()
    linked = spark.table(LINKS).join(touching, "link_id").persist()
    carried = carried.unionByName(linked.select("source", "record_key", F.lit(PROBABILISTIC).alias("id_type"),
                                                F.col("link_id").alias("id_value")))
    scores = {
        row["link_id"]: {
            "match_probability": row["match_probability"], "match_weight": row["match_weight"],
            "blocking_rule": row["blocking_rule"],
            "comparisons": [{"field": c["field"], "level": c["level"], "weight": c["weight"]} for c in row["comparisons"]],
        }
        for row in linked.dropDuplicates(["link_id"]).collect()
    }
    return carried, linked, scores


def judged_identifiers(spark: SparkSession, carried: DataFrame) -> list:
    """Per identifier value: the records carrying it, and why it was refused (hygiene or a guard), if it was."""
    refused_values = (
        spark.table(REFUSED).select("id_type", "id_value", "reason") if table_exists(spark, REFUSED)
        else spark.createDataFrame([], "id_type string, id_value string, reason string")
    )
    refused_edges = (
        spark.table(VIOLATIONS).select("source", "record_key", "id_type", "id_value", "reason", "conflict")
        if table_exists(spark, VIOLATIONS)
        else spark.createDataFrame([], "source string, record_key string, id_type string, id_value string, reason string, conflict array<string>")
    )
    judged = (
        carried.join(refused_values, ["id_type", "id_value"], "left")
        .join(refused_edges.withColumnRenamed("reason", "edge_reason"), ["source", "record_key", "id_type", "id_value"], "left")
        .select("source", "record_key", "id_type", "id_value", F.coalesce("reason", "edge_reason").alias("reason"), "conflict")
    )
    return judged.groupBy("id_type", "id_value", "reason").agg(
        F.sort_array(F.collect_list(F.concat_ws(":", "source", "record_key"))).alias("records"),
        F.first("conflict", ignorenulls=True).alias("conflict"),
    ).collect()


def where_refused_values_link(spark: SparkSession, grouped: list, current: str) -> dict[tuple[str, str], list[str]]:
    """Where a value refused here did link: the one_ids holding the other records that carry it."""
    refused_here = [(r["id_type"], r["id_value"]) for r in grouped if r["reason"] is not None][:MAX_LISTED]
    if not refused_here:
        return {}
    wanted = spark.createDataFrame(refused_here, "id_type string, id_value string")
    holders = (
        spark.table(IDENTIFIERS).join(F.broadcast(wanted), ["id_type", "id_value"])
        .join(spark.table(ONEID_MAP), ["source", "record_key"])
        .where(F.col("one_id") != current)
        .groupBy("id_type", "id_value").agg(F.slice(F.sort_array(F.collect_set("one_id")), 1, 5).alias("one_ids"))
    )
    return {(r["id_type"], r["id_value"]): list(r["one_ids"]) for r in holders.collect()}


def change_history(spark: SparkSession, one_id: str, current: str) -> list[dict]:
    """identity.changes rows naming the asked id or the one holding its records now, oldest first."""
    if not table_exists(spark, CHANGES):
        return []
    rows = (
        spark.table(CHANGES)
        .where((F.col("one_id").isin(one_id, current)) | F.array_contains("old_ids", one_id) | F.array_contains("old_ids", current))
        .orderBy("changed_at", "kind")
        .collect()
    )
    return [{"run_id": r["run_id"], "kind": r["kind"], "one_id": r["one_id"], "old_ids": list(r["old_ids"]),
             "causes": list(r["causes"])} for r in rows]
