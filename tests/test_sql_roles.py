"""Roles enforced at the SQL endpoint, driven as their users drive them: `cdp sql-user add`, a role's
`cdp sql-server --role` with beeline clients (wrong password, a user of another role, the role's
views, silver, gold, a path), `cdp sql --role` in a process of its own, and the audit rows all of
them leave — over the CLI lakehouse (tests/cli.py)."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from cli import BIN, ROOT, cdp
from cdp.conf import load_settings
from cdp.operations.sql_access import fingerprint, password_line
from cdp.privacy.protect import load_keys
from test_end_to_end import free_port, wait_for_port

PASSWORDS = {"ana": "correct-horse-battery", "mo": "marketer-password-1"}
REFUSED = "role analyst reads only the views of the database analyst: "


def beeline(env, port: int, user: str, password: str, sql: str) -> subprocess.CompletedProcess:
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    return subprocess.run(
        [str(spark_home / "bin" / "beeline"), "-u", f"jdbc:hive2://127.0.0.1:{port}/analyst", "-n", user, "-p", password,
         "--outputformat=csv2", "--silent=true", "-e", sql],
        cwd=ROOT, env={**env, "SPARK_HOME": str(spark_home)}, capture_output=True, text=True, timeout=180)


def lines(result: subprocess.CompletedProcess) -> list[str]:
    """beeline's output lines, without the prompt it prints before the first."""
    return [line.split("> ", 1)[-1] if line.startswith("0: jdbc") else line
            for line in result.stdout.splitlines() if line.strip()]


def test_the_password_line_is_pbkdf2_hmac_sha256():
    # RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1 — the first 32 of its 64 bytes
    derived = bytes.fromhex("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc")
    line = password_line("u", "analyst", "passwd", salt=b"salt", iterations=1)
    assert line == f"u:analyst:pbkdf2-sha256:1:c2FsdA==:{base64.b64encode(derived).decode()}"


def add_user(env, name: str, role: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "cdp"), "sql-user", "add", name, "--role", role, "--password-stdin"],
                          input=PASSWORDS[name] + "\n", cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.long  # make test-long
def test_a_roles_server_signs_in_its_users_only_and_serves_only_the_roles_views(cli_env, cli_pipeline, tmp_path):
    env = cli_env
    users = tmp_path / "sql-users"
    jars = Path(os.environ.get("CDP_TEST_JARS_DIR", ROOT / "jars" / "staged"))
    env = {**env, "CDP_SQL_USERS": str(users), "CDP_JARS_DIR": str(jars)}
    added = [add_user(env, "ana", "analyst"), add_user(env, "mo", "marketer")]
    assert [a.returncode for a in added] == [0, 0], [a.stderr for a in added]
    assert cdp(env, "sql-user", "list").stdout.split() == ["ana", "analyst", "mo", "marketer"]
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert not any(p in users.read_text() for p in PASSWORDS.values())

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "cdp"), "sql-server", "--role", "analyst", "--port", str(port)], cwd=ROOT,
                              env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for_port(port, server)
        wrong = beeline(env, port, "ana", "not-the-password", "SELECT 1")
        other_role = beeline(env, port, "mo", PASSWORDS["mo"], "SELECT 1")
        profiles = beeline(env, port, "ana", PASSWORDS["ana"], "SELECT count(*) AS n FROM customer_profile")
        silver = beeline(env, port, "ana", PASSWORDS["ana"], "SELECT count(*) FROM silver.customers")
        gold = beeline(env, port, "ana", PASSWORDS["ana"], "SELECT * FROM gold.customer_profile")
        by_path = beeline(env, port, "ana", PASSWORDS["ana"],
                          f"SELECT * FROM delta.`{env['CDP_LAKEHOUSE']}/warehouse/silver.db/customers`")
        tables = beeline(env, port, "ana", PASSWORDS["ana"], "SHOW TABLES")
    finally:
        server.send_signal(signal.SIGTERM)  # the server's own process: it stops Spark and writes its last audit rows
        server.wait(timeout=120)
        log.close()
    assert server.returncode == 0, (tmp_path / "server.log").read_text()[-3000:]
    for refused_sign_in in (wrong, other_role):
        assert refused_sign_in.returncode != 0 and "Error validating the login" in refused_sign_in.stderr
    assert profiles.returncode == 0, profiles.stderr[-2000:]
    assert 0 not in (silver.returncode, gold.returncode, by_path.returncode)
    assert REFUSED + "the table spark_catalog.silver.customers is not one of the role's views." in silver.stderr
    assert REFUSED + "the table spark_catalog.gold.customer_profile is not one of the role's views." in gold.stderr
    assert "TABLE_OR_VIEW_NOT_FOUND" in by_path.stderr  # no SQL on files: a path is no table
    assert lines(tables) == ["namespace,tableName,isTemporary"] + [
        f"analyst,{t},false" for t in sorted(["audience_history", "audience_members", "audience_runs", "consent_state",
                                               "customer_profile", "customer_tags", "identity_map", "tag_catalog",
                                               "tag_history"])]

    # the same role boundary in a session of the user's own process
    marketer = cdp(env, "sql", "--role", "marketer", "-e", "SELECT count(*) AS n FROM audience_members", "--format", "csv")
    crossing = subprocess.run([str(BIN / "cdp"), "sql", "--role", "marketer", "-e", "SELECT * FROM analyst.customer_profile"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert crossing.returncode == 1
    assert ("role marketer reads only the views of the database marketer: the view spark_catalog.analyst.customer_profile "
            "is not one of the role's.") in crossing.stderr

    audit = json.loads(cdp(env, "sql", "--local", "--format", "json", "-e", """
        SELECT a.actor, a.status, a.object, a.destination, a.details,
               (SELECT count(*) FROM gold.customer_profile) AS profiles,
               (SELECT count(*) FROM marketer.audience_members) AS consented
        FROM ops.audit_log a WHERE a.action = 'sql' ORDER BY a.at""").stdout)
    assert lines(profiles)[-1] == str(audit[0]["profiles"]) and audit[0]["profiles"] > 0
    key = load_keys(load_settings("test", ROOT / "conf")).hash_key
    server_at = f"sql-server analyst@127.0.0.1:{port}"
    me = audit[-1]["actor"]
    assert [(r["actor"], r["status"], r["object"], r["destination"], json.loads(r["details"])["fingerprint"])
            for r in audit] == [
        ("ana", "ok", "analyst.customer_profile", server_at,
         fingerprint("SELECT count(*) AS n FROM customer_profile", key)),
        ("ana", "refused", None, server_at, fingerprint("SELECT count(*) FROM silver.customers", key)),
        ("ana", "refused", None, server_at, fingerprint("SELECT * FROM gold.customer_profile", key)),
        ("ana", "error", None, server_at,
         fingerprint(f"SELECT * FROM delta.`{env['CDP_LAKEHOUSE']}/warehouse/silver.db/customers`", key)),
        ("ana", "ok", None, server_at, fingerprint("SHOW TABLES", key)),
        (me, "ok", "marketer.audience_members", "cdp sql --role marketer",
         fingerprint("SELECT count(*) AS n FROM audience_members", key)),
        (me, "refused", None, "cdp sql --role marketer", fingerprint("SELECT * FROM analyst.customer_profile", key)),
    ]
    reasons = [json.loads(r["details"])["reason"] for r in audit]
    assert reasons[1] == REFUSED + "the table spark_catalog.silver.customers is not one of the role's views."
    assert reasons[3] == "TABLE_OR_VIEW_NOT_FOUND"
    assert {json.loads(r["details"])["role"] for r in audit} == {"analyst", "marketer"}
    assert marketer.stdout.split() == ["n", str(audit[0]["consented"])]


def test_an_endpoint_that_would_expose_everything_or_admit_nobody_does_not_start(cli_env, tmp_path):
    """Refused before Spark starts, with the fix: the owner's endpoint beyond this machine, a role's
    endpoint without users of the role, an unknown role, a short password."""
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "cdp"), *args], input=stdin, cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**cli_env, "CDP_SQL_USERS": str(tmp_path / "sql-users")})

    exposed = run("sql-server", "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "listens on this machine only. Fix: serve a role" in exposed.stderr
    nobody = run("sql-server", "--role", "steward")
    assert nobody.returncode == 2 and "no user of role 'steward'" in nobody.stderr
    assert "Fix: cdp sql-user add NAME --role steward" in " ".join(nobody.stderr.split())
    unknown = run("sql-user", "add", "eve", "--role", "admin", "--password-stdin", stdin="a-long-enough-password\n")
    assert unknown.returncode == 2 and "has no role 'admin'" in unknown.stderr
    short = run("sql-user", "add", "eve", "--role", "analyst", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "shorter than 12 characters" in short.stderr
    assert not (tmp_path / "sql-users").exists()
