"""The product as a user drives it: CLI and spark-submit in new processes over one persistent catalog."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("e2e")
    environment = dict(os.environ)
    environment.update(
        CDP_PROFILE="test",
        CDP_LAKEHOUSE=str(work / "lakehouse"),
        CDP_LANDING=str(work / "data" / "landing"),
        PATH=f"{BIN}{os.pathsep}{environment.get('PATH', '')}",
        E2E_WORK=str(work),
    )
    return environment


def cdp(env, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "cdp"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline(env):
    work = Path(env["E2E_WORK"])
    cdp(env, "generate", "--persons", "80", "--seed", "3", "--out", str(work / "data"))
    return cdp(env, "run", "--stage", "all", "--as-of", "2026-11-01")


def test_run_reports_each_stage(pipeline):
    for stage in ("bronze", "silver", "identity", "gold"):
        assert f"{stage} succeeded" in pipeline.stdout


def test_new_process_reads_gold_with_sql_as_csv(env, pipeline):
    result = cdp(env, "sql", "-e", "SELECT count(*) AS n FROM gold.customer_profile", "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["n"]
    assert len(rows) == 2 and int(rows[1][0]) > 0


def test_sql_json_format_and_errors(env, pipeline):
    result = cdp(env, "sql", "-e", "SELECT tag_code, count(*) AS n FROM gold.customer_tags GROUP BY tag_code ORDER BY tag_code", "--format", "json")
    codes = [row["tag_code"] for row in json.loads(result.stdout)]
    assert codes == sorted(codes) and "buyer" in codes
    bad = subprocess.run([str(BIN / "cdp"), "sql", "-e", "SELECT * FROM gold.no_such_table"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1
    assert "no_such_table" in bad.stderr


def test_spark_submit_stage_reruns_without_duplicating(env, pipeline):
    args = shlex.split(cdp(env, "submit-args").stdout)
    result = subprocess.run(["spark-submit", *args, "jobs/bronze.py"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bronze: succeeded" in result.stdout
    counts = json.loads(cdp(env, "sql", "-e", "SELECT sum(rows) AS rows, count(*) AS files FROM ops.ingest_log",
                            "--format", "json").stdout)[0]
    landed = json.loads(cdp(env, "sql", "-e",
        "SELECT (SELECT count(*) FROM bronze.crm_members) + (SELECT count(*) FROM bronze.pos_orders) + "
        "(SELECT count(*) FROM bronze.ecom_orders) + (SELECT count(*) FROM bronze.wechat_events) + "
        "(SELECT count(*) FROM bronze.app_events) + (SELECT count(*) FROM bronze.consent_events) AS n",
        "--format", "json").stdout)[0]["n"]
    assert counts["files"] == 12  # 6 sources x 2 files, each logged once
    assert counts["rows"] == landed


def test_evaluate_prints_and_writes_json(env, pipeline):
    work = Path(env["E2E_WORK"])
    result = cdp(env, "evaluate", "--truth", str(work / "data" / "truth"), "--format", "json")
    scores = json.loads(result.stdout)
    assert scores["precision"] >= 0.99 and scores["recall"] >= 0.6
    written = json.loads((work / "lakehouse" / "reports" / "evaluation.json").read_text())
    assert written == scores


def test_bad_config_fails_fast_with_exit_2(env, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("pipeline.yaml", "sources.yaml", "gold.yaml", "log4j2.properties"):
        (conf / name).write_text((ROOT / "conf" / name).read_text(encoding="utf-8"), encoding="utf-8")
    (conf / "identity.yaml").write_text("components:\n  engine: quantum\nidentifier_types: [phone]\n", encoding="utf-8")
    result = subprocess.run([str(BIN / "cdp"), "run", "--conf-dir", str(conf)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "identity.yaml" in result.stderr and "components.engine" in result.stderr
