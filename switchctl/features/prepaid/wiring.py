"""Prepaid billing as the controller runs it: one object that owns the rate book, the ledger, the
prepaid service (the flows' `CallBilling`) and the CDR collector of a site.

    billing = await PrepaidWiring.start(site, store)
    runner.billing = billing.prepaid
    task = asyncio.create_task(billing.run(stop))    # CDR files, every `billing.cdr_poll_seconds`
    ...
    await billing.reload_rates()                      # after `switchctl rates import`
    await billing.close()

`run` also watches the balances of the accounts that have live calls (same interval): a
`switchctl account topup` runs in another process, so the cutoff hears of it only this way.

At start the collector catches up first: calls that ended while no controller was up are billed
from the switches' own CDRs before the first new call is authorized, so an account's balance is
right when it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from switchctl.billing.accounts import Accounts
from switchctl.billing.cdrcollect import CdrCollector, CdrSource, CollectReport
from switchctl.billing.cdrstore import CdrStore
from switchctl.billing.ledger import Ledger, LedgerError
from switchctl.billing.ratestore import RateStore
from switchctl.billing.rating import RateBook
from switchctl.config.site import Site
from switchctl.store.database import Store
from switchctl.switch.call import Call, CallError, Switch

from .cutoff import CutoffManager, wall_us
from .safetynet import ASTERISK_NET, FREESWITCH_NET, SafetyNetPolicy
from .service import PrepaidService, ReadoptReport

log = logging.getLogger(__name__)

def cdr_sources(site: Site) -> list[CdrSource]:
    """Where each switch of the site writes the CDRs the collector reads (site `cdr:` keys)."""
    sources: list[CdrSource] = []
    for sw in site.switches:
        if sw.cdr is None:
            continue
        if sw.kind == "freeswitch":
            make = CdrSource.freeswitch_json if sw.cdr.format == "json" else CdrSource.freeswitch_csv
            sources.append(make(sw.name, sw.cdr.path))
        elif sw.kind == "asterisk":
            sources.append(CdrSource.asterisk_custom(sw.name, sw.cdr.path))
    return sources


def net_policies(site: Site) -> Callable[[Call], SafetyNetPolicy]:
    """The safety-net behaviour of the switch a call is on (safetynet.py)."""
    kinds = {sw.name: sw.kind for sw in site.switches}

    def policy(call: Call) -> SafetyNetPolicy:
        return ASTERISK_NET if kinds.get(call.info.switch) == "asterisk" else FREESWITCH_NET

    return policy


class TopupWatcher:
    """Notices money that reached an account with live calls from outside this controller (the
    `switchctl account topup` CLI, another controller, an operator adjustment) and has the cutoff
    recompute that account's calls, so a topped-up call is no longer cut at its old end.

    Each `poll` reads the ledger balance of the accounts that have live calls, nothing else, and
    calls `notify(account_id)` when it differs from the previous poll's, and on the first poll that
    sees the account (a top-up may have landed between its call's answer and that poll; the
    recompute reads the ledger itself, so nothing between the two reads is missed). Any change
    counts, not only growth: a top-up and a commit of another call in the same interval can cancel
    out in the sum, and a decrease (another controller's commit, an adjustment) moves the cut
    too. A recompute that finds the same ends changes nothing (no new safety net is armed)."""

    def __init__(
        self,
        ledger: Ledger,
        live_accounts: Callable[[], Iterable[int]],
        notify: Callable[[int], Awaitable[None]],
    ) -> None:
        self.ledger = ledger
        self.live_accounts = live_accounts
        self.notify = notify
        self._seen: dict[int, int] = {}  # account id -> balance (micro-units) at the last poll

    async def poll(self) -> list[int]:
        """One look at every account with live calls; the ids that were notified."""
        accounts = set(self.live_accounts())
        for gone in set(self._seen) - accounts:  # no live call any more: forget it
            del self._seen[gone]
        notified: list[int] = []
        for account_id in sorted(accounts):
            try:
                balance = (await self.ledger.balance(account_id)).micros
            except (LedgerError, OSError) as exc:  # next poll retries; the cutoff keeps cutting
                log.warning("account %s: balance not read for top-ups (%s)", account_id, exc)
                continue
            if self._seen.get(account_id) == balance:
                continue
            self._seen[account_id] = balance
            await self.notify(account_id)
            notified.append(account_id)
        return notified

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        """Poll every `interval` seconds until `stop` is set; a failed round is logged and retried."""
        while not stop.is_set():
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("top-up watch round failed; retrying in %.1f s", interval)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass


@dataclass
class PrepaidWiring:
    site: Site
    rates: RateStore
    ledger: Ledger
    accounts: Accounts
    prepaid: PrepaidService
    collector: CdrCollector
    rate_book: RateBook
    last_catch_up: CollectReport | None = None

    @classmethod
    async def start(cls, site: Site, store: Store, *, catch_up: bool = True) -> PrepaidWiring:
        await store.create_all()
        rates = RateStore(store)
        ledger = Ledger(store, wall_us)
        accounts = Accounts(store, wall_us)
        cutoff = CutoffManager(
            ledger,
            warning_seconds=site.billing.warning_seconds,
            warning_prompt=site.billing.warning_prompt,
            safety_net=net_policies(site),
        )
        wiring: PrepaidWiring
        book = await rates.load()

        def current_book() -> RateBook:
            return wiring.rate_book

        prepaid = PrepaidService(ledger, accounts, current_book, cutoff=cutoff, tenant=site.billing.tenant)
        collector = CdrCollector(cdr_sources(site), CdrStore(store), ledger, accounts, current_book,
                                 tenant=site.billing.tenant)
        wiring = cls(site, rates, ledger, accounts, prepaid, collector, book)
        if catch_up:
            wiring.last_catch_up = await collector.catch_up()
            report = wiring.last_catch_up
            log.info("CDR catch-up done", extra={"records": report.records, "committed": report.committed,
                                                  "released": report.released, "errors": report.errors})
        return wiring

    def topup_watcher(self) -> TopupWatcher:
        """The watcher `run` uses: balances of accounts with live calls → `prepaid.topup`."""
        return TopupWatcher(self.ledger,
                            lambda: {live.account_id for live in self.prepaid.cutoff.live()},
                            self.prepaid.topup)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`, every `billing.cdr_poll_seconds`: read the switches' CDR files (the
        collector never raises for one bad record) and watch live calls' accounts for top-ups."""
        interval = self.site.billing.cdr_poll_seconds
        watch = asyncio.create_task(self.topup_watcher().run(stop, interval), name="topup-watch")
        try:
            await self.collector.run(stop, interval=interval)
        finally:
            if not watch.done():
                watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def reload_rates(self) -> None:
        """A new rate import is in the store: rate with it and recompute every live call's cut."""
        self.rate_book = await self.rates.load()
        await self.prepaid.rates_changed()

    async def readopt(self, switches: Iterable[Switch]) -> list[ReadoptReport]:
        """After a restart: every prepaid call still talking on `switches` goes back under the
        cutoff (PrepaidService.readopt). A switch that cannot list or adopt calls is logged and
        skipped: its calls keep the safety nets armed before the restart, and the CDR importer
        bills them when they end."""
        reports = []
        for switch in switches:
            try:
                reports.append(await self.prepaid.readopt(switch))
            except CallError as exc:
                log.error("live calls on %s not re-adopted: %s", switch.name, exc)
        return reports

    async def close(self) -> None:
        # Our timers stop; the live calls keep their switch-side safety nets.
        with contextlib.suppress(Exception):
            await self.prepaid.close()
