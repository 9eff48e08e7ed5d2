"""Prepaid accounts and calling-card PIN authentication (hashing, lockout), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from switchctl.billing.accounts import (
    AccountError,
    AccountExists,
    Accounts,
    PinPolicy,
    hash_pin,
    verify_pin,
)
from switchctl.billing.ledger import CallRef, Ledger, UnknownAccount
from switchctl.billing.money import Money, currency
from switchctl.store.models import accounts
from tests.pg_fixture import BACKENDS, FakeClock, store_on

EUR = currency("EUR")
JPY = currency("JPY")
POLICY = PinPolicy(scrypt_n=2**10)
MINUTE = 60_000_000


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    async with store_on(request.param, tmp_path) as store:
        clock = FakeClock()
        yield store, clock, Accounts(store, clock, POLICY)


async def test_create_find_and_refuse(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    booth = await accts.create("booth", "booth-3", EUR, tenant="bar1", account_class="local")
    assert (booth.kind, booth.tenant, booth.account_class, booth.currency, booth.has_pin) == \
        ("booth", "bar1", "local", EUR, False)
    assert await accts.find("booth-3", tenant="bar1") == booth
    assert await accts.find("booth-3") is None  # other tenant
    assert (await accts.create("customer", "booth-3", JPY)).currency == JPY  # same name, other tenant
    with pytest.raises(AccountExists, match="tenant 'bar1' already has an account named 'booth-3'"):
        await accts.create("customer", "booth-3", EUR, tenant="bar1")
    with pytest.raises(AccountError, match="kind 'boat'"):
        await accts.create("boat", "x", EUR)
    with pytest.raises(AccountError, match="only cards have a PIN"):
        await accts.create("booth", "x", EUR, pin="1234")
    with pytest.raises(AccountError, match="a card needs a PIN"):
        await accts.create("card", "x", EUR)
    with pytest.raises(AccountError, match="4 to 16 digits"):
        await accts.create("card", "x", EUR, pin="12a4")
    with pytest.raises(AccountError, match="name ' x'"):
        await accts.create("booth", " x", EUR)
    with pytest.raises(UnknownAccount, match="no account named 'nope'"):
        await accts.named("nope")


async def test_pins_are_salted_hashes(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    await accts.create("card", "5001", EUR, pin="4321")
    await accts.create("card", "5002", EUR, pin="4321")
    async with store.read() as conn:
        hashes = (await conn.execute(select(accounts.c.pin_hash).order_by(accounts.c.id))).scalars().all()
    assert len(set(hashes)) == 2 and all(h.startswith("scrypt$1024$8$1$") and "4321" not in h for h in hashes)
    assert verify_pin("4321", hashes[0]) and not verify_pin("4320", hashes[0])
    assert not verify_pin("4321", "garbage") and not verify_pin("4321", "md5$1$2$3$4$5")


def test_hash_format_is_stable_for_a_salt() -> None:
    assert hash_pin("1234", POLICY, b"\0" * 16) == hash_pin("1234", POLICY, b"\0" * 16)


async def test_authenticate_and_lock_out(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    card = await accts.create("card", "5001", EUR, pin="2468")
    ok = await accts.authenticate_card("5001", "2468")
    assert ok.ok and ok.reason == "ok" and ok.account is not None and ok.account.id == card.id
    assert (await accts.authenticate_card("5001", "1111")).reason == "invalid"
    assert (await accts.authenticate_card("5001", "2222")).reason == "invalid"
    third = await accts.authenticate_card("5001", "3333")
    assert (third.ok, third.reason) == (False, "locked")
    assert third.locked_until_us is not None and third.locked_until_us > clock.now + 14 * MINUTE
    right_but_locked = await accts.authenticate_card("5001", "2468")
    assert (right_but_locked.ok, right_but_locked.reason) == (False, "locked")
    clock.advance(15 * MINUTE)
    assert (await accts.authenticate_card("5001", "2468")).ok
    # A success clears the count: two more failures do not lock.
    for pin in ("0000", "0001"):
        assert (await accts.authenticate_card("5001", pin)).reason == "invalid"
    assert (await accts.authenticate_card("5001", "2468")).ok


async def test_failures_outside_the_window_do_not_add_up(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    await accts.create("card", "5001", EUR, pin="2468")
    assert (await accts.authenticate_card("5001", "1111")).reason == "invalid"
    assert (await accts.authenticate_card("5001", "1112")).reason == "invalid"
    clock.advance(16 * MINUTE)  # the window of the first failure is over
    assert (await accts.authenticate_card("5001", "1113")).reason == "invalid"
    assert (await accts.authenticate_card("5001", "1114")).reason == "invalid"
    assert (await accts.authenticate_card("5001", "1115")).reason == "locked"


async def test_unknown_card_and_wrong_kind_look_like_a_wrong_pin(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    await accts.create("booth", "7001", EUR)
    assert (await accts.authenticate_card("9999", "1234")).reason == "invalid"
    assert (await accts.authenticate_card("7001", "1234")).reason == "invalid"


async def test_parallel_guesses_cannot_exceed_the_limit(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    await accts.create("card", "5001", EUR, pin="2468")
    guesses = [f"{n:04d}" for n in range(12)]
    results = await asyncio.gather(*(accts.authenticate_card("5001", g) for g in guesses))
    assert [r.reason for r in results].count("invalid") == POLICY.max_failures - 1
    assert [r.reason for r in results].count("locked") == len(guesses) - POLICY.max_failures + 1
    assert (await accts.authenticate_card("5001", "2468")).reason == "locked"


async def test_set_pin_unlocks(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    card = await accts.create("card", "5001", EUR, pin="2468")
    for pin in ("0000", "0001", "0002"):
        await accts.authenticate_card("5001", pin)
    await accts.set_pin(card.id, "13579")
    assert (await accts.authenticate_card("5001", "13579")).ok
    assert not (await accts.authenticate_card("5001", "2468")).ok
    booth = await accts.create("booth", "b", EUR)
    with pytest.raises(AccountError, match="only cards have a PIN"):
        await accts.set_pin(booth.id, "1234")


async def test_summary_for_account_show(env) -> None:  # type: ignore[no-untyped-def]
    store, clock, accts = env
    ledger = Ledger(store, clock)
    acct = await accts.create("booth", "booth-1", EUR)
    await ledger.topup(acct.id, Money.parse("20", EUR), "t1")
    await ledger.reserve(acct.id, CallRef("fs1", "u1"), Money.parse("1.5", EUR), "r1")
    summary = await accts.summary(ledger, "booth-1", recent=1)
    assert summary.account == acct
    assert (summary.totals.balance, summary.totals.available) == \
        (Money.parse("20", EUR), Money.parse("18.5", EUR))
    assert [r.call_ref.call_uuid for r in summary.reservations] == ["u1"]
    assert [e.kind for e in summary.recent] == ["reserve"]
