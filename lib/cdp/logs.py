"""One structured log format for every entry point (CLI and spark-submit jobs): key=value on stderr."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT)
    logging.getLogger("py4j").setLevel(logging.WARNING)


def first_line(exc: BaseException) -> str:
    """The first line of spark_message: the error class and what it says, without the plan."""
    lines = spark_message(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def spark_message(exc: BaseException) -> str:
    """Spark's own message for its exceptions (AnalysisException, ParseException…), else str(exc)."""
    get_message = getattr(exc, "getMessage", None)
    return get_message() if callable(get_message) else str(exc)
