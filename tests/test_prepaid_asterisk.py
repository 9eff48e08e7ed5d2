"""Issue 4 acceptance: a prepaid call cut on a REAL (private) Asterisk, by the in-process controller.

The site has billing (warning 10 s before the cut) and one gateway, a sipp UAS that answers and
never hangs up. The flow: `^9(\\d+)$` -> prepaid (a fixed booth account) -> dial the gateway ->
hangup. The booth holds money for exactly 65 s at a 1/1 rate (0.60 EUR/min, no connect fee), so:

- the call is cut 65 s after the switch's answer, measured on the switch's own clock (B's Up
  timestamp to B's hangup timestamp, as the dial reported them), within 0.1 s;
- the warning (a playback on the caller) starts 10 s before the cut;
- the ledger commit is the rated cost of that talk time, and the caller's sipp gets a BYE;
- nothing is left on the Asterisk.

A booth without money is refused at once: no dial, nothing debited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from switchctl.ari import AriClient
from switchctl.billing.accounts import Accounts
from switchctl.billing.ledger import Ledger
from switchctl.billing.money import Money, currency
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.features.prepaid.cutoff import wall_us
from switchctl.flows import FlowTrace
from switchctl.render.asterisk import render_asterisk
from switchctl.sitecheck import check_site
from switchctl.store.database import Store
from switchctl.switch.call import DialOutcome, DialResult
from tests.asterisk_fixture import (
    SIPP_DIR,
    env_from_environment,
    free_udp_port,
    run_sipp,
)
from tests.private_asterisk import (  # noqa: F401  (asterisk_chroot is a fixture)
    PrivateAsterisk,
    asterisk_chroot,
    create_private_asterisk,
    start_sipp_uas,
    stop_processes,
    wait_for_pjsip_endpoint,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"
SITE_NAME = "astprepaid"
RTP_RANGE = (18000, 18999)  # shared 10000-, deploy 12000-, restart 13000-/14000-, dial 16000-
EUR = currency("EUR")
PAID_S = 65
WARNING_S = 10
CUT_TOLERANCE_US = 100_000
RATES = (
    "prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment\n"
    "44,UK,EUR,0.60,0,1,1\n"  # 0.01 EUR a second, billed per second
)
FLOW = """\
flow: booth
patterns: ['^9(\\d+)$']
start: auth
nodes:
  auth:
    type: prepaid
    account: booth-1
    destination: "${1}"
    next: ring
    insufficient_funds: refused
  ring:
    type: dial
    to:
      - {gateway: far, number: "${1}"}
    timeout: 10
    next: bye
    failed: bye
  refused:
    type: hangup
  bye:
    type: hangup
"""
# answered first, so that the caller's sipp (which expects a 200) sees the refusal as our BYE
BROKE_FLOW = FLOW.replace("flow: booth", "flow: broke").replace("^9(", "^8(").replace(
    "account: booth-1", "account: booth-empty").replace(
    "start: auth\nnodes:\n", "start: pickup\nnodes:\n  pickup:\n    type: answer\n    next: auth\n")


def _scenario(tmp: Path, template: str, replacements: dict[str, str]) -> Path:
    """A copy of a tests/sipp scenario with its waits stretched for a call longer than a minute."""
    text = (SIPP_DIR / template).read_text()
    for old, new in replacements.items():
        assert old in text, f"{template} has no {old!r} any more"
        text = text.replace(old, new)
    path = tmp / f"{Path(template).stem}-{time.monotonic_ns()}.xml"
    path.write_text(text)
    return path


def _write_site(folder: Path, env: PrivateAsterisk, far_port: int) -> Path:
    (folder / "dialplans").mkdir(parents=True)
    (folder / "dialplans" / "booth.yaml").write_text(FLOW)
    (folder / "dialplans" / "broke.yaml").write_text(BROKE_FLOW)
    ari = env.ari
    lines = [
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        f"    ari: {{host: {ari.host}, port: {ari.port}, user: {ari.user}, password: {ari.password}, app: {ari.app}}}",
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {env.conf_dir}",
        f"    cdr: {{format: custom, path: {env.state_dir / 'log'}}}",  # this Asterisk's, not the shared one's
        "flows: dialplans/",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        "gateways:",
        f"  - {{name: far, proxy: 127.0.0.1:{far_port}, register: false}}",
        "billing:",
        f"  warning_seconds: {WARNING_S}",
    ]
    (folder / "site.yaml").write_text("\n".join(lines) + "\n")
    return folder / "site.yaml"


@dataclasses.dataclass
class AsteriskRig:
    env: PrivateAsterisk
    site_file: Path
    uas_log: Path
    tmp: Path


@pytest.fixture(scope="module")
def ast_rig(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsteriskRig]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("astprepaid")
    env = create_private_asterisk(asterisk_chroot, tag="prepaid", log_dir=tmp, rtp=RTP_RANGE)
    far_port = free_udp_port()
    uas_log = tmp / "uas_far_messages.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        site_file = _write_site(tmp / "site", env, far_port)
        env.write_config(render_asterisk(load_site(site_file)))
        # the far end answers and waits for the BYE (stretched from 60 s to 120 s: the call lasts 65 s)
        uas = _scenario(tmp, "uas_answer_wait.xml", {'<recv request="BYE" timeout="60000"/>':
                                                     '<recv request="BYE" timeout="120000"/>'})
        proc = start_sipp_uas(uas, far_port, uas_log)
        env.start()
        wait_for_pjsip_endpoint(env, "far")
        assert proc.poll() is None, "the sipp UAS exited at once"
        yield AsteriskRig(env, site_file, uas_log, tmp)
    finally:
        if proc is not None:
            stop_processes([proc])
        env.stop()
        env.remove()


@dataclasses.dataclass
class Played:
    channel: str
    media: str
    at_us: int  # our wall clock when the controller asked Asterisk to play


@dataclasses.dataclass
class Booth:
    rig: AsteriskRig
    controller: Controller
    ledger: Ledger
    accounts: Accounts
    played: list[Played]
    dials: list[DialResult]
    traces: list[tuple[str, FlowTrace | None]]
    traced: asyncio.Event

    async def channels(self) -> list[str]:
        return [c.name for c in await self.controller.asterisks["ast1"].client.list_channels()]

    async def call(self, number: str, timeout_s: int) -> tuple[asyncio.Task, Path]:  # type: ignore[type-arg]
        """A sipp UAC calling `number`; it waits (up to 120 s) for Asterisk's BYE."""
        path = _scenario(self.rig.tmp, "uac_ivr_script_wait_bye.xml",
                         {"@@CALLER@@": "5550100", '<recv request="BYE" timeout="30000"/>':
                          '<recv request="BYE" timeout="120000"/>'})
        sipp_env = dataclasses.replace(env_from_environment(), ari_port=self.rig.env.ari.port,
                                       sip_port=self.rig.env.sip_port)
        return asyncio.create_task(run_sipp(sipp_env, path, number, timeout_s=timeout_s)), path

    async def trace(self, timeout: float) -> tuple[str, FlowTrace | None]:
        deadline = time.monotonic() + timeout
        while not self.traces:
            self.traced.clear()
            await asyncio.wait_for(self.traced.wait(), max(0.01, deadline - time.monotonic()))
        return self.traces[-1]


@pytest_asyncio.fixture
async def booth(ast_rig: AsteriskRig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Booth]:
    ast_rig.env.check_alive()
    site = load_site(ast_rig.site_file)
    checked = check_site(site)
    assert checked.ok, checked.report()
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    controller = Controller(site, checked.flows, store=store)
    played: list[Played] = []
    dials: list[DialResult] = []
    traces: list[tuple[str, FlowTrace | None]] = []
    traced = asyncio.Event()
    original_play = AriClient.play

    async def recording_play(self, channel_id, media, **kw):  # type: ignore[no-untyped-def]
        played.append(Played(channel_id, media if isinstance(media, str) else ",".join(media), wall_us()))
        return await original_play(self, channel_id, media, **kw)

    monkeypatch.setattr(AriClient, "play", recording_play)

    def on_trace(uuid: str, trace: FlowTrace | None) -> None:
        traces.append((uuid, trace))
        traced.set()

    controller.on_trace = on_trace
    await store.create_all()
    await controller.start()
    assert controller.billing is not None
    b = Booth(ast_rig, controller, controller.billing.ledger, controller.billing.accounts,
              played, dials, traces, traced)
    prepaid = controller.billing.prepaid
    original_end = prepaid.on_dial_end

    async def recording_end(call, auth, result):  # type: ignore[no-untyped-def]
        if result is not None:
            dials.append(result)
        await original_end(call, auth, result)

    monkeypatch.setattr(prepaid, "on_dial_end", recording_end)
    await controller.billing.rates.import_text(RATES, "rates.csv")
    await controller.billing.reload_rates()
    try:
        await controller.asterisks["ast1"].wait_connected(10)
        yield b
        deadline = time.monotonic() + 4
        while await b.channels() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await b.channels() == [], "channels left on the Asterisk"
        assert not controller.asterisks["ast1"].legs
    finally:
        await controller.stop(grace=2)
        await store.engine.dispose()


async def _account(b: Booth, name: str, credit: str | None) -> int:
    acct = await b.accounts.create("booth", name, EUR)
    if credit is not None:
        await b.ledger.topup(acct.id, Money.parse(credit, EUR), f"init-{name}")
    return acct.id


async def test_a_prepaid_call_is_cut_when_its_money_runs_out(booth: Booth) -> None:
    acct = await _account(booth, "booth-1", "0.65")  # exactly 65 s at 0.01 EUR/s
    started = time.monotonic()
    sipp, _path = await booth.call("9441234567", timeout_s=PAID_S + 30)
    result = await asyncio.wait_for(sipp, PAID_S + 40)
    took = time.monotonic() - started
    assert result.returncode == 0, f"the caller saw no BYE:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
    uuid, trace = await booth.trace(5)
    assert trace is not None and trace.result == "caller_hangup", trace
    assert [node for _flow, node, _outcome in trace.steps][:2] == ["auth", "ring"], trace.steps

    # the cut, on the switch's clock: B's Up (the dial's answer time) to B's hangup
    assert len(booth.dials) == 1, booth.dials
    dial = booth.dials[0]
    assert dial.outcome is DialOutcome.ANSWERED and dial.caller_hung_up, dial
    cut_error_us = dial.talk_us - PAID_S * 1_000_000
    print(f"\nprepaid cut on Asterisk: talk {dial.talk_us} us, error {cut_error_us / 1000:+.1f} ms, "
          f"whole call {took:.1f} s")
    assert abs(cut_error_us) <= CUT_TOLERANCE_US, f"cut {cut_error_us / 1000:+.1f} ms off the paid 65 s"

    # the warning: a playback on the caller (A), 10 s before the paid end
    warnings = [p for p in booth.played if p.channel == uuid]
    assert warnings, f"no warning played on the caller; played: {booth.played}"
    warned_at = warnings[0].at_us - dial.answered_at_us
    print(f"warning at {warned_at / 1e6:.3f} s after the answer ({[w.media for w in warnings]})")
    assert abs(warned_at - (PAID_S - WARNING_S) * 1_000_000) <= 200_000, warned_at
    assert not [p for p in booth.played if p.channel == dial.peer_uuid]

    # the ledger: one commit of the rated talk time, nothing left on hold
    assert booth.controller.billing is not None
    rate = booth.controller.billing.rate_book.find("441234567", at_us=dial.answered_at_us)
    assert rate is not None
    # Our cut lands a few ms after the paid end (never before); the caller pays what the money
    # bought, not the cut's tail (features/prepaid/service.py): exactly 65 s, the whole balance.
    expected = rate.rate.cost(min(dial.talk_us, 65_000_000))
    assert expected == Money.parse("0.65", EUR)
    entries = await booth.ledger.entries(acct)
    commits = [e for e in entries if e.kind == "commit"]
    assert len(commits) == 1, entries
    assert commits[0].amount == -expected, (commits[0], expected)
    balance = await booth.ledger.balance(acct)
    print(f"ledger: commit {commits[0].amount}, balance after {balance}; "
          f"entries {[(e.kind, str(e.amount), str(e.held)) for e in entries]}")
    assert entries[-1].held_after.micros == 0
    assert balance == Money.parse("0.00", EUR)

    # the far end got its BYE from Asterisk
    far = booth.rig.uas_log.read_text(errors="replace")
    assert "BYE sip:" in far


async def test_a_booth_without_money_is_refused_before_any_dial(booth: Booth) -> None:
    acct = await _account(booth, "booth-empty", None)
    await _account(booth, "booth-1", "5.00")  # the flow names it too; it must stay untouched
    started = time.monotonic()
    sipp, _path = await booth.call("8441234567", timeout_s=15)
    result = await asyncio.wait_for(sipp, 25)
    assert result.returncode == 0, f"{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
    assert time.monotonic() - started < 10
    _uuid, trace = await booth.trace(5)
    assert trace is not None, "no flow ran"
    assert [node for _flow, node, _outcome in trace.steps] == ["pickup", "auth", "refused"], trace.steps
    assert trace.variables["prepaid_outcome"] == "insufficient_funds"
    assert booth.dials == []
    assert [e.kind for e in await booth.ledger.entries(acct)] == []
    assert await booth.ledger.balance(acct) == Money(0, EUR)
