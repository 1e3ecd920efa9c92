"""What every conf file shares: the error a person can fix, strict keys, snake_case names, ${VAR}
expansion, and reading one YAML file into its model."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

SNAKE_CASE = re.compile(r"[a-z][a-z0-9_]*")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration problem a person can fix: names the file, the key and the fix."""


class Strict(BaseModel):
    """A conf section: an unknown key is an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


def require_snake_case(names: Iterable[str], what: str, becomes: str, reserved: Iterable[str] = ()) -> None:
    """Raise ValueError naming the first name that is not snake_case or is reserved."""
    reserved = set(reserved)
    for name in names:
        if not SNAKE_CASE.fullmatch(name):
            raise ValueError(f"{what} '{name}' must be snake_case (it becomes {becomes})")
        if name in reserved:
            raise ValueError(f"{what} '{name}' is reserved; choose another")


def expand_env(value: str, *, file: Path, key: str) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset ${VAR} without a default is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{file}: key '{key}' needs environment variable {name}, which is not set. "
            f"Fix: export {name}=... or give a default as ${{{name}:-value}}."
        )

    return _ENV_REF.sub(substitute, value)


def required_variables(value: str) -> list[str]:
    """The ${VAR} a value reads without a default: what every environment running it must export."""
    return [match.group(1) for match in _ENV_REF.finditer(value) if match.group(2) is None]


def expand_tree(node: Any, *, file: Path, key: str = "") -> Any:
    """expand_env on every string of a parsed YAML tree; `key` names where a missing variable is read."""
    if isinstance(node, dict):
        return {k: expand_tree(v, file=file, key=f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_tree(v, file=file, key=f"{key}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return expand_env(node, file=file, key=key)
    return node


def load_model(path: Path, model: type[M], *, expand: bool = True, context: dict[str, Any] | None = None) -> M:
    """Read one YAML file into a pydantic model, or raise ConfigError naming file, key and fix.

    `context` reaches the validators that check this file against others (the data model, purposes)."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found. Fix: create it, or point CDP_CONF_DIR at the conf folder.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}.")
    if expand:
        raw = expand_tree(raw, file=path)
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(whole file)"
            problems.append(f"  key '{key}': {err['msg']}")
        raise ConfigError(
            f"{path}: invalid configuration\n" + "\n".join(problems)
            + "\nFix: correct the keys above (see docs/configuration.md)."
        ) from exc
