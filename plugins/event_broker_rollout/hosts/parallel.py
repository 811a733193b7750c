"""Per-host work fanned out over threads: SSH round trips dominate, so hosts are handled at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def in_parallel(items: Sequence[str], work: Callable[[str], T], at_most: int = 16) -> dict[str, T]:
    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(at_most, len(items))) as pool:
        return dict(zip(items, pool.map(work, items), strict=True))
