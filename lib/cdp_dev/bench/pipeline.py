"""The pipeline benchmark: every stage timed at several sizes, next to what it cannot beat.

    python -m cdp_dev.bench.pipeline --sizes 50000 200000 1000000 --out build/bench    (make bench SIZES="…")

For each size, in a Spark session of its own (`local` profile, sized by `sizing`):
1. generates the persons' landing files (the demo generator, seed fixed);
2. runs bronze, silver, identity and gold, each timed, with the rows it read and wrote (ops.job_runs);
3. right after each stage, its **I/O floor**: the stage's inputs read and written once as Delta, with no
   transformation (bronze: the landed files with their declared columns; the other stages: the tables
   they read). A stage cannot be faster than its floor; the ratio says what the work costs beyond I/O;
4. for OneID, a **single-machine reference**: the same edge list (records to identifiers, after
   hygiene) collected to the driver and solved by scipy.sparse.csgraph.connected_components;
5. on that edge list, each of **GraphFrames' connected-components algorithms** timed on its own:
   two_phase and randomized_contraction with broadcastThreshold -1 (AQE handles skew) and 1,000,000
   (GraphFrames' default), and graphx (which takes no threshold); each must give scipy's partition of
   the vertices, or the run fails.

6. a **daily increment**: the generated persons are split (cdp_dev.datagen.increment) so that every
   record of 0.25 % of them (new customers) and half the records of another 0.5 % (returning ones)
   land a day later; steps 2–5 run on the first delivery, then the increment lands and every stage
   runs again, timed; then silver is rebuilt from all of bronze, and identity and gold recompute
   every person (`--full`) beside them as their references (and must agree with the run over changes).

`--no-references` keeps steps 1, 2 and 6 without their references (no floors, scipy, engine runs or
`--full` reruns): at 1,000,000 persons those take longer than the stages they measure.

Writes <out>/bench.json (every figure) and <out>/bench.png (time per stage and rows/s per size), and
prints the stages with their ratios. Each size runs in a child process: the catalog is one
per lakehouse, and a fresh JVM per size keeps one size's memory out of the next one's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

AS_OF = date(2026, 11, 1)
SEED = 7
STAGES = ("bronze", "silver", "identity", "gold")
INCREMENT_NEW, INCREMENT_RETURNING = 0.0025, 0.005  # shares of persons: new ones, and ones who come back
FLOOR_DB = "bench_floor"


def sizing(persons: int) -> dict[str, str]:
    """Driver memory and shuffle partitions for one machine (24 GiB): the settings the 100k and 1M
    measurements in docs/operations.md used."""
    if persons > 300_000:
        return {"spark.driver.memory": "14g", "spark.sql.shuffle.partitions": "32"}
    return {"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "8"}


def _timed(action) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def landed_frames(spark, settings) -> dict[str, Any]:
    """Each source's landed files, read with its declared columns as strings: bronze's input, untouched."""
    from cdp.stages.bronze import delivered_schema, list_landed_files

    frames = {}
    for name, source in settings.sources.sources.items():
        files = [f.path for f in list_landed_files(spark, f"{settings.landing}/{source.path}")]
        if source.format == "parquet":
            frames[name] = spark.read.parquet(*files)
        elif source.format == "csv":
            frames[name] = spark.read.schema(delivered_schema(source)).option("header", True).csv(files)
        else:
            frames[name] = spark.read.schema(delivered_schema(source)).json(files)
    return frames


def io_floor(spark, frames: dict[str, Any]) -> dict[str, Any]:
    """Write each frame once as a Delta table: the time the same rows take with no transformation."""
    from cdp.lakehouse import committed_rows

    spark.sql(f"CREATE DATABASE IF NOT EXISTS {FLOOR_DB}")
    started, rows = time.perf_counter(), 0
    for name, frame in frames.items():
        table = f"{FLOOR_DB}.{name.replace('.', '_').replace('/', '_')}"
        frame.write.format("delta").mode("overwrite").saveAsTable(table)
        rows += committed_rows(spark, table) or 0
    return {"seconds": round(time.perf_counter() - started, 2), "rows": rows}


def identity_edges(spark, settings):
    """The identity graph the stage solves: one edge per usable (record, identifier) pair."""
    from pyspark.sql import functions as F

    from cdp.tables import IDENTIFIERS
    from cdp.identity.hygiene import apply_hygiene
    from cdp.identity.graph import identifier_vertex, record_vertex

    usable, _ = apply_hygiene(spark.table(IDENTIFIERS), settings.identity)
    return usable.select(
        record_vertex(F.col("source"), F.col("record_key")).alias("src"),
        identifier_vertex(F.col("id_type"), F.col("id_value")).alias("dst"),
    )


def scipy_components(src, dst) -> tuple[int, int, Any]:
    """(vertices, components, label per vertex in order of first appearance) for an undirected edge list."""
    codes, uniques = pd.factorize(pd.concat([pd.Series(src), pd.Series(dst)], ignore_index=True))
    edges = len(src)
    graph = coo_matrix((np.ones(edges, dtype=np.int8), (codes[:edges], codes[edges:])), shape=(len(uniques),) * 2)
    count, labels = connected_components(graph, directed=False)
    return len(uniques), int(count), pd.Series(labels, index=uniques)


def oneid_reference(spark, settings) -> tuple[dict[str, Any], Any]:
    """Collect the edge list to the driver (Arrow), then scipy's connected components on it: the
    figures, and scipy's label of each vertex."""
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    collect_seconds, edges = _timed(lambda: identity_edges(spark, settings).toPandas())
    solve_seconds, (vertices, components, labels) = _timed(lambda: scipy_components(edges["src"], edges["dst"]))
    return {"edges": len(edges), "vertices": vertices, "components": components,
            "collect_seconds": round(collect_seconds, 2), "solve_seconds": round(solve_seconds, 2),
            "seconds": round(collect_seconds + solve_seconds, 2)}, labels


# graphx takes no broadcast threshold: it runs once.
ENGINES = [("graphframes", "two_phase", -1), ("graphframes", "two_phase", 1_000_000), ("graphframes", "graphx", None),
           ("graphframes", "randomized_contraction", -1), ("graphframes", "randomized_contraction", 1_000_000)]


def same_partition(labels: Any, reference: Any) -> bool:
    """Whether two labellings (pandas Series: vertex → label) group the same vertices together."""
    joined = pd.DataFrame({"a": labels, "b": reference.reindex(labels.index)})
    if len(labels) != len(reference) or joined["b"].isna().any():
        return False
    return joined.drop_duplicates().shape[0] == joined["a"].nunique() == joined["b"].nunique()


def engine_timings(spark, settings, reference: Any) -> list[dict[str, Any]]:
    """Each GraphFrames algorithm on the identity edge list, timed to materialised labels, its
    partition checked against scipy's (the check is not timed)."""
    from pyspark.sql import functions as F

    from cdp.conf.identity import Components
    from cdp.identity.components import graphframes_components

    edges = identity_edges(spark, settings).checkpoint()
    vertices = edges.select(F.col("src").alias("id")).unionByName(edges.select(F.col("dst").alias("id"))).distinct().checkpoint()
    interval = settings.identity.components.checkpoint_interval
    # warm-up, untimed: the first engine must not pay for the JIT and the graph's first reads
    graphframes_components(vertices.limit(1000), edges.limit(1000), Components()).count()
    timings = []
    for engine, algorithm, threshold in ENGINES:
        def solve():
            labels = graphframes_components(vertices, edges, Components(
                algorithm=algorithm, broadcast_threshold=threshold or -1, checkpoint_interval=interval)).persist()
            labels.write.format("noop").mode("overwrite").save()  # every label computed
            return labels
        seconds, labels = _timed(solve)
        solved = labels.toPandas()
        labels.unpersist()
        agrees = same_partition(pd.Series(solved["component"].values, index=solved["id"].values), reference)
        timings.append({"engine": engine, "algorithm": algorithm, "broadcast_threshold": threshold,
                        "seconds": round(seconds, 2), "same_partition_as_scipy": agrees})
        print(f"bench: {engine} {algorithm} broadcastThreshold={threshold}: {seconds:.1f}s, "
              f"same partition as scipy: {agrees}", flush=True)
        if not agrees:
            raise SystemExit(f"bench: {engine} {algorithm} ({threshold}) disagrees with scipy's components")
        spark.catalog.clearCache()
    return timings


def run_size(persons: int, work: Path, references: bool = True) -> dict[str, Any]:
    """Generate, run and floor every stage for one size, in this process (called in a child)."""
    shutil.rmtree(work, ignore_errors=True)
    data, lakehouse = work / "data", work / "lakehouse"
    os.environ.update(CDP_LAKEHOUSE=str(lakehouse), CDP_LANDING=str(data / "landing"))

    from cdp.conf import load_settings
    from cdp_dev.datagen import generate
    from cdp.pipeline import run_stage
    from cdp.spark import spark_session

    from cdp_dev.datagen.increment import split_increment

    generate_seconds, summary = _timed(lambda: generate(persons, SEED, data, as_of=AS_OF))
    increment = split_increment(data, INCREMENT_NEW, INCREMENT_RETURNING)
    os.environ["CDP_LANDING"] = str(increment.initial)
    settings = load_settings("local")
    settings.profile.spark_conf.update(sizing(persons))
    result: dict[str, Any] = {"persons": persons, "landed_rows": summary.total_rows(),
                              "generate_seconds": round(generate_seconds, 2), "spark_conf": sizing(persons), "stages": {}}
    with spark_session(settings, app_name=f"cdp-bench-{persons}") as spark:
        for stage in STAGES:
            outcome = run_stage(spark, settings, stage, AS_OF)
            if outcome.status != "succeeded":
                raise SystemExit(f"bench: stage {stage} failed at {persons:,} persons: {outcome.error}")
            figures = {"seconds": round(outcome.seconds, 2), "rows_in": sum(outcome.rows_in.values()),
                       "rows_out": sum(outcome.rows_out.values()), "tables_written": len(outcome.rows_out)}
            if stage == "identity":
                figures["one_ids"] = outcome.metrics["one_ids"]
                figures["engine"] = outcome.metrics["engine"]
            if not references:
                result["stages"][stage] = with_ratios(figures)
                continue
            if stage == "bronze":
                inputs = {f"landing_{name}": frame for name, frame in landed_frames(spark, settings).items()}
            else:
                inputs = {table: spark.table(table) for table in outcome.rows_in}
            figures["floor"] = io_floor(spark, inputs)
            if stage == "identity":
                figures["reference"], labels = oneid_reference(spark, settings)
                figures["engines"] = engine_timings(spark, settings, labels)
            result["stages"][stage] = with_ratios(figures)
        result["increment"] = daily_increment(spark, settings, increment, references)
    from cdp.metastore import stop_server

    stop_server(settings)  # the lakehouse's catalog server goes with the lakehouse
    shutil.rmtree(work, ignore_errors=True)
    return result


def daily_increment(spark, settings, increment, references: bool = True) -> dict[str, Any]:
    """Land the increment, run every stage on it, then (with references) rebuild silver from all of bronze
    and recompute every person (--full), as the references."""
    from pyspark.sql import functions as F

    from cdp.pipeline import run_stage
    from cdp.tables import ONEID_MAP

    for source_dir in increment.increment.iterdir():
        for path in source_dir.iterdir():
            shutil.copy(path, increment.initial / source_dir.name / path.name)
    figures: dict[str, Any] = {"records": increment.increment_records, "new_persons": len(increment.new_persons),
                               "returning_persons": len(increment.returning_persons), "stages": {}}
    incremental = gold_incremental = None
    reruns = [("silver", True), ("identity", True), ("gold", True)] if references else []
    for stage, full in [*((s, False) for s in STAGES), *reruns]:
        outcome = run_stage(spark, settings, stage, AS_OF, full=full)
        if outcome.status != "succeeded":
            raise SystemExit(f"bench: stage {stage} failed on the increment: {outcome.error}")
        figures["stages"][f"{stage} --full" if full else stage] = {
            "seconds": round(outcome.seconds, 2), "rows_in": sum(outcome.rows_in.values()),
            "rows_out": sum(outcome.rows_out.values()),
        }
        if stage in ("identity", "gold"):  # per step, from ops.job_runs.metrics
            figures["stages"][f"{stage} --full" if full else stage]["steps"] = outcome.metrics.get("seconds")
        if stage == "identity":  # how much of the map the run recomputed, and whether a full recompute agrees
            named = f"{stage} --full" if full else stage
            figures["stages"][named]["records_recomputed"] = (
                outcome.metrics["records"] if outcome.metrics["mode"] == "full" else outcome.metrics["reached"])
            current = spark.table(ONEID_MAP).select("source", "record_key", "one_id")
            if not full:
                incremental = current.withColumnRenamed("one_id", "incremental").localCheckpoint()
            else:
                figures["stages"][named]["records_with_another_one_id_than_the_incremental_run"] = (
                    incremental.join(current, ["source", "record_key"], "full_outer")
                    .where(~F.col("incremental").eqNullSafe(F.col("one_id"))).count())
        if stage == "gold":  # how many persons the run recomputed, and whether a full recompute agrees
            named = f"{stage} --full" if full else stage
            figures["stages"][named]["persons_recomputed"] = outcome.metrics["persons_recomputed"]
            current = gold_rows(spark)
            if not full:
                gold_incremental = current.localCheckpoint()
            else:
                figures["stages"][named]["rows_differing_from_the_incremental_run"] = (
                    gold_incremental.exceptAll(current).count() + current.exceptAll(gold_incremental).count())
    return figures


def gold_rows(spark):
    """Every profile, tag value, consent state and audience membership, as one column of strings."""
    from pyspark.sql import functions as F

    queries = [
        "SELECT to_json(struct(* EXCEPT (phone_enc, email_enc))) AS row FROM gold.customer_profile",
        "SELECT to_json(struct(one_id, tag_code, value)) AS row FROM gold.customer_tags",
        "SELECT to_json(struct(*)) AS row FROM gold.consent_state",
        "SELECT to_json(struct(audience, one_id, purpose, entered_on)) AS row FROM gold.audience_members",
    ]
    return spark.sql(" UNION ALL ".join(f"({q})" for q in queries)).select(F.col("row"))


def with_ratios(figures: dict[str, Any]) -> dict[str, Any]:
    seconds = figures["seconds"]
    figures["rows_per_second"] = round(figures["rows_in"] / seconds) if seconds else None
    floor = figures.get("floor", {}).get("seconds")
    figures["ratio_to_floor"] = round(seconds / floor, 2) if floor else None
    if "reference" in figures:
        figures["ratio_to_reference"] = round(seconds / figures["reference"]["seconds"], 2)
    return figures


def print_report(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cdp pipeline benchmark (seconds; ratio = stage / its floor)")
    for column in ("persons", "stage", "seconds", "rows in", "rows/s", "I/O floor", "× floor", "scipy ref", "× ref"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for result in results:
        for stage, f in result["stages"].items():
            reference, floor = f.get("reference"), f.get("floor")
            table.add_row(f"{result['persons']:,}", stage, f"{f['seconds']:.1f}", f"{f['rows_in']:,}",
                          f"{f['rows_per_second']:,}", f"{floor['seconds']:.1f}" if floor else "",
                          f"{f['ratio_to_floor']:.1f}" if floor else "",
                          f"{reference['seconds']:.1f}" if reference else "", f"{f['ratio_to_reference']:.1f}" if reference else "")
    Console(width=130).print(table)
    engines = Table(title="connected components on the identity graph (seconds; × scipy = engine / scipy reference)")
    for column in ("persons", "engine", "algorithm", "broadcastThreshold", "seconds", "× scipy", "same partition"):
        engines.add_column(column, justify="left" if column in ("engine", "algorithm") else "right")
    for result in results:
        identity = result["stages"]["identity"]
        if "engines" not in identity:
            continue
        for run in identity["engines"]:
            engines.add_row(f"{result['persons']:,}", run["engine"], run["algorithm"], str(run["broadcast_threshold"] or ""),
                            f"{run['seconds']:.1f}", f"{run['seconds'] / identity['reference']['seconds']:.1f}",
                            "yes" if run["same_partition_as_scipy"] else "NO")
        engines.add_row(f"{result['persons']:,}", "scipy", "(reference)", "", f"{identity['reference']['seconds']:.1f}", "1.0", "")
    if any("engines" in result["stages"]["identity"] for result in results):
        Console(width=130).print(engines)
    daily = Table(title="the next day: an increment landed, each stage run again (seconds; rows read)")
    for column in ("persons", "increment records", "stage", "seconds", "rows in", "first run seconds",
                   "recomputed", "differ from the run over changes"):
        daily.add_column(column, justify="left" if column == "stage" else "right")
    for result in results:
        increment = result["increment"]
        for stage, f in increment["stages"].items():
            first = result["stages"].get(stage.split()[0], {}).get("seconds")
            recomputed = f.get("records_recomputed", f.get("persons_recomputed"))
            differ = f.get("records_with_another_one_id_than_the_incremental_run",
                           f.get("rows_differing_from_the_incremental_run"))
            daily.add_row(f"{result['persons']:,}", f"{increment['records']:,}", stage, f"{f['seconds']:.1f}",
                          f"{f['rows_in']:,}", f"{first:.1f}" if first is not None else "",
                          f"{recomputed:,}" if recomputed is not None else "", f"{differ:,}" if differ is not None else "")
    Console(width=130).print(daily)
    for result in results:
        ref = result["stages"]["identity"].get("reference")
        if ref is None:
            print(f"{result['persons']:,} persons: {result['landed_rows']:,} landed rows, generated in "
                  f"{result['generate_seconds']:.1f}s → {result['stages']['identity']['one_ids']:,} one_ids")
            continue
        print(f"{result['persons']:,} persons: {result['landed_rows']:,} landed rows, generated in "
              f"{result['generate_seconds']:.1f}s; OneID graph {ref['vertices']:,} vertices, {ref['edges']:,} edges, "
              f"{ref['components']:,} scipy components (collect {ref['collect_seconds']:.1f}s + solve "
              f"{ref['solve_seconds']:.1f}s) → {result['stages']['identity']['one_ids']:,} one_ids after guards "
              f"and probabilistic links")


def draw_chart(results: list[dict[str, Any]], path: Path) -> None:
    """Time per stage (bars; the floor as a grey bar beside each) and rows/s, one group per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (times, speed) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(results)
    for i, result in enumerate(results):
        x = [s + i * width for s in range(len(STAGES))]
        label = f"{result['persons']:,} persons"
        times.bar(x, [result["stages"][s]["seconds"] for s in STAGES], width * 0.6, align="edge", label=label)
        times.bar([p + width * 0.6 for p in x], [result["stages"][s].get("floor", {}).get("seconds", 0) for s in STAGES], width * 0.3,
                  align="edge", color="grey", label="I/O floor" if i == 0 else None)
        speed.bar(x, [result["stages"][s]["rows_per_second"] for s in STAGES], width * 0.9, align="edge", label=label)
    if len(results) > 1:
        times.set_yscale("log")  # sizes ten times apart: a linear axis hides the smallest
    for axis, title in ((times, "seconds per stage (grey: its I/O floor)"), (speed, "rows read per second")):
        axis.set_xticks([s + 0.4 for s in range(len(STAGES))], STAGES)
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {"cpus": os.cpu_count(), "memory_gib": round(memory / 2**30, 1) if memory else None,
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdp_dev.bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000], help="persons per run")
    parser.add_argument("--out", type=Path, default=Path("build/bench"))
    parser.add_argument("--no-references", action="store_true",
                        help="time the stages and the increment only: no I/O floors, scipy, engine runs or --full reruns")
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.one_size:
        result = run_size(args.one_size, out / f"work-{args.one_size}", references=not args.no_references)
        (out / f"size-{args.one_size}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        return 0
    results = []
    for persons in args.sizes:
        print(f"bench: {persons:,} persons …", flush=True)
        wall, child = _timed(lambda: subprocess.run([sys.executable, "-m", "cdp_dev.bench.pipeline", "--one-size", str(persons),
                                                     "--out", str(out), *(["--no-references"] if args.no_references else [])],
                                                    check=False))
        if child.returncode != 0:
            print(f"bench: the {persons:,}-person run failed (exit {child.returncode}); see its output above", file=sys.stderr)
            return 1
        result = json.loads((out / f"size-{persons}.json").read_text(encoding="utf-8"))
        result["wall_seconds"] = round(wall, 1)
        results.append(result)
    report = {"date": date.today().isoformat(), "command": "python -m cdp_dev.bench.pipeline " + " ".join(argv or sys.argv[1:]),
              "machine": machine(), "as_of": AS_OF.isoformat(), "seed": SEED, "results": results}
    (out / "bench.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    draw_chart(results, out / "bench.png")
    print_report(results)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
