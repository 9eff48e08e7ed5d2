"""Prepaid ledger: sums, idempotency, reservations, commit overrun, atomic reserve under concurrency.

Every test runs on SQLite (a file, WAL) and on a throwaway PostgreSQL cluster (tests/pg_fixture.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import pytest
from sqlalchemy import event, select

from switchctl.billing.accounts import Accounts, PinPolicy
from switchctl.billing.ledger import (
    CallRef,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    NoReservation,
    ReservationClosed,
    ReservationExists,
    UnknownAccount,
)
from switchctl.billing.money import CurrencyMismatch, Money, currency
from switchctl.billing.rating import Rate
from switchctl.store import Store
from switchctl.store.models import ledger_entries
from tests.pg_fixture import BACKENDS, FakeClock, store_on

EUR = currency("EUR")
USD = currency("USD")
FAST_PINS = PinPolicy(scrypt_n=2**10)


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


@dataclass
class Env:
    store: Store
    clock: FakeClock
    ledger: Ledger
    accounts: Accounts

    async def account(self, name: str = "booth1", *, credit: str | None = None) -> int:
        acct = await self.accounts.create("booth", name, EUR)
        if credit is not None:
            await self.ledger.topup(acct.id, eur(credit), f"init-{name}")
        return acct.id


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest, tmp_path) -> Env:  # type: ignore[misc]
    async with store_on(request.param, tmp_path) as store:
        clock = FakeClock()
        yield Env(store, clock, Ledger(store, clock), Accounts(store, clock, FAST_PINS))


def call(n: int | str) -> CallRef:
    return CallRef("fs1", f"uuid-{n}", "b")


async def test_topup_balance_and_replay(env: Env) -> None:
    acct = await env.account()
    assert await env.ledger.balance(acct) == eur("0")
    first = await env.ledger.topup(acct, eur("10"), "topup-1", note="cash")
    assert (first.kind, first.amount, first.balance_after, first.replayed) == \
        ("topup", eur("10"), eur("10"), False)
    assert first.created_at_us == env.clock.now
    again = await env.ledger.topup(acct, eur("10"), "topup-1", note="cash")
    assert again == first and again.replayed
    await env.ledger.topup(acct, eur("2.50"), "topup-2")
    assert await env.ledger.balance(acct) == eur("12.50")
    assert await env.ledger.available(acct) == eur("12.50")
    assert [e.seq for e in await env.ledger.entries(acct)] == [1, 2]
    assert await env.ledger.audit(acct) == []


async def test_same_key_for_another_request_is_refused(env: Env) -> None:
    acct = await env.account(credit="10")
    await env.ledger.topup(acct, eur("5"), "k1")
    with pytest.raises(IdempotencyConflict, match="key 'k1' was used for topup of 5.00 EUR"):
        await env.ledger.topup(acct, eur("6"), "k1")
    with pytest.raises(IdempotencyConflict):
        await env.ledger.refund(acct, eur("5"), "k1")
    with pytest.raises(IdempotencyConflict):
        await env.ledger.reserve(acct, call(1), eur("5"), "k1")
    assert len(await env.ledger.entries(acct)) == 2


async def test_keys_are_per_account(env: Env) -> None:
    a = await env.account("a")
    b = await env.account("b")
    await env.ledger.topup(a, eur("1"), "same")
    entry = await env.ledger.topup(b, eur("2"), "same")
    assert not entry.replayed and await env.ledger.balance(b) == eur("2")


async def test_reserve_refused_when_available_is_short(env: Env) -> None:
    acct = await env.account(credit="1")
    with pytest.raises(InsufficientFunds) as refused:
        await env.ledger.reserve(acct, call(1), eur("1.01"), "r1")
    assert (refused.value.available, refused.value.requested) == (eur("1"), eur("1.01"))
    assert "1.00 EUR available, 1.01 EUR requested" in str(refused.value)
    assert await env.ledger.reservation(call(1)) is None
    assert len(await env.ledger.entries(acct)) == 1  # a refusal writes nothing
    await env.ledger.topup(acct, eur("1"), "more")
    entry = await env.ledger.reserve(acct, call(1), eur("1.01"), "r1")  # the same key, now accepted
    assert (entry.held, entry.held_after, entry.balance_after) == (eur("1.01"), eur("1.01"), eur("2"))
    assert await env.ledger.available(acct) == eur("0.99")


async def test_reserve_extend_commit(env: Env) -> None:
    acct = await env.account(credit="10")
    await env.ledger.reserve(acct, call(1), eur("2"), "r1")
    await env.ledger.reserve(acct, call(2), eur("3"), "r2")
    assert await env.ledger.available(acct) == eur("5")
    assert await env.ledger.balance(acct) == eur("10")
    ext = await env.ledger.extend_reservation(call(1), eur("1"), "r1-2")
    assert ext.kind == "reserve" and ext.note == "extension"
    assert (await env.ledger.reservation(call(1))).held == eur("3")  # type: ignore[union-attr]
    with pytest.raises(InsufficientFunds):
        await env.ledger.extend_reservation(call(1), eur("4.01"), "r1-3")
    done = await env.ledger.commit(call(1), eur("2.40"), "c1")
    assert (done.amount, done.held, done.overrun) == (eur("-2.40"), eur("-3"), eur("0"))
    assert (done.balance_after, done.held_after, done.available_after) == (eur("7.60"), eur("3"), eur("4.60"))
    res = await env.ledger.reservation(call(1))
    assert res is not None and (res.state, res.held) == ("committed", eur("0"))
    assert [r.call_ref for r in await env.ledger.live_reservations(acct)] == [call(2)]
    assert await env.ledger.commit(call(1), eur("2.40"), "c1") == done  # replay
    assert await env.ledger.audit(acct) == []


async def test_commit_above_the_reservation_is_recorded_in_full(env: Env, caplog) -> None:
    acct = await env.account(credit="1")
    await env.ledger.reserve(acct, call(1), eur("1"), "r1")
    with caplog.at_level(logging.ERROR, logger="switchctl.billing.ledger"):
        done = await env.ledger.commit(call(1), eur("1.20"), "c1", allowance=eur("0.10"))
    assert done.overrun == eur("0.20") and done.note == "overran the reservation by 0.20 EUR"
    assert await env.ledger.balance(acct) == eur("-0.20")
    assert "0.20 EUR more than its reservation (allowance 0.10 EUR)" in caplog.text
    caplog.clear()
    await env.ledger.reserve(await env.account("b2", credit="1"), call(2), eur("1"), "r2")
    with caplog.at_level(logging.ERROR, logger="switchctl.billing.ledger"):
        within = await env.ledger.commit(call(2), eur("1.10"), "c2", allowance=eur("0.10"))
    assert within.overrun == eur("0.10") and caplog.text == ""


async def test_release_and_closed_reservations(env: Env) -> None:
    acct = await env.account(credit="5")
    await env.ledger.reserve(acct, call(1), eur("4"), "r1")
    rel = await env.ledger.release(call(1), "rel1")
    assert (rel.amount, rel.held, rel.held_after) == (eur("0"), eur("-4"), eur("0"))
    assert await env.ledger.release(call(1), "rel1") == rel
    with pytest.raises(ReservationClosed, match="already released"):
        await env.ledger.commit(call(1), eur("1"), "c1")
    with pytest.raises(ReservationClosed):
        await env.ledger.extend_reservation(call(1), eur("1"), "x1")
    with pytest.raises(ReservationClosed):
        await env.ledger.reserve(acct, call(1), eur("1"), "r1-again")
    await env.ledger.reserve(acct, call(2), eur("1"), "r2")
    with pytest.raises(ReservationExists, match="extend it instead"):
        await env.ledger.reserve(acct, call(2), eur("1"), "r2-again")
    assert await env.ledger.available(acct) == eur("4")


async def test_errors_name_what_is_wrong(env: Env) -> None:
    acct = await env.account(credit="5")
    with pytest.raises(NoReservation, match="call fs1/uuid-9/b has no reservation"):
        await env.ledger.commit(call(9), eur("1"), "c9")
    with pytest.raises(UnknownAccount):
        await env.ledger.topup(4242, eur("1"), "t")
    with pytest.raises(CurrencyMismatch, match="in USD but the account is in EUR"):
        await env.ledger.topup(acct, Money.parse("1", USD), "t")
    with pytest.raises(ValueError, match="positive"):
        await env.ledger.topup(acct, eur("0"), "t")
    with pytest.raises(ValueError, match="positive"):
        await env.ledger.reserve(acct, call(1), eur("-1"), "r")
    with pytest.raises(ValueError, match="needs a note"):
        await env.ledger.adjust(acct, eur("-1"), "a", note=" ")
    with pytest.raises(ValueError, match="idempotency key"):
        await env.ledger.topup(acct, eur("1"), "")
    assert len(await env.ledger.entries(acct)) == 1


async def test_refund_and_adjustment(env: Env) -> None:
    acct = await env.account(credit="5")
    await env.ledger.reserve(acct, call(1), eur("1"), "r1")
    await env.ledger.commit(call(1), eur("0.80"), "c1")
    await env.ledger.refund(acct, eur("0.80"), "refund-c1", call_ref=call(1), note="bad line")
    adj = await env.ledger.adjust(acct, eur("-6"), "adj1", note="cash counted short")
    assert adj.balance_after == eur("-1")
    kinds = [e.kind for e in await env.ledger.entries(acct)]
    assert kinds == ["topup", "reserve", "commit", "refund", "adjustment"]
    assert (await env.ledger.entries(acct, last=2))[0].call_ref == call(1)
    assert await env.ledger.audit(acct) == []


async def test_ledger_is_append_only(env: Env) -> None:
    statements: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.upper())

    event.listen(env.store.engine.sync_engine, "before_cursor_execute", record)
    acct = await env.account(credit="5")
    await env.ledger.reserve(acct, call(1), eur("2"), "r1")
    before = await env.ledger.entries(acct)
    await env.ledger.extend_reservation(call(1), eur("1"), "r1b")
    await env.ledger.commit(call(1), eur("2.5"), "c1")
    await env.ledger.reserve(acct, call(2), eur("1"), "r2")
    await env.ledger.release(call(2), "rel2")
    await env.ledger.adjust(acct, eur("1"), "a", note="goodwill")
    after = await env.ledger.entries(acct)
    assert after[: len(before)] == before
    touching = [s for s in statements if "LEDGER_ENTRIES" in s]
    assert touching and not [s for s in touching if s.lstrip().startswith(("UPDATE", "DELETE"))]
    assert any(s.lstrip().startswith("UPDATE RESERVATIONS") for s in statements)


async def test_concurrent_reserves_cannot_share_credit(env: Env) -> None:
    acct = await env.account(credit="10")

    async def attempt(n: int) -> bool:
        try:
            await env.ledger.reserve(acct, call(n), eur("1"), f"r{n}")
            return True
        except InsufficientFunds:
            return False

    results = await asyncio.gather(*(attempt(n) for n in range(25)))
    assert sum(results) == 10
    assert await env.ledger.available(acct) == eur("0")
    big = await env.account("big", credit="10")
    pair = await asyncio.gather(
        *(env.ledger.reserve(big, call(f"big{n}"), eur("6"), f"b{n}") for n in range(2)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in pair) == ["Entry", "InsufficientFunds"]
    assert await env.ledger.audit(acct) == [] and await env.ledger.audit(big) == []


async def test_concurrent_replays_write_once(env: Env) -> None:
    acct = await env.account()
    entries = await asyncio.gather(*(env.ledger.topup(acct, eur("3"), "once") for _ in range(12)))
    assert len({e.id for e in entries}) == 1 and sum(not e.replayed for e in entries) == 1
    assert await env.ledger.balance(acct) == eur("3")
    async with env.store.read() as conn:
        rows = (await conn.execute(select(ledger_entries.c.id))).all()
    assert len(rows) == 1


async def test_twenty_concurrent_calls_debit_exactly_their_rated_cdrs(env: Env) -> None:
    """20 calls on one account, reserving by slices and extending as they talk, cut when the credit
    runs out: the total debit equals the sum of rated CDRs, and the account is never overdrawn."""
    rate = Rate(eur("0.12"), eur("0.05"), 30, 6)
    acct = await env.account(credit="15")
    slice_us = 60_000_000
    rng = random.Random(20)
    cdrs: dict[CallRef, int] = {}  # answered call → rated cost (micros)

    async def one_call(n: int) -> None:
        ref = call(n)
        await asyncio.sleep(rng.random() / 200)
        try:
            await env.ledger.reserve(acct, ref, rate.cost(slice_us), f"{ref}-r0")
        except InsufficientFunds:
            return  # refused at authorization
        if n % 5 == 0:  # never answered
            await env.ledger.release(ref, f"{ref}-rel")
            return
        wanted = rng.randrange(0, 300_000_000)
        held = rate.cost(slice_us)
        step = 1
        while rate.max_duration(held) < wanted:  # talking: extend slice by slice
            await asyncio.sleep(0)
            more = rate.cost(rate.max_duration(held) + slice_us) - held
            try:
                await env.ledger.extend_reservation(ref, more, f"{ref}-r{step}")
            except InsufficientFunds:
                break
            held += more
            step += 1
        duration = min(wanted, rate.max_duration(held))  # cut at the last paid block
        cost = rate.cost(duration)
        cdrs[ref] = cost.micros
        await env.ledger.commit(ref, cost, f"{ref}-c", allowance=Money.zero(EUR))

    await asyncio.gather(*(one_call(n) for n in range(20)))
    debits = [e for e in await env.ledger.entries(acct) if e.kind == "commit"]
    assert len(debits) == len(cdrs) >= 10
    assert -sum(e.amount.micros for e in debits) == sum(cdrs.values())
    assert all(e.overrun == eur("0") for e in debits)
    assert await env.ledger.balance(acct) == eur("15") - Money(sum(cdrs.values()), EUR)
    assert await env.ledger.balance(acct) >= eur("0")
    assert min(e.available_after for e in await env.ledger.entries(acct)) >= eur("0")
    assert await env.ledger.live_reservations(acct) == []
    assert await env.ledger.audit(acct) == []


async def test_one_call_leg_cannot_reserve_on_two_accounts(env: Env) -> None:
    a = await env.account("a", credit="5")
    b = await env.account("b", credit="5")
    both = await asyncio.gather(
        env.ledger.reserve(a, call(1), eur("1"), "ra"), env.ledger.reserve(b, call(1), eur("1"), "rb"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in both) == ["Entry", "ReservationExists"]
    assert sorted([await env.ledger.available(a), await env.ledger.available(b)]) == [eur("4"), eur("5")]


async def test_a_postgres_restart_does_not_fail_or_double_an_operation(tmp_path, caplog) -> None:
    from tests.pg_fixture import shared_cluster

    async with store_on("postgresql", tmp_path) as store:
        clock = FakeClock()
        ledger = Ledger(store, clock)
        acct = (await Accounts(store, clock, FAST_PINS).create("booth", "b", EUR)).id
        await ledger.topup(acct, eur("5"), "t1")  # the pool now holds a live connection
        shared_cluster().restart()
        with caplog.at_level(logging.WARNING, logger="switchctl.store.database"):
            await ledger.reserve(acct, call(1), eur("2"), "r1")
        assert "store connection lost" in caplog.text
        assert (await ledger.totals(acct)).available == eur("3")
        assert [e.kind for e in await ledger.entries(acct)] == ["topup", "reserve"]
