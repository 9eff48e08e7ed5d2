"""Real-time cutoff of answered prepaid calls: cut each call the moment its account's money is gone.

Per account, the live (answered) calls: rate, the switch's answer instant, what their reservation
holds. Whenever one starts or ends, a top-up is announced (`topup`) or the rates change
(`rates_changed`), every live call of the account gets a new end (`allot.allot`: the account's money
shared by the calls' burn rates, never overdrawn) and, per call:
1. our own timer at the end instant. The end is on the switch's clock (answer µs + paid µs); the
   switch runs on this machine, so its clock is the wall clock: the instant is converted once to
   the event loop's monotonic clock (`loop.call_at`). It hangs up with ALLOTTED_TIMEOUT and records
   the reason `credit_exhausted`;
2. the switch-side safety net (`safetynet.py`: armed so it never fires before the paid end and as
   soon after it as the switch can), re-armed when the end moves;
3. a warning (`Call.announce`) `warning_seconds` before the end (at once if the call has less);
4. the reservation grown in slices as the call runs (see below).

Money: in memory, with the ledger kept ahead. The cut instants are computed in memory from
balance − reservations that are not our live calls' − the running cost of each live call; no DB
round trip sits between the money running out and the cut. The ledger still sees each live call
through its reservation, which is extended ahead of the call by `slice_seconds` (hold = cost of the
talk so far + one slice, never more than the call's allotment): other controllers, new
authorizations and `account show` see `available` short by at most what the next slice would burn,
so a new call cannot reserve money a running call has already spent. Why not hold the whole
allotment up front: it would leave nothing for a second call on the account (a booth sharing a
customer's credit), which the split above is for. What SIGKILL leaves behind: each live call's
reservation (the connect fee, first block and slices so far) under `callkeys.reservation_ref`; its
cost is committed exactly once, by whichever comes first of a restarted controller's live path and
the CDR importer (same `commit_key`), and the commit records the full rated cost even above the
hold. While no controller runs, the safety net ends the call ≤ ~1.5 s after its money ran out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from switchctl.billing.ledger import (
    CallRef,
    Entry,
    InsufficientFunds,
    LedgerError,
    Totals,
)
from switchctl.billing.money import Money
from switchctl.billing.rating import Rate
from switchctl.switch.call import Call, CallError, CallGone

from .allot import Burn, allot
from .safetynet import FREESWITCH_NET, SafetyNetPolicy, safety_net

log = logging.getLogger(__name__)

US_PER_S = 1_000_000
CUT_CAUSE = "ALLOTTED_TIMEOUT"
CREDIT_EXHAUSTED = "credit_exhausted"
DEFAULT_WARNING_PROMPT = "tone_stream://%(500,500,1400);loops=2"
HANGUP_ATTEMPTS = 5
HANGUP_RETRY_S = 0.5
NET_RESOLUTION_US = 20_000  # fractional nets closer than this to the armed one are not re-armed


def wall_us() -> int:
    """Now on the wall clock (= the local switch's clock), epoch µs."""
    return time.time_ns() // 1_000


class MoneySource(Protocol):
    """What the cutoff needs of the ledger (`billing.ledger.Ledger` is one)."""

    async def totals(self, account_id: int) -> Totals: ...

    async def extend_reservation(self, call_ref: CallRef, amount: Money, key: str) -> Entry: ...


@dataclass(eq=False)
class LiveCall:
    """One answered prepaid call under the cutoff."""

    call: Call  # the caller's leg: cut and warned
    ref: CallRef  # its reservation
    account_id: int
    account: str
    destination: str
    rate: Rate
    answer_us: int  # the switch's answer instant of the answered (B) leg
    held_micros: int  # what the reservation holds now (as far as we wrote it)
    end_us: int = 0  # the allotted end: cut here
    cut_reason: str | None = None  # "credit_exhausted" once our timer cut it
    warned: bool = False
    net_fires_at_us: int | None = None  # earliest instant the armed safety net can fire
    net_too_early: bool = False  # a net armed before a top-up could not be withdrawn
    stopped: bool = False
    extend_after_us: int = 0  # after a refused extension: not again before this instant
    _handles: dict[str, asyncio.TimerHandle] = field(default_factory=dict, repr=False)

    @property
    def paid_us(self) -> int:
        return max(0, self.end_us - self.answer_us)

    def cancel_timers(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()


class CutoffManager:
    """Arms, re-arms and fires the cutoffs of all live prepaid calls (one per controller)."""

    def __init__(
        self,
        ledger: MoneySource,
        *,
        warning_seconds: float = 10.0,
        warning_prompt: str = DEFAULT_WARNING_PROMPT,
        slice_seconds: int = 30,
        max_call_seconds: int = 24 * 3600,
        safety_net: SafetyNetPolicy | Callable[[Call], SafetyNetPolicy] = FREESWITCH_NET,
        wall_clock: Callable[[], int] = wall_us,
    ) -> None:
        if slice_seconds < 1 or max_call_seconds < 1 or warning_seconds < 0:
            raise ValueError("slice and longest call must be ≥ 1 s, the warning ≥ 0 s")
        self.ledger = ledger
        self.warning_us = int(warning_seconds * US_PER_S)
        self.warning_prompt = warning_prompt
        self.slice_us = slice_seconds * US_PER_S
        self.ceiling_us = max_call_seconds * US_PER_S
        self._net_policy = safety_net if callable(safety_net) else (lambda _call: safety_net)
        self.wall = wall_clock
        self._calls: dict[CallRef, LiveCall] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what the service calls -------------------------------------------------------------------
    async def start(self, live: LiveCall) -> None:
        """A call was answered: take it under the cutoff and recompute its account."""
        if live.ref in self._calls:
            raise ValueError(f"call {live.ref} is already under the cutoff")
        self._calls[live.ref] = live
        await self.recompute(live.account_id)

    def stop(self, ref: CallRef) -> LiveCall | None:
        """The call ended: its timers are cancelled at once. The caller settles its reservation
        (under `lock(account_id)`) and then calls `recompute(account_id)` for the others."""
        live = self._calls.pop(ref, None)
        if live is not None:
            live.stopped = True
            live.cancel_timers()
        return live

    async def topup(self, account_id: int) -> None:
        """Money was added to (or taken from) the account: its calls may talk longer (shorter)."""
        await self.recompute(account_id)

    async def rates_changed(self, rate_of: Callable[[LiveCall], Rate | None]) -> None:
        """The rate book changed: `rate_of` gives each live call its new rate (None: keep it)."""
        for live in list(self._calls.values()):
            new = rate_of(live)
            if new is not None:
                live.rate = new
        for account_id in {live.account_id for live in self._calls.values()}:
            await self.recompute(account_id)

    def live(self) -> list[LiveCall]:
        return list(self._calls.values())

    def get(self, ref: CallRef) -> LiveCall | None:
        return self._calls.get(ref)

    @asynccontextmanager
    async def lock(self, account_id: int) -> AsyncIterator[None]:
        """Serializes our ledger writes for one account with the in-memory holds."""
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            yield

    async def close(self) -> None:
        """Stop every timer (controller shutdown; the switch-side nets stay armed)."""
        for live in self._calls.values():
            live.cancel_timers()
        self._calls.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- recomputation ----------------------------------------------------------------------------
    async def recompute(self, account_id: int) -> None:
        """New ends for every live call of the account, and their timers, nets and warnings."""
        async with self.lock(account_id):
            if not any(c.account_id == account_id for c in self._calls.values()):
                return
            try:
                totals: Totals | None = await self.ledger.totals(account_id)
            except (LedgerError, OSError) as exc:  # keep cutting: on what the calls hold
                log.error("account %s: cannot read its totals (%s); cutting its calls at what "
                          "they hold", account_id, exc)
                totals = None
            # Taken after the read: a call that ended meanwhile is not settled yet, so its hold
            # counts as spent (conservative) until the recompute that follows its commit.
            calls = [c for c in self._calls.values() if c.account_id == account_id]
            if not calls:
                return
            ours = sum(c.held_micros for c in calls)
            # Reservations that are not our live calls' (calls still ringing, other controllers'
            # calls) count as spent; our calls count by their running cost.
            money = ours if totals is None else totals.balance.micros - (totals.held.micros - ours)
            # A call already cut (its hangup under way) keeps the end it was cut at and costs what
            # that paid for (what the service bills it): counting it by its running cost instead
            # would take the few ms its cut runs late, a whole increment at 1/1, from its siblings
            # and cut them early; re-allotting it would change what it is billed.
            running = [c for c in calls if c.cut_reason is None]
            money -= sum(c.rate.cost_micros(c.paid_us) for c in calls if c.cut_reason is not None)
            ends = allot([Burn(c.rate, c.answer_us) for c in running], money, ceiling_us=self.ceiling_us)
            now = self.wall()
            for live, end in zip(running, ends):
                live.end_us = end
                self._arm(live, now)
            await asyncio.gather(*(self._arm_net(live, now) for live in calls))

    def _arm(self, live: LiveCall, now: int) -> None:
        """(Re)arm the cut, warning and extension timers of `live` (`now`: wall µs)."""
        live.cancel_timers()
        if live.cut_reason is not None:
            return  # already cut: the hangup is under way
        loop = asyncio.get_running_loop()
        offset = loop.time() - now / US_PER_S  # wall → loop clock, converted once

        def at(instant_us: int, name: str, callback: Callable[[LiveCall], None]) -> None:
            live._handles[name] = loop.call_at(offset + instant_us / US_PER_S, callback, live)

        at(live.end_us, "cut", self._cut)
        if self.warning_us:
            warn_at = live.end_us - self.warning_us
            if warn_at > now:
                live.warned = False
                at(warn_at, "warn", self._warn)
            elif not live.warned and live.end_us > now:
                at(now, "warn", self._warn)  # less than the warning time left: warn at once
        covered = live.rate.max_duration(Money(live.held_micros, live.rate.currency),
                                         ceiling_us=self.ceiling_us)
        if covered < live.paid_us:  # the hold does not reach the end yet: extend before it runs out
            due = max(now, live.extend_after_us, live.answer_us + covered - self.slice_us // 2)
            at(due, "extend", self._extend_soon)

    # -- timer callbacks --------------------------------------------------------------------------
    def _cut(self, live: LiveCall) -> None:
        if live.stopped or live.cut_reason is not None:
            return
        live.cut_reason = CREDIT_EXHAUSTED
        live.cancel_timers()
        self._spawn(self._hangup(live))

    async def _hangup(self, live: LiveCall) -> None:
        for attempt in range(1, HANGUP_ATTEMPTS + 1):
            try:
                await live.call.hangup(CUT_CAUSE)
                log.info("call %s cut: credit exhausted on account %s after %.3f s", live.ref,
                         live.account, live.paid_us / US_PER_S)
                return
            except CallGone:
                return
            except Exception as exc:  # noqa: BLE001 - keep trying: the call still burns money
                log.error("call %s: cut attempt %d failed: %s", live.ref, attempt, exc)
                await asyncio.sleep(HANGUP_RETRY_S)
        log.error("call %s: could not cut it; the switch's safety net must", live.ref)

    def _warn(self, live: LiveCall) -> None:
        live._handles.pop("warn", None)
        if live.stopped or live.warned or live.cut_reason is not None:
            return
        live.warned = True
        self._spawn(self._announce(live))

    async def _announce(self, live: LiveCall) -> None:
        try:
            await live.call.announce(self.warning_prompt)
        except CallGone:
            pass
        except CallError as exc:
            log.warning("call %s: credit warning not played: %s", live.ref, exc)

    def _extend_soon(self, live: LiveCall) -> None:
        live._handles.pop("extend", None)
        self._spawn(self._extend(live))

    async def _extend(self, live: LiveCall) -> None:
        """Grow the reservation to cover the talk so far plus one slice (at most the allotment)."""
        refused = False
        async with self.lock(live.account_id):
            if live.stopped:
                return
            elapsed = max(0, self.wall() - live.answer_us)
            covered = min(live.paid_us, elapsed + self.slice_us)
            target = live.rate.cost_micros(covered)
            if target > live.held_micros:
                refused = not await self._grow_hold(live, target)
                if refused:
                    live.extend_after_us = self.wall() + self.slice_us // 2
            if not live.stopped and live.cut_reason is None:
                self._arm(live, self.wall())
        if refused:  # someone else took the money: the ends must move
            await self.recompute(live.account_id)

    async def _grow_hold(self, live: LiveCall, target: int) -> bool:
        """Extend the reservation to `target`; False if the ledger had less available (then what
        it had is taken)."""
        currency = live.rate.currency
        try:
            await self.ledger.extend_reservation(
                live.ref, Money(target - live.held_micros, currency), f"{live.ref}:hold:{target}")
            live.held_micros = target
            return True
        except InsufficientFunds as exc:
            available = exc.available.micros
            if available > 0:
                reach = live.held_micros + available
                try:
                    await self.ledger.extend_reservation(live.ref, Money(available, currency),
                                                         f"{live.ref}:hold:{reach}")
                    live.held_micros = reach
                except LedgerError as again:
                    log.warning("call %s: reservation not extended: %s", live.ref, again)
            return False
        except LedgerError as exc:
            if not live.stopped:
                log.warning("call %s: reservation not extended: %s", live.ref, exc)
            return True

    # -- safety net -------------------------------------------------------------------------------
    async def _arm_net(self, live: LiveCall, now: int) -> None:
        if live.stopped or live.cut_reason is not None:
            return
        policy = self._net_policy(live.call)
        arm = safety_net(live.end_us, now, policy)
        armed = live.net_fires_at_us
        if armed is not None:
            if abs(arm.fires_at_us - armed) < (1 if policy.whole_seconds else NET_RESOLUTION_US):
                return
            if arm.fires_at_us > armed and not policy.replaces:
                if policy.cancel is None:
                    if not live.net_too_early:
                        log.error("call %s: the switch's safety net fires at %d µs, %.1f s before the "
                                  "call's new paid end, and no way to withdraw it was configured "
                                  "(SafetyNetPolicy.cancel): the switch will cut the call early",
                                  live.ref, armed, (live.end_us - armed) / US_PER_S)
                    live.net_too_early = True
                    return
                try:
                    await policy.cancel(live.call)
                except Exception as exc:  # noqa: BLE001 - then the earlier net stands
                    log.error("call %s: could not withdraw the safety net: %s", live.ref, exc)
                    live.net_too_early = True
                    return
        try:
            await live.call.schedule_hangup(arm.seconds, CUT_CAUSE,
                                            at_us=arm.fires_at_us if policy.whole_seconds else None)
        except CallGone:
            return
        except CallError as exc:
            log.error("call %s: safety net not armed: %s", live.ref, exc)
            return
        live.net_fires_at_us = arm.fires_at_us
        live.net_too_early = False

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
