"""Protecting personal data in Spark: keyed hashes, display masks and reversible encryption.

- `keyed_hash`: HMAC-SHA-256 (RFC 2104). A keyed hash is a stable join key that nobody without the
  key can rebuild from a guessed phone number (a plain SHA-256 of an 11-digit number is reversed by
  trying all of them).
- masks: 138****8000, 110***********002X, z***@qq.com, 张*, a birth date cut to its year.
- `encrypt` / `decrypt`: AES-GCM with a random IV (the layout of Spark's `aes_encrypt`: IV, cipher
  text, tag) for the few values the business must read back (the phone an SMS export sends to);
  `decrypt` also tries the previous key, so a key rotation needs no downtime.

**Where the keys live.** The keys come from the environment (privacy.yaml `secrets` names the
variables). The driver reads them to check them and for values that never enter Spark (a CLI
argument's hash). Executors read them from their own environment, inside the pandas UDFs that hash
and encrypt: a query plan holds only the UDF and the variable's name, so no key is in `explain()`,
the SQL tab, the event log or a task's closure. What a UDF carries is a check value (an HMAC of a
fixed text under the key) so that an executor whose variable holds another key fails instead of
hashing differently from the driver. A profile with `dev_secrets: true` (local, test) falls back to
fixed development keys, with a warning, on the driver and the executors alike; any other profile
fails with a message saying which variable to set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from cdp.conf import ConfigError, Settings
from cdp.conf.privacy import mask_sql

log = logging.getLogger(__name__)

_DEV_HASH_KEY = b"cdp development hash key: not a secret"
_DEV_ENCRYPTION_KEY = hashlib.sha256(b"cdp development encryption key: not a secret").digest()
_WARNED: set[str] = set()  # profiles already warned about development keys in this process
_CHECK_TEXT = b"cdp key check"
_IV_BYTES, _TAG_BYTES = 12, 16  # AES-GCM as Spark's aes_encrypt lays it out


@dataclass(frozen=True)
class Keys:
    """The keys as the driver read them (never printed: repr hides them), and the environment
    variables executors read them from."""

    hash_key: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)
    previous_encryption_key: bytes | None = field(default=None, repr=False)
    development: bool = False
    hash_key_env: str = "CDP_HASH_KEY"
    encryption_key_env: str = "CDP_ENCRYPTION_KEY"
    previous_encryption_key_env: str = "CDP_ENCRYPTION_KEY_PREVIOUS"

    def source(self, which: str) -> "KeySource":
        """Where an executor finds the hash key (`hash`), the encryption key (`encryption`) or the
        previous one (`previous`), and the check value of the driver's."""
        key, variable, kind = {
            "hash": (self.hash_key, self.hash_key_env, "text"),
            "encryption": (self.encryption_key, self.encryption_key_env, "aes"),
            "previous": (self.previous_encryption_key, self.previous_encryption_key_env, "aes"),
        }[which]
        return KeySource(variable, kind, which, key_check(key) if key is not None else None, self.development)


@dataclass(frozen=True)
class KeySource:
    """What a UDF carries to find a key on an executor: the variable's name, how to read it, and
    the check value of the driver's key. No key material."""

    variable: str
    kind: str  # text: the value's UTF-8 bytes (the hash key); aes: base64 of 16, 24 or 32 bytes
    which: str  # hash, encryption or previous
    check: str | None  # None: the driver has no such key (no previous encryption key)
    development: bool


def key_check(key: bytes) -> str:
    """A value that tells keys apart and says nothing about them: HMAC-SHA-256 of a fixed text, cut."""
    return hmac.new(key, _CHECK_TEXT, hashlib.sha256).hexdigest()[:16]


_EXECUTOR_KEYS: dict[KeySource, bytes | None] = {}


def executor_key(source: KeySource) -> bytes | None:
    """The key a KeySource names, read from this process's environment once (on an executor), or the
    development key; a RuntimeError when the variable is missing or holds another key than the driver's."""
    if source in _EXECUTOR_KEYS:
        return _EXECUTOR_KEYS[source]
    value = os.environ.get(source.variable, "")
    if source.check is None:
        key = None
    elif value:
        key = value.encode("utf-8") if source.kind == "text" else _decode_aes_key(value, source.variable)
    elif source.development:
        key = _DEV_HASH_KEY if source.which == "hash" else _DEV_ENCRYPTION_KEY
    else:
        raise RuntimeError(
            f"the executor's environment has no {source.variable}: executors read the keys from their own "
            f"environment. Fix: give the executors the secret (docs/privacy.md, \"Keys on a cluster\").")
    if key is not None and key_check(key) != source.check:
        raise RuntimeError(f"the executor's {source.variable} holds another key than the driver's. "
                           f"Fix: give the driver and every executor the same secret.")
    _EXECUTOR_KEYS[source] = key
    return key


def _decode_aes_key(value: str, variable: str) -> bytes:
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"environment variable {variable} is not base64. Fix: export {variable}="
                          f"\"$(openssl rand -base64 32)\" (16, 24 or 32 bytes, base64-encoded).") from exc
    if len(key) not in (16, 24, 32):
        raise ConfigError(f"environment variable {variable} decodes to {len(key)} bytes; AES needs 16, 24 or 32. "
                          f"Fix: export {variable}=\"$(openssl rand -base64 32)\".")
    return key


def load_keys(settings: Settings) -> Keys:
    """The hash and encryption keys for this profile, or a ConfigError naming the variable to set."""
    names = settings.privacy.secrets
    hash_value = os.environ.get(names.hash_key_env, "")
    encryption_value = os.environ.get(names.encryption_key_env, "")
    previous_value = os.environ.get(names.previous_encryption_key_env, "")
    missing = [n for n, v in ((names.hash_key_env, hash_value), (names.encryption_key_env, encryption_value)) if not v]
    if missing and not settings.profile.dev_secrets:
        raise ConfigError(
            f"{settings.conf_dir / 'pipeline.yaml'}: profile '{settings.profile_name}' needs the secret(s) "
            f"{', '.join(missing)} in the environment, and has no development keys (dev_secrets: false). "
            f"Fix: export {names.hash_key_env}=<32+ random characters> and "
            f"{names.encryption_key_env}=\"$(openssl rand -base64 32)\" from your secret store "
            f"(see docs/privacy.md); never write them into conf/."
        )
    if missing and settings.profile_name not in _WARNED:
        _WARNED.add(settings.profile_name)
        log.warning("privacy: %s not set; profile '%s' uses the fixed development keys (never use them with "
                    "real customer data)", " and ".join(missing), settings.profile_name)
    if hash_value and len(hash_value.encode("utf-8")) < 16:
        raise ConfigError(f"environment variable {names.hash_key_env} is shorter than 16 bytes. "
                          f"Fix: use at least 32 random characters, e.g. \"$(openssl rand -base64 32)\".")
    return Keys(
        hash_key=hash_value.encode("utf-8") if hash_value else _DEV_HASH_KEY,
        encryption_key=(_decode_aes_key(encryption_value, names.encryption_key_env) if encryption_value
                        else _DEV_ENCRYPTION_KEY),
        previous_encryption_key=(_decode_aes_key(previous_value, names.previous_encryption_key_env)
                                 if previous_value else None),
        development=bool(missing),
        hash_key_env=names.hash_key_env,
        encryption_key_env=names.encryption_key_env,
        previous_encryption_key_env=names.previous_encryption_key_env,
    )


def hmac_hex(values: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA-256 of each string as 64 hex characters (null stays null): what `keyed_hash` runs."""
    return pd.Series([hmac.digest(key, v.encode("utf-8"), "sha256").hex() if isinstance(v, str) else None
                      for v in values], index=values.index, dtype=object)


def keyed_hash(value: Column, keys: Keys) -> Column:
    """HMAC-SHA-256 of a string column under the hash key, as 64 hex characters (null stays null)."""
    source = keys.source("hash")

    @F.pandas_udf("string")
    def hmac_sha256(values: pd.Series) -> pd.Series:
        return hmac_hex(values, executor_key(source))

    return hmac_sha256(value)


def keyed_hash_text(value: str, key: bytes) -> str:
    """The same HMAC in Python, for values that never enter Spark (a CLI argument)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def identifier_hash(id_type: Column, id_value: Column, keys: Keys) -> Column:
    """The keyed hash of `type:value`, the form every table outside silver joins on."""
    return keyed_hash(F.concat_ws(":", id_type, id_value), keys)


# ---------------------------------------------------------------- masks

def masked(mask: str, column: str) -> Column:
    """The masked form of the named column, by the mask's SQL template (conf/privacy.py, MASK_SQL)."""
    return F.expr(mask_sql(mask, f"`{column}`"))


# ---------------------------------------------------------------- encryption


def aes_gcm_encrypt(values: pd.Series, key: bytes) -> pd.Series:
    """Each string's UTF-8 bytes encrypted with AES-GCM under a random IV: IV, cipher text and tag,
    as Spark's aes_encrypt lays them out (null stays null)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)
    out = []
    for v in values:
        if not isinstance(v, str):
            out.append(None)
            continue
        iv = os.urandom(_IV_BYTES)
        out.append(iv + cipher.encrypt(iv, v.encode("utf-8"), None))
    return pd.Series(out, index=values.index, dtype=object)


def aes_gcm_decrypt(values: pd.Series, key: bytes, previous: bytes | None = None) -> pd.Series:
    """The clear text of each value, with `key` or else `previous`; null when neither opens it (a
    value encrypted under another key, or damaged)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ciphers = [AESGCM(k) for k in (key, previous) if k is not None]

    def opened(v) -> str | None:
        if v is None or len(v) < _IV_BYTES + _TAG_BYTES:
            return None
        v = bytes(v)
        for cipher in ciphers:
            try:
                return cipher.decrypt(v[:_IV_BYTES], v[_IV_BYTES:], None).decode("utf-8")
            except InvalidTag:
                continue
        return None

    return pd.Series([opened(v) for v in values], index=values.index, dtype=object)


def encrypt(value: Column, keys: Keys) -> Column:
    """AES-GCM with a random IV per value (binary); null stays null."""
    source = keys.source("encryption")

    @F.pandas_udf("binary")
    def aes_gcm_encrypt_udf(values: pd.Series) -> pd.Series:
        return aes_gcm_encrypt(values, executor_key(source))

    return aes_gcm_encrypt_udf.asNondeterministic()(value.cast("string"))  # a random IV: never computed twice


def decrypt(value: Column, keys: Keys) -> Column:
    """The clear text, with the current key or else the previous one (during a key rotation)."""
    current, previous = keys.source("encryption"), keys.source("previous")

    @F.pandas_udf("string")
    def aes_gcm_decrypt_udf(values: pd.Series) -> pd.Series:
        return aes_gcm_decrypt(values, executor_key(current), executor_key(previous))

    return aes_gcm_decrypt_udf(value)
