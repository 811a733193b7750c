"""End-to-end latency: from the producer's timestamp on a record to the moment a consumer had it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (``fraction`` in 0..1)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_ms: Iterable[float]) -> LatencySummary | None:
    """p50/p95/p99/max of the latencies; None when there are none."""
    ordered = sorted(latencies_ms)
    if not ordered:
        return None
    return LatencySummary(
        count=len(ordered),
        p50_ms=percentile(ordered, 0.50),
        p95_ms=percentile(ordered, 0.95),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1],
    )
