"""Dates and named holiday calendars (pure parsing and matching).

Date formats (checked at load time, errors say what was expected): a list of `YYYY-MM-DD` (once)
or `MM-DD` (every year), each optionally a range `A..B` (inclusive; yearly ranges may wrap the new
year: `12-24..01-02`). The `route` node's `dates:` condition and the site's `holidays:` calendars
share this syntax (switchctl/flows/timecond.py re-exports `DateRange` and `parse_dates`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

_FULL_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_YEARLY_DATE = re.compile(r"(\d{2})-(\d{2})")


@dataclass(frozen=True, slots=True)
class DateRange:
    """Inclusive range of dates; `yearly` ranges compare (month, day) only and may wrap the year."""

    start: tuple[int, int, int]  # (year, month, day); year 0 when yearly
    end: tuple[int, int, int]
    yearly: bool

    def contains(self, day: dt.date) -> bool:
        if not self.yearly:
            return self.start <= (day.year, day.month, day.day) <= self.end
        md = (0, day.month, day.day)
        if self.start <= self.end:
            return self.start <= md <= self.end
        return md >= self.start or md <= self.end


def _date(item: object) -> tuple[tuple[int, int, int], bool]:
    if isinstance(item, dt.date):  # YAML turns unquoted 2024-12-25 into a date
        return (item.year, item.month, item.day), False
    text = str(item).strip()
    m = _FULL_DATE.fullmatch(text)
    if m:
        y, mo, d = (int(g) for g in m.groups())
        try:
            dt.date(y, mo, d)
        except ValueError:
            raise ValueError(f"'{text}' is not a valid date") from None
        return (y, mo, d), False
    m = _YEARLY_DATE.fullmatch(text)
    if m:
        mo, d = int(m.group(1)), int(m.group(2))
        try:
            dt.date(2000, mo, d)  # a leap year, so 02-29 is accepted
        except ValueError:
            raise ValueError(f"'{text}' is not a valid date") from None
        return (0, mo, d), True
    raise ValueError(f"'{text}' is not a date (expected YYYY-MM-DD or MM-DD, optionally A..B)")


def parse_date_item(item: object) -> DateRange:
    """One date or `A..B` range."""
    if isinstance(item, str) and ".." in item:
        first, _, last = item.partition("..")
        (a, ya), (b, yb) = _date(first), _date(last)
        if ya != yb:
            raise ValueError(f"'{item}': both ends must be YYYY-MM-DD or both MM-DD")
        if not ya and a > b:
            raise ValueError(f"'{item}': the range ends before it starts")
        return DateRange(a, b, ya)
    a, yearly = _date(item)
    return DateRange(a, a, yearly)


def parse_dates(value: object) -> tuple[DateRange, ...]:
    items = [value] if isinstance(value, (str, dt.date)) else value
    if not isinstance(items, list) or not items:
        raise ValueError("dates must be a date or a list of dates")
    return tuple(parse_date_item(item) for item in items)


@dataclass(frozen=True, slots=True)
class HolidayCalendar:
    """A named set of days (public holidays, closing days) that `route` rules can test."""

    name: str
    days: tuple[DateRange, ...]

    def contains(self, day: dt.date) -> bool:
        return any(r.contains(day) for r in self.days)

    @classmethod
    def parse(cls, name: str, items: Sequence[object]) -> HolidayCalendar:
        return cls(name, parse_dates(list(items)))
