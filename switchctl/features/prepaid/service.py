"""The prepaid feature: authorize a call against an account, cut it when the money is gone, bill it once.

`PrepaidService` is the flow runtime's `CallBilling` (flows/hooks.py):
- `authorize`: the account (by name, in the service's tenant); a calling card's PIN; the rate of the
  destination for the account's class; a reservation of the connect fee + first block on
  `callkeys.reservation_ref(switch, caller leg uuid)`. The answer carries the talk time the
  available money pays for now and the channel variables that tie the dialled legs' CDRs to it.
- `on_answer`: the call goes under the `CutoffManager` (rated again at the switch's answer instant,
  like the CDR importer rates it, so a time band is the one in force at the answer).
- `on_dial_end`: timers stop; an answered call commits `cost(DialResult.talk_us)` under
  `callkeys.commit_key` — the key the CDR importer uses, so whichever path comes first bills it
  and the other is a replay; an unanswered one releases its reservation. An answered call whose
  dial raised (no result) is left to the CDR importer, which has the switch's own times.
- `release`: an authorization no dial used gives its reservation back.
Every ledger write has an idempotency key derived from the call (callkeys), so a retry cannot
bill twice. Money is `Money` (integer micro-units) throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from switchctl.billing.accounts import Account, Accounts
from switchctl.billing.callkeys import (
    CALL_VAR,
    DESTINATION_VAR,
    commit_key,
    dial_variables,
    release_key,
    reservation_ref,
)
from switchctl.billing.ledger import (
    LIVE,
    CallRef,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    LedgerError,
    ReservationClosed,
    ReservationExists,
)
from switchctl.billing.money import Money
from switchctl.billing.rating import DEFAULT, Rate, RateBook, RateRow
from switchctl.flows.hooks import (
    Authorization,
    AuthorizeOutcome,
    CallBilling,
    PrepaidRequest,
)
from switchctl.switch.call import (
    AdoptedCall,
    Call,
    CallError,
    CallGone,
    DialAnswer,
    DialOutcome,
    DialResult,
    LiveChannel,
    Switch,
)

from .cutoff import CREDIT_EXHAUSTED, CutoffManager, LiveCall, wall_us

log = logging.getLogger(__name__)

US_PER_S = 1_000_000
RECENT_ENDS = 200
# How late our own cut may land and still bill only the paid time (issue 4's target: max 100 ms).
# A call that ran on longer than that (a stalled controller) pays what it talked.
CUT_LATENESS_FORGIVEN_US = 100_000
CALLER_HANGUP_WAIT_S = 10.0  # after an adopted call's B leg ended: how long to follow its caller leg
ADOPTED_END_WAIT_S = 1.0  # ... and how long to wait for its hangup time before settling who ended it


class PrepaidError(Exception):
    """The feature cannot serve this call as asked (a setup or contract problem, not a refusal)."""


@dataclass
class _Authorized:
    """An OK authorization until its dial ends (or it is released)."""

    ref: CallRef
    account: Account
    destination: str
    row: RateRow
    held_micros: int  # 0 for a free destination (nothing reserved)
    answered: bool = False


@dataclass
class ReadoptReport:
    """What `PrepaidService.readopt` found on one switch."""

    switch: str
    adopted: list[str] = field(default_factory=list)  # reservation refs now under the cutoff again
    already_live: int = 0  # prepaid B legs this controller was already following
    skipped: list[str] = field(default_factory=list)  # "<ref>: why" (not answered, no reservation...)


@dataclass(frozen=True, slots=True)
class LiveCallView:
    """One live prepaid call, for the console: what it has cost so far and how long it has left."""

    ref: str
    account: str
    tenant: str
    destination: str
    prefix: str
    answer_us: int
    elapsed_us: int
    running_cost: Money  # the cost if it ended now (rated on the elapsed time)
    time_left_us: int
    end_us: int  # when it will be cut if nothing changes (switch clock, epoch µs)
    warned: bool


@dataclass(frozen=True, slots=True)
class EndedCall:
    """How a prepaid dial ended (kept for the last `RECENT_ENDS` calls)."""

    ref: str
    account: str
    outcome: str  # the dial outcome, or "error" when the dial raised
    talk_us: int
    cost: Money | None  # what was committed (None: released, or left to the CDR importer)
    cut_reason: str | None  # "credit_exhausted" when our cutoff ended it


class PrepaidService(CallBilling):
    """Authorization, live cutoff and settlement of prepaid calls (one per controller)."""

    def __init__(
        self,
        ledger: Ledger,
        accounts: Accounts,
        rate_book: Callable[[], RateBook],
        *,
        cutoff: CutoffManager | None = None,
        tenant: str = DEFAULT,
        clock: Callable[[], int] = wall_us,
    ) -> None:
        self.ledger = ledger
        self.accounts = accounts
        self.rate_book = rate_book
        self.cutoff = cutoff if cutoff is not None else CutoffManager(ledger, wall_clock=clock)
        self.tenant = tenant
        self.clock = clock
        self._authorized: dict[str, _Authorized] = {}
        self.ended: deque[EndedCall] = deque(maxlen=RECENT_ENDS)
        self._followers: set[asyncio.Task[None]] = set()

    # -- CallBilling ------------------------------------------------------------------------------
    async def authorize(self, call: Call, request: PrepaidRequest) -> Authorization:
        ref = reservation_ref(call.info.switch, call.uuid)
        account_or_refusal = await self._account(request)
        if isinstance(account_or_refusal, Authorization):
            return account_or_refusal
        account = account_or_refusal
        row = self._rate(account, request.destination, self.clock())
        if isinstance(row, str):
            return Authorization(AuthorizeOutcome.NO_RATE, detail=row)
        rate = row.rate
        variables = dial_variables(call.uuid, account.name, account.tenant, request.destination)
        first = rate.cost(1)  # connect fee + first block (+ minimum)
        if first.micros == 0:  # a free destination: nothing to reserve, nothing to cut
            self._authorized[str(ref)] = _Authorized(ref, account, request.destination, row, 0)
            return Authorization(AuthorizeOutcome.OK, ref=str(ref),
                                 max_seconds=self.cutoff.ceiling_us // US_PER_S, dial_variables=variables)
        try:
            entry = await self.ledger.reserve(account.id, ref, first, f"{ref}:reserve")
        except InsufficientFunds as exc:
            return Authorization(AuthorizeOutcome.INSUFFICIENT_FUNDS,
                                 detail=f"{exc.available} available, {first} needed to connect")
        except (ReservationExists, ReservationClosed) as exc:
            raise PrepaidError(f"call {ref} already had a prepaid reservation ({exc}); the ledger "
                               "names a reservation after the caller's leg, so one leg pays one "
                               "dial") from None
        if entry.replayed:  # a retried authorize: the reservation must still be open
            reservation = await self.ledger.reservation(ref)
            if reservation is None or reservation.state != LIVE:
                raise PrepaidError(f"call {ref}: its reservation is already closed; one leg pays one dial")
            available = (await self.ledger.available(account.id)).micros + reservation.held.micros
        else:
            available = entry.available_after.micros + first.micros
        paid_us = rate.max_duration(Money(available, rate.currency), ceiling_us=self.cutoff.ceiling_us)
        self._authorized[str(ref)] = _Authorized(ref, account, request.destination, row, first.micros)
        # The new reservation takes money the account's live calls were counting on.
        await self.cutoff.recompute(account.id)
        return Authorization(AuthorizeOutcome.OK, ref=str(ref), max_seconds=paid_us // US_PER_S,
                             dial_variables=variables)

    async def on_answer(self, call: Call, auth: Authorization, answer: DialAnswer) -> None:
        pending = self._authorized.get(auth.ref)
        if pending is None:
            log.error("call %s answered under unknown authorization %r: not under the cutoff",
                      call.uuid, auth.ref)
            return
        pending.answered = True
        if pending.held_micros == 0:
            return  # free destination
        answer_us = answer.answered_at_us
        if not answer_us:
            answer_us = self.clock()
            log.warning("call %s: the switch reported no answer time; using ours", pending.ref)
        row = self._rate(pending.account, pending.destination, answer_us)
        if isinstance(row, RateRow):
            pending.row = row  # rated at the answer, like the CDR importer does
        await self.cutoff.start(LiveCall(
            call=call, ref=pending.ref, account_id=pending.account.id, account=pending.account.name,
            destination=pending.destination, rate=pending.row.rate, answer_us=answer_us,
            held_micros=pending.held_micros,
        ))

    async def on_dial_end(self, call: Call, auth: Authorization, result: DialResult | None) -> None:
        pending = self._authorized.pop(auth.ref, None)
        if pending is None:
            log.error("call %s: dial ended under unknown authorization %r", call.uuid, auth.ref)
            return
        outcome = result.outcome.value if result is not None else "error"
        talk_us = result.talk_us if result is not None else 0
        cost: Money | None = None
        if not pending.held_micros:
            live = self.cutoff.stop(pending.ref)
            cut_reason = live.cut_reason if live is not None else None
        else:
            account_id = pending.account.id
            async with self.cutoff.lock(account_id):
                # Stopped under the account's lock: a sibling's recompute never sees this call gone
                # but not settled (its whole hold would count as spent and cut the siblings early).
                live = self.cutoff.stop(pending.ref)
                cut_reason = live.cut_reason if live is not None else None
                if result is not None and result.outcome is DialOutcome.ANSWERED:
                    answer_us = result.answered_at_us or (live.answer_us if live else 0)
                    if not result.ended_at_us and answer_us:
                        talk_us = max(0, self.clock() - answer_us)
                        log.warning("call %s: the switch reported no end time; billing %d µs by our "
                                    "clock", pending.ref, talk_us)
                    rate = self._billing_rate(pending, live, answer_us)
                    if (cut_reason == CREDIT_EXHAUSTED and live is not None
                            and live.paid_us < talk_us <= live.paid_us + CUT_LATENESS_FORGIVEN_US):
                        # Our cut lands a few ms after the paid end (the switch's timestamps tick in
                        # 1-20 ms): billing that tail would charge a whole extra increment for it
                        # (an Asterisk 65 s cut measured 65.002 s: 66 s at 1/1). The caller pays
                        # what the money bought.
                        talk_us = live.paid_us
                    cost = await self._commit(pending.ref, rate, talk_us)
                elif result is None and (pending.answered or live is not None):
                    log.warning("call %s: answered, but its dial ended without a result; its "
                                "reservation is left for the CDR importer to bill", pending.ref)
                else:
                    await self._release(pending.ref)
            await self.cutoff.recompute(account_id)
        self.ended.append(EndedCall(str(pending.ref), pending.account.name, outcome, talk_us, cost,
                                    cut_reason))

    async def release(self, call: Call, auth: Authorization) -> None:
        pending = self._authorized.pop(auth.ref, None)
        if pending is None or not pending.held_micros:
            return
        async with self.cutoff.lock(pending.account.id):
            await self._release(pending.ref)
        await self.cutoff.recompute(pending.account.id)

    # -- after a restart ---------------------------------------------------------------------------
    async def readopt(self, switch: Switch) -> ReadoptReport:
        """Take the prepaid calls still talking on `switch` under the cutoff again (a controller
        restart: the flows that dialled them died with the old process).

        Every answered, bridged B leg carrying `switchctl_call` is one: its reservation
        (`reservation_ref(switch, <switchctl_call>)`) must still be open in the ledger; the account
        is the reservation's; the rate is the authorized destination's (`switchctl_destination`,
        else the B leg's callee) at the B leg's own answer instant, as `on_answer` rates it. The
        caller's leg (the bridge's other side) is adopted for the cut, the warning and the safety
        net, which the recompute arms again; the B leg is followed to its hangup, and then the
        normal end path (`on_dial_end`) commits its talk time under the same `commit_key` the CDR
        importer uses: billed once, whichever comes first. A B leg whose end is seen without the
        switch's times (the connection was down) is left to the CDR importer. Calls this
        controller already follows are left alone, so running it again (a reconnect) is harmless."""
        report = ReadoptReport(switch.name)
        channels = await switch.live_calls()
        for channel in channels:
            caller_uuid = channel.variables.get(CALL_VAR)
            if not caller_uuid or caller_uuid == channel.uuid:
                continue  # not a B leg of a prepaid dial
            ref = reservation_ref(switch.name, caller_uuid)
            if self.cutoff.get(ref) is not None or str(ref) in self._authorized:
                report.already_live += 1
                continue
            why = await self._readopt_one(switch, channel, ref)
            if why is None:
                report.adopted.append(str(ref))
            else:
                report.skipped.append(f"{ref}: {why}")
                log.warning("call %s not re-adopted: %s", ref, why)
        log.info("re-adopted %d live prepaid call(s) on %s (%d skipped, %d already followed)",
                 len(report.adopted), switch.name, len(report.skipped), report.already_live)
        return report

    async def _readopt_one(self, switch: Switch, leg_b: LiveChannel, ref: CallRef) -> str | None:
        """Adopt one call; None when it is under the cutoff again, else why not."""
        if not leg_b.answered_at_us or not leg_b.bridged_to:
            # Still ringing: the dial that would have answered it died; its reservation is settled
            # by the CDR importer when the legs end.
            return "not answered and bridged"
        reservation = await self.ledger.reservation(ref)
        if reservation is None or reservation.state != LIVE:
            return "no open reservation (already settled)"
        account = await self.accounts.get(reservation.account_id)
        destination = leg_b.variables.get(DESTINATION_VAR) or leg_b.variables.get("destination_number", "")
        row = self._rate(account, destination, leg_b.answered_at_us)
        if isinstance(row, str):
            return f"cannot rate it ({row}); the switch's safety net armed before the restart stands"
        try:
            caller = await switch.adopt(leg_b.bridged_to)
            callee = await switch.adopt(leg_b.uuid)
        except CallGone:
            return "hung up while being adopted (the CDR importer bills it)"
        except CallError as exc:
            return f"not adoptable: {exc}"
        pending = _Authorized(ref, account, destination, row, reservation.held.micros, answered=True)
        self._authorized[str(ref)] = pending
        try:
            await self.cutoff.start(LiveCall(
                call=caller, ref=ref, account_id=account.id, account=account.name,
                destination=destination, rate=row.rate, answer_us=leg_b.answered_at_us,
                held_micros=reservation.held.micros,
            ))
        finally:
            task = asyncio.create_task(self._follow_adopted(caller, callee, pending),
                                       name=f"prepaid-adopted-{ref}")
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
        return None

    @staticmethod
    async def _caller_ended_first(caller: AdoptedCall, callee: AdoptedCall) -> bool:
        """Who ended an adopted call, from the switch's own hangup times: whichever leg goes, the
        other follows within moments, and the order our events arrive in is not the order the
        switch ended them in (a cut caller's destroy was seen after its B leg's)."""
        if caller.hangup_cause is None:
            try:
                await asyncio.wait_for(caller.wait_hangup(), ADOPTED_END_WAIT_S)
            except (TimeoutError, CallError):
                return False  # the caller is still up: B ended it
        if caller.ended_at_us and callee.ended_at_us:
            return caller.ended_at_us <= callee.ended_at_us
        return caller.hangup_cause is not None

    async def _follow_adopted(self, caller: AdoptedCall, callee: AdoptedCall, pending: _Authorized) -> None:
        """Wait for the adopted call's B leg to end, then settle it like a dial that ended."""
        result: DialResult | None = None
        try:
            cause = await callee.wait_hangup()
            if callee.ended_at_us and callee.answered_at_us:
                result = DialResult(DialOutcome.ANSWERED, cause, None, callee.uuid,
                                    callee.answered_at_us, callee.ended_at_us,
                                    caller_hung_up=await self._caller_ended_first(caller, callee))
        except CallError as exc:
            log.warning("call %s: lost track of its B leg (%s)", pending.ref, exc)
        finally:
            await self.on_dial_end(caller, Authorization(AuthorizeOutcome.OK, ref=str(pending.ref)), result)
        try:
            await asyncio.wait_for(caller.wait_hangup(), CALLER_HANGUP_WAIT_S)
        except (TimeoutError, CallError):
            pass
        finally:
            await caller.release()
            await callee.release()

    async def close(self) -> None:
        """Stop following adopted calls and every cutoff timer (the switch-side nets stay armed)."""
        for task in list(self._followers):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._followers, return_exceptions=True)
        await self.cutoff.close()

    # -- notifications (CLI / web) ---------------------------------------------------------------
    async def topup(self, account: str | int) -> None:
        """Money was added to `account` (name in the service's tenant, or id): its live calls get
        their new ends."""
        if isinstance(account, str):
            found = await self.accounts.find(account, tenant=self.tenant)
            if found is None:
                return
            account = found.id
        await self.cutoff.topup(account)

    async def rates_changed(self) -> None:
        """The rate book was replaced: rate every live call again (at its answer instant)."""
        book = self.rate_book()

        def rate_of(live: LiveCall) -> Rate | None:
            pending = self._authorized.get(str(live.ref))
            if pending is None:
                return None
            row = self._rate(pending.account, pending.destination, live.answer_us, book)
            if isinstance(row, str):
                log.warning("call %s: %s after the rate change; it keeps its rate", live.ref, row)
                return None
            pending.row = row
            return row.rate

        await self.cutoff.rates_changed(rate_of)

    def live_calls(self) -> list[LiveCallView]:
        now = self.clock()
        views = []
        for live in self.cutoff.live():
            pending = self._authorized.get(str(live.ref))
            elapsed = max(0, now - live.answer_us)
            views.append(LiveCallView(
                ref=str(live.ref), account=live.account,
                tenant=pending.account.tenant if pending else self.tenant,
                destination=live.destination, prefix=pending.row.prefix if pending else "",
                answer_us=live.answer_us, elapsed_us=elapsed, running_cost=live.rate.cost(elapsed),
                time_left_us=max(0, live.end_us - now), end_us=live.end_us, warned=live.warned,
            ))
        return views

    # -- internals --------------------------------------------------------------------------------
    async def _account(self, request: PrepaidRequest) -> Account | Authorization:
        if request.pin is not None:
            auth = await self.accounts.authenticate_card(request.account, request.pin, tenant=self.tenant)
            if auth.ok and auth.account is not None:
                return auth.account
            if auth.reason == "locked":
                return Authorization(AuthorizeOutcome.LOCKED, detail="too many wrong PINs")
            return Authorization(AuthorizeOutcome.BAD_PIN, detail="unknown card or wrong PIN")
        account = await self.accounts.find(request.account, tenant=self.tenant)
        if account is None:
            return Authorization(AuthorizeOutcome.NO_ACCOUNT,
                                 detail=f"no account '{request.account}' in tenant '{self.tenant}'")
        if account.has_pin:
            return Authorization(AuthorizeOutcome.BAD_PIN, detail="a card is authorized by its PIN")
        return account

    def _rate(self, account: Account, destination: str, at_us: int,
              book: RateBook | None = None) -> RateRow | str:
        """The rate row, or why there is none."""
        try:
            row = (book or self.rate_book()).find(destination, at_us=at_us, tenant=account.tenant,
                                                  account_class=account.account_class)
        except ValueError as exc:
            return str(exc)
        if row is None:
            return f"no rate for {destination} (tenant '{account.tenant}', class '{account.account_class}')"
        if row.rate.currency != account.currency:
            return (f"the rate for {destination} is in {row.rate.currency}, account "
                    f"'{account.name}' in {account.currency}")
        return row

    def _billing_rate(self, pending: _Authorized, live: LiveCall | None, answer_us: int) -> Rate:
        """The rate the commit uses: the current book at the answer instant (as the CDR importer
        rates), else the one the call ran with."""
        row = self._rate(pending.account, pending.destination, answer_us) if answer_us else pending.row
        if isinstance(row, RateRow):
            return row.rate
        return live.rate if live is not None else pending.row.rate

    async def _commit(self, ref: CallRef, rate: Rate, talk_us: int) -> Money | None:
        cost = rate.cost(talk_us)
        allowance = Money(rate.cost_micros(rate.increment_us + rate.billed_us(1)) - rate.cost_micros(1),
                          rate.currency)  # one increment
        try:
            entry = await self.ledger.commit(ref, cost, commit_key(ref), allowance=allowance)
        except IdempotencyConflict as exc:
            log.error("call %s: already billed with another amount than %s (%s)", ref, cost, exc)
            return None
        except (ReservationClosed, LedgerError) as exc:
            log.error("call %s: commit of %s refused: %s", ref, cost, exc)
            return None
        if entry.replayed:
            log.info("call %s: already billed (by the CDR importer) %s", ref, cost)
        return cost

    async def _release(self, ref: CallRef) -> None:
        try:
            await self.ledger.release(ref, release_key(ref))
        except (ReservationClosed, IdempotencyConflict) as exc:
            log.info("call %s: reservation already closed (%s)", ref, exc)
        except LedgerError as exc:
            log.error("call %s: release refused: %s", ref, exc)
