"""A real single-node Apache Kafka broker on 127.0.0.1 for the tests of the Kafka source: one JVM in
KRaft combined mode (broker and controller in one process, no ZooKeeper), started from the jars that
`make jars/kafka-broker/.staged` copies from Maven Central (tests/kafka/pom.xml; `make test` passes
their folder as CDP_TEST_KAFKA_JARS).

    with KafkaBroker(jars_dir, tmp_path / "kafka") as kafka:
        kafka.create_topic("events", partitions=2)
        kafka.produce("events", ['{"id": 1}', '{"id": 2}'])
        spark.readStream.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap) ...
        assert kafka.consume("activations", 2) == [...]

Everything the broker writes lives under `work_dir`: server.properties, log4j2.properties, the data
and metadata logs (data/), and kafka.log, the JVM's stdout and stderr, which a failed start quotes.
The command-line tools (create_topic, produce, consume) each start a short-lived JVM of their own
(a second or two each): fine for setting a test up, not for producing in volume. Stdlib only.
"""

from __future__ import annotations

import atexit
import base64
import os
import socket
import subprocess
import time
import uuid
from collections import deque
from pathlib import Path

READY_TIMEOUT = 90.0  # seconds for the broker to serve after its JVM starts
STOP_GRACE = 20.0  # seconds between SIGTERM and SIGKILL
TOOL_TIMEOUT = 60.0  # seconds for one command-line tool (create_topic, produce, consume)
READY_LINE = "Kafka Server started"  # KafkaRaftServer logs it once the broker serves requests

# A small footprint: the tests run beside Spark on a 2-core machine. The tools get C1 only, which
# starts faster; the broker keeps the full JIT, since Spark's tests push data through it for minutes.
BROKER_JVM = ["-Xmx256m", "-Xms64m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
TOOL_JVM = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]

# log4j2 for the broker and the tools alike. Kafka logs through SLF4J, bound to log4j2 by
# log4j-slf4j-impl; the level comes from the cdp.kafka.level system property: INFO for the broker
# (its READY_LINE is an INFO line), WARN for the tools, so their stdout holds only their output.
LOG4J2 = """\
status = warn
# Kafka logs while it shuts down: log4j2 stays up until the JVM exits
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${sys:cdp.kafka.level:-INFO}
rootLogger.appenderRef.out.ref = out
# the broker's chattiest INFO loggers: each prints every config it reads, or every segment it rolls
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
"""


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1, held open together so that no two are the same. The
    broker binds them a moment later: another process could take one in between, which on a test
    machine is rare enough."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one (Uuid.randomUuid): a UUID in URL-safe base64, 22
    characters, never starting with "-", which would read as an option on a command line."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return "(no log)"


class KafkaBroker:
    """One broker-and-controller JVM (node 1) on two free loopback ports; a context manager.

    `jars_dir` holds the broker's jars (jars/kafka-broker); `work_dir` is created if missing. A
    fresh one gets a new cluster; a broker started again in the same one keeps its topics and
    records (on new ports: read `bootstrap` again). JAVA_HOME/bin/java runs it when JAVA_HOME is
    set, else `java` on PATH."""

    def __init__(self, jars_dir: Path, work_dir: Path):
        self.jars_dir = Path(jars_dir).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.log_path = self.work_dir / "kafka.log"
        self.port: int | None = None
        self.controller_port: int | None = None
        self.start_seconds: float | None = None  # from launching the JVM to serving
        self._proc: subprocess.Popen | None = None
        home = os.environ.get("JAVA_HOME")
        self._java = str(Path(home) / "bin" / "java") if home else "java"

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers for a client: "127.0.0.1:PORT"."""
        if self.port is None:
            raise RuntimeError("the Kafka broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- the broker ------------------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Writes the configuration, formats the storage, starts the JVM and waits until it serves.
        Raises RuntimeError, with the log's last 40 lines, if it exits or is not up in 90 s."""
        if self._proc is not None:
            raise RuntimeError("the Kafka broker is already started")
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise RuntimeError(
                f"no Kafka broker jars in {self.jars_dir}: run `make jars/kafka-broker/.staged`"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.controller_port = _free_ports(2)
        (self.work_dir / "log4j2.properties").write_text(LOG4J2)
        props = self.work_dir / "server.properties"
        props.write_text(self._server_properties())

        # A static voter set (controller.quorum.voters) is formatted without --standalone, which is
        # for a dynamic quorum (controller.quorum.bootstrap.servers) only. The data/ of an earlier
        # start is kept as it is, with its cluster id.
        if not (self.work_dir / "data" / "meta.properties").exists():
            fmt = self._tool(
                ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)]
            )
            if fmt.returncode != 0:
                raise RuntimeError(
                    f"formatting the Kafka storage failed:\n{fmt.stdout}{fmt.stderr}"
                )

        with open(self.log_path, "ab") as log:
            log_start = log.tell()  # an earlier start's lines are not this one's
            began = time.monotonic()
            self._proc = subprocess.Popen(
                [self._java, *BROKER_JVM, *self._log_props("INFO"), "-cp", self._classpath(),
                 "kafka.Kafka", str(props)],
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        atexit.register(self.stop)  # a test run that dies between start and stop leaves no JVM
        try:
            self._wait_ready(began, log_start)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _server_properties(self) -> str:
        host = "127.0.0.1"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.work_dir / "data"),
            # one node: every internal topic has one replica, and one partition, since a consumer
            # group's first use would otherwise create __consumer_offsets' 50
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "default.replication.factor": "1",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            # a few threads rather than Kafka's server-sized pools
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(4 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def _wait_ready(self, began: float, log_start: int) -> None:
        """Up once its port takes a connection and the log says it serves: the port opens while the
        broker is still catching up with the metadata log, and a client that came then could fail."""
        deadline = began + READY_TIMEOUT
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"the Kafka broker exited with code {code} while starting; {self.log_path}:\n"
                    + _tail(self.log_path)
                )
            if self._port_open() and READY_LINE in self._log_since(log_start):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Kafka broker did not serve within {READY_TIMEOUT:.0f} s; {self.log_path}:\n"
                    + _tail(self.log_path)
                )
            time.sleep(0.2)

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after 20 s. Safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the command-line tools ------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Creates `name` (replication factor 1) and returns once the controller has committed it;
        a topic that exists already is left as it is. Raises RuntimeError if the tool fails."""
        self._run_tool(
            "org.apache.kafka.tools.TopicCommand",
            ["--bootstrap-server", self.bootstrap, "--create", "--if-not-exists", "--topic", name,
             "--partitions", str(partitions), "--replication-factor", "1"],
        )

    def produce(self, topic: str, lines: list[str]) -> None:
        """Sends each line as one record's value (no key), acknowledged by the broker, in order; a
        line must hold no newline. The topic is created with num.partitions=1 if it does not exist."""
        if any("\n" in line for line in lines):
            raise ValueError("a record produced by a line cannot hold a newline")
        self._run_tool(
            "org.apache.kafka.tools.ConsoleProducer",
            ["--bootstrap-server", self.bootstrap, "--topic", topic],  # acks default to all (-1)
            stdin="".join(f"{line}\n" for line in lines),
        )

    def consume(self, topic: str, max_messages: int, timeout_ms: int = 20_000) -> list[str]:
        """The values of the first `max_messages` records of `topic`, from the beginning, one per
        line; fewer if no record comes for `timeout_ms`."""
        out = self._run_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            ["--bootstrap-server", self.bootstrap, "--topic", topic, "--from-beginning",
             "--max-messages", str(max_messages), "--timeout-ms", str(timeout_ms)],
            timeout=TOOL_TIMEOUT + timeout_ms / 1000,
            ok_codes=(0, 1),  # 1: the timeout passed before max_messages came; stdout has the rest
        )
        return out.splitlines()

    def _run_tool(self, main: str, args: list[str], stdin: str | None = None,
                  timeout: float = TOOL_TIMEOUT, ok_codes: tuple[int, ...] = (0,)) -> str:
        if self._proc is None:
            raise RuntimeError("the Kafka broker has not been started")
        res = self._tool([main, *args], stdin=stdin, timeout=timeout)
        if res.returncode not in ok_codes:
            raise RuntimeError(
                f"{main.rsplit('.', 1)[-1]} {' '.join(args)} exited with code {res.returncode}:\n"
                f"{res.stdout}{res.stderr}"
            )
        return res.stdout

    def _tool(self, argv: list[str], stdin: str | None = None,
              timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self._java, *TOOL_JVM, *self._log_props("WARN"), "-cp", self._classpath(), *argv],
            cwd=self.work_dir, input=stdin, capture_output=True, text=True, timeout=timeout,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    def _classpath(self) -> str:
        return str(self.jars_dir / "*")  # the JVM expands the wildcard itself

    def _log_props(self, level: str) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
                f"-Dcdp.kafka.level={level}"]
