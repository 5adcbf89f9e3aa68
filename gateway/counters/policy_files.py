"""Read the ``[counters]`` and ``[limits.*]`` tables of the policy files.

Each file is checked as a whole; a mistake is reported with the line of the
offending key (TOML parsers keep no positions, so the text is scanned for the
table header and the key under it). :mod:`gateway.policy` turns the error into
a :class:`~gateway.policy.PolicyError` naming the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from gateway.counters.limits import (
    DEFAULT_SCOPE,
    CounterPolicy,
    LimitKind,
    LimitValue,
    LimitValueError,
    Scope,
    ScopeRef,
    parse_duration,
    parse_value,
)
from gateway.validation import (
    ACCOUNT_RE,
    ACCOUNT_RULE,
    PRODUCT_RE,
    PRODUCT_RULE,
    SYMBOL_RE,
    SYMBOL_RULE,
)

_SETTINGS = ("day_start", "order_memory", "timeout")
_SCOPES: Mapping[str, tuple[Scope, re.Pattern[str], str]] = {
    "product": (Scope.PRODUCT, PRODUCT_RE, PRODUCT_RULE),
    "symbol": (Scope.SYMBOL, SYMBOL_RE, SYMBOL_RULE),
    "account": (Scope.ACCOUNT, ACCOUNT_RE, ACCOUNT_RULE),
}
_TIME_OF_DAY = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")


class LimitSpecError(ValueError):
    def __init__(self, line: int | None, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(reason)


def parse_time_of_day(text: str) -> int:
    """``"HH:MM"`` or ``"HH:MM:SS"`` -> ms after midnight."""
    match = _TIME_OF_DAY.fullmatch(text)
    if match is None:
        raise LimitValueError(f'not a time of day: {text!r} (use "HH:MM" or "HH:MM:SS", UTC)')
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


class CounterPolicyLoader:
    """Accumulates the counter sections of several files; :meth:`build` returns the policy."""

    def __init__(self) -> None:
        self._tables: dict[ScopeRef, dict[LimitKind, LimitValue]] = {}
        self._settings: dict[str, int] = {}

    def add(self, document: Mapping[str, Any], text: str) -> None:
        lines = TomlLines(text)
        counters = document.get("counters")
        if counters is not None:
            self._add_settings(counters, lines)
        limits = document.get("limits")
        if limits is not None:
            self._add_limits(limits, lines)

    def build(self) -> CounterPolicy:
        defaults = CounterPolicy()
        return CounterPolicy(
            tables={ref: dict(table) for ref, table in self._tables.items()},
            day_start_ms=self._settings.get("day_start", defaults.day_start_ms),
            order_memory_ms=self._settings.get("order_memory", defaults.order_memory_ms),
            timeout_ms=self._settings.get("timeout"),
        )

    def _add_settings(self, table: Any, lines: TomlLines) -> None:
        path = ("counters",)
        if not isinstance(table, dict):
            raise LimitSpecError(lines.line_of(path), "counters: must be a table [counters]")
        for key, value in table.items():
            line = lines.line_of(path, key)
            if key not in _SETTINGS:
                allowed = ", ".join(_SETTINGS)
                raise LimitSpecError(line, f"counters: unknown key {key!r} (allowed: {allowed})")
            if key in self._settings:
                raise LimitSpecError(line, f"counters.{key}: set in two files")
            if not isinstance(value, str):
                raise LimitSpecError(line, f"counters.{key}: expected a string")
            try:
                self._settings[key] = _setting(key, value)
            except LimitValueError as exc:
                raise LimitSpecError(line, f"counters.{key}: {exc}") from None

    def _add_limits(self, limits: Any, lines: TomlLines) -> None:
        if not isinstance(limits, dict):
            raise LimitSpecError(lines.line_of(("limits",)), "limits: must be a table")
        for section, body in limits.items():
            if section == "default":
                self._add_table(DEFAULT_SCOPE, body, ("limits", "default"), lines)
                continue
            if section not in _SCOPES:
                raise LimitSpecError(
                    lines.line_of(("limits", section)) or lines.line_of(("limits",), section),
                    f"limits: unknown scope {section!r} "
                    "(allowed: default, product.<name>, symbol.<name>, account.<id>)",
                )
            scope, pattern, rule = _SCOPES[section]
            if not isinstance(body, dict):
                raise LimitSpecError(
                    lines.line_of(("limits",), section), f"limits.{section}: must be a table"
                )
            for name, table in body.items():
                path = ("limits", section, name)
                if not isinstance(name, str) or pattern.fullmatch(name) is None:
                    raise LimitSpecError(lines.line_of(path), f"limits.{section}.{name}: {rule}")
                self._add_table(ScopeRef(scope, name), table, path, lines)

    def _add_table(
        self, ref: ScopeRef, table: Any, path: tuple[str, ...], lines: TomlLines
    ) -> None:
        where = ".".join(path)
        if not isinstance(table, dict):
            raise LimitSpecError(lines.line_of(path), f"{where}: must be a table of limits")
        into = self._tables.setdefault(ref, {})
        for key, raw in table.items():
            line = lines.line_of(path, key)
            try:
                kind = LimitKind(key)
            except ValueError:
                allowed = ", ".join(k.value for k in LimitKind)
                raise LimitSpecError(
                    line, f"{where}: unknown limit {key!r} (allowed: {allowed})"
                ) from None
            if kind in into:
                raise LimitSpecError(line, f"{where}.{key}: declared twice")
            try:
                into[kind] = parse_value(kind, raw)
            except LimitValueError as exc:
                raise LimitSpecError(line, f"{where}.{key}: {exc}") from None


def _setting(key: str, value: str) -> int:
    if key == "day_start":
        return parse_time_of_day(value)
    ms = parse_duration(value)
    if key == "order_memory" and not 60_000 <= ms <= 31 * 86_400_000:
        raise LimitValueError("from 1m to 31d")
    if key == "timeout" and not 1 <= ms <= 10_000:
        raise LimitValueError("from 1ms to 10s")
    return ms


class TomlLines:
    """Where tables and keys are in a TOML text, for error messages."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers: list[tuple[int, tuple[str, ...]]] = []
        for number, line in enumerate(self._lines, start=1):
            stripped = line.strip()
            if stripped.startswith("[") and not stripped.startswith("[["):
                path = _header_path(stripped)
                if path is not None:
                    self._headers.append((number, path))

    def line_of(self, path: tuple[str, ...], key: str | None = None) -> int | None:
        """The line of ``key`` in table ``path`` (or of the table's header); None if not found."""
        for index, (number, header) in enumerate(self._headers):
            if header != path:
                continue
            if key is None:
                return number
            end = (
                self._headers[index + 1][0] - 1
                if index + 1 < len(self._headers)
                else len(self._lines)
            )
            name = re.escape(key)
            assignment = re.compile(rf"""^\s*(?:{name}|"{name}"|'{name}')\s*[=.]""")
            for n in range(number + 1, end + 1):
                if assignment.match(self._lines[n - 1]):
                    return n
            return number
        # Dotted keys or inline tables: fall back to the first line naming the key.
        needle = key if key is not None else path[-1]
        for number, line in enumerate(self._lines, start=1):
            if needle in line.split("#", 1)[0]:
                return number
        return None


def _header_path(line: str) -> tuple[str, ...] | None:
    try:
        parsed: Any = tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        name, parsed = next(iter(parsed.items()))
        path.append(name)
    return tuple(path) if path and parsed == {} else None
