"""Roles at the SQL endpoint (最小权限, enforced): what a role's user can reach through `cdp sql --role R`
and `cdp sql-server --role R`, who may sign in, and the audit row of every statement.

- **Reach.** A role session runs Spark with the role guard (io.cdp.sql.RoleGuard, cdp/jvm): a user's
  statement may read the views of the role's database (privacy.yaml `roles`, built by the gold stage)
  and nothing else — no table of bronze, silver, identity, gold or ops, no other role's view, no file
  by path (`spark.sql.runSQLOnFiles` is off too), no DDL, DML, CACHE, EXPLAIN or SET k=v. The role is
  a static conf: a session cannot change it.
- **Sign-in.** A role's server authenticates every connection (HiveServer2 CUSTOM, io.cdp.sql.PasswordFile)
  against the users file (`cdp sql-user add`): PBKDF2-SHA256 hashes, one role per user; a user of
  another role is refused.
- **Audit.** Every statement ends as an `ops.audit_log` row (action `sql`): the user, the role, when
  it started, a keyed fingerprint of its text (HMAC with the hash key: the same statement gives the same
  fingerprint, and a phone number typed into a WHERE cannot be read back from it), the views it read,
  and ok / refused / error. The server writes the rows of its ended statements every few seconds.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from uuid import uuid4

from pyspark.sql import SparkSession

from cdp.audit import append_events, current_actor, event
from cdp.conf import ConfigError, Settings
from cdp.jvm import endpoint_jar
from cdp.privacy.protect import keyed_hash_text, load_keys
from cdp.spark import build_session, session_conf, spark_session

log = logging.getLogger(__name__)

ROLE_CONF = "spark.cdp.role"
USERS_CONF = "spark.cdp.sql.users"
CUSTOM_CLASS = "hive.server2.custom.authentication.class"
REFUSED_MARK = "reads only the views of the database"
ITERATIONS = 600_000
MIN_PASSWORD = 12
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class AccessError(RuntimeError):
    """A statement the role may not run: the guard's own message (names only, never values)."""


# ---------------------------------------------------------------- users


def users_file(settings: Settings) -> Path:
    """CDP_SQL_USERS, else <lakehouse>/sql-users."""
    return Path(os.environ.get("CDP_SQL_USERS") or Path(settings.lakehouse) / "sql-users")


def check_role(settings: Settings, role: str) -> None:
    if role not in settings.privacy.roles:
        raise ConfigError(f"{settings.conf_dir / 'privacy.yaml'}: key 'roles' has no role '{role}'. "
                          f"Fix: use one of {sorted(settings.privacy.roles)}, or declare it there.")


def password_line(name: str, role: str, password: str, salt: bytes | None = None,
                  iterations: int = ITERATIONS) -> str:
    """name:role:pbkdf2-sha256:iterations:salt:hash, the line PasswordFile checks a sign-in against."""
    salt = salt or secrets.token_bytes(16)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, dklen=32)
    return ":".join([name, role, "pbkdf2-sha256", str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(derived).decode()])


def list_users(path: Path) -> list[tuple[str, str]]:
    """(name, role) of each user of the file."""
    if not path.is_file():
        return []
    return [(f[0], f[1]) for f in (line.strip().split(":") for line in path.read_text(encoding="utf-8").splitlines())
            if len(f) == 6]


def add_user(settings: Settings, path: Path, name: str, role: str, password: str) -> bool:
    """Add the user, or replace their role and password; True when they were new. The file is
    readable by its owner only."""
    check_role(settings, role)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"user name '{name}': use 1–64 letters, digits, '_', '.', '@' or '-'.")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password of '{name}' is shorter than {MIN_PASSWORD} characters. Fix: use a longer one "
                          f"(e.g. `openssl rand -base64 18`).")
    lines = [line for line in _lines(path) if line.split(":", 1)[0] != name]
    new = len(lines) == len(_lines(path))
    _write(path, [*lines, password_line(name, role, password)])
    return new


def remove_user(path: Path, name: str) -> bool:
    lines = _lines(path)
    kept = [line for line in lines if line.split(":", 1)[0] != name]
    if len(kept) != len(lines):
        _write(path, kept)
    return len(kept) != len(lines)


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{uuid4().hex}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write("".join(f"{line}\n" for line in lines))
    os.replace(staging, path)


# ---------------------------------------------------------------- sessions


def role_conf(settings: Settings, role: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The Spark conf of a role's session (over `base`, the profile's session_conf): the guard, the
    role, no SQL on files, the role's database as the current one, and the guard's jar on the
    driver's class path."""
    check_role(settings, role)
    base = base or session_conf(settings)
    jar = str(endpoint_jar())
    return {
        "spark.sql.extensions": f"{base['spark.sql.extensions']},io.cdp.sql.RoleGuard",
        ROLE_CONF: role,
        "spark.sql.runSQLOnFiles": "false",
        "spark.sql.catalog.spark_catalog.defaultDatabase": role,
        "spark.driver.extraClassPath": os.pathsep.join(p for p in (base.get("spark.driver.extraClassPath"), jar) if p),
    }


def require_views(spark: SparkSession, settings: Settings, role: str) -> None:
    if not spark.catalog.databaseExists(role) or not spark.catalog.listTables(role):
        raise ConfigError(f"role '{role}' has no views in this lakehouse yet. Fix: run the gold stage "
                          f"(`cdp run`), which builds every role's views from privacy.yaml.")


@dataclass
class Statement:
    """One statement run through a role's endpoint, as the audit log keeps it."""
    user: str
    role: str
    endpoint: str
    text: str
    started: datetime
    ended: datetime
    status: str  # ok | refused | error | canceled
    read: list[str] = field(default_factory=list)
    message: str = ""
    statement_id: str = ""
    session: str = ""


def fingerprint(text: str, key: bytes) -> str:
    """HMAC-SHA256 of the statement with its whitespace collapsed."""
    return keyed_hash_text(" ".join(text.split()), key)


def audit_statements(spark: SparkSession, key: bytes, statements: list[Statement]) -> None:
    """One audit row per statement, fingerprinted with the hash key `key`."""
    append_events(spark, [event(
        "sql", actor=s.user, at=s.started, object=",".join(s.read) or None, destination=s.endpoint, status=s.status,
        details={"role": s.role, "fingerprint": fingerprint(s.text, key), "ended": s.ended.isoformat(),
                 "seconds": round((s.ended - s.started).total_seconds(), 3), "reason": _reason(s),
                 "statement_id": s.statement_id, "session": s.session},
    ) for s in statements])


def refusal(message: str) -> str:
    """The guard's own sentence out of the exception text around it."""
    at = message.find("role ")
    return message[at:].splitlines()[0] if at >= 0 else "refused"


def _reason(statement: Statement) -> str:
    """Why a statement did not run: the guard's message (names only), or the error's class — never the
    rest of an error message, which may quote the statement's literals."""
    if statement.status == "refused":
        return refusal(statement.message)
    if statement.status == "error":
        found = re.search(r"\[([A-Z_.]+)\]", statement.message) or re.search(r"(\w+(Exception|Error))", statement.message)
        return found.group(1) if found else "error"
    return ""


@contextmanager
def role_runner(settings: Settings, role: str, actor: str | None = None
                ) -> Iterator[Callable[[str], tuple[list[str], list[list[Any]]]]]:
    """run(statement) -> (columns, rows) in a Spark session of this process enforcing the role; each
    statement is audited. A refused statement raises AccessError."""
    with spark_session(settings, app_name=f"cdp-sql-{role}", extra_conf=role_conf(settings, role)) as spark:
        require_views(spark, settings, role)
        user = actor or current_actor()
        key = load_keys(settings).hash_key
        context = spark.sparkContext
        guard = spark._jvm.io.cdp.sql.RoleGuard  # noqa: SLF001 - the guard's own bookkeeping

        def run(text: str) -> tuple[list[str], list[list[Any]]]:
            group = f"cdp-sql-{uuid4().hex}"
            started, status, message = datetime.now(timezone.utc), "ok", ""
            context.setJobGroup(group, f"cdp sql --role {role}")
            try:
                frame = spark.sql(text)
                return frame.columns, [list(r) for r in frame.collect()]
            except Exception as exc:
                message = _java_message(exc)
                status = "refused" if REFUSED_MARK in message else "error"
                if status == "refused":
                    raise AccessError(refusal(message)) from None
                raise
            finally:
                context.setLocalProperty("spark.jobGroup.id", None)
                read = [v for v in str(guard.takeRead(group)).split(",") if v]
                audit_statements(spark, key, [Statement(user, role, f"cdp sql --role {role}", text, started,
                                                             datetime.now(timezone.utc), status, read, message)])

        yield run


def _java_message(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)
    return str(java.toString()) if java is not None else str(exc)


# ---------------------------------------------------------------- the server


def server_conf(settings: Settings, role: str, host: str, port: int, users: Path) -> dict[str, str]:
    """A role's Thrift server: the role's session, HiveServer2 on host:port with CUSTOM sign-in
    against the users file, and the statement log."""
    base = session_conf(settings)
    conf = role_conf(settings, role, base)
    staged = settings.pipeline.jars.staged_dir
    if not staged:
        # Thrift sessions load catalog classes from the driver class path, which spark.jars.packages does not reach.
        raise ConfigError("The SQL server needs staged jars. Fix: run `make jars` and export "
                          "CDP_JARS_DIR=$PWD/jars/staged (or run `make sql-server ROLE=…`, which does both).")
    jars = [str(j) for j in sorted(Path(settings.resolve(staged)).glob("*.jar"))]
    conf["spark.driver.extraClassPath"] = os.pathsep.join([conf["spark.driver.extraClassPath"], *jars])
    # the sign-in check reads a fresh HiveConf, which sees Java system properties, not the server's conf
    options = base.get("spark.driver.extraJavaOptions", "")
    conf["spark.driver.extraJavaOptions"] = f"{options} -D{CUSTOM_CLASS}=io.cdp.sql.PasswordFile".strip()
    conf.update({
        USERS_CONF: str(users.resolve()),
        "spark.extraListeners": "io.cdp.sql.StatementLog",
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.transport.mode": "binary",
        "spark.hadoop.hive.server2.authentication": "CUSTOM",
        "spark.ui.enabled": "false",
    })
    return conf


def serve(settings: Settings, role: str, host: str, port: int, users: Path,
          on_ready: Callable[[str], None] = lambda url: None, flush_seconds: float = 2.0) -> None:
    """Run the role's Thrift server until SIGTERM or SIGINT; the ended statements are audited every
    `flush_seconds` and once more on the way out."""
    check_role(settings, role)
    if not any(r == role for _, r in list_users(users)):
        raise ConfigError(f"{users}: no user of role '{role}', so nobody could sign in. "
                          f"Fix: cdp sql-user add NAME --role {role}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    spark = build_session(settings, f"cdp-sql-server-{role}", server_conf(settings, role, host, port, users))
    try:
        require_views(spark, settings, role)
        jvm = spark._jvm  # noqa: SLF001
        server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
            spark._jsparkSession.sqlContext())  # noqa: SLF001
        endpoint = f"sql-server {role}@{host}:{port}"
        key = load_keys(settings).hash_key
        on_ready(f"jdbc:hive2://{host}:{port}/{role}")

        def flush() -> None:
            ended = [_ended(list(row), role, endpoint) for row in jvm.io.cdp.sql.StatementLog.drain()]
            audit_statements(spark, key, ended)

        while not stop.wait(flush_seconds):
            flush()
        server.stop()
        flush()
    finally:
        spark.stop()


def _ended(row: list, role: str, endpoint: str) -> Statement:
    statement_id, session, user, text, started, _group, ended, status, message, read = (str(v) for v in row)

    def at(millis: str) -> datetime:
        return datetime.fromtimestamp(int(millis) / 1000, timezone.utc)

    return Statement(user, role, endpoint, text, at(started), at(ended), status, [v for v in read.split(",") if v],
                     message, statement_id, session)
