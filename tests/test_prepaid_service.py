"""PrepaidService on a real SQLite ledger: authorization outcomes, settlement, the live view, and a
real-time cut measured on the wall clock."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from switchctl.billing.accounts import Accounts, PinPolicy
from switchctl.billing.callkeys import commit_key, reservation_ref
from switchctl.billing.ledger import Ledger
from switchctl.billing.money import Money, currency
from switchctl.billing.rating import Rate, RateBook, RateRow, RateTable
from switchctl.features.prepaid import (
    ASTERISK_NET,
    CREDIT_EXHAUSTED,
    CutoffManager,
    PrepaidService,
)
from switchctl.flows.hooks import AuthorizeOutcome, PrepaidRequest
from switchctl.switch.call import DialAnswer, DialOutcome, DialResult, DialTarget
from tests.pg_fixture import store_on
from tests.test_prepaid_cutoff import TimedCall

EUR = currency("EUR")
US = 1_000_000
FAST_PINS = PinPolicy(scrypt_n=2**10, max_failures=2)
TARGET = DialTarget("gateway", "0044", gateway="upstream")


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


def book(per_minute: str = "0.60", initial: int = 1, increment: int = 1) -> RateBook:
    rows = [RateRow("default", "default", "44", "UK", Rate(eur(per_minute), eur("0"), initial, increment)),
            RateRow("default", "default", "33", "FR", Rate(eur("1.20"), eur("0.10"), 60, 60))]
    return RateBook([RateTable.from_rows("default", "default", rows)])


def wall() -> int:
    return time.time_ns() // 1000


class Env:
    def __init__(self, store) -> None:
        self.store = store
        self.ledger = Ledger(store, wall)
        self.accounts = Accounts(store, wall, FAST_PINS)
        self.book = book()
        self.cutoff = CutoffManager(self.ledger, safety_net=ASTERISK_NET, warning_seconds=1)
        self.service = PrepaidService(self.ledger, self.accounts, lambda: self.book, cutoff=self.cutoff)

    async def booth(self, name: str, credit: str | None = None) -> int:
        account = await self.accounts.create("booth", name, EUR)
        if credit:
            await self.ledger.topup(account.id, eur(credit), f"topup-{name}")
        return account.id


@pytest.fixture
async def env(tmp_path):
    async with store_on("sqlite", tmp_path) as store:
        e = Env(store)
        yield e
        await e.cutoff.close()


async def test_authorize_ok_reserves_the_first_block_and_names_the_legs(env: Env) -> None:
    acct = await env.booth("b1", "1.00")
    call = TimedCall("u1", wall)
    auth = await env.service.authorize(call, PrepaidRequest("b1", "4420"))
    assert auth.outcome is AuthorizeOutcome.OK and auth.ref == "test/u1/a"
    assert auth.max_seconds == 100  # 1.00 at 1 c/s
    assert auth.dial_variables == {"switchctl_call": "u1", "switchctl_account": "b1", "switchctl_tenant": "default",
                                   "switchctl_destination": "4420"}
    res = await env.ledger.reservation(reservation_ref("test", "u1"))
    assert res is not None and res.held == eur("0.01") and await env.ledger.available(acct) == eur("0.99")
    await env.service.release(call, auth)
    assert await env.ledger.available(acct) == eur("1.00")


@pytest.mark.parametrize(("credit", "request_", "outcome"), [
    ("0.05", PrepaidRequest("b1", "3312"), AuthorizeOutcome.INSUFFICIENT_FUNDS),  # 0.10 + 1.20 needed
    ("1.00", PrepaidRequest("b1", "4912"), AuthorizeOutcome.NO_RATE),
    ("1.00", PrepaidRequest("b1", "not-a-number"), AuthorizeOutcome.NO_RATE),
    ("1.00", PrepaidRequest("nobody", "4412"), AuthorizeOutcome.NO_ACCOUNT),
])
async def test_refusals(env: Env, credit, request_, outcome) -> None:
    acct = await env.booth("b1", credit)
    auth = await env.service.authorize(TimedCall("u1", wall), request_)
    assert auth.outcome is outcome and auth.detail
    assert await env.ledger.available(acct) == eur(credit)  # nothing held


async def test_card_pin_bad_then_locked(env: Env) -> None:
    card = await env.accounts.create("card", "5001", EUR, pin="2468")
    await env.ledger.topup(card.id, eur("2.00"), "t")
    ok = await env.service.authorize(TimedCall("u0", wall), PrepaidRequest("5001", "4412", pin="2468"))
    assert ok.outcome is AuthorizeOutcome.OK
    no_pin = await env.service.authorize(TimedCall("u1", wall), PrepaidRequest("5001", "4412"))
    assert no_pin.outcome is AuthorizeOutcome.BAD_PIN
    bad = await env.service.authorize(TimedCall("u2", wall), PrepaidRequest("5001", "4412", pin="1111"))
    assert bad.outcome is AuthorizeOutcome.BAD_PIN
    locked = await env.service.authorize(TimedCall("u3", wall), PrepaidRequest("5001", "4412", pin="1112"))
    assert locked.outcome is AuthorizeOutcome.LOCKED
    still = await env.service.authorize(TimedCall("u4", wall), PrepaidRequest("5001", "4412", pin="2468"))
    assert still.outcome is AuthorizeOutcome.LOCKED


async def test_call_ending_early_commits_the_exact_cost_with_the_importers_key(env: Env) -> None:
    acct = await env.booth("b1", "5.00")
    call = TimedCall("u1", wall)
    auth = await env.service.authorize(call, PrepaidRequest("b1", "3312"))
    answered = wall()
    await env.service.on_answer(call, auth, DialAnswer("u1-b", TARGET, answered))
    (view,) = env.service.live_calls()
    assert view.account == "b1" and view.prefix == "33" and view.running_cost == eur("1.30")
    assert 239 * US < view.time_left_us <= 240 * US  # 5.00 = 0.10 + 4 min at 1.20 (rounded to whole minutes)
    result = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", TARGET, "u1-b", answered,
                        answered + 61_500_000)
    await env.service.on_dial_end(call, auth, result)
    assert await env.ledger.balance(acct) == eur("2.50")  # 0.10 + 2 min
    assert env.service.live_calls() == [] and env.cutoff.live() == []
    ref = reservation_ref("test", "u1")
    replay = await env.ledger.commit(ref, eur("2.50"), commit_key(ref))  # the CDR importer, later
    assert replay.replayed
    await asyncio.sleep(1.2)  # the warning timer (1 s before a 4-minute end) must be gone
    assert call.events[-1][0] == "net" and call.times("hangup") == []
    assert env.service.ended[-1].cost == eur("2.50") and env.service.ended[-1].cut_reason is None


async def test_unanswered_dial_releases(env: Env) -> None:
    acct = await env.booth("b1", "1.00")
    call = TimedCall("u1", wall)
    auth = await env.service.authorize(call, PrepaidRequest("b1", "4412"))
    await env.service.on_dial_end(call, auth, DialResult(DialOutcome.BUSY, "USER_BUSY"))
    assert await env.ledger.available(acct) == eur("1.00") == await env.ledger.balance(acct)


async def test_topup_and_rate_change_move_the_end(env: Env) -> None:
    acct = await env.booth("b1", "1.00")
    call = TimedCall("u1", wall)
    auth = await env.service.authorize(call, PrepaidRequest("b1", "4412"))
    answered = wall()
    await env.service.on_answer(call, auth, DialAnswer("u1-b", TARGET, answered))
    (live,) = env.cutoff.live()
    assert live.end_us == answered + 100 * US
    await env.ledger.topup(acct, eur("0.50"), "more")
    await env.service.topup("b1")
    assert live.end_us == answered + 150 * US
    env.book = book(per_minute="1.20")
    await env.service.rates_changed()
    assert live.end_us == answered + 75 * US
    await env.service.on_dial_end(call, auth, DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", TARGET,
                                                         "u1-b", answered, answered + 10 * US))
    assert await env.ledger.balance(acct) == eur("1.30")  # 10 s at the new rate (2 c/s)


async def test_two_calls_on_one_account_share_it(env: Env) -> None:
    await env.booth("b1", "1.00")
    a, b = TimedCall("ua", wall), TimedCall("ub", wall)
    auth_a = await env.service.authorize(a, PrepaidRequest("b1", "4412"))
    t0 = wall()
    await env.service.on_answer(a, auth_a, DialAnswer("ua-b", TARGET, t0))
    auth_b = await env.service.authorize(b, PrepaidRequest("b1", "4412"))
    assert auth_b.outcome is AuthorizeOutcome.OK
    await env.service.on_answer(b, auth_b, DialAnswer("ub-b", TARGET, t0 + 10 * US))
    ends = sorted(live.end_us - t0 for live in env.cutoff.live())
    assert ends == [55 * US, 55 * US]  # A alone 10 s, then both at 1 c/s each on the 0.90 left
    for call, auth in ((a, auth_a), (b, auth_b)):
        await env.service.on_dial_end(call, auth, None)  # the dial raised after the answer
    # Answered calls without a result are left to the CDR importer: their reservations stay open.
    assert len(await env.ledger.live_reservations(1)) == 2


async def test_real_time_cut_at_3_s(env: Env) -> None:
    """Ten calls, each on its own account with money for exactly 3 s at 1/1, on the wall clock."""
    calls = []
    for i in range(10):
        await env.booth(f"rt{i}", "0.03")
        call = TimedCall(f"rt{i}", wall)
        auth = await env.service.authorize(call, PrepaidRequest(f"rt{i}", "4412"))
        assert auth.max_seconds == 3
        calls.append((call, auth, wall()))
        await env.service.on_answer(call, auth, DialAnswer(f"rt{i}-b", TARGET, calls[-1][2]))
    await asyncio.wait_for(asyncio.gather(*(c.gone.wait() for c, _, _ in calls)), 5)
    errors = []
    for call, auth, answered in calls:
        (cut,) = call.times("hangup")
        errors.append(cut - answered - 3 * US)
        assert call.times("announce") == [pytest.approx(answered + 2 * US, abs=20_000)]
        assert call.events[0][0] == "net" and call.events[0][2] == pytest.approx(3.25, abs=0.02)  # Asterisk-style
        await env.service.on_dial_end(call, auth, DialResult(DialOutcome.ANSWERED, "ALLOTTED_TIMEOUT",
                                                             TARGET, "b", answered, cut))
        assert env.service.ended[-1].cut_reason == CREDIT_EXHAUSTED
    print(f"\nreal-time cut error µs: min {min(errors)} median {statistics.median(errors)} max {max(errors)}")
    assert all(0 <= e <= 20_000 for e in errors), errors


async def test_through_the_flow_runner(env: Env, tmp_path) -> None:
    """The service as the flows' CallBilling: a scripted answered dial of 60 s is billed once."""
    from switchctl.flows import FlowRunner
    from tests.fakecall import ScriptedCall, check_texts

    acct = await env.booth("booth-3", "2.00")
    text = """
flow: paid
patterns: ['^0(\\d+)$']
nodes:
  auth: {type: prepaid, account: "${caller}", destination: "${1}", next: ring, insufficient_funds: bye}
  ring: {type: dial, to: [{gateway: upstream, number: "00${1}"}], next: bye, failed: bye}
  bye: {type: hangup}
"""
    checked = check_texts(tmp_path, text, known_gateways={"upstream"})
    assert checked.ok, checked.report()
    call = ScriptedCall(caller="booth-3", destination="04412345", dials=["answered"])
    flow, captures = checked.flows.match(call.info.destination)
    trace = await FlowRunner(checked.flows, site_values={}, lists={}, billing=env.service).run(call, flow, captures)
    assert trace.path == ["auth", "ring", "bye"]
    (spec,) = [op[1] for op in call.ops if op[0] == "dial"]
    assert spec.variables["switchctl_call"] == "call-1"
    assert await env.ledger.balance(acct) == eur("1.40")  # the scripted 60 s at 1 c/s
    assert env.cutoff.live() == [] and await env.ledger.live_reservations(acct) == []


# -- who ended an adopted call ---------------------------------------------------------------------


class _EndedLeg:
    """An AdoptedCall's end as the switch recorded it; `known` says whether we have heard of it yet."""

    def __init__(self, ended_at_us: int, *, known: bool, arrives_after: float = 0.0) -> None:
        self.ended_at_us = ended_at_us
        self.hangup_cause: str | None = "NORMAL_CLEARING" if known else None
        self._arrives_after = arrives_after

    async def wait_hangup(self) -> str:
        await asyncio.sleep(self._arrives_after)
        self.hangup_cause = "NORMAL_CLEARING"
        return self.hangup_cause


async def test_who_ended_an_adopted_call_comes_from_the_switchs_hangup_times() -> None:
    from switchctl.features.prepaid.service import PrepaidService
    first = PrepaidService._caller_ended_first
    b = _EndedLeg(2_000_000, known=True)
    # the cut caller's destroy arrives after its B leg's: still the caller who ended it
    assert await first(_EndedLeg(1_999_000, known=False, arrives_after=0.05), b)  # type: ignore[arg-type]
    # the far end hung up, the caller followed
    assert not await first(_EndedLeg(2_001_000, known=True), b)  # type: ignore[arg-type]
    # the caller is still up when B is gone: B ended it
    assert not await first(_EndedLeg(0, known=False, arrives_after=5.0), b)  # type: ignore[arg-type]
