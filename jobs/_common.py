"""Shared glue for the spark-submit entry points: parse arguments, open the session, run a stage."""

from __future__ import annotations

import argparse
import sys
from datetime import date


def main(stage: str) -> int:
    parser = argparse.ArgumentParser(description=f"CDP {stage} stage")
    parser.add_argument("--profile", default=None, help="profile in conf/pipeline.yaml")
    parser.add_argument("--conf-dir", default=None, help="folder holding pipeline.yaml")
    parser.add_argument("--as-of", default=None, help="run date YYYY-MM-DD (default: today)")
    args = parser.parse_args()

    from cdp.config import ConfigError, load_settings
    from cdp.logs import configure_logging
    from cdp.pipeline import StageFailed, run_stages
    from cdp.spark import spark_session

    configure_logging()
    try:
        settings = load_settings(args.profile, args.conf_dir)
        settings.validate_all()
    except ConfigError as exc:
        print(f"configuration error\n{exc}", file=sys.stderr)
        return 2
    as_of = date.fromisoformat(args.as_of) if args.as_of else date.today()
    with spark_session(settings, app_name=f"cdp-{stage}") as spark:
        try:
            for outcome in run_stages(spark, settings, stage, as_of):
                print(f"{outcome.stage}: {outcome.status} in {outcome.seconds:.1f}s {outcome.metrics}")
        except StageFailed as exc:
            print(str(exc), file=sys.stderr)
            return 1
    return 0
