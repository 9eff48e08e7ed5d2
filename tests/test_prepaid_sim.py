"""Issue 4 acceptance on the FreeSWITCH simulator: prepaid calls end to end, on the real clock.

The site is tests/sites/prepaid/: a booth dials a number of 4+ digits, the `prepaid` node authorizes
the caller's own account, the `dial` node sends the number to gateway `upstream`; a booth without
money hears a tone and is hung up. The controller runs with a SQLite store (billing on), the simulator
plays FreeSWITCH (media at real speed) and writes json_cdr files that the controller's CDR collector
reads. The rate is 0.60 EUR/min billed 1/1 (0.01 EUR a second, no connect fee).

Everything is measured on the SWITCH's clock: the B leg's own answer and end (µs) from its json_cdr
file, and the warning's uuid_broadcast as the simulator received it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchctl.billing.money import Money, currency
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.flows import FlowTrace
from switchctl.flowtest import sim_routes
from switchctl.sim import FreeSwitchSim, SimConfig
from switchctl.sim import api as simapi
from switchctl.sim.config import GatewayBehaviour
from switchctl.sitecheck import check_site
from switchctl.store.database import Store
from switchctl.switch.call import DialOutcome, DialResult

SITE = Path(__file__).resolve().parent / "sites" / "prepaid" / "site.yaml"
EUR = currency("EUR")
RATES = (
    "prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment\n"
    "44,UK,EUR,0.60,0,1,1\n"
)
NUMBER = "441234567"
PER_SECOND = Money.parse("0.01", EUR)  # one increment of the 1/1 rate
CUT_TOLERANCE_US = 100_000
WARNING_TOLERANCE_US = 200_000


@dataclasses.dataclass
class Booths:
    controller: Controller
    sim: FreeSwitchSim
    cdr_dir: Path
    dials: list[DialResult]
    broadcasts: list[tuple[str, int]]  # (uuid_broadcast args, wall µs when the simulator got it)
    traces: dict[str, FlowTrace | None]

    @property
    def billing(self):  # type: ignore[no-untyped-def]
        assert self.controller.billing is not None
        return self.controller.billing

    async def account(self, name: str, credit: str | None) -> int:
        acct = await self.billing.accounts.create("booth", name, EUR)
        if credit is not None:
            await self.billing.ledger.topup(acct.id, Money.parse(credit, EUR), f"init-{name}")
        return acct.id

    async def call(self, caller: str, timeout: float):  # type: ignore[no-untyped-def]
        placed = self.sim.place_call(destination=NUMBER, caller=caller)
        return await asyncio.wait_for(placed.done, timeout)

    async def trace(self, uuid: str, wait: float = 5.0) -> FlowTrace | None:
        deadline = time.monotonic() + wait
        while uuid not in self.traces and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.traces.get(uuid)

    def cdr(self, uuid: str) -> dict[str, str]:
        """The variables of one leg's json_cdr file (in the CDR folder or moved to done/ by the collector)."""
        for folder in (self.cdr_dir, self.cdr_dir / "done"):
            path = folder / f"{uuid}.cdr.json"
            if path.exists():
                return json.loads(path.read_text())["variables"]
        raise AssertionError(f"no json_cdr file for leg {uuid} in {self.cdr_dir}")

    async def drained(self, wait: float = 5.0) -> int:
        deadline = time.monotonic() + wait
        while self.sim.channels and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return len(self.sim.channels)


async def start_booths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, warning_seconds: int,
                       far_end_talk_s: float = 60.0, cdr_poll_seconds: float = 3600.0) -> tuple[Booths, Store]:
    site = load_site(SITE)
    checked = check_site(site)
    assert checked.ok, checked.report()
    cdr_dir = tmp_path / "cdr"
    cdr_dir.mkdir()
    [fs1] = site.switches
    fs1 = dataclasses.replace(fs1, outbound=dataclasses.replace(fs1.outbound, port=0),
                              cdr=dataclasses.replace(fs1.cdr, path=cdr_dir))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    site = dataclasses.replace(site, switches=(fs1,), database_url=db_url,
                               billing=dataclasses.replace(site.billing, warning_seconds=warning_seconds,
                                                           cdr_poll_seconds=cdr_poll_seconds))
    store = Store.open(db_url)
    traces: dict[str, FlowTrace | None] = {}
    controller = Controller(site, checked.flows, store=store, on_trace=lambda uuid, t: traces.__setitem__(uuid, t))

    broadcasts: list[tuple[str, int]] = []
    original_broadcast = simapi.COMMANDS["uuid_broadcast"]

    def recording_broadcast(sim: FreeSwitchSim, args: str) -> str:
        broadcasts.append((args, time.time_ns() // 1000))
        return original_broadcast(sim, args)

    monkeypatch.setitem(simapi.COMMANDS, "uuid_broadcast", recording_broadcast)

    await controller.start(connect_inbound=False)  # every command of a call goes over its outbound socket
    billing = controller.billing
    assert billing is not None
    await billing.rates.import_text(RATES, "rates.csv")
    await billing.reload_rates()
    dials: list[DialResult] = []
    original_end = billing.prepaid.on_dial_end

    async def recording_end(call, auth, result):  # type: ignore[no-untyped-def]
        if result is not None:
            dials.append(result)
        await original_end(call, auth, result)

    monkeypatch.setattr(billing.prepaid, "on_dial_end", recording_end)

    outbound = f"127.0.0.1:{controller.servers['fs1'].port}"
    sim = FreeSwitchSim(SimConfig(
        dialplan=sim_routes(site, checked.flows, outbound),
        gateways={"upstream": GatewayBehaviour(answer_after=0.2, hangup_after=far_end_talk_s)},
        media_speed=1.0, sessions_per_second=10_000, max_sessions=10_000, cdr_dir=cdr_dir,
    ))
    await sim.start()
    return Booths(controller, sim, cdr_dir, dials, broadcasts, traces), store


async def stop_booths(booths: Booths, store: Store) -> None:
    await booths.sim.close()
    await booths.controller.stop(grace=2)
    await store.engine.dispose()


@pytest.fixture
async def booths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Booths]:
    b, store = await start_booths(tmp_path, monkeypatch, warning_seconds=2)
    try:
        yield b
    finally:
        await stop_booths(b, store)


async def check_cut_call(b: Booths, *, paid_s: int, warning_s: int, credit: str) -> None:
    acct = await b.account("1001", credit)
    started = time.monotonic()
    result = await b.call("1001", timeout=paid_s + 20)
    took = time.monotonic() - started
    trace = await b.trace(result.uuid)
    assert trace is not None, "no flow ran"
    assert [node for _flow, node, _outcome in trace.steps][:2] == ["auth", "ring"], trace.steps

    assert len(b.dials) == 1, b.dials
    dial = b.dials[0]
    assert dial.outcome is DialOutcome.ANSWERED and dial.caller_hung_up, dial
    assert dial.cause == "ALLOTTED_TIMEOUT", dial

    # the cut on the switch's clock: the B leg's own answer and end, from its json_cdr file
    leg_b = b.cdr(dial.peer_uuid)
    b_answer_us, b_end_us = int(leg_b["answer_uepoch"]), int(leg_b["end_uepoch"])
    b_talk_us = b_end_us - b_answer_us
    cut_error_us = b_talk_us - paid_s * 1_000_000
    print(f"\nprepaid cut on the simulator ({paid_s} s paid): B talked {b_talk_us} us "
          f"(billusec {leg_b.get('billusec')}), error {cut_error_us / 1000:+.1f} ms; "
          f"dial talk_us {dial.talk_us}; whole call {took:.2f} s")
    assert abs(cut_error_us) <= CUT_TOLERANCE_US, f"cut {cut_error_us / 1000:+.1f} ms off the paid {paid_s} s"
    assert abs(dial.talk_us - b_talk_us) <= CUT_TOLERANCE_US

    # the warning: one uuid_broadcast on the caller (A) at paid - warning_seconds
    warnings = [(args, at) for args, at in b.broadcasts if args.startswith(result.uuid)]
    assert len(warnings) == 1, b.broadcasts
    warned_at = warnings[0][1] - b_answer_us
    print(f"warning at {warned_at / 1e6:.3f} s after B's answer: {warnings[0][0]}")
    assert abs(warned_at - (paid_s - warning_s) * 1_000_000) <= WARNING_TOLERANCE_US, warned_at
    assert b.controller.site.billing.warning_prompt in warnings[0][0]

    # the ledger: one commit of the rated talk time, at most one increment over the money. The
    # switch's record may run a few ms past the paid end (our cut is never early): that tail may
    # cost one more increment at 1/1, which the live commit may leave out (the caller pays what the
    # money bought) — never more than the switch's record rated, never less by more than one increment.
    rate = b.billing.rate_book.find(NUMBER, at_us=dial.answered_at_us)
    assert rate is not None
    credit_money = Money.parse(credit, EUR)
    entries = await b.billing.ledger.entries(acct)
    commits = [e for e in entries if e.kind == "commit"]
    assert len(commits) == 1, entries
    committed = -commits[0].amount
    b_cost = rate.rate.cost(b_talk_us)
    print(f"committed {committed} for {credit_money} of money; the B leg's CDR rates {b_cost}")
    assert b_cost - PER_SECOND <= committed <= b_cost, (committed, b_cost)
    assert committed in (rate.rate.cost(dial.talk_us), rate.rate.cost(min(dial.talk_us, paid_s * 1_000_000)))
    assert committed <= credit_money + PER_SECOND, committed
    assert entries[-1].held_after.micros == 0

    # the CDR collector reads both legs' files: the commit is replayed, never a second debit
    report = await b.billing.collector.catch_up()
    report_again = await b.billing.collector.catch_up()
    entries_after = await b.billing.ledger.entries(acct)
    assert [e.kind for e in entries_after].count("commit") == 1, entries_after
    assert await b.billing.ledger.balance(acct) == credit_money - committed
    assert not report.problems and not report_again.problems, (report, report_again)
    assert await b.billing.ledger.live_reservations(acct) == []
    assert await b.drained() == 0, f"channels left on the simulator: {list(b.sim.channels)}"


async def test_cut_at_the_paid_5_s_with_a_warning_2_s_before(booths: Booths) -> None:
    await check_cut_call(booths, paid_s=5, warning_s=2, credit="0.05")


@pytest.mark.slow
async def test_cut_at_the_paid_65_s_with_a_warning_10_s_before(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    b, store = await start_booths(tmp_path, monkeypatch, warning_seconds=10, far_end_talk_s=120.0)
    try:
        await check_cut_call(b, paid_s=65, warning_s=10, credit="0.65")
    finally:
        await stop_booths(b, store)


async def test_an_empty_account_hears_the_prompt_and_nothing_is_dialled(booths: Booths) -> None:
    acct = await booths.account("1002", None)
    result = await booths.call("1002", timeout=15)
    trace = await booths.trace(result.uuid)
    assert trace is not None, "no flow ran"
    assert [node for _flow, node, _outcome in trace.steps] == ["auth", "refused", "bye"], trace.steps
    assert trace.variables["prepaid_outcome"] == "insufficient_funds"
    apps = [app for app, _arg, _resp in result.apps]
    assert "bridge" not in apps, result.apps
    assert any(app == "playback" and arg.startswith("tone_stream://%(500,500,480,620)")
               for app, arg, _resp in result.apps), result.apps
    assert booths.dials == []
    assert await booths.billing.ledger.entries(acct) == []
    assert await booths.billing.ledger.balance(acct) == Money(0, EUR)
    assert await booths.drained() == 0


async def test_20_concurrent_calls_share_one_account(booths: Booths) -> None:
    calls, paid_each_s = 20, 3
    credit_text = f"{calls * paid_each_s * PER_SECOND.micros / 10**6:.2f}"  # 0.60 EUR: 20 x 3 s
    credit = Money.parse(credit_text, EUR)
    acct = await booths.account("1003", credit_text)
    started = time.monotonic()
    results = await asyncio.gather(*(booths.call("1003", timeout=40) for _ in range(calls)))
    took = time.monotonic() - started
    assert len(booths.dials) == calls, [t for t in booths.traces.values()]
    assert all(d.outcome is DialOutcome.ANSWERED and d.caller_hung_up for d in booths.dials), booths.dials
    assert {d.cause for d in booths.dials} == {"ALLOTTED_TIMEOUT"}, booths.dials

    # the switch's record of each B leg (its json_cdr), rated with the same rate, by A leg
    rate = booths.billing.rate_book.find(NUMBER, at_us=booths.dials[0].answered_at_us)
    assert rate is not None
    b_talks: dict[str, int] = {}
    for dial in booths.dials:
        leg_b = booths.cdr(dial.peer_uuid)
        b_talks[leg_b["bridge_uuid"]] = int(leg_b["end_uepoch"]) - int(leg_b["answer_uepoch"])
    assert set(b_talks) == {r.uuid for r in results}
    rated = sum((rate.rate.cost(us) for us in b_talks.values()), Money(0, EUR))

    report = await booths.billing.collector.catch_up()  # both legs' CDRs of every call: no second debit
    assert not report.problems, report
    entries = await booths.billing.ledger.entries(acct)
    commits = {e.call_ref.call_uuid: -e.amount for e in entries if e.kind == "commit"}
    debit = sum(commits.values(), Money(0, EUR))
    balance = await booths.billing.ledger.balance(acct)
    print(f"\n{calls} calls on one account: B talked {min(b_talks.values()) / 1e6:.3f}.."
          f"{max(b_talks.values()) / 1e6:.3f} s, debit {debit} of {credit}, the CDRs rate {rated}, "
          f"balance {balance}, took {took:.2f} s")
    assert len([e for e in entries if e.kind == "commit"]) == calls, entries
    assert set(commits) == set(b_talks)
    for a_uuid, committed in commits.items():
        # each commit is its CDR rated, or that less the tail our cut ran past the paid end
        b_cost = rate.rate.cost(b_talks[a_uuid])
        assert b_cost - PER_SECOND <= committed <= b_cost, (a_uuid, committed, b_talks[a_uuid])
    assert debit <= credit + PER_SECOND, f"the account was overdrawn by {debit - credit}"
    assert balance == credit - debit
    assert await booths.billing.ledger.live_reservations(acct) == []
    assert entries[-1].held_after.micros == 0
    assert all(r.answered for r in results)
    assert await booths.drained() == 0, f"channels left on the simulator: {list(booths.sim.channels)}"
