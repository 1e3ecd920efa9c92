"""Connected components on a real identity graph, timed per engine setting.

    python -m cdp_dev.bench.components --lakehouse build/bench-oneid/lakehouse [--repeat 3]

Reads the identity graph of an existing lakehouse (silver.identifiers after hygiene), then times
the DataFrame two-phase engine with checkpoints every 1, 2 and 4 rounds, each with adaptive query
execution on and off, and — when the GraphFrames jar is on the classpath — GraphFrames'
algorithms. Every variant must give the same partition of the vertices; the figures print as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdp_dev.bench.components", description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", type=Path, required=True)
    parser.add_argument("--profile", default="local")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ["CDP_LAKEHOUSE"] = str(args.lakehouse.resolve())

    from pyspark.sql import functions as F

    from cdp_dev.bench.pipeline import identity_edges
    from cdp.conf import load_settings
    from cdp.conf.identity import Components
    from cdp.identity.components import graphframes_available, graphframes_components, two_phase_components
    from cdp.spark import spark_session

    settings = load_settings(args.profile)
    results = []
    with spark_session(settings, app_name="cdp-bench-components") as spark:
        edges = identity_edges(spark, settings).checkpoint()
        vertices = edges.select(F.col("src").alias("id")).unionByName(edges.select(F.col("dst").alias("id"))).distinct().checkpoint()
        graph = {"vertices": vertices.count(), "edges": edges.count()}
        reference = None
        variants = [("dataframe", interval, aqe) for interval in (1, 2, 4) for aqe in (True, False)]
        if graphframes_available(spark):
            variants += [(f"graphframes:{algorithm}", 2, True) for algorithm in ("two_phase", "graphx", "randomized_contraction")]
        for engine, interval, aqe in variants:
            spark.conf.set("spark.sql.adaptive.enabled", str(aqe).lower())
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                if engine == "dataframe":
                    labels = two_phase_components(vertices, edges, interval)
                else:
                    labels = graphframes_components(vertices, edges, Components(engine="graphframes", algorithm=engine.split(":")[1], checkpoint_interval=interval))
                sizes = labels.groupBy("component").count().agg(F.count("*").alias("components"), F.max("count").alias("largest")).first()
                times.append(time.perf_counter() - started)
            outcome = (sizes["components"], sizes["largest"])
            reference = reference or outcome
            results.append({
                "engine": engine, "checkpoint_interval": interval, "aqe": aqe,
                "seconds_min": round(min(times), 1), "seconds_median": round(statistics.median(times), 1),
                "seconds_max": round(max(times), 1), "components": outcome[0], "largest": outcome[1],
                "same_as_first": outcome == reference,
            })
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        spark.conf.set("spark.sql.adaptive.enabled", "true")
    report = {"graph": graph, "graphframes_available": any(r["engine"].startswith("graphframes") for r in results), "runs": results}
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
