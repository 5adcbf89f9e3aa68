"""The declarative policy in ``limits/``: which symbols exist and what limits apply.

A policy is one TOML file or a directory of them (read in name order). A
broken file is refused as a whole with the file, line and reason; whoever
loads it keeps the policy already in force.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.association.policy import (
    AssociationPolicy,
    AssociationSpecError,
    association_from_table,
)
from gateway.counters.limits import CounterPolicy
from gateway.counters.policy_files import CounterPolicyLoader, LimitSpecError
from gateway.model import SymbolSpec
from gateway.policy_limits import (
    SYMBOL_LIMIT_KEYS,
    bracket_row_line,
    product_from_table,
    symbol_limits_from_table,
)
from gateway.symbol_limits import LimitsError, ProductSpec
from gateway.validation import PRODUCT_RE, PRODUCT_RULE, SYMBOL_RE, SYMBOL_RULE


class PolicyError(ValueError):
    """A policy file that cannot be used: names the file, the line (when known) and why."""

    def __init__(self, path: pathlib.Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Policy:
    symbols: Mapping[str, SymbolSpec] = field(default_factory=dict)
    #: Settings per product (``[[product]]``): program trading, reference-price staleness.
    products: Mapping[str, ProductSpec] = field(default_factory=dict)
    #: Short content hash of the files, recorded with decisions.
    version: str = "empty"
    sources: tuple[pathlib.Path, ...] = ()
    #: Behavioural limits (``[counters]``, ``[limits.*]``; see :mod:`gateway.counters`).
    counters: CounterPolicy = field(default_factory=CounterPolicy)
    #: The file or directory this policy was loaded from (watched for changes).
    root: pathlib.Path | None = None
    #: When shared devices and IPs raise a suspicion (``[association]``).
    association: AssociationPolicy = field(default_factory=AssociationPolicy)


def policy_files(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.toml") if p.is_file())
    if path.is_file():
        return [path]
    raise PolicyError(path, None, "no such policy file or directory")


def load_policy(path: str | pathlib.Path) -> Policy:
    root = pathlib.Path(path)
    files = policy_files(root)
    digest = hashlib.sha256()
    symbols: dict[str, SymbolSpec] = {}
    products: dict[str, ProductSpec] = {}
    counters = CounterPolicyLoader()
    association: AssociationPolicy | None = None
    for file in files:
        text = file.read_text(encoding="utf-8")
        digest.update(file.name.encode() + b"\0" + text.encode() + b"\0")
        try:
            document = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(file, _toml_error_line(exc), f"not valid TOML: {exc}") from None
        _check_keys(file, text, document, _TOP_LEVEL, "top level")
        if "association" in document:
            if association is not None:
                raise PolicyError(
                    file, _line_of(text, "[association]"), "association: declared twice"
                )
            try:
                association = association_from_table(document["association"], text)
            except AssociationSpecError as exc:
                raise PolicyError(file, exc.line, exc.reason) from None
        try:
            counters.add(document, text)
        except LimitSpecError as exc:
            raise PolicyError(file, exc.line, exc.reason) from None
        for index, entry in enumerate(_table_array(file, text, document, "product")):
            product = _product_spec(file, text, entry, index)
            if product.product in products:
                raise PolicyError(
                    file,
                    _locate(text, "product", index, "product"),
                    f"product {product.product} declared twice",
                )
            products[product.product] = product
        for index, entry in enumerate(_table_array(file, text, document, "symbol")):
            spec = _symbol_spec(file, text, entry, index)
            if spec.symbol in symbols:
                raise PolicyError(
                    file,
                    _locate(text, "symbol", index, "symbol"),
                    f"symbol {spec.symbol} declared twice",
                )
            symbols[spec.symbol] = spec
    return Policy(
        symbols=symbols,
        products=products,
        version=digest.hexdigest()[:12],
        sources=tuple(files),
        counters=counters.build(),
        root=root,
        association=association or AssociationPolicy(),
    )


def _symbol_spec(file: pathlib.Path, text: str, entry: dict[str, Any], index: int) -> SymbolSpec:
    where = f"symbol[{index}]"

    def fail(key: str, reason: str) -> PolicyError:
        return PolicyError(file, _locate(text, "symbol", index, key), f"{where}.{key}: {reason}")

    for key in entry:
        if key not in _SYMBOL_KEYS and key not in SYMBOL_LIMIT_KEYS:
            allowed = ", ".join((*_SYMBOL_KEYS, *SYMBOL_LIMIT_KEYS))
            raise fail(key, f"unknown key (allowed: {allowed})")
    values: dict[str, str] = {}
    for name in _SYMBOL_KEYS:
        value = entry.get(name)
        if not isinstance(value, str) or not value:
            raise fail(name, "required string")
        values[name] = value
    if not SYMBOL_RE.fullmatch(values["symbol"]):
        raise fail("symbol", SYMBOL_RULE)
    if not PRODUCT_RE.fullmatch(values["product"]):
        raise fail("product", PRODUCT_RULE)
    try:
        limits = symbol_limits_from_table(entry)
    except LimitsError as exc:
        key, reason = exc.errors[0]
        line = _locate(text, "symbol", index, key.split("[", 1)[0])
        if key.startswith("leverage_brackets["):
            line = bracket_row_line(text, line, int(key.split("[", 1)[1].split("]", 1)[0]))
        raise PolicyError(file, line, f"{where}.{key}: {reason}") from None
    return SymbolSpec(**values, limits=limits)


def _product_spec(file: pathlib.Path, text: str, entry: dict[str, Any], index: int) -> ProductSpec:
    try:
        return product_from_table(entry)
    except LimitsError as exc:
        key, reason = exc.errors[0]
        line = _locate(text, "product", index, key)
        raise PolicyError(file, line, f"product[{index}].{key}: {reason}") from None


_SYMBOL_KEYS = ("symbol", "product", "base_asset", "quote_asset")
_TOP_LEVEL = {"symbol", "product", "counters", "limits", "association"}


def _table_array(
    file: pathlib.Path, text: str, document: dict[str, Any], name: str
) -> list[dict[str, Any]]:
    value = document.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PolicyError(
            file, _line_of(text, name), f"{name}: must be an array of tables [[{name}]]"
        )
    return value


def _check_keys(
    file: pathlib.Path, text: str, table: Mapping[str, Any], allowed: set[str], where: str
) -> None:
    for key in table:
        if key not in allowed:
            raise PolicyError(
                file,
                _line_of(text, key),
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})",
            )


_LINE_IN_MESSAGE = re.compile(r"line (\d+)")


def _toml_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    match = _LINE_IN_MESSAGE.search(str(exc))
    return int(match.group(1)) if match else None


def _locate(text: str, table: str, index: int, key: str) -> int | None:
    """Line of ``key`` inside the ``index``-th ``[[table]]`` (or of its header when absent).

    TOML parsers keep no positions, so the text is scanned: good enough to point
    an operator at the right place.
    """
    header = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
    any_header = re.compile(r"^\s*\[")
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines, start=1) if header.match(line)]
    if index >= len(starts):
        return None
    start = starts[index]
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if any_header.match(line):
            break
        if assignment.match(line):
            return number
    return start


def _line_of(text: str, needle: str) -> int | None:
    """Best-effort line of the first line that mentions ``needle`` (TOML keeps no positions)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line.split("#", 1)[0]:
            return number
    return None
