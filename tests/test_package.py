"""`cdp package`: the release folder holds exactly what spark-submit needs, and nothing of this machine.

That a job runs from such a folder (cdp imported from its zip, Delta from its properties file) is
shown by tests/test_end_to_end.py::test_spark_submit_stage_reruns_without_duplicating.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cdp.conf import ConfigError
from cdp.package import build_release

ROOT = Path(__file__).resolve().parents[1]
DELTA = "io.delta:delta-spark_4.1_2.13:4.4.0"
GRAPHFRAMES = "io.graphframes:graphframes-spark4_2.13:0.11.0"
STAGED_DELTA = "delta-spark_4.1_2.13-4.4.0.jar"
STAGED_GRAPHFRAMES = "graphframes-spark4_2.13-0.11.0.jar"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """A staged-jars folder as `make jars` leaves it, with the jars the coordinates need."""
    folder = tmp_path_factory.mktemp("staged")
    (folder / STAGED_DELTA).write_bytes(b"the staged Delta jar's bytes")
    (folder / STAGED_GRAPHFRAMES).write_bytes(b"the staged GraphFrames jar's bytes")
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory, staged):
    return build_release(tmp_path_factory.mktemp("release") / "dist", conf_dir=ROOT / "conf", jars_dir=staged)


def test_release_holds_exactly_the_files_spark_submit_needs(release):
    assert release.files == [
        "cdp.zip",
        "cdp_lakehouse-0.1.0-py3-none-any.whl",
        "conf/audiences.yaml", "conf/gold.yaml", "conf/identity.yaml", "conf/log4j2.properties", "conf/model.yaml",
        "conf/pipeline.yaml", "conf/privacy.yaml", "conf/quality.yaml", "conf/sources.yaml", "conf/tags.yaml",
        f"jars/{STAGED_DELTA}", f"jars/{STAGED_GRAPHFRAMES}",
        "jars/packages.txt",
        "jobs/_common.py", "jobs/all.py", "jobs/bronze.py", "jobs/gold.py", "jobs/identity.py", "jobs/maintain.py", "jobs/silver.py",
        "jobs/stream.py",
        "requirements.txt",
        "spark.properties",
    ]
    # the executors' Python: the runtime lock, every version pinned with its hashes
    assert (release.folder / "requirements.txt").read_bytes() == (ROOT / "requirements" / "runtime.txt").read_bytes()
    for folder in ("conf", "jobs"):
        for copied in (release.folder / folder).iterdir():
            assert copied.read_bytes() == (ROOT / folder / copied.name).read_bytes(), copied
    assert (release.folder / "jars" / STAGED_DELTA).read_bytes() == b"the staged Delta jar's bytes"
    assert (release.folder / "jars" / "packages.txt").read_text() == f"{DELTA}\n{GRAPHFRAMES}\n"


def test_zip_holds_the_cdp_package_as_the_wheel_installs_it(release):
    source = ROOT / "lib" / "cdp"
    expected = {f"cdp/{p.relative_to(source).as_posix()}" for p in source.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(release.folder / "cdp.zip") as zipped:
        names = set(zipped.namelist())
        assert zipped.read("cdp/__init__.py") == (source / "__init__.py").read_bytes()
    with zipfile.ZipFile(release.folder / "cdp_lakehouse-0.1.0-py3-none-any.whl") as wheel:
        packages = {name.split("/")[0] for name in wheel.namelist() if "/" in name and ".dist-info/" not in name}
        in_wheel = {name for name in wheel.namelist() if name.startswith("cdp/")}
    assert names == expected == in_wheel
    assert "cdp/py.typed" in names and "cdp/package.py" in names and "cdp/stages/bronze.py" in names
    # What the jobs run, and nothing else: the generator, benchmarks and demo stay in the checkout.
    assert packages == {"cdp"}
    assert [n for n in names if re.search(r"datagen|bench|demo|febrl|cdp_dev", n)] == []
    assert (ROOT / "lib" / "cdp_dev" / "datagen" / "generator.py").is_file()  # …where they still are


def test_properties_hold_the_cluster_confs_and_nothing_per_deployment(release):
    lines = (release.folder / "spark.properties").read_text().splitlines()
    properties = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert properties == {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols": "0",
        # the keys' variables redacted from the UI and the event log, and long binary literals from plans
        "spark.redaction.regex": "(?i)secret|password|token|access[.]?key|CDP_ENCRYPTION_KEY|CDP_ENCRYPTION_KEY_PREVIOUS|CDP_HASH_KEY",
        "spark.sql.redaction.string.regex": "(?i)X'[0-9a-f]{32,}'",
        "spark.jars.packages": f"{DELTA},{GRAPHFRAMES}",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.session.timeZone": "Asia/Shanghai",
        "spark.sql.shuffle.partitions": "200",
        "spark.sql.adaptive.enabled": "true",
    }
    assert release.variables == ["CDP_LAKEHOUSE", "CDP_LANDING", "CDP_CHECKPOINT_DIR", "CDP_HASH_KEY",
                                 "CDP_ENCRYPTION_KEY"]
    header = "\n".join(line for line in lines if line.startswith("#"))
    assert "CDP_PROFILE=cluster" in header and ", ".join(release.variables) in header


def test_a_staging_without_a_configured_jar_is_refused(tmp_path):
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "delta-spark_4.1_2.13-4.3.0.jar").write_bytes(b"an older staging")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(stale))}: staged jars lack \['{DELTA}', '{GRAPHFRAMES}'\]\. Fix: run `make jars`"):
        build_release(tmp_path / "dist", conf_dir=ROOT / "conf", jars_dir=stale)
    assert not (tmp_path / "dist").exists()  # refused before anything was written


def test_a_jars_dir_that_does_not_exist_is_refused(tmp_path):
    missing = tmp_path / "no-such-staging"
    with pytest.raises(ConfigError, match=rf"--jars-dir {re.escape(str(missing))} is not a folder\. Fix: run `make jars`"):
        build_release(tmp_path / "dist", conf_dir=ROOT / "conf", jars_dir=missing)


def test_a_profile_value_from_the_environment_is_refused(tmp_path, staged):
    conf = shutil.copytree(ROOT / "conf", tmp_path / "conf")
    pipeline = conf / "pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace('spark.sql.shuffle.partitions: "200"',
                                                     "spark.sql.shuffle.partitions: ${CDP_PARTITIONS:-200}"))
    with pytest.raises(ConfigError, match=rf"{re.escape(str(pipeline))}: profile 'cluster' sets \['spark.sql.shuffle.partitions'\] "
                                          "from environment variables.*Fix: give them literal values"):
        build_release(tmp_path / "dist", conf_dir=conf, jars_dir=staged)


def test_a_conf_folder_outside_a_source_checkout_is_refused(tmp_path, staged):
    conf = shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(tmp_path))}: no pyproject.toml.*Fix: run `cdp package` in the source"):
        build_release(tmp_path / "dist", conf_dir=conf, jars_dir=staged)


def test_cli_refuses_a_folder_holding_an_earlier_build(release):
    result = subprocess.run([str(Path(sys.executable).parent / "cdp"), "package", "--out", str(release.folder)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"--out {release.folder} is not empty" in result.stderr and "`make package` does" in result.stderr
