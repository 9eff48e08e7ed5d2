"""Time-of-day, weekday and date conditions of `route` rules (pure parsing and matching).

Formats (all checked at load time, errors say what was expected):
- time: `"08:00-18:00"`, several ranges comma-separated (`"08:00-12:00,14:00-18:00"`) or a list;
  the end is exclusive, `24:00` is allowed as an end, and a range may wrap midnight (`22:00-06:00`).
- days: `mon-fri`, `sat,sun`, a list (`[mon, wed-fri]`); ranges may wrap (`fri-mon`).
- dates: a list of `YYYY-MM-DD` (once) or `MM-DD` (every year), each optionally a range `A..B`
  (inclusive; yearly ranges may wrap the new year: `12-24..01-02`); parsed by
  switchctl/numbering/dates.py, shared with the site's holiday calendars.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Dates are shared with the site's holiday calendars, which live in the numbering package.
from switchctl.numbering.dates import DateRange, parse_dates

__all__ = ["DAY_NAMES", "DateRange", "TimeRange", "parse_dates", "parse_days", "parse_time_ranges"]

DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HHMM = re.compile(r"(\d{1,2}):(\d{2})")


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: int  # minutes since midnight, inclusive
    end: int  # minutes since midnight, exclusive (1440 = end of day)

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # wraps midnight


def _minutes(text: str, *, allow_24: bool) -> int:
    m = _HHMM.fullmatch(text.strip())
    if not m:
        raise ValueError(f"'{text.strip()}' is not a time (expected HH:MM)")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise ValueError(f"'{text.strip()}' is not a valid time of day")
    return hours * 60 + minutes


def parse_time_ranges(value: str | Sequence[str]) -> tuple[TimeRange, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    ranges = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"time range must be text like \"08:00-18:00\", got {item!r}")
        start, dash, end = item.partition("-")
        if not dash:
            raise ValueError(f"'{item.strip()}' is not a time range (expected HH:MM-HH:MM)")
        r = TimeRange(_minutes(start, allow_24=False), _minutes(end, allow_24=True))
        if r.start == r.end:
            raise ValueError(f"time range '{item.strip()}' is empty (start equals end)")
        ranges.append(r)
    if not ranges:
        raise ValueError("time range is empty")
    return tuple(ranges)


_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str) -> int:
    """A weekday from its three-letter or full English name (Monday = 0)."""
    key = name.strip().lower()
    for index, (short, full) in enumerate(zip(DAY_NAMES, _FULL_DAY_NAMES)):
        if key in (short, full):
            return index
    raise ValueError(f"'{name.strip()}' is not a day (use {', '.join(DAY_NAMES)})")


def parse_days(value: str | Sequence[str]) -> frozenset[int]:
    """Weekday numbers (Monday = 0) from `mon-fri`, `sat,sun` or a list of those."""
    items = value.split(",") if isinstance(value, str) else list(value)
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"day must be a name like 'mon', got {item!r}")
        first, dash, last = item.partition("-")
        a = _day(first)
        b = _day(last) if dash else a
        d = a
        while True:
            days.add(d)
            if d == b:
                break
            d = (d + 1) % 7
    if not days:
        raise ValueError("days is empty")
    return frozenset(days)
