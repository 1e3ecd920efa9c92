"""The real-time benchmark: from an event file landing to the audience entry it causes arriving at a
webhook.

    python -m cdp_dev.bench.stream --rates 200 2000 --seconds 180 --out build/bench-stream   (make bench-stream)

1. Generates `--persons` persons (the demo generator, seed fixed) and runs the daily pipeline on them,
   in a lakehouse of its own (`local` profile).
2. Starts a webhook receiver on 127.0.0.1 (cdp_dev.receiver) and `cdp stream` (run_stream, its
   configured trigger) delivering the audience `activity_page_wechat` from each batch (a Pusher: what
   `cdp stream --deliver-to webhook URL` runs), in one driver; the stream first takes the files
   already landed, and their entries are delivered before anything is timed.
3. For each rate, a feeder lands one file a second of `rate` mini-program page views (written whole,
   then renamed into the landing folder) for `--seconds`: persons drawn at random among all the
   generated ones, each view a campaign page (activity) or another page at even odds, so persons
   reachable on WeChat keep entering and leaving the audience.
4. Each event the receiver acknowledges carries `landed_at` (the earliest landing of the files that
   moved the person in that batch); its latency is its arrival minus that. Reports p50/p95/max per
   rate, beside the stream's own landing→commit latency per batch (ops.stream_progress) and the batch
   durations: the part of the total that is Spark's, and the part that is delivery.

Writes <out>/bench-stream.json and prints a table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import threading
import time
from datetime import date, datetime
from pathlib import Path

AUDIENCE = "activity_page_wechat"
SEED = 11
PAGES = ("/pages/index/index", "/pages/goods/detail?id=7", "/pages/category/index", "/pages/member/center")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def wechat_ids(landing: Path) -> list[tuple[str, str]]:
    """(openid, unionid) pairs of the generated mini-program events: the feeder's persons."""
    pairs = set()
    for path in sorted((landing / "wechat_events").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("openid"):
                pairs.add((row["openid"], row.get("unionid") or ""))
    return sorted(pairs)


def feed(landing: Path, ids: list[tuple[str, str]], rate: int, seconds: int, tag: str, stop: threading.Event) -> int:
    """Land one file a second of `rate` page views, for `seconds`; returns the events landed."""
    rng = random.Random(f"{SEED}-{tag}")
    folder = landing / "wechat_events"
    landed, start = 0, time.time()
    for second in range(seconds):
        if stop.is_set():
            break
        now_ms = int(time.time() * 1000)
        lines = []
        for i in range(rate):
            openid, unionid = rng.choice(ids)
            page = f"/pages/activity/detail?aid={rng.randint(1, 9)}" if rng.random() < 0.5 else rng.choice(PAGES)
            lines.append(json.dumps({"event_id": f"bench_{tag}_{second:05d}_{i:05d}", "appid": "wx3c5e7f9a1b2d4c6e",
                                     "openid": openid, "unionid": unionid or None, "event_type": "page_view",
                                     "page": page, "ts": now_ms - rng.randint(0, 900)}))
        temporary = folder / f".bench_{tag}_{second:05d}.tmp"
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        temporary.replace(folder / f"bench_{tag}_{second:05d}.jsonl")
        landed += rate
        time.sleep(max(0.0, start + second + 1 - time.time()))
    return landed


def measure(spark, settings, receiver, landing: Path, ids, rate: int, seconds: int, settle: int) -> dict:
    from pyspark.sql import functions as F

    from cdp.stages.stream import QUERY_NAME
    from cdp.tables import STREAM_PROGRESS

    begun = datetime.now().astimezone()
    first = len(receiver.received)
    stop = threading.Event()
    landed = feed(landing, ids, rate, seconds, f"r{rate}", stop)
    since = F.col("started_at") >= F.lit(begun.replace(tzinfo=None))
    query = next(q for q in spark.streams.active if q.name == QUERY_NAME)
    deadline, idle = time.time() + 900, 0
    while time.time() < deadline and idle < 2:  # until a trigger finds no new file, twice (its status: no Spark job)
        time.sleep(1)
        status = query.status
        idle = idle + 1 if not (status["isDataAvailable"] or status["isTriggerActive"]) else 0
    quiet_since, last = time.time(), len(receiver.received)
    while time.time() - quiet_since < settle:  # then until nothing has arrived for `settle` seconds
        time.sleep(0.5)
        if len(receiver.received) != last:
            quiet_since, last = time.time(), len(receiver.received)
    arrivals = receiver.received[first:]
    while time.time() < deadline:  # the batches' rows in ops.stream_progress: written every publish_seconds
        if (spark.table(STREAM_PROGRESS).where(since).agg(F.sum("rows")).first()[0] or 0) >= landed:
            break
        time.sleep(2)
    latencies = [r.at - datetime.fromisoformat(r.event["landed_at"]).timestamp() for r in arrivals
                 if r.event.get("landed_at")]
    batches = (spark.table(STREAM_PROGRESS).where(since)
               .select("rows", "seconds", "latency_p50_s", "latency_max_s", "activations", "step_seconds").collect())
    steps: dict[str, list[float]] = {}
    for b in batches:
        for step, value in json.loads(b["step_seconds"] or "{}").items():
            steps.setdefault(step, []).append(value)
    batch_seconds = [b["seconds"] for b in batches]
    commit = [b["latency_max_s"] for b in batches if b["latency_max_s"] is not None]
    return {
        "rate": rate, "measured_at": datetime.now().isoformat(timespec="seconds"), "seconds": seconds,
        "events_landed": landed, "deliveries": len(arrivals),
        "unique_keys": len({r.key for r in arrivals}),
        "p50_s": percentile(latencies, 0.50), "p95_s": percentile(latencies, 0.95), "max_s": max(latencies, default=None),
        "batches": len(batches), "rows_in_batches": sum(b["rows"] for b in batches),
        "batch_seconds_median": statistics.median(batch_seconds) if batch_seconds else None,
        "batch_seconds_max": max(batch_seconds, default=None),
        "landing_to_commit_p95_s": percentile(commit, 0.95), "landing_to_commit_max_s": max(commit, default=None),
        "step_seconds_median": {k: statistics.median(v) for k, v in sorted(steps.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--seconds", type=int, default=180, help="how long each rate is fed")
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--settle", type=int, default=5, help="once the stream took every event: wait until nothing arrives for this long")
    parser.add_argument("--out", type=Path, default=Path("build/bench-stream"))
    args = parser.parse_args(argv)

    work = args.out.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    os.environ.update(CDP_LAKEHOUSE=str(work / "lakehouse"), CDP_LANDING=str(work / "data" / "landing"))

    from cdp.conf import load_settings
    from cdp.logs import configure_logging
    from cdp.operations.activate import Pusher, Webhook
    from cdp.pipeline import run_stages
    from cdp.spark import spark_session
    from cdp.stages.stream import run_stream
    from cdp_dev.datagen import generate
    from cdp_dev.receiver import Receiver

    configure_logging()
    settings = load_settings("local", Path(__file__).resolve().parents[3] / "conf")
    started = time.perf_counter()
    as_of = date.today()
    generate(args.persons, SEED, work / "data", as_of=as_of)
    landing = work / "data" / "landing"
    ids = wechat_ids(landing)
    receiver = Receiver()
    results = []
    with spark_session(settings, app_name="cdp-bench-stream") as spark:
        run_stages(spark, settings, "all", as_of)
        setup = time.perf_counter() - started
        pusher = Pusher(spark, settings, Webhook(receiver.url), AUDIENCE)
        run_stream(spark, settings, once=True, pusher=pusher)  # the files landed so far: not timed
        stop = threading.Event()
        streaming = threading.Thread(target=run_stream, args=(spark, settings), kwargs={"stop": stop, "pusher": pusher},
                                     daemon=True)
        streaming.start()
        try:
            for rate in args.rates:
                results.append(measure(spark, settings, receiver, landing, ids, rate, args.seconds, args.settle))
                print(json.dumps(results[-1]), flush=True)
        finally:
            stop.set()
            streaming.join(120)
            print(f"{datetime.now():%H:%M:%S} stream stopped: {not streaming.is_alive()}", flush=True)
    receiver.close()
    report = {"command": "python -m cdp_dev.bench.stream " + " ".join(argv or os.sys.argv[1:]),
              "when": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
              "cpus": os.cpu_count(), "persons": args.persons, "setup_seconds": round(setup, 1),
              "trigger_seconds": settings.pipeline.stream.trigger_seconds, "results": results}
    (work / "bench-stream.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print("\n| events/s | landed | delivered (unique) | p50 s | p95 s | max s | batches | batch s median / max | landing→commit p95 s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        def f(x):
            return "—" if x is None else f"{x:.1f}"
        print(f"| {r['rate']:,} | {r['events_landed']:,} | {r['deliveries']:,} ({r['unique_keys']:,}) | {f(r['p50_s'])} | "
              f"{f(r['p95_s'])} | {f(r['max_s'])} | {r['batches']} | {f(r['batch_seconds_median'])} / "
              f"{f(r['batch_seconds_max'])} | {f(r['landing_to_commit_p95_s'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
