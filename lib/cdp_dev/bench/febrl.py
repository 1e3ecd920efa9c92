"""The probabilistic engine's FEBRL runtime, measured like the Splink reference (lib/cdp/bench/splink_febrl.py):
one Spark session, each dataset linked N times, min and median of the linkage time (data loaded,
Spark running), and the scores.

    python -m cdp_dev.bench.febrl --repeat 5 [--out build/febrl.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from cdp.conf import load_settings
    from cdp_dev.febrl import evaluate
    from cdp.spark import spark_session

    settings = load_settings()
    started = time.perf_counter()
    report: dict = {}
    with spark_session(settings, app_name="cdp-bench-febrl") as spark:
        spark.range(1).count()
        report["spark_start_seconds"] = round(time.perf_counter() - started, 2)
        for which in (4, 3):
            runs = [evaluate(spark, which)[0] for _ in range(args.repeat)]
            seconds = [r.seconds for r in runs]
            last = runs[-1]
            report[last.dataset] = {
                **{k: v for k, v in last.as_dict().items() if k != "seconds"},
                "seconds_all_runs": seconds, "seconds_min": min(seconds), "seconds_median": statistics.median(seconds),
                "f1_all_runs": [r.f1 for r in runs],
            }
            print(f"{last.dataset}: precision {last.precision:.4f} recall {last.recall:.4f} F1 {last.f1:.4f} "
                  f"candidates {last.candidate_pairs:,} runtime min {min(seconds):.1f} s median "
                  f"{statistics.median(seconds):.1f} s (runs: {', '.join(f'{s:.1f}' for s in seconds)})", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
