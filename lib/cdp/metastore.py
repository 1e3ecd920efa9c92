"""The shared catalog on one machine: a Derby network server over the lakehouse's metastore_db,
started on demand by the project's own commands, so that a run, SQL shells, notebooks and the SQL
server use one catalog at the same time (the embedded Derby driver admits one JVM only).

The server is Apache Derby's own (`org.apache.derby.drda.NetworkServerControl`, the version of
pyspark's derby.jar), listening on 127.0.0.1 only, on a free port recorded in
`<lakehouse>/metastore.json`; it keeps running after the command that started it, so the next one
connects at once. `cdp metastore status | stop` manage it. A cluster uses its own metastore.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cdp.conf import Settings

log = logging.getLogger(__name__)

DERBY_VERSION = "10.16.1.1"  # the version of pyspark's own derby.jar: one on-disk format
SERVER_ARTIFACTS = ("derbynet", "derbyclient")  # the network server and its JDBC client driver
CLIENT_DRIVER = "org.apache.derby.jdbc.ClientDriver"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
STATE_FILE = "metastore.json"
START_TIMEOUT_S = 60.0


class MetastoreError(RuntimeError):
    """The shared catalog could not be reached or started: says why and what to do."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    pid: int

    def url(self) -> str:
        return f"jdbc:derby://{self.host}:{self.port}/metastore_db;create=true"


def jar_cache() -> Path:
    """Where the server's two jars are kept: CDP_JAR_CACHE, else ~/.cache/cdp/jars."""
    return Path(os.environ.get("CDP_JAR_CACHE") or Path.home() / ".cache" / "cdp" / "jars")


def server_jars(settings: Settings) -> list[Path]:
    """derbynet and derbyclient: from the staged jars when `make jars` has put them there, else from
    the cache, else fetched once from the configured Maven repositories (then Maven Central), each
    checked against the repository's SHA-1."""
    staged = Path(settings.resolve(settings.pipeline.jars.staged_dir)) if settings.pipeline.jars.staged_dir else None
    found = []
    for artifact in SERVER_ARTIFACTS:
        name = f"{artifact}-{DERBY_VERSION}.jar"
        if staged is not None and (staged / name).is_file():
            found.append(staged / name)
            continue
        cached = jar_cache() / name
        if not cached.is_file():
            _fetch(artifact, cached, [*settings.pipeline.jars.repositories, MAVEN_CENTRAL])
        found.append(cached)
    return found


def _fetch(artifact: str, target: Path, repositories: list[str]) -> None:
    path = f"org/apache/derby/{artifact}/{DERBY_VERSION}/{artifact}-{DERBY_VERSION}.jar"
    problems = []
    for repository in repositories:
        url = f"{repository.rstrip('/')}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
            with urllib.request.urlopen(url + ".sha1", timeout=60) as response:
                expected = response.read().decode("ascii").split()[0].strip().lower()
        except OSError as exc:
            problems.append(f"{url}: {exc}")
            continue
        if hashlib.sha1(payload).hexdigest() != expected:
            problems.append(f"{url}: SHA-1 does not match its .sha1")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(payload)
        partial.replace(target)
        log.info("metastore: fetched %s from %s", target.name, repository)
        return
    raise MetastoreError(
        f"the shared catalog needs org.apache.derby:{artifact}:{DERBY_VERSION}, which no repository served "
        f"({'; '.join(problems)}). Fix: run `make jars` (and export CDP_JARS_DIR=$PWD/jars/staged), set "
        f"CDP_MAVEN_REPOSITORIES to a reachable mirror, or put the jar in {target.parent}."
    )


def client_jar(settings: Settings) -> Path:
    """The JDBC client driver every session of this lakehouse puts on its driver's class path."""
    return server_jars(settings)[SERVER_ARTIFACTS.index("derbyclient")]


def _spark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _state_path(settings: Settings) -> Path:
    return Path(settings.lakehouse) / STATE_FILE


def read_endpoint(settings: Settings) -> Endpoint | None:
    """The recorded server of this lakehouse, if one answers on its port."""
    try:
        state = json.loads(_state_path(settings).read_text(encoding="utf-8"))
        endpoint = Endpoint(state["host"], int(state["port"]), int(state["pid"]))
    except (OSError, ValueError, KeyError):
        return None
    return endpoint if _answers(endpoint.host, endpoint.port) else None


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One process at a time decides whether to start the server (two starting at once would race)."""
    lock_path = Path(settings.lakehouse) / "metastore.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_server(settings: Settings) -> Endpoint:
    """This lakehouse's catalog server: the running one, or a new one started now."""
    running = read_endpoint(settings)
    if running is not None:
        return running
    jars = server_jars(settings)  # outside the lock: a first fetch may take a while
    with _locked(settings):
        running = read_endpoint(settings)  # another process may have started it meanwhile
        if running is not None:
            return running
        return _start(settings, jars)


def _java() -> str:
    java = shutil.which("java", path=str(Path(os.environ["JAVA_HOME"]) / "bin")) if os.environ.get("JAVA_HOME") else None
    java = java or shutil.which("java")
    if java is None:
        raise MetastoreError("no `java` on PATH or in JAVA_HOME: Spark and the catalog server need Java 17. "
                             "Fix: install a JDK 17 and put it on PATH (or set JAVA_HOME).")
    return java


def _start(settings: Settings, jars: list[Path]) -> Endpoint:
    lakehouse = Path(settings.lakehouse)
    lakehouse.mkdir(parents=True, exist_ok=True)
    java = _java()
    classpath = [*sorted(_spark_jars().glob("derby*.jar")), *jars]
    port = _free_port()
    log_file = lakehouse / "metastore-server.log"
    command = [
        java, "-Xmx512m", f"-Dderby.system.home={lakehouse}", f"-Dderby.stream.error.file={lakehouse / 'derby.log'}",
        "-cp", os.pathsep.join(str(p) for p in classpath),
        "org.apache.derby.drda.NetworkServerControl", "start", "-h", "127.0.0.1", "-p", str(port), "-noSecurityManager",
    ]
    with open(log_file, "ab") as output:
        # A session of its own: the server outlives the command (and its Ctrl-C) that started it.
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=lakehouse)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_file.read_text(encoding="utf-8", errors="replace")[-1500:]
            raise MetastoreError(f"the catalog server for {lakehouse} did not start on 127.0.0.1:{port}: {tail.strip()} "
                                 f"Fix: see {log_file}; another process may hold {lakehouse / 'metastore_db'} "
                                 "with the embedded driver (stop it first).")
        time.sleep(0.2)
    endpoint = Endpoint("127.0.0.1", port, process.pid)
    _state_path(settings).write_text(json.dumps(endpoint.__dict__), encoding="utf-8")
    log.info("metastore: catalog server for %s started on %s:%d (pid %d)", lakehouse, endpoint.host, port, process.pid)
    return endpoint


def stop_server(settings: Settings) -> Endpoint | None:
    """Stop this lakehouse's catalog server; the one stopped, or None when none was running."""
    with _locked(settings):
        running = read_endpoint(settings)
        if running is not None:
            _shut_down(settings, running)
        _state_path(settings).unlink(missing_ok=True)
    return running


def _shut_down(settings: Settings, endpoint: Endpoint) -> None:
    """Derby's own shutdown (the database is closed cleanly), then SIGTERM if it still answers."""
    classpath = [*sorted(_spark_jars().glob("derby*.jar")), *server_jars(settings)]
    subprocess.run([_java(), "-cp", os.pathsep.join(str(p) for p in classpath), "org.apache.derby.drda.NetworkServerControl",
                    "shutdown", "-h", endpoint.host, "-p", str(endpoint.port)], capture_output=True, timeout=60, check=False)
    deadline = time.monotonic() + 20
    while _answers(endpoint.host, endpoint.port) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _answers(endpoint.host, endpoint.port):
        try:
            os.kill(endpoint.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def terminate_servers_under(root: Path) -> list[Endpoint]:
    """Stop (SIGTERM) every catalog server recorded under `root`: what a test run started in its
    throw-away lakehouses. Returns those it stopped."""
    stopped = []
    for state in root.rglob(STATE_FILE):
        try:
            recorded = json.loads(state.read_text(encoding="utf-8"))
            endpoint = Endpoint(recorded["host"], int(recorded["port"]), int(recorded["pid"]))
            os.kill(endpoint.pid, signal.SIGTERM)
            stopped.append(endpoint)
        except (OSError, ValueError, KeyError):
            continue
    return stopped
