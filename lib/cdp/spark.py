"""The one SparkSession factory: Delta Lake, optional GraphFrames, a persistent catalog, per-profile conf."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pyspark.sql import SparkSession

from cdp.conf import ConfigError, Settings
from cdp.lakehouse import sql_string
from cdp.metastore import CLIENT_DRIVER, client_jar, ensure_server
from cdp.tables import DATABASES

log = logging.getLogger(__name__)

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # No per-file min/max statistics on new tables: they would copy personal values (a phone as
    # a file's max) into the Delta log, which VACUUM does not clean (docs/privacy.md).
    "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols": "0",
}


def redaction_conf(settings: Settings) -> dict[str, str]:
    """Spark's redaction of conf values and plan text: the keys' variables besides Spark's defaults
    (a site that sets them as spark.executorEnv.* sees them redacted in the UI and the event log),
    and any binary literal of 16 bytes or more in a plan (the keys are never literals: defence in depth)."""
    names = settings.privacy.secrets
    variables = "|".join(sorted({names.hash_key_env, names.encryption_key_env, names.previous_encryption_key_env}))
    return {"spark.redaction.regex": f"(?i)secret|password|token|access[.]?key|{variables}",
            "spark.sql.redaction.string.regex": "(?i)X'[0-9a-f]{32,}'"}


def jar_packages(settings: Settings) -> list[str]:
    """The Maven coordinates the jobs need: jars.packages, GraphFrames for the identity stage, and
    Spark's Kafka source when the stream follows Kafka (stream.kafka)."""
    jars = settings.pipeline.jars
    kafka = [jars.kafka_package] if settings.pipeline.stream.kafka.enabled else []
    return [*jars.packages, jars.graphframes_package, *kafka]


def staged_jars(folder: Path, packages: list[str]) -> list[Path]:
    """The jars of a staged folder, refused when a coordinate has none there (a staging older than the conf)."""
    staged = sorted(folder.glob("*.jar")) if folder.is_dir() else []
    missing = [p for p in packages if not any(j.name.startswith(_jar_prefix(p)) for j in staged)]
    if missing:
        raise ConfigError(
            f"{folder}: staged jars lack {missing}. Fix: run `make jars` again after changing jars.packages."
        )
    return staged


def jar_settings(settings: Settings) -> dict[str, str]:
    """spark.jars from a staged folder when one is configured, else spark.jars.packages."""
    jars = settings.pipeline.jars
    packages = jar_packages(settings)
    if jars.staged_dir:
        folder = Path(settings.resolve(jars.staged_dir))
        if not any(folder.glob("*.jar")):
            raise ConfigError(
                f"{settings.conf_dir / 'pipeline.yaml'}: key 'jars.staged_dir' (or CDP_JARS_DIR) points at "
                f"{folder}, which holds no jars. Fix: run `make jars`, or unset it to resolve from Maven Central."
            )
        return {"spark.jars": ",".join(str(j) for j in staged_jars(folder, packages))}
    conf = {"spark.jars.packages": ",".join(packages)}
    if jars.repositories:
        conf["spark.jars.repositories"] = ",".join(jars.repositories)
    if os.environ.get("CDP_IVY_DIR"):
        conf["spark.jars.ivy"] = os.environ["CDP_IVY_DIR"]
    return conf


def _jar_prefix(coordinate: str) -> str:
    _, artifact, version = coordinate.split(":")
    return f"{artifact}-{version}"


def catalog_settings(settings: Settings) -> dict[str, str]:
    """Hive catalog conf: the lakehouse's own metastore (shared through a Derby network server, or
    embedded in this one process) under the lakehouse, or the cluster's own (`external`)."""
    conf = {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": settings.warehouse,
    }
    if settings.profile.metastore == "external":
        return conf
    lakehouse = settings.lakehouse
    log4j = settings.conf_dir / "log4j2.properties"
    java_options = f" -Dlog4j.configurationFile=file:{log4j}" if log4j.is_file() else ""
    if settings.profile.metastore == "shared":
        endpoint = ensure_server(settings)
        conf.update({
            "spark.hadoop.javax.jdo.option.ConnectionURL": endpoint.url(),
            "spark.hadoop.javax.jdo.option.ConnectionDriverName": CLIENT_DRIVER,
            # on the driver's own class path: the metastore client loads the driver there
            "spark.driver.extraClassPath": str(client_jar(settings)),
        })
    else:
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = f"jdbc:derby:;databaseName={lakehouse}/metastore_db;create=true"
        java_options = f"-Dderby.system.home={lakehouse} -Dderby.stream.error.file={lakehouse}/derby.log" + java_options
    conf.update({
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
    })
    if java_options.strip():
        conf["spark.driver.extraJavaOptions"] = java_options.strip()
    return conf


@contextmanager
def runtime_conf(spark: SparkSession, confs: dict[str, str]) -> Iterator[None]:
    """Set session confs for the block; each is as it was afterwards (unset again when it was unset)."""
    before = {key: spark.conf.get(key, None) for key in confs}
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def session_conf(settings: Settings) -> dict[str, str]:
    """Every Spark conf this project sets, in one dict (also what `cdp submit-args` prints)."""
    conf: dict[str, str] = {}
    conf.update(DELTA_CONF)
    conf.update(redaction_conf(settings))
    conf.update(jar_settings(settings))
    conf.update(catalog_settings(settings))
    conf["spark.sql.session.timeZone"] = settings.profile.timezone
    conf.update(settings.profile.spark_conf)
    return conf


def release_conf(settings: Settings) -> dict[str, str]:
    """The part of session_conf that is the same on every deployment of a profile (a release's properties file).

    Left out because each site or run sets them: the master, the warehouse and metastore locations
    (the session factory derives them from CDP_LAKEHOUSE at run time), staged jar paths, the Ivy cache,
    the Maven repositories besides Central (a site's mirror: --repositories when submitting).
    """
    conf = {**DELTA_CONF, **redaction_conf(settings)}
    conf["spark.jars.packages"] = ",".join(jar_packages(settings))
    conf["spark.sql.catalogImplementation"] = "hive"
    conf["spark.sql.session.timeZone"] = settings.profile.timezone
    conf.update(settings.profile.spark_conf)
    return conf


def submit_arguments(settings: Settings) -> list[str]:
    """The same configuration as spark-submit options (--master, --packages/--jars, --conf …)."""
    flags = {
        "spark.jars.packages": "--packages",
        "spark.jars.repositories": "--repositories",
        "spark.jars": "--jars",
        "spark.driver.memory": "--driver-memory",
        "spark.driver.extraJavaOptions": "--driver-java-options",
        "spark.driver.extraClassPath": "--driver-class-path",
    }
    arguments = ["--master", settings.profile.master] if settings.profile.master else []
    for key, value in session_conf(settings).items():
        arguments += [flags[key], value] if key in flags else ["--conf", f"{key}={value}"]
    return arguments


def build_session(settings: Settings, app_name: str = "cdp", extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Start (or join) the SparkSession for this profile and make sure the databases exist. `extra_conf`
    overrides session_conf (a role endpoint's guard)."""
    settings.validate_all()
    if settings.profile.metastore != "external":
        Path(settings.lakehouse).mkdir(parents=True, exist_ok=True)
    if (settings.profile.master or "").startswith("local"):
        # Local Python workers must be this interpreter, so they import the same cdp package.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if settings.profile.master:
        builder = builder.master(settings.profile.master)
    for key, value in {**session_conf(settings), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CDP_SPARK_LOG_LEVEL", "WARN"))
    spark.sparkContext.setCheckpointDir(settings.checkpoint_dir)
    ensure_databases(spark, settings)
    return spark


def ensure_databases(spark: SparkSession, settings: Settings) -> None:
    for name, comment in DATABASES.items():
        spark.sql(
            f"CREATE DATABASE IF NOT EXISTS {name} COMMENT {sql_string(comment)} "
            f"LOCATION {sql_string(settings.warehouse + '/' + name + '.db')}"
        )


@contextmanager
def spark_session(settings: Settings, app_name: str = "cdp",
                  extra_conf: dict[str, str] | None = None) -> Iterator[SparkSession]:
    """A session for one command or job, stopped at the end (its JVM and its catalog connection with it)."""
    spark = build_session(settings, app_name, extra_conf)
    try:
        yield spark
    finally:
        spark.stop()
