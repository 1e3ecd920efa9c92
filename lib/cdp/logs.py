"""One structured log format for every entry point (CLI and spark-submit jobs), on stderr:
key=value lines by default, or one JSON object per line with CDP_LOG_FORMAT=json (for a log
shipper: Loki, Elasticsearch, CloudWatch)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


class JsonFormatter(logging.Formatter):
    """time, level, logger, msg, and the exception's text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    json_lines = os.environ.get("CDP_LOG_FORMAT", "text").lower() == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("py4j").setLevel(logging.WARNING)


def first_line(exc: BaseException) -> str:
    """The first line of spark_message: the error class and what it says, without the plan."""
    lines = spark_message(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def spark_message(exc: BaseException) -> str:
    """Spark's own message for its exceptions (AnalysisException, ParseException…), else str(exc)."""
    get_message = getattr(exc, "getMessage", None)
    return get_message() if callable(get_message) else str(exc)


@contextmanager
def timed_step(stage: str, name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Time a stage's step into seconds[name] (added up when the step runs more than once) and log it."""
    started = time.perf_counter()
    yield
    seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - started, 1)
    logging.getLogger(f"cdp.stages.{stage}").info("%s: %s in %.1fs", stage, name, seconds[name])
