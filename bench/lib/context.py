"""What every scenario gets: mode, repetitions, scratch space; and what it returns."""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")

Result = dict[str, Any]


@dataclass
class Context:
    smoke: bool
    reps: int
    scratch: pathlib.Path
    #: The policy file or folder every gateway of the run uses (bench/counters_hook.py).
    policy: pathlib.Path
    #: Repetitions of the multi-process measurements (e2e, workers), which take longer.
    process_reps: int = 3
    notes: list[str] = field(default_factory=list)

    def pick(self, full: _T, smoke: _T) -> _T:
        """``full`` in a real run, ``smoke`` in a smoke run."""
        return smoke if self.smoke else full

    def dir(self, name: str) -> pathlib.Path:
        path = self.scratch / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def result(title: str, rows: list[dict[str, Any]], **extra: Any) -> Result:
    out: Result = {"title": title, "status": "ok", "errors": [], "rows": rows}
    out.update(extra)
    return out


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
