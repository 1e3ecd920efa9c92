"""The daily DAG as real Airflow parses it: each task's spark-submit command for a run date.

Airflow runs in a child process with its home in a temporary folder: importing it configures logging
and settings process-wide, which must not leak into the test suite. No metadata database is used: the
Variable and the connection come from AIRFLOW_VAR_… and AIRFLOW_CONN_… variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Parses the DAG folder, renders every task's templates for RUN_DATE and asks the provider's hook
# for the command line it would start; writes what it found as JSON to argv[3].
PROBE = """
import json, sys
from datetime import date, timedelta
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
        }
        if hasattr(task, "application"):  # a spark-submit
            report["tasks"][task.task_id]["command"] = task._get_hook()._build_spark_submit_command(task.application)
        else:  # a check: its answer for the seven days from the run date, as the rendered callable gives it
            week = [(date.fromisoformat(run_date) + timedelta(days=n)).isoformat() for n in range(7)]
            report["tasks"][task.task_id]["true_on"] = [
                day for day in week if task.python_callable(**{**task.op_kwargs, "ds": day})]
with open(target, "w") as out:
    json.dump(report, out)
"""




def render_dag(home: Path, release: str, connection: dict, run_date: str, variables: dict[str, str] | None = None) -> dict:
    """import_errors, dag_ids, schedule … and per task its upstream, downstream and `command` (a
    spark-submit) or `true_on` (a check: the days of the week from `run_date` it lets pass);
    `variables`: more AIRFLOW_VAR_… settings."""
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_CDP_RELEASE": release,
        "AIRFLOW_CONN_CDP_SPARK": json.dumps(connection),
        **(variables or {}),
    }
    report = home / "dag.json"
    result = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "jobs" / "dags"), run_date, str(report)],
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"{result.stderr[-3000:]}\nIs apache-airflow installed? `make test` installs it from requirements/dev-airflow.txt"
    )
    return json.loads(report.read_text())
