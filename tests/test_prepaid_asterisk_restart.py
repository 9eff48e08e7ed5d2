"""Issue 4 item 7 on Asterisk: a live prepaid call survives a controller crash and is still cut on
time, by the controller started after it (switch/asterisk_adopt.py, PrepaidService.readopt).

A PRIVATE Asterisk; a sipp UAS gateway that answers and never hangs up. The first controller runs
in a subprocess (it creates the booth account with money for PAID_S seconds at 0.01 EUR/s and the
rates), takes the call, dials the gateway and bridges; about a second after the bridge is up it is
SIGKILLed: no hangup, no ledger write, its WebSocket just drops. The channels stay in the Stasis
app with the bridge. A new controller on the same store then:
- re-adopts the call (its readopt runs once its ARI stream is up),
- warns the caller WARNING_S before the end (a playback on A, by the adopted call),
- cuts it at the paid time, within 0.1 s on the switch's clock (B's CDR answer µs to the first
  hangup event of the bridge, as the re-adopted DialResult reports them). Without re-adoption the
  old controller's safety net (TIMEOUT(absolute), 0.25 s late) would cut it and no result would
  be reported: the test fails;
- commits it once (the whole balance), and leaves no channel or bridge behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from switchctl.ari import AriClient
from switchctl.billing.money import Money, currency
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.features.prepaid.cutoff import wall_us
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
SITE_NAME = "astrestart"
RTP_RANGE = (23000, 23999)  # shared 10000-, deploy 12000-, restart 13000-/14000-, dial 16000-, prepaid 18000-
EUR = currency("EUR")
PAID_S = 9
CREDIT = "0.09"  # exactly PAID_S at 0.01 EUR/s
WARNING_S = 3
KILL_AFTER_BRIDGE_S = 1.0
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
# The first controller: sets up the store, takes calls, prints "ready"; killed by the test.
FIRST_CONTROLLER = """\
import asyncio, sys
from switchctl.billing.money import Money, currency
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.sitecheck import check_site
from switchctl.store.database import Store

async def main(site_file, db_url, credit, rates_file):
    site = load_site(site_file)
    checked = check_site(site)
    assert checked.ok, checked.report()
    store = Store.open(db_url)
    await store.create_all()
    controller = Controller(site, checked.flows, store=store)
    await controller.start()
    billing = controller.billing
    await billing.rates.import_text(open(rates_file).read(), "rates.csv")
    await billing.reload_rates()
    eur = currency("EUR")
    acct = await billing.accounts.create("booth", "booth-1", eur)
    await billing.ledger.topup(acct.id, Money.parse(credit, eur), "init-booth-1")
    await controller.asterisks["ast1"].wait_connected(15)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""


def _scenario(tmp: Path, template: str, replacements: dict[str, str]) -> Path:
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
    ari = env.ari
    lines = [
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        f"    ari: {{host: {ari.host}, port: {ari.port}, user: {ari.user}, password: {ari.password}, app: {ari.app}}}",
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {env.conf_dir}",
        f"    cdr: {{format: custom, path: {env.state_dir / 'log'}}}",
        "flows: dialplans/",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "gateways:",
        f"  - {{name: far, proxy: 127.0.0.1:{far_port}, register: false}}",
        "billing:",
        f"  warning_seconds: {WARNING_S}",
    ]
    (folder / "site.yaml").write_text("\n".join(lines) + "\n")
    return folder / "site.yaml"


@dataclasses.dataclass
class Rig:
    env: PrivateAsterisk
    site_file: Path
    uas_log: Path
    tmp: Path


@pytest.fixture(scope="module")
def rig(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("astrestart")
    env = create_private_asterisk(asterisk_chroot, tag="prepaidrestart", log_dir=tmp, rtp=RTP_RANGE)
    far_port = free_udp_port()
    uas_log = tmp / "uas_far_messages.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        site_file = _write_site(tmp / "site", env, far_port)
        env.write_config(render_asterisk(load_site(site_file)))
        uas = _scenario(tmp, "uas_answer_wait.xml", {})
        proc = start_sipp_uas(uas, far_port, uas_log)
        env.start()
        wait_for_pjsip_endpoint(env, "far")
        assert proc.poll() is None, "the sipp UAS exited at once"
        yield Rig(env, site_file, uas_log, tmp)
    finally:
        if proc is not None:
            stop_processes([proc])
        env.stop()
        env.remove()


@pytest_asyncio.fixture
async def ari(rig: Rig) -> AsyncIterator[AriClient]:
    """A REST-only client for the test's own look at the switch (no WebSocket: not an app user)."""
    a = rig.env.ari
    client = AriClient(a.url, a.user, a.password, a.app)
    try:
        yield client
    finally:
        await client.close()


async def _first_controller(rig: Rig, db_url: str) -> asyncio.subprocess.Process:
    script = rig.tmp / "first_controller.py"
    script.write_text(FIRST_CONTROLLER)
    rates = rig.tmp / "rates.csv"
    rates.write_text(RATES)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(rig.site_file), db_url, CREDIT, str(rates),
        cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=open(rig.tmp / "first_controller.log", "wb"))  # noqa: SIM115, ASYNC230 - local file, the child keeps it
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        proc.kill()
        await proc.wait()
        pytest.fail(f"first controller did not start: {(rig.tmp / 'first_controller.log').read_text()[-3000:]}")
    return proc


async def _wait_bridged(ari: AriClient, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for bridge in await ari.list_bridges():
            if len(bridge.channels) == 2:
                return list(bridge.channels)
        await asyncio.sleep(0.05)
    pytest.fail("the prepaid call was never bridged")


async def test_a_live_prepaid_call_is_cut_on_time_by_the_controller_started_after_a_crash(
        rig: Rig, ari: AriClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.env.check_alive()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    first = await _first_controller(rig, db_url)
    caller = _scenario(rig.tmp, "uac_ivr_script_wait_bye.xml", {"@@CALLER@@": "5550100"})
    sipp_env = dataclasses.replace(env_from_environment(), ari_port=rig.env.ari.port, sip_port=rig.env.sip_port)
    sipp = asyncio.create_task(run_sipp(sipp_env, caller, "9441234567", timeout_s=PAID_S + 25))
    controller: Controller | None = None
    store: Store | None = None
    try:
        bridged = await _wait_bridged(ari, 15)
        await asyncio.sleep(KILL_AFTER_BRIDGE_S)
        first.kill()  # SIGKILL: a crash, nothing hung up, nothing settled
        await first.wait()
        assert sorted(c.id for c in await ari.list_channels()) == sorted(bridged), "the call did not survive"

        # the new controller, on the same store
        site = load_site(rig.site_file)
        checked = check_site(site)
        assert checked.ok, checked.report()
        store = Store.open(db_url)
        played: list[tuple[str, str, int]] = []
        original_play = AriClient.play

        async def recording_play(self, channel_id, media, **kw):  # type: ignore[no-untyped-def]
            played.append((channel_id, media if isinstance(media, str) else ",".join(media), wall_us()))
            return await original_play(self, channel_id, media, **kw)

        monkeypatch.setattr(AriClient, "play", recording_play)
        controller = Controller(site, checked.flows, store=store)
        await controller.start()
        assert controller.billing is not None
        prepaid = controller.billing.prepaid
        dials: list[DialResult] = []
        original_end = prepaid.on_dial_end

        async def recording_end(call, auth, result):  # type: ignore[no-untyped-def]
            if result is not None:
                dials.append(result)
            await original_end(call, auth, result)

        monkeypatch.setattr(prepaid, "on_dial_end", recording_end)

        result = await asyncio.wait_for(sipp, PAID_S + 35)
        assert result.returncode == 0, f"the caller saw no BYE:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
        deadline = time.monotonic() + 5
        while not dials and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

        # the cut, on the switch's clock
        assert len(dials) == 1, f"the call was not re-adopted and settled by the new controller: {dials}"
        dial = dials[0]
        assert dial.outcome is DialOutcome.ANSWERED and dial.caller_hung_up, dial
        assert dial.answered_at_us > 0 and dial.ended_at_us > dial.answered_at_us, dial
        cut_error_us = dial.talk_us - PAID_S * 1_000_000
        print(f"\nre-adopted prepaid cut on Asterisk: talk {dial.talk_us} us, error {cut_error_us / 1000:+.1f} ms")
        assert abs(cut_error_us) <= CUT_TOLERANCE_US, f"cut {cut_error_us / 1000:+.1f} ms off the paid {PAID_S} s"

        # the warning, by the adopted caller leg, WARNING_S before the end
        caller_id = next(c for c in bridged if c != dial.peer_uuid)
        warnings = [p for p in played if p[0] == caller_id]
        assert warnings, f"no warning played on the caller; played: {played}"
        warned_at = warnings[0][2] - dial.answered_at_us
        assert abs(warned_at - (PAID_S - WARNING_S) * 1_000_000) <= 300_000, warned_at

        # one commit: the whole balance
        ledger, accounts = controller.billing.ledger, controller.billing.accounts
        acct = await accounts.find("booth-1")
        assert acct is not None
        entries = await ledger.entries(acct.id)
        commits = [e for e in entries if e.kind == "commit"]
        print(f"ledger: {[(e.kind, str(e.amount), str(e.held)) for e in entries]}")
        assert len(commits) == 1, entries
        assert commits[0].amount == -Money.parse(CREDIT, EUR), commits
        assert entries[-1].held_after.micros == 0
        assert await ledger.balance(acct.id) == Money(0, EUR)

        # nothing left behind: no channel, no bridge; the far end got its BYE
        deadline = time.monotonic() + 4
        while (await ari.list_channels() or await ari.list_bridges()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await ari.list_channels() == [], "channels left on the Asterisk"
        assert await ari.list_bridges() == [], "bridges left on the Asterisk"
        assert "BYE sip:" in rig.uas_log.read_text(errors="replace")
        assert not controller.asterisks["ast1"].adopter.calls
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        if not sipp.done():
            sipp.cancel()
            with contextlib.suppress(BaseException):
                await sipp
        if controller is not None:
            await controller.stop(grace=2)
        if store is not None:
            await store.engine.dispose()
