"""Protecting personal data in Spark: keyed hashes, display masks and reversible encryption.

- `keyed_hash`: HMAC-SHA-256 (RFC 2104) built from Spark's own `sha2`, so it runs in the JVM on every
  row without a Python UDF. A keyed hash is a stable join key that nobody without the key can
  rebuild from a guessed phone number (a plain SHA-256 of an 11-digit number is reversed by trying
  all of them).
- masks: 138****8000, 110***********002X, z***@qq.com, 张*, a birth date cut to its year.
- `encrypt` / `decrypt`: Spark's `aes_encrypt` (AES-GCM, random IV) for the few values the business
  must read back (the phone an SMS export sends to); `decrypt` also tries the previous key, so a
  key rotation needs no downtime.

The keys come from the environment (privacy.yaml `secrets` names the variables). A profile with
`dev_secrets: true` (local, test) falls back to fixed development keys with a warning; any other
profile fails with a message saying which variable to set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from cdp.conf import ConfigError, Settings
from cdp.conf.privacy import mask_sql

log = logging.getLogger(__name__)

_BLOCK = 64  # SHA-256 block size in bytes
_DEV_HASH_KEY = b"cdp development hash key: not a secret"
_DEV_ENCRYPTION_KEY = hashlib.sha256(b"cdp development encryption key: not a secret").digest()
_WARNED: set[str] = set()  # profiles already warned about development keys in this process


@dataclass(frozen=True)
class Keys:
    hash_key: bytes
    encryption_key: bytes
    previous_encryption_key: bytes | None = None
    development: bool = False


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
    )


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def keyed_hash(value: Column, key: bytes) -> Column:
    """HMAC-SHA-256 of a string column as 64 hex characters (null stays null)."""
    inner_pad, outer_pad = _pads(key)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), F.encode(value, "UTF-8")), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256)


def keyed_hash_text(value: str, key: bytes) -> str:
    """The same HMAC in Python, for values that never enter Spark (a CLI argument)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def identifier_hash(id_type: Column, id_value: Column, key: bytes) -> Column:
    """The keyed hash of `type:value`, the form every table outside silver joins on."""
    return keyed_hash(F.concat_ws(":", id_type, id_value), key)


# ---------------------------------------------------------------- masks

def masked(mask: str, column: str) -> Column:
    """The masked form of the named column, by the mask's SQL template (conf/privacy.py, MASK_SQL)."""
    return F.expr(mask_sql(mask, f"`{column}`"))


# ---------------------------------------------------------------- encryption


def encrypt(value: Column, keys: Keys) -> Column:
    """AES-GCM with a random IV per value (binary); null stays null."""
    return F.aes_encrypt(value.cast("string").cast("binary"), F.lit(keys.encryption_key))


def decrypt(value: Column, keys: Keys) -> Column:
    """The clear text, with the current key or else the previous one (during a key rotation)."""
    current = F.try_aes_decrypt(value, F.lit(keys.encryption_key))
    if keys.previous_encryption_key is not None:
        current = F.coalesce(current, F.try_aes_decrypt(value, F.lit(keys.previous_encryption_key)))
    return current.cast("string")
