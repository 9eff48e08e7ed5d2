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

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from switchctl.billing.accounts import Account, Accounts
from switchctl.billing.callkeys import (
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
from switchctl.switch.call import Call, DialAnswer, DialOutcome, DialResult

from .cutoff import CREDIT_EXHAUSTED, CutoffManager, LiveCall, wall_us

log = logging.getLogger(__name__)

US_PER_S = 1_000_000
RECENT_ENDS = 200


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
        variables = dial_variables(call.uuid, account.name, account.tenant)
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
        live = self.cutoff.stop(pending.ref)
        cut_reason = live.cut_reason if live is not None else None
        outcome = result.outcome.value if result is not None else "error"
        talk_us = result.talk_us if result is not None else 0
        cost: Money | None = None
        if pending.held_micros:
            account_id = pending.account.id
            async with self.cutoff.lock(account_id):
                if result is not None and result.outcome is DialOutcome.ANSWERED:
                    answer_us = result.answered_at_us or (live.answer_us if live else 0)
                    if not result.ended_at_us and answer_us:
                        talk_us = max(0, self.clock() - answer_us)
                        log.warning("call %s: the switch reported no end time; billing %d µs by our "
                                    "clock", pending.ref, talk_us)
                    rate = self._billing_rate(pending, live, answer_us)
                    if cut_reason == CREDIT_EXHAUSTED and live is not None and talk_us > live.paid_us:
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
