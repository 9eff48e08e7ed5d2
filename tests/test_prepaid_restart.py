"""Issue 4 item 7 acceptance: the controller SIGKILLed during 10 live prepaid calls and restarted.

The controller runs in a SUBPROCESS (`switchctl run -c <site>`, through switchctl.cli.main), so SIGKILL is real: no
cleanup, no goodbye on its sockets. The FreeSWITCH simulator runs in this test's process and outlives
it (a bridged call keeps talking when its outbound socket dies: the bridge runs in the channel's park
loop). Site tests/sites/restart/: booths 1001-1010 dial a number through the `prepaid` node; the
upstream gateway answers after 0.2 s and would talk for 120 s. Rate 0.60 EUR/min billed 1/1 (0.01 EUR
a second), so an account holding N cents pays N seconds.

Measured on the SWITCH's clock: each B leg's own answer and end µs from its json_cdr file.
(a) restarted at once: the restarted controller re-adopts the calls (show channels + uuid_dump over
    its inbound connection) and cuts each at its paid time (± 0.1 s);
(b) left down past some calls' ends: the switch-side safety net armed by the first controller cuts
    those (never early, ≤ 1.5 s late); after the restart the rest are re-adopted and cut on time.
Either way every call is committed exactly once in the ledger, at the rated talk time of its B
leg's CDR (the live path may leave out the last increment our cut's few ms tail would add).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from switchctl.billing.accounts import Accounts
from switchctl.billing.callkeys import reservation_ref
from switchctl.billing.ledger import LIVE, Ledger
from switchctl.billing.money import Money, currency
from switchctl.billing.ratestore import RateStore
from switchctl.config.site import load_site
from switchctl.features.prepaid.cutoff import wall_us
from switchctl.flowtest import sim_routes
from switchctl.sim import FreeSwitchSim, SimConfig
from switchctl.sim import api as simapi
from switchctl.sim.config import GatewayBehaviour
from switchctl.sitecheck import check_site
from switchctl.store.database import Store

REPO = Path(__file__).resolve().parent.parent
SITE_TEMPLATE = Path(__file__).resolve().parent / "sites" / "restart"
EUR = currency("EUR")
RATES = (
    "prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment\n"
    "44,UK,EUR,0.60,0,1,1\n"
)
NUMBER = "441234567"
CENT_US = 1_000_000  # one cent buys one second
BOOTHS = [str(n) for n in range(1001, 1011)]
ON_TIME_US = 100_000  # our cut: within 0.1 s of the paid end
NET_LATE_US = 1_500_000  # the safety net: never early, at most 1.5 s late
EARLY_US = 20_000  # the switch's clock ticks in 20 ms: "never early" within one tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rig:
    folder: Path
    site_path: Path
    sim: FreeSwitchSim
    store: Store
    ledger: Ledger
    accounts: Accounts
    outbound_port: int
    account_ids: dict[str, int] = field(default_factory=dict)
    broadcasts: list[tuple[str, int]] = field(default_factory=list)  # (uuid_broadcast args, wall µs)
    proc: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def log_path(self) -> Path:
        return self.folder / f"controller-{self.runs}.log"

    async def start_controller(self) -> float:
        """Start `switchctl run` and wait until it takes calls; returns when it did (monotonic)."""
        self.runs += 1
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from switchctl.cli import main; sys.exit(main())",
            "--log-level", "info", "run", "-c", str(self.site_path),
            "--grace", "1", cwd=str(REPO), stdout=log, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.returncode is None, self.log_path.read_text()
            if "controller running" in self.log_path.read_text(errors="replace"):
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise AssertionError(f"controller did not start: {self.log_path.read_text()}")

    async def readopted(self, wait: float = 10.0) -> str:
        """The restarted controller's 're-adopted' log line."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if "re-adopted" in line:
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"no re-adoption logged: {self.log_path.read_text()}")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def b_legs(self) -> dict[str, dict[str, str]]:
        """Account name -> the variables of its B leg's json_cdr file (new or moved to done/)."""
        legs: dict[str, dict[str, str]] = {}
        for path in [*(self.folder / "cdr").glob("*.cdr.json"), *(self.folder / "cdr" / "done").glob("*.cdr.json")]:
            variables = json.loads(path.read_text())["variables"]
            caller = variables.get("switchctl_call")
            if caller and caller != variables.get("uuid"):
                assert variables["switchctl_account"] not in legs, "two B legs for one account"
                legs[variables["switchctl_account"]] = variables
        return legs

    async def commits(self) -> dict[str, list[Money]]:
        found = {}
        for name, acct in self.account_ids.items():
            entries = await self.ledger.entries(acct)
            found[name] = [Money(-e.amount.micros, EUR) for e in entries if e.kind == "commit"]
        return found


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    esl_port, outbound_port = free_port(), free_port()
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "cdr").mkdir()
    for flow in (SITE_TEMPLATE / "dialplans").glob("*.yaml"):
        (tmp_path / "dialplans" / flow.name).write_text(flow.read_text())
    site_text = ((SITE_TEMPLATE / "site.yaml").read_text()
                 .replace("@ESL_PORT@", str(esl_port)).replace("@OUTBOUND_PORT@", str(outbound_port)))
    site_path = tmp_path / "site.yaml"
    site_path.write_text(site_text)
    site = load_site(site_path)
    checked = check_site(site)
    assert checked.ok, checked.report()

    store = Store.open(site.database_url)
    await store.create_all()
    await RateStore(store).import_text(RATES, "rates.csv")
    ledger, accounts = Ledger(store, wall_us), Accounts(store, wall_us)
    sim = FreeSwitchSim(SimConfig(
        esl_port=esl_port,
        dialplan=sim_routes(site, checked.flows, f"127.0.0.1:{outbound_port}"),
        gateways={"upstream": GatewayBehaviour(answer_after=0.2, hangup_after=120.0)},
        media_speed=1.0, sessions_per_second=10_000, max_sessions=10_000, cdr_dir=tmp_path / "cdr",
    ))
    await sim.start()
    r = Rig(tmp_path, site_path, sim, store, ledger, accounts, outbound_port)
    original_broadcast = simapi.COMMANDS["uuid_broadcast"]

    def recording_broadcast(sim: FreeSwitchSim, args: str) -> str:
        r.broadcasts.append((args, time.time_ns() // 1000))
        return original_broadcast(sim, args)

    monkeypatch.setitem(simapi.COMMANDS, "uuid_broadcast", recording_broadcast)
    try:
        yield r
    finally:
        await r.stop()
        await sim.close()
        await store.engine.dispose()


async def live_prepaid_calls(rig: Rig, cents: list[int]) -> tuple[list, float]:
    """One call per booth, booth i's account holding cents[i]; returns once every call is bridged."""
    for booth, amount in zip(BOOTHS, cents, strict=True):
        acct = await rig.accounts.create("booth", booth, EUR)
        await rig.ledger.topup(acct.id, Money(amount * 10_000, EUR), f"init-{booth}")
        rig.account_ids[booth] = acct.id
    placed = [rig.sim.place_call(destination=NUMBER, caller=booth) for booth in BOOTHS]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        bridged = [c for c in rig.sim.channels.values() if c.answered and c.vars.get("switchctl_call")]
        if len(bridged) == len(BOOTHS):
            return placed, time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError("the 10 calls were not all answered")


async def check_billing(rig: Rig, cents: list[int]) -> dict[str, int]:
    """Every call committed once at its B leg's rated talk time; returns account -> cut error µs."""
    legs = rig.b_legs()
    assert sorted(legs) == BOOTHS, sorted(legs)
    deadline = time.monotonic() + 10
    while True:
        commits = await rig.commits()
        if all(commits.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    errors = {}
    for booth, amount in zip(BOOTHS, cents, strict=True):
        leg = legs[booth]
        talk_us = int(leg["end_uepoch"]) - int(leg["answer_uepoch"])
        errors[booth] = talk_us - amount * CENT_US
        rated = Money(math.ceil(talk_us / CENT_US) * 10_000, EUR)  # 0.01 EUR a started second
        assert len(commits[booth]) == 1, (booth, commits[booth])
        committed = commits[booth][0]
        # the live path bills what the money bought when our cut's ms tail started a new second
        assert rated - Money(10_000, EUR) <= committed <= rated, (booth, committed, rated, talk_us)
        reservation = await rig.ledger.reservation(reservation_ref("fs1", leg["switchctl_call"]))
        assert reservation is not None and reservation.state != LIVE, reservation
    return errors


async def wait_calls(placed: list, timeout: float) -> None:
    results = await asyncio.wait_for(asyncio.gather(*(p.done for p in placed)), timeout)
    assert all(r.answered for r in results)


async def test_sigkill_then_restart_at_once_readopts_and_cuts_on_time(rig: Rig) -> None:
    cents = [6 + i for i in range(10)]  # 6..15 s paid
    await rig.start_controller()
    placed, bridged_at = await live_prepaid_calls(rig, cents)
    await asyncio.sleep(max(0.0, bridged_at + 1.5 - time.monotonic()))
    await rig.kill()
    killed_at = time.monotonic()
    await rig.start_controller()
    line = await rig.readopted()
    readopted_in = time.monotonic() - killed_at
    assert "re-adopted 10 live prepaid call(s)" in line, line
    await wait_calls(placed, timeout=max(cents) + 10)
    errors = await check_billing(rig, cents)
    print(f"\nrestart at once: re-adopted {readopted_in:.2f} s after the SIGKILL; cut error (ms) per "
          f"paid second: " + ", ".join(f"{c}s {errors[b] / 1000:+.1f}" for b, c in zip(BOOTHS, cents)))
    for booth in BOOTHS:
        assert abs(errors[booth]) <= ON_TIME_US, (booth, errors[booth])
    # the credit warning, re-armed by the restarted controller: one per caller, 2 s before the cut
    legs = rig.b_legs()
    for booth, amount in zip(BOOTHS, cents, strict=True):
        caller, answer_us = legs[booth]["switchctl_call"], int(legs[booth]["answer_uepoch"])
        warned = [at for args, at in rig.broadcasts if args.startswith(caller)]
        assert len(warned) == 1, (booth, rig.broadcasts)
        assert abs(warned[0] - answer_us - (amount - 2) * CENT_US) <= 200_000, (booth, warned[0] - answer_us)


async def test_down_past_cuts_the_safety_net_cuts_and_catch_up_bills_once(rig: Rig) -> None:
    cents = [3 + i for i in range(10)]  # 3..12 s paid
    await rig.start_controller()
    placed, bridged_at = await live_prepaid_calls(rig, cents)
    answered_at = bridged_at  # within 20 ms of every B leg's answer (polled)
    await asyncio.sleep(max(0.0, bridged_at + 1.5 - time.monotonic()))
    await rig.kill()
    await asyncio.sleep(max(0.0, answered_at + 6.5 - time.monotonic()))  # the 3-6 s calls end meanwhile
    await rig.start_controller()
    await rig.readopted()
    readopted_at = time.monotonic() - answered_at
    await wait_calls(placed, timeout=max(cents) + 10)
    errors = await check_billing(rig, cents)
    print(f"\ndown until {readopted_at:.2f} s after the answers: cut error (ms) per paid second: "
          + ", ".join(f"{c}s {errors[b] / 1000:+.1f}" for b, c in zip(BOOTHS, cents)))
    for booth, amount in zip(BOOTHS, cents, strict=True):
        error = errors[booth]
        assert -EARLY_US <= error <= NET_LATE_US, (booth, error)  # the net, or our cut
        if amount >= readopted_at + 1.0:  # re-adopted well before its end: our own cut
            assert abs(error) <= ON_TIME_US, (booth, error)
    # the calls that ended while no controller ran were billed by the CDR catch-up
    assert any(amount < readopted_at - 1.5 for amount in cents)
