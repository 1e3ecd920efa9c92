"""Real-time audiences and activation on the suite's pipeline lakehouse (tests/conftest.py). The module
runs late (after test_stream.py): a module that builds the session's pipeline lakehouse first would
build it before tests/test_ingestion_defects.py adds its sources to the landing folder, and the
modules that read that lakehouse's accounting expect it built after. It checks that:

- the daily run logs the daily audiences' entries once (a rerun adds none);
- a campaign-page view landed now puts the person in the real-time audience `activity_page_wechat`
  in one stream batch, with the key the test computes itself;
- delivery to a local webhook: 500s are retried until a 200; a rerun sends nothing; a receiver
  that keeps failing stops the run with the cursor in place, and the next run resumes from it;
- a consent withdrawal that arrives in the stream stops the pending entry's delivery (refused,
  audited) while the exit goes;
- a stream that delivers (`cdp stream --deliver-to`) sends a batch's entry from the batch, once;
  a bad destination is refused (exit 2, with its fix) before Spark starts, by the CLI and the job;
- kill -9 of `cdp stream` in the middle of a batch, then a restart: every entry arrives exactly once
  after deduplication by key, the events are kept once, and the realtime tags equal a recomputation.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pyspark.sql import functions as F

from cdp.activation import live_state, split_audiences
from cdp.lakehouse import table_version
from cdp.operations.activate import (
    DeliveryError, Folder, Pusher, Webhook, deliver, follow, logged_after, read_cursor,
)
from cdp.pipeline import run_stages
from cdp.realtime import realtime_tags
from cdp.stages.stream import run_stream
from cdp.tables import ACTIVATION_EVENTS, AUDIENCE_RUNS, AUDIENCES, AUDIT_LOG, REALTIME_EVENTS, REALTIME_TAGS, STREAM_PROGRESS
from cdp_dev.receiver import Receiver

ROOT = Path(__file__).resolve().parents[1]
LANDED: list[Path] = []  # the files this module lands: gone at its end, so later runs see the generated data only
AUDIENCE = "activity_page_wechat"
ACTIVITY = "/pages/activity/detail?aid=1111"


def key(audience: str, one_id: str, event: str, version: int) -> str:
    return hashlib.sha256(f"{audience}|{one_id}|{event}|{version}".encode()).hexdigest()


def reachable_persons(spark, n: int, taken: set[str]) -> list[tuple[str, str, str]]:
    """n persons (one_id, openid, unionid) who granted marketing_wechat, whose openid names them alone,
    who hold one unionid, and who are not in `taken`."""
    granted = (spark.table("gold.consent_state").where((F.col("purpose") == "marketing_wechat")
                                                      & (F.col("status") == "granted")).select("one_id"))
    ids = spark.table("gold.identity_map").where(F.col("id_type").isin("openid", "unionid") & F.col("id_value").isNotNull())
    unique = (ids.groupBy("id_type", "id_hash").agg(F.collect_set("one_id").alias("holders"), F.min("id_value").alias("v"))
              .where(F.size("holders") == 1).select("id_type", F.col("holders")[0].alias("one_id"), "v"))
    per_person = (unique.groupBy("one_id").agg(
        F.min(F.when(F.col("id_type") == "openid", F.col("v"))).alias("openid"),
        F.count_if(F.col("id_type") == "unionid").alias("unionids"),
        F.min(F.when(F.col("id_type") == "unionid", F.col("v"))).alias("unionid"))
        .where(F.col("openid").isNotNull() & (F.col("unionids") == 1)))
    rows = per_person.join(granted, "one_id", "left_semi").orderBy("one_id").collect()
    chosen = [(r["one_id"], r["openid"], r["unionid"]) for r in rows if r["one_id"] not in taken][:n]
    assert len(chosen) == n, f"only {len(chosen)} reachable persons"
    return chosen


def land_views(data_dir, name: str, views: list[tuple[str, str, str, datetime]], first: int) -> None:
    """A mini-program file of page views: (openid, unionid, page, time) each, ids wx_ac… from `first`."""
    folder = Path(data_dir) / "landing" / "wechat_events"
    LANDED.append(folder / name)
    (folder / name).write_text("".join(json.dumps({
        "event_id": f"wx_ac{first + i:07d}", "appid": "wx3c5e7f9a1b2d4c6e", "openid": openid, "unionid": unionid,
        "event_type": "page_view", "page": page, "ts": int(at.timestamp() * 1000)}) + "\n"
        for i, (openid, unionid, page, at) in enumerate(views)), encoding="utf-8")


def land_withdrawal(data_dir, name: str, consent_id: str, openid: str, at: datetime) -> None:
    folder = Path(data_dir) / "landing" / "consent_events"
    LANDED.append(folder / name)
    with (folder / name).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["consent_id", "subject_type", "subject_value", "purpose", "action", "channel", "occurred_at",
                         "source_system"])
        writer.writerow([consent_id, "openid", openid, "marketing_wechat", "withdraw", "wechat",
                         at.strftime("%Y-%m-%d %H:%M:%S"), "cmp"])


def no_wait(_seconds: float) -> None:
    pass


@pytest.fixture(scope="module", autouse=True)
def remove_landed_files():
    """The suite's later stage runs (and tests/test_notebooks.py's accounting) see the generated files only."""
    yield
    for path in LANDED:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_daily_audiences_are_logged_once(spark, settings, pipeline_run):
    daily, _ = split_audiences(settings.audiences.audiences, settings.tags)
    # each person's latest daily event: "entered" for the current members (earlier modules' runs
    # have also made people leave)
    logged = {(r["audience"], r["one_id"]) for r in live_state(spark.table(ACTIVATION_EVENTS).where(
        F.col("origin") == "daily")).where(F.col("last_event") == "entered").collect()}
    members = {(r["audience"], r["one_id"]) for r in spark.table(AUDIENCES).where(
        F.col("audience").isin(*daily)).collect()}
    # not vacuous: members in two daily audiences at least (earlier modules' erasures and
    # withdrawals leave about ten persons in all)
    assert len({audience for audience, _ in members}) >= 2 and logged == members
    rows = spark.table(ACTIVATION_EVENTS).where(F.col("origin") == "daily").count()
    last_run = spark.table(AUDIENCE_RUNS).orderBy(F.col("computed_at").desc()).first()["run_date"]
    run_stages(spark, settings, "gold", last_run)  # the same day again: nobody enters or leaves
    assert spark.table(ACTIVATION_EVENTS).where(F.col("origin") == "daily").count() == rows


def test_realtime_entries_are_delivered_retried_resumed_and_consent_checked(spark, settings, data_dir, pipeline_run,
                                                                           receiver, tmp_path):
    # the stream's first start reads every event file landed so far: the audience's members among
    # them are delivered first, as a baseline
    run_stream(spark, settings, once=True)
    hook = Webhook(receiver.url, max_attempts=5, sleep=no_wait)
    deliver(spark, settings, hook, AUDIENCE)
    baseline = receiver.keys()
    receiver.received.clear(), receiver.statuses.clear()
    taken = {r["one_id"] for r in spark.table(ACTIVATION_EVENTS).where(F.col("audience") == AUDIENCE).collect()}
    now = datetime.now(ZoneInfo(settings.profile.timezone)).replace(microsecond=0)
    (p1, o1, u1), (p2, o2, u2), (p3, o3, u3), (p4, o4, u4) = reachable_persons(spark, 4, taken)
    land_views(data_dir, "wechat_events_part-9201.jsonl",
               [(o1, u1, ACTIVITY, now - timedelta(seconds=20)), (o2, u2, ACTIVITY, now - timedelta(seconds=10))], 0)
    run_stream(spark, settings, once=True)
    entered = {key(AUDIENCE, p, "entered", 1) for p in (p1, p2)}
    assert {r["event_key"] for r in spark.table(ACTIVATION_EVENTS).where(
        (F.col("audience") == AUDIENCE) & ~F.col("event_key").isin(*baseline)).collect()} == entered

    # three 500s, then 200: everything arrives, once
    receiver.fail_next = 3
    first = deliver(spark, settings, hook, AUDIENCE)
    assert (first.delivered, first.refused, first.attempts) == (2, 0, 4)
    assert receiver.statuses == [500, 500, 500, 200] and receiver.keys() == entered and receiver.duplicates() == 0
    assert deliver(spark, settings, hook, AUDIENCE).delivered == 0  # the cursor: nothing new

    # p1 leaves the campaign page (an exit); the receiver keeps failing: the run stops, the cursor stays
    land_views(data_dir, "wechat_events_part-9202.jsonl", [(o1, u1, "/pages/index/index", now)], 2)
    run_stream(spark, settings, once=True)
    cursor = read_cursor(spark, hook.name, AUDIENCE)
    receiver.fail_always = True
    with pytest.raises(DeliveryError, match="did not acknowledge after 2 attempts"):
        deliver(spark, settings, Webhook(receiver.url, max_attempts=2, sleep=no_wait), AUDIENCE)
    assert read_cursor(spark, hook.name, AUDIENCE) == cursor
    receiver.fail_always = False
    resumed = deliver(spark, settings, hook, AUDIENCE)
    assert resumed.delivered == 1
    delivered_to = read_cursor(spark, hook.name, AUDIENCE)[0]
    assert receiver.keys() == entered | {key(AUDIENCE, p1, "exited", 2)} and receiver.duplicates() == 0

    # p3 enters; before delivery, p3's withdrawal arrives in the stream: the entry is refused, the exit goes
    land_views(data_dir, "wechat_events_part-9203.jsonl", [(o3, u3, ACTIVITY, now)], 3)
    run_stream(spark, settings, once=True)
    land_withdrawal(data_dir, "consent_events_part-9204.csv", "cs_ac0000001", o3, now + timedelta(seconds=1))
    run_stream(spark, settings, once=True)
    withdrawn = deliver(spark, settings, hook, AUDIENCE)
    assert (withdrawn.delivered, withdrawn.refused, withdrawn.refusals) == (1, 1, {"consent withdrawn": 1})
    assert receiver.keys() == entered | {key(AUDIENCE, p1, "exited", 2), key(AUDIENCE, p3, "exited", 2)}
    refusals = spark.table(AUDIT_LOG).where((F.col("action") == "activation_refused")
                                            & (F.col("destination") == hook.name)).collect()
    assert [(r["object"], r["audience"], r["purpose"], json.loads(r["details"])["reason"]) for r in refusals] == [
        (key(AUDIENCE, p3, "entered", 1), AUDIENCE, "marketing_wechat", "consent withdrawn")]
    deliveries = spark.table(AUDIT_LOG).where((F.col("action") == "activation") & (F.col("destination") == hook.name))
    assert deliveries.agg(F.sum("rows")).first()[0] == len(baseline) + 4

    # a VACUUM removes the change feed's files (as maintenance after an erasure does): a cursor whose
    # versions are gone gets the rows logged since its version from the table itself, and a new
    # destination starts from the table's rows
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        spark.sql(f"VACUUM {ACTIVATION_EVENTS} RETAIN 0 HOURS")
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    since = logged_after(spark, delivered_to, table_version(spark, ACTIVATION_EVENTS), AUDIENCE)
    assert {r["event_key"] for r in since.collect()} == {key(AUDIENCE, p3, "entered", 1), key(AUDIENCE, p3, "exited", 2)}

    # a folder destination: its own cursor, every event of the audience so far, one file per chunk
    folder = deliver(spark, settings, Folder(tmp_path / "out"), AUDIENCE, chunk=2)
    assert (folder.delivered, folder.refused) == (len(baseline) + 4, 1)
    written = [json.loads(line) for f in sorted((tmp_path / "out").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert {e["event_key"] for e in written} == receiver.keys() | baseline and len(written) == len(baseline) + 4

    # --follow: a thread looking every 0.2 s delivers p2's exit once the stream logs it, then stops
    stop, rounds = threading.Event(), []
    worker = threading.Thread(target=lambda: rounds.append(
        follow(spark, settings, hook, AUDIENCE, interval=0.2, stop=stop)))
    worker.start()
    land_views(data_dir, "wechat_events_part-9205.jsonl", [(o2, u2, "/pages/index/index", now)], 4)
    run_stream(spark, settings, once=True)
    deadline = time.time() + 120
    while key(AUDIENCE, p2, "exited", 2) not in receiver.keys() and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    worker.join(60)
    assert rounds == [1] and receiver.duplicates() == 0
    assert receiver.keys() == entered | {key(AUDIENCE, p, "exited", 2) for p in (p1, p2, p3)}

    # `cdp stream --deliver-to`: the batch that logs p4's entry delivers it itself; the cursor is
    # written when the stream stops
    land_views(data_dir, "wechat_events_part-9206.jsonl", [(o4, u4, ACTIVITY, now)], 5)
    pusher = Pusher(spark, settings, hook, AUDIENCE)
    run_stream(spark, settings, once=True, pusher=pusher)
    assert (pusher.delivered, pusher.failures, receiver.duplicates()) == (1, 0, 0)
    assert receiver.keys() == entered | {key(AUDIENCE, p, "exited", 2) for p in (p1, p2, p3)} | {
        key(AUDIENCE, p4, "entered", 1)}
    assert read_cursor(spark, hook.name, AUDIENCE)[0] == table_version(spark, ACTIVATION_EVENTS)
    assert deliver(spark, settings, hook, AUDIENCE).delivered == 0


def test_kill_9_mid_batch_loses_and_duplicates_nothing(spark, settings, data_dir, pipeline_run, receiver):
    taken = {r["one_id"] for r in spark.table(ACTIVATION_EVENTS).where(F.col("audience") == AUDIENCE).collect()}
    persons = reachable_persons(spark, 6, taken)
    now = datetime.now(ZoneInfo(settings.profile.timezone)).replace(microsecond=0)
    land_views(data_dir, "wechat_events_part-9301.jsonl",
               [(o, u, ACTIVITY, now - timedelta(seconds=i)) for i, (_, o, u) in enumerate(persons)], 100)
    environment = dict(os.environ, CDP_PROFILE="test", CDP_LAKEHOUSE=str(settings.lakehouse),
                       CDP_LANDING=str(settings.landing))
    stream = subprocess.Popen([str(Path(sys.executable).parent / "cdp"), "stream"], cwd=ROOT, env=environment,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = threading.Event()

    def watch():
        for line in stream.stderr:
            if "stream: batch" in line and "started" in line:
                started.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert started.wait(300), "the stream never started a batch"
        time.sleep(1.0)
    finally:
        os.killpg(stream.pid, signal.SIGKILL)  # the driver and its JVM, as kill -9 of the job would
        stream.wait(30)
    assert spark.table(ACTIVATION_EVENTS).where((F.col("audience") == AUDIENCE)
                                                & F.col("one_id").isin(*[p for p, _, _ in persons])).count() == 0, \
        "the batch finished before the kill: the test killed nothing mid-batch"

    run_stream(spark, settings, once=True)  # the restart replays the batch the kill interrupted
    deliver(spark, settings, Webhook(receiver.url, max_attempts=5, sleep=no_wait), AUDIENCE)
    expected = {key(AUDIENCE, p, "entered", 1) for p, _, _ in persons}
    mine = [r for r in receiver.received if r.event["one_id"] in {p for p, _, _ in persons}]
    assert {r.key for r in mine} == expected and len(mine) == len(expected)
    kept = spark.table(REALTIME_EVENTS).where(F.col("record_key").startswith("wx_ac00001"))
    assert kept.count() == len(persons) == kept.select("record_key").distinct().count()
    ids = [p for p, _, _ in persons]
    stored = {(r["one_id"], r["tag_code"], r["value"]) for r in spark.table(REALTIME_TAGS).where(
        F.col("one_id").isin(*ids)).collect()}
    today = datetime.now(ZoneInfo(settings.profile.timezone)).date()
    recomputed = {(r["one_id"], r["tag_code"], r["value"]) for r in realtime_tags(
        settings.tags, spark.table(REALTIME_EVENTS).where(F.col("one_id").isin(*ids)), today, datetime.now()).collect()}
    assert {(p, "last_viewed_page", ACTIVITY) for p in ids} <= stored and stored == recomputed
    assert spark.table(STREAM_PROGRESS).where(F.col("activations") > 0).count() >= 1


def test_activate_refuses_a_bad_destination_or_audience_before_spark_starts(cli_env):
    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run([str(Path(sys.executable).parent / "cdp"), "activate", *args], cwd=ROOT, env=cli_env,
                              capture_output=True, text=True, timeout=120)
        return done.returncode, " ".join(done.stderr.split())

    assert run("--to", "ftp", "ftp://x") == (2, "--to takes 'webhook URL' or 'dir DIR', not 'ftp'. Fix: --to webhook "
                                                 "https://host/path, or --to dir /path/to/folder.")
    code, message = run("--to", "webhook", "crm.example.com/hook")
    assert code == 2 and message.startswith("--to webhook takes an http(s) URL, not 'crm.example.com/hook'. Fix:")
    code, message = run("--to", "dir", "/tmp/outbox", "--audience", "nobody")
    assert code == 2 and message.startswith("no audience 'nobody' in audiences.yaml; defined: activity_page_wechat,")


@pytest.mark.parametrize("command", ["cdp stream", "jobs/stream.py"])
@pytest.mark.parametrize("deliver_to, refusal", [
    (["pigeon", "loft-7"], "--deliver-to takes 'webhook URL' or 'dir DIR', not 'pigeon'"),
    (["webhook", "receiver.example.com/hook"], "--deliver-to webhook takes an http(s) URL, not 'receiver.example.com/hook'"),
])
def test_a_bad_delivery_destination_is_refused_before_spark_starts(command, deliver_to, refusal, tmp_path):
    """`--deliver-to` is checked before the session: with no Java to start Spark on, the refusal (exit
    2, with its fix) is all that happens, never a failed JVM launch."""
    program = [str(Path(sys.executable).parent / "cdp"), "stream"] if command == "cdp stream" else [
        sys.executable, str(ROOT / "jobs" / "stream.py")]
    environment = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "CDP_PROFILE": "test",
                   "CDP_LAKEHOUSE": str(tmp_path / "lakehouse"), "CDP_LANDING": str(tmp_path / "landing")}
    result = subprocess.run([*program, "--deliver-to", *deliver_to], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    said = " ".join(result.stderr.split())
    assert f"{refusal}. Fix: --deliver-to webhook https://host/path, or --deliver-to dir /path/to/folder." in said, said
    assert "JAVA_HOME" not in said and not (tmp_path / "lakehouse").exists()
