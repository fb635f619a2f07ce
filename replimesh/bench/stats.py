"""Summaries of repeated measurements: min / median / max, as RESULTS.md and results.json show them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, min, median, max and the values themselves (rounded to ms); an empty series has None figures."""
    vals = [round(float(v), 3) for v in values]
    if not vals:
        return {"n": 0, "min": None, "median": None, "max": None, "values": []}
    return {
        "n": len(vals),
        "min": min(vals),
        "median": round(statistics.median(vals), 3),
        "max": max(vals),
        "values": vals,
    }


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)
