"""Prepaid rating (pure): rate tables by destination prefix, and the cost of a call.

- A `Rate` prices an answered duration in µs: connect fee + price per minute × billed time, where the
  billed time is the duration raised to the minimum duration, then to the initial block, then to whole
  increments (61 s on 60/60 bills 120 s). The total is rounded once, to the currency's minor unit.
- `Rate.max_duration(credit)` is the inverse, found by searching over `Rate.cost` itself so the two
  can never disagree on rounding, blocks or connect fee (A2Billing #22).
- A `RateTable` belongs to one (tenant, account class); it maps digit prefixes to rates, longest
  prefix wins; a prefix may have time-of-day / day-of-week variants (`TimeBand`) evaluated at the
  call's start time in the table's timezone. The whole call is rated at the band in force when it
  started (no split at a band boundary).
- A `RateBook` holds all tables and picks the one for (tenant, class), falling back per destination
  to (tenant, "default") then ("default", "default").
See docs/RATING.md for the product rules and why they were chosen.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from switchctl.billing.money import Currency, CurrencyMismatch, Money, Rounding, divide_rounded

DEFAULT = "default"  # the tenant / account class used when nothing more specific exists
DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
FULL_WEEK = (1 << MINUTES_PER_WEEK) - 1
US_PER_S = 1_000_000
US_PER_MINUTE = 60 * US_PER_S
MAX_BLOCK_S = 86_400
MAX_PREFIX_DIGITS = 32
DEFAULT_CEILING_US = 24 * 3600 * US_PER_S  # max_duration never allows more than a day by default

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HHMM = re.compile(r"(\d{2}):(\d{2})")


class RateTableError(ValueError):
    """A row that cannot go into a table (duplicate, overlapping band, gap, currency mismatch)."""

    def __init__(self, row: RateRow, message: str, other: RateRow | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.other = other


class NoRate(LookupError):
    """No table in the (tenant, class) chain has a prefix of the destination: the call is refused."""


# --------------------------------------------------------------------------------------------------
# Time bands


def week_minute_name(minute: int) -> str:
    day, rest = divmod(minute, MINUTES_PER_DAY)
    return f"{DAY_NAMES[day]} {rest // 60:02d}:{rest % 60:02d}"


def _parse_minute(text: str, *, end: bool) -> int:
    m = _HHMM.fullmatch(text)
    if not m:
        raise ValueError(f"'{text}' is not a time (expected HH:MM)")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if end and (hours, minutes) == (24, 0):
        return MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        raise ValueError(f"'{text}' is not a time of day")
    return hours * 60 + minutes


def _parse_days(token: str) -> list[int]:
    days: list[int] = []
    for part in token.split(","):
        names = part.split("-")
        if len(names) > 2 or any(n not in DAY_NAMES for n in names):
            raise ValueError(f"'{part}' is not a day or day range (expected like mon-fri or sat,sun)")
        first, last = DAY_NAMES.index(names[0]), DAY_NAMES.index(names[-1])
        span = (last - first) % 7  # ranges may wrap the week: fri-mon
        days.extend((first + i) % 7 for i in range(span + 1))
    return sorted(set(days))


def _parse_ranges(token: str) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for part in token.split(","):
        ends = part.split("-")
        if len(ends) != 2:
            raise ValueError(f"'{part}' is not a time range (expected HH:MM-HH:MM)")
        start, stop = _parse_minute(ends[0], end=False), _parse_minute(ends[1], end=True)
        if start == stop:
            raise ValueError(f"time range '{part}' is empty (leave the time out for the whole day)")
        ranges.append((start, stop))
    return ranges


@dataclass(frozen=True, slots=True)
class TimeBand:
    """A set of week minutes, written `[days] [times]`: `mon-fri 08:00-20:00`, `sat,sun`,
    `20:00-08:00`, `mon-fri 08:00-12:00,14:00-18:00`.

    Days and times are independent, as in route conditions and FreeSWITCH's wday/time-of-day: a
    range that wraps midnight stays inside each listed day (`fri 22:00-02:00` is Friday 00:00-02:00
    and 22:00-24:00). `mask` has bit m set for week minute m (Monday 00:00 is minute 0).
    """

    spec: str
    mask: int = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> TimeBand:
        tokens = text.strip().lower().split()
        if not tokens:
            raise ValueError("time band is empty")
        days: list[int] | None = None
        ranges: list[tuple[int, int]] | None = None
        for token in tokens:
            if token[0].isdigit():
                if ranges is not None:
                    raise ValueError(f"time band '{text}' has two time lists (join them with commas)")
                ranges = _parse_ranges(token)
            else:
                if days is not None:
                    raise ValueError(f"time band '{text}' has two day lists (join them with commas)")
                days = _parse_days(token)
        day_list = days if days is not None else list(range(7))
        range_list = ranges if ranges is not None else [(0, MINUTES_PER_DAY)]
        mask = 0
        for day in day_list:
            base = day * MINUTES_PER_DAY
            for start, stop in range_list:
                pieces = [(start, stop)] if start < stop else [(start, MINUTES_PER_DAY), (0, stop)]
                for lo, hi in pieces:
                    mask |= ((1 << (hi - lo)) - 1) << (base + lo)
        return cls(" ".join(tokens), mask)

    def contains(self, week_minute: int) -> bool:
        return (self.mask >> week_minute) & 1 == 1

    @property
    def first_minute(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1


def week_minute(at_us: int, zone: dt.tzinfo) -> int:
    """Minute of the week (Monday 00:00 = 0) of the instant `at_us` (epoch µs) in `zone`."""
    local = dt.datetime.fromtimestamp(at_us // US_PER_S, zone)  # integer seconds: no float
    return local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute


# --------------------------------------------------------------------------------------------------
# Rate


@dataclass(frozen=True, slots=True)
class Rate:
    """How one destination is priced. Blocks are whole seconds; durations are µs.

    billed(d) = 0                                 if d == 0 and minimum == 0 (connect fee only)
              = initial                           if max(d, minimum) <= initial
              = initial + ⌈(max(d, minimum) − initial) / increment⌉ × increment   otherwise
    cost(d)   = round_to_minor_unit(connect_fee + per_minute × billed(d) / 60 s, rounding)
    """

    per_minute: Money
    connect_fee: Money
    initial_s: int
    increment_s: int
    minimum_s: int = 0
    rounding: Rounding = Rounding.UP
    _init_us: int = field(init=False, repr=False, compare=False)
    _inc_us: int = field(init=False, repr=False, compare=False)
    _min_us: int = field(init=False, repr=False, compare=False)
    _per_minute: int = field(init=False, repr=False, compare=False)
    _connect_num: int = field(init=False, repr=False, compare=False)
    _den: int = field(init=False, repr=False, compare=False)
    _step: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.per_minute.currency != self.connect_fee.currency:
            raise CurrencyMismatch(
                f"price per minute is in {self.per_minute.currency}, "
                f"connect fee in {self.connect_fee.currency}"
            )
        if self.per_minute.micros < 0 or self.connect_fee.micros < 0:
            raise ValueError("price per minute and connect fee cannot be negative")
        for name, value, low in (
            ("initial block", self.initial_s, 1),
            ("increment", self.increment_s, 1),
            ("minimum duration", self.minimum_s, 0),
        ):
            if type(value) is not int or not low <= value <= MAX_BLOCK_S:
                raise ValueError(f"{name} must be whole seconds in {low}..{MAX_BLOCK_S}, not {value!r}")
        if not isinstance(self.rounding, Rounding):
            raise TypeError(f"rounding must be a Rounding, not {self.rounding!r}")
        step = self.currency.micros_per_minor
        setattr_ = object.__setattr__
        setattr_(self, "_init_us", self.initial_s * US_PER_S)
        setattr_(self, "_inc_us", self.increment_s * US_PER_S)
        setattr_(self, "_min_us", self.minimum_s * US_PER_S)
        setattr_(self, "_per_minute", self.per_minute.micros)
        # Exact amount in minor units = (connect·60e6 + per_minute·billed_us) / (60e6 · step):
        # a single integer division, rounded once.
        setattr_(self, "_connect_num", self.connect_fee.micros * US_PER_MINUTE)
        setattr_(self, "_den", US_PER_MINUTE * step)
        setattr_(self, "_step", step)

    @property
    def currency(self) -> Currency:
        return self.per_minute.currency

    @property
    def increment_us(self) -> int:
        return self._inc_us

    def billed_us(self, duration_us: int) -> int:
        """The billed duration (µs) of an answered call that lasted `duration_us`."""
        if duration_us < 0:
            raise ValueError(f"duration cannot be negative ({duration_us} µs)")
        held = duration_us if duration_us > self._min_us else self._min_us
        if held == 0:
            return 0
        init = self._init_us
        if held <= init:
            return init
        inc = self._inc_us
        return init - ((init - held) // inc) * inc  # init + ceil((held - init) / inc) * inc

    def cost_micros(self, duration_us: int) -> int:
        """`cost` as plain micro-units (the hot path of rating and of `max_duration`)."""
        numerator = self._connect_num + self._per_minute * self.billed_us(duration_us)
        return divide_rounded(numerator, self._den, self.rounding) * self._step

    def cost(self, duration_us: int) -> Money:
        """What an answered call of `duration_us` costs, rounded to the minor unit."""
        return Money(self.cost_micros(duration_us), self.per_minute.currency)

    def max_duration(self, credit: Money, *, ceiling_us: int = DEFAULT_CEILING_US) -> int:
        """The longest answered duration (µs) whose `cost` fits in `credit`, at most `ceiling_us`.

        0 means refused: the credit does not cover the connect fee and the first billed block. For a
        result 0 < d < ceiling_us: cost(d) <= credit < cost(d + 1 µs) — d is the end of the last
        fully paid increment. Found by binary search over the block boundaries using `cost` itself.
        """
        if credit.currency != self.currency:
            raise CurrencyMismatch(f"credit is in {credit.currency}, the rate in {self.currency}")
        if ceiling_us < 1:
            raise ValueError("ceiling must be at least 1 µs")
        budget = credit.micros
        cost = self.cost_micros
        if cost(1) > budget:
            return 0
        init, inc = self._init_us, self._inc_us
        if init > ceiling_us:
            return ceiling_us  # cost(ceiling) == cost(1 µs), already known to fit
        # Boundaries b_k = init + k·inc, 0 <= k <= k_max; cost(b_0) == cost(1 µs) <= budget.
        lo, hi = 0, (ceiling_us - init) // inc
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cost(init + mid * inc) <= budget:
                lo = mid
            else:
                hi = mid - 1
        best = init + lo * inc
        if best < ceiling_us and cost(ceiling_us) <= budget:
            return ceiling_us
        return best


# --------------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True, slots=True)
class RateRow:
    """One priced destination: a row of the rate CSV."""

    tenant: str
    account_class: str
    prefix: str
    description: str
    rate: Rate
    band: TimeBand | None = None  # None: any time not covered by a band of the same prefix


class _Banded:
    """The rows of a prefix that has time-band variants."""

    __slots__ = ("default", "bands")

    def __init__(self) -> None:
        self.default: RateRow | None = None
        self.bands: list[RateRow] = []

    def rows(self) -> list[RateRow]:
        return [self.default] if self.default else []

    def pick(self, minute: int) -> RateRow | None:
        for row in self.bands:
            if (row.band.mask >> minute) & 1:  # type: ignore[union-attr]
                return row
        return self.default


def _check_name(row: RateRow, what: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise RateTableError(row, f"{what} '{value}' must be letters, digits, '_', '.' or '-'")


def zone_named(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone '{name}' (expected an IANA name like Europe/Paris)") from None


class RateTableBuilder:
    """Collects the rows of one (tenant, class) table, refusing each bad row as it comes."""

    def __init__(self, tenant: str, account_class: str, timezone: str = "UTC") -> None:
        self.tenant = tenant
        self.account_class = account_class
        self.timezone = timezone
        self.zone = zone_named(timezone)
        self.currency: Currency | None = None
        self._index: dict[str, RateRow | _Banded] = {}
        self._first: dict[str, RateRow] = {}  # first row of each banded prefix, for gap errors

    def add(self, row: RateRow) -> None:
        _check_name(row, "tenant", row.tenant)
        _check_name(row, "account class", row.account_class)
        if (row.tenant, row.account_class) != (self.tenant, self.account_class):
            raise RateTableError(
                row, f"row of ({row.tenant}, {row.account_class}) added to table "
                f"({self.tenant}, {self.account_class})"
            )
        prefix = row.prefix
        if not prefix or not (prefix.isascii() and prefix.isdigit()):
            raise RateTableError(row, f"prefix '{prefix}' must be digits only (no '+', spaces or letters)")
        if len(prefix) > MAX_PREFIX_DIGITS:
            raise RateTableError(row, f"prefix '{prefix}' is longer than {MAX_PREFIX_DIGITS} digits")
        if self.currency is None:
            self.currency = row.rate.currency
        elif row.rate.currency != self.currency:
            raise RateTableError(
                row, f"rate in {row.rate.currency} but table ({self.tenant}, {self.account_class}) "
                f"is in {self.currency}"
            )
        existing = self._index.get(prefix)
        if row.band is None and not isinstance(existing, _Banded):
            if existing is not None:
                raise RateTableError(row, f"duplicate prefix {prefix}", existing)
            self._index[prefix] = row
            return
        if existing is None:
            existing = _Banded()
            self._index[prefix] = existing
        elif not isinstance(existing, _Banded):  # a plain row exists: it becomes the band default
            plain, existing = existing, _Banded()
            existing.default = plain
            self._index[prefix] = existing
        if row.band is None:
            if existing.default is not None:
                raise RateTableError(row, f"duplicate prefix {prefix} (no time band)", existing.default)
            existing.default = row
            return
        for other in existing.bands:
            overlap = other.band.mask & row.band.mask  # type: ignore[union-attr]
            if overlap:
                first = (overlap & -overlap).bit_length() - 1
                same = other.band.spec == row.band.spec  # type: ignore[union-attr]
                what = "duplicate prefix" if same else "overlapping time bands for prefix"
                raise RateTableError(
                    row, f"{what} {prefix}: '{row.band.spec}' and '{other.band.spec}' "  # type: ignore[union-attr]
                    f"both cover {week_minute_name(first)}", other,
                )
        existing.bands.append(row)
        self._first.setdefault(prefix, row)

    def gaps(self) -> list[RateTableError]:
        """Banded prefixes without a row for some minute of the week (the table cannot be built)."""
        errors = []
        for prefix, entry in self._index.items():
            if isinstance(entry, _Banded) and entry.default is None:
                covered = 0
                for row in entry.bands:
                    covered |= row.band.mask  # type: ignore[union-attr]
                missing = FULL_WEEK & ~covered
                if missing:
                    first = (missing & -missing).bit_length() - 1
                    errors.append(RateTableError(
                        self._first[prefix],
                        f"prefix {prefix} has no rate for {week_minute_name(first)} "
                        f"({self.timezone}); add a row without time band or a band covering it",
                    ))
        return errors

    def build(self) -> RateTable:
        gaps = self.gaps()
        if gaps:
            raise gaps[0]
        if self.currency is None:
            raise ValueError(f"table ({self.tenant}, {self.account_class}) has no rows")
        for entry in self._index.values():
            if isinstance(entry, _Banded):
                entry.bands.sort(key=lambda r: r.band.first_minute)  # type: ignore[union-attr]
        return RateTable(self.tenant, self.account_class, self.timezone, self.currency, self._index)


class RateTable:
    """The rates of one (tenant, account class): longest-prefix match on digit strings.

    One dict holds every prefix; a lookup probes the prefix lengths present in the table, longest
    first (at most a dozen dict probes for real tables; measured faster than a trie in Python, see
    bench/rating.py).
    """

    __slots__ = ("tenant", "account_class", "timezone", "zone", "currency", "_index", "_lengths")

    def __init__(
        self, tenant: str, account_class: str, timezone: str, currency: Currency,
        index: dict[str, RateRow | _Banded],
    ) -> None:
        self.tenant = tenant
        self.account_class = account_class
        self.timezone = timezone
        self.zone = zone_named(timezone)
        self.currency = currency
        self._index = index
        self._lengths = tuple(sorted({len(p) for p in index}, reverse=True))

    @classmethod
    def from_rows(
        cls, tenant: str, account_class: str, rows: Iterable[RateRow], timezone: str = "UTC"
    ) -> RateTable:
        builder = RateTableBuilder(tenant, account_class, timezone)
        for row in rows:
            builder.add(row)
        return builder.build()

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.account_class)

    def __len__(self) -> int:
        return len(self._index)

    def find(self, number: str, at_us: int) -> RateRow | None:
        """The row of the longest prefix of `number` (digits), for a call starting at `at_us`."""
        index = self._index
        size = len(number)
        for length in self._lengths:
            if length <= size:
                hit = index.get(number[:length])
                if hit is not None:
                    if hit.__class__ is _Banded:
                        return hit.pick(week_minute(at_us, self.zone))  # type: ignore[union-attr]
                    return hit  # type: ignore[return-value]
        return None

    def rows(self) -> Iterator[RateRow]:
        """Every row in canonical order: by prefix, the band-less row first, then bands by start."""
        for prefix in sorted(self._index):
            entry = self._index[prefix]
            if isinstance(entry, _Banded):
                yield from entry.rows()
                yield from entry.bands
            else:
                yield entry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateTable):
            return NotImplemented
        return (self.key, self.timezone, self.currency) == (other.key, other.timezone, other.currency) \
            and list(self.rows()) == list(other.rows())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RateTable({self.tenant!r}, {self.account_class!r}, {len(self)} prefixes, {self.currency})"


class RateBook:
    """All rate tables of a site, and the (tenant, class) → table fallback rule.

    For a destination, the tables (tenant, class), (tenant, "default"), ("default", "default") are
    tried in that order and the first that has *any* prefix of the number decides (its longest
    prefix). So a class table overrides the default for the destinations it lists and inherits the
    rest. Tables of one chain must share a currency (an account has one).
    """

    def __init__(self, tables: Iterable[RateTable]) -> None:
        self._tables: dict[tuple[str, str], RateTable] = {}
        for table in tables:
            if table.key in self._tables:
                raise ValueError(f"two tables for tenant '{table.tenant}', class '{table.account_class}'")
            self._tables[table.key] = table
        for table in self._tables.values():
            for other in self.chain(table.tenant, table.account_class):
                if other.currency != table.currency:
                    raise CurrencyMismatch(
                        f"table ({table.tenant}, {table.account_class}) is in {table.currency} but "
                        f"falls back to ({other.tenant}, {other.account_class}) in {other.currency}"
                    )

    def tables(self) -> list[RateTable]:
        return [self._tables[key] for key in sorted(self._tables)]

    def table(self, tenant: str, account_class: str) -> RateTable | None:
        return self._tables.get((tenant, account_class))

    def chain(self, tenant: str, account_class: str) -> tuple[RateTable, ...]:
        keys = ((tenant, account_class), (tenant, DEFAULT), (DEFAULT, DEFAULT))
        found: list[RateTable] = []
        for key in keys:
            table = self._tables.get(key)
            if table is not None and all(t is not table for t in found):
                found.append(table)
        return tuple(found)

    def find(
        self, number: str, *, at_us: int, tenant: str = DEFAULT, account_class: str = DEFAULT
    ) -> RateRow | None:
        """The row rating a call to `number` (digits, optional leading '+') starting at `at_us`
        (epoch µs; only time bands use it), or None when no table has a prefix of it."""
        digits = number[1:] if number.startswith("+") else number
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"destination '{number}' is not a number (digits, optional leading '+')")
        tables = self._tables
        for key in ((tenant, account_class), (tenant, DEFAULT), (DEFAULT, DEFAULT)):
            table = tables.get(key)
            if table is not None:
                row = table.find(digits, at_us)
                if row is not None:
                    return row
        return None

    def rate(
        self, number: str, *, at_us: int, tenant: str = DEFAULT, account_class: str = DEFAULT
    ) -> RateRow:
        """Like `find`, but a destination without a rate raises `NoRate`."""
        row = self.find(number, at_us=at_us, tenant=tenant, account_class=account_class)
        if row is None:
            raise NoRate(f"no rate for {number} (tenant '{tenant}', class '{account_class}')")
        return row

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateBook):
            return NotImplemented
        return self.tables() == other.tables()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RateBook({len(self._tables)} tables)"
