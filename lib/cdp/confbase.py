"""What every conf model shares: strict keys, and names that become table or column names."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

SNAKE_CASE = re.compile(r"[a-z][a-z0-9_]*")


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
