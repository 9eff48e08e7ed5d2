"""Black and white lists per tenant, for callers and for destinations (pure, no I/O).

An entry is a prefix (`"0899"` matches every number starting 0899), an exact number (`"=112"`
matches 112 only) or `all` (every number, including an anonymous caller). A number is blocked when
it matches the black list and does not match the white list: the white list wins, so it names the
exceptions (`black: [all], white: ["0800"]` allows only 0800 numbers). Entries are written as the
number is after the plan's `+` normalization (`0033...`, not `+33...`). A caller without a number
(empty, `anonymous`, any text with a letter) only matches `all`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ALL = "all"
_ENTRY = re.compile(r"=?[0-9*#]{1,28}")


class ScreenList:
    """One black or white list: prefixes, exact numbers, or `all`."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(entries)
        self._all = False
        self._exact: set[str] = set()
        self._prefixes: set[str] = set()
        for entry in self.entries:
            if entry == ALL:
                self._all = True
            elif not _ENTRY.fullmatch(entry):
                hint = (" (write it as dialled after the plan's '+' normalization, e.g. 0033...)"
                        if entry.startswith(("+", "=+")) else "")
                raise ValueError(f"'{entry}' is not a screening entry: digits for a prefix, '=' and digits "
                                 f"for one exact number, or 'all'{hint}")
            elif entry.startswith("="):
                self._exact.add(entry[1:])
            else:
                self._prefixes.add(entry)
        self._widths = tuple(sorted({len(p) for p in self._prefixes}, reverse=True))

    def match(self, number: str) -> str | None:
        """The entry that matches `number` ("" for an anonymous caller), or None."""
        if number in self._exact:
            return "=" + number
        for width in self._widths:
            if width <= len(number) and number[:width] in self._prefixes:
                return number[:width]
        return ALL if self._all else None

    def __bool__(self) -> bool:
        return bool(self.entries)


@dataclass(frozen=True, slots=True)
class Lists:
    black: ScreenList = field(default_factory=ScreenList)
    white: ScreenList = field(default_factory=ScreenList)

    def blocked_by(self, number: str) -> str | None:
        """The black-list entry that blocks `number`, unless the white list lets it through."""
        entry = self.black.match(number)
        if entry is None or self.white.match(number) is not None:
            return None
        return entry


@dataclass(frozen=True, slots=True)
class TenantScreening:
    callers: Lists = field(default_factory=Lists)
    destinations: Lists = field(default_factory=Lists)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a call is refused: which side (`caller` / `destination`) and the black-list entry."""

    by: str
    entry: str


class Screening:
    def __init__(self, tenants: Mapping[str, TenantScreening] | None = None) -> None:
        self.tenants = dict(tenants or {})

    def screen(self, tenant: str, caller: str, destination: str) -> Verdict | None:
        """Screen a normalized caller ("" = anonymous) and destination; None means allowed.

        The caller is screened first: a refused caller is refused whatever it dials. A tenant
        without lists screens nothing.
        """
        lists = self.tenants.get(tenant)
        if lists is None:
            return None
        entry = lists.callers.blocked_by(caller)
        if entry is not None:
            return Verdict("caller", entry)
        entry = lists.destinations.blocked_by(destination)
        if entry is not None:
            return Verdict("destination", entry)
        return None
