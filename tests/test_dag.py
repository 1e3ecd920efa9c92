"""jobs/dags/cdp_daily.py as real Airflow parses it, and the spark-submit commands its tasks would run.

Airflow runs in a child process with its home in a temporary folder: importing it configures logging
and settings process-wide, which must not leak into the rest of the suite. No metadata database is
used: the Variable and the connection come from AIRFLOW_VAR_… and AIRFLOW_CONN_… variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdp.package import PROPERTIES_NAME, ZIP_NAME
from cdp.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "/opt/cdp/releases/0.1.0"
RUN_DATE = "2026-11-02"

# Parses the DAG folder, renders every task's templates for RUN_DATE and asks the provider's hook
# for the command line it would start; writes what it found as JSON to argv[3].
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.execution_time.context import VariableAccessor

folder, run_date, target = sys.argv[1:]
bag = DagBag(dag_folder=folder)
report = {"import_errors": bag.import_errors, "dag_ids": sorted(bag.dags), "tasks": {}}
dag = bag.dags.get("cdp_daily")
if dag is not None:
    report.update(schedule=dag.schedule, cron=dag.timetable.expression, catchup=dag.catchup,
                  max_active_runs=dag.max_active_runs)
    for task in dag.tasks:
        task.render_template_fields({"ds": run_date, "var": {"value": VariableAccessor(deserialize_json=False)}})
        report["tasks"][task.task_id] = {
            "operator": f"{type(task).__module__}.{type(task).__name__}",
            "retries": task.retries,
            "retry_delay_s": task.retry_delay.total_seconds(),
            "timeout_s": task.execution_timeout.total_seconds() if task.execution_timeout else None,
            "upstream": sorted(task.upstream_task_ids),
            "downstream": sorted(task.downstream_task_ids),
            "command": task._get_hook()._build_spark_submit_command(task.application),
        }
with open(target, "w") as out:
    json.dump(report, out)
"""


@pytest.fixture(scope="module")
def dag(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow")
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_CDP_RELEASE": RELEASE,
        "AIRFLOW_CONN_CDP_SPARK": json.dumps({"conn_type": "spark", "host": "yarn", "extra": {"queue": "cdp"}}),
    }
    report = home / "dag.json"
    result = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "jobs" / "dags"), RUN_DATE, str(report)],
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"{result.stderr[-3000:]}\nIs apache-airflow installed? `make test` installs it: pip install -e '.[dev,airflow]'"
    )
    return json.loads(report.read_text())


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
        "gold": (["identity"], []),
    }


def test_each_stage_is_a_retried_spark_submit_with_a_timeout(dag):
    for task_id, task in dag["tasks"].items():
        assert task["operator"] == "airflow.providers.apache.spark.operators.spark_submit.SparkSubmitOperator", task_id
        assert task["retries"] >= 2 and task["retry_delay_s"] >= 60, task_id
        assert task["timeout_s"] == 2 * 3600, task_id


def test_each_task_submits_its_packaged_job_for_the_run_date(dag):
    for stage in STAGES:
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
