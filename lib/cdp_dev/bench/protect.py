"""What keeping the keys out of query plans costs: the pandas UDFs of cdp.privacy.protect against the
JVM expressions they replaced (which carried the keys as literals), on the same rows.

    python -m cdp_dev.bench.protect --rows 2000000

Each variant hashes or encrypts every row of a cached frame of phone-like strings and is forced with
a `noop` write; the floor is the same frame forced without any function. Prints seconds per variant
(the fastest of --repeat runs) and writes build/bench-protect/protect.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def literal_hmac(value: Column, key: bytes) -> Column:
    """The former JVM HMAC-SHA-256: Spark's sha2 over the pads, which were literals in every plan."""
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    inner_pad, outer_pad = bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), F.encode(value, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)


def forced_seconds(frame: DataFrame, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        frame.write.format("noop").mode("overwrite").save()
        best = min(best, time.perf_counter() - started)
    return round(best, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdp_dev.bench.protect", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("build/bench-protect"))
    args = parser.parse_args(argv)

    from cdp.conf import load_settings
    from cdp.privacy.protect import decrypt, encrypt, keyed_hash, load_keys
    from cdp.spark import spark_session

    settings = load_settings("local")
    with spark_session(settings, app_name="cdp-bench-protect") as spark:
        keys = load_keys(settings)
        phones = spark.range(args.rows).select(F.format_string("+86138%08d", F.col("id")).alias("v")).cache()
        phones.count()
        # encrypted from a frame of their own: a variant must not find its result in this cache
        sealed = (spark.range(args.rows).select(F.format_string("+86139%08d", F.col("id")).alias("v"))
                  .select(encrypt(F.col("v"), keys).alias("e")).cache())
        sealed.count()
        variants = {
            "floor (the rows, no function)": phones.select("v"),
            "HMAC: JVM sha2, pads as literals (former)": phones.select(literal_hmac(F.col("v"), keys.hash_key)),
            "HMAC: pandas UDF, key from the executor's environment": phones.select(keyed_hash(F.col("v"), keys)),
            "AES-GCM encrypt: Spark aes_encrypt, key as literal (former)": phones.select(
                F.aes_encrypt(F.col("v"), F.lit(keys.encryption_key))),
            "AES-GCM encrypt: pandas UDF": phones.select(encrypt(F.col("v"), keys)),
            "AES-GCM decrypt: Spark try_aes_decrypt, key as literal (former)": sealed.select(
                F.try_aes_decrypt(F.col("e"), F.lit(keys.encryption_key))),
            "AES-GCM decrypt: pandas UDF": sealed.select(decrypt(F.col("e"), keys)),
        }
        results = {name: forced_seconds(frame, args.repeat) for name, frame in variants.items()}
    report = {"rows": args.rows, "repeat": args.repeat, "seconds": results,
              "command": "python -m cdp_dev.bench.protect " + " ".join(argv or sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "protect.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    width = max(map(len, results))
    print(f"{args.rows:,} rows, fastest of {args.repeat}:")
    for name, seconds in results.items():
        print(f"  {name:<{width}}  {seconds:7.2f} s  ({args.rows / seconds / 1e6:.2f} M rows/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
