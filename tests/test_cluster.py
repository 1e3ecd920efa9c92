"""The release on a real Spark cluster: a standalone master and worker on 127.0.0.1, started from the
venv's pyspark, and the daily DAG's own spark-submit commands, run in order with the `cluster` profile.

What a site provides around the DAG is provided here the way a site would: the lakehouse locations and
the keys in the driver's environment, the keys in the worker's too (executors hash and encrypt), the metastore in a hive-site.xml on Spark's conf path (here a
Derby network server, cdp.metastore) with its JDBC driver on the class path, Python on the worker.
The result must equal a local run of `cdp run` on the same landing files.

It runs with `make test-long`, not with `make test`: its four spark-submit runs on a 2-core machine
take 12 minutes (docs/operations.md, "What is tested").
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli import BIN, RUN_DATE, cdp
from dagprobe import render_dag
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parents[1]
ENCRYPTED = ("phone_enc", "email_enc")  # AES-GCM with a random IV: equal clear text, different bytes

pytestmark = [pytest.mark.slow, pytest.mark.long]  # make test-long


def free_port(preferred: int | None = None) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred or 0))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def wait_for(what: str, check, seconds: int = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what} within {seconds}s")


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    """The site's secrets: in the drivers' environment and in the worker's (its executors read them there)."""
    return {"CDP_HASH_KEY": base64.b64encode(os.urandom(32)).decode(),
            "CDP_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, keys):
    """A standalone master and one worker (2 cores) on 127.0.0.1; both stopped at the end, even on failure.
    The worker's environment holds the keys, as a site's spark-env.sh would: executors inherit it."""
    work = tmp_path_factory.mktemp("cluster")
    port, master_ui, worker_ui = free_port(7077), free_port(), free_port()
    environment = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_WORKER_DIR": str(work / "worker"),
                   "SPARK_LOG_DIR": str(work / "logs"), "PYSPARK_PYTHON": sys.executable, **keys}
    spark_class = str(spark_home() / "bin" / "spark-class")
    daemons = []
    try:
        with open(work / "master.log", "w") as log:
            daemons.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                 "--webui-port", str(master_ui)], env=environment, stdout=log, stderr=log, start_new_session=True))
        wait_for(f"the master listening on {port}", lambda: _answers(port) and _answers(master_ui))
        with open(work / "worker.log", "w") as log:
            daemons.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                 "--memory", "3g", "--webui-port", str(worker_ui), f"spark://127.0.0.1:{port}"],
                env=environment, stdout=log, stderr=log, start_new_session=True))
        wait_for("one worker registered with the master", lambda: alive_workers(master_ui) == 1)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for daemon in reversed(daemons):
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def site_metastore(conf_dir: Path, lakehouse: Path) -> dict[str, str]:
    """What a site's Spark installation holds: hive-site.xml pointing at its metastore (a Derby network
    server over the lakehouse, started as cdp.metastore starts one) and the JDBC driver's jar."""
    from cdp.conf import load_settings
    from cdp.metastore import CLIENT_DRIVER, client_jar, ensure_server

    previous = os.environ.get("CDP_LAKEHOUSE")
    os.environ["CDP_LAKEHOUSE"] = str(lakehouse)
    try:
        settings = load_settings("test", ROOT / "conf")
        endpoint = ensure_server(settings)
        driver = client_jar(settings)
    finally:
        if previous is None:
            os.environ.pop("CDP_LAKEHOUSE")
        else:
            os.environ["CDP_LAKEHOUSE"] = previous
    properties = {
        "javax.jdo.option.ConnectionURL": endpoint.url(),
        "javax.jdo.option.ConnectionDriverName": CLIENT_DRIVER,
        "datanucleus.schema.autoCreateAll": "true",
        "hive.metastore.schema.verification": "false",
    }
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "hive-site.xml").write_text(
        "<configuration>\n" + "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n"
                                      for k, v in properties.items()) + "</configuration>\n", encoding="utf-8")
    return {"SPARK_CONF_DIR": str(conf_dir), "SPARK_DIST_CLASSPATH": str(driver)}


def test_the_dags_commands_run_the_release_on_a_standalone_cluster_as_a_local_run_does(
        cluster, keys, spark, cli_env, cli_pipeline, tmp_path_factory):
    """On the landing files of the CLI lakehouse (tests/cli.py), which `cdp run` processed locally."""
    work = tmp_path_factory.mktemp("cluster-run")
    base = {**os.environ, **keys, "CDP_LANDING": cli_env["CDP_LANDING"], "CDP_ACTOR": "cdp-batch",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    release = work / "release"
    cdp(base, "package", "--out", str(release))
    # the site's settings appended to its deployed copy (docs/operations.md, Airflow step 5): a 2-core cluster
    with open(release / "spark.properties", "a", encoding="utf-8") as properties:
        properties.write("spark.sql.shuffle.partitions=4\nspark.default.parallelism=4\n"
                         "spark.databricks.delta.snapshotPartitions=2\n")
    lakehouse = work / "on-cluster"
    environment = {**base, "CDP_LAKEHOUSE": str(lakehouse), "CDP_CHECKPOINT_DIR": str(lakehouse / "_checkpoints"),
                   "PYSPARK_PYTHON": sys.executable, "SPARK_HOME": str(spark_home()),
                   **site_metastore(work / "spark-conf", lakehouse)}
    dag = render_dag(work / "airflow", str(release), {"conn_type": "spark", "host": cluster}, RUN_DATE)
    for stage in ("bronze", "silver", "identity", "gold"):
        command = dag["tasks"][stage]["command"]
        assert command[:3] == ["spark-submit", "--master", cluster]
        started = time.monotonic()
        result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=1200)
        print(f"{stage} on the cluster: {time.monotonic() - started:.0f}s")
        assert result.returncode == 0, f"{stage}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert f"job {stage}: cdp 0.1.0 from {release / 'cdp.zip'}" in result.stdout + result.stderr
        assert f"{stage}: succeeded in " in result.stdout

    local = Path(cli_env["CDP_LAKEHOUSE"])  # the local run of the same files (keys differ: profiles hold no hash)

    def table(where: Path, name: str):
        database, table_name = name.split(".")
        return spark.read.format("delta").load(str(where / "warehouse" / f"{database}.db" / table_name))

    cluster_map, local_map = table(lakehouse, "identity.oneid_map"), table(local, "identity.oneid_map")
    assert cluster_map.select("one_id").distinct().count() == local_map.select("one_id").distinct().count() > 70
    assert sorted(map(tuple, cluster_map.collect())) == sorted(map(tuple, local_map.collect()))
    cluster_profiles, local_profiles = table(lakehouse, "gold.customer_profile"), table(local, "gold.customer_profile")
    assert cluster_profiles.count() == local_profiles.count()
    richest = local_profiles.orderBy(F.col("record_count").desc(), "one_id").first()["one_id"]
    on_cluster = cluster_profiles.where(F.col("one_id") == richest).drop(*ENCRYPTED).first()
    assert on_cluster == local_profiles.where(F.col("one_id") == richest).drop(*ENCRYPTED).first()
    assert on_cluster["record_count"] >= 3 and on_cluster["name"] is not None
