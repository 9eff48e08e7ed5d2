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

    .venv/bin/python bench/transfer.py                        # 100 transfers per mode and side, 4 at once
    .venv/bin/python bench/transfer.py --calls 6 --json out.json

The FreeSWITCH here is the simulator (switchctl.sim) in the bench process; the controller (the real
`Controller`, as `switchctl run` serves calls, with the site's `transfer:` section) runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_CALLS = 500
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
class SimRig:
    client: Any  # InboundClient on the simulator
    switch_events: SwitchEvents
    controller_events: ControllerEvents
    http: Any  # aiohttp.ClientSession
    base: str  # the controller's web API

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
        await self.conv_state(trial, "talking")
        await asyncio.sleep(SETTLE)
        conv = f"/api/conversations/{trial.leg_uuid}"
        if trial.mode == "blind":
            trial.requested_us = time.time_ns() // 1000
            await self.post(f"{conv}/transfer", {"mode": "blind", "to": OURS_TARGET})
        else:
            await self.post(f"{conv}/transfer", {"mode": "attended", "to": OURS_TARGET})
            await self.conv_state(trial, "consulting")
            await asyncio.sleep(SETTLE)
            trial.requested_us = time.time_ns() // 1000
            await self.post(f"{conv}/complete")
        completed = await self.conv_state(trial, "completed")
        trial.elapsed_ms = completed.get("elapsed_ms")
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


# -- running and reporting ------------------------------------------------------------------------------------------


async def run_trial(rig: SimRig, trial: Trial, gate: asyncio.Semaphore) -> None:
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
    print(f"transfer: {args.calls} transfers per mode and side, {args.concurrency} at once; took {took:.0f} s; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("latency = the switch's timestamp of the caller bridged with the target − wall clock at the request")
    print(f"{'switch':<6} {'mode':<9} {'who':<5} {'calls':>5} {'ok':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'min ms':>8}   {'ordered (elapsed_ms) p50/p99/max':>34}")
    for row in rows:
        figures = ("".join(f"{row[k]:>9.2f}" for k in ("p50_ms", "p99_ms", "max_ms", "min_ms"))
                   if "p50_ms" in row else "  (nothing measured)")
        ordered = (f"{row['elapsed_p50_ms']:.2f} / {row['elapsed_p99_ms']:.2f} / {row['elapsed_max_ms']:.2f}"
                   if "elapsed_p50_ms" in row else "-")
        print(f"{row['switch']:<6} {row['mode']:<9} {row['who']:<5} {row['calls']:>5} {row['measured']:>4}{figures}"
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
            rig = SimRig(client, switch_events, controller_events, http, base)
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
    trials, left_behind = await run_sim(args, work / "sim")
    rows = summarize(trials)
    took = time.monotonic() - started
    print_report(rows, args, took)
    print(f"  channels left on the switch after the run: {len(left_behind)} {left_behind[:5]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": rows, "ratios": ratios(rows), "took_s": took, "load": os.getloadavg(), "left_behind": left_behind,
            "trials": [asdict(t) | {"latency_us": t.latency_us} for t in trials]}, indent=1))
    return 0 if all(row["measured"] == row["calls"] for row in rows) and not left_behind else 1


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-controller":
        return serve_controller(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help=f"transfers per mode and side (<= {MAX_CALLS})")
    parser.add_argument("--concurrency", type=int, default=4, help=f"trials at once (<= {MAX_CONCURRENT})")
    parser.add_argument("--modes", default="blind,attended", help="blind, attended or both")
    parser.add_argument("--workdir", help="site and flows (default: a new temporary folder)")
    parser.add_argument("--json", help="also write the rows and every trial as JSON here")
    args = parser.parse_args()
    if not 1 <= args.calls <= MAX_CALLS:
        parser.error(f"--calls must be 1..{MAX_CALLS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENT:
        parser.error(f"--concurrency must be 1..{MAX_CONCURRENT}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("blind", "attended") for m in args.modes):
        parser.error("--modes: blind, attended or blind,attended")
    from switchctl.aio import run

    return run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
