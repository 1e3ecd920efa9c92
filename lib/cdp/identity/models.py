"""The probabilistic model, frozen and versioned in identity.models.

A model is trained once — on the engine's first use, when the comparisons in conf/identity.yaml no
longer fit the newest version, or on demand with `cdp identity train` — and every other identity run
scores with it unchanged. A person whose records did not change then keeps the same links and the
same vetoes, whatever the new data does to the level frequencies. Each version keeps its parameters
(m and u per comparison level, the prior), the value frequencies its exact matches are weighed
against (identity.model_frequencies: hashed values held by at least 5 attribute rows), what trained it (attribute rows, the training rules'
figures), the configuration it fits (a fingerprint of the comparisons), why and by whom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cdp.conf.identity import Linkage
from cdp.identity.linker import Model, model_fingerprint
from cdp.lakehouse import replace_where, table_exists
from cdp.tables import MODEL_FREQUENCIES, MODELS

MODELS_SCHEMA = (
    "model_version int, comparison string, level int, label string, m double, u double, weight double, "
    "random_match double, fingerprint string, trigger string, training string, attribute_rows long, "
    "trained_at timestamp, actor string, run_id string"
)
FIRST_USE = "first use"
CONFIG_CHANGED = "comparisons changed"


@dataclass(frozen=True)
class FrozenModel:
    version: int
    model: Model
    fingerprint: str
    trigger: str
    attribute_rows: int


def newest(spark: SparkSession, spec: Linkage) -> tuple[FrozenModel | None, str]:
    """The newest version when it fits `spec`; otherwise None and why a new one is due."""
    if not table_exists(spark, MODELS):
        return None, FIRST_USE
    latest = spark.table(MODELS).agg(F.max("model_version")).first()[0]
    if latest is None:
        return None, FIRST_USE
    # a version is a few dozen rows (and no window over the whole table: Spark would warn of one partition)
    rows = spark.table(MODELS).where(F.col("model_version") == latest).orderBy("comparison", "level").collect()
    if rows[0]["fingerprint"] != model_fingerprint(spec):
        return None, CONFIG_CHANGED
    m: dict[str, list[float]] = {}
    u: dict[str, list[float]] = {}
    labels: dict[str, list[str]] = {}
    for row in rows:
        m.setdefault(row["comparison"], []).append(row["m"])
        u.setdefault(row["comparison"], []).append(row["u"])
        labels.setdefault(row["comparison"], []).append(row["label"])
    model = Model(m, u, labels, rows[0]["random_match"], json.loads(rows[0]["training"]), frequencies_of(spark, latest))
    return FrozenModel(latest, model, rows[0]["fingerprint"], rows[0]["trigger"], rows[0]["attribute_rows"]), ""


def save(spark: SparkSession, model: Model, spec: Linkage, trigger: str, attribute_rows: int, actor: str,
         run_id: str) -> FrozenModel:
    """Append `model` as the next version."""
    latest = spark.table(MODELS).agg(F.max("model_version")).first()[0] if table_exists(spark, MODELS) else None
    version = (latest or 0) + 1
    fingerprint = model_fingerprint(spec)
    training = json.dumps(model.training, ensure_ascii=False, default=str)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [
        (version, name, i, label, float(m), float(u), float(w), float(model.random_match), fingerprint, trigger, training,
         attribute_rows, now, actor, run_id)
        for name in sorted(model.m)
        for i, (label, m, u, w) in enumerate(zip(model.labels[name], model.m[name], model.u[name], model.weights(name)))
    ]
    if model.frequencies is not None:  # first: a crash before the model rows leaves a version to replace
        replace_where(model.frequencies.withColumn("model_version", F.lit(version)), MODEL_FREQUENCIES,
                      f"model_version = {version}")
    spark.createDataFrame(rows, MODELS_SCHEMA).write.format("delta").mode("append").saveAsTable(MODELS)
    return FrozenModel(version, model, fingerprint, trigger, attribute_rows)


def frequencies_of(spark: SparkSession, version: int):
    """The frozen frequencies of a model version; None for a version kept without them (it counts them
    on the data it links, as models did before they were frozen too)."""
    if not table_exists(spark, MODEL_FREQUENCIES):
        return None
    kept = spark.table(MODEL_FREQUENCIES).where(F.col("model_version") == version).select("column", "value_key", "tf", "counted", "rows")
    return kept if kept.limit(1).count() else None
