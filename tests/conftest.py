"""One SparkSession for the whole suite, on a throw-away lakehouse, with the project's own conf."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def stop_catalog_servers(tmp_path_factory):
    """Every lakehouse of the run shares its catalog through a Derby network server that outlives the
    command which started it (cdp.metastore): stop those of this run's lakehouses at the end."""
    yield
    from cdp.metastore import terminate_servers_under

    terminate_servers_under(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def lakehouse(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lakehouse")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Where generated exports go: <data_dir>/landing is the suite's landing folder."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(lakehouse, data_dir):
    from cdp.conf import load_settings

    os.environ["CDP_LAKEHOUSE"] = str(lakehouse)
    os.environ["CDP_LANDING"] = str(data_dir / "landing")
    loaded = load_settings("test", ROOT / "conf")
    loaded.validate_all()
    return loaded


@pytest.fixture(scope="session")
def spark(settings):
    from cdp.spark import build_session, jar_packages

    # the suite's one session also reads Kafka (tests/test_stream_kafka.py): Spark's Kafka source too
    packages = ",".join([*jar_packages(settings), settings.pipeline.jars.kafka_package])
    session = build_session(settings, app_name="cdp-tests", extra_conf={"spark.jars.packages": packages})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """The environment of `cdp` processes over the CLI lakehouse (tests/cli.py)."""
    from cli import cli_environment

    return cli_environment(tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="session")
def cli_pipeline(cli_env):
    """80 generated persons, every stage run once by `cdp run` in a process of its own."""
    from cli import generate_and_run

    return generate_and_run(cli_env)


@pytest.fixture(scope="session")
def pipeline_run(spark, settings, data_dir):
    """Every stage on 400 generated persons (200+: every identity trap is planted), in the suite's
    session: (generation summary, trap manifest, outcome per stage). tests/test_pipeline.py reads
    it; tests/test_privacy.py then exports from it, withdraws consent in it and erases from it."""
    import json
    from datetime import date

    from cdp_dev.datagen import generate
    from cdp.pipeline import run_stages

    as_of = date(2026, 11, 1)
    summary = generate(400, 7, data_dir, as_of=as_of)
    manifest = json.loads((data_dir / "truth" / "manifest.json").read_text(encoding="utf-8"))
    outcomes = {o.stage: o for o in run_stages(spark, settings, "all", as_of)}
    return summary, manifest, outcomes
