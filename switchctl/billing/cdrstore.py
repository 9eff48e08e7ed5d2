"""Stored CDRs: each call leg once, rated once, imported incrementally from the switches' files.

- `CdrStore.record(cdr, rating)` stores a record under its identity (switch, call_uuid, leg,
  segment). A second record of the same leg changes nothing and says so (`created=False`), unless it
  is strictly more precise (`Cdr.precision`: µs sources over Master.csv's whole seconds), which then
  replaces the times and the cost and bumps `revision`. So whatever order the live event, the JSON
  file and the CSV line arrive in, one row per leg remains, with the most precise times.
- The cost is rated once per record: answered legs of the billed leg kind only (FreeSWITCH: the
  originated "b" leg, the dialled destination; Asterisk: the "a" row, which holds the bridge), by
  callee at the answer time, on `billable_us`.
- `import_file` reads a CDR file from where the last import stopped (offset kept in the store), so
  a re-run resumes; a partial last line (the switch still writing it) is left for the next read; a
  replaced or truncated file (rotation) is read again from the start, which is harmless because
  recording is idempotent. Bad rows are reported as `file:line: message` and skipped.
See docs/CDR.md.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from switchctl.billing.cdr import Cdr, CdrError, CdrFormat
from switchctl.billing.money import Money, currency
from switchctl.billing.rating import DEFAULT, RateBook
from switchctl.store.cdr_models import cdr_files, cdrs
from switchctl.store.database import Store, retry_on_disconnect

log = logging.getLogger(__name__)

# Which legs carry the charge, per switch kind (docs/CDR.md, "Which leg is rated").
DEFAULT_BILLED_LEGS: Mapping[str, frozenset[str]] = {
    "freeswitch": frozenset({"b"}),
    "asterisk": frozenset({"a"}),
}
HEAD_BYTES = 1024  # bytes of a file's start that identify it across imports (rotation check)
DEFAULT_CHUNK = 4 * 1024 * 1024  # at most this much of a file per import call (bounded work)
_SAVE_EVERY = 500  # records between two saves of a file's offset


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class StoredCdr:
    """A stored record and its rating. `cost` is None when the leg was not rated
    (`unrated_reason` says why)."""

    id: int
    cdr: Cdr
    cost: Money | None
    rate_prefix: str | None
    unrated_reason: str | None
    revision: int
    imported_at_us: int


class Recorded(NamedTuple):
    stored: StoredCdr
    created: bool  # False: this leg was already stored (a duplicate, or an upgrade: see revision)


@dataclass
class ImportReport:
    path: str
    created: int = 0
    duplicates: int = 0  # records already stored (nothing changed)
    revised: int = 0  # records that replaced a less precise one
    errors: list[str] = field(default_factory=list)
    offset: int = 0  # where the next import starts
    pending_bytes: int = 0  # an incomplete last record left for the next read
    restarted: bool = False  # the file was rotated (replaced or truncated): read from 0


class _Rating(NamedTuple):
    cost_micros: int | None
    currency: str | None
    prefix: str | None
    reason: str | None


class CdrStore:
    def __init__(self, store: Store, *, clock: Callable[[], int] = _wall_clock_us,
                 billed_legs: Mapping[str, Collection[str]] = DEFAULT_BILLED_LEGS) -> None:
        self.store = store
        self.clock = clock
        self.billed_legs = {kind: frozenset(legs) for kind, legs in billed_legs.items()}

    # -- rating -----------------------------------------------------------------------------------
    def rate(self, cdr: Cdr, rating: RateBook | None, *, tenant: str = DEFAULT,
             account_class: str = DEFAULT) -> _Rating:
        """The cost of `cdr` (pure): rated by callee at the answer time, on billable_us."""
        if cdr.answer_us is None:
            return _Rating(None, None, None, "not answered")
        if cdr.leg not in self.billed_legs.get(cdr.switch_kind, frozenset()):
            return _Rating(None, None, None, f"leg {cdr.leg} is not billed on {cdr.switch_kind}")
        if rating is None:
            return _Rating(None, None, None, "no rate book given")
        if cdr.callee is None:
            return _Rating(None, None, None, f"destination '{cdr.destination}' is not a rateable number")
        row = rating.find(cdr.callee, at_us=cdr.answer_us, tenant=tenant, account_class=account_class)
        if row is None:
            return _Rating(None, None, None, f"no rate for {cdr.callee}")
        cost = row.rate.cost(cdr.billable_us)
        return _Rating(cost.micros, cost.currency.code, row.prefix, None)

    # -- records ----------------------------------------------------------------------------------
    async def record(self, cdr: Cdr, rating: RateBook | None, *, tenant: str = DEFAULT,
                     account_class: str = DEFAULT) -> Recorded:
        """Store `cdr` once per leg (see the module doc). Safe to repeat."""
        rated = self.rate(cdr, rating, tenant=tenant, account_class=account_class)
        try:
            return await self._record(cdr, rated)
        except IntegrityError:
            # Another writer (PostgreSQL, another controller) inserted this leg between our read
            # and our insert: now it exists, and the second attempt treats ours as a duplicate.
            return await self._record(cdr, rated)

    @retry_on_disconnect
    async def _record(self, cdr: Cdr, rated: _Rating) -> Recorded:
        now = self.clock()
        values = _values(cdr, rated)
        async with self.store.write() as conn:
            row = (await conn.execute(select(cdrs).where(*_key_clause(cdr.key)))).first()
            if row is None:
                result = await conn.execute(
                    insert(cdrs).values(**values, revision=0, imported_at_us=now, updated_at_us=now)
                )
                row_id = result.inserted_primary_key[0]
                return Recorded(StoredCdr(row_id, cdr, _money(rated.cost_micros, rated.currency),
                                          rated.prefix, rated.reason, 0, now), True)
            stored = _stored(row)
            if cdr.precision <= stored.cdr.precision:
                return Recorded(stored, False)
            revision = stored.revision + 1
            await conn.execute(update(cdrs).where(cdrs.c.id == row.id)
                               .values(**values, revision=revision, updated_at_us=now))
            log.info("CDR %s/%s/%s: %s replaced by the more precise %s (revision %d)", cdr.switch,
                     cdr.call_uuid, cdr.leg, stored.cdr.source, cdr.source, revision)
            return Recorded(StoredCdr(row.id, cdr, _money(rated.cost_micros, rated.currency),
                                      rated.prefix, rated.reason, revision, stored.imported_at_us),
                            False)

    @retry_on_disconnect
    async def get(self, switch: str, call_uuid: str, leg: str, segment: int = 0) -> StoredCdr | None:
        async with self.store.read() as conn:
            row = (await conn.execute(
                select(cdrs).where(*_key_clause((switch, call_uuid, leg, segment))))).first()
        return _stored(row) if row else None

    @retry_on_disconnect
    async def list(self, since_us: int | None = None, *, until_us: int | None = None,
                   switch: str | None = None, account: str | None = None,
                   limit: int = 1000) -> builtins.list[StoredCdr]:
        """Records that ended in [since_us, until_us), oldest first, at most `limit`."""
        stmt = select(cdrs).order_by(cdrs.c.end_us, cdrs.c.id).limit(limit)
        if since_us is not None:
            stmt = stmt.where(cdrs.c.end_us >= since_us)
        if until_us is not None:
            stmt = stmt.where(cdrs.c.end_us < until_us)
        if switch is not None:
            stmt = stmt.where(cdrs.c.switch == switch)
        if account is not None:
            stmt = stmt.where(cdrs.c.account == account)
        async with self.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_stored(row) for row in rows]

    # -- files ------------------------------------------------------------------------------------
    async def import_file(self, path: str | os.PathLike[str], parser: CdrFormat, *,
                          rating: RateBook | None = None, tenant: str = DEFAULT,
                          account_class: str = DEFAULT, max_bytes: int = DEFAULT_CHUNK,
                          keep: Callable[[Cdr], Awaitable[Recorded]] | None = None) -> ImportReport:
        """Import what `path` gained since the last import. Call again while `offset` grows: one
        call reads at most `max_bytes` (whole records; a record longer than that is an error).

        `keep(cdr)`, when given, stores each parsed record instead of `record(cdr, rating, ...)`
        (the CDR collector rates per account and settles the ledger there). The file's offset is
        saved only after `keep` returned for every record before it, so whatever `keep` does is
        done at least once per record, even across a crash."""
        name = str(Path(path))
        report = ImportReport(name)
        state = await self._file_state(name)
        window = _read_window(path, state, whole_file=parser.whole_file, max_bytes=max_bytes)
        info, data, head = window.info, window.data, window.head
        offset, line = window.offset, window.line
        if window.restarted:
            log.info("CDR file %s was rotated or rewritten: importing it from the start", name)
            report.restarted = True

        def save_point(new_offset: int, new_line: int) -> dict[str, Any]:
            return {"path": name, "device": info.st_dev, "inode": info.st_ino, "offset": new_offset,
                    "line": new_line,
                    "head_sha256": hashlib.sha256(head[:min(new_offset, HEAD_BYTES)]).hexdigest(),
                    "updated_at_us": self.clock()}

        async def store(cdr: Cdr) -> Recorded:
            return await self.record(cdr, rating, tenant=tenant, account_class=account_class)

        async def keep_one(cdr: Cdr) -> None:
            done = await (keep or store)(cdr)
            if done.created:
                report.created += 1
            elif done.stored.cdr is cdr:
                report.revised += 1
            else:
                report.duplicates += 1

        if parser.whole_file:
            if data:
                text = data.decode("utf-8", errors="replace")
                try:
                    await keep_one(parser.parse(text, name))
                except CdrError as exc:
                    if not text.rstrip().endswith("}"):  # still being written: try next time
                        report.pending_bytes, report.offset = len(data), offset
                        return report
                    report.errors.append(str(exc))
                    log.warning("%s", exc)
                offset = len(data)
                await self._save_file(save_point(offset, 1))
            report.offset = offset
            return report

        position, since_save = 0, 0
        record_start, record_line = 0, line + 1
        pending_quotes = 0
        while True:
            newline = data.find(b"\n", position)
            if newline < 0:
                break
            chunk = data[position:newline + 1]
            position = newline + 1
            line += 1
            pending_quotes += chunk.count(b'"')
            if pending_quotes % 2:  # a quoted cell goes on on the next line
                continue
            text = data[record_start:position].decode("utf-8", errors="replace")
            where = f"{name}:{record_line}"
            record_start, record_line, pending_quotes = position, line + 1, 0
            if not text.strip():
                continue
            try:
                await keep_one(parser.parse(text, where))
            except CdrError as exc:
                report.errors.append(str(exc))
                log.warning("%s", exc)
            since_save += 1
            if since_save >= _SAVE_EVERY:  # never saved ahead of what is recorded (P7)
                await self._save_file(save_point(offset + record_start, record_line - 1))
                since_save = 0
        if record_start == 0 and len(data) >= max_bytes:
            report.errors.append(f"{name}:{record_line}: a record longer than {max_bytes} bytes")
            record_start = len(data)  # skip it rather than stall on it forever
        report.pending_bytes = len(data) - record_start
        report.offset = offset + record_start
        await self._save_file(save_point(report.offset, record_line - 1))
        return report

    async def reset_file(self, path: str | os.PathLike[str]) -> None:
        """Forget how far `path` was imported: the next import reads it all again (harmless)."""
        async with self.store.write() as conn:
            await conn.execute(cdr_files.delete().where(cdr_files.c.path == str(Path(path))))

    @retry_on_disconnect
    async def _file_state(self, path: str) -> dict[str, Any] | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(cdr_files).where(cdr_files.c.path == path))).first()
        return dict(row._mapping) if row else None

    @retry_on_disconnect
    async def _save_file(self, values: dict[str, Any]) -> None:
        async with self.store.write() as conn:
            done = await conn.execute(update(cdr_files).where(cdr_files.c.path == values["path"])
                                      .values(**values))
            if done.rowcount == 0:
                await conn.execute(insert(cdr_files).values(**values))


class _Window(NamedTuple):
    info: os.stat_result
    data: bytes  # what to parse: from `offset` (lines) or the whole file (whole-file formats)
    head: bytes  # the file's first HEAD_BYTES
    offset: int
    line: int
    restarted: bool


def _read_window(path: str | os.PathLike[str], state: Mapping[str, Any] | None, *, whole_file: bool,
                 max_bytes: int) -> _Window:
    """The part of a local CDR file still to import. A plain, bounded read (≤ max_bytes, or one
    whole-file record): a local file read is not worth a thread (the rules allow none for I/O)."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        offset, line, restarted = 0, 0, False
        if state is not None:
            offset, line = state["offset"], state["line"]
            head = _read_at(handle, 0, min(offset, HEAD_BYTES))
            if ((state["device"], state["inode"]) != (info.st_dev, info.st_ino)
                    or info.st_size < offset
                    or hashlib.sha256(head).hexdigest() != state["head_sha256"]):
                offset, line, restarted = 0, 0, True
        if whole_file:
            data = _read_at(handle, 0, info.st_size) if offset < info.st_size else b""
        else:
            data = _read_at(handle, offset, max_bytes)
        return _Window(info, data, _read_at(handle, 0, HEAD_BYTES), offset, line, restarted)


def _read_at(handle: Any, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size) if size > 0 else b""


def _key_clause(key: tuple[str, str, str, int]) -> tuple[Any, ...]:
    switch, call_uuid, leg, segment = key
    return (cdrs.c.switch == switch, cdrs.c.call_uuid == call_uuid, cdrs.c.leg == leg,
            cdrs.c.segment == segment)


def _values(cdr: Cdr, rated: _Rating) -> dict[str, Any]:
    return {
        "switch": cdr.switch, "call_uuid": cdr.call_uuid, "leg": cdr.leg, "segment": cdr.segment,
        "source": cdr.source, "direction": cdr.direction, "caller": cdr.caller,
        "callee": cdr.callee, "destination": cdr.destination, "context": cdr.context,
        "start_us": cdr.start_us, "answer_us": cdr.answer_us, "end_us": cdr.end_us,
        "billable_us": cdr.billable_us, "hangup_cause": cdr.hangup_cause, "codec": cdr.codec,
        "peer": cdr.peer, "account": cdr.account, "booth": cdr.booth, "flags": ",".join(cdr.flags),
        "cost_micros": rated.cost_micros, "currency": rated.currency, "rate_prefix": rated.prefix,
        "unrated_reason": rated.reason, "raw": cdr.raw,
    }


def _money(micros: int | None, code: str | None) -> Money | None:
    return Money(micros, currency(code)) if micros is not None and code else None


def _stored(row: Any) -> StoredCdr:
    cdr = Cdr(
        switch=row.switch, call_uuid=row.call_uuid, leg=row.leg, direction=row.direction,
        caller=row.caller, callee=row.callee, destination=row.destination, context=row.context,
        start_us=row.start_us, answer_us=row.answer_us, end_us=row.end_us,
        billable_us=row.billable_us, hangup_cause=row.hangup_cause, codec=row.codec, peer=row.peer,
        account=row.account, booth=row.booth, source=row.source, raw=row.raw, segment=row.segment,
        flags=tuple(f for f in row.flags.split(",") if f),
    )
    return StoredCdr(row.id, cdr, _money(row.cost_micros, row.currency), row.rate_prefix,
                     row.unrated_reason, row.revision, row.imported_at_us)
