"""One quality rule's result in one silver run: what ops.quality_metrics holds and the report draws."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class MetricRow:
    """One rule's result in one quality run, as stored in ops.quality_metrics."""

    run_id: str
    computed_at: datetime
    source: str
    rule: str
    family: str
    checked: int
    failed: int
    rate: float
    warn_above: float | None
    fail_above: float | None
    status: str
