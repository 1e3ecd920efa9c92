"""Run every privacy transform under real keys, in a Spark session of its own, and write what a
reviewer could read: each transform's plans (explain extended), with the event log and Spark's INFO
log going where the caller says. Also one deliberately leaky plan (the key as a literal), so the
caller can prove its search finds a key where there is one.

    python tests/keyprobe.py OUT_DIR     (the keys in CDP_HASH_KEY, CDP_ENCRYPTION_KEY, CDP_ENCRYPTION_KEY_PREVIOUS)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    from pyspark.sql import functions as F

    from cdp.conf import load_settings
    from cdp.privacy.protect import decrypt, encrypt, identifier_hash, keyed_hash, load_keys, masked
    from cdp.spark import build_session

    settings = load_settings("test", ROOT / "conf")
    settings.profile.spark_conf.update({"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(out / "events"),
                                        "spark.eventLog.compress": "false",  # searched as text
                                        "spark.ui.enabled": "true"})
    (out / "events").mkdir(parents=True, exist_ok=True)
    spark = build_session(settings, "cdp-keyprobe")
    spark.sparkContext.setLogLevel("INFO")
    keys = load_keys(settings)
    assert not keys.development and keys.previous_encryption_key is not None
    people = spark.createDataFrame([("phone", "+8613800138000", "zhang.wei@qq.com")], "id_type string, id_value string, email string")
    transforms = {
        "keyed_hash": people.select(keyed_hash(F.col("id_value"), keys).alias("h")),
        "identifier_hash": people.select(identifier_hash(F.col("id_type"), F.col("id_value"), keys).alias("h")),
        "encrypt": people.select(encrypt(F.col("email"), keys).alias("e")),
        "decrypt": people.select(encrypt(F.col("email"), keys).alias("e")).select(decrypt(F.col("e"), keys).alias("d")),
        "masked": people.select(masked("phone", "id_value").alias("m")),
    }
    plans = []
    for name, frame in transforms.items():
        rows = frame.collect()  # run: the SQL tab and the event log see the execution
        plans.append(f"== {name}: {len(rows)} row(s)\n{frame._jdf.queryExecution().toString()}\n")
        frame.explain("extended")  # printed to the driver's stdout, as a user would
    assert transforms["decrypt"].first()["d"] == "zhang.wei@qq.com"
    (out / "plans.txt").write_text("\n".join(plans), encoding="utf-8")
    leaky = people.select(F.aes_encrypt("email", F.lit(keys.encryption_key)).alias("e"),
                          F.concat(F.lit(keys.hash_key.decode("utf-8")), "id_value").alias("h"))
    (out / "control.txt").write_text(leaky._jdf.queryExecution().toString(), encoding="utf-8")
    spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "lib"))
    main(Path(sys.argv[1]))
