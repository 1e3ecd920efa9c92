"""Probabilistic record linkage in Spark: Fellegi–Sunter match weights estimated without labels.

The flow, for records with a unique `uid` (and a `dataset` column when linking two files):

1. **Blocking.** Each rule (SQL over `l.<column>` and `r.<column>`) is an equi-join; the candidate
   pairs are their union, each tagged with the first rule that found it.
2. **Comparison levels.** Every field comparison turns a pair into an integer level: -1 when either
   side is null (no evidence), 0 when the values differ, higher for closer agreement, the top level
   for an exact match. Jaro-Winkler comes from rapidfuzz in a vectorised UDF; Levenshtein, dates and
   term frequencies are Spark built-ins; Chinese names are also compared by their pinyin.
3. **u** — how often non-matches agree at each level — is counted on random record pairs.
4. **m** and the share of matches among candidates (λ) come from expectation–maximisation over the
   candidates' level patterns. The patterns are aggregated in Spark (a few hundred rows however many
   pairs), so EM runs on the driver in milliseconds and is exact.
5. **Scores.** match_weight = log2(λ/(1−λ)) + Σ log2(m/u) per field (an exact match on a rare value
   weighs log2(m/tf) instead), match_probability = 2^w / (1 + 2^w). Each field's level and weight stay
   on the pair, so a link can be explained field by field.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType

from cdp.conf.identity import FieldComparison, Linkage, rule_columns


# ---------------------------------------------------------------- field comparisons


@F.pandas_udf(DoubleType())
def jaro_winkler(left: pd.Series, right: pd.Series) -> pd.Series:
    """Jaro-Winkler similarity in [0, 1]; null when either side is null."""
    from rapidfuzz.distance import JaroWinkler

    return pd.Series(
        [JaroWinkler.similarity(a, b) if isinstance(a, str) and isinstance(b, str) else None for a, b in zip(left, right)],
        dtype="float64",
    )


@F.pandas_udf(StringType())
def pinyin(names: pd.Series) -> pd.Series:
    """Toneless pinyin of a Chinese name (张伟 -> zhangwei), so homophone typos still compare close."""
    import re
    import unicodedata

    from pypinyin import lazy_pinyin

    # A name written in pinyin (Wang Fang, WANG FANG) compares as the characters' pinyin does.
    # (full-width letters too: NFKC makes Ｗａｎｇ Wang).
    return pd.Series([re.sub(r"[^a-z]", "", "".join(lazy_pinyin(unicodedata.normalize("NFKC", n))).lower())
                      if isinstance(n, str) else None for n in names], dtype="object")


def level_labels(comparison: FieldComparison) -> list[str]:
    """What each level means, index = level (0 = different; the last = exact)."""
    if comparison.kind == "exact":
        return ["different", "exact"]
    if comparison.kind == "jaro_winkler":
        return ["different", *[f"jaro_winkler >= {t:g}" for t in reversed(comparison.thresholds)], "exact"]
    if comparison.kind == "levenshtein":
        return ["different", *[f"levenshtein <= {t:g}" for t in reversed(comparison.thresholds)], "exact"]
    if comparison.kind == "date":
        return ["different", "within a year", "one character apart", "exact"]
    # name_zh: 李小若 and 李俊若 (a nickname: same surname, same last character) sit above different.
    return ["different", "same surname and last character", "pinyin jaro_winkler >= 0.9", "same pinyin", "exact"]


def _pinyin_column(column: str) -> str:
    return f"{column}__pinyin"


def _level(comparison: FieldComparison) -> Column:
    """The level expression over l_<column> and r_<column> (and helper columns made by `_helpers`)."""
    c = comparison.column
    left, right = F.col(f"l_{c}"), F.col(f"r_{c}")
    top = len(level_labels(comparison)) - 1
    same = F.col(f"l_{c}__text") == F.col(f"r_{c}__text") if comparison.kind == "date" else left == right
    level = F.when(left.isNull() | right.isNull(), F.lit(-1)).when(same, F.lit(top))
    if comparison.kind == "jaro_winkler":
        for i, floor in enumerate(comparison.thresholds):
            level = level.when(F.col(f"s_{c}") >= floor, F.lit(top - 1 - i))
    elif comparison.kind == "levenshtein":
        for i, ceiling in enumerate(comparison.thresholds):
            level = level.when(F.levenshtein(left, right) <= int(ceiling), F.lit(top - 1 - i))
    elif comparison.kind == "date":
        l_text, r_text = F.col(f"l_{c}__text"), F.col(f"r_{c}__text")
        l_day, r_day = F.expr(f"try_to_date(l_{c}__text, 'yyyyMMdd')"), F.expr(f"try_to_date(r_{c}__text, 'yyyyMMdd')")
        level = level.when(F.levenshtein(l_text, r_text) <= 1, F.lit(2)).when(
            F.abs(F.datediff(l_day, r_day)) <= 365, F.lit(1)
        )
    elif comparison.kind == "name_zh":
        l_py, r_py = F.col(f"l_{_pinyin_column(c)}"), F.col(f"r_{_pinyin_column(c)}")
        nickname = (F.length(left) >= 2) & (F.length(right) >= 2) & (F.substring(left, 1, 1) == F.substring(right, 1, 1)) & (
            F.substring(left, -1, 1) == F.substring(right, -1, 1))
        level = level.when(l_py == r_py, F.lit(3)).when(F.col(f"s_{c}") >= 0.9, F.lit(2)).when(nickname, F.lit(1))
    return level.otherwise(F.lit(0))


def _date_text(column: Column) -> Column:
    return F.regexp_replace(column.cast("string"), "-", "")


def _helpers(comparison: FieldComparison) -> dict[str, Column]:
    """Columns a level needs computed first (a UDF is evaluated once, not once per CASE branch)."""
    c = comparison.column
    if comparison.kind == "jaro_winkler":
        return {f"s_{c}": jaro_winkler(F.col(f"l_{c}"), F.col(f"r_{c}"))}
    if comparison.kind == "name_zh":
        return {f"s_{c}": jaro_winkler(F.col(f"l_{_pinyin_column(c)}"), F.col(f"r_{_pinyin_column(c)}"))}
    if comparison.kind == "date":
        return {f"l_{c}__text": _date_text(F.col(f"l_{c}")), f"r_{c}__text": _date_text(F.col(f"r_{c}"))}
    return {}


# ---------------------------------------------------------------- the model


@dataclass
class Model:
    """Fellegi–Sunter parameters: m and u per comparison level, and the chance two random records match."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    labels: dict[str, list[str]]
    random_match: float = 0.0  # the prior that goes with u (which was counted on random pairs)
    training: list[dict] = field(default_factory=list)  # per training rule: pairs, match share, EM iterations
    # (column, value_key, tf): the frequencies an exact match on a value is weighed against, taken when
    # the model was trained (frozen_frequencies); None: counted on the records being linked
    frequencies: DataFrame | None = None

    def weights(self, name: str) -> list[float]:
        return [math.log2(m / u) for m, u in zip(self.m[name], self.u[name])]

    def as_dict(self) -> dict:
        return {
            "random_match": self.random_match,
            "training": self.training,
            "comparisons": {
                name: [
                    {"level": label, "m": m, "u": u, "weight": w}
                    for label, m, u, w in zip(self.labels[name], self.m[name], self.u[name], self.weights(name))
                ]
                for name in self.m
            },
        }


@dataclass
class Estimate:
    """What EM found over one training rule's pairs."""

    match_share: float
    m: dict[str, np.ndarray]
    iterations: int
    converged: bool


def expectation_maximisation(
    patterns: pd.DataFrame, u: dict[str, list[float]], labels: dict[str, list[str]], iterations: int, tolerance: float,
    smoothing: float = 1.0,
) -> Estimate:
    """EM for the match share and m with u fixed, over aggregated level patterns (one column per
    comparison in `u`, plus the pair count `n`). `smoothing` pseudo-pairs spread like the initial m
    keep a level the data never shows among matches from a weight of minus infinity."""
    names = list(u)
    counts = patterns["n"].to_numpy(dtype=float)
    levels = {name: patterns[name].to_numpy(dtype=int) for name in names}
    start = {name: _initial_m(len(labels[name])) for name in names}
    m = dict(start)
    log_u = {name: np.log(np.asarray(u[name])) for name in names}
    share, done, converged = 0.5, 0, False
    for done in range(1, iterations + 1):
        log_match = np.full(len(counts), math.log(share))
        log_other = np.full(len(counts), math.log(1 - share))
        for name in names:
            seen = levels[name] >= 0
            at = np.where(seen, levels[name], 0)
            log_match += np.where(seen, np.log(m[name])[at], 0.0)
            log_other += np.where(seen, log_u[name][at], 0.0)
        match = counts / (1.0 + np.exp(np.clip(log_other - log_match, -700, 700)))
        new_share = min(max(float(match.sum() / counts.sum()), 1e-9), 1 - 1e-9)
        change = abs(new_share - share)
        for name in names:
            seen = levels[name] >= 0
            totals = np.bincount(levels[name][seen], weights=match[seen], minlength=len(labels[name]))
            new_m = (totals + smoothing * start[name]) / (totals.sum() + smoothing)
            change = max(change, float(np.abs(new_m - m[name]).max()))
            m[name] = new_m
        share = new_share
        if change < tolerance:
            converged = True
            break
    return Estimate(share, m, done, converged)


def _initial_m(levels: int) -> np.ndarray:
    """Matches mostly agree exactly: 0.9 on the top level, the rest spread below it."""
    rest = 0.1 / (levels - 1)
    return np.array([rest] * (levels - 1) + [0.9])


# ---------------------------------------------------------------- Spark side


class NotTrainable(RuntimeError):
    """The training rules found no pairs for some comparison: its m cannot be estimated from this data."""


@dataclass
class LinkResult:
    """Every candidate pair scored, with how it was found and what each field said."""

    spec: Linkage
    model: Model
    candidates: int
    scored: DataFrame  # uid_l, uid_r, rule, <comparison> level, w_<comparison>, match_weight, match_probability
    seconds: dict[str, float] = field(default_factory=dict)
    pairs_per_rule: dict[str, int] = field(default_factory=dict)  # pairs first proposed by each blocking rule
    prepared: DataFrame | None = None  # the compared records (uid, attributes, pinyin): other pairs can be scored

    @property
    def links(self) -> DataFrame:
        return self.scored.where(F.col("match_probability") >= self.spec.threshold)


def prepare(records: DataFrame, spec: Linkage) -> DataFrame:
    """Blank strings become null (a blank is no evidence); pinyin is added for Chinese-name comparisons."""
    out = records
    for name, dtype in records.dtypes:
        if dtype == "string" and name not in ("uid", "dataset"):
            out = out.withColumn(name, F.when(F.trim(F.col(name)) != "", F.trim(F.col(name))))
    for comparison in spec.comparisons.values():
        if comparison.kind == "name_zh":
            out = out.withColumn(_pinyin_column(comparison.column), pinyin(F.col(comparison.column)))
    return out


def _order(link_only: bool) -> Column:
    """Each unordered pair once; when linking two files, only pairs across them."""
    if link_only:
        return F.col("l.dataset") < F.col("r.dataset")
    return F.col("l.uid") < F.col("r.uid")


def rule_pairs(prepared: DataFrame, rule: str, link_only: bool, touched: DataFrame | None = None) -> DataFrame:
    """(uid_l, uid_r): the pairs one rule finds (an equi-join on the columns it compares); with
    `touched` (uid), only the pairs with a touched row on either side."""
    def pairs(left: DataFrame, right: DataFrame) -> DataFrame:
        return left.alias("l").join(right.alias("r"), F.expr(rule) & _order(link_only)).select(
            F.col("l.uid").alias("uid_l"), F.col("r.uid").alias("uid_r"))

    if touched is None:
        return pairs(prepared, prepared)
    few = prepared.join(touched.select("uid").distinct(), "uid", "left_semi")
    return pairs(few, prepared).unionByName(pairs(prepared, few))  # a pair of two touched rows twice: grouped below


def candidate_pairs(prepared: DataFrame, spec: Linkage, link_only: bool, touched: DataFrame | None = None) -> DataFrame:
    """(uid_l, uid_r, rule, rules): the union of the blocking rules' pairs, with the first rule that
    found each and all the rules that did; with `touched` (uid), the pairs with a touched row only."""
    found = [rule_pairs(prepared, rule, link_only, touched).withColumn("rule", F.lit(i)) for i, rule in enumerate(spec.blocking)]
    return reduce(DataFrame.unionByName, found).groupBy("uid_l", "uid_r").agg(
        F.min("rule").alias("rule"), F.collect_set("rule").alias("rules")
    )


def _side(prepared: DataFrame, side: str) -> DataFrame:
    """The records with every column prefixed l_ or r_ (uid becomes uid_l / uid_r)."""
    return prepared.select(
        F.col("uid").alias(f"uid_{side}"), *[F.col(c).alias(f"{side}_{c}") for c in prepared.columns if c != "uid"]
    )


def _levels(pairs: DataFrame, spec: Linkage) -> DataFrame:
    helpers: dict[str, Column] = {}
    for comparison in spec.comparisons.values():
        helpers.update(_helpers(comparison))
    if helpers:
        pairs = pairs.withColumns(helpers)
    return pairs.withColumns({name: _level(c) for name, c in spec.comparisons.items()})


def compare(pairs: DataFrame, prepared: DataFrame, spec: Linkage) -> DataFrame:
    """Pairs with l_/r_ attributes and one level column per comparison."""
    return _levels(pairs.join(_side(prepared, "l"), "uid_l").join(_side(prepared, "r"), "uid_r"), spec)


def sizes(prepared: DataFrame, link_only: bool) -> dict[str, int]:
    """Records per dataset (one count for a deduplication): read once per linkage."""
    if link_only:
        return {r["dataset"]: r["count"] for r in prepared.groupBy("dataset").count().collect()}
    return {"": prepared.count()}


def estimate_u(
    prepared: DataFrame, spec: Linkage, link_only: bool, seed: int, counts: dict[str, int]
) -> dict[str, list[float]]:
    """Level frequencies among random pairs (nearly all non-matches), floored so no weight is infinite."""
    if link_only:
        per_side = math.sqrt(spec.u_sample_pairs)
        sample = prepared.sampleBy("dataset", {d: min(1.0, per_side / n) for d, n in counts.items()}, seed)
    else:
        n = counts[""]
        sample = prepared.sample(fraction=min(1.0, math.sqrt(2 * spec.u_sample_pairs) / max(n, 1)), seed=seed)
    sample = sample.localCheckpoint()
    order = F.col("l_dataset") < F.col("r_dataset") if link_only else F.col("uid_l") < F.col("uid_r")
    compared = _levels(_side(sample, "l").crossJoin(_side(sample, "r")).where(order), spec)
    row = compared.agg(
        *[F.count_if(F.col(name) == level).alias(f"{name}__{level}")
          for name, c in spec.comparisons.items() for level in range(len(level_labels(c)))]
    ).first()
    u = {}
    for name, c in spec.comparisons.items():
        counts = np.array([row[f"{name}__{level}"] for level in range(len(level_labels(c)))], dtype=float)
        counts = np.maximum(counts, 0.5)  # a level never seen among non-matches still has a finite weight
        u[name] = (counts / counts.sum()).tolist()
    return u


def _all_pairs(counts: dict[str, int], link_only: bool) -> int:
    if link_only:
        sizes_ = list(counts.values())
        return sum(a * b for i, a in enumerate(sizes_) for b in sizes_[i + 1:])
    n = counts[""]
    return n * (n - 1) // 2


def holders(prepared: DataFrame, column: str) -> DataFrame:
    """(value, count): how many records hold each value of `column` (lazy: no action here)."""
    return prepared.where(F.col(column).isNotNull()).groupBy(F.col(column).alias("value")).count()


def term_frequencies(prepared: DataFrame, column: str, rows: int | None = None) -> DataFrame:
    """(value, tf): the share of records holding each value of `column`, over `rows` when given (a
    model's training rows) or over the records holding any value."""
    held = holders(prepared, column)
    if rows is not None:
        return held.select("value", (F.col("count") / F.lit(rows)).alias("tf"))
    total = held.agg(F.sum("count").alias("total"))
    return held.crossJoin(total).select("value", (F.col("count") / F.col("total")).alias("tf"))


MIN_HOLDERS = 5  # a value fewer attribute rows hold is not kept in a model: it is weighed as this rare
FREQUENCIES_SCHEMA = "column string, value_key long, tf double, counted boolean, rows long"


def value_key(value: Column) -> Column:
    """What a frozen frequency is looked up by: a 64-bit hash of the value, never the value itself."""
    return F.xxhash64(F.lit("tf"), value)


def tf_columns(spec: Linkage) -> list[tuple[str, str, int]]:
    """(comparison, column, level) for every exact-value level weighed by its value's frequency: the
    column's own exact level, and for a Chinese name the same-pinyin level below it."""
    out = []
    for name, comparison in spec.comparisons.items():
        if comparison.term_frequency:
            top = len(level_labels(comparison)) - 1
            out.append((name, comparison.column, top))
            if comparison.kind == "name_zh":
                out.append((name, _pinyin_column(comparison.column), top - 1))
    return out


def frozen_frequencies(prepared: DataFrame, spec: Linkage, counted: frozenset[str] = frozenset()) -> DataFrame:
    """The frequencies a model weighs exact matches with, taken when it is trained (FREQUENCIES_SCHEMA).

    Per column, a floor row (null value_key) with the rows the model was trained on (`rows`) and the
    frequency of a value fewer than MIN_HOLDERS of them held, on average (`tf`). For a column in
    `counted` (identifiers: a phone) nothing more is kept: a value's holders are counted on the data
    being linked, over the training rows. For the others, (a hash of) each value at least MIN_HOLDERS
    rows hold, with its frequency; a rarer or unseen value weighs as the floor. So a pair whose records did not change scores the same whatever new records
    elsewhere do to the frequencies, and no model keeps a person's own name or contact."""
    parts = []
    for column in sorted({c for _, c, _ in tf_columns(spec)}):
        held = holders(prepared, column)
        total = held.agg(F.sum("count").alias("total"))
        if column not in counted:
            parts.append(held.where(F.col("count") >= MIN_HOLDERS).crossJoin(total).select(
                F.lit(column).alias("column"), value_key(F.col("value")).alias("value_key"),
                (F.col("count") / F.col("total")).alias("tf"), F.lit(False).alias("counted"),
                F.lit(None).cast("long").alias("rows")))
        rare = held.where(F.col("count") < MIN_HOLDERS).agg(F.avg("count").alias("holders"))
        parts.append(rare.crossJoin(total).select(
            F.lit(column).alias("column"), F.lit(None).cast("long").alias("value_key"),
            (F.coalesce(F.col("holders"), F.lit(float(MIN_HOLDERS))) / F.greatest(F.col("total"), F.lit(1))).alias("tf"),
            F.lit(column in counted).alias("counted"), F.col("total").cast("long").alias("rows")))
    if not parts:
        return prepared.sparkSession.createDataFrame([], FREQUENCIES_SCHEMA)
    return reduce(DataFrame.unionByName, parts)


def with_frequency(pairs: DataFrame, column: str, tf_column: str, frequencies: DataFrame | None,
                   floors: dict[str, tuple[float, bool, int]], prepared: DataFrame) -> DataFrame:
    """`tf_column`: the frequency of the left record's value of `column`. From the model's frozen
    frequencies (a value not among them: the floor), or for a counted column its holders now over
    the training total; without frozen frequencies, counted on `prepared` alone."""
    floor, counted, rows = floors.get(column, (None, True, None))
    if frequencies is None or counted:
        tf = term_frequencies(prepared, column, rows).select(F.col("value").alias(f"l_{column}"), F.col("tf").alias(tf_column))
        return pairs.join(tf, f"l_{column}", "left")
    kept = frequencies.where((F.col("column") == column) & F.col("value_key").isNotNull()).select(
        F.col("value_key").alias(f"_key_{column}"), F.col("tf").alias(f"_kept_{column}"))
    return (
        pairs.withColumn(f"_key_{column}", value_key(F.col(f"l_{column}")))
        .join(kept, f"_key_{column}", "left")
        .withColumn(tf_column, F.when(F.col(f"l_{column}").isNotNull(), F.coalesce(F.col(f"_kept_{column}"), F.lit(floor))))
        .drop(f"_key_{column}", f"_kept_{column}")
    )


def score(
    compared: DataFrame, model: Model, spec: Linkage, prepared: DataFrame
) -> DataFrame:
    """Per-field weights, the match weight and the match probability of every compared pair.

    u was counted on random pairs, so the prior that goes with it is the chance that two random
    records match (`model.random_match`), not the share of matches among the candidates."""
    out = compared
    floors = {} if model.frequencies is None else {
        r["column"]: (r["tf"], r["counted"], r["rows"]) for r in model.frequencies.where(F.col("value_key").isNull()).collect()}
    for name, comparison in spec.comparisons.items():
        weights = model.weights(name)
        level = F.col(name)
        weight = F.when(level < 0, F.lit(0.0)).otherwise(
            F.element_at(F.array(*[F.lit(w) for w in weights]), level + 1)
        )
        # An exact match on value v weighs log2(m / tf(v)); for a Chinese name, a same-pinyin match
        # weighs against the pinyin's frequency (zhangwei is common whatever the characters).
        for _, column, at in (t for t in tf_columns(spec) if t[0] == name):
            tf_column = f"tf_{column}"
            out = with_frequency(out, column, tf_column, model.frequencies, floors, prepared)
            on_value = F.log2(F.lit(model.m[name][at]) / F.greatest(F.col(tf_column), F.lit(1e-12)))
            weight = F.when((level == at) & F.col(tf_column).isNotNull(), on_value).otherwise(weight)
        out = out.withColumn(f"w_{name}", weight)
    prior = math.log2(model.random_match / (1 - model.random_match))
    total = reduce(lambda a, b: a + b, [F.col(f"w_{name}") for name in spec.comparisons], F.lit(prior))
    return out.withColumn("match_weight", total).withColumn(
        "match_probability", F.lit(1.0) / (F.lit(1.0) + F.pow(F.lit(2.0), -F.col("match_weight")))
    )


def train(
    prepared: DataFrame, spec: Linkage, u: dict[str, list[float]], link_only: bool, blocked: dict[str, DataFrame],
    counts: dict[str, int],
) -> Model:
    # `blocked`: the compared pairs of each blocking rule, so a training rule that blocks is not joined twice.
    """m by EM over each training rule's pairs, for the comparisons that rule does not read; each
    comparison's m comes from the first rule that trains it. The matches a rule holds
    (its match share × its pairs) bound how many there are: the largest gives the prior."""
    labels = {name: level_labels(c) for name, c in spec.comparisons.items()}
    trained: dict[str, np.ndarray] = {}
    report, matches = [], 0.0
    for rule in spec.training or spec.blocking:
        read = rule_columns(rule)
        free = [name for name, c in spec.comparisons.items() if c.column not in read]
        compared = blocked.get(rule)
        if compared is None:
            compared = compare(rule_pairs(prepared, rule, link_only), prepared, spec)
        patterns = compared.groupBy(*free).agg(F.count("*").alias("n")).toPandas()
        total = int(patterns["n"].sum()) if len(patterns) else 0
        if total == 0:
            report.append({"rule": rule, "pairs": 0, "match_share": None, "iterations": 0, "converged": False, "trains": []})
            continue
        estimate = expectation_maximisation(
            patterns, {n: u[n] for n in free}, labels, spec.em_iterations, spec.em_tolerance
        )
        # A field is trained by the first rule that does not read it: put the cleanest rules first.
        trains = [name for name in free if name not in trained]
        trained.update({name: estimate.m[name] for name in trains})
        matches = max(matches, estimate.match_share * total)
        report.append({"rule": rule, "pairs": total, "match_share": estimate.match_share,
                       "iterations": estimate.iterations, "converged": estimate.converged, "trains": trains})
    untrained = sorted(set(spec.comparisons) - set(trained))
    if untrained:
        raise NotTrainable(f"no training pairs for comparisons {untrained}. Fix: add a "
                           "training rule that finds pairs and does not read these columns")
    m = {name: trained[name].tolist() for name in spec.comparisons}
    all_pairs = max(_all_pairs(counts, link_only), 1)
    return Model(m, u, labels, min(max(matches, 1.0) / all_pairs, 0.5), report)


def model_fingerprint(spec: Linkage) -> str:
    """What a model's parameters depend on: each comparison's definition and levels. A model trained
    under another fingerprint does not fit this configuration."""
    described = {name: {**c.model_dump(mode="json"), "levels": level_labels(c)} for name, c in sorted(spec.comparisons.items())}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def link(records: DataFrame, spec: Linkage, link_only: bool = False, seed: int = 42, model: Model | None = None,
         counted: frozenset[str] = frozenset(), touched: DataFrame | None = None) -> LinkResult:
    """Block, compare, estimate u (random pairs) and m (EM per training rule), and score every candidate pair.
    With `model` (a frozen one), nothing is estimated: the candidates are scored with it. `counted`:
    the columns whose value frequencies a trained model must not keep (frozen_frequencies).
    `touched` (uid; only with `model`): score only the candidate pairs with a touched row."""
    if touched is not None and model is None:
        raise ValueError("scoring only touched pairs needs a frozen model: a model is trained on all the pairs")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    prepared = prepare(records, spec).localCheckpoint()
    names = list(spec.comparisons)

    pairs = candidate_pairs(prepared, spec, link_only, touched)
    compared = compare(pairs, prepared, spec).localCheckpoint()
    found_by = {spec.blocking[r["rule"]]: r["count"] for r in compared.groupBy("rule").count().collect()}
    per_rule = {rule: found_by.get(rule, 0) for rule in spec.blocking}  # new pairs each rule adds, in order
    candidates = sum(per_rule.values())
    timings["blocking_and_comparison"] = time.perf_counter() - started

    if model is None:
        mark = time.perf_counter()
        counts = sizes(prepared, link_only)
        u = estimate_u(prepared, spec, link_only, seed, counts)
        timings["u_random_sampling"] = time.perf_counter() - mark

        mark = time.perf_counter()
        # A training rule that is also a blocking rule reuses the compared candidates it found.
        blocked = {rule: compared.where(F.array_contains("rules", i)) for i, rule in enumerate(spec.blocking)}
        model = train(prepared, spec, u, link_only, blocked, counts)
        model.frequencies = frozen_frequencies(prepared, spec, counted).localCheckpoint()
        timings["em"] = time.perf_counter() - mark

    scored = score(compared, model, spec, prepared)
    keep = ["uid_l", "uid_r", "rule", *names, *[f"w_{n}" for n in names], "match_weight", "match_probability"]
    timings["total"] = time.perf_counter() - started
    return LinkResult(spec, model, candidates, scored.select(*keep), timings, per_rule, prepared)
