"""Phone-bar booth sessions: from a booth's first call (or an explicit open) to "collect".

A booth is a site phone with `booth: true`; its money lives in the prepaid account named after its
extension (kind `booth`, created by `Booths.open` when missing). A *session* is the stretch of that
account's ledger since the previous collect (entries with seq > the previous session's last seq).

- The bill's money comes from the ledger, the only money truth: each `commit` entry of the session
  is one call line (its amount is what the call was charged, whichever path committed it: the live
  prepaid service or the CDR importer, both under `callkeys.commit_key`). `refund` entries (a bad
  call given back) and the deposit taken by `open(deposit=...)` are credits.
- The details (when, where to, how long) come from the stored CDRs of that call, found by the
  commit's call ref (switch, A-leg uuid): the rated leg of the call (FreeSWITCH: the B leg the A leg
  bridged to; Asterisk: the A row). Duration is the CDR's billable µs. A call whose CDR has not been
  imported yet is listed with its charge and "details pending".
- Top-ups made with `switchctl account topup` are the booth's *float* (the operator's money that
  lets calls be authorized); they are not part of any bill and a collect never gives them back.
- `collect` settles the session in ONE transaction under the account's lock: due = calls − credits;
  if due > 0 the customer pays it (a `topup` entry "paid at the counter"), if due < 0 what is left
  of the deposit is given back (an `adjustment` entry); the account is back at its float, and the
  session row is closed with its totals. A booth with a live call (a live reservation) cannot be
  collected. Collecting again finds nothing new and says which session was collected when; two
  concurrent collects are serialized by the account lock, and backstopped by a unique session start
  and the settlement entry's idempotency key, so a session is never settled twice.
See docs/BOOTHS.md.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from switchctl.billing.accounts import AccountExists, Accounts
from switchctl.billing.ledger import (
    ADJUSTMENT,
    COMMIT,
    REFUND,
    RESERVE,
    TOPUP,
    CallRef,
    Ledger,
    account_currency,
)
from switchctl.billing.money import Currency, CurrencyMismatch, Money, currency
from switchctl.billing.rating import DEFAULT
from switchctl.store.booth_models import booth_sessions
from switchctl.store.cdr_models import cdrs
from switchctl.store.database import Store
from switchctl.store.models import accounts, ledger_entries, reservations

DEPOSIT_KEY = "booth-deposit:"  # key prefix of a deposit taken by `open`
COLLECT_KEY = "booth-collect:"  # key prefix of a settlement written by `collect`
OPEN, COLLECTED, IDLE = "open", "collected", "idle"


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


class BoothError(ValueError):
    """A booth operation was refused; nothing was written."""


class NothingToCollect(BoothError):
    """The booth has no open session (e.g. it was just collected: a repeated collect)."""


class BoothBusy(BoothError):
    """The booth has a call in progress."""


@dataclass(frozen=True, slots=True)
class BillLine:
    """One charged call. `charged` is the ledger's commit (the money); the rest is from its CDR
    (None while the CDR has not been imported)."""

    call_ref: CallRef
    charged: Money
    charged_at_us: int
    start_us: int | None = None  # the billed leg's answer time (switch clock)
    destination: str | None = None
    duration_us: int | None = None  # the CDR's billable µs
    cdr_cost: Money | None = None  # what the CDR was rated at (differs from charged: investigate)

    @property
    def details_pending(self) -> bool:
        return self.duration_us is None


@dataclass(frozen=True, slots=True)
class BillCredit:
    kind: str  # "deposit" or "refund"
    amount: Money  # > 0: owed to the customer
    at_us: int
    note: str


@dataclass(frozen=True, slots=True)
class Bill:
    """A booth session's bill. `due` > 0: the customer pays it; < 0: give it back."""

    booth: str
    state: str  # open / collected / idle (no session since the last collect)
    currency: Currency
    session_id: int | None = None
    opened_by: str | None = None  # "open" or "call"
    opened_at_us: int | None = None
    collected_at_us: int | None = None
    lines: tuple[BillLine, ...] = ()
    credits: tuple[BillCredit, ...] = ()
    live_calls: tuple[CallRef, ...] = ()
    paid: Money | None = None  # collected sessions: taken at the counter
    returned: Money | None = None  # collected sessions: deposit given back

    @property
    def total(self) -> Money:
        return sum((line.charged for line in self.lines), Money.zero(self.currency))

    @property
    def credited(self) -> Money:
        return sum((credit.amount for credit in self.credits), Money.zero(self.currency))

    @property
    def due(self) -> Money:
        return self.total - self.credited

    def text(self, tz: dt.tzinfo | None = None) -> str:
        """A readable bill (times in `tz`, default the host's local time)."""
        code = self.currency.code
        head = f"Booth {self.booth}"
        if self.state == IDLE:
            return f"{head}: no session (no call since the last collect)\n"
        since = _when(self.opened_at_us, tz) if self.opened_at_us else "?"
        how = "first call" if self.opened_by == "call" else "opened"
        number = f"session {self.session_id}" if self.session_id is not None else "session"
        out = [f"{head}, {number}, {self.state}: since {since} ({how})"
               + (f", collected {_when(self.collected_at_us, tz)}" if self.collected_at_us else "")]
        out.append(f"  {'#':>3}  {'time':<19}  {'destination':<20}  {'duration':>9}  {'cost':>10}")
        for n, line in enumerate(self.lines, 1):
            when = _when(line.start_us if line.start_us is not None else line.charged_at_us, tz)
            dest = line.destination or "(details pending)"
            duration = _duration(line.duration_us) if line.duration_us is not None else "-"
            flag = ""
            if line.cdr_cost is not None and line.cdr_cost != line.charged:
                flag = f"  (CDR rated {line.cdr_cost.format()})"
            out.append(f"  {n:>3}  {when:<19}  {dest:<20}  {duration:>9}  {line.charged.format():>10}{flag}")
        width = 3 + 2 + 19 + 2 + 20 + 2 + 9 + 2 + 10 + 2
        out.append(f"  {'calls: ' + str(len(self.lines)):<{width - 16}}total {self.total.format():>10} {code}")
        for credit in self.credits:
            label = f"{credit.kind} {_when(credit.at_us, tz)}"
            out.append(f"  {label:<{width - 16}}  -  {credit.amount.format():>10} {code}")
        due = self.due
        if self.state == COLLECTED:
            if self.paid:
                out.append(f"  {'':<{width - 16}} paid {self.paid.format():>10} {code}")
            if self.returned:
                out.append(f"  {'':<{width - 16}} gave {self.returned.format():>10} {code} back")
            if not self.paid and not self.returned:
                out.append(f"  {'':<{width - 16}}settled, nothing due")
        elif due.micros >= 0:
            out.append(f"  {'':<{width - 16}}  due {due.format():>10} {code}")
        else:
            out.append(f"  {'':<{width - 16}} give {(-due).format():>10} {code} back")
        for ref in self.live_calls:
            out.append(f"  call in progress: {ref} (not billed yet; collect after it ends)")
        return "\n".join(out) + "\n"


@dataclass(frozen=True, slots=True)
class Collected:
    bill: Bill  # the session as collected (state "collected")
    paid: Money  # taken at the counter
    returned: Money  # deposit given back


def _when(at_us: int | None, tz: dt.tzinfo | None) -> str:
    if at_us is None:
        return "?"
    stamp = dt.datetime.fromtimestamp(at_us // 1_000_000, tz or dt.datetime.now().astimezone().tzinfo)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def _duration(us: int) -> str:
    """m:ss.t from µs (display only; truncated to the tenth)."""
    return f"{us // 60_000_000}:{(us // 1_000_000) % 60:02d}.{(us // 100_000) % 10}"


@dataclass
class _Session:
    """What the ledger says about the booth's current (or last) session."""

    account: Any  # accounts row
    cur: Currency
    start_seq: int
    end_seq: int | None
    row: Any | None  # booth_sessions row (explicit open, or the collected one)
    entries: list[Any] = field(default_factory=list)  # ledger rows in the session
    live: list[CallRef] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return self.row is not None or any(_counts(e) or e.kind == RESERVE for e in self.entries)

    def first_call_us(self) -> int | None:
        for entry in self.entries:
            if entry.kind in (RESERVE, COMMIT):
                return entry.created_at_us
        return None


def _counts(entry: Any) -> bool:
    """Is this ledger entry part of a bill (a call charge or a credit to the customer)?"""
    if entry.kind in (COMMIT, REFUND):
        return True
    return entry.kind == TOPUP and entry.idempotency_key.startswith(DEPOSIT_KEY)


class Booths:
    """Booth sessions of a site (see the module doc).

    `booths`: the extensions of the site's booth phones (None: any name is accepted). New booth
    accounts are created in `currency` under `tenant`.
    """

    def __init__(self, store: Store, ledger: Ledger, accounts_: Accounts, *,
                 booths: Collection[str] | None = None, tenant: str = DEFAULT,
                 currency_: Currency | None = None, clock: Callable[[], int] | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.accounts = accounts_
        self.booths = None if booths is None else tuple(booths)
        self.tenant = tenant
        self.currency = currency_ or currency("EUR")
        self.clock = clock or ledger.clock or _wall_clock_us

    def _check_booth(self, booth: str) -> None:
        if self.booths is not None and booth not in self.booths:
            known = ", ".join(self.booths) if self.booths else "none"
            raise BoothError(f"'{booth}' is not a booth of the site (booth phones: {known})")

    async def _account_row(self, conn: AsyncConnection, booth: str, *, lock: bool) -> Any | None:
        row = (await conn.execute(select(accounts).where(
            accounts.c.tenant == self.tenant, accounts.c.name == booth))).first()
        if row is None:
            return None
        if row.kind != "booth":
            raise BoothError(f"account '{booth}' is a {row.kind} account, not a booth's")
        if lock:
            row = await self.store.lock_account(conn, row.id)
        return row

    async def _session(self, conn: AsyncConnection, acct: Any, *, last: bool = False) -> _Session:
        """The open session (explicit or since the first call after the last collect); with `last`,
        when nothing is open, the last collected session instead (for reprinting its bill)."""
        cur = account_currency(acct)
        rows = (await conn.execute(select(booth_sessions).where(booth_sessions.c.account_id == acct.id)
                                   .order_by(booth_sessions.c.start_seq.desc()).limit(2))).all()
        open_row = next((r for r in rows if r.state == OPEN), None)
        collected = [r for r in rows if r.state == COLLECTED]
        boundary = collected[0].end_seq if collected else 0
        if open_row is not None:
            session = _Session(acct, cur, open_row.start_seq, None, open_row)
        else:
            session = _Session(acct, cur, boundary, None, None)
        session.entries = list((await conn.execute(select(ledger_entries).where(
            ledger_entries.c.account_id == acct.id, ledger_entries.c.seq > session.start_seq)
            .order_by(ledger_entries.c.seq))).all())
        session.live = [CallRef(r.switch, r.call_uuid, r.leg) for r in (await conn.execute(
            select(reservations).where(reservations.c.account_id == acct.id,
                                       reservations.c.state == "live")
            .order_by(reservations.c.id))).all()]
        if last and not session.started and collected:
            done = collected[0]
            session = _Session(acct, cur, done.start_seq, done.end_seq, done)
            session.entries = list((await conn.execute(select(ledger_entries).where(
                ledger_entries.c.account_id == acct.id, ledger_entries.c.seq > done.start_seq,
                ledger_entries.c.seq <= done.end_seq).order_by(ledger_entries.c.seq))).all())
        return session

    async def _bill(self, conn: AsyncConnection, booth: str, session: _Session, *,
                    details: bool) -> Bill:
        cur = session.cur
        lines: list[BillLine] = []
        credits: list[BillCredit] = []
        for entry in session.entries:
            if not _counts(entry):
                continue
            if entry.kind == COMMIT:
                ref = CallRef(entry.switch, entry.call_uuid, entry.leg)
                line = BillLine(ref, Money(-entry.amount_micros, cur), entry.created_at_us)
                if details:
                    line = await self._details(conn, line)
                lines.append(line)
            else:
                kind = "deposit" if entry.kind == TOPUP else "refund"
                credits.append(BillCredit(kind, Money(entry.amount_micros, cur), entry.created_at_us,
                                          entry.note))
        row = session.row
        if row is not None and row.state == COLLECTED:
            return Bill(booth, COLLECTED, cur, row.id, row.opened_by, row.opened_at_us,
                        row.collected_at_us, tuple(lines), tuple(credits), (),
                        Money(row.paid_micros or 0, cur), Money(row.returned_micros or 0, cur))
        if not session.started:
            return Bill(booth, IDLE, cur, live_calls=tuple(session.live))
        if row is not None:
            opened_by, opened_at = row.opened_by, row.opened_at_us
        else:
            opened_by, opened_at = "call", session.first_call_us()
        return Bill(booth, OPEN, cur, row.id if row is not None else None, opened_by, opened_at,
                    None, tuple(lines), tuple(credits), tuple(session.live))

    async def _details(self, conn: AsyncConnection, line: BillLine) -> BillLine:
        """Fill a line from the call's CDRs: the rated leg of the call whose A leg is the ref."""
        ref = line.call_ref
        # By (switch, call_uuid): the prefix of the CDRs' unique index. The A leg names its peer.
        rows = list((await conn.execute(select(cdrs).where(
            cdrs.c.switch == ref.switch, cdrs.c.call_uuid == ref.call_uuid))).all())
        a_leg = next((r for r in rows if r.call_uuid == ref.call_uuid), None)
        if a_leg is not None and a_leg.peer:
            rows += (await conn.execute(select(cdrs).where(
                and_(cdrs.c.switch == ref.switch, cdrs.c.call_uuid == a_leg.peer)))).all()
        rated = next((r for r in rows if r.cost_micros is not None), None)
        if rated is None:
            return line
        cdr_cost = Money(rated.cost_micros, line.charged.currency) \
            if rated.currency == line.charged.currency.code else None
        return BillLine(ref, line.charged, line.charged_at_us,
                        rated.answer_us if rated.answer_us is not None else rated.start_us,
                        rated.callee or rated.destination, rated.billable_us, cdr_cost)

    # -- public API -------------------------------------------------------------------------------
    async def open(self, booth: str, *, deposit: Money | None = None) -> Bill:
        """Open a session explicitly (a session also opens by itself at the booth's first call),
        creating the booth's account if it has none; `deposit`: money the customer leaves, given
        back (what is left of it) at collect. A session opened by a call is adopted (its start is
        kept) and the deposit added to it; a session already opened explicitly is an error."""
        self._check_booth(booth)
        if deposit is not None and deposit.micros <= 0:
            raise BoothError(f"a deposit must be positive, not {deposit}")
        await self._ensure_account(booth)
        async with self.store.write() as conn:
            acct = await self._account_row(conn, booth, lock=True)
            assert acct is not None
            cur = account_currency(acct)
            if deposit is not None and deposit.currency != cur:
                raise CurrencyMismatch(f"deposit in {deposit.currency}, booth {booth} is in {cur}")
            session = await self._session(conn, acct)
            if session.row is not None:
                raise BoothError(f"booth {booth} already has an open session (since "
                                 f"{_when(session.row.opened_at_us, None)}); collect it first")
            now = self.clock()
            first_call = session.first_call_us() if session.started else None
            session_id = (await conn.execute(insert(booth_sessions).values(
                account_id=acct.id, booth=booth, state=OPEN, start_seq=session.start_seq,
                opened_by="call" if first_call is not None else "open",
                opened_at_us=first_call if first_call is not None else now,
                currency=cur.code).returning(booth_sessions.c.id))).scalar_one()
            if deposit is not None:
                await self.ledger._append(conn, acct, TOPUP, deposit.micros, 0,
                                          f"{DEPOSIT_KEY}{session_id}", deposit.micros, None,
                                          f"deposit, booth session {session_id}", now=now)
            return await self._bill(conn, booth, await self._session(conn, acct), details=False)

    async def _ensure_account(self, booth: str) -> None:
        if await self.accounts.find(booth, tenant=self.tenant) is not None:
            return
        try:
            await self.accounts.create("booth", booth, self.currency, tenant=self.tenant)
        except AccountExists:
            pass  # created concurrently: fine

    async def bill(self, booth: str, *, details: bool = True) -> Bill:
        """The open session's bill; if none is open, the last collected one (a reprint); else an
        idle bill with no lines."""
        self._check_booth(booth)
        async with self.store.read() as conn:
            acct = await self._account_row(conn, booth, lock=False)
            if acct is None:
                return Bill(booth, IDLE, self.currency)
            return await self._bill(conn, booth, await self._session(conn, acct, last=True),
                                    details=details)

    async def collect(self, booth: str, paid: Money | None = None) -> Collected:
        """Close the open session and settle the account, in one transaction (module doc).
        `paid`: what the customer handed over; must equal what is due (None: exactly the due)."""
        self._check_booth(booth)
        try:
            return await self._collect(booth, paid)
        except IntegrityError as exc:
            # Another collect of the same session got there first (unique session start / key).
            raise NothingToCollect(f"booth {booth}: this session was collected concurrently") from exc

    async def _collect(self, booth: str, paid: Money | None) -> Collected:
        async with self.store.write() as conn:
            acct = await self._account_row(conn, booth, lock=True)
            if acct is None:
                raise NothingToCollect(f"booth {booth} has never had a call (no account)")
            cur = account_currency(acct)
            if paid is not None and paid.currency != cur:
                raise CurrencyMismatch(f"paid in {paid.currency}, booth {booth} is in {cur}")
            session = await self._session(conn, acct)
            if not session.started:
                last = await self._session(conn, acct, last=True)
                if last.row is not None:
                    raise NothingToCollect(
                        f"booth {booth}: nothing to collect; its last session ({last.row.id}) was "
                        f"collected at {_when(last.row.collected_at_us, None)}: total "
                        f"{Money(last.row.total_micros or 0, cur)}, paid "
                        f"{Money(last.row.paid_micros or 0, cur)}, given back "
                        f"{Money(last.row.returned_micros or 0, cur)}")
                raise NothingToCollect(f"booth {booth}: nothing to collect (no call since it was set up)")
            if session.row is not None and not session.entries:
                # Opened, then nothing at all: closing it leaves no trace (and no session row that
                # would start where the next session starts).
                await conn.execute(delete(booth_sessions).where(booth_sessions.c.id == session.row.id))
                empty = Money.zero(cur)
                return Collected(Bill(booth, COLLECTED, cur, None, session.row.opened_by,
                                      session.row.opened_at_us, self.clock(), paid=empty,
                                      returned=empty), empty, empty)
            if session.live:
                raise BoothBusy(f"booth {booth} has a call in progress ({', '.join(map(str, session.live))}); "
                                "collect after it ends")
            bill = await self._bill(conn, booth, session, details=True)
            due = bill.due
            now = self.clock()
            key = f"{COLLECT_KEY}{acct.id}:{session.start_seq}"
            taken, returned = Money.zero(cur), Money.zero(cur)
            if due.micros > 0:
                if paid is not None and paid != due:
                    raise BoothError(f"booth {booth}: {due} is due but {paid} was paid; take exactly "
                                     "the amount due (give change yourself)")
                taken = due
                await self.ledger._append(conn, acct, TOPUP, due.micros, 0, key, due.micros, None,
                                          f"booth {booth} session paid at the counter", now=now)
            elif due.micros < 0:
                if paid is not None and paid.micros != 0:
                    raise BoothError(f"booth {booth}: nothing is due ({-due} of the deposit goes back), "
                                     f"but {paid} was paid")
                returned = -due
                await self.ledger._append(conn, acct, ADJUSTMENT, due.micros, 0, key, due.micros, None,
                                          f"booth {booth}: deposit left given back", now=now)
            elif paid is not None and paid.micros != 0:
                raise BoothError(f"booth {booth}: nothing is due, but {paid} was paid")
            end_seq = (await self.ledger._last(conn, acct)).seq
            values = {"state": COLLECTED, "end_seq": end_seq, "collected_at_us": now,
                          "calls": len(bill.lines), "total_micros": bill.total.micros,
                          "credits_micros": bill.credited.micros, "paid_micros": taken.micros,
                          "returned_micros": returned.micros}
            if session.row is not None:
                session_id = session.row.id
                await conn.execute(update(booth_sessions).where(booth_sessions.c.id == session_id)
                                   .values(**values))
            else:
                session_id = (await conn.execute(insert(booth_sessions).values(
                    account_id=acct.id, booth=booth, start_seq=session.start_seq, opened_by="call",
                    opened_at_us=bill.opened_at_us or now, currency=cur.code, **values)
                    .returning(booth_sessions.c.id))).scalar_one()
            done = Bill(booth, COLLECTED, cur, session_id, bill.opened_by, bill.opened_at_us, now,
                        bill.lines, bill.credits, (), taken, returned)
            return Collected(done, taken, returned)

    async def list(self) -> list[Bill]:
        """Open sessions with their running totals (no CDR details), by booth."""
        async with self.store.read() as conn:
            stmt = select(accounts).where(accounts.c.tenant == self.tenant, accounts.c.kind == "booth")
            if self.booths is not None:
                stmt = stmt.where(accounts.c.name.in_(self.booths))
            rows = (await conn.execute(stmt.order_by(accounts.c.name))).all()
            bills = []
            for acct in rows:
                bill = await self._bill(conn, acct.name, await self._session(conn, acct), details=False)
                if bill.state == OPEN:
                    bills.append(bill)
        return bills


def booth_extensions(phones: Iterable[Any]) -> tuple[str, ...]:
    """The extensions of a site's booth phones (config.site.Phone with booth=True)."""
    return tuple(p.extension for p in phones if p.booth)
