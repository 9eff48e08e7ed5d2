"""Live top-ups reach running calls: `switchctl account topup` writes the ledger from another process,
and the controller's `TopupWatcher` (features/prepaid/wiring.py) sees the balance move and has the
cutoff give the live calls their new end. Real SQLite store; the call is a fake bridged leg."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from switchctl.billing.accounts import Accounts
from switchctl.billing.ledger import CallRef, Ledger
from switchctl.billing.money import Money, currency
from switchctl.billing.rating import Rate, RateBook, RateRow, RateTable
from switchctl.config.site import load_site
from switchctl.features.prepaid import ASTERISK_NET, CutoffManager, PrepaidService
from switchctl.features.prepaid.wiring import PrepaidWiring, TopupWatcher
from switchctl.flows.hooks import AuthorizeOutcome, PrepaidRequest
from switchctl.store import Store
from switchctl.switch.call import DialAnswer, DialOutcome, DialResult, DialTarget
from tests.pg_fixture import store_on
from tests.test_prepaid_cutoff import TimedCall

EUR = currency("EUR")
US = 1_000_000
TARGET = DialTarget("gateway", "0044", gateway="upstream")
SITE = Path(__file__).resolve().parent.parent / "examples" / "phonebar" / "site.yaml"


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


def wall() -> int:
    return time.time_ns() // 1000


def one_cent_a_second() -> RateBook:
    rate = Rate(eur("0.60"), eur("0"), 1, 1)  # 0.60/min, 1/1: 1.00 buys exactly 100 s
    rows = [RateRow("default", "default", "44", "UK", rate)]
    return RateBook([RateTable.from_rows("default", "default", rows)])


class Env:
    """The controller's side (its own Ledger/Accounts objects) and, separately, what the CLI process
    would use: other objects on the same database, so nothing is shared in memory."""

    def __init__(self, store: Store) -> None:
        self.ledger = Ledger(store, wall)
        self.accounts = Accounts(store, wall)
        self.cutoff = CutoffManager(self.ledger, safety_net=ASTERISK_NET, warning_seconds=0)
        self.service = PrepaidService(self.ledger, self.accounts, one_cent_a_second, cutoff=self.cutoff)
        self.cli_ledger = Ledger(store, wall)  # `switchctl account topup`, another process
        self.notified: list[int] = []

    async def notify(self, account_id: int) -> None:
        self.notified.append(account_id)
        await self.service.topup(account_id)

    def watcher(self) -> TopupWatcher:
        return TopupWatcher(self.ledger, lambda: {c.account_id for c in self.cutoff.live()}, self.notify)

    async def booth(self, name: str, credit: str) -> int:
        account = await self.accounts.create("booth", name, EUR)
        await self.cli_ledger.topup(account.id, eur(credit), f"float-{name}")
        return account.id

    async def answered_call(self, uuid: str, account: str) -> TimedCall:
        call = TimedCall(uuid, wall)
        auth = await self.service.authorize(call, PrepaidRequest(account, "4420"))
        assert auth.outcome is AuthorizeOutcome.OK
        await self.service.on_answer(call, auth, DialAnswer(f"{uuid}-b", TARGET, wall()))
        call.auth = auth  # type: ignore[attr-defined]
        return call


@pytest.fixture
async def env(tmp_path):
    async with store_on("sqlite", tmp_path) as store:
        await store.create_all()
        e = Env(store)
        yield e
        await e.cutoff.close()


def end_of(env: Env, uuid: str) -> int:
    (live,) = [c for c in env.cutoff.live() if c.ref.call_uuid == uuid]
    return live.end_us


async def test_a_topup_from_another_process_moves_the_live_calls_end(env: Env) -> None:
    acct = await env.booth("1001", "1.00")
    call = await env.answered_call("u1", "1001")
    watcher = env.watcher()
    first_end = end_of(env, "u1")
    assert 99 * US < first_end - wall() <= 100 * US

    assert await watcher.poll() == [acct]  # first sight: recompute once (a top-up may precede it)
    assert end_of(env, "u1") == first_end  # same money, same end
    assert await watcher.poll() == []  # nothing changed: no recompute

    await env.cli_ledger.topup(acct, eur("0.50"), "cli-topup-1")
    assert end_of(env, "u1") == first_end  # the controller has not heard of it yet
    assert await watcher.poll() == [acct]
    assert end_of(env, "u1") - first_end == 50 * US  # 0.50 more at 1 c/s
    assert await watcher.poll() == []
    assert call.times("hangup") == []


async def test_only_accounts_with_live_calls_are_read(env: Env) -> None:
    talking = await env.booth("1001", "1.00")
    idle = await env.booth("1002", "1.00")
    await env.answered_call("u1", "1001")
    reads: list[int] = []
    real_balance = env.ledger.balance

    async def counting_balance(account_id: int) -> Money:
        reads.append(account_id)
        return await real_balance(account_id)

    env.ledger.balance = counting_balance  # type: ignore[method-assign]
    watcher = env.watcher()
    await watcher.poll()
    await env.cli_ledger.topup(idle, eur("5.00"), "idle-topup")
    assert await watcher.poll() == []  # the idle booth's top-up concerns no live call
    assert set(reads) == {talking}


async def test_a_topup_with_a_larger_commit_in_the_same_interval_still_recomputes(env: Env) -> None:
    # Another controller's call on the same booth account holds 0.50, then commits 0.50 in the same
    # interval as a 0.30 top-up: the balance went DOWN by 0.20, yet the money our call may use went
    # up by 0.30 (the other call's hold is gone). Watching for growth only would miss it.
    acct = await env.booth("1001", "2.00")
    other = CallRef("fs2", "their-call")
    await env.cli_ledger.reserve(acct, other, eur("0.50"), "their-reserve")
    call = await env.answered_call("u1", "1001")
    watcher = env.watcher()
    await watcher.poll()
    before = end_of(env, "u1")
    assert 149 * US < before - wall() <= 150 * US  # 2.00 − 0.50 held by the other call

    await env.cli_ledger.topup(acct, eur("0.30"), "cli-topup")
    await env.cli_ledger.commit(other, eur("0.50"), "their-commit")
    assert await env.ledger.balance(acct) == eur("1.80")
    assert await watcher.poll() == [acct]
    assert end_of(env, "u1") - before == 30 * US
    assert call.times("hangup") == []


async def test_an_unreadable_account_is_skipped_and_retried(env: Env) -> None:
    acct = await env.booth("1001", "1.00")
    await env.answered_call("u1", "1001")
    real_balance = env.ledger.balance
    failing = True

    async def flaky_balance(account_id: int) -> Money:
        if failing:
            raise OSError("database is locked")
        return await real_balance(account_id)

    env.ledger.balance = flaky_balance  # type: ignore[method-assign]
    watcher = env.watcher()
    assert await watcher.poll() == []
    failing = False
    assert await watcher.poll() == [acct]


async def test_an_account_whose_calls_ended_is_forgotten(env: Env) -> None:
    acct = await env.booth("1001", "1.00")
    call = await env.answered_call("u1", "1001")
    watcher = env.watcher()
    assert await watcher.poll() == [acct]
    answered = wall()
    await env.service.on_dial_end(call, call.auth, DialResult(  # type: ignore[attr-defined]
        DialOutcome.ANSWERED, "NORMAL_CLEARING", TARGET, "u1-b", answered - 2 * US, answered))
    assert await watcher.poll() == [] and env.cutoff.live() == []
    again = await env.answered_call("u2", "1001")  # a new call: looked at afresh
    assert await watcher.poll() == [acct]
    assert again.times("hangup") == []


async def test_wiring_run_watches_topups_every_poll_interval(tmp_path) -> None:
    site = load_site(SITE)
    async with store_on("sqlite", tmp_path) as store:
        wiring = await PrepaidWiring.start(site, store, catch_up=False)
        wiring.rate_book = one_cent_a_second()
        wiring.site = _with_poll(site, 0.05)
        account = await wiring.accounts.create("booth", "1003", EUR)
        cli = Ledger(store, wall)
        await cli.topup(account.id, eur("1.00"), "float")
        call = TimedCall("w1", wall)
        auth = await wiring.prepaid.authorize(call, PrepaidRequest("1003", "4420"))
        await wiring.prepaid.on_answer(call, auth, DialAnswer("w1-b", TARGET, wall()))
        (live,) = wiring.prepaid.cutoff.live()
        first_end = live.end_us
        stop = asyncio.Event()
        task = asyncio.create_task(wiring.run(stop))
        try:
            await cli.topup(account.id, eur("2.00"), "cli-topup")
            for _ in range(100):  # ≤ 2 s; one poll is 50 ms
                if live.end_us != first_end:
                    break
                await asyncio.sleep(0.02)
            assert live.end_us - first_end == 200 * US
        finally:
            stop.set()
            await asyncio.wait_for(task, 2)
            await wiring.close()


def _with_poll(site, seconds: float):
    from dataclasses import replace

    return replace(site, billing=replace(site.billing, cdr_poll_seconds=seconds))
