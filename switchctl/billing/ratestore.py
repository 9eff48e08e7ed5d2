"""Rate tables in the store: versioned per (tenant, account class), imported from and exported to CSV.

- `RateStore.import_csv(path, tenant, account_class, timezone)` reads the whole file with the CSV
  reader of `ratecsv.py` first (every problem reported as `file:line: message`; nothing is written
  when there is one), then writes a new version of the table in ONE transaction and makes it the
  current one. `replace=True` (default): the version holds exactly the file's rows. `replace=False`
  (merge): the file's prefixes replace those prefixes of the current version (all their time-band
  rows at once, so a prefix's bands stay a consistent set) and the other prefixes are kept.
- The file names its table through the arguments: its `tenant`/`class` cells may be empty (they
  take the arguments) or equal to them; anything else is an error on that line. The same for the
  `timezone` cells when `timezone` is given (otherwise the file's timezone, default UTC).
- `load()` builds the `RateBook` of the current versions (the prepaid service and the CDR importer
  take it through a `Callable[[], RateBook]`; reload after an import). Identical rates are built
  once, so 100,000 rows load in about a second (docs/RATING.md has the figures).
- `export_csv(tenant, account_class)` writes the canonical CSV of a version (ratecsv.format_rates),
  so importing an export gives the same table back.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from switchctl.billing.money import Currency, Money, Rounding
from switchctl.billing.ratecsv import (
    RateCsvError,
    RateCsvIssue,
    format_rates,
    parse_rates,
)
from switchctl.billing.rating import (
    DEFAULT,
    Rate,
    RateBook,
    RateRow,
    RateTable,
    RateTableBuilder,
    TimeBand,
)
from switchctl.store.database import Store, retry_on_disconnect
from switchctl.store.rate_models import rate_rows, rate_tables, rate_versions

_INSERT_BATCH = 5_000  # rows per INSERT round trip (bounded statement size, few round trips)


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


class RateStoreError(ValueError):
    """A rate table operation was refused; nothing was written."""


@dataclass(frozen=True, slots=True)
class RateVersion:
    """One stored version of a (tenant, class) table."""

    tenant: str
    account_class: str
    version: int
    current: bool
    currency: Currency
    timezone: str
    rows: int
    prefixes: int
    source: str
    mode: str
    created_at_us: int


# -- reading the file ------------------------------------------------------------------------------


def _pin_table(text: str, source: str, tenant: str, account_class: str,
               timezone: str | None) -> tuple[str, list[RateCsvIssue]]:
    """The CSV text with empty tenant/class (and timezone, if given) cells filled with the table's
    values; a cell naming another table is an error on its line. Physical lines are kept as they are
    (blank records stay blank lines), so the reader's `file:line` errors still point into the file."""
    wanted = {"tenant": tenant, "class": account_class}
    if timezone is not None:
        wanted["timezone"] = timezone
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    issues: list[RateCsvIssue] = []
    header: list[str] | None = None
    columns: dict[str, int] = {}
    added: list[str] = []
    last_line = 0
    try:
        for record in reader:
            line, last_line = last_line + 1, reader.line_num
            if header is None:
                if not any(cell.strip() for cell in record):
                    writer.writerow(record)
                    continue
                header = [cell.strip().lower() for cell in record]
                columns = {name: header.index(name) for name in wanted if name in header}
                added = [name for name in wanted if name not in columns]
                writer.writerow(record + added)
                continue
            if not any(cell.strip() for cell in record) or len(record) != len(header):
                writer.writerow(record)  # blank: skipped by the reader; wrong width: it says so
                continue
            record = list(record)
            for name, index in columns.items():
                cell = record[index].strip()
                if not cell:
                    record[index] = wanted[name]
                elif cell != wanted[name]:
                    what = "class" if name == "class" else name
                    issues.append(RateCsvIssue(
                        source, line, f"{what} '{cell}' but this import is for {what} '{wanted[name]}' "
                        f"(leave the cell empty or import the file with --{what} {cell})"))
            writer.writerow(record + [wanted[name] for name in added])
    except csv.Error:
        return text, []  # the reader reports bad CSV with its line
    return out.getvalue(), issues


def read_table_csv(text: str, source: str, tenant: str = DEFAULT, account_class: str = DEFAULT,
                   timezone: str | None = None) -> RateTable:
    """Parse a rate CSV as the table (tenant, account_class) (pure). Raises `RateCsvError`."""
    pinned, issues = _pin_table(text, source, tenant, account_class, timezone)
    try:
        book = parse_rates(pinned, source)
    except RateCsvError as exc:
        # A line already refused for naming another table is not reported twice.
        flagged = {issue.line for issue in issues}
        others = [issue for issue in exc.issues if issue.line not in flagged]
        raise RateCsvError(sorted(issues + others, key=lambda i: i.line)[:101]) from None
    if issues:
        raise RateCsvError(issues[:101])
    table = book.table(tenant, account_class)
    if table is None:
        raise RateCsvError([RateCsvIssue(source, 1, "no rate rows (only a header?)")])
    return table


# -- the store -------------------------------------------------------------------------------------


class _RateCache:
    """Builds each distinct Rate / TimeBand once: real tables repeat a few hundred tariffs over
    100,000 prefixes, and a Rate checks its fields when built."""

    def __init__(self) -> None:
        self.rates: dict[tuple[Any, ...], Rate] = {}
        self.bands: dict[str, TimeBand] = {}

    def rate(self, cur: Currency, per_minute: int, connect: int, initial: int, increment: int,
             minimum: int, rounding: str) -> Rate:
        key = (cur, per_minute, connect, initial, increment, minimum, rounding)
        rate = self.rates.get(key)
        if rate is None:
            rate = Rate(Money(per_minute, cur), Money(connect, cur), initial, increment, minimum,
                        Rounding.parse(rounding))
            self.rates[key] = rate
        return rate

    def band(self, spec: str | None) -> TimeBand | None:
        if spec is None:
            return None
        band = self.bands.get(spec)
        if band is None:
            band = self.bands[spec] = TimeBand.parse(spec)
        return band


def _row_values(version_id: int, row: RateRow) -> dict[str, Any]:
    rate = row.rate
    return {
        "version_id": version_id, "prefix": row.prefix, "description": row.description,
        "per_minute_micros": rate.per_minute.micros, "connect_fee_micros": rate.connect_fee.micros,
        "initial_s": rate.initial_s, "increment_s": rate.increment_s, "minimum_s": rate.minimum_s,
        "rounding": rate.rounding.value, "time_band": row.band.spec if row.band else None,
    }


_ROW_COLUMNS = (rate_rows.c.prefix, rate_rows.c.description, rate_rows.c.per_minute_micros,
                rate_rows.c.connect_fee_micros, rate_rows.c.initial_s, rate_rows.c.increment_s,
                rate_rows.c.minimum_s, rate_rows.c.rounding, rate_rows.c.time_band)


class RateStore:
    """The site's rate tables in the store (see the module doc)."""

    def __init__(self, store: Store, clock: Callable[[], int] = _wall_clock_us) -> None:
        self.store = store
        self.clock = clock

    # -- import -----------------------------------------------------------------------------------
    async def import_csv(
        self, path: str | os.PathLike[str], tenant: str = DEFAULT, account_class: str = DEFAULT,
        timezone: str | None = None, *, replace: bool = True,
    ) -> RateVersion:
        """Import a rate CSV file as a new current version of (tenant, account_class)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8-sig")
        return await self.import_text(text, str(path), tenant, account_class, timezone, replace=replace)

    async def import_text(
        self, text: str, source: str, tenant: str = DEFAULT, account_class: str = DEFAULT,
        timezone: str | None = None, *, replace: bool = True,
    ) -> RateVersion:
        table = read_table_csv(text, source, tenant, account_class, timezone)
        try:
            return await self._write_version(table, source, replace=replace)
        except IntegrityError:
            # Another writer created the same table (or version) between our read and our insert
            # (PostgreSQL, two imports at once): the second attempt sees it and goes after it.
            return await self._write_version(table, source, replace=replace)

    async def _write_version(self, table: RateTable, source: str, *, replace: bool) -> RateVersion:
        tenant, account_class = table.key
        now = self.clock()
        async with self.store.write() as conn:
            table_row = (await conn.execute(
                select(rate_tables).where(rate_tables.c.tenant == tenant,
                                          rate_tables.c["class"] == account_class)
                .with_for_update())).first()
            if table_row is None:
                table_id = (await conn.execute(insert(rate_tables).values(
                    tenant=tenant, **{"class": account_class}, current_version=None,
                    updated_at_us=now).returning(rate_tables.c.id))).scalar_one()
                current = None
            else:
                table_id = table_row.id
                current = table_row.current_version
            await self._check_chain_currency(conn, table)
            rows: Iterable[RateRow] = table.rows()
            mode = "replace"
            if not replace and current is not None:
                mode = "merge"
                old = await self._table(conn, tenant, account_class, current)
                assert old is not None
                if old.timezone != table.timezone:
                    raise RateStoreError(
                        f"{source}: timezone {table.timezone} differs from {old.timezone} of the current "
                        f"version {current} of ({tenant}, {account_class}); import it whole (replace)")
                if old.currency != table.currency:
                    raise RateStoreError(
                        f"{source}: currency {table.currency} differs from {old.currency} of the current "
                        f"version {current} of ({tenant}, {account_class}); import it whole (replace)")
                new_prefixes = {row.prefix for row in table.rows()}
                kept = [row for row in old.rows() if row.prefix not in new_prefixes]
                merged = RateTable.from_rows(tenant, account_class, [*kept, *table.rows()], table.timezone)
                table, rows = merged, merged.rows()
            rows = list(rows)
            last = (await conn.execute(select(func.coalesce(func.max(rate_versions.c.version), 0))
                                       .where(rate_versions.c.table_id == table_id))).scalar_one()
            version = int(last) + 1
            version_id = (await conn.execute(insert(rate_versions).values(
                table_id=table_id, version=version, currency=table.currency.code,
                currency_exponent=table.currency.exponent, timezone=table.timezone,
                row_count=len(rows), prefix_count=len(table), source=source[:1024], mode=mode,
                created_at_us=now).returning(rate_versions.c.id))).scalar_one()
            for start in range(0, len(rows), _INSERT_BATCH):
                await conn.execute(insert(rate_rows),
                                   [_row_values(version_id, row) for row in rows[start:start + _INSERT_BATCH]])
            await conn.execute(update(rate_tables).where(rate_tables.c.id == table_id)
                               .values(current_version=version, updated_at_us=now))
        return RateVersion(tenant, account_class, version, True, table.currency, table.timezone,
                           len(rows), len(table), source, mode, now)

    async def _check_chain_currency(self, conn: AsyncConnection, table: RateTable) -> None:
        """Tables of one fallback chain must share a currency (RateBook's rule), checked before
        writing so `load()` can never fail on what an import accepted."""
        current = (await conn.execute(
            select(rate_tables.c.tenant, rate_tables.c["class"], rate_versions.c.currency)
            .join(rate_versions, (rate_versions.c.table_id == rate_tables.c.id)
                  & (rate_versions.c.version == rate_tables.c.current_version)))).all()
        currencies = {(t, c): cur for t, c, cur in current}
        currencies[table.key] = table.currency.code
        for (tenant, account_class), code in currencies.items():
            for key in ((tenant, DEFAULT), (DEFAULT, DEFAULT)):
                other = currencies.get(key)
                # Every earlier import passed this check, so a mismatch involves the new table.
                if other is not None and other != code:
                    raise RateStoreError(
                        f"table ({tenant}, {account_class}) would be in {code} but falls back to "
                        f"({key[0]}, {key[1]}) in {other}: one account has one currency")

    # -- reading ----------------------------------------------------------------------------------
    @retry_on_disconnect
    async def load(self) -> RateBook:
        """The RateBook of every table's current version."""
        async with self.store.read() as conn:
            heads = (await conn.execute(
                select(rate_tables.c.tenant, rate_tables.c["class"], rate_versions.c.id,
                       rate_versions.c.currency, rate_versions.c.currency_exponent,
                       rate_versions.c.timezone)
                .join(rate_versions, (rate_versions.c.table_id == rate_tables.c.id)
                      & (rate_versions.c.version == rate_tables.c.current_version))
                .order_by(rate_tables.c.tenant, rate_tables.c["class"]))).all()
            cache = _RateCache()
            tables = []
            for tenant, account_class, version_id, code, exponent, timezone in heads:
                tables.append(await self._build(conn, cache, tenant, account_class, version_id,
                                                Currency(code, exponent), timezone))
        return RateBook(tables)

    @retry_on_disconnect
    async def table(self, tenant: str = DEFAULT, account_class: str = DEFAULT,
                    version: int | None = None) -> RateTable | None:
        """One table: its current version, or `version`. None if there is no such table/version."""
        async with self.store.read() as conn:
            return await self._table(conn, tenant, account_class, version)

    async def _table(self, conn: AsyncConnection, tenant: str, account_class: str,
                     version: int | None) -> RateTable | None:
        join_on = rate_versions.c.table_id == rate_tables.c.id
        join_on &= (rate_versions.c.version == (version if version is not None
                                                else rate_tables.c.current_version))
        head = (await conn.execute(
            select(rate_versions.c.id, rate_versions.c.currency, rate_versions.c.currency_exponent,
                   rate_versions.c.timezone)
            .join(rate_tables, join_on)
            .where(rate_tables.c.tenant == tenant, rate_tables.c["class"] == account_class))).first()
        if head is None:
            return None
        version_id, code, exponent, timezone = head
        return await self._build(conn, _RateCache(), tenant, account_class, version_id,
                                 Currency(code, exponent), timezone)

    async def _build(self, conn: AsyncConnection, cache: _RateCache, tenant: str,
                     account_class: str, version_id: int, cur: Currency, timezone: str) -> RateTable:
        result = await conn.execute(select(*_ROW_COLUMNS).where(rate_rows.c.version_id == version_id))
        builder = RateTableBuilder(tenant, account_class, timezone)
        rate, band = cache.rate, cache.band
        for prefix, description, per_minute, connect, initial, increment, minimum, rounding, spec \
                in result.all():
            builder.add(RateRow(tenant, account_class, prefix, description,
                                rate(cur, per_minute, connect, initial, increment, minimum, rounding),
                                band(spec)))
        return builder.build()

    @retry_on_disconnect
    async def versions(self, tenant: str | None = None,
                       account_class: str | None = None) -> list[RateVersion]:
        """Every stored version (of one table if named), by table then version."""
        stmt = (select(rate_tables.c.tenant, rate_tables.c["class"], rate_tables.c.current_version,
                       rate_versions)
                .join(rate_versions, rate_versions.c.table_id == rate_tables.c.id)
                .order_by(rate_tables.c.tenant, rate_tables.c["class"], rate_versions.c.version))
        if tenant is not None:
            stmt = stmt.where(rate_tables.c.tenant == tenant)
        if account_class is not None:
            stmt = stmt.where(rate_tables.c["class"] == account_class)
        async with self.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [RateVersion(r.tenant, r._mapping["class"], r.version, r.version == r.current_version,
                            Currency(r.currency, r.currency_exponent), r.timezone, r.row_count,
                            r.prefix_count, r.source, r.mode, r.created_at_us) for r in rows]

    async def use_version(self, tenant: str, account_class: str, version: int) -> None:
        """Make a stored version current again (roll back an import)."""
        async with self.store.write() as conn:
            table_row = (await conn.execute(select(rate_tables).where(
                rate_tables.c.tenant == tenant, rate_tables.c["class"] == account_class)
                .with_for_update())).first()
            if table_row is None:
                raise RateStoreError(f"no rate table ({tenant}, {account_class})")
            exists = (await conn.execute(select(rate_versions.c.id).where(
                rate_versions.c.table_id == table_row.id, rate_versions.c.version == version))).first()
            if exists is None:
                raise RateStoreError(f"rate table ({tenant}, {account_class}) has no version {version}")
            await conn.execute(update(rate_tables).where(rate_tables.c.id == table_row.id)
                               .values(current_version=version, updated_at_us=self.clock()))

    # -- export -----------------------------------------------------------------------------------
    async def export_csv(self, tenant: str = DEFAULT, account_class: str = DEFAULT,
                         out: str | os.PathLike[str] | TextIO | None = None, *,
                         version: int | None = None) -> str:
        """The canonical CSV of the table's current version (or `version`); also written to `out`
        (a path, replaced atomically, or an open text stream) when given."""
        table = await self.table(tenant, account_class, version)
        if table is None:
            which = f"version {version} of " if version is not None else ""
            raise RateStoreError(f"no {which}rate table ({tenant}, {account_class}) in the store")
        text = format_rates(RateBook([table]))
        if out is None:
            return text
        if isinstance(out, (str, os.PathLike)):
            path = Path(out)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        else:
            out.write(text)
        return text


def describe_versions(versions: list[RateVersion]) -> dict[tuple[str, str], list[RateVersion]]:
    """Versions grouped by table (for `switchctl rates show`)."""
    grouped: dict[tuple[str, str], list[RateVersion]] = defaultdict(list)
    for v in versions:
        grouped[(v.tenant, v.account_class)].append(v)
    return dict(grouped)
