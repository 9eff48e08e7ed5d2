"""Hypothesis properties of the ledger.

1. Random sequences of every operation agree with a plain Python model; the entries sum to the
   balance and the held total; replaying every successful write with its key returns the first
   result and writes nothing.
2. Random interleavings of start (reserve) / answer / extend / top-up / hangup (commit or release)
   of many calls on one account, run as real concurrent asyncio tasks against the database, never
   take `available` below zero, or below −(one increment) when one call is cut late; the debits equal
   the rated CDRs.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchctl.billing.accounts import Accounts, PinPolicy
from switchctl.billing.ledger import (
    CallRef,
    Entry,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    LedgerError,
)
from switchctl.billing.money import Money, Rounding, currency, divide_rounded
from switchctl.billing.rating import Rate
from tests.pg_fixture import FakeClock, store_on

EUR = currency("EUR")
CENT = 10_000
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

amounts = st.integers(min_value=1, max_value=500).map(lambda c: c * CENT)
calls = st.integers(min_value=0, max_value=4)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), amounts),
        st.tuples(st.just("refund"), amounts),
        st.tuples(st.just("adjust"), st.integers(-300, 300).filter(bool).map(lambda c: c * CENT)),
        st.tuples(st.just("reserve"), calls, amounts),
        st.tuples(st.just("extend"), calls, amounts),
        st.tuples(st.just("commit"), calls, st.integers(0, 600).map(lambda c: c * CENT)),
        st.tuples(st.just("release"), calls),
    ),
    min_size=1, max_size=30,
)


def _ref(n: int) -> CallRef:
    return CallRef("fs1", f"call-{n}")


async def _apply(ledger: Ledger, acct: int, op: tuple, key: str) -> Entry:  # type: ignore[type-arg]
    kind = op[0]
    if kind == "topup":
        return await ledger.topup(acct, Money(op[1], EUR), key)
    if kind == "refund":
        return await ledger.refund(acct, Money(op[1], EUR), key)
    if kind == "adjust":
        return await ledger.adjust(acct, Money(op[1], EUR), key, note="test")
    if kind == "reserve":
        return await ledger.reserve(acct, _ref(op[1]), Money(op[2], EUR), key)
    if kind == "extend":
        return await ledger.extend_reservation(_ref(op[1]), Money(op[2], EUR), key)
    if kind == "commit":
        return await ledger.commit(_ref(op[1]), Money(op[2], EUR), key)
    return await ledger.release(_ref(op[1]), key)


async def _sequence(backend: str, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        async with store_on(backend, Path(tmp)) as store:
            clock = FakeClock()
            ledger = Ledger(store, clock)
            acct = (await Accounts(store, clock, PinPolicy(scrypt_n=2**10)).create("booth", "b", EUR)).id
            balance = held = 0
            live: dict[int, int] = {}  # call → held
            closed: set[int] = set()
            done: list[tuple[tuple, str, Entry]] = []  # type: ignore[type-arg]
            for i, op in enumerate(ops):
                key = f"op{i}"
                kind, call = op[0], (op[1] if op[0] in ("reserve", "extend", "commit", "release") else None)
                # What the model says must happen.
                if kind in ("topup", "refund", "adjust"):
                    expect = "ok"
                elif call in closed:
                    expect = "ReservationClosed"
                elif kind == "reserve":
                    expect = "ReservationExists" if call in live else (
                        "InsufficientFunds" if balance - held < op[2] else "ok")
                elif call not in live:
                    expect = "NoReservation"
                elif kind == "extend":
                    expect = "InsufficientFunds" if balance - held < op[2] else "ok"
                else:
                    expect = "ok"
                try:
                    entry = await _apply(ledger, acct, op, key)
                    outcome = "ok"
                except LedgerError as exc:
                    outcome = type(exc).__name__
                assert outcome == expect, (i, op)
                if outcome != "ok":
                    continue
                done.append((op, key, entry))
                if kind in ("topup", "refund", "adjust"):
                    balance += op[1]
                elif kind in ("reserve", "extend"):
                    live[call] = live.get(call, 0) + op[2]
                    held += op[2]
                else:
                    if kind == "commit":
                        balance -= op[2]
                    held -= live.pop(call)
                    closed.add(call)
                assert (entry.balance_after.micros, entry.held_after.micros) == (balance, held)
            totals = await ledger.totals(acct)
            assert (totals.balance.micros, totals.held.micros) == (balance, held)
            entries = await ledger.entries(acct)
            assert sum(e.amount.micros for e in entries) == balance
            assert sum(e.held.micros for e in entries) == held
            assert sum(r.held.micros for r in await ledger.live_reservations(acct)) == held
            assert await ledger.audit(acct) == []
            # Idempotent replays: the first result, nothing written.
            for op, key, entry in done:
                again = await _apply(ledger, acct, op, key)
                assert again == entry and again.replayed
            assert await ledger.entries(acct) == entries
            if done:  # and the same key for another request is refused
                op, key, entry = done[0]
                other = ("topup", 1) if op[0] != "topup" else ("topup", op[1] + 1)
                with pytest.raises(IdempotencyConflict):
                    await _apply(ledger, acct, other, key)


@settings(SETTINGS, max_examples=60)
@given(operations)
def test_random_sequences_match_the_model_and_replay_sqlite(ops) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_sequence("sqlite", ops))


@settings(SETTINGS, max_examples=15)
@given(operations)
def test_random_sequences_match_the_model_and_replay_postgres(ops) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_sequence("postgresql", ops))


# ------------------------------------------------------------------------------------------------
# Interleavings of calls on one account


rates = st.builds(
    lambda per_minute, fee, blocks: Rate(Money(per_minute * CENT, EUR), Money(fee * CENT, EUR), *blocks),
    st.integers(1, 200), st.integers(0, 20), st.sampled_from([(1, 1), (30, 6), (60, 60), (60, 30), (10, 10)]),
)
call_plans = st.lists(
    st.tuples(
        st.integers(0, 900_000_000),  # how long the caller wants to talk (µs)
        st.booleans(),  # answered
        st.integers(0, 5),  # how many scheduling turns before starting
    ),
    min_size=1, max_size=8,
)


def one_increment(rate: Rate) -> int:
    """What one more increment can add to a call's rounded-up cost (micros)."""
    exact = divide_rounded(rate.per_minute.micros * rate.increment_s, 60, Rounding.UP)
    step = rate.currency.micros_per_minor
    return divide_rounded(exact, step, Rounding.UP) * step


async def _interleave(
    backend: str, rate: Rate, credit_cents: int, plans: list[tuple[int, bool, int]],
    topups: list[tuple[int, int]], late_call: int | None, seed: int,
) -> None:
    rng = random.Random(seed)
    slice_us = 30_000_000
    with tempfile.TemporaryDirectory() as tmp:
        async with store_on(backend, Path(tmp)) as store:
            clock = FakeClock()
            ledger = Ledger(store, clock)
            acct = (await Accounts(store, clock, PinPolicy(scrypt_n=2**10)).create("booth", "b", EUR)).id
            seen: list[Entry] = []
            if credit_cents:
                seen.append(await ledger.topup(acct, Money(credit_cents * CENT, EUR), "initial"))
            cdrs: list[int] = []

            async def turns(n: int) -> None:
                for _ in range(n):
                    await asyncio.sleep(0)

            async def a_call(n: int, wanted: int, answered: bool, delay: int) -> None:
                ref = CallRef("fs1", f"c{n}")
                await turns(delay)
                first = rate.cost(slice_us)
                try:
                    seen.append(await ledger.reserve(acct, ref, first, f"{ref}-r"))
                    held = first
                except InsufficientFunds as refused:  # take what is left if it pays a first block
                    if refused.available < rate.cost(1):
                        return
                    try:
                        seen.append(await ledger.reserve(acct, ref, refused.available, f"{ref}-r"))
                    except InsufficientFunds:
                        return  # another call took it meanwhile
                    held = refused.available
                await turns(rng.randrange(3))
                if not answered:
                    seen.append(await ledger.release(ref, f"{ref}-rel"))
                    return
                step = 0
                while rate.max_duration(held) < wanted:
                    await turns(rng.randrange(3))
                    more = rate.cost(rate.max_duration(held) + slice_us) - held
                    try:
                        seen.append(await ledger.extend_reservation(ref, more, f"{ref}-x{step}"))
                    except InsufficientFunds as short:
                        if short.available.micros <= 0:
                            break
                        more = short.available
                        try:
                            seen.append(await ledger.extend_reservation(ref, more, f"{ref}-y{step}"))
                        except InsufficientFunds:
                            break
                    held += more
                    step += 1
                paid = rate.max_duration(held)
                duration = min(wanted, paid)
                if n == late_call and wanted > paid:  # the cut-off came late, within one increment
                    duration = min(wanted, paid + rng.randrange(1, rate.increment_us))
                cost = rate.cost(duration)
                cdrs.append(cost.micros)
                seen.append(await ledger.commit(ref, cost, f"{ref}-c"))

            async def a_topup(i: int, delay: int, cents: int) -> None:
                await turns(delay)
                seen.append(await ledger.topup(acct, Money(cents * CENT, EUR), f"topup-{i}"))

            await asyncio.gather(
                *(a_call(n, *plan) for n, plan in enumerate(plans)),
                *(a_topup(i, delay, cents) for i, (delay, cents) in enumerate(topups)),
            )
            floor = -one_increment(rate) if late_call is not None else 0
            assert min((e.available_after.micros for e in seen), default=0) >= floor
            entries = await ledger.entries(acct)
            assert sorted(e.id for e in seen) == [e.id for e in entries]
            debits = -sum(e.amount.micros for e in entries if e.kind == "commit")
            assert debits == sum(cdrs)
            credits = credit_cents * CENT + sum(c * CENT for _, c in topups)
            assert (await ledger.balance(acct)).micros == credits - debits >= floor
            assert await ledger.live_reservations(acct) == []
            assert await ledger.audit(acct) == []


interleavings = dict(
    rate=rates,
    credit_cents=st.integers(0, 2000),
    plans=call_plans,
    topups=st.lists(st.tuples(st.integers(0, 8), st.integers(1, 500)), max_size=3),
    late=st.booleans(),
    seed=st.integers(0, 2**32),
)


@settings(SETTINGS, max_examples=50)
@given(**interleavings)
def test_interleaved_calls_never_overdraw_sqlite(rate, credit_cents, plans, topups, late, seed) -> None:  # type: ignore[no-untyped-def]
    late_call = seed % len(plans) if late else None
    asyncio.run(_interleave("sqlite", rate, credit_cents, plans, topups, late_call, seed))


@settings(SETTINGS, max_examples=12)
@given(**interleavings)
def test_interleaved_calls_never_overdraw_postgres(rate, credit_cents, plans, topups, late, seed) -> None:  # type: ignore[no-untyped-def]
    late_call = seed % len(plans) if late else None
    asyncio.run(_interleave("postgresql", rate, credit_cents, plans, topups, late_call, seed))
