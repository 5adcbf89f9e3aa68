"""The ``[association]`` table of the policy: when shared devices and IPs raise a suspicion.

::

    [association]
    window = "24h"                  # how long a sighting counts
    max_accounts_per_device = 3     # more accounts than this on one device: suspected
    max_accounts_per_ip = 10        # the same for one IP address (0 turns a kind off)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.counters.limits import LimitValueError, format_duration, parse_duration

#: Accounts kept per device or IP (the newest): thresholds must stay below it.
MAX_TRACKED = 100
MIN_WINDOW_MS = 60_000
MAX_WINDOW_MS = 31 * 86_400_000
KEYS = ("window", "max_accounts_per_device", "max_accounts_per_ip")


@dataclass(frozen=True, slots=True)
class AssociationPolicy:
    window_ms: int = 86_400_000
    max_accounts_per_device: int = 3
    max_accounts_per_ip: int = 10

    def threshold(self, kind: str) -> int:
        """More accounts than this on one ``kind`` (``device`` or ``ip``) are suspected; 0: off."""
        return self.max_accounts_per_device if kind == "device" else self.max_accounts_per_ip

    def describe(self) -> dict[str, Any]:
        return {
            "window": format_duration(self.window_ms),
            "max_accounts_per_device": self.max_accounts_per_device,
            "max_accounts_per_ip": self.max_accounts_per_ip,
        }


_DEFAULT = AssociationPolicy()


class AssociationSpecError(ValueError):
    def __init__(self, line: int | None, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(reason)


def association_from_table(table: Any, text: str) -> AssociationPolicy:
    """The policy from one file's ``[association]`` table; errors name the line."""
    if not isinstance(table, Mapping):
        raise AssociationSpecError(_line(text, None), "association: must be a table")
    for key in table:
        if key not in KEYS:
            raise AssociationSpecError(
                _line(text, key), f"association.{key}: unknown key (allowed: {', '.join(KEYS)})"
            )
    window_ms = _DEFAULT.window_ms
    if "window" in table:
        raw = table["window"]
        try:
            if not isinstance(raw, str):
                raise LimitValueError('must be a duration string such as "24h"')
            window_ms = parse_duration(raw)
        except LimitValueError as exc:
            raise AssociationSpecError(
                _line(text, "window"), f"association.window: {exc}"
            ) from None
        if not MIN_WINDOW_MS <= window_ms <= MAX_WINDOW_MS:
            raise AssociationSpecError(
                _line(text, "window"), "association.window: between 1m and 31d"
            )
    counts = {}
    for key in ("max_accounts_per_device", "max_accounts_per_ip"):
        value = table.get(key, getattr(_DEFAULT, key))
        if isinstance(value, bool) or not isinstance(value, int):
            raise AssociationSpecError(_line(text, key), f"association.{key}: must be an integer")
        if not 0 <= value < MAX_TRACKED:
            raise AssociationSpecError(
                _line(text, key),
                f"association.{key}: between 1 and {MAX_TRACKED - 1} (0: off)",
            )
        counts[key] = value
    return AssociationPolicy(window_ms, **counts)


def _line(text: str, key: str | None) -> int | None:
    """Line of ``key`` under the ``[association]`` header (or of the header)."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*association\s*\]")
    start = next((n for n, line in enumerate(lines, start=1) if header.match(line)), None)
    if start is None or key is None:
        return start
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if re.match(r"^\s*\[", line):
            break
        if assignment.match(line):
            return number
    return start
