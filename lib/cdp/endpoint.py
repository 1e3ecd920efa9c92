"""The SQL endpoint of a lakehouse: where `cdp sql-server` (Spark's Thrift server, HiveServer2
protocol) listens, and a client that sends statements to it, so `cdp sql` answers in well under a
second instead of starting a JVM of its own.

The server records itself in `<lakehouse>/sql-server.json`; a client that finds it answering there
uses it, else falls back to a Spark session of its own.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdp.conf import Settings

STATE_FILE = "sql-server.json"


class QueryError(RuntimeError):
    """A statement the server refused: the server's own message."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int


def _state(settings: Settings) -> Path:
    return Path(settings.lakehouse) / STATE_FILE


def record_server(settings: Settings, host: str, port: int, pid: int) -> None:
    """Written by `cdp sql-server` before it starts listening."""
    _state(settings).parent.mkdir(parents=True, exist_ok=True)
    _state(settings).write_text(json.dumps({"host": host, "port": port, "pid": pid}), encoding="utf-8")


def running_server(settings: Settings) -> Server | None:
    """This lakehouse's SQL server, if one is recorded and answers."""
    try:
        recorded = json.loads(_state(settings).read_text(encoding="utf-8"))
        server = Server("127.0.0.1" if recorded["host"] in ("0.0.0.0", "localhost") else recorded["host"],
                        int(recorded["port"]))
    except (OSError, ValueError, KeyError):
        return None
    try:
        with socket.create_connection((server.host, server.port), timeout=1.0):
            return server
    except OSError:
        return None


def connect(server: Server, user: str = "cdp", password: str = "cdp") -> Callable[[str], tuple[list[str], list[list[Any]]]]:
    """A function running one statement on the server: (columns, rows). The connection lives as long
    as the function does."""
    from impala.dbapi import connect as hiveserver2
    from impala.error import Error as ServerError

    connection = hiveserver2(host=server.host, port=server.port, auth_mechanism="PLAIN", user=user, password=password,
                             timeout=600)
    cursor = connection.cursor()

    def run(statement: str) -> tuple[list[str], list[list[Any]]]:
        try:
            cursor.execute(statement)
            columns = [d[0].split(".")[-1] for d in cursor.description or []]
            rows = [list(r) for r in cursor.fetchall()] if cursor.description else []
        except ServerError as exc:
            raise QueryError(_first_line(str(exc))) from exc
        return columns, rows

    return run


def _first_line(message: str) -> str:
    """The server's message without the Java stack it carries."""
    for line in message.splitlines():
        if line.strip() and not line.strip().startswith("at "):
            return line.strip()
    return message.strip()
