"""How long a transfer takes (issue 5): from the transfer request to the caller bridged with the target.

Two modes, each run `--calls` times (a few at once), every transfer requested through the controller's web
API (POST /api/conversations/{uuid}/transfer, .../complete), as a console would:

- `blind`:    the caller talks with the first party (1001); request `{"mode": "blind", "to": "1002"}`;
              the clock runs from the request to the caller bridged with 1002 (whose phone answers at once);
- `attended`: the same call, `{"mode": "attended", "to": "1002"}`, wait for the consultation (transferor and
              target talking, the caller on hold), then the clock runs from the `complete` request to the
              caller bridged with the target.

"Bridged" is read from the switch's own events on an inbound ESL connection of the bench's own, with the
switch's timestamps (Event-Date-Timestamp, µs), against the wall clock read just before the request is sent:
switchctl bridges the caller (Call.bridge) by putting it and the leg into a two-member conference room
`bridge-<caller uuid>` (switch/freeswitch.py), so the instant is the later of the two `add-member` events
(CUSTOM conference::maintenance) of that room after the request. The controller's own `transfer` event
(`state: completed`, read from GET /api/events) carries `elapsed_ms`, which stops when the bridge is
*ordered* (Call.bridge has no "bridged" signal): both are reported, `bridged` is the figure that counts.

Peer, measured in the same run (its trials interleaved with ours, same concurrency): the switch's own
transfer of a call that never reaches the controller:
- blind: a caller bridged with 1003 by the dialplan (`bridge user/1003`) is moved with
  `uuid_transfer <caller> 1004 XML default`, the extension that bridges to 1004 (`bridge user/1004`);
  bridged = the caller's CHANNEL_BRIDGE with the 1004 leg;
- attended: the caller, bridged with 1003 by the dialplan, is held by the switch alone (`uuid_transfer
  <caller> '^^~endless_playback:<music>' inline`, which drops 1003), the consultation is two legs the bench
  originates (1003 and 1004, `uuid_bridge`d); complete = `uuid_bridge <caller> <1004 leg>` (the target
  leaves the consultation, the switch hangs 1003 up); bridged = the caller's CHANNEL_BRIDGE. FreeSWITCH's
  own `att_xfer` application needs the transferor's channel to run it, which a console does not have:
  the one-command completion is the switch's floor for the same step.
Both peers are one api command over inbound ESL with no application logic; ours is HTTP → controller →
its transfer feature → ESL commands. Ratios ours/peer are printed.

On a real Asterisk 22 (`--switches asterisk`; the default runs both when a private Asterisk can run here:
root, sipp, the project's chroot): a PRIVATE Asterisk (tests/private_asterisk.py: its own config and state
folders, free ARI/SIP ports, RTP 28000-28999) renders the same kind of site (render_asterisk, plus the
peer's two dialplan lines); each trial's caller is a sipp UAC (tests/sipp/bench_xfer_uac.xml, its own caller
id) into the controller's Stasis app (ours) or the bench's own app `benchpeer` (the peer); the first party
and the target are long-lived sipp UASes that answer at once (tests/sipp/bench_xfer_uas_answer.xml), one
gateway each. "Bridged" is Asterisk's own timestamp (ms, taken at the middle of its millisecond) of the
ChannelEnteredBridge that put the caller and the target in one bridge after the request (the later of the
two entering it), read on an ARI events WebSocket of the bench's own (`subscribeAll`). Peers:
- blind: the caller, bridged with the party by the bench's minimal ARI app, is sent on with
  `POST /channels/{caller}/continue` into an extension whose `Dial(PJSIP/2100@tgt)` bridges it with the
  target (Asterisk's own dial and bridge, no application logic);
- attended: the caller is held (removed from the bridge, `POST /channels/{caller}/moh`), the party consults
  the target (originated into the app, added to the bridge); complete = `POST /bridges/{id}/addChannel` of
  the caller into that bridge: the bare ARI cost of the step.
Every trial ends with the caller hung up (DELETE), its sipp reaped, and every channel of it destroyed; the
run ends with no channel and no bridge on the Asterisk (exit 1 otherwise).

    .venv/bin/python bench/transfer.py                        # sim: 100 per mode and side, Asterisk: 50; 4 at once
    .venv/bin/python bench/transfer.py --switches sim --calls 6 --json out.json
    .venv/bin/python bench/transfer.py --switch asterisk --calls 20

The FreeSWITCH here is the simulator (switchctl.sim) in the bench process; the controller (the real
`Controller`, as `switchctl run` serves calls, with the site's `transfer:` section) runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_CALLS = 500
SIM_CALLS, ASTERISK_CALLS = 100, 50  # default transfers per mode and side
MAX_CONCURRENT = 20
TRIAL_TIMEOUT = 20.0  # one trial (setup, transfer, bridged) must be done within this
STEP_TIMEOUT = 8.0  # each awaited step of a trial (shorter: its message names the step that hung)
SETTLE = 0.15  # seconds between a state being reached and the next request: nothing else in flight

FLOW_NUMBER = "7000"
OURS_PARTY, OURS_TARGET = "1001", "1002"
PEER_PARTY, PEER_TARGET = "1003", "1004"
HOLD_MUSIC = "tone_stream://%(400,200,400,450);%(400,2000,400,450);loops=-1"  # switchctl's hold fallback

SITE_YAML = """\
# written by bench/transfer.py: a flow dials 1001, consoles transfer the caller through the web API
site: transferbench
switches:
  - name: fs1
    kind: freeswitch
    esl: {{host: 127.0.0.1, port: {esl_port}, password: ClueCon}}
    outbound: {{host: 127.0.0.1, port: {outbound_port}}}
    sip: {{ip: 127.0.0.1, port: 25060}}
flows: dialplans/
web: {{listen: "127.0.0.1:{web_port}"}}
phones:
  - {{range: "1001-1004", name: "Desk {{n}}", password: "desk-{{extension}}"}}
transfer:
  enabled: false
  ring_timeout: 10
"""
FLOW_YAML = f"""\
flow: desk
numbers: ["{FLOW_NUMBER}"]
start: hello
nodes:
  hello: {{type: answer, next: ring}}
  ring:
    type: dial
    to: [{{phone: "{OURS_PARTY}"}}]
    timeout: 10
    next: bye
    failed: bye
  bye: {{type: hangup}}
"""


# -- what one trial measured ---------------------------------------------------------------------------------


@dataclass
class Trial:
    switch: str  # "sim"
    mode: str  # blind | attended
    who: str  # ours | peer
    index: int
    caller_uuid: str = ""  # the originated leg (loopback-a): killing it is the caller hanging up
    leg_uuid: str = ""  # the leg that ran the dialplan (loopback-b): the caller as the switch bridges it
    requested_us: int = 0  # wall clock just before the request left the bench
    bridged_us: int = 0  # the switch's timestamp of the caller bridged with the target
    target_uuid: str = ""
    extra_uuids: list[str] = field(default_factory=list)  # peer legs the bench originated itself
    elapsed_ms: float | None = None  # ours: the controller's own figure (request received -> bridge ordered)
    problem: str | None = None

    @property
    def latency_us(self) -> int | None:
        if self.problem is not None or not self.bridged_us or not self.requested_us:
            return None
        return self.bridged_us - self.requested_us


# -- the switch's events and the controller's, as journals one can wait on -------------------------------------


class Journal:
    """Records by key; `wait` returns the first record of a key that satisfies a predicate (past or future)."""

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}
        self._changed = asyncio.Event()

    def add(self, key: str, record: dict[str, Any]) -> None:
        self.records.setdefault(key, []).append(record)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, key: str, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                   what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records.get(key, ()):
                if predicate(record):
                    return record
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout:g} s")
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                pass


class SwitchEvents:
    """The bench's own inbound ESL subscription: loopback pairs, bridges, conference members, hangups."""

    EVENTS = ("CHANNEL_CREATE", "CHANNEL_BRIDGE", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB",
              "CUSTOM", "conference::maintenance")

    def __init__(self) -> None:
        self.loopback_leg: dict[str, str] = {}  # caller (loopback-a) uuid -> the dialplan leg (loopback-b)
        self.journal = Journal()  # keys: "leg:<uuid>" -> bridges / hangups of a channel; "room:<name>" -> members

    def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
        name = event.name
        uuid = event.unique_id or ""
        stamp = int(event.get("Event-Date-Timestamp") or 0)
        if name == "CHANNEL_CREATE":
            other = event.variable("other_loopback_leg_uuid")
            if other and (event.get("Channel-Name") or "").endswith("-b"):
                self.loopback_leg[other] = uuid
                self.journal.add(f"loopback:{other}", {"uuid": uuid})
        elif name == "CHANNEL_BRIDGE":
            record = {"event": "bridge", "a": event.get("Bridge-A-Unique-ID") or uuid,
                      "b": event.get("Bridge-B-Unique-ID") or "", "us": stamp}
            for side in {record["a"], record["b"]}:
                self.journal.add(f"leg:{side}", record)
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self.journal.add(f"leg:{uuid}", {"event": "hangup", "us": stamp, "cause": event.get("Hangup-Cause")})
        elif (name == "CUSTOM" and event.subclass == "conference::maintenance"
              and event.get("Action") == "add-member"):
            self.journal.add(f"room:{event.get('Conference-Name')}", {
                "uuid": uuid, "us": stamp, "number": event.get("Caller-Destination-Number") or ""})


class ControllerEvents:
    """The controller's event bus, read from GET /api/events (Server-Sent Events)."""

    def __init__(self) -> None:
        self.journal = Journal()  # "conv:<uuid>" -> transfer events
        self.subscribed = asyncio.Event()

    async def run(self, http, base: str) -> None:  # type: ignore[no-untyped-def]
        async with http.get(f"{base}/api/events?kinds=transfer,screen_pop", timeout=None) as resp:
            resp.raise_for_status()
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(": subscribed"):
                    self.subscribed.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
                    self.journal.add(f"conv:{payload.get('conversation')}", {"kind": kind, **payload})


# -- the controller process ------------------------------------------------------------------------------------


def serve_controller(site_path: str) -> int:
    """Child process: switchctl's Controller on the bench's site until SIGTERM."""
    from switchctl.aio import run

    return run(_serve_controller(Path(site_path)))


async def _serve_controller(site_path: Path) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from switchctl.config.site import load_site
    from switchctl.controller import Controller
    from switchctl.sitecheck import check_site

    site = load_site(site_path)
    checked = check_site(site)
    if not checked.ok:
        print(checked.report(), file=sys.stderr)
        return 2
    controller = Controller(site, checked.flows)
    await controller.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"READY {controller.web.url if controller.web else ''}", flush=True)
    await stop.wait()
    await controller.stop(grace=2)
    return 0


async def start_controller(site_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--serve-controller", str(site_path),
        stdout=subprocess.PIPE, cwd=str(ROOT))
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("the controller process did not come up within 60 s") from None
    if not line.startswith("READY http"):
        await proc.wait()
        raise RuntimeError(f"the controller process failed to start (exit {proc.returncode}): {line!r}")
    return proc, line.split()[1].rstrip("/")


async def stop_controller(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the simulator rig -------------------------------------------------------------------------------------------


@dataclass
class Console:
    """What both rigs do as a console: the controller's web API and its event stream."""

    controller_events: ControllerEvents
    http: Any  # aiohttp.ClientSession
    base: str  # the controller's web API

    async def post(self, path: str, body: dict[str, str] | None = None) -> dict[str, Any]:
        async with self.http.post(f"{self.base}{path}", json=body) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"POST {path}: {resp.status} {answer}")
            return answer

    async def conv_state(self, trial: Trial, state: str) -> dict[str, Any]:
        """The conversation's first `transfer` event in `state` (each trial is a new conversation)."""
        return await self.controller_events.journal.wait(
            f"conv:{trial.leg_uuid}", lambda r: r["kind"] == "transfer" and r["state"] == state,
            STEP_TIMEOUT, f"conversation state {state!r}")

    async def console_transfer(self, trial: Trial, target: str) -> None:
        """Ours, from the talking state: the transfer requested as a console does; `requested_us` set."""
        await self.conv_state(trial, "talking")
        await asyncio.sleep(SETTLE)
        conv = f"/api/conversations/{trial.leg_uuid}"
        if trial.mode == "blind":
            trial.requested_us = time.time_ns() // 1000
            await self.post(f"{conv}/transfer", {"mode": "blind", "to": target})
        else:
            await self.post(f"{conv}/transfer", {"mode": "attended", "to": target})
            await self.conv_state(trial, "consulting")
            await asyncio.sleep(SETTLE)
            trial.requested_us = time.time_ns() // 1000
            await self.post(f"{conv}/complete")
        completed = await self.conv_state(trial, "completed")
        trial.elapsed_ms = completed.get("elapsed_ms")


@dataclass
class SimRig(Console):
    client: Any = None  # InboundClient on the simulator
    switch_events: SwitchEvents = field(default_factory=SwitchEvents)

    async def place(self, trial: Trial, number: str, caller_number: str) -> str:
        """Originate a loopback call to `number`; returns the dialplan leg's uuid once it exists."""
        trial.caller_uuid = str(uuidlib.uuid4())
        command = (f"originate {{origination_uuid={trial.caller_uuid},origination_caller_id_number={caller_number}}}"
                   f"loopback/{number}/default &park")
        reply = await self.client.bgapi(command, timeout=STEP_TIMEOUT, check=False)
        if not reply.startswith("+OK"):
            raise RuntimeError(f"originate {number}: {reply.strip()}")
        found = await self.switch_events.journal.wait(f"loopback:{trial.caller_uuid}", lambda r: True, 5,
                                                     "loopback-b leg")
        trial.leg_uuid = found["uuid"]
        return trial.leg_uuid

    async def room_bridged(self, trial: Trial, target_number: str) -> None:
        """The caller and the target both added to the caller's bridge room after the request."""
        room = f"bridge-{trial.leg_uuid}"
        caller = await self.switch_events.journal.wait(
            f"room:{room}", lambda r: r["uuid"] == trial.leg_uuid and r["us"] >= trial.requested_us,
            STEP_TIMEOUT, f"caller added to {room}")
        target = await self.switch_events.journal.wait(
            f"room:{room}", lambda r: r["uuid"] != trial.leg_uuid and r["us"] >= trial.requested_us,
            STEP_TIMEOUT, f"a second member added to {room}")
        if target["number"] != target_number:
            raise RuntimeError(f"the caller's room got {target['number']!r}, not the target {target_number}")
        trial.target_uuid = target["uuid"]
        trial.bridged_us = max(caller["us"], target["us"])

    async def caller_bridged(self, trial: Trial, not_with: str | None) -> dict[str, Any]:
        """The caller leg's next CHANNEL_BRIDGE (after the request, with someone other than `not_with`)."""
        return await self.switch_events.journal.wait(
            f"leg:{trial.leg_uuid}",
            lambda r: r["event"] == "bridge" and r["us"] >= trial.requested_us and trial.leg_uuid in (r["a"], r["b"])
            and not_with not in (r["a"], r["b"]),
            STEP_TIMEOUT, "the caller's CHANNEL_BRIDGE")

    # -- ours: the controller's transfer feature through its web API --

    async def ours(self, trial: Trial) -> None:
        await self.place(trial, FLOW_NUMBER, f"5{trial.index:04d}")
        await self.console_transfer(trial, OURS_TARGET)
        await self.room_bridged(trial, OURS_TARGET)

    # -- the peer: the switch's own transfer of a call no controller sees --

    async def peer(self, trial: Trial) -> None:
        if trial.mode == "blind":
            await self.place(trial, PEER_PARTY, f"6{trial.index:04d}")
            first = await self.caller_bridged(trial, None)
            party = first["b"] if first["a"] == trial.leg_uuid else first["a"]
            await asyncio.sleep(SETTLE)
            trial.requested_us = time.time_ns() // 1000
            await self.client.api(f"uuid_transfer {trial.leg_uuid} {PEER_TARGET} XML default")
            bridged = await self.caller_bridged(trial, party)
        else:
            # the caller talks with 1003, then is held as the switch holds a channel: music, inline
            # (1003 is dropped by the switch; the consultation is placed as the bench's own legs)
            await self.place(trial, PEER_PARTY, f"6{trial.index:04d}")
            await self.caller_bridged(trial, None)
            await self.client.api(f"uuid_transfer {trial.leg_uuid} '^^~endless_playback:{HOLD_MUSIC}' inline")
            transferor, target = str(uuidlib.uuid4()), str(uuidlib.uuid4())
            trial.extra_uuids = [transferor, target]
            for uuid, number in ((transferor, PEER_PARTY), (target, PEER_TARGET)):
                reply = await self.client.bgapi(f"originate {{origination_uuid={uuid}}}user/{number} &park",
                                                timeout=STEP_TIMEOUT, check=False)
                if not reply.startswith("+OK"):
                    raise RuntimeError(f"originate user/{number}: {reply.strip()}")
            await self.client.api(f"uuid_bridge {transferor} {target}")  # the consultation
            await self.switch_events.journal.wait(f"leg:{target}", lambda r: r["event"] == "bridge", 5,
                                                  "the consultation's CHANNEL_BRIDGE")
            await asyncio.sleep(SETTLE)
            trial.requested_us = time.time_ns() // 1000
            await self.client.api(f"uuid_bridge {trial.leg_uuid} {target}")
            bridged = await self.caller_bridged(trial, None)
        trial.target_uuid = bridged["b"] if bridged["a"] == trial.leg_uuid else bridged["a"]
        trial.bridged_us = bridged["us"]

    async def hang_up(self, trial: Trial) -> None:
        """The caller hangs up; everything of the trial must be gone (the controller's legs too) before the next."""
        legs = [uuid for uuid in (trial.leg_uuid, trial.target_uuid) if uuid]
        for uuid in (trial.caller_uuid, *trial.extra_uuids):
            if uuid:
                await self.client.api(f"uuid_kill {uuid}", check=False)
        for uuid in legs:
            try:
                await self.switch_events.journal.wait(f"leg:{uuid}", lambda r: r["event"] == "hangup", 10,
                                                      f"hangup of {uuid}")
            except TimeoutError:
                trial.problem = trial.problem or f"leg {uuid} still up 10 s after the caller hung up"
                await self.client.api(f"uuid_kill {uuid}", check=False)


# -- the real-Asterisk rig --------------------------------------------------------------------------------------

# A PRIVATE Asterisk (tests/private_asterisk.py: the project's chroot, its own config and state folders, free
# ARI/SIP ports) with this RTP range: no test uses it (shared 10000-, deploy 12000-, restart 13000-/14000-,
# dial 16000-, prepaid 18000-/23000-, transfer primitives 21000-, voicemail 25500-, transfer e2e 27000-).
AST_RTP_RANGE = (28000, 28999)
AST_PARTY_GW, AST_TARGET_GW = "party", "tgt"  # gateways to sipp far ends that answer at once
AST_TARGET = "2100"  # the transfer target's number: the site's route 21xx -> gateway tgt (ours and the peer)
AST_PEER_NUMBER = "7300"  # the peer's calls: into the bench's own Stasis app, never the controller's
AST_PEER_APP = "benchpeer"
AST_PEER_CONTEXT = "benchpeer-xfer"  # the peer's blind transfer: `continue` here, where Dial bridges the target
# ARI stamps events to the millisecond, truncated: the instant is somewhere in that millisecond, so the
# bridged instant is taken as its middle (unbiased; each figure is within ±0.5 ms of the truth).
AST_STAMP_MIDPOINT_US = 500
AST_CALLER_PREFIX = "PJSIP/sipp-"  # every sipp caller is the rendered endpoint 'sipp' (local callers)
SIPP_DIR = ROOT / "tests" / "sipp"
AST_UAC = SIPP_DIR / "bench_xfer_uac.xml"
AST_UAS = SIPP_DIR / "bench_xfer_uas_answer.xml"

AST_SITE_YAML = """\
# written by bench/transfer.py: a flow dials the party gateway, consoles transfer the caller through the web API
site: transferbench
switches:
  - name: ast1
    kind: asterisk
    ari: {{host: 127.0.0.1, port: {ari_port}, user: {user}, password: {password}, app: {app}}}
    sip: {{ip: 127.0.0.1, port: {sip_port}}}
flows: dialplans/
web: {{listen: "127.0.0.1:{web_port}"}}
gateways:
  - {{name: {party_gw}, proxy: 127.0.0.1:{party_port}, register: false}}
  - {{name: {target_gw}, proxy: 127.0.0.1:{target_port}, register: false}}
transfer:
  enabled: false
  ring_timeout: 10
  routes:
    - {{pattern: '21\\d\\d', kind: gateway, gateway: {target_gw}}}
"""
AST_FLOW_YAML = f"""\
flow: desk
numbers: ["{FLOW_NUMBER}"]
start: hello
nodes:
  hello: {{type: answer, next: ring}}
  ring:
    type: dial
    to: [{{gateway: {AST_PARTY_GW}, number: "{OURS_PARTY}"}}]
    timeout: 10
    next: bye
    failed: bye
  bye: {{type: hangup}}
"""
# Appended to the rendered extensions.conf: the peer's calls reach the bench's app (an exact extension of
# [from-loopback] itself wins over the includes that send every number to the controller), and the
# extension the peer's blind transfer continues to: Asterisk's own Dial, no application logic.
AST_PEER_DIALPLAN = f"""
; bench/transfer.py: the peer (Asterisk's own transfer, no controller)
[from-loopback](+)
exten => {AST_PEER_NUMBER},1,Stasis({AST_PEER_APP})
 same => n,Hangup()

[{AST_PEER_CONTEXT}]
exten => _21XX,1,Dial(PJSIP/${{EXTEN}}@{AST_TARGET_GW})
 same => n,Hangup()
"""


def ari_timestamp_us(text: str | None) -> int:
    """An ARI event's `timestamp` (2026-11-26T01:02:03.456+0000: Asterisk gives milliseconds) in µs."""
    if not text:
        return 0
    try:
        return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1_000_000 + 0.5)
    except ValueError:
        return 0


class AriEvents:
    """The bench's own ARI event stream (app `benchpeer`, subscribeAll: every channel and bridge, the
    controller's too). Journal keys: "caller:<number>" -> a sipp caller's channel; "stasis:<id>" -> the
    channel entered the bench's app; "gone:<id>" -> destroyed; "together:<id>" -> each time another
    channel joined a bridge this one is in (or this one joined a bridge with it), at Asterisk's timestamp
    of that ChannelEnteredBridge: the later of the two entering the same bridge."""

    def __init__(self) -> None:
        self.journal = Journal()
        self.names: dict[str, str] = {}
        self.members: dict[str, set[str]] = {}  # bridge id -> channel ids in it now

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        us = ari_timestamp_us(event.get("timestamp"))
        channel = event.get("channel") or {}
        cid = channel.get("id", "")
        if cid:
            self.names[cid] = channel.get("name", "")
        if kind == "ChannelCreated" and channel.get("name", "").startswith(AST_CALLER_PREFIX):
            number = (channel.get("caller") or {}).get("number", "")
            self.journal.add(f"caller:{number}", {"id": cid, "us": us})
        elif kind == "StasisStart" and event.get("application") == AST_PEER_APP:
            self.journal.add(f"stasis:{cid}", {"us": us})
        elif kind == "ChannelEnteredBridge":
            bridge = (event.get("bridge") or {}).get("id", "")
            members = self.members.setdefault(bridge, set())
            for other in sorted(members - {cid}):
                self.journal.add(f"together:{cid}", {"us": us, "bridge": bridge, "with": other,
                                                     "name": self.names.get(other, "")})
                self.journal.add(f"together:{other}", {"us": us, "bridge": bridge, "with": cid,
                                                       "name": self.names.get(cid, "")})
            members.add(cid)
        elif kind == "ChannelLeftBridge":
            self.members.get((event.get("bridge") or {}).get("id", ""), set()).discard(cid)
        elif kind == "BridgeDestroyed":
            self.members.pop((event.get("bridge") or {}).get("id", ""), None)
        elif kind == "ChannelDestroyed":
            self.journal.add(f"gone:{cid}", {"us": us, "cause": event.get("cause_txt", "")})

    async def run(self, ws) -> None:  # type: ignore[no-untyped-def]
        import aiohttp

        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.on_event(json.loads(msg.data))


def floor_ms(us: int) -> int:
    """Asterisk stamps events to the millisecond (truncated): an event of the same millisecond as the
    request may carry a stamp just below the request's µs clock, and still came after it."""
    return us - us % 1000


@dataclass
class AsteriskRig(Console):
    ari: Any = None  # aiohttp.ClientSession with ARI's basic auth
    ari_base: str = ""  # http://127.0.0.1:<port>/ari
    sip_port: int = 0
    events: AriEvents = field(default_factory=AriEvents)
    work: Path = Path(".")
    callers: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)  # trial index -> sipp UAC
    bridges: dict[int, str] = field(default_factory=dict)  # trial index -> the peer's own bridge

    async def rest(self, method: str, path: str, ok_missing: bool = False) -> Any:
        async with self.ari.request(method, f"{self.ari_base}/{path}") as resp:
            text = await resp.text()
            if resp.status == 404 and ok_missing:
                return None
            if resp.status >= 300:
                raise RuntimeError(f"ARI {method} {path.split('?')[0]}: {resp.status} {text.strip()}")
            return json.loads(text) if text else None

    async def call_in(self, trial: Trial, number: str, caller_number: str) -> str:
        """A sipp caller dials `number`; returns its channel id once Asterisk created it."""
        errors = self.work / f"caller-{trial.index}.err"
        err = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # a fd: sipp writes, nobody reads
        try:
            proc = await asyncio.create_subprocess_exec(
                "sipp", "-sf", str(AST_UAC), "-s", number, "-key", "caller", caller_number, "-m", "1",
                "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mi", "127.0.0.1",
                "-mp", str(free_udp_port(span=4)), "-cp", str(free_udp_port()), "-nostdin",
                "-timeout", "90s", "-timeout_error", f"127.0.0.1:{self.sip_port}",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err,
                cwd=str(self.work), start_new_session=True)
        finally:
            os.close(err)
        self.callers[trial.index] = proc
        try:
            found = await self.events.journal.wait(f"caller:{caller_number}", lambda r: True, STEP_TIMEOUT,
                                                   f"channel for caller {caller_number}")
        except TimeoutError as exc:
            said = errors.read_text(errors="replace").strip().splitlines()[-3:]
            raise TimeoutError(f"{exc} (its sipp: {'running' if proc.returncode is None else proc.returncode}"
                               f"{', ' + ' | '.join(said) if said else ''})") from None
        trial.caller_uuid = trial.leg_uuid = found["id"]
        return trial.leg_uuid

    async def together(self, channel: str, prefix: str, after_us: int, what: str) -> dict[str, Any]:
        """The first time `channel` and a channel named `prefix`... share a bridge, at or after `after_us`."""
        return await self.events.journal.wait(
            f"together:{channel}", lambda r: r["us"] >= floor_ms(after_us) and r["name"].startswith(prefix),
            STEP_TIMEOUT, what)

    async def bridged(self, trial: Trial) -> None:
        found = await self.together(trial.leg_uuid, f"PJSIP/{AST_TARGET_GW}-", trial.requested_us,
                                    "the caller in one bridge with the target")
        trial.target_uuid, trial.bridged_us = found["with"], found["us"] + AST_STAMP_MIDPOINT_US

    # -- ours: the controller's transfer feature through its web API --

    async def ours(self, trial: Trial) -> None:
        await self.call_in(trial, FLOW_NUMBER, f"5{trial.index:04d}")
        party = await self.together(trial.leg_uuid, f"PJSIP/{AST_PARTY_GW}-", 0, "the caller bridged with the party")
        trial.extra_uuids = [party["with"]]  # the controller hangs it up; the bench checks it went
        await self.console_transfer(trial, AST_TARGET)
        await self.bridged(trial)

    # -- the peer: Asterisk's own transfer of a call no controller sees (the bench's minimal ARI app) --

    async def peer(self, trial: Trial) -> None:
        caller = await self.call_in(trial, AST_PEER_NUMBER, f"6{trial.index:04d}")
        await self.events.journal.wait(f"stasis:{caller}", lambda r: True, STEP_TIMEOUT, "the caller in the bench app")
        await self.rest("POST", f"channels/{caller}/answer")
        party = await self.originate(trial, AST_PARTY_GW, PEER_PARTY)
        bridge = self.bridges[trial.index] = str(uuidlib.uuid4())
        await self.rest("POST", f"bridges?type=mixing&bridgeId={bridge}")
        await self.rest("POST", f"bridges/{bridge}/addChannel?channel={caller},{party}")
        await self.together(caller, f"PJSIP/{AST_PARTY_GW}-", 0, "the caller bridged with the party")
        if trial.mode == "blind":
            await asyncio.sleep(SETTLE)
            trial.requested_us = time.time_ns() // 1000
            await self.rest("POST", f"channels/{caller}/continue?context={AST_PEER_CONTEXT}"
                                    f"&extension={AST_TARGET}&priority=1")
        else:
            # the caller on hold (out of the bridge, music on hold); the party consults the target in it
            await self.rest("POST", f"bridges/{bridge}/removeChannel?channel={caller}")
            await self.rest("POST", f"channels/{caller}/moh")
            target = await self.originate(trial, AST_TARGET_GW, AST_TARGET)
            await self.rest("POST", f"bridges/{bridge}/addChannel?channel={target}")
            await self.together(target, f"PJSIP/{AST_PARTY_GW}-", 0, "the consultation (party with target)")
            await asyncio.sleep(SETTLE)
            trial.requested_us = time.time_ns() // 1000
            await self.rest("POST", f"bridges/{bridge}/addChannel?channel={caller}")
        await self.bridged(trial)

    async def originate(self, trial: Trial, gateway: str, number: str) -> str:
        """A leg into the bench's app, answered (its StasisStart comes with the answer)."""
        leg = str(uuidlib.uuid4())
        trial.extra_uuids.append(leg)
        await self.rest("POST", f"channels?endpoint=PJSIP/{number}@{gateway}&app={AST_PEER_APP}&channelId={leg}"
                                f"&timeout=10")
        await self.events.journal.wait(f"stasis:{leg}", lambda r: True, STEP_TIMEOUT, f"{number}@{gateway} answered")
        return leg

    async def hang_up(self, trial: Trial) -> None:
        """The caller hangs up (its sipp answers the BYE and exits 0); every channel of the trial must go."""
        channels = [c for c in (trial.caller_uuid, trial.target_uuid, *trial.extra_uuids) if c]
        if trial.caller_uuid:
            await self.rest("DELETE", f"channels/{trial.caller_uuid}", ok_missing=True)
        if trial.who == "peer":  # the bench's own legs and bridge are the bench's to end
            for leg in trial.extra_uuids:
                await self.rest("DELETE", f"channels/{leg}", ok_missing=True)
        for channel in channels:
            try:
                await self.events.journal.wait(f"gone:{channel}", lambda r: True, 10, f"hangup of {channel}")
            except TimeoutError:
                trial.problem = trial.problem or f"channel {channel} still up 10 s after the caller hung up"
                await self.rest("DELETE", f"channels/{channel}", ok_missing=True)
        bridge = self.bridges.pop(trial.index, None)
        if bridge:
            await self.rest("DELETE", f"bridges/{bridge}", ok_missing=True)
        proc = self.callers.pop(trial.index, None)
        if proc is not None:
            try:
                code = await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                code = await proc.wait()
            if code != 0 and trial.caller_uuid:
                trial.problem = trial.problem or f"the caller's sipp exited {code}"


def free_udp_port(span: int = 1) -> int:
    """A UDP port on 127.0.0.1 free now; with span > 1, an even one with the next span-1 free too (sipp's
    media port and port+2)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if span == 1:
            return port
        if port % 2 or port + span > 65535:
            continue
        try:
            held = []
            for extra in range(1, span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port + extra))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free UDP port range on 127.0.0.1")


def asterisk_chroot() -> Path:
    from tests.asterisk_fixture import env_from_environment

    return env_from_environment().base_dir / "root"


def asterisk_unavailable() -> str | None:
    """Why the real-Asterisk half cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (the private Asterisk runs in the project's chroot)"
    if shutil.which("sipp") is None:
        return "sipp is not installed"
    try:
        chroot = asterisk_chroot()
    except Exception as exc:  # noqa: BLE001  the environment says where the chroot is
        return f"no Asterisk chroot configured: {exc}"
    if not (chroot / "usr" / "sbin" / "asterisk").exists():
        return f"no Asterisk in {chroot} (tools/asterisk-setup.sh setup builds it)"
    return None


async def run_asterisk(args, work: Path) -> tuple[list[Trial], list[str]]:  # type: ignore[no-untyped-def]
    import aiohttp

    from switchctl.config.site import load_site
    from switchctl.render.asterisk import render_asterisk
    from switchctl.sitecheck import check_site
    from tests.private_asterisk import (
        create_private_asterisk,
        start_sipp_uas,
        stop_processes,
    )

    work.mkdir(parents=True, exist_ok=True)
    env = create_private_asterisk(asterisk_chroot(), tag="xferbench", log_dir=work, rtp=AST_RTP_RANGE)
    ports = {AST_PARTY_GW: free_udp_port(), AST_TARGET_GW: free_udp_port()}
    (work / "dialplans").mkdir(exist_ok=True)
    (work / "dialplans" / "desk.yaml").write_text(AST_FLOW_YAML)
    site_path = work / "site.yaml"
    site_path.write_text(AST_SITE_YAML.format(
        ari_port=env.ari.port, user=env.ari.user, password=env.ari.password, app=env.ari.app,
        sip_port=env.sip_port, web_port=free_port(), party_gw=AST_PARTY_GW, target_gw=AST_TARGET_GW,
        party_port=ports[AST_PARTY_GW], target_port=ports[AST_TARGET_GW]))
    site = load_site(site_path)
    checked = check_site(site)
    if not checked.ok:
        raise SystemExit(checked.report())
    files = dict(render_asterisk(site))
    files["extensions.conf"] = files["extensions.conf"] + AST_PEER_DIALPLAN.encode()
    env.write_config(files)
    far_ends = [start_sipp_uas(AST_UAS, port, work / f"uas_{name}_messages.log") for name, port in ports.items()]
    trials = plan_trials("asterisk", args.modes, args.asterisk_calls)
    proc = sse = reader = None
    left_behind: list[str] = []
    token = base64.b64encode(f"{env.ari.user}:{env.ari.password}".encode()).decode()
    ari_base = f"http://127.0.0.1:{env.ari.port}/ari"
    try:
        env.launch()
        async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"},
                                         timeout=aiohttp.ClientTimeout(total=15)) as ari:
            await wait_for_ari(env, ari, ari_base)
            ws = await ari.ws_connect(f"ws://127.0.0.1:{env.ari.port}/ari/events"
                                      f"?app={AST_PEER_APP}&subscribeAll=true")
            events = AriEvents()
            reader = asyncio.create_task(events.run(ws))
            proc, base = await start_controller(site_path)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                controller_events = ControllerEvents()
                sse = asyncio.create_task(controller_events.run(http, base))
                await asyncio.wait_for(controller_events.subscribed.wait(), 10)
                rig = AsteriskRig(controller_events, http, base, ari=ari, ari_base=ari_base, sip_port=env.sip_port,
                                  events=events, work=work)
                gate = asyncio.Semaphore(args.concurrency)
                await asyncio.gather(*(run_trial(rig, trial, gate) for trial in trials))
                sse.cancel()
                left_behind = await asterisk_left(rig, 5.0)
            await ws.close()
    finally:
        for task in (sse, reader):
            if task is not None and not task.done():
                task.cancel()
        if proc is not None:
            await stop_controller(proc)
        stop_processes(far_ends)
        env.stop()
        if not args.keep_asterisk:
            env.remove()
    return trials, left_behind


async def wait_for_ari(env, ari, ari_base: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """ARI answers, then PJSIP has loaded pjsip.conf (before that a dial fails "Allocation failed")."""
    import aiohttp

    deadline = time.monotonic() + timeout
    for path in ("asterisk/info", f"endpoints/PJSIP/{AST_PARTY_GW}"):
        while True:
            if not env.running:
                raise SystemExit(f"the private Asterisk exited: {env.log.read_text(errors='replace')[-1500:]}")
            try:
                async with ari.get(f"{ari_base}/{path}") as resp:
                    if resp.status == 200:
                        break
            except (aiohttp.ClientError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the private Asterisk's ARI did not answer {path} within {timeout:g} s")
            await asyncio.sleep(0.1)


async def asterisk_left(rig: AsteriskRig, wait: float) -> list[str]:
    """Channels and bridges still on the Asterisk after every trial hung up (none may be)."""
    deadline = time.monotonic() + wait
    while True:
        channels = await rig.rest("GET", "channels")
        bridges = await rig.rest("GET", "bridges")
        if (not channels and not bridges) or time.monotonic() > deadline:
            return ([f"channel {c['name']} ({c['id']})" for c in channels]
                    + [f"bridge {b['id']} {b.get('channels')}" for b in bridges])
        await asyncio.sleep(0.1)


# -- running and reporting ------------------------------------------------------------------------------------------


async def run_trial(rig: SimRig | AsteriskRig, trial: Trial, gate: asyncio.Semaphore) -> None:
    async with gate:
        try:
            await asyncio.wait_for(rig.ours(trial) if trial.who == "ours" else rig.peer(trial), TRIAL_TIMEOUT)
        except Exception as exc:  # noqa: BLE001  a trial that failed is reported, the bench goes on
            trial.problem = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await rig.hang_up(trial)
            except Exception as exc:  # noqa: BLE001  reported with the trial
                trial.problem = trial.problem or f"cleanup: {exc}"


def plan_trials(switch: str, modes: list[str], calls: int) -> list[Trial]:
    """Ours and the peer alternate, so the machine's noise hits both alike."""
    trials = []
    for mode in modes:
        for index in range(calls):
            for who in ("ours", "peer"):
                trials.append(Trial(switch, mode, who, len(trials)))
    return trials


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank (p99 of fewer than 100 values is the max)."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(trials: list[Trial]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(t.switch, t.mode, t.who) for t in trials}, key=lambda k: (k[0], k[1], k[2] != "ours"))
    for switch, mode, who in keys:
        group = [t for t in trials if (t.switch, t.mode, t.who) == (switch, mode, who)]
        lat = sorted(t.latency_us / 1000 for t in group if t.latency_us is not None)
        row: dict[str, Any] = {"switch": switch, "mode": mode, "who": who, "calls": len(group),
                               "measured": len(lat), "problems": [t.problem for t in group if t.problem][:10]}
        if lat:
            row.update(p50_ms=percentile(lat, 0.5), p99_ms=percentile(lat, 0.99), max_ms=lat[-1], min_ms=lat[0])
        elapsed = sorted(t.elapsed_ms for t in group if t.elapsed_ms is not None and t.problem is None)
        if elapsed:
            row.update(elapsed_p50_ms=percentile(elapsed, 0.5), elapsed_p99_ms=percentile(elapsed, 0.99),
                       elapsed_max_ms=elapsed[-1])
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row["who"] != "ours" or "p50_ms" not in row:
            continue
        peer = next((r for r in rows if r["who"] == "peer" and (r["switch"], r["mode"]) == (row["switch"], row["mode"])
                     and "p50_ms" in r), None)
        if peer is None:
            continue
        out.append({"switch": row["switch"], "mode": row["mode"],
                    "p50": row["p50_ms"] / peer["p50_ms"], "p99": row["p99_ms"] / peer["p99_ms"]})
    return out


def print_report(rows: list[dict[str, Any]], args, took: float) -> None:  # type: ignore[no-untyped-def]
    load = os.getloadavg()
    per_switch = ", ".join(f"{s} {args.calls if s == 'sim' else args.asterisk_calls}" for s in args.switches)
    print(f"transfer: transfers per mode and side: {per_switch}; {args.concurrency} at once; took {took:.0f} s; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("latency = the switch's timestamp of the caller bridged with the target − wall clock at the request")
    print(f"{'switch':<8} {'mode':<9} {'who':<5} {'calls':>5} {'ok':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'min ms':>8}   {'ordered (elapsed_ms) p50/p99/max':>34}")
    for row in rows:
        figures = ("".join(f"{row[k]:>9.2f}" for k in ("p50_ms", "p99_ms", "max_ms", "min_ms"))
                   if "p50_ms" in row else "  (nothing measured)")
        ordered = (f"{row['elapsed_p50_ms']:.2f} / {row['elapsed_p99_ms']:.2f} / {row['elapsed_max_ms']:.2f}"
                   if "elapsed_p50_ms" in row else "-")
        print(f"{row['switch']:<8} {row['mode']:<9} {row['who']:<5} {row['calls']:>5} {row['measured']:>4}{figures}"
              f"   {ordered:>34}")
    for ratio in ratios(rows):
        print(f"  {ratio['switch']} {ratio['mode']}: ours/peer p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x")
    for row in rows:
        for problem in row["problems"]:
            print(f"  {row['switch']} {row['mode']} {row['who']} problem: {problem}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_sim(args, work: Path) -> tuple[list[Trial], list[str]]:  # type: ignore[no-untyped-def]
    import aiohttp

    from switchctl.config.site import load_site
    from switchctl.esl.inbound import InboundClient
    from switchctl.flowtest import sim_routes
    from switchctl.sim import FreeSwitchSim, SimConfig, UserBehaviour
    from switchctl.sitecheck import check_site

    esl_port, outbound_port, web_port = free_port(), free_port(), free_port()
    (work / "dialplans").mkdir(parents=True, exist_ok=True)
    (work / "dialplans" / "desk.yaml").write_text(FLOW_YAML)
    site_path = work / "site.yaml"
    site_path.write_text(SITE_YAML.format(esl_port=esl_port, outbound_port=outbound_port, web_port=web_port))
    site = load_site(site_path)
    checked = check_site(site)
    if not checked.ok:
        raise SystemExit(checked.report())
    party, target = UserBehaviour(answer_after=0.05), UserBehaviour(answer_after=0.0)
    sim = FreeSwitchSim(SimConfig(
        esl_port=esl_port, context="default",
        dialplan=sim_routes(site, checked.flows, f"127.0.0.1:{outbound_port}"),
        users={OURS_PARTY: party, PEER_PARTY: party, OURS_TARGET: target, PEER_TARGET: target},
        media_speed=1.0, sessions_per_second=10_000, max_sessions=10_000, max_call_seconds=120.0))
    await sim.start()
    client = InboundClient("127.0.0.1", esl_port, "ClueCon", events=SwitchEvents.EVENTS, event_format="plain",
                           name="transferbench")
    switch_events = SwitchEvents()
    client.add_event_handler(switch_events.on_event)
    controller_events = ControllerEvents()
    proc = None
    sse = None
    trials = plan_trials("sim", args.modes, args.calls)
    try:
        await client.connect()
        proc, base = await start_controller(site_path)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            sse = asyncio.create_task(controller_events.run(http, base))
            await asyncio.wait_for(controller_events.subscribed.wait(), 10)
            rig = SimRig(controller_events, http, base, client=client, switch_events=switch_events)
            gate = asyncio.Semaphore(args.concurrency)
            await asyncio.gather(*(run_trial(rig, trial, gate) for trial in trials))
            sse.cancel()
        left_behind = await channels_left(sim, 5.0)
    finally:
        if sse is not None and not sse.done():
            sse.cancel()
        if proc is not None:
            await stop_controller(proc)
        await client.close()
        await sim.close()
    return trials, left_behind


async def channels_left(sim, wait: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Channels still up on the switch after every trial hung up (none may be: the feature hangs up its legs)."""
    deadline = time.monotonic() + wait
    while sim.channels and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return [f"{c.data.name} ({c.uuid})" for c in sim.channels.values()]


async def main_async(args) -> int:  # type: ignore[no-untyped-def]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="transferbench-"))
    started = time.monotonic()
    trials: list[Trial] = []
    left_behind: list[str] = []
    for switch in args.switches:
        if switch == "sim":
            done, left = await run_sim(args, work / "sim")
        else:
            done, left = await run_asterisk(args, work / "asterisk")
        trials += done
        left_behind += [f"{switch}: {what}" for what in left]
    rows = summarize(trials)
    took = time.monotonic() - started
    print_report(rows, args, took)
    print(f"  channels (and bridges) left on the switch after the run: {len(left_behind)} {left_behind[:5]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": rows, "ratios": ratios(rows), "took_s": took, "load": os.getloadavg(), "left_behind": left_behind,
            "trials": [asdict(t) | {"latency_us": t.latency_us} for t in trials]}, indent=1))
    return 0 if all(row["measured"] == row["calls"] for row in rows) and not left_behind else 1


def choose_switches(asked: str | None, asterisk_problem: str | None) -> list[str]:
    """The switches to run on: as asked, or both when Asterisk can run here (else the simulator, said so)."""
    if asked is None:
        if asterisk_problem is not None:
            print(f"transfer: the simulator only; the real-Asterisk half {asterisk_problem}", flush=True)
            return ["sim"]
        return ["sim", "asterisk"]
    switches = [s.strip() for s in asked.split(",") if s.strip()]
    if not switches or any(s not in ("sim", "asterisk") for s in switches) or len(set(switches)) != len(switches):
        raise ValueError("--switches: sim, asterisk or sim,asterisk")
    if "asterisk" in switches and asterisk_problem is not None:
        raise ValueError(f"--switches asterisk: {asterisk_problem}")
    return switches


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-controller":
        return serve_controller(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, help=f"transfers per mode and side (<= {MAX_CALLS}); "
                        f"default {SIM_CALLS} on the simulator, {ASTERISK_CALLS} on Asterisk")
    parser.add_argument("--concurrency", type=int, default=4, help=f"trials at once (<= {MAX_CONCURRENT})")
    parser.add_argument("--modes", default="blind,attended", help="blind, attended or both")
    parser.add_argument("--switches", "--switch", dest="switches",
                        help="sim, asterisk or sim,asterisk (default: both when a private Asterisk can run here)")
    parser.add_argument("--workdir", help="site and flows (default: a new temporary folder)")
    parser.add_argument("--json", help="also write the rows and every trial as JSON here")
    parser.add_argument("--keep-asterisk", action="store_true",
                        help="keep the private Asterisk's config and state folders in the chroot (debugging)")
    args = parser.parse_args()
    if args.calls is not None and not 1 <= args.calls <= MAX_CALLS:
        parser.error(f"--calls must be 1..{MAX_CALLS}")
    args.asterisk_calls = args.calls or ASTERISK_CALLS
    args.calls = args.calls or SIM_CALLS
    if not 1 <= args.concurrency <= MAX_CONCURRENT:
        parser.error(f"--concurrency must be 1..{MAX_CONCURRENT}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("blind", "attended") for m in args.modes):
        parser.error("--modes: blind, attended or blind,attended")
    try:
        args.switches = choose_switches(args.switches, asterisk_unavailable())
    except ValueError as exc:
        parser.error(str(exc))
    from switchctl.aio import run

    return run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
