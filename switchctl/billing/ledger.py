"""The prepaid ledger: append-only entries with idempotency keys; balances are derived from them.

- `balance` = Σ amount of the account's entries (top-ups, refunds and adjustments add, commits
  subtract; reserve/release entries carry 0). `held` = Σ held of its entries = what its live
  reservations hold. `available` = balance − held: what a new call may reserve.
- Each entry also carries the account's running totals after it (`balance_after`, `held_after`) and
  a per-account sequence number, so reading a balance is one indexed row; `audit` re-derives the
  totals from the sums and compares.
- A call leg (`CallRef`) has at most one reservation: `reserve` opens it, `extend_reservation` adds
  to it, then exactly one of `commit` (the rated amount becomes a debit and the hold is freed) or
  `release` (the hold is freed, nothing is debited) closes it.
- `reserve` and `extend_reservation` refuse with `InsufficientFunds` when available < amount. The
  check and the write run in one transaction that holds the account's lock (SQLite: BEGIN
  IMMEDIATE; PostgreSQL: SELECT … FOR UPDATE on the account row), so concurrent reservations on one
  account can never both pass on the same credit.
- `commit` always records the full rated amount, even above what was held (the cut-off came late):
  money is never lost; the excess is reported (`Entry.overrun`) and logged when above `allowance`.
- Every write takes an idempotency key, unique per account. Repeating a write with the same key
  returns the first result (`replayed=True`) and writes nothing; the same key for a different
  request raises `IdempotencyConflict`. A refused reservation writes nothing, so its key may be
  retried later.
- Nothing in `ledger_entries` is ever updated or deleted. `reservations` rows change state.
See docs/LEDGER.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from switchctl.billing.money import Currency, CurrencyMismatch, Money
from switchctl.store.database import Store, retry_on_disconnect
from switchctl.store.models import accounts, ledger_entries, reservations

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # now, in epoch µs

TOPUP, RESERVE, COMMIT, RELEASE, REFUND, ADJUSTMENT = (
    "topup", "reserve", "commit", "release", "refund", "adjustment",
)
LIVE, COMMITTED, RELEASED = "live", "committed", "released"
MAX_KEY_LENGTH = 200


class LedgerError(Exception):
    """A ledger operation was refused; nothing was written."""


class UnknownAccount(LedgerError, LookupError):
    pass


class InsufficientFunds(LedgerError):
    def __init__(self, account_id: int, requested: Money, available: Money) -> None:
        super().__init__(
            f"account {account_id}: {available} available, {requested} requested"
        )
        self.account_id = account_id
        self.requested = requested
        self.available = available


class NoReservation(LedgerError, LookupError):
    pass


class ReservationExists(LedgerError):
    """The call leg already has a reservation (use extend_reservation)."""


class ReservationClosed(LedgerError):
    """The call leg's reservation was already committed or released."""


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused for a different request."""


@dataclass(frozen=True, slots=True)
class CallRef:
    """One leg of one call on one switch: what a reservation and its commit belong to."""

    switch: str
    call_uuid: str
    leg: str = "a"

    def __str__(self) -> str:
        return f"{self.switch}/{self.call_uuid}/{self.leg}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line. `amount`: signed change of the balance; `held`: signed change of the
    amount on hold; `*_after`: the account's totals including this line."""

    id: int
    account_id: int
    seq: int
    kind: str
    amount: Money
    held: Money
    balance_after: Money
    held_after: Money
    key: str
    call_ref: CallRef | None
    created_at_us: int
    note: str
    replayed: bool = field(default=False, compare=False)

    @property
    def available_after(self) -> Money:
        return self.balance_after - self.held_after

    @property
    def overrun(self) -> Money:
        """For a commit: how much the debit exceeded what the reservation held (else 0)."""
        if self.kind != COMMIT:
            return Money.zero(self.amount.currency)
        excess = -self.amount.micros + self.held.micros  # debit − freed hold
        return Money(max(0, excess), self.amount.currency)


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    account_id: int
    call_ref: CallRef
    held: Money
    state: str
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True, slots=True)
class Totals:
    balance: Money
    held: Money

    @property
    def available(self) -> Money:
        return self.balance - self.held


class _Last(NamedTuple):
    """An account's running totals as of its last entry (all 0 before the first)."""

    seq: int
    balance: int
    held: int


def account_currency(row: Row[Any]) -> Currency:
    return Currency(row.currency, row.currency_exponent)


def _entry(row: Row[Any], cur: Currency, *, replayed: bool = False) -> Entry:
    ref = CallRef(row.switch, row.call_uuid, row.leg) if row.call_uuid is not None else None
    return Entry(
        id=row.id, account_id=row.account_id, seq=row.seq, kind=row.kind,
        amount=Money(row.amount_micros, cur), held=Money(row.held_micros, cur),
        balance_after=Money(row.balance_after_micros, cur),
        held_after=Money(row.held_after_micros, cur),
        key=row.idempotency_key, call_ref=ref, created_at_us=row.created_at_us, note=row.note,
        replayed=replayed,
    )


def _reservation(row: Row[Any], cur: Currency) -> Reservation:
    return Reservation(
        id=row.id, account_id=row.account_id,
        call_ref=CallRef(row.switch, row.call_uuid, row.leg), held=Money(row.held_micros, cur),
        state=row.state, created_at_us=row.created_at_us, updated_at_us=row.updated_at_us,
    )


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"idempotency key must be a non-empty string of at most {MAX_KEY_LENGTH} "
                         f"characters, not {key!r}")


def _check_amount(what: str, amount: Money, cur: Currency, *, minimum: int | None) -> None:
    if not isinstance(amount, Money):
        raise TypeError(f"{what} must be Money, not {type(amount).__name__}")
    if amount.currency != cur:
        raise CurrencyMismatch(f"{what} is in {amount.currency} but the account is in {cur}")
    if minimum is not None and amount.micros < minimum:
        raise ValueError(f"{what} must be {'positive' if minimum else 'zero or more'}, not {amount}")


class Ledger:
    """Prepaid ledger operations over a `Store`. `clock()` gives entry times (epoch µs)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # -- reads ------------------------------------------------------------------------------------
    @retry_on_disconnect
    async def totals(self, account_id: int) -> Totals:
        async with self.store.read() as conn:
            row = await self._account(conn, account_id, lock=False)
            return await self._totals(conn, row)

    async def balance(self, account_id: int) -> Money:
        """Σ settled entries: top-ups + refunds + adjustments − commits."""
        return (await self.totals(account_id)).balance

    async def available(self, account_id: int) -> Money:
        """Balance − live reservations: the most a new reservation may take."""
        return (await self.totals(account_id)).available

    @retry_on_disconnect
    async def reservation(self, call_ref: CallRef) -> Reservation | None:
        async with self.store.read() as conn:
            row = await self._reservation_row(conn, call_ref)
            if row is None:
                return None
            acct = await self._account(conn, row.account_id, lock=False)
            return _reservation(row, account_currency(acct))

    @retry_on_disconnect
    async def live_reservations(self, account_id: int) -> list[Reservation]:
        async with self.store.read() as conn:
            acct = await self._account(conn, account_id, lock=False)
            rows = (await conn.execute(
                select(reservations)
                .where(reservations.c.account_id == account_id, reservations.c.state == LIVE)
                .order_by(reservations.c.id)
            )).all()
            return [_reservation(r, account_currency(acct)) for r in rows]

    @retry_on_disconnect
    async def entries(self, account_id: int, *, last: int | None = None) -> list[Entry]:
        """The account's entries in order (only the `last` n if given)."""
        async with self.store.read() as conn:
            acct = await self._account(conn, account_id, lock=False)
            stmt = select(ledger_entries).where(ledger_entries.c.account_id == account_id)
            if last is not None:
                stmt = stmt.order_by(ledger_entries.c.seq.desc()).limit(last)
                rows = list(reversed((await conn.execute(stmt)).all()))
            else:
                rows = (await conn.execute(stmt.order_by(ledger_entries.c.seq))).all()
            return [_entry(r, account_currency(acct)) for r in rows]

    @retry_on_disconnect
    async def audit(self, account_id: int) -> list[str]:
        """Re-derive the account's totals from the sums of its entries and its live reservations;
        the list of disagreements (empty when the ledger is consistent)."""
        async with self.store.read() as conn:
            acct = await self._account(conn, account_id, lock=False)
            cur = account_currency(acct)
            sums = (await conn.execute(
                select(func.coalesce(func.sum(ledger_entries.c.amount_micros), 0),
                       func.coalesce(func.sum(ledger_entries.c.held_micros), 0),
                       func.count(), func.coalesce(func.max(ledger_entries.c.seq), 0))
                .where(ledger_entries.c.account_id == account_id)
            )).one()
            live = (await conn.execute(
                select(func.coalesce(func.sum(reservations.c.held_micros), 0))
                .where(reservations.c.account_id == account_id, reservations.c.state == LIVE)
            )).scalar_one()
            totals = await self._totals(conn, acct)
        problems = []
        balance, held, count, max_seq = (int(v) for v in sums)
        if balance != totals.balance.micros:
            problems.append(f"Σ amount {Money(balance, cur)} != balance {totals.balance}")
        if held != totals.held.micros:
            problems.append(f"Σ held {Money(held, cur)} != held {totals.held}")
        if int(live) != held:
            problems.append(f"live reservations hold {Money(int(live), cur)}, entries {Money(held, cur)}")
        if count != max_seq:
            problems.append(f"{count} entries but last seq {max_seq}")
        return problems

    # -- settled entries --------------------------------------------------------------------------
    async def topup(self, account_id: int, amount: Money, key: str, *, note: str = "") -> Entry:
        """Credit `amount` (> 0) to the account."""
        return await self._settle(account_id, TOPUP, amount, key, note=note, minimum=1)

    async def refund(
        self, account_id: int, amount: Money, key: str, *, call_ref: CallRef | None = None,
        note: str = "",
    ) -> Entry:
        """Give back `amount` (> 0), e.g. for a bad call (`call_ref`)."""
        return await self._settle(account_id, REFUND, amount, key, call_ref=call_ref, note=note,
                                  minimum=1)

    async def adjust(self, account_id: int, amount: Money, key: str, *, note: str) -> Entry:
        """A signed correction by an operator; `note` says why (required)."""
        if not note.strip():
            raise ValueError("an adjustment needs a note saying why")
        if amount.micros == 0:
            raise ValueError("an adjustment of 0 changes nothing")
        return await self._settle(account_id, ADJUSTMENT, amount, key, note=note, minimum=None)

    @retry_on_disconnect
    async def _settle(
        self, account_id: int, kind: str, amount: Money, key: str, *, note: str,
        minimum: int | None, call_ref: CallRef | None = None,
    ) -> Entry:
        _check_key(key)
        async with self.store.write() as conn:
            acct = await self._account(conn, account_id, lock=True)
            cur = account_currency(acct)
            _check_amount(f"{kind} amount", amount, cur, minimum=minimum)
            first = await self._replay(conn, acct, key, kind, amount.micros, call_ref)
            if first is not None:
                return first
            return await self._append(conn, acct, kind, amount.micros, 0, key, amount.micros,
                                      call_ref, note)

    # -- reservations -----------------------------------------------------------------------------
    @retry_on_disconnect
    async def reserve(self, account_id: int, call_ref: CallRef, amount: Money, key: str) -> Entry:
        """Put `amount` (> 0) on hold for `call_ref`; InsufficientFunds if available < amount."""
        _check_key(key)
        try:
            async with self.store.write() as conn:
                acct = await self._account(conn, account_id, lock=True)
                cur = account_currency(acct)
                _check_amount("reservation", amount, cur, minimum=1)
                first = await self._replay(conn, acct, key, RESERVE, amount.micros, call_ref)
                if first is not None:
                    return first
                existing = await self._reservation_row(conn, call_ref)
                if existing is not None:
                    if existing.state != LIVE:
                        raise ReservationClosed(f"call {call_ref}: reservation already {existing.state}")
                    raise ReservationExists(f"call {call_ref} already holds "
                                            f"{Money(existing.held_micros, cur)}; extend it instead")
                last = await self._require(conn, acct, amount)
                now = self.clock()
                await conn.execute(insert(reservations).values(
                    account_id=account_id, switch=call_ref.switch, call_uuid=call_ref.call_uuid,
                    leg=call_ref.leg, held_micros=amount.micros, state=LIVE,
                    created_at_us=now, updated_at_us=now,
                ))
                return await self._append(conn, acct, RESERVE, 0, amount.micros, key,
                                          amount.micros, call_ref, "", now=now, last=last)
        except IntegrityError as exc:
            # The same call leg reserved concurrently on another account (each account is locked,
            # but the call ref is unique across accounts). Anything else is a real fault.
            text = str(exc.orig)
            if "uq_reservations_call" in text or "reservations.call_uuid" in text:
                raise ReservationExists(f"call {call_ref} was reserved concurrently elsewhere") from exc
            raise

    @retry_on_disconnect
    async def extend_reservation(self, call_ref: CallRef, amount: Money, key: str) -> Entry:
        """Hold `amount` (> 0) more for the live reservation of `call_ref`."""
        _check_key(key)
        async with self.store.write() as conn:
            res, acct = await self._locked_reservation(conn, call_ref)
            cur = account_currency(acct)
            _check_amount("extension", amount, cur, minimum=1)
            first = await self._replay(conn, acct, key, RESERVE, amount.micros, call_ref)
            if first is not None:
                return first
            self._require_live(res, call_ref)
            last = await self._require(conn, acct, amount)
            now = self.clock()
            await conn.execute(update(reservations).where(reservations.c.id == res.id).values(
                held_micros=res.held_micros + amount.micros, updated_at_us=now))
            return await self._append(conn, acct, RESERVE, 0, amount.micros, key, amount.micros,
                                      call_ref, "extension", now=now, last=last)

    @retry_on_disconnect
    async def commit(
        self, call_ref: CallRef, actual_amount: Money, key: str, *, allowance: Money | None = None,
    ) -> Entry:
        """Close the reservation of `call_ref`: debit `actual_amount` (the rated cost, ≥ 0) and free
        the hold. The debit is recorded in full even if it exceeds the hold; an excess above
        `allowance` (one increment, normally) is logged as an error."""
        _check_key(key)
        async with self.store.write() as conn:
            res, acct = await self._locked_reservation(conn, call_ref)
            cur = account_currency(acct)
            _check_amount("committed amount", actual_amount, cur, minimum=0)
            first = await self._replay(conn, acct, key, COMMIT, actual_amount.micros, call_ref)
            if first is not None:
                return first
            self._require_live(res, call_ref)
            held = res.held_micros
            overrun = actual_amount.micros - held
            note = f"overran the reservation by {Money(overrun, cur)}" if overrun > 0 else ""
            now = self.clock()
            await conn.execute(update(reservations).where(reservations.c.id == res.id).values(
                held_micros=0, state=COMMITTED, updated_at_us=now))
            entry = await self._append(conn, acct, COMMIT, -actual_amount.micros, -held, key,
                                       actual_amount.micros, call_ref, note, now=now)
        if allowance is not None and overrun > allowance.micros:
            log.error("account %s: call %s debited %s, %s more than its reservation (allowance %s)",
                      acct.id, call_ref, actual_amount, Money(overrun, cur), allowance)
        return entry

    @retry_on_disconnect
    async def release(self, call_ref: CallRef, key: str) -> Entry:
        """Close the reservation of `call_ref` without debiting (the call was never answered)."""
        _check_key(key)
        async with self.store.write() as conn:
            res, acct = await self._locked_reservation(conn, call_ref)
            first = await self._replay(conn, acct, key, RELEASE, 0, call_ref)
            if first is not None:
                return first
            self._require_live(res, call_ref)
            now = self.clock()
            await conn.execute(update(reservations).where(reservations.c.id == res.id).values(
                held_micros=0, state=RELEASED, updated_at_us=now))
            return await self._append(conn, acct, RELEASE, 0, -res.held_micros, key, 0, call_ref,
                                      "", now=now)

    # -- internals --------------------------------------------------------------------------------
    async def _account(self, conn: AsyncConnection, account_id: int, *, lock: bool) -> Row[Any]:
        if lock:
            row = await self.store.lock_account(conn, account_id)
        else:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        if row is None:
            raise UnknownAccount(f"no account {account_id}")
        return row

    async def _last(self, conn: AsyncConnection, acct: Row[Any]) -> _Last:
        row = (await conn.execute(
            select(ledger_entries.c.seq, ledger_entries.c.balance_after_micros,
                   ledger_entries.c.held_after_micros)
            .where(ledger_entries.c.account_id == acct.id)
            .order_by(ledger_entries.c.seq.desc()).limit(1)
        )).first()
        return _Last(0, 0, 0) if row is None else _Last(row[0], row[1], row[2])

    async def _totals(self, conn: AsyncConnection, acct: Row[Any]) -> Totals:
        cur = account_currency(acct)
        last = await self._last(conn, acct)
        return Totals(Money(last.balance, cur), Money(last.held, cur))

    async def _reservation_row(self, conn: AsyncConnection, call_ref: CallRef) -> Row[Any] | None:
        return (await conn.execute(select(reservations).where(
            reservations.c.switch == call_ref.switch,
            reservations.c.call_uuid == call_ref.call_uuid,
            reservations.c.leg == call_ref.leg,
        ))).first()

    async def _locked_reservation(
        self, conn: AsyncConnection, call_ref: CallRef,
    ) -> tuple[Row[Any], Row[Any]]:
        """The reservation of `call_ref` and its account, the account locked; the reservation is
        re-read after the lock (every change to it happens under that same lock)."""
        res = await self._reservation_row(conn, call_ref)
        if res is None:
            raise NoReservation(f"call {call_ref} has no reservation")
        acct = await self._account(conn, res.account_id, lock=True)
        if not self.store.is_sqlite:  # SQLite held the write lock before the first read
            res = await self._reservation_row(conn, call_ref)
            assert res is not None  # reservations are never deleted
        return res, acct

    @staticmethod
    def _require_live(res: Row[Any], call_ref: CallRef) -> None:
        if res.state != LIVE:
            raise ReservationClosed(f"call {call_ref}: reservation already {res.state}")

    async def _require(self, conn: AsyncConnection, acct: Row[Any], amount: Money) -> _Last:
        """The account's last totals, if they leave `amount` available (else InsufficientFunds).
        Read in a statement of its own *after* the account lock: on PostgreSQL a statement that
        waited for the lock still sees its own older snapshot in its subqueries."""
        last = await self._last(conn, acct)
        available = last.balance - last.held
        if available < amount.micros:
            raise InsufficientFunds(acct.id, amount, Money(available, amount.currency))
        return last

    async def _replay(
        self, conn: AsyncConnection, acct: Row[Any], key: str, kind: str, requested: int,
        call_ref: CallRef | None,
    ) -> Entry | None:
        row = (await conn.execute(select(ledger_entries).where(
            ledger_entries.c.account_id == acct.id, ledger_entries.c.idempotency_key == key,
        ))).first()
        if row is None:
            return None
        first = _entry(row, account_currency(acct), replayed=True)
        if (row.kind, row.requested_micros, first.call_ref) != (kind, requested, call_ref):
            raise IdempotencyConflict(
                f"account {acct.id}: key '{key}' was used for {row.kind} of "
                f"{Money(row.requested_micros, account_currency(acct))}"
                f"{f' on call {first.call_ref}' if first.call_ref else ''}, not for this {kind}"
            )
        return first

    async def _append(
        self, conn: AsyncConnection, acct: Row[Any], kind: str, amount: int, held: int, key: str,
        requested: int, call_ref: CallRef | None, note: str, *, now: int | None = None,
        last: _Last | None = None,
    ) -> Entry:
        """Insert the next entry of the locked account (`last`: its totals, if just read)."""
        seq, balance, on_hold = last if last is not None else await self._last(conn, acct)
        values = dict(
            account_id=acct.id, seq=seq + 1, kind=kind, amount_micros=amount, held_micros=held,
            balance_after_micros=balance + amount, held_after_micros=on_hold + held,
            currency=acct.currency, idempotency_key=key, requested_micros=requested,
            switch=call_ref.switch if call_ref else None,
            call_uuid=call_ref.call_uuid if call_ref else None,
            leg=call_ref.leg if call_ref else None,
            created_at_us=self.clock() if now is None else now, note=note,
        )
        new_id = (await conn.execute(
            insert(ledger_entries).values(**values).returning(ledger_entries.c.id)
        )).scalar_one()
        cur = account_currency(acct)
        return Entry(
            id=new_id, account_id=acct.id, seq=seq + 1, kind=kind, amount=Money(amount, cur),
            held=Money(held, cur), balance_after=Money(balance + amount, cur),
            held_after=Money(on_hold + held, cur), key=key, call_ref=call_ref,
            created_at_us=values["created_at_us"], note=note,
        )
