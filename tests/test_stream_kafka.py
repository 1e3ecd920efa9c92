"""`cdp stream` over Kafka (stream.kafka) on the suite's pipeline lakehouse, against a real broker: a
single-node Apache Kafka (KRaft) started from its Maven jars (tests/kafka/pom.xml, `make test` stages
them). Messages on a source's topic become kept events and realtime tags as landed files do; a
message that is not a JSON record is counted as refused, not kept; a second run takes only what came
since (offsets live in the query's checkpoint, beside the file stream's own); a run with nothing new
makes no batch. A topic map naming a source the stream does not follow is refused before Spark works."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pyspark.sql import functions as F
from test_stream import quiet_person, records, tags_of

from cdp.conf import ConfigError
from cdp.conf.pipeline import Kafka
from cdp.stages.bronze import list_landed_files
from cdp.stages.stream import kafka_topics, run_stream, stream_dir
from cdp.tables import REALTIME_EVENTS, REALTIME_TAGS, STREAM_PROGRESS
from cdp_dev.kafka import KafkaBroker

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["cdp.wechat_events", "cdp.app_events"]
ARCHIVED: list[Path] = []  # the archives this module's stream writes: gone at its end, as other tests' landings


@pytest.fixture(scope="module", autouse=True)
def remove_archives():
    yield
    for path in ARCHIVED:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    jars = Path(os.environ.get("CDP_TEST_KAFKA_JARS") or ROOT / "jars" / "kafka-broker")
    assert any(jars.glob("*.jar")), f"{jars} holds no Kafka jars: run `make test` (it stages them) or `make {jars}/.staged`"
    with KafkaBroker(jars, tmp_path_factory.mktemp("kafka")) as running:
        for topic in TOPICS:
            running.create_topic(topic)
        yield running


def over_kafka(settings, **kafka):
    stream = settings.pipeline.stream.model_copy(update={"kafka": Kafka(**kafka)})
    return dataclasses.replace(settings, pipeline=settings.pipeline.model_copy(update={"stream": stream}))


def produce(spark, bootstrap: str, topic: str, values: list[str]) -> None:
    (spark.createDataFrame([(v,) for v in values], "value string").coalesce(1).write.format("kafka")
     .option("kafka.bootstrap.servers", bootstrap).option("topic", topic).save())


def test_a_bad_topic_map_is_refused_naming_the_key_and_the_fix(settings):
    def refusal(topics: dict[str, str]) -> str:
        with pytest.raises(ConfigError) as caught:
            kafka_topics(over_kafka(settings, bootstrap_servers="127.0.0.1:9", topics=topics))
        return str(caught.value)

    assert "key 'stream.kafka.topics' is empty" in refusal({})
    assert "names ['crm_members'], which the stream does not follow" in refusal({"crm_members": "crm"})
    assert "gives two sources one topic" in refusal({"app_events": "t", "wechat_events": "t"})
    assert "names no source of the events entity" in refusal({"consent_events": "consent"})
    assert "'consent_events', whose format is csv" in refusal({"wechat_events": "w", "consent_events": "consent"})
    assert all("Fix:" in refusal(t) for t in ({}, {"consent_events": "consent"}, {"wechat_events": "w", "consent_events": "c"}))
    assert kafka_topics(over_kafka(settings, bootstrap_servers="127.0.0.1:9", topics={"app_events": "app"})) == {
        "app": "app_events"}


def test_kafka_messages_become_realtime_tags_once(spark, settings, pipeline_run, broker):
    kafka_settings = over_kafka(settings, bootstrap_servers=broker.bootstrap, topics={"wechat_events": TOPICS[0]})
    assert stream_dir(kafka_settings) != stream_dir(settings)  # a query (checkpoint, id) of its own
    zone = ZoneInfo(settings.profile.timezone)
    now = datetime.now(zone).replace(microsecond=0)
    person, openid, unionid = quiet_person(spark, now - timedelta(days=settings.pipeline.stream.keep_days))
    times = [now - timedelta(seconds=s) for s in (30, 20, 10)]
    events = [("page_view", "/pages/index/index", openid, times[0]),
              ("product_view", "/pages/goods/detail?id=7", openid, times[1]),
              ("add_to_cart", "/pages/goods/detail?id=7", openid, times[2])]
    delivered = [*records(events, {openid: unionid}, prefix="wx_kf"), '{"event_id": "wx_kf_broken", "openid": ']
    produce(spark, broker.bootstrap, TOPICS[0], delivered)

    first = run_stream(spark, kafka_settings, once=True)
    assert (first.batches, first.rows) == (1, 4)
    kept = spark.table(REALTIME_EVENTS).where(F.col("record_key").startswith("wx_kf")).orderBy("record_key").collect()
    assert [(r["record_key"], r["one_id"], r["provisional"], r["source"]) for r in kept] == [
        (f"wx_kf{i:07d}", person, False, "wechat_events") for i in range(3)]
    assert all(r["landed_at"] is not None and r["landed_at"] <= r["processed_at"] for r in kept)
    views_today = sum(1 for kind, _, _, at in events if kind.endswith("view") and at.date() == now.date())
    assert tags_of(spark, REALTIME_TAGS, person) == {
        "last_event_at": times[2].strftime("%Y-%m-%d %H:%M:%S"), "last_channel": "wechat",
        "last_viewed_page": "/pages/goods/detail?id=7", "views_today": str(views_today), "cart_adds_7d": "1"}
    query_id = (stream_dir(kafka_settings) / "query-id").read_text(encoding="utf-8").strip()
    progress = spark.table(STREAM_PROGRESS).where(F.col("query_id") == query_id).collect()
    assert [(r["batch_id"], r["rows"], r["refused"], r["persons"]) for r in progress] == [(0, 4, 1, 1)]
    # the messages as delivered, refused one included, in a file the daily run's glob takes
    landing = Path(settings.landing) / "wechat_events"
    archived = sorted(landing.glob(f"kafka-{query_id}-*.jsonl"))
    ARCHIVED.extend(archived)
    assert [p.name for p in archived] == [f"kafka-{query_id}-000000000.jsonl"]
    assert archived[0].read_text(encoding="utf-8") == "".join(f"{v}\n" for v in delivered)
    assert archived[0] in {Path(f.path.removeprefix("file:")) for f in list_landed_files(
        spark, str(Path(settings.landing) / settings.sources.sources["wechat_events"].path))}

    # what came since, and only that
    later = [("add_to_cart", "/pages/goods/detail?id=8", openid, now)]
    produce(spark, broker.bootstrap, "cdp.wechat_events", records(later, {openid: unionid}, first=3, prefix="wx_kf"))
    second = run_stream(spark, kafka_settings, once=True)
    assert (second.batches, second.rows) == (1, 1)
    assert spark.table(REALTIME_EVENTS).where(F.col("record_key").startswith("wx_kf")).count() == 4
    assert len(sorted(landing.glob(f"kafka-{query_id}-*.jsonl"))) == 2
    ARCHIVED.extend(landing.glob(f"kafka-{query_id}-*.jsonl"))
    assert tags_of(spark, REALTIME_TAGS, person)["cart_adds_7d"] == "2"

    # nothing new: no batch
    assert run_stream(spark, kafka_settings, once=True).batches == 0
    assert spark.table(STREAM_PROGRESS).where(F.col("query_id") == query_id).count() == 2


@pytest.mark.parametrize("command", ["cdp stream", "jobs/stream.py"])
def test_kafka_without_topics_is_refused_before_spark_starts(command, tmp_path):
    """Brokers named (CDP_KAFKA_BOOTSTRAP_SERVERS) but no topic: a configuration error naming the key
    and the fix (exit 2), with no Java to start Spark on and no lakehouse made."""
    program = [str(Path(sys.executable).parent / "cdp"), "stream"] if command == "cdp stream" else [
        sys.executable, str(ROOT / "jobs" / "stream.py")]
    environment = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java"), "CDP_PROFILE": "test",
                   "CDP_LAKEHOUSE": str(tmp_path / "lakehouse"), "CDP_LANDING": str(tmp_path / "landing"),
                   "CDP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    result = subprocess.run([*program, "--once"], cwd=ROOT, env=environment, capture_output=True, text=True,
                            timeout=120)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, said[-2000:]
    assert "pipeline.yaml: key 'stream.kafka.topics' is empty, but stream.kafka.bootstrap_servers names brokers. " \
           "Fix: name the topic of each source to follow (source: topic), of ['app_events', 'consent_events', " \
           "'wechat_events']." in said, said
    assert "JAVA_HOME" not in said and not (tmp_path / "lakehouse").exists()


def test_a_release_includes_spark_s_kafka_source_only_when_built_for_kafka(monkeypatch):
    """`make package` keeps the conf unexpanded: CDP_KAFKA_BOOTSTRAP_SERVERS, where it is built,
    decides whether Spark's Kafka source is among the release's packages."""
    from cdp.conf import load_settings
    from cdp.spark import jar_packages

    monkeypatch.delenv("CDP_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    release = load_settings("cluster", ROOT / "conf", expand=False)
    assert release.pipeline.stream.kafka.bootstrap_servers == "${CDP_KAFKA_BOOTSTRAP_SERVERS:-}"
    assert jar_packages(release) == ["io.delta:delta-spark_4.1_2.13:4.4.0", "io.graphframes:graphframes-spark4_2.13:0.11.0"]
    monkeypatch.setenv("CDP_KAFKA_BOOTSTRAP_SERVERS", "kafka-1.example.com:9092")
    assert jar_packages(release)[-1] == "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.1"
