"""Daily CDP run for Airflow: bronze → silver → identity → gold, each a spark-submit of the packaged
job reading only what changed since the day before; once a week, after gold, maintain (OPTIMIZE every
table, Z-order the per-person ones by one_id, VACUUM). The week's housekeeping day is the Variable
`cdp_housekeeping_weekday` (ISO: 1 Monday … 7 Sunday; default 7); on the other days the
`housekeeping_day` check skips it.

Needs on the Airflow side (docs/operations.md, "Scheduling with Airflow"):

- the Airflow Variable `cdp_release` (or the environment variable AIRFLOW_VAR_CDP_RELEASE): the folder
  `make package` built, copied onto the workers;
- the Spark connection `cdp_spark`: the cluster's master (yarn, k8s://…, spark://…);
- in the workers' environment: CDP_LAKEHOUSE, CDP_LANDING, CDP_CHECKPOINT_DIR, CDP_HASH_KEY,
  CDP_ENCRYPTION_KEY and CDP_ACTOR. The driver runs on the worker (client deploy mode), so the keys
  stay in its environment: the provider logs the spark-submit command line, which must not hold them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG

STAGES = ("bronze", "silver", "identity", "gold")  # dependency order: each reads what the previous wrote
TASKS = (*STAGES, "maintain")  # housekeeping last, once the day's writes are in
HOUSEKEEPING_WEEKDAY = "{{ var.value.get('cdp_housekeeping_weekday', '7') }}"
RELEASE = "{{ var.value.cdp_release }}"
CONN_ID = "cdp_spark"


def is_housekeeping_day(ds: str, weekday: str) -> bool:
    """Whether the run date `ds` (YYYY-MM-DD) falls on the ISO `weekday` (1 Monday … 7 Sunday)."""
    return date.fromisoformat(ds).isoweekday() == int(weekday)


DEFAULT_ARGS = {
    # A stage reruns safely: bronze adds each landed file once; silver, identity and gold read the
    # changes since their last successful run (a failed run leaves its cursor, so the rerun reads the
    # same changes; one that failed while publishing makes the rerun recompute everything).
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
    # The slowest stage measured, identity at 1M persons on one 2-core machine, took 890 s.
    "execution_timeout": timedelta(hours=2),
}

with DAG(
    dag_id="cdp_daily",
    description="CDP lakehouse: bronze → silver → identity → gold for the run date; weekly housekeeping",
    schedule="@daily",
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,  # a paused or new DAG runs today only, not one run per missed day
    max_active_runs=1,  # two days' stages must never write one lakehouse at once
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["cdp"],
) as dag:
    previous = None
    for stage in TASKS:
        task = SparkSubmitOperator(
            task_id=stage,
            conn_id=CONN_ID,
            deploy_mode="client",
            name=f"cdp-{stage}-{{{{ ds }}}}",
            application=f"{RELEASE}/jobs/{stage}.py",
            py_files=f"{RELEASE}/cdp.zip,{RELEASE}/jobs/_common.py",
            properties_file=f"{RELEASE}/spark.properties",
            application_args=["--profile", "cluster", "--conf-dir", f"{RELEASE}/conf", "--as-of", "{{ ds }}"],
        )
        if stage == "maintain":  # weekly: skipped (with nothing after it) on the other days
            previous = previous >> ShortCircuitOperator(
                task_id="housekeeping_day", python_callable=is_housekeeping_day,
                op_kwargs={"ds": "{{ ds }}", "weekday": HOUSEKEEPING_WEEKDAY},
            )
        if previous is not None:
            previous >> task
        previous = task
