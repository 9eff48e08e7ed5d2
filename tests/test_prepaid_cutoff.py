"""The prepaid cutoff: allotment of an account's money, exact cut instants, warnings, safety nets.

Timed tests run on `VirtualLoop`, an event loop whose clock jumps to the next timer instead of
sleeping, so a 15-minute call takes milliseconds and every instant is exact. The money behind the
manager there is `MemoryLedger`, an in-memory ledger with the real one's reservation rules (the
real SQLite ledger runs in threads, which a virtual clock cannot wait for; it is covered by
tests/test_prepaid_service.py in real time).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchctl.billing.ledger import CallRef, InsufficientFunds, Totals
from switchctl.billing.money import Money, currency
from switchctl.billing.rating import Rate
from switchctl.features.prepaid import (
    ASTERISK_NET,
    CREDIT_EXHAUSTED,
    FREESWITCH_NET,
    Burn,
    CutoffManager,
    LiveCall,
    SafetyNetPolicy,
    allot,
    safety_net,
)
from switchctl.features.prepaid.allot import call_cost
from switchctl.switch.call import Call, CallGone, CallInfo

EUR = currency("EUR")
US = 1_000_000
BASE_US = 1_700_000_000_000_000  # the virtual wall clock at loop time 0
T = TypeVar("T")


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


def rate(per_minute: str, initial: int, increment: int, connect: str = "0") -> Rate:
    return Rate(eur(per_minute), eur(connect), initial, increment)


# -- a virtual-time event loop -----------------------------------------------------------------------

class _JumpingSelector:
    """Wraps the loop's selector: when nothing is ready, time jumps by the timeout instead of passing."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            return self._real.select(None)
        self._loop.now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[assignment]

    def time(self) -> float:
        return self.now

    def wall_us(self) -> int:
        return BASE_US + round(self.now * US)


def run_virtual(main: Callable[[VirtualLoop], Awaitable[T]]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


# -- a Call that records when things happen to it ----------------------------------------------------

class TimedCall(Call):
    """A bridged caller leg: records hangup / schedule_hangup / announce with the wall instant
    (`wall()`, epoch µs) at which the switch got them. It models FreeSWITCH's sched_hangup: `+N`
    fires at floor(now_s) + N whole seconds (the earliest; the scheduler may add ≤ 0.5 s)."""

    def __init__(self, uuid: str, wall: Callable[[], int]) -> None:
        self.info = CallInfo(uuid=uuid, switch="test", answered=True)
        self.wall = wall
        self.events: list[tuple[str, int, object]] = []
        self.nets: list[int] = []  # earliest fire instant of each armed sched_hangup
        self._cause: str | None = None
        self.gone = asyncio.Event()

    def times(self, kind: str) -> list[int]:
        return [at for name, at, _ in self.events if name == kind]

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._cause is None:
            self.events.append(("hangup", self.wall(), cause))
            self._cause = cause
            self.gone.set()

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        if self._cause is not None:
            raise CallGone(self._cause)
        now = self.wall()
        self.events.append(("net", now, seconds))
        if at_us is not None:  # the absolute form: the first whole second at or after the instant
            self.nets.append(-(-at_us // US) * US)
            return
        whole = -(-int(seconds * 1000) // 1000)
        self.nets.append((now // US + whole) * US)

    async def announce(self, prompt: str) -> None:
        if self._cause is not None:
            raise CallGone(self._cause)
        self.events.append(("announce", self.wall(), prompt))

    async def record(self, spec):  # not used by the cutoff
        raise AssertionError("the cutoff never records")

    async def start_recording(self, path):
        raise AssertionError("the cutoff never records")

    async def wait_hangup(self) -> str:
        await self.gone.wait()
        assert self._cause is not None
        return self._cause

    # Not used by the cutoff: a bridged leg under it is only cut, warned and netted.
    async def answer(self) -> None: raise AssertionError("not used")
    async def play(self, prompts: Sequence[str]) -> None: raise AssertionError("not used")
    async def say(self, value, kind, language="en") -> None: raise AssertionError("not used")
    async def collect(self, spec): raise AssertionError("not used")
    async def dial(self, spec): raise AssertionError("not used")
    async def transfer(self, extension, context=None) -> None: raise AssertionError("not used")
    async def hold(self, music=None) -> None: raise AssertionError("not used")
    async def bridge(self, leg): raise AssertionError("not used")
    async def conference(self, room): raise AssertionError("not used")
    async def set_variable(self, name, value) -> None: raise AssertionError("not used")
    async def get_variable(self, name): raise AssertionError("not used")


# -- an in-memory ledger with the real one's reservation rules ---------------------------------------

class MemoryLedger:
    def __init__(self) -> None:
        self.balance: dict[int, int] = {}
        self.holds: dict[CallRef, tuple[int, int]] = {}
        self.debits: dict[CallRef, int] = {}

    def held(self, account: int) -> int:
        return sum(m for a, m in self.holds.values() if a == account)

    async def totals(self, account_id: int) -> Totals:
        await asyncio.sleep(0)  # a real read yields to the loop: let other tasks interleave
        return Totals(eur("0") + Money(self.balance[account_id], EUR), Money(self.held(account_id), EUR))

    async def extend_reservation(self, call_ref: CallRef, amount: Money, key: str):
        await asyncio.sleep(0)
        account, micros = self.holds[call_ref]
        available = self.balance[account] - self.held(account)
        if available < amount.micros:
            raise InsufficientFunds(account, amount, Money(available, EUR))
        self.holds[call_ref] = (account, micros + amount.micros)

    def topup(self, account: int, amount: str) -> None:
        self.balance[account] = self.balance.get(account, 0) + eur(amount).micros

    def reserve(self, account: int, ref: CallRef, micros: int) -> bool:
        if self.balance[account] - self.held(account) < micros:
            return False
        self.holds[ref] = (account, micros)
        return True

    def commit(self, ref: CallRef, micros: int) -> None:
        account, _ = self.holds.pop(ref)
        self.balance[account] -= micros
        self.debits[ref] = micros


class Booth:
    """Drives calls on one account through a CutoffManager, as the prepaid service does."""

    def __init__(self, loop: VirtualLoop, **options: Any) -> None:
        self.loop = loop
        self.ledger = MemoryLedger()
        self.ledger.topup(1, "0")
        self.manager = CutoffManager(self.ledger, wall_clock=loop.wall_us, **options)
        self.calls: dict[str, tuple[TimedCall, LiveCall]] = {}
        self.costs: dict[str, int] = {}
        self.ending: set[str] = set()

    async def answer(self, uuid: str, the_rate: Rate) -> TimedCall | None:
        ref = CallRef("test", uuid, "a")
        first = the_rate.cost_micros(1)
        if not self.ledger.reserve(1, ref, first):
            return None
        call = TimedCall(uuid, self.loop.wall_us)
        live = LiveCall(call=call, ref=ref, account_id=1, account="booth", destination="33",
                        rate=the_rate, answer_us=self.loop.wall_us(), held_micros=first)
        self.calls[uuid] = (call, live)
        await self.manager.start(live)
        return call

    async def end(self, uuid: str) -> int:
        """The call ended (hung up by the caller or cut): settle it; its cost in micro-units."""
        if uuid in self.ending:  # settled already (hung up, then seen as gone)
            return self.costs.get(uuid, 0)
        self.ending.add(uuid)
        call, live = self.calls[uuid]
        await call.hangup("NORMAL_CLEARING")
        ended = call.times("hangup")[0]
        self.manager.stop(live.ref)
        async with self.manager.lock(1):
            cost = live.rate.cost_micros(ended - live.answer_us)
            self.ledger.commit(live.ref, cost)
        self.costs[uuid] = cost
        await self.manager.recompute(1)
        return cost

    async def settle_when_cut(self, uuid: str) -> None:
        call, _ = self.calls[uuid]
        await call.gone.wait()
        await self.end(uuid)


# -- allotment (pure) --------------------------------------------------------------------------------

RATES = {
    "60/60": rate("0.07", 60, 60),
    "30/6": rate("0.10", 30, 6, connect="0.05"),
    "1/1": rate("0.60", 1, 1),
}


@pytest.mark.parametrize("name", RATES)
@pytest.mark.parametrize("money", ["1.00", "0.37", "12.34"])
def test_one_call_is_paid_exactly_what_the_money_buys(name: str, money: str) -> None:
    r = RATES[name]
    (end,) = allot([Burn(r, BASE_US)], eur(money).micros)
    paid = end - BASE_US
    assert paid == r.max_duration(eur(money))
    assert r.cost(paid) <= eur(money) < r.cost(paid + r.increment_us)


burns = st.lists(st.tuples(st.sampled_from(list(RATES.values())),
                           st.integers(0, 120 * US)), min_size=1, max_size=5)


@given(burns, st.integers(-10_000, 3_000_000))
@settings(max_examples=300, deadline=None)
def test_allotment_never_overdraws_and_cuts_no_call_that_could_go_on(calls, money) -> None:
    bs = [Burn(r, BASE_US + offset) for r, offset in calls]
    ends = allot(bs, money, ceiling_us=3 * 3600 * US)
    # A call ended at its answer could not pay its first block: it is cut at once (what it costs
    # then is the one-increment overdraft a late cut is allowed); the others fit in the money.
    spent = sum(call_cost(b, e, 3 * 3600 * US) for b, e in zip(bs, ends) if e > b.answer_us)
    assert spent <= max(money, 0)
    for i, (b, end) in enumerate(zip(bs, ends)):
        assert end >= b.answer_us
        if end == b.answer_us + 3 * 3600 * US:
            continue  # reached the longest call
        # One more µs for call i, everyone else as allotted, would not have been paid for.
        more = sum(call_cost(o, min(e, end + 1), 3 * 3600 * US) for j, (o, e) in enumerate(zip(bs, ends)) if j != i)
        assert more + call_cost(b, end + 1, 3 * 3600 * US) > money


def test_two_equal_calls_share_the_money_and_stop_together() -> None:
    r = RATES["1/1"]  # 1 cent a second
    a, b = Burn(r, BASE_US), Burn(r, BASE_US + 10 * US)
    # 1.00: A alone for 10 s (0.10), then both at 2 cents/s for the 0.90 left: 45 s more.
    assert allot([a, b], eur("1.00").micros) == [BASE_US + 55 * US, BASE_US + 55 * US]


def test_a_cheap_call_goes_on_with_money_an_expensive_one_cannot_use() -> None:
    dear, cheap = rate("1.00", 60, 60), rate("0.60", 1, 1)
    ends = allot([Burn(dear, BASE_US), Burn(cheap, BASE_US)], eur("1.50").micros)
    # At 60 s: dear paid 1.00, cheap 0.60 > 1.50 → the dear one cannot start its 2nd minute (it is
    # cut at 60 s with 1.00 spent... its first minute was already paid), the cheap one talks on.
    assert ends[0] == BASE_US + 60 * US
    assert ends[1] == BASE_US + 50 * US or ends[1] > ends[0]
    spent = dear.cost_micros(ends[0] - BASE_US) + cheap.cost_micros(ends[1] - BASE_US)
    assert spent <= eur("1.50").micros


# -- safety net (pure) -------------------------------------------------------------------------------

@given(st.integers(0, 10**9), st.integers(1, 3_600 * US), st.integers(0, 20_000), st.integers(0, 900_000))
@settings(max_examples=500)
def test_freeswitch_net_is_never_early_and_at_most_1_5_s_late(now_rel, left, lag, latency) -> None:
    now = BASE_US + now_rel
    deadline = now + left
    arm = safety_net(deadline, now, FREESWITCH_NET)
    assert arm.seconds == int(arm.seconds) and arm.seconds >= 1
    # FreeSWITCH runs `+N` at floor(its now) + N, its clock up to one 20 ms tick behind ours, the
    # command reaching it `latency` later; the task thread runs it ≤ 0.5 s after that second.
    fs_now = now - lag + latency
    fires = (fs_now // US + int(arm.seconds)) * US
    assert fires >= deadline, "the net would cut before the paid end"
    if (fs_now // US) == (now - FREESWITCH_NET.margin_us) // US:  # executed in the same second
        assert fires + US // 2 - deadline <= 1_500_000
    assert arm.fires_at_us <= fires


def test_net_arms_fewer_seconds_than_ceil_t_plus_one_when_that_is_late() -> None:
    # Why we do not arm ceil(T)+1: armed at x.99 s with T = 1.01 s left, `+3` fires at (x+3) s
    # (+0.5 s) for a deadline at x+2.0 s... and our rule arms `+2`.
    now, deadline = BASE_US + 990_000, BASE_US + 2_000_000
    assert safety_net(deadline, now, FREESWITCH_NET).seconds == 2.0


def test_asterisk_net_takes_fractions() -> None:
    arm = safety_net(BASE_US + 3_250_000, BASE_US, ASTERISK_NET)
    assert arm.seconds == 3.5 and arm.fires_at_us == BASE_US + 3_500_000


# -- the manager on a virtual clock ------------------------------------------------------------------

@pytest.mark.parametrize("name", RATES)
def test_cut_at_exactly_the_paid_time_with_warning_and_net(name: str) -> None:
    r = RATES[name]

    async def main(loop: VirtualLoop):
        booth = Booth(loop)
        booth.ledger.topup(1, "1.00")
        loop.now = 0.37  # answer mid-second: the net must round up, not down
        call = await booth.answer("c1", r)
        assert call is not None
        await booth.settle_when_cut("c1")
        return call, booth

    call, booth = run_virtual(main)
    answer = BASE_US + 370_000
    (cut,) = call.times("hangup")
    paid = cut - answer
    assert r.cost(paid) <= eur("1.00") < r.cost(paid + r.increment_us)  # cost(paid) ≤ money < next
    assert paid == r.max_duration(eur("1.00"))
    assert call.events[-1][2] == "ALLOTTED_TIMEOUT"
    assert booth.calls["c1"][1].cut_reason == CREDIT_EXHAUSTED
    assert call.times("announce") == [cut - 10 * US]
    assert call.nets and min(call.nets) >= cut and min(call.nets) - cut < US  # whole second after
    assert booth.ledger.balance[1] == eur("1.00").micros - r.cost_micros(paid) >= 0


def test_less_money_than_the_warning_time_warns_at_once() -> None:
    async def main(loop: VirtualLoop):
        booth = Booth(loop, warning_seconds=10)
        booth.ledger.topup(1, "0.05")
        call = await booth.answer("c1", RATES["1/1"])
        await booth.settle_when_cut("c1")
        return call

    call = run_virtual(main)
    assert call.times("announce") == [BASE_US]
    assert call.times("hangup") == [BASE_US + 5 * US]


def test_call_ending_before_exhaustion_is_billed_exactly_and_its_timers_stop() -> None:
    async def main(loop: VirtualLoop):
        booth = Booth(loop)
        booth.ledger.topup(1, "5.00")
        call = await booth.answer("c1", RATES["30/6"])
        await asyncio.sleep(42.5)
        cost = await booth.end("c1")
        await asyncio.sleep(3600)  # nothing may fire afterwards
        return call, cost, booth

    call, cost, booth = run_virtual(main)
    assert cost == RATES["30/6"].cost_micros(42_500_000) == eur("0.13").micros  # 5c + 48 s at 10c/min
    assert [e[0] for e in call.events].count("hangup") == 1 and call.events[-1][2] == "NORMAL_CLEARING"
    assert call.times("announce") == []
    assert booth.manager.live() == []


def test_topup_during_a_call_moves_the_cut_later() -> None:
    async def main(loop: VirtualLoop):
        booth = Booth(loop, safety_net=ASTERISK_NET)
        booth.ledger.topup(1, "0.30")  # 30 s at 1 cent/s
        call = await booth.answer("c1", RATES["1/1"])
        await asyncio.sleep(12)
        booth.ledger.topup(1, "0.20")
        await booth.manager.topup(1)
        await booth.settle_when_cut("c1")
        return call

    call = run_virtual(main)
    assert call.times("hangup") == [BASE_US + 50 * US]
    assert call.times("announce") == [BASE_US + 40 * US]  # the 20 s warning was re-armed
    nets = [(at, s) for kind, at, s in call.events if kind == "net"]
    assert nets[0] == (BASE_US, 30.25) and nets[-1] == (BASE_US + 12 * US, 38.25)  # replaced


def test_freeswitch_net_armed_too_early_is_withdrawn_before_a_later_one() -> None:
    cancelled: list[int] = []

    async def cancel(call: Call) -> None:
        cancelled.append(len(call.events))  # type: ignore[attr-defined]

    policy = SafetyNetPolicy(whole_seconds=True, replaces=False, margin_us=50_000, cancel=cancel)

    async def main(loop: VirtualLoop):
        booth = Booth(loop, safety_net=policy)
        booth.ledger.topup(1, "0.30")
        loop.now = 0.5  # answered mid-second: the paid end is at x.5 s, the net at the next second
        call = await booth.answer("c1", RATES["1/1"])
        await asyncio.sleep(12)
        booth.ledger.topup(1, "0.20")
        await booth.manager.topup(1)
        await booth.settle_when_cut("c1")
        return call

    call = run_virtual(main)
    assert len(call.nets) == 2 and len(cancelled) == 1
    assert call.nets == [BASE_US + 31 * US, BASE_US + 51 * US]
    assert call.times("hangup") == [BASE_US + 50 * US + US // 2]


def test_without_withdrawal_a_net_is_never_re_armed_later_and_the_problem_is_flagged() -> None:
    async def main(loop: VirtualLoop):
        # A switch whose schedule adds instead of replacing, with no way to withdraw one (what the
        # FreeSWITCH backend would be without its sched_del).
        adding = SafetyNetPolicy(whole_seconds=True, replaces=False, margin_us=FREESWITCH_NET.margin_us)
        booth = Booth(loop, safety_net=adding)
        booth.ledger.topup(1, "0.30")
        loop.now = 0.5
        call = await booth.answer("c1", RATES["1/1"])
        await asyncio.sleep(12)
        booth.ledger.topup(1, "0.20")
        await booth.manager.topup(1)
        flagged = booth.manager.get(CallRef("test", "c1", "a")).net_too_early
        await booth.settle_when_cut("c1")
        return call, flagged

    call, flagged = run_virtual(main)
    assert call.nets == [BASE_US + 31 * US] and flagged
    assert call.times("hangup") == [BASE_US + 50 * US + US // 2]  # our own cut follows the money


def test_rate_change_recomputes_the_cut() -> None:
    async def main(loop: VirtualLoop):
        booth = Booth(loop)
        booth.ledger.topup(1, "1.20")
        call = await booth.answer("c1", RATES["1/1"])  # 120 s at 1 c/s
        await asyncio.sleep(20)  # 0.20 spent
        await booth.manager.rates_changed(lambda live: rate("1.20", 1, 1))  # 2 c/s from the answer
        await booth.settle_when_cut("c1")
        return call

    call = run_virtual(main)
    assert call.times("hangup") == [BASE_US + 60 * US]  # the whole call at the new rate: 1.20


@pytest.mark.parametrize("n", [2, 5])
def test_concurrent_calls_on_one_account_never_overdraw_and_stop_in_turn(n: int) -> None:
    async def main(loop: VirtualLoop):
        booth = Booth(loop)
        booth.ledger.topup(1, "2.00")
        settles = []
        for i in range(n):
            the_rate = [RATES["1/1"], RATES["30/6"], RATES["60/60"]][i % 3]
            assert await booth.answer(f"c{i}", the_rate) is not None
            settles.append(asyncio.ensure_future(booth.settle_when_cut(f"c{i}")))
            await asyncio.sleep(7.3)
        await asyncio.gather(*settles)
        return booth

    booth = run_virtual(main)
    total = sum(booth.costs.values())
    assert total <= eur("2.00").micros  # cut exactly at the allotment: no overdraft at all
    cuts = sorted((booth.calls[u][0].times("hangup")[0], u) for u in booth.calls)
    assert all(booth.calls[u][1].cut_reason == CREDIT_EXHAUSTED for _, u in cuts)
    # What is left cannot pay any call's next increment at its cut: nobody was cut early.
    left = eur("2.00").micros - total
    for cut, u in cuts:
        live = booth.calls[u][1]
        step = live.rate.cost_micros(cut - live.answer_us + 1) - live.rate.cost_micros(cut - live.answer_us)
        assert step > 0 and left < step or cut == cuts[-1][0]


# -- random interleavings ----------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["start", "hangup", "topup"]), st.integers(0, 4),
              st.floats(0.0, 20.0, allow_nan=False), st.sampled_from(list(RATES))),
    min_size=1, max_size=25,
)


@given(OPS, st.sampled_from(["0.10", "0.50", "3.00"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_interleavings_never_overdraw_by_more_than_an_increment_per_call(ops, money) -> None:
    async def main(loop: VirtualLoop):
        booth = Booth(loop, slice_seconds=10)
        booth.ledger.topup(1, money)
        credited = eur(money).micros
        started: dict[str, asyncio.Future[None]] = {}
        n = 0

        async def op(kind: str, which: int, delay: float, rate_name: str) -> None:
            nonlocal credited, n
            await asyncio.sleep(delay)
            if kind == "start":
                n += 1
                uuid = f"c{n}"
                if await booth.answer(uuid, RATES[rate_name]) is not None:
                    started[uuid] = asyncio.ensure_future(booth.settle_when_cut(uuid))
            elif kind == "topup":
                booth.ledger.topup(1, "0.25")
                credited += eur("0.25").micros
                await booth.manager.topup(1)
            else:
                live = [u for u in started if u not in booth.costs and booth.calls[u][0].hangup_cause is None]
                if live:
                    await booth.end(live[which % len(live)])

        await asyncio.gather(*(op(*o) for o in ops))
        await asyncio.gather(*started.values())
        return booth, credited

    booth, credited = run_virtual(main)
    assert booth.manager.live() == []
    assert booth.ledger.holds == {}
    increments = sum(booth.calls[u][1].rate.cost_micros(booth.calls[u][1].rate.increment_us) for u in booth.costs)
    assert booth.ledger.balance[1] >= -increments
    assert sum(booth.costs.values()) <= credited + increments
