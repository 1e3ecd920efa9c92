"""No key in a query plan, the driver's log or the event log (what the Spark UI's SQL tab shows):
tests/keyprobe.py runs every privacy transform under real keys in a Spark session of its own, at
INFO level, with the event log on. The search is proven on a plan that does hold the keys."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def key_forms(key: bytes) -> set[str]:
    """How a key can show in text: as the variable held it, in hex and base64, and as the two HMAC
    pads (key XOR 0x36 / 0x5c) from which it is read back."""
    forms = {key.hex(), key.hex().upper(), base64.b64encode(key).decode()}
    try:
        forms.add(key.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    for pad in (0x36, 0x5C):
        padded = bytes(b ^ pad for b in block)
        forms |= {padded.hex(), padded.hex().upper()}
    return forms


def leaks(text: str, keys: dict[str, bytes]) -> set[str]:
    """The keys (by name) some form of which the text holds."""
    return {name for name, key in keys.items() if any(form in text for form in key_forms(key))}


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    out = tmp_path_factory.mktemp("keyprobe")
    hash_key = secrets.token_urlsafe(32)
    encryption, previous = os.urandom(32), os.urandom(32)
    keys = {"hash": hash_key.encode("utf-8"), "encryption": encryption, "previous": previous}
    environment = {**os.environ, "CDP_HASH_KEY": hash_key,
                   "CDP_ENCRYPTION_KEY": base64.b64encode(encryption).decode(),
                   "CDP_ENCRYPTION_KEY_PREVIOUS": base64.b64encode(previous).decode(),
                   "CDP_LAKEHOUSE": str(out / "lakehouse"), "CDP_LANDING": str(out / "landing")}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "keyprobe.py"), str(out)], env=environment,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    events = [p for p in (out / "events").rglob("*") if p.is_file()]
    texts = {
        "plans": (out / "plans.txt").read_text(encoding="utf-8"),
        "driver log": result.stdout + result.stderr,
        "event log": "".join(p.read_text(encoding="utf-8", errors="replace") for p in events),
    }
    return keys, texts, (out / "control.txt").read_text(encoding="utf-8")


def test_the_search_finds_keys_in_a_plan_that_holds_them(probed):
    keys, _, control = probed
    assert leaks(control, keys) == {"hash", "encryption"}  # the literals of the deliberately leaky plan


def test_every_privacy_transform_ran_and_was_logged(probed):
    _, texts, _ = probed
    for name in ("keyed_hash", "identifier_hash", "encrypt", "decrypt", "masked"):
        assert f"== {name}: 1 row(s)" in texts["plans"], name
    for udf in ("hmac_sha256", "aes_gcm_encrypt_udf", "aes_gcm_decrypt_udf"):
        assert udf in texts["plans"] and udf in texts["event log"], udf  # the plans the SQL tab shows
    assert "INFO" in texts["driver log"] and "SparkListenerSQLExecutionStart" in texts["event log"]


def test_no_key_in_any_plan_log_or_event_log(probed):
    keys, texts, _ = probed
    assert {where: leaks(text, keys) for where, text in texts.items()} == {
        "plans": set(), "driver log": set(), "event log": set()}
