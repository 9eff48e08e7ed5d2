"""Prepaid billing as the controller runs it: one object that owns the rate book, the ledger, the
prepaid service (the flows' `CallBilling`) and the CDR collector of a site.

    billing = await PrepaidWiring.start(site, store)
    runner.billing = billing.prepaid
    task = asyncio.create_task(billing.run(stop))    # CDR files, every `billing.cdr_poll_seconds`
    ...
    await billing.reload_rates()                      # after `switchctl rates import`
    await billing.close()

At start the collector catches up first: calls that ended while no controller was up are billed
from the switches' own CDRs before the first new call is authorized, so an account's balance is
right when it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from switchctl.billing.accounts import Accounts
from switchctl.billing.cdrcollect import CdrCollector, CdrSource, CollectReport
from switchctl.billing.cdrstore import CdrStore
from switchctl.billing.ledger import Ledger
from switchctl.billing.ratestore import RateStore
from switchctl.billing.rating import RateBook
from switchctl.config.site import Site
from switchctl.store.database import Store
from switchctl.switch.call import Call

from .cutoff import CutoffManager, wall_us
from .safetynet import ASTERISK_NET, FREESWITCH_NET, SafetyNetPolicy
from .service import PrepaidService

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

    async def run(self, stop: asyncio.Event) -> None:
        """Read the switches' CDR files until `stop` (the collector never raises for one bad record)."""
        await self.collector.run(stop, interval=self.site.billing.cdr_poll_seconds)

    async def reload_rates(self) -> None:
        """A new rate import is in the store: rate with it and recompute every live call's cut."""
        self.rate_book = await self.rates.load()
        await self.prepaid.rates_changed()

    async def close(self) -> None:
        # Our timers stop; the live calls keep their switch-side safety nets.
        with contextlib.suppress(Exception):
            await self.prepaid.cutoff.close()
