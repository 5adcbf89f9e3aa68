"""Latency summaries: percentiles per repetition, medians over repetitions.

Every measurement is repeated; each repetition gets its own p50/p99/p99.9 and
throughput, and what the tables quote is the median of those per-repetition
figures. Latencies are reported in microseconds.

In-process timings keep every sample (exact percentiles, nearest rank);
over-the-network timings go into HDR histograms (1 us .. 60 s, 3 significant
digits), which also merge across repetitions for the percentile plots.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

#: Percentiles drawn in the latency plot.
SPECTRUM = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)
HDR_MAX_US = 60_000_000

Row = dict[str, Any]


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HDR_MAX_US, 3)


def record_us(histogram: HdrHistogram, value_us: float) -> None:
    histogram.record_value(min(HDR_MAX_US, max(1, round(value_us))))


def _rank(sorted_values: Sequence[int], percentile: float) -> int:
    if not sorted_values:
        return 0
    index = max(0, math.ceil(percentile / 100.0 * len(sorted_values)) - 1)
    return sorted_values[min(index, len(sorted_values) - 1)]


def rep_from_ns(samples_ns: Sequence[int], elapsed_s: float, errors: int = 0) -> Row:
    """One repetition from raw per-call timings in nanoseconds."""
    ordered = sorted(samples_ns)
    count = len(ordered)
    return {
        "count": count,
        "errors": errors,
        "p50_us": _rank(ordered, 50) / 1000,
        "p99_us": _rank(ordered, 99) / 1000,
        "p999_us": _rank(ordered, 99.9) / 1000,
        "max_us": (ordered[-1] if ordered else 0) / 1000,
        "mean_us": (sum(ordered) / count / 1000) if count else 0.0,
        "throughput_per_s": count / elapsed_s if elapsed_s > 0 else None,
    }


def spectrum_from_ns(samples_ns: Iterable[int]) -> list[list[float]]:
    ordered = sorted(samples_ns)
    return [[p, _rank(ordered, p) / 1000] for p in SPECTRUM] if ordered else []


def rep_from_histogram(
    histogram: HdrHistogram, elapsed_s: float, errors: int = 0, **extra: Any
) -> Row:
    """One repetition from an HDR histogram of microseconds."""
    count = histogram.get_total_count()
    row: Row = {
        "count": count,
        "errors": errors,
        "p50_us": float(histogram.get_value_at_percentile(50)) if count else 0.0,
        "p99_us": float(histogram.get_value_at_percentile(99)) if count else 0.0,
        "p999_us": float(histogram.get_value_at_percentile(99.9)) if count else 0.0,
        "max_us": float(histogram.get_max_value()) if count else 0.0,
        "mean_us": float(histogram.get_mean_value()) if count else 0.0,
        "throughput_per_s": count / elapsed_s if elapsed_s > 0 else None,
    }
    row.update(extra)
    return row


def spectrum_from_histogram(histogram: HdrHistogram) -> list[list[float]]:
    if not histogram.get_total_count():
        return []
    return [[p, float(histogram.get_value_at_percentile(p))] for p in SPECTRUM]


def median_of(reps: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [r[key] for r in reps if r.get(key) is not None]
    return statistics.median(values) if values else None


def measurement(
    name: str,
    description: str,
    reps: Sequence[Row],
    spectrum: list[list[float]] | None = None,
    **extra: Any,
) -> Row:
    """A table row: medians over ``reps`` of each per-repetition figure, plus the reps."""
    row: Row = {"name": name, "description": description}
    for key in ("p50_us", "p99_us", "p999_us", "max_us", "mean_us", "throughput_per_s"):
        row[key] = median_of(reps, key)
    row["count"] = sum(int(r.get("count", 0)) for r in reps)
    row["errors"] = sum(int(r.get("errors", 0)) for r in reps)
    row["repetitions"] = len(reps)
    row.update(extra)
    row["reps"] = list(reps)
    if spectrum:
        row["spectrum_us"] = spectrum
    return row


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram:
    merged = new_histogram()
    for blob in encoded:
        merged.add(HdrHistogram.decode(blob))
    return merged


def encode(histogram: HdrHistogram) -> str:
    blob = histogram.encode()
    return blob.decode() if isinstance(blob, bytes) else str(blob)
