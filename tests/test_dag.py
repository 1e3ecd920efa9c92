"""jobs/dags/cdp_daily.py as real Airflow parses it, and the spark-submit commands its tasks would run
(tests/test_cluster.py runs them against a standalone Spark cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagprobe import render_dag

from cdp.package import PROPERTIES_NAME, ZIP_NAME
from cdp.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "/opt/cdp/releases/0.1.0"
RUN_DATE = "2026-11-02"


@pytest.fixture(scope="module")
def dag(tmp_path_factory) -> dict:
    return render_dag(tmp_path_factory.mktemp("airflow"), RELEASE, {"conn_type": "spark", "host": "yarn",
                                                                     "extra": {"queue": "cdp"}}, RUN_DATE)


def test_dag_file_imports_without_errors(dag):
    assert dag["import_errors"] == {}
    assert dag["dag_ids"] == ["cdp_daily"]


def test_runs_daily_one_run_at_a_time_without_catching_up(dag):
    assert (dag["schedule"], dag["cron"]) == ("@daily", "0 0 * * *")
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1


def test_stages_run_in_the_pipelines_order(dag):
    assert STAGES == ("bronze", "silver", "identity", "gold")
    assert {task_id: (task["upstream"], task["downstream"]) for task_id, task in dag["tasks"].items()} == {
        "bronze": ([], ["silver"]),
        "silver": (["bronze"], ["identity"]),
        "identity": (["silver"], ["gold"]),
        "gold": (["identity"], ["housekeeping_day"]),
        "housekeeping_day": (["gold"], ["maintain"]),
        "maintain": (["housekeeping_day"], []),
    }


def test_housekeeping_runs_once_a_week_on_sunday_unless_the_site_chooses_another_day(dag, tmp_path):
    assert dag["tasks"]["housekeeping_day"]["operator"] == "airflow.providers.standard.operators.python.ShortCircuitOperator"
    # the week from Monday 2026-11-02: maintain runs on Sunday the 8th only; skipped (not failed) on the others
    assert dag["tasks"]["housekeeping_day"]["true_on"] == ["2026-11-08"]
    wednesdays = render_dag(tmp_path, RELEASE, {"conn_type": "spark", "host": "yarn"}, RUN_DATE,
                            {"AIRFLOW_VAR_CDP_HOUSEKEEPING_WEEKDAY": "3"})
    assert wednesdays["tasks"]["housekeeping_day"]["true_on"] == ["2026-11-04"]


def test_each_stage_is_a_retried_spark_submit_with_a_timeout(dag):
    for task_id, task in dag["tasks"].items():
        if task_id == "housekeeping_day":
            continue
        assert task["operator"] == "airflow.providers.apache.spark.operators.spark_submit.SparkSubmitOperator", task_id
        assert task["retries"] >= 2 and task["retry_delay_s"] >= 60, task_id
        assert task["timeout_s"] == 2 * 3600, task_id


def test_each_task_submits_its_packaged_job_for_the_run_date(dag):
    for stage in (*STAGES, "maintain"):
        job = f"{RELEASE}/jobs/{stage}.py"
        assert dag["tasks"][stage]["command"] == [
            "spark-submit",
            "--master", "yarn",
            "--properties-file", f"{RELEASE}/{PROPERTIES_NAME}",
            "--py-files", f"{RELEASE}/{ZIP_NAME},{RELEASE}/jobs/_common.py",
            "--name", f"cdp-{stage}-{RUN_DATE}",
            "--queue", "cdp",
            "--deploy-mode", "client",
            job, "--profile", "cluster", "--conf-dir", f"{RELEASE}/conf", "--as-of", RUN_DATE,
        ]
        assert (ROOT / "jobs" / f"{stage}.py").is_file()  # what `make package` copies to <release>/jobs/
