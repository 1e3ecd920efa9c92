"""The product as a user drives it: CLI and spark-submit in new processes over one persistent catalog."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli import BIN, ROOT, cdp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(cli_env) -> dict[str, str]:
    return cli_env


@pytest.fixture(scope="module")
def pipeline(cli_pipeline):
    return cli_pipeline


def test_run_reports_each_stage(pipeline):
    for stage in ("bronze", "silver", "identity", "gold"):
        assert f"{stage} succeeded" in pipeline.stdout
    # the closing summary: rows in, rows out and tables written per stage, as in ops.job_runs
    summary = {m["stage"]: (int(m["rows_in"].replace(",", "")), int(m["rows_out"].replace(",", "")), int(m["tables"]))
               for m in re.finditer(r"│ (?P<stage>\w+)\s+│ succeeded\s+│\s+[\d.]+ │\s+(?P<rows_in>[\d,]+) │"
                                    r"\s+(?P<rows_out>[\d,]+) │\s+(?P<tables>\d+) │", pipeline.stdout)}
    assert list(summary) == ["bronze", "silver", "identity", "gold"]
    landed = summary["bronze"][0]
    assert summary["bronze"][1:] == (landed + 12, 7)  # 6 bronze tables + ops.ingest_log, one row per file
    assert summary["silver"][0] == landed
    assert summary["gold"][2] == 12  # 9 gold tables, the daily summaries of orders and events, its cursors


def test_sql_json_format_and_errors(env, pipeline):
    counts = json.loads(cdp(env, "sql", "-e",
        "SELECT (SELECT sum(rows) FROM ops.ingest_log) AS rows, (SELECT count(*) FROM ops.ingest_log) AS files, "
        "(SELECT count(*) FROM bronze.crm_members) + (SELECT count(*) FROM bronze.pos_orders) + "
        "(SELECT count(*) FROM bronze.ecom_orders) + (SELECT count(*) FROM bronze.wechat_events) + "
        "(SELECT count(*) FROM bronze.app_events) + (SELECT count(*) FROM bronze.consent_events) AS landed",
        "--format", "json").stdout)
    assert len(counts) == 1
    assert counts[0]["files"] == 12  # 6 sources x 2 files, each logged once
    assert counts[0]["rows"] == counts[0]["landed"]
    bad = subprocess.run([str(BIN / "cdp"), "sql", "-e", "SELECT * FROM gold.no_such_table"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1
    assert "no_such_table" in bad.stderr


def test_audience_preview_matches_what_the_run_materialised(env, pipeline):
    gold_output = pipeline.stdout.split("gold succeeded in", 1)[1]
    gold_metrics, _ = json.JSONDecoder().raw_decode(gold_output[gold_output.index("{"):])
    preview = json.loads(cdp(env, "audience", "preview", "winback_sms", "--by", "rfm_segment", "--format", "json").stdout)
    assert {"matched": preview["matched"], "members": preview["members"]} == gold_metrics["audiences"]["winback_sms"]
    assert preview["matched"] > 0
    assert preview["run_date"] == "2026-11-01" and preview["purpose"] == "marketing_sms"
    assert sum(row["matched"] for row in preview["breakdown"]["rfm_segment"]) == preview["matched"]
    assert sum(row["members"] for row in preview["breakdown"]["rfm_segment"]) == preview["members"]
    unknown = subprocess.run([str(BIN / "cdp"), "audience", "preview", "nobody"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert unknown.returncode == 2
    assert ("no audience 'nobody' in audiences.yaml; defined: activity_page_wechat, cart_coupon_wechat, high_value_sms, "
            "holiday_push_wechat, new_customer_email, winback_sms") in " ".join(unknown.stderr.split())


def test_sql_shell_reads_statements_from_standard_input(env, pipeline):
    """A new process sees the gold tables (persistent catalog); csv prints a header line, then rows."""
    script = (
        "SELECT count(*) AS profiles\n  FROM gold.customer_profile;\n"
        "SELECT * FROM gold.nowhere;\n"            # an error does not end the session
        "SELECT 'after the error' AS still;\n\\q\n"
    )
    result = subprocess.run([str(BIN / "cdp"), "sql", "--format", "csv"], input=script, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "profiles" and int(lines[1]) > 0
    assert lines[2:] == ["still", "after the error"]
    assert "nowhere" in result.stderr


def local_settings(env, properties: Path) -> list[str]:
    """The test profile's spark-submit options less those the release's properties file holds (the Delta
    package and confs): the job can then only find Delta if spark-submit read that file."""
    held = {line.split("=", 1)[0] for line in properties.read_text().splitlines() if not line.startswith("#")}
    arguments = shlex.split(cdp(env, "submit-args").stdout)
    kept = []
    for flag, value in zip(arguments[::2], arguments[1::2]):
        key = "spark.jars.packages" if flag == "--packages" else value.split("=", 1)[0] if flag == "--conf" else None
        if key not in held:
            kept += [flag, value]
    return kept


def test_spark_submit_stage_reruns_without_duplicating(env, pipeline):
    """As on a cluster: from the `cdp package` release, cdp imported from its zip (not the editable install)."""
    release = Path(env["E2E_WORK"]) / "release"
    cdp(env, "package", "--out", str(release))
    properties = release / "spark.properties"
    result = subprocess.run(
        ["spark-submit", *local_settings(env, properties), "--properties-file", str(properties),
         "--py-files", f"{release / 'cdp.zip'},{release / 'jobs' / '_common.py'}",
         "jobs/bronze.py", "--conf-dir", str(release / "conf")],
        cwd=release, env=env, capture_output=True, text=True, timeout=600,
    )
    # spark-submit passes on the Python driver's stderr (its log, a traceback) merged into its own stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert f"msg=job bronze: cdp 0.1.0 from {release / 'cdp.zip'}\n" in result.stdout
    # the rerun found every file already ingested: it committed nothing (rows_out from the Delta log)
    assert "bronze: succeeded in " in result.stdout and " rows_out={} " in result.stdout


def test_evaluate_prints_and_writes_json(env, pipeline):
    work = Path(env["E2E_WORK"])
    result = cdp(env, "evaluate", "--truth", str(work / "data" / "truth"), "--format", "json")
    scores = json.loads(result.stdout)
    assert scores["precision"] >= 0.99 and scores["recall"] >= 0.6
    written = json.loads((work / "lakehouse" / "reports" / "evaluation.json").read_text())
    assert written == scores


def test_steward_merge_from_the_command_line_is_written_and_audited(env, pipeline):
    """Two records of one person (so nothing changes for the cluster test, which compares this
    lakehouse's map with its own run): the rule and its audit row are written; one --record exits 2."""
    pair = json.loads(cdp(env, "sql", "-e", "SELECT min(source || ':' || record_key) AS a, max(source || ':' || record_key) "
                          "AS b FROM identity.oneid_map GROUP BY one_id HAVING count(*) > 1 ORDER BY a LIMIT 1",
                          "--format", "json").stdout)[0]
    said = cdp(env, "identity", "merge", "--record", pair["a"], "--record", pair["b"], "--reason", "ticket 12",
               "--actor", "steward-1").stdout
    rule_id = re.search(r"(sr_[0-9a-f]{16}) \(must_link\) written", said).group(1)
    rows = json.loads(cdp(env, "sql", "-e", "SELECT r.kind, r.reason, r.actor, a.status FROM identity.steward_rules r "
                          "JOIN ops.audit_log a ON a.action = 'steward_rule' AND a.details LIKE concat('%', r.rule_id, '%') "
                          f"WHERE r.rule_id = '{rule_id}'", "--format", "json").stdout)
    assert rows == [{"kind": "must_link", "reason": "ticket 12", "actor": "steward-1", "status": "ok"}]
    one = subprocess.run([str(BIN / "cdp"), "identity", "split", "--record", pair["a"]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 2 and "give two records" in one.stderr


def test_evaluate_febrl_prints_the_scores_as_json(env):
    result = cdp(env, "evaluate", "--febrl", "3", "--format", "json")
    report = json.loads(result.stdout)
    assert (report["dataset"], report["records"], report["true_pairs"]) == ("FEBRL3", 5000, 6538)
    assert report["f1"] >= 0.996 and report["precision"] >= 0.999
    assert report["model"]["comparisons"]["soc_sec_id"][-1]["level"] == "exact"
    assert sum(report["pairs_per_rule"].values()) == report["candidate_pairs"] == 7150
    # u from random pairs, m from EM per training rule: every comparison was trained, and converged
    assert [t["rule"] for t in report["model"]["training"]] == [
        "l.given_name = r.given_name AND l.surname = r.surname",
        "l.date_of_birth = r.date_of_birth",
        "l.soc_sec_id = r.soc_sec_id",
    ]
    assert all(t["converged"] for t in report["model"]["training"])


def test_bad_config_fails_fast_with_exit_2(env, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "identity.yaml").write_text("components:\n  algorithm: quantum\nidentifiers:\n  phone: {priority: 1, max_per_person: 2}\n", encoding="utf-8")
    narrow = {**env, "COLUMNS": "40"}  # a narrow terminal must not break the file name or key across lines
    result = subprocess.run([str(BIN / "cdp"), "run", "--conf-dir", str(conf)], cwd=ROOT, env=narrow,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert str(conf / "identity.yaml") in result.stderr and "components.algorithm" in result.stderr


def test_a_spark_failure_is_one_line_with_its_fix_never_a_trace(env, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    for source in (ROOT / "conf").iterdir():
        (conf / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    pipeline_yaml = conf / "pipeline.yaml"
    text, replaced = re.subn(r"spark\.driver\.memory: \S+", "spark.driver.memory: two-gigabytes",
                             pipeline_yaml.read_text(encoding="utf-8"))
    assert replaced >= 1
    pipeline_yaml.write_text(text, encoding="utf-8")  # the JVM cannot start
    result = subprocess.run([str(BIN / "cdp"), "sql", "--local", "--conf-dir", str(conf), "-e", "SELECT 1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "py4j" not in result.stderr.lower()
    lines = [line for line in result.stderr.splitlines() if line.startswith("Spark error: ")]
    assert len(lines) == 1 and "JAVA_GATEWAY_EXITED" in lines[0] and " Fix: " in lines[0], result.stderr[-2000:]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, seconds: int = 240) -> None:
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "the SQL server exited during start-up"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(2)
    raise AssertionError(f"the SQL server did not listen on {port} within {seconds}s")


def jdbc_query(env, port: int, sql: str) -> str:
    """The last line beeline prints for a one-value query (csv2: header, then the value)."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    result = subprocess.run(
        [str(spark_home / "bin" / "beeline"), "-u", f"jdbc:hive2://localhost:{port}/default",
         "--outputformat=csv2", "--silent=true", "-e", sql],
        cwd=ROOT, env={**env, "SPARK_HOME": str(spark_home)}, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    return [line for line in result.stdout.splitlines() if line.strip()][-1]


@pytest.mark.long  # make test-long
def test_a_run_two_sql_shells_a_notebook_and_the_sql_server_share_the_catalog(env, pipeline, tmp_path):
    """Last in this module. At the same time: the SQL server with a beeline client and `cdp sql -e`
    through it, a rerun of the gold stage (it replaces the tables the others read), two `cdp sql`
    shells with Spark sessions of their own, and a notebook — one catalog, shared through the
    lakehouse's Derby network server; every one succeeds."""
    import signal
    from datetime import datetime, timezone

    jars = Path(os.environ.get("CDP_TEST_JARS_DIR", ROOT / "jars" / "staged"))
    assert any(jars.glob("delta-spark_*.jar")), f"no staged Delta jar in {jars}: run `make jars` (make test does)"
    started = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"  # run ids begin with their UTC start
    port = free_port()
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("server", "run", "shell1", "shell2", "notebook")}
    server = subprocess.Popen([str(BIN / "cdp"), "sql-server", "--port", str(port)], cwd=ROOT,
                              env={**env, "CDP_JARS_DIR": str(jars)}, stdout=logs["server"], stderr=logs["server"],
                              start_new_session=True)
    statements = "SELECT count(*) AS profiles FROM gold.customer_profile;\nSELECT count(DISTINCT one_id) AS ids FROM identity.oneid_map;\n"
    others = {
        "run": subprocess.Popen([str(BIN / "cdp"), "run", "--stage", "gold", "--as-of", "2026-11-01"], cwd=ROOT, env=env,
                                stdout=logs["run"], stderr=subprocess.STDOUT),
        **{shell: subprocess.Popen([str(BIN / "cdp"), "sql", "--local", "--format", "csv"], cwd=ROOT, env=env,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[shell], text=True)
           for shell in ("shell1", "shell2")},
        "notebook": subprocess.Popen([sys.executable, str(ROOT / "notebooks" / "customer_insight.py")], cwd=ROOT,
                                     env={**env, "CDP_NOTEBOOK_OUT": str(tmp_path / "figures")},
                                     stdout=logs["notebook"], stderr=subprocess.STDOUT),
    }
    try:
        shell_output = {shell: others[shell].communicate(statements, timeout=900)[0] for shell in ("shell1", "shell2")}
        wait_for_port(port, server)
        profiles = int(jdbc_query(env, port, "SELECT count(*) AS n FROM gold.customer_profile"))
        through_server = cdp(env, "sql", "-e", "SELECT count(DISTINCT one_id) AS n FROM identity.oneid_map", "--format", "csv")
        outcomes = {name: others[name].wait(timeout=1200) for name in ("run", "notebook")}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        for process in others.values():
            if process.poll() is None:
                process.kill()
        for log in logs.values():
            log.close()
    assert outcomes == {"run": 0, "notebook": 0}, {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in outcomes}
    assert [others[shell].returncode for shell in ("shell1", "shell2")] == [0, 0]
    # each shell read the committed tables: the same persons the first run published (the rerun changes none)
    expected = f"profiles\n{profiles}\nids\n{profiles}\n"
    assert shell_output == {"shell1": expected, "shell2": expected}
    assert through_server.stdout == f"n\n{profiles}\n" and profiles > 0
    assert "succeeded" in (tmp_path / "run.log").read_text() and "gold succeeded" in (tmp_path / "run.log").read_text()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "channel_overlap.png", "lifecycle_funnel.png", "rfm_heatmap.png"]
    runs = json.loads(cdp(env, "sql", "--local", "-e", f"SELECT stage, status FROM ops.job_runs WHERE run_id >= "
                          f"'{started}' ORDER BY run_id", "--format", "json").stdout)
    assert runs == [{"stage": "gold", "status": "succeeded"}]
