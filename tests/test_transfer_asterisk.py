"""Transfers and a three-way conference end to end on a REAL (private) Asterisk (issue 5 acceptance).

The real `Controller` runs a site with a `transfer:` section on a private Asterisk
(tests/private_asterisk.py). A sipp UAC caller (A) dials one flow per scenario: the flow answers,
then dials an agent (B) with transfers on. Every agent and target is a long-lived sipp UAS on
loopback, one gateway each, so each agent presses its own feature codes (RFC 2833, a pcap written
with switchctl.democall.write_dtmf_pcap; sipp plays the same stream on every call):

    agent       presses (seconds after its answer)            target route   target behaviour
    agblind     *12100# from 0.8                              21xx -> tgwait answers at once, waits for BYE
    agatt       *22100# from 0.8, *2 (complete) 3 s later
    agsemi      *22300# from 0.8, *2 0.5 s later (C rings)    23xx -> tgslow rings 4 s, answers, waits
    ag3way      *22100# from 0.8, *3 2.5 s later, BYE at 8 s
    agbusy      *22200# from 0.8                              22xx -> tgbusy 486
    agcancel    *22100# from 0.8, *1 (cancel) 2.5 s later

The caller's sipp hangs up (BYE) at a set time after its answer; its exit code must be 0. Every
scenario asserts who is bridged with whom from Asterisk's side (ARI GET /channels and /bridges:
each bridge's channel list, labelled by the channel's endpoint) at the key moments, the
controller's EventBus (`transfer` states, `screen_pop`s), and that no channel and no bridge is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from switchctl.ari import AriClient
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.democall import write_dtmf_pcap
from switchctl.events import BusEvent
from switchctl.flows import FlowTrace
from switchctl.render.asterisk import render_asterisk
from switchctl.sitecheck import check_site
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
SITE_NAME = "astxfer"
# shared 10000-, deploy 12000-, restart 13000-/14000-, dial 16000-, prepaid 18000-/23000-,
# transfer primitives 21000-, voicemail 25500-
RTP_RANGE = (27000, 27999)
A = "A"  # the caller's label
RINGBACK_TONE = "tone:!440+480/2000"  # the site's default transfer ringback, as Asterisk plays it
HOLD_TONE_MEDIA = "tone:!400+450/400"  # call.HOLD_TONE, what a held caller hears without site music
WAIT = 8.0  # seconds any awaited state may take


def keys(*steps: tuple[float, str]) -> list[tuple[float, str]]:
    """(seconds after the previous step, digits) -> write_dtmf_pcap's per-digit script (digits 250 ms apart)."""
    script: list[tuple[float, str]] = []
    for delay, digits in steps:
        script.append((delay, digits[0]))
        script.extend((0.25, d) for d in digits[1:])
    return script


@dataclasses.dataclass(frozen=True)
class Far:
    scenario: str
    keys: list[tuple[float, str]] | None = None  # RFC 2833 digits it presses after answering
    pause_ms: int | None = None  # sipp -d: the scenario's <pause/> (xfer_uas_*: BYE / answer after)


FAR_ENDS: dict[str, Far] = {
    "agblind": Far("uas_answer_dtmf.xml", keys((0.8, "*12100#"))),
    "agatt": Far("uas_answer_dtmf.xml", keys((0.8, "*22100#"), (3.0, "*2"))),
    "agsemi": Far("uas_answer_dtmf.xml", keys((0.8, "*22300#"), (0.5, "*2"))),
    "ag3way": Far("xfer_uas_dtmf_bye.xml", keys((0.8, "*22100#"), (2.5, "*3")), pause_ms=8000),
    "agbusy": Far("uas_answer_dtmf.xml", keys((0.8, "*22200#"))),
    "agcancel": Far("uas_answer_dtmf.xml", keys((0.8, "*22100#"), (2.5, "*1"))),
    "tgwait": Far("uas_answer_wait.xml"),
    "tgslow": Far("xfer_uas_ring_answer.xml", pause_ms=4000),
    "tgbusy": Far("uas_busy.xml"),
}
SCENARIOS = {"blind": "7101", "att": "7102", "semi": "7103", "3way": "7104", "busy": "7105", "cancel": "7106"}

FLOW = """\
flow: {name}
numbers: ["{number}"]
start: hello
nodes:
  hello: {{type: answer, next: who}}
  who: {{type: set, vars: {{customer: "C-${{caller}}"}}, next: ring}}
  ring:
    type: dial
    to: [{{gateway: ag{name}, number: "2001"}}]
    timeout: 5
    next: bye
    busy: bye
    no_answer: bye
    rejected: bye
    failed: bye
  bye: {{type: hangup}}
"""


def _write_site(folder: Path, env: PrivateAsterisk, ports: dict[str, int]) -> Path:
    (folder / "dialplans").mkdir(parents=True)
    for name, number in SCENARIOS.items():
        (folder / "dialplans" / f"{name}.yaml").write_text(FLOW.format(name=name, number=number))
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
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        "gateways:",
        *(f"  - {{name: {name}, proxy: 127.0.0.1:{port}, register: false}}" for name, port in ports.items()),
        "transfer:",
        "  digit_timeout: 2",
        "  ring_timeout: 8",
        "  recall_timeout: 5",
        "  routes:",
        "    - {pattern: '21\\d\\d', kind: gateway, gateway: tgwait}",
        "    - {pattern: '22\\d\\d', kind: gateway, gateway: tgbusy}",
        "    - {pattern: '23\\d\\d', kind: gateway, gateway: tgslow}",
    ]
    (folder / "site.yaml").write_text("\n".join(lines) + "\n")
    return folder / "site.yaml"


@dataclasses.dataclass
class XferRig:
    env: PrivateAsterisk
    site_file: Path
    logs: dict[str, Path]
    tmp: Path


@pytest.fixture(scope="module")
def xfer_rig(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[XferRig]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("astxfer")
    env = create_private_asterisk(asterisk_chroot, tag="xfer", log_dir=tmp, rtp=RTP_RANGE)
    ports = {name: free_udp_port() for name in FAR_ENDS}
    logs: dict[str, Path] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        site_file = _write_site(tmp / "site", env, ports)
        env.write_config(render_asterisk(load_site(site_file)))
        for name, far in FAR_ENDS.items():
            extra: list[str] = []
            if far.keys is not None:
                pcap = tmp / f"{name}.pcap"
                write_dtmf_pcap(pcap, far.keys)
                extra += ["-key", "dtmf_pcap", str(pcap)]
            if far.pause_ms is not None:
                extra += ["-d", str(far.pause_ms)]
            logs[name] = tmp / f"uas_{name}_messages.log"
            procs.append(start_sipp_uas(SIPP_DIR / far.scenario, ports[name], logs[name], *extra))
        env.start()
        wait_for_pjsip_endpoint(env, "tgwait")
        for proc in procs:
            assert proc.poll() is None, f"a sipp UAS exited at once: {proc.args}"
        yield XferRig(env, site_file, logs, tmp)
    finally:
        stop_processes(procs)
        env.stop()
        env.remove()


class Desk:
    """The controller serving the private Asterisk, and what the test watches of both."""

    def __init__(self, rig: XferRig, controller: Controller, traces: dict[str, FlowTrace | None],
                 played: list[tuple[str, str]]) -> None:
        self.rig = rig
        self.controller = controller
        self.traces = traces
        self.played = played  # (channel id, media) of every play the controller asked for
        self.events: list[BusEvent] = []
        self.caller_uuid: str | None = None

    @property
    def client(self) -> AriClient:
        return self.controller.asterisks["ast1"].client

    # -- the caller --------------------------------------------------------------------------------

    def call(self, scenario: str, bye_after_ms: int) -> asyncio.Task:  # type: ignore[type-arg]
        """A sipp UAC (555) dialling `scenario`'s flow; it hangs up `bye_after_ms` after its answer."""
        text = (SIPP_DIR / "uac_ivr_script_caller_bye.xml").read_text()
        text = text.replace("<!-- @@SCRIPT@@ -->", f'<pause milliseconds="{bye_after_ms}"/>')
        text = text.replace("@@CALLER@@", "555")
        path = self.rig.tmp / f"uac-{scenario}-{time.monotonic_ns()}.xml"
        path.write_text(text)
        sipp_env = dataclasses.replace(env_from_environment(), ari_port=self.rig.env.ari.port,
                                       sip_port=self.rig.env.sip_port)
        return asyncio.create_task(run_sipp(sipp_env, path, SCENARIOS[scenario], timeout_s=bye_after_ms // 1000 + 15))

    async def caller(self) -> str:
        """The caller's channel id: the conversation its dial became (the first `transfer` event)."""
        if self.caller_uuid is None:
            await self.until(lambda: any(e.kind == "transfer" for e in self.events), "a conversation started")
            self.caller_uuid = next(e.payload["conversation"] for e in self.events if e.kind == "transfer")
        return self.caller_uuid

    # -- Asterisk's side -----------------------------------------------------------------------------

    async def labels(self) -> dict[str, tuple[str, str]]:
        """channel id -> (label, state): "A" for the caller, else the channel's endpoint (gateway)."""
        out: dict[str, tuple[str, str]] = {}
        for ch in await self.client.list_channels():
            endpoint = ch.name.split("/", 1)[-1].rsplit("-", 1)[0]
            out[ch.id] = (A if ch.id == self.caller_uuid else endpoint, ch.state)
        return out

    async def groups(self) -> set[frozenset[str]]:
        """Every bridge's members by label (a bridge of one included)."""
        labels = await self.labels()
        return {frozenset(labels.get(c, ("?" + c, ""))[0] for c in b.channels)
                for b in await self.client.list_bridges()}

    async def talk(self, *groups: set[str], what: str, timeout: float = WAIT) -> None:
        """Wait until Asterisk's bridges are exactly these groups."""
        want = {frozenset(g) for g in groups}
        deadline = time.monotonic() + timeout
        while (now := await self.groups()) != want:
            assert time.monotonic() < deadline, (f"timed out waiting until {what}: bridges {now}, "
                                                 f"channels {await self.labels()}, states {self.states()}")
            await asyncio.sleep(0.05)

    async def until(self, check: Any, what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting until {what}; states {self.states()}"
            await asyncio.sleep(0.02)

    def states(self) -> list[str]:
        return [e.payload["state"] for e in self.events if e.kind == "transfer"]

    def pops(self) -> list[dict[str, Any]]:
        return [dict(e.payload) for e in self.events if e.kind == "screen_pop"]

    async def state(self, state: str) -> None:
        await self.until(lambda: state in self.states(), f"transfer state '{state}' was published")

    async def finish(self, caller: asyncio.Task) -> FlowTrace:  # type: ignore[type-arg]
        """The caller's sipp passed (its BYE answered), its flow ended, nothing is left on Asterisk."""
        result = await asyncio.wait_for(caller, 40)
        assert result.returncode == 0, f"the caller's sipp failed:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
        uuid = await self.caller()
        await self.until(lambda: self.traces.get(uuid) is not None, "the caller's flow ended")
        deadline = time.monotonic() + WAIT
        while await self.client.list_channels() or await self.client.list_bridges():
            assert time.monotonic() < deadline, f"left on Asterisk: {await self.labels()} {await self.groups()}"
            await asyncio.sleep(0.1)
        transfers = self.controller.transfers
        assert transfers is not None
        await self.until(lambda: transfers.conversation(uuid) is None, "the conversation ended")
        trace = self.traces[uuid]
        assert trace is not None
        return trace


@pytest_asyncio.fixture
async def desk(xfer_rig: XferRig, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Desk]:
    xfer_rig.env.check_alive()
    site = load_site(xfer_rig.site_file)
    checked = check_site(site)
    assert checked.ok, checked.report()
    site = dataclasses.replace(site, web_listen=("127.0.0.1", 0))
    played: list[tuple[str, str]] = []
    original_play = AriClient.play

    async def recording_play(self, channel_id, media, **kw):  # type: ignore[no-untyped-def]
        played.append((channel_id, media if isinstance(media, str) else ",".join(media)))
        return await original_play(self, channel_id, media, **kw)

    monkeypatch.setattr(AriClient, "play", recording_play)
    traces: dict[str, FlowTrace | None] = {}
    controller = Controller(site, checked.flows, on_trace=traces.__setitem__)
    subscription = controller.events.subscribe()
    d = Desk(xfer_rig, controller, traces, played)

    async def collect() -> None:
        async for event in subscription:
            d.events.append(event)

    collector = asyncio.create_task(collect())
    await controller.start()
    try:
        await controller.asterisks["ast1"].wait_connected(10)
        yield d
        deadline = time.monotonic() + 4
        while (await d.client.list_channels() or await d.client.list_bridges()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await d.client.list_channels() == [], "channels left on the Asterisk"
        assert await d.client.list_bridges() == [], "bridges left on the Asterisk"
        assert not controller.asterisks["ast1"].legs
    finally:
        collector.cancel()
        await controller.stop(grace=2)


def _pop_checks(d: Desk, expected_to: list[str], transfers: list[int]) -> None:
    pops = d.pops()
    assert [p["to"] for p in pops] == expected_to, pops
    assert [p["transfers"] for p in pops] == transfers, pops
    for pop in pops:
        assert pop["conversation"] == d.caller_uuid
        assert pop["data"]["customer"] == "C-555", pop
        assert pop["ivr_path"] == ["hello", "who", "ring"], pop


# ------------------------------------------------------------------------------------------ scenarios


async def test_blind_transfer_on_asterisk(desk: Desk) -> None:
    caller = desk.call("blind", bye_after_ms=7000)
    await desk.caller()
    await desk.talk({A, "agblind"}, what="the caller talks with the agent")
    await desk.state("blind")
    await desk.talk({A, "tgwait"}, what="the caller talks with the blind target")
    labels = await desk.labels()
    assert sorted(label for label, _state in labels.values()) == [A, "tgwait"], labels  # B is gone
    assert "completed" in desk.states(), desk.states()
    _pop_checks(desk, ["2001", "2100"], [0, 1])
    trace = await desk.finish(caller)
    assert trace.steps[-1] == ("blind", "ring", "caller_hangup"), trace.steps  # the caller hung up on C
    assert trace.variables["dial_transfers"] == "1"
    assert "BYE sip:" in desk.rig.logs["agblind"].read_text(errors="replace")  # released by Asterisk


async def test_attended_transfer_consult_then_complete_on_asterisk(desk: Desk) -> None:
    caller = desk.call("att", bye_after_ms=9000)
    await desk.caller()
    await desk.talk({A, "agatt"}, what="the caller talks with the agent")
    # the consultation: B with C, A alone (music on hold, in no bridge)
    await desk.talk({"agatt", "tgwait"}, what="the agent consults the target")
    await desk.state("consulting")
    labels = await desk.labels()
    assert sorted(label for label, _ in labels.values()) == sorted([A, "agatt", "tgwait"]), labels
    # the held caller hears the hold tone (call.HOLD_TONE), never silence
    uuid = await desk.caller()
    await desk.until(lambda: any(ch == uuid and HOLD_TONE_MEDIA in media for ch, media in desk.played),
                     "the hold tone played on the caller")
    # complete: B leaves, A with C
    await desk.talk({A, "tgwait"}, what="the caller talks with the target after the completion")
    labels = await desk.labels()
    assert sorted(label for label, _ in labels.values()) == [A, "tgwait"], labels
    assert desk.states()[:2] == ["ringing", "talking"] and "completed" in desk.states(), desk.states()
    assert desk.states().index("consulting") < desk.states().index("completed")
    _pop_checks(desk, ["2001", "2100"], [0, 1])
    trace = await desk.finish(caller)
    assert trace.variables["dial_transfers"] == "1"


async def test_semi_attended_transfer_caller_hears_ringback_then_talks_to_the_target(desk: Desk) -> None:
    caller = desk.call("semi", bye_after_ms=11000)
    uuid = await desk.caller()
    await desk.talk({A, "agsemi"}, what="the caller talks with the agent")
    await desk.state("semi_attended")
    # B completed while C rings: B gone, C ringing, A in no bridge hearing ringback
    deadline = time.monotonic() + WAIT
    while True:
        labels = await desk.labels()
        if sorted(label for label, _ in labels.values()) == [A, "tgslow"]:
            break
        assert time.monotonic() < deadline, labels
        await asyncio.sleep(0.05)
    assert [state for label, state in labels.values() if label == "tgslow"] == ["Ringing"], labels
    assert await desk.groups() == set(), "the caller is in a bridge while the target rings"
    await desk.until(lambda: any(ch == uuid and RINGBACK_TONE in media for ch, media in desk.played),
                     "ringback played on the caller")
    await desk.talk({A, "tgslow"}, what="the caller talks with the target once it answered", timeout=WAIT + 2)
    assert "completed" in desk.states(), desk.states()
    _pop_checks(desk, ["2001", "2300"], [0, 1])
    trace = await desk.finish(caller)
    assert trace.variables["dial_transfers"] == "1"


async def test_three_way_conference_then_parties_leave_on_asterisk(desk: Desk) -> None:
    caller = desk.call("3way", bye_after_ms=12000)
    await desk.caller()
    await desk.talk({A, "ag3way"}, what="the caller talks with the agent")
    await desk.talk({"ag3way", "tgwait"}, what="the agent consults the target")
    await desk.talk({A, "ag3way", "tgwait"}, what="all three in one bridge")
    assert len(await desk.client.list_bridges()) == 1
    await desk.state("three_way")
    # the agent hangs up (its sipp's BYE 8 s after its answer): caller and target stay together
    await desk.talk({A, "tgwait"}, what="caller and target talk on after the agent left", timeout=WAIT + 4)
    labels = await desk.labels()
    assert sorted(label for label, _ in labels.values()) == [A, "tgwait"], labels
    _pop_checks(desk, ["2001", "2100"], [0, 1])
    await desk.finish(caller)  # the caller leaves last: the target is hung up, the room is gone
    assert "BYE sip:" in desk.rig.logs["tgwait"].read_text(errors="replace")


async def test_attended_target_busy_brings_the_caller_back_to_the_agent(desk: Desk) -> None:
    caller = desk.call("busy", bye_after_ms=8000)
    await desk.caller()
    await desk.talk({A, "agbusy"}, what="the caller talks with the agent")
    await desk.state("consult_ringing")
    await desk.until(lambda: any(e.kind == "transfer" and e.payload.get("state") == "failed"
                                 for e in desk.events), "the consultation failed")
    failed = next(e.payload for e in desk.events if e.kind == "transfer" and e.payload.get("state") == "failed")
    assert failed.get("outcome") == "busy", failed
    await desk.talk({A, "agbusy"}, what="the caller is back with the agent")
    labels = await desk.labels()
    assert sorted(label for label, _ in labels.values()) == [A, "agbusy"], labels
    assert [p["to"] for p in desk.pops()] == ["2001"], desk.pops()
    trace = await desk.finish(caller)
    assert trace.steps[-1] == ("busy", "ring", "caller_hangup"), trace.steps


async def test_attended_transfer_cancelled_brings_the_caller_back_to_the_agent(desk: Desk) -> None:
    caller = desk.call("cancel", bye_after_ms=9000)
    await desk.caller()
    await desk.talk({A, "agcancel"}, what="the caller talks with the agent")
    await desk.talk({"agcancel", "tgwait"}, what="the agent consults the target")
    await desk.talk({A, "agcancel"}, what="the caller is back with the agent after the cancel")
    labels = await desk.labels()
    assert sorted(label for label, _ in labels.values()) == [A, "agcancel"], labels  # C hung up
    assert "cancelled" in desk.states(), desk.states()
    _pop_checks(desk, ["2001", "2100"], [0, 1])
    trace = await desk.finish(caller)
    assert trace.steps[-1] == ("cancel", "ring", "caller_hangup"), trace.steps
