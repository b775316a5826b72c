"""Schemas: what a dataset's columns are, their public bounds and how they may be used.

A schema is public: every party knows it, and it is part of a computation's
spec. It states per column:

* ``type``: ``int`` (64-bit integers), ``fixed`` (reals in the fixed-point
  codec's range), ``bool``, ``category`` (strings from a public ``domain``) or
  ``key`` (integers identifying an entity, for joins and distinct counts);
* ``low``/``high``: public bounds, checked on load; they let the planner prove
  that sums stay in range;
* ``nullable``: whether missing values are allowed;
* ``unique``: for keys, whether a value may appear once only;
* ``decimals``: for fixed columns, the number of decimal places the values
  have (money in cents: ``decimals = 2``); every row is checked, and sums of
  the column are exact to that many places;
* ``usage``: what queries may do with the column (``filter``, ``group``,
  ``aggregate``, ``join``); anything else is refused at planning time.
  ``usage = "ignore"`` declares a column of the data file that is dropped
  when the file is loaded (it needs no type and is never read); any other
  column of a file that the schema does not list is refused.

Key columns (``type = "key"``) identify people or entities: a query may only
join on them or count them (``COUNT``, ``COUNT(DISTINCT ...)``); they are never
output, grouped by, filtered on or otherwise aggregated.

A table may also state ``max_rows``, the most rows one owner holds (default
:data:`DEFAULT_MAX_ROWS`; checked on load): with the bounds it decides how
values are encoded so that sums fit, and which division a query needs.

Schemas load from a mapping or TOML::

    [tables.admissions]
    max_rows = 1000000
    [tables.admissions.columns.age]
    type = "int"
    low = 0
    high = 120
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concilium.errors import ConfigurationError

__all__ = ["DEFAULT_MAX_ROWS", "IGNORE", "USAGES", "Column", "ColumnType", "Schema",
           "load_schemas"]

USAGES = frozenset({"filter", "group", "aggregate", "join"})
IGNORE = "ignore"
#: The most rows one owner may hold when a schema states no ``max_rows``.
DEFAULT_MAX_ROWS = 1 << 24


class ColumnType(enum.StrEnum):
    INT = "int"
    FIXED = "fixed"
    BOOL = "bool"
    CATEGORY = "category"
    KEY = "key"


@dataclass(frozen=True)
class Column:
    """One column of a schema (public)."""

    name: str
    type: ColumnType
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    domain: tuple[str, ...] = ()
    unique: bool = False
    usage: frozenset[str] = USAGES
    decimals: int | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigurationError(f"column name {self.name!r} must be an identifier")
        if self.type is ColumnType.CATEGORY and not self.domain:
            raise ConfigurationError(
                f"category column {self.name!r} needs its public domain (the list of values)")
        if self.domain and self.type is not ColumnType.CATEGORY:
            raise ConfigurationError(f"only category columns have a domain ({self.name!r})")
        if len(set(self.domain)) != len(self.domain):
            raise ConfigurationError(f"the domain of {self.name!r} repeats a value")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ConfigurationError(f"column {self.name!r}: low bound above high bound")
        if self.unique and self.type is not ColumnType.KEY:
            raise ConfigurationError(f"only key columns can be unique ({self.name!r})")
        if self.decimals is not None and (self.type is not ColumnType.FIXED or not (
                isinstance(self.decimals, int) and 0 <= self.decimals <= 6)):
            raise ConfigurationError(f"column {self.name!r}: decimals (0 to 6) is for fixed "
                                     "columns")
        unknown = set(self.usage) - USAGES
        if unknown:
            raise ConfigurationError(
                f"column {self.name!r}: unknown usage {sorted(unknown)}; choose from "
                f"{sorted(USAGES)}")

    @property
    def public_domain(self) -> tuple[Any, ...] | None:
        """The values a group-by on this column can take, if public and small."""
        if self.type is ColumnType.CATEGORY:
            return self.domain
        if self.type is ColumnType.BOOL:
            return (False, True)
        if (self.type is ColumnType.INT and self.low is not None and self.high is not None
                and self.high - self.low < 10_000):
            return tuple(range(int(self.low), int(self.high) + 1))
        return None

    @classmethod
    def from_mapping(cls, name: str, spec: Mapping[str, Any]) -> Column:
        known = {"type", "low", "high", "nullable", "domain", "unique", "usage", "decimals"}
        extra = set(spec) - known
        if extra:
            raise ConfigurationError(f"column {name!r}: unknown settings {sorted(extra)}")
        try:
            kind = ColumnType(spec.get("type", ""))
        except ValueError:
            raise ConfigurationError(
                f"column {name!r}: type must be one of "
                f"{', '.join(t.value for t in ColumnType)}") from None
        usage = spec.get("usage", USAGES)
        if isinstance(usage, str) or not all(isinstance(u, str) for u in usage):
            raise ConfigurationError(f"column {name!r}: usage is a list such as "
                                     '["filter", "aggregate"], or "ignore"')
        return cls(name=name, type=kind, low=spec.get("low"), high=spec.get("high"),
                   nullable=bool(spec.get("nullable", False)),
                   domain=tuple(str(v) for v in spec.get("domain", ())),
                   unique=bool(spec.get("unique", False)),
                   usage=frozenset(usage), decimals=spec.get("decimals"))

    def as_mapping(self) -> dict[str, Any]:
        """The TOML/JSON form (what :meth:`from_mapping` reads)."""
        spec: dict[str, Any] = {"type": self.type.value}
        if self.low is not None:
            spec["low"] = self.low
        if self.high is not None:
            spec["high"] = self.high
        if self.nullable:
            spec["nullable"] = True
        if self.domain:
            spec["domain"] = list(self.domain)
        if self.unique:
            spec["unique"] = True
        if self.usage != USAGES:
            spec["usage"] = sorted(self.usage)
        if self.decimals is not None:
            spec["decimals"] = self.decimals
        return spec

    @property
    def bound(self) -> float | None:
        """The largest magnitude a value can have (public), if the bounds are stated."""
        if self.type is ColumnType.BOOL:
            return 1.0
        if self.type is ColumnType.CATEGORY:
            return float(len(self.domain))
        if self.low is None or self.high is None:
            return None
        return float(max(abs(self.low), abs(self.high)))


@dataclass(frozen=True)
class Schema:
    """The public description of one table: its columns, in order."""

    columns: tuple[Column, ...]
    ignored: tuple[str, ...] = ()  # columns of the data file that are dropped on load
    max_rows: int | None = None  # the most rows one owner holds (public)
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.columns:
            raise ConfigurationError("a schema needs at least one column")
        names = tuple(c.name for c in self.columns)
        every = [n.lower() for n in (*names, *self.ignored)]
        if len(set(every)) != len(every):
            raise ConfigurationError("column names repeat (names are case-insensitive in SQL)")
        object.__setattr__(self, "names", names)
        if self.max_rows is not None and not (isinstance(self.max_rows, int)
                                              and 0 < self.max_rows < 2**40):
            raise ConfigurationError("max_rows is a whole number of rows, 1 to 2^40")

    @property
    def rows_bound(self) -> int:
        """The most rows one owner may hold (stated, or the default)."""
        return self.max_rows if self.max_rows is not None else DEFAULT_MAX_ROWS

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name.lower() == name.lower():
                return column
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(c.name.lower() == name.lower()
                                             for c in self.columns)

    @classmethod
    def of(cls, columns: Iterable[Column]) -> Schema:
        return cls(tuple(columns))

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> Schema:
        """``{"columns": {name: {type: ..., ...}, ...}, "max_rows": n}`` or
        ``{name: {...}}``; a column with ``usage = "ignore"`` is dropped when data is
        loaded."""
        columns = spec.get("columns", spec)
        extra = set(spec) - {"columns", "max_rows", "owners"} if "columns" in spec else set()
        if extra:
            raise ConfigurationError(f"unknown table settings {sorted(extra)}; a table has "
                                     "columns and max_rows")
        if not isinstance(columns, Mapping) or not all(
                isinstance(c, Mapping) for c in columns.values()):
            raise ConfigurationError("a schema is a table of columns: [columns.<name>] "
                                     'sections with type = "int", "fixed", "bool", '
                                     '"category" or "key"')
        ignored = tuple(name for name, c in columns.items() if c.get("usage") == IGNORE)
        for name in ignored:
            if set(columns[name]) - {"usage", "type"}:
                raise ConfigurationError(f"column {name!r} is ignored; it takes no other "
                                         "settings")
        return cls(tuple(Column.from_mapping(name, c) for name, c in columns.items()
                         if name not in ignored), ignored,
                   spec.get("max_rows") if "columns" in spec else None)

    def as_mapping(self) -> dict[str, Any]:
        """``{"columns": {name: {type: ..., ...}}, "max_rows": n}`` (columns in order,
        ignored ones last; ``max_rows`` only if stated)."""
        columns = {c.name: c.as_mapping() for c in self.columns}
        columns.update({name: {"usage": IGNORE} for name in self.ignored})
        spec: dict[str, Any] = {"columns": columns}
        if self.max_rows is not None:
            spec["max_rows"] = self.max_rows
        return spec


def load_schemas(path: str | Path) -> dict[str, Schema]:
    """Table schemas from a TOML file with ``[tables.<name>.columns.<column>]`` sections."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read schemas from {path}: {error}") from None
    tables = document.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise ConfigurationError(f"{path} has no [tables.<name>] sections")
    return {name: Schema.from_mapping(spec) for name, spec in tables.items()}
