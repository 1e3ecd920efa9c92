"""Shared glue for the spark-submit entry points: parse arguments, open the session, run a stage.

Exit codes as for `cdp run`: 0 success, 1 a stage failed, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

log = logging.getLogger("cdp.job")


def parse_arguments(stage: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"CDP {stage} stage")
    parser.add_argument("--profile", default=None, help="profile in conf/pipeline.yaml")
    parser.add_argument("--conf-dir", default=None, help="folder holding pipeline.yaml")
    parser.add_argument("--as-of", default=None, type=run_date, help="run date YYYY-MM-DD (default: today)")
    parser.add_argument("--full", action="store_true", help="silver: rebuild from all of bronze; identity and gold: recompute every person (not only what changed)")
    if stage == "stream":
        parser.add_argument("--once", action="store_true", help="process the event files landed now, then stop")
        parser.add_argument("--deliver-to", nargs=2, metavar=("KIND", "TARGET"), default=None,
                            help="also deliver activation events as they are logged: webhook URL, or dir DIR (as cdp activate --to)")
    return parser.parse_args()


def run_date(value: str) -> date:
    """argparse type for --as-of: a bad date is a usage error (exit 2), not a traceback."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{value}' is not a date. Fix: use YYYY-MM-DD.") from exc


def log_build(stage: str) -> None:
    """Say which cdp runs and where Python imported it from, so an operator can tell that the release's
    cdp.zip (--py-files) ran and not a copy installed on the node."""
    import cdp

    origin = Path(cdp.__file__).resolve().parent.parent  # the zip, or the folder holding the cdp package
    log.info("job %s: cdp %s from %s", stage, cdp.__version__, origin)


def configuration_error(exc: Exception) -> int:
    print(f"configuration error\n{exc}", file=sys.stderr)
    return 2


def main(stage: str) -> int:
    """Run a stage (or all): what `cdp run --stage STAGE` does, as a spark-submit application."""
    from cdp.conf import ConfigError
    from cdp.pipeline import StageFailed, run_stages

    def run(spark, settings, args) -> int:
        try:
            for outcome in run_stages(spark, settings, stage, args.as_of or date.today(), full=args.full):
                print(f"{outcome.stage}: {outcome.status} in {outcome.seconds:.1f}s rows_in={outcome.rows_in} "
                      f"rows_out={outcome.rows_out} {outcome.metrics}")
        except ConfigError as exc:  # e.g. a cluster profile without its keys: no stage ran
            return configuration_error(exc)
        except StageFailed as exc:
            print(str(exc), file=sys.stderr)
            return 1
        return 0

    return with_session(stage, run)


def maintain_main() -> int:
    """`cdp maintain` as a spark-submit application: OPTIMIZE every table, Z-order the per-person ones, VACUUM."""

    def run(spark, settings, args) -> int:
        from cdp.operations.maintenance import maintain

        result = maintain(spark, settings)
        for o in result.optimized:
            print(f"{o.table}: {o.files_removed} -> {o.files_added} files in {o.seconds:.1f}s"
                  + (f", z-ordered by {', '.join(o.zorder_by)}" if o.zorder_by else ""))
        if result.vacuumed:
            print(f"vacuumed {result.vacuumed.tables} tables (retention {result.vacuumed.retention_hours:g} h)")
        return 0

    return with_session("maintain", run)


def stream_main() -> int:
    """`cdp stream` as a spark-submit application: real-time tags from events as they land, until
    SIGTERM (or, with --once, until the files landed now are processed)."""

    def destination(args, settings) -> int | None:
        """A bad --deliver-to is a usage error before Spark starts (exit 2), as in `cdp stream`; so is
        a bad stream.kafka."""
        from cdp.conf import ConfigError
        from cdp.operations.activate import sender
        from cdp.stages.stream import stream_sources

        try:
            stream_sources(settings)
        except ConfigError as exc:
            return configuration_error(exc)
        args.sender = None
        if args.deliver_to:
            try:
                args.sender = sender(*args.deliver_to, option="--deliver-to")
            except ValueError as exc:
                print(exc, file=sys.stderr)
                return 2
        return None

    def run(spark, settings, args) -> int:
        from cdp.operations.activate import Pusher
        from cdp.stages.stream import run_stream

        pusher = Pusher(spark, settings, args.sender) if args.sender is not None else None
        done = run_stream(spark, settings, once=args.once, pusher=pusher)
        delivered = f"; {pusher.delivered} activation events delivered" if pusher is not None else ""
        print(f"stream: {done.batches} batches, {done.rows} rows in {done.seconds:.1f}s{delivered}")
        return 0

    return with_session("stream", run, check=destination)


def with_session(name: str, run, check=None) -> int:
    """Parse the arguments, load and check the configuration, open the session, run. `check(args,
    settings)` refuses bad arguments or settings before the session starts: an exit code, or None to go on."""
    args = parse_arguments(name)

    from cdp.conf import ConfigError, load_settings
    from cdp.logs import configure_logging
    from cdp.spark import spark_session

    configure_logging()
    log_build(name)
    try:
        settings = load_settings(args.profile, args.conf_dir)
        settings.validate_all()
    except ConfigError as exc:
        return configuration_error(exc)
    refused = check(args, settings) if check is not None else None
    if refused is not None:
        return refused
    with spark_session(settings, app_name=f"cdp-{name}") as spark:
        return run(spark, settings, args)
