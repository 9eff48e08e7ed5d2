"""Rate tables as CSV: import with `file:line: message` errors, and canonical export.

One row per (tenant, class, prefix, time band); columns (header required, any order on import,
docs/RATING.md explains each):

    tenant,class,prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment,
    minimum,rounding,time_band,timezone

Required: prefix, currency, rate_per_minute, initial_block, increment. Empty optional cells take the
defaults tenant/class "default", connect_fee 0, minimum 0, rounding "up", no time band (any time),
timezone "UTC". Export writes every column in the order above, tables sorted by (tenant, class) and
rows by prefix, so `format_rates(parse_rates(x)) == x` for canonical `x`, and the same book always
exports the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from switchctl.billing.money import Currency, CurrencyMismatch, Money, Rounding, currency
from switchctl.billing.rating import (
    DEFAULT,
    Rate,
    RateBook,
    RateRow,
    RateTable,
    RateTableBuilder,
    RateTableError,
    TimeBand,
    zone_named,
)

COLUMNS: tuple[str, ...] = (
    "tenant", "class", "prefix", "description", "currency", "rate_per_minute", "connect_fee",
    "initial_block", "increment", "minimum", "rounding", "time_band", "timezone",
)
REQUIRED: frozenset[str] = frozenset({"prefix", "currency", "rate_per_minute", "initial_block", "increment"})
MAX_REPORTED = 100  # errors listed before giving up on a hopeless file
_SECONDS = re.compile(r"\d{1,6}")


@dataclass(frozen=True, slots=True)
class RateCsvIssue:
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class RateCsvError(ValueError):
    """Every problem found in a rate file, one `file:line: message` per line."""

    def __init__(self, issues: list[RateCsvIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class _TooMany(Exception):
    pass


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[RateCsvIssue] = []

    def error(self, line: int, message: str) -> None:
        self.issues.append(RateCsvIssue(self.source, line, message))
        if len(self.issues) >= MAX_REPORTED:
            self.issues.append(RateCsvIssue(self.source, line, "too many errors, stopped here"))
            raise _TooMany


def _seconds(cells: dict[str, str], column: str, default: int | None) -> int:
    text = cells.get(column, "")
    if text == "" and default is not None:
        return default
    if not _SECONDS.fullmatch(text):
        raise ValueError(f"{column} '{text}' is not whole seconds")
    return int(text)


def _amount(cells: dict[str, str], column: str, cur: Currency, default_zero: bool) -> Money:
    text = cells.get(column, "")
    if text == "" and default_zero:
        return Money(0, cur)
    try:
        value = Money.parse(text, cur)
    except ValueError as exc:
        raise ValueError(f"{column}: {exc}") from None
    if value.micros < 0:
        raise ValueError(f"{column} '{text}' is negative")
    return value


def _row(cells: dict[str, str]) -> tuple[RateRow, str]:
    """One CSV record → (row, timezone name); ValueError says what is wrong."""
    code = cells.get("currency", "")
    try:
        cur = currency(code)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    rate = Rate(
        per_minute=_amount(cells, "rate_per_minute", cur, default_zero=False),
        connect_fee=_amount(cells, "connect_fee", cur, default_zero=True),
        initial_s=_seconds(cells, "initial_block", None),
        increment_s=_seconds(cells, "increment", None),
        minimum_s=_seconds(cells, "minimum", 0),
        rounding=Rounding.parse(cells["rounding"]) if cells.get("rounding") else Rounding.UP,
    )
    band_text = cells.get("time_band", "")
    band = TimeBand.parse(band_text) if band_text else None
    row = RateRow(
        tenant=cells.get("tenant") or DEFAULT,
        account_class=cells.get("class") or DEFAULT,
        prefix=cells.get("prefix", ""),
        description=cells.get("description", ""),
        rate=rate,
        band=band,
    )
    zone = cells.get("timezone") or "UTC"
    zone_named(zone)  # an unknown zone is this row's error, whichever table it belongs to
    return row, zone


def parse_rates(text: str, source: str = "<rates>") -> RateBook:
    """Parse a whole rate CSV; raise `RateCsvError` listing every bad row."""
    reader = _Reader(source)
    try:
        return _parse(text, reader)
    except _TooMany:
        raise RateCsvError(reader.issues) from None


def _parse(text: str, reader: _Reader) -> RateBook:
    records = csv.reader(io.StringIO(text, newline=""), strict=True)
    builders: dict[tuple[str, str], RateTableBuilder] = {}
    table_line: dict[tuple[str, str], int] = {}
    row_line: dict[int, int] = {}  # id(row) → line, to point at the other row of a conflict
    header: list[str] | None = None
    last_line = 0
    try:
        for record in records:
            line, last_line = last_line + 1, records.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in record]
                unknown = [c for c in header if c not in COLUMNS]
                missing = sorted(REQUIRED - set(header))
                repeated = sorted({c for c in header if header.count(c) > 1})
                if unknown or missing or repeated:
                    parts = []
                    if unknown:
                        parts.append(f"unknown column(s) {', '.join(unknown)}")
                    if missing:
                        parts.append(f"missing column(s) {', '.join(missing)}")
                    if repeated:
                        parts.append(f"repeated column(s) {', '.join(repeated)}")
                    reader.error(line, "; ".join(parts) + f" (columns are: {','.join(COLUMNS)})")
                    raise RateCsvError(reader.issues)
                continue
            if len(record) != len(header):
                reader.error(line, f"{len(record)} cells, the header has {len(header)}")
                continue
            cells = {name: value.strip() for name, value in zip(header, record)}
            try:
                row, zone = _row(cells)
            except ValueError as exc:
                reader.error(line, str(exc))
                continue
            key = (row.tenant, row.account_class)
            builder = builders.get(key)
            if builder is None:
                try:
                    builder = RateTableBuilder(row.tenant, row.account_class, zone)
                except ValueError as exc:
                    reader.error(line, str(exc))
                    continue
            elif builder.timezone != zone:
                reader.error(
                    line, f"timezone '{zone}' differs from '{builder.timezone}' set for "
                    f"({row.tenant}, {row.account_class}) at line {table_line[key]}",
                )
                continue
            try:
                builder.add(row)
            except RateTableError as exc:
                where = f" (line {row_line[id(exc.other)]})" if exc.other is not None else ""
                reader.error(line, f"{exc}{where}")
                continue
            row_line[id(row)] = line
            builders.setdefault(key, builder)  # a table exists from its first accepted row on
            table_line.setdefault(key, line)
    except csv.Error as exc:
        reader.error(records.line_num, f"bad CSV: {exc}")
    if header is None:
        reader.error(1, f"no header (columns are: {','.join(COLUMNS)})")
    tables: list[RateTable] = []
    for key, builder in builders.items():
        gaps = builder.gaps()
        for gap in gaps:
            reader.error(row_line[id(gap.row)], str(gap))
        if not gaps and builder.currency is not None:
            tables.append(builder.build())
    if reader.issues:
        raise RateCsvError(sorted(reader.issues, key=lambda issue: issue.line))
    try:
        return RateBook(tables)
    except CurrencyMismatch as exc:
        reader.error(min(table_line.values()), str(exc))
        raise RateCsvError(reader.issues) from None


def load_rates(path: str | os.PathLike[str]) -> RateBook:
    """Read a rate CSV (UTF-8, an Excel BOM is accepted); errors name the file and line."""
    path = Path(path)
    return parse_rates(path.read_text(encoding="utf-8-sig"), str(path))


def format_rates(book: RateBook) -> str:
    """The canonical CSV text of `book` (all columns, sorted, "\\n" line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for table in book.tables():
        for row in table.rows():
            rate = row.rate
            writer.writerow((
                row.tenant, row.account_class, row.prefix, row.description, rate.currency.code,
                rate.per_minute.format(), rate.connect_fee.format(), rate.initial_s,
                rate.increment_s, rate.minimum_s, rate.rounding.value,
                row.band.spec if row.band else "", table.timezone,
            ))
    return out.getvalue()


def save_rates(book: RateBook, path: str | os.PathLike[str]) -> None:
    """Write `format_rates(book)` to `path` atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_rates(book), encoding="utf-8")
    os.replace(tmp, path)
