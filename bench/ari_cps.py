"""Calls per second on a real Asterisk 22: switchctl's controller against a minimal aiohttp ARI app.

The call: sipp (bench/sipp/uac_wait_bye.xml) dials in; the app answers, plays a 2 s 440 Hz tone and
hangs up; sipp waits for that BYE. Two drivers, each in its own child process on its own Stasis app
of the same private Asterisk, measured alternately at every rate step:

- (b) baseline: a minimal aiohttp ARI app written here: one WebSocket, and on StasisStart answer,
  play `tone:!440/2000` (what switchctl sends for the same tone), stop it after 2 s, hang up.
- (a) switchctl: `Controller` on a temporary site of kind asterisk whose only flow is
  answer -> play `tone_stream://%(2000,0,440)` -> hangup, exactly as `switchctl run` serves calls.

Per step: calls placed, failed (sipp's failed calls + the driver's own failures), achieved calls/s
(StasisStarts per second the driver saw), the driver's CPU per call (getrusage in its process) and
Asterisk's, WebSocket events the driver read per call, ChannelDestroyed events per switchctl call
(1.00 proves the one `channel:` subscription delivers them), and the OTHER driver's CPU during the
step per call (switchctl, subscribed to every channel, also reads the baseline's calls' events).
A series stops at its first step that is not sustained. Everything is on 127.0.0.1: a PRIVATE
Asterisk (the project's chroot, tools/asterisk-setup.sh, but its own config folder, state folder,
ARI/SIP ports and a wide RTP range) so the shared Asterisk on 8088/5060 is never touched. Needs root
(chroot), sipp on the host. Each step is <= 2,000 calls; the whole run stops starting steps after
--budget seconds (default 540).

    sudo .venv/bin/python bench/ari_cps.py                    # rates 50,100,150,200,225,...,400
    sudo .venv/bin/python bench/ari_cps.py --rates 100 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# uvloop when installed, as `switchctl run` uses; both drivers run on it
from switchctl.aio import run

CHROOT = Path(os.environ.get("SWITCHCTL_ASTERISK_ROOT", "/var/lib/switchctl/asterisk")) / "root"
UAC = ROOT / "bench" / "sipp" / "uac_wait_bye.xml"
ARI_USER = ARI_PASSWORD = "switchctl"
SWITCHCTL_APP, BASELINE_APP = "switchctl", "baseline"
SWITCHCTL_NUMBER, BASELINE_NUMBER = "9000", "7000"
TONE_S = 2.0
BASELINE_TONE = "tone:!440/2000"  # what switchctl's asterisk_media sends for tone_stream://%(2000,0,440)
RTP_RANGE = (20000, 29999)  # 5,000 calls' worth of RTP+RTCP pairs; below the kernel's ephemeral range
MAX_CALLS_PER_STEP = 2000
# A step is sustained when no call failed and the calls really came at (nearly) the offered rate:
# on 2 cores a starved sipp/Asterisk places calls late rather than failing them.
SUSTAINED_SHARE = 0.95
# --disallow: event types switchctl's app filters out on top of the backend's UNUSED_EVENTS (an A/B
# knob for measuring what a type costs; set before the drivers fork, so they inherit it).
EXTRA_DISALLOWED: tuple[str, ...] = ()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_pair() -> int:
    """A UDP port p with p+2 free too (sipp binds its audio port and audio+2 for video)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        if port % 2 or port > 65000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port + 2))
            return port
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair on 127.0.0.1 for sipp's media")


# -- the private Asterisk ------------------------------------------------------------------------


MODULES = (
    "res_sorcery_config", "res_sorcery_memory", "res_sorcery_astdb", "res_timing_timerfd",
    "res_pjproject", "res_pjsip", "res_pjsip_session", "res_pjsip_pubsub",
    "res_pjsip_authenticator_digest", "chan_pjsip", "res_pjsip_endpoint_identifier_ip",
    "res_pjsip_sdp_rtp", "res_pjsip_caller_id", "res_rtp_asterisk", "pbx_config", "app_stasis",
    "func_channel", "func_timeout", "codec_ulaw", "codec_alaw", "bridge_simple", "bridge_native_rtp",
    "bridge_softmix", "bridge_holding", "chan_bridge_media", "res_http_websocket",
    "res_websocket_client", "res_stasis", "res_stasis_answer", "res_stasis_playback",
    "res_stasis_recording", "res_stasis_snoop", "res_stasis_device_state", "res_ari", "res_ari_model",
    "res_ari_applications", "res_ari_asterisk", "res_ari_bridges", "res_ari_channels",
    "res_ari_device_states", "res_ari_endpoints", "res_ari_events", "res_ari_playbacks",
    "res_ari_recordings", "res_ari_sounds",
)


@dataclass
class PrivateAsterisk:
    """An Asterisk in the project's chroot with its own config and state folders and ports.
    Started and stopped by its PID (ours); nothing of the shared instance is touched."""

    name: str
    ari_port: int
    sip_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def etc(self) -> str:
        return f"/etc/asterisk-{self.name}"

    @property
    def state(self) -> str:
        return f"/var/tmp/{self.name}"

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.ari_port}/ari"

    def write_config(self) -> None:
        etc, state = CHROOT / self.etc.lstrip("/"), CHROOT / self.state.lstrip("/")
        shutil.rmtree(etc, ignore_errors=True)
        etc.mkdir(parents=True)
        for sub in ("run", "log", "spool", "lib", "cache"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        stock = CHROOT / "etc" / "asterisk.dist" / "indications.conf"
        if stock.exists():
            shutil.copyfile(stock, etc / "indications.conf")
        s = self.state
        files = {
            "asterisk.conf": f"""\
                [directories]
                astcachedir => {s}/cache
                astetcdir => {self.etc}
                astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
                astvarlibdir => /var/lib/asterisk
                astdbdir => {s}/lib
                astkeydir => {s}/lib
                astdatadir => /usr/share/asterisk
                astagidir => /usr/share/asterisk/agi-bin
                astspooldir => {s}/spool
                astrundir => {s}/run
                astlogdir => {s}/log
                astsbindir => /usr/sbin
                [options]
                maxfiles = 20000
                """,
            "modules.conf": "[modules]\nautoload = no\n" + "".join(f"load => {m}.so\n" for m in MODULES),
            # sessionlimit: both drivers keep up to 100 pooled REST connections (aiohttp's default)
            "http.conf": f"""\
                [general]
                enabled = yes
                bindaddr = 127.0.0.1
                bindport = {self.ari_port}
                sessionlimit = 1000
                """,
            "ari.conf": f"""\
                [general]
                enabled = yes
                pretty = no
                [{ARI_USER}]
                type = user
                read_only = no
                password = {ARI_PASSWORD}
                password_format = plain
                """,
            "pjsip.conf": f"""\
                [global]
                type = global
                endpoint_identifier_order = ip
                [transport-udp]
                type = transport
                protocol = udp
                bind = 127.0.0.1:{self.sip_port}
                [bench]
                type = endpoint
                transport = transport-udp
                context = bench
                disallow = all
                allow = ulaw
                direct_media = no
                rtp_symmetric = yes
                media_address = 127.0.0.1
                bind_rtp_to_media_address = yes
                [bench-identify]
                type = identify
                endpoint = bench
                match = 127.0.0.1
                """,
            "extensions.conf": f"""\
                [general]
                static = yes
                writeprotect = yes
                [bench]
                exten => {SWITCHCTL_NUMBER},1,Stasis({SWITCHCTL_APP},inbound,${{EXTEN}})
                 same => n,Hangup()
                exten => {BASELINE_NUMBER},1,Stasis({BASELINE_APP})
                 same => n,Hangup()
                """,
            "rtp.conf": f"[general]\nrtpstart = {RTP_RANGE[0]}\nrtpend = {RTP_RANGE[1]}\nicesupport = no\n",
            "logger.conf": "[general]\n[logfiles]\nconsole => error\nmessages.log => notice,warning,error\n",
            "cdr.conf": "[general]\nenable = no\n",
            "cel.conf": "[general]\nenable = no\n",
            "manager.conf": "[general]\nenabled = no\n",
            "features.conf": "[general]\n",
            "udptl.conf": "[general]\n",
            "ccss.conf": "[general]\n",
            "acl.conf": "; none\n",
            "websocket_client.conf": "",
            "pjproject.conf": "[startup]\n\n[log_mappings]\ntype = log_mappings\n",
        }
        for rel, text in files.items():
            (etc / rel).write_text(textwrap.dedent(text))

    def start(self, timeout: float = 30.0) -> None:
        if not (CHROOT / "usr" / "sbin" / "asterisk").exists():
            raise SystemExit(f"no Asterisk in {CHROOT}: run `tools/asterisk-setup.sh setup` first (as root)")
        self.write_config()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["chroot", str(CHROOT), "/usr/sbin/asterisk", "-C", f"{self.etc}/asterisk.conf", "-f", "-n"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"private Asterisk exited at start: {self.log.read_text(errors='replace')[-1500:]}")
            try:
                self.ari_get("asterisk/info")
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise SystemExit(f"private Asterisk's ARI did not answer on {self.ari_port} in {timeout:g} s") from None
                time.sleep(0.1)

    def ari_get(self, path: str) -> object:
        token = base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()
        req = urllib.request.Request(f"{self.ari_url}/{path}", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def cpu_seconds(self) -> float:
        """Asterisk's user+system CPU time so far (from /proc/<pid>/stat)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(CHROOT / self.etc.lstrip("/"), ignore_errors=True)
        shutil.rmtree(CHROOT / self.state.lstrip("/"), ignore_errors=True)


# -- the drivers (child processes) ---------------------------------------------------------------


def write_site(folder: Path, ast: PrivateAsterisk) -> Path:
    """A temporary site of kind asterisk pointing at the private Asterisk, with the one tone flow."""
    (folder / "dialplans").mkdir(parents=True, exist_ok=True)
    (folder / "dialplans" / "tone.yaml").write_text(textwrap.dedent(f"""\
        # bench/ari_cps.py: answer, a 2 s tone, hang up
        flow: tone
        numbers: ["{SWITCHCTL_NUMBER}"]
        start: answer
        nodes:
          answer:
            type: answer
            next: tone
          tone:
            type: play
            prompts: ["tone_stream://%(2000,0,440)"]
            next: bye
          bye:
            type: hangup
        """))
    site = folder / "site.yaml"
    site.write_text(textwrap.dedent(f"""\
        site: aricps
        switches:
          - name: ast
            kind: asterisk
            ari: {{host: 127.0.0.1, port: {ast.ari_port}, user: {ARI_USER}, password: {ARI_PASSWORD}, app: {SWITCHCTL_APP}}}
            sip: {{ip: 127.0.0.1, port: {ast.sip_port}}}
        flows: dialplans/
        database: sqlite+aiosqlite:///{folder / 'switchctl.db'}
        """))
    return site


def driver_process(pipe, kind: str, ari_url: str, site_path: str) -> None:
    profile_to = os.environ.get("ARI_CPS_PROFILE")
    if profile_to:  # ARI_CPS_PROFILE=out profiles both drivers into out.switchctl.prof, out.baseline.prof
        import cProfile

        cProfile.runctx("run(_driver_main(pipe, kind, ari_url, site_path))", globals(), locals(),
                        f"{profile_to}.{kind}.prof")
        return
    run(_driver_main(pipe, kind, ari_url, site_path))


@dataclass
class Counters:
    started: list[float] = field(default_factory=list)  # monotonic time of each StasisStart
    finished: int = 0
    failed: int = 0
    events: int = 0  # WebSocket frames the driver read (its own calls' and, subscribed, others')
    destroyed: int = 0  # ChannelDestroyed events of the driver's own calls


async def _driver_main(pipe, kind: str, ari_url: str, site_path: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    counters = Counters()
    stop_driver = await (_start_switchctl(site_path, counters) if kind == "switchctl"
                         else _start_baseline(ari_url, counters))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_command() -> None:
        command = pipe.recv()
        if command == "snapshot":
            pipe.send({"cpu": cpu_seconds(), "started": list(counters.started),
                       "finished": counters.finished, "failed": counters.failed,
                       "events": counters.events, "destroyed": counters.destroyed})
            counters.started.clear()
        elif command == "stop":
            done.set()

    loop.add_reader(pipe.fileno(), on_command)
    pipe.send("ready")
    await done.wait()
    await stop_driver()


async def _start_switchctl(site_path: str, counters: Counters):
    from switchctl.config.site import load_site
    from switchctl.controller import Controller
    from switchctl.sitecheck import check_site

    site = load_site(site_path)
    report = check_site(site)
    if report.errors:
        raise SystemExit(f"bench site does not check: {report.errors}")

    class CountingController(Controller):
        async def handle_asterisk_call(self, call, switch_name: str) -> None:
            counters.started.append(time.monotonic())
            await super().handle_asterisk_call(call, switch_name)

    if EXTRA_DISALLOWED:
        from switchctl.switch import asterisk

        asterisk.UNUSED_EVENTS = (*asterisk.UNUSED_EVENTS, *EXTRA_DISALLOWED)
    controller = CountingController(site, report.flows)
    await controller.start()
    switch = controller.asterisks["ast"]
    await switch.wait_connected(10)
    ours: set[str] = set()

    def count(event) -> None:
        # Proof on the real Asterisk that the one `channel:` subscription delivers every call's
        # ChannelDestroyed (without it an inbound channel's last event is StasisEnd).
        counters.events += 1
        if event.type == "StasisStart":
            ours.add(event.channel.id)
        elif event.type == "ChannelDestroyed" and event.channel.id in ours:
            ours.discard(event.channel.id)
            counters.destroyed += 1

    switch.stream.add_handler(count)

    # Controller.stats is the controller's own view: finished/failed calls.
    async def stop() -> None:
        await controller.stop(grace=2)

    def sync() -> None:
        counters.finished = controller.stats.calls_finished
        counters.failed = controller.stats.calls_failed

    _sync_every(sync)
    return stop


def _sync_every(sync) -> None:
    loop = asyncio.get_running_loop()

    def tick() -> None:
        sync()
        loop.call_later(0.1, tick)

    tick()


async def _start_baseline(ari_url: str, counters: Counters):
    """The minimal ARI app: what a hand-written aiohttp client does for this call, nothing more."""
    import aiohttp

    token = base64.b64encode(f"{ARI_USER}:{ARI_PASSWORD}".encode()).decode()
    http = aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"})
    ws = await http.ws_connect(f"{ari_url.replace('http', 'ws', 1)}/events?app={BASELINE_APP}")
    tasks: set[asyncio.Task[None]] = set()

    async def call(channel_id: str) -> None:
        async def rest(method: str, path: str) -> None:
            async with http.request(method, f"{ari_url}/{path}") as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")

        try:
            await rest("POST", f"channels/{channel_id}/answer")
            await rest("POST", f"channels/{channel_id}/play/pb-{channel_id}?media={BASELINE_TONE}")
            await asyncio.sleep(TONE_S)
            await rest("DELETE", f"playbacks/pb-{channel_id}")
            await rest("DELETE", f"channels/{channel_id}")
            counters.finished += 1
        except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
            counters.failed += 1
            print(f"baseline: call {channel_id} failed: {exc}", file=sys.stderr)

    async def read_events() -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            counters.events += 1
            event = msg.json()
            if event.get("type") == "StasisStart":
                counters.started.append(time.monotonic())
                task = asyncio.create_task(call(event["channel"]["id"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    reader = asyncio.create_task(read_events())

    async def stop() -> None:
        reader.cancel()
        await ws.close()
        await http.close()

    return stop


def start_driver(kind: str, ast: PrivateAsterisk, site: Path):
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=driver_process, args=(child, kind, ast.ari_url, str(site)), daemon=True)
    proc.start()
    if not parent.poll(20) or parent.recv() != "ready":
        raise SystemExit(f"the {kind} driver did not connect to ARI within 20 s")
    return proc, parent


# -- the load (this process) ---------------------------------------------------------------------


@dataclass
class Row:
    who: str
    rate: float
    calls: int
    placed: int = 0
    ok: int = 0
    failed: int = 0
    achieved_cps: float = 0.0
    cpu_ms_per_call: float = float("nan")
    asterisk_ms_per_call: float = float("nan")
    events_per_call: float = float("nan")
    destroyed_per_call: float = float("nan")  # switchctl only: ChannelDestroyed of its calls
    other_ms_per_call: float = float("nan")  # the OTHER driver's CPU during this step, per call
    wall_s: float = 0.0
    note: str = ""

    @property
    def sustained(self) -> bool:
        return self.failed == 0 and self.calls > 0 and self.achieved_cps >= SUSTAINED_SHARE * self.rate


def sipp_counts(stat_file: Path) -> tuple[int, int, int]:
    """(calls created, successful, failed) from the last line of sipp's -trace_stat CSV."""
    if not stat_file.exists():
        return 0, 0, 0
    lines = [ln for ln in stat_file.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0, 0, 0
    header, last = lines[0].split(";"), lines[-1].split(";")
    col = {name: i for i, name in enumerate(header)}

    def value(name: str) -> int:
        return int(last[col[name]]) if name in col and col[name] < len(last) and last[col[name]].isdigit() else 0

    return value("OutgoingCall(C)") or value("TotalCallCreated"), value("SuccessfulCall(C)"), value("FailedCall(C)")


async def run_step(who: str, number: str, rate: float, calls: int, pipe, ast: PrivateAsterisk,
                   workdir: Path, other=None) -> Row:
    row = Row(who, rate, calls)
    stat = workdir / f"{who}-{rate:g}.csv"
    errors = workdir / f"{who}-{rate:g}-errors.log"
    stat.unlink(missing_ok=True)
    limit = max(50, int(rate * 6))  # concurrent calls; a call lasts ~2.1 s when all is well
    step_timeout = calls / rate + 25
    cmd = ["sipp", "-sf", str(UAC), "-s", number, "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
           "-mi", "127.0.0.1", "-mp", str(free_udp_pair()), "-ci", "127.0.0.1",
           "-cp", str(free_port(socket.SOCK_DGRAM)), "-r", f"{rate:g}", "-m", str(calls), "-l", str(limit),
           "-nostdin", "-timeout", f"{int(step_timeout)}s", "-timeout_error",
           "-trace_stat", "-stf", str(stat), "-fd", "1", "-trace_err", "-error_file", str(errors),
           f"127.0.0.1:{ast.sip_port}"]
    pipe.send("snapshot")
    before = pipe.recv()
    other_before = _snapshot(other)
    ast_before = ast.cpu_seconds()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL, cwd=workdir)
    try:
        await asyncio.wait_for(proc.wait(), step_timeout + 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        row.note = "sipp overran its time bound; killed"
    row.wall_s = time.monotonic() - started
    # the driver's last DELETEs return just after sipp's last 200 OK; let them land
    await _wait_no_channels(ast, 10.0)
    await asyncio.sleep(0.3)
    pipe.send("snapshot")
    after = pipe.recv()
    other_after = _snapshot(other)
    ast_cpu = ast.cpu_seconds() - ast_before
    row.placed, row.ok, sipp_failed = sipp_counts(stat)
    driver_failed = after["failed"] - before["failed"]
    starts = after["started"]
    row.failed = sipp_failed + driver_failed + max(0, calls - row.ok - sipp_failed)
    if len(starts) >= 2 and starts[-1] > starts[0]:
        row.achieved_cps = (len(starts) - 1) / (starts[-1] - starts[0])
    handled = max(len(starts), 1)
    row.cpu_ms_per_call = 1000 * (after["cpu"] - before["cpu"]) / handled
    row.asterisk_ms_per_call = 1000 * ast_cpu / handled
    row.events_per_call = (after["events"] - before["events"]) / handled
    if who == "switchctl":
        row.destroyed_per_call = (after["destroyed"] - before["destroyed"]) / handled
    if other_before and other_after:
        row.other_ms_per_call = 1000 * (other_after["cpu"] - other_before["cpu"]) / handled
    if sipp_failed and not row.note:
        row.note = f"sipp: {sipp_failed} failed (see {errors})"
    if driver_failed:
        row.note = (row.note + "; " if row.note else "") + f"driver: {driver_failed} failed"
    if not row.failed and not row.sustained:
        row.note = (row.note + "; " if row.note else "") + "calls came late: rate not sustained"
    return row


def _snapshot(pipe) -> dict | None:
    if pipe is None:
        return None
    pipe.send("snapshot")
    return pipe.recv()


async def _wait_no_channels(ast: PrivateAsterisk, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        channels = await asyncio.to_thread(ast.ari_get, "channels")
        if not channels:
            return
        await asyncio.sleep(0.2)


async def main_async(args, ast: PrivateAsterisk, drivers: dict, workdir: Path) -> list[Row]:
    began = time.monotonic()
    rows: list[Row] = []
    numbers = {"baseline": BASELINE_NUMBER, "switchctl": SWITCHCTL_NUMBER}
    for who in ("baseline", "switchctl"):  # warm up both (connections, imports, caches)
        await run_step(who, numbers[who], 20, 20, drivers[who], ast, workdir)
    alive = {"baseline": True, "switchctl": True}
    for rate in args.rates:
        calls = min(MAX_CALLS_PER_STEP, max(20, int(rate * args.seconds)))
        for who in ("baseline", "switchctl"):  # (b) then (a) at each step
            if not alive[who]:
                continue
            if time.monotonic() - began + calls / rate + 10 > args.budget:
                print(f"ari_cps: time budget ({args.budget:g} s) reached; {who} at {rate:g} calls/s skipped")
                alive[who] = False
                continue
            other = drivers["switchctl" if who == "baseline" else "baseline"]
            row = await run_step(who, numbers[who], rate, calls, drivers[who], ast, workdir, other)
            rows.append(row)
            print(f"  {who:<9} {rate:>5g}/s: {row.ok}/{calls} ok, {row.failed} failed, "
                  f"{row.achieved_cps:.1f} cps, {row.cpu_ms_per_call:.2f} ms CPU/call, "
                  f"{row.events_per_call:.1f} events/call {row.note}", flush=True)
            if not row.sustained:
                alive[who] = False
        if not any(alive.values()):
            break
    return rows


def report(rows: list[Row], args, total_s: float) -> None:
    print(f"\nari_cps: Asterisk 22 (private, chroot), sipp UAC, call = answer + 2 s tone + hangup; "
          f"{args.seconds:g} s of calls per step (<= {MAX_CALLS_PER_STEP}); run took {total_s:.0f} s")
    print(f"{'who':<10} {'rate':>5} {'calls':>6} {'ok':>6} {'failed':>6} {'achieved cps':>12} "
          f"{'CPU ms/call':>11} {'Asterisk ms/call':>16} {'events/call':>11} {'destroyed/call':>14} "
          f"{'other driver ms/call':>20}  sustained")
    for row in rows:
        destroyed = "-" if row.destroyed_per_call != row.destroyed_per_call else f"{row.destroyed_per_call:.2f}"
        print(f"{row.who:<10} {row.rate:>5g} {row.calls:>6} {row.ok:>6} {row.failed:>6} {row.achieved_cps:>12.1f} "
              f"{row.cpu_ms_per_call:>11.2f} {row.asterisk_ms_per_call:>16.2f} {row.events_per_call:>11.1f} "
              f"{destroyed:>14} {row.other_ms_per_call:>20.2f}  {'yes' if row.sustained else 'no'}")
    by = {(r.who, r.rate): r for r in rows}
    for rate in args.rates:
        base, ours = by.get(("baseline", rate)), by.get(("switchctl", rate))
        if base and ours:
            print(f"  at {rate:g}/s: switchctl/baseline achieved cps {ours.achieved_cps / base.achieved_cps:.2f}x, "
                  f"CPU per call {ours.cpu_ms_per_call / base.cpu_ms_per_call:.2f}x")
    best = {}
    for who in ("baseline", "switchctl"):
        good = [r.rate for r in rows if r.who == who and r.sustained]
        best[who] = max(good) if good else 0.0
        print(f"  highest sustained rate (0 failures, >= {SUSTAINED_SHARE:.0%} of it achieved), {who}: "
              f"{best[who]:g} calls/s")
    if best["baseline"]:
        print(f"  switchctl / baseline, highest sustained rate: {best['switchctl'] / best['baseline']:.2f}x "
              f"(target >= 0.9x)")
    top = [(by.get(("baseline", r)), by.get(("switchctl", r))) for r in args.rates]
    shared = [(b, o) for b, o in top if b and o and b.sustained and o.sustained]
    if shared:
        b, o = shared[-1]
        print(f"  CPU per call at {b.rate:g}/s, the highest rate both passed: "
              f"{o.cpu_ms_per_call:.2f} / {b.cpu_ms_per_call:.2f} ms = {o.cpu_ms_per_call / b.cpu_ms_per_call:.2f}x "
              f"(target <= 1.5x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="50,100,150,200,225,250,300,350,400", help="calls/s steps, increasing")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds of calls per step (calls = rate x seconds, at most 2,000)")
    parser.add_argument("--budget", type=float, default=540.0, help="no step starts after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (sipp stats, Asterisk log)")
    parser.add_argument("--disallow", default="", help="comma-separated event types switchctl's app also filters "
                        "out (A/B measurement, e.g. ChannelVarset; changes what the backend sees)")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    global EXTRA_DISALLOWED
    EXTRA_DISALLOWED = tuple(t for t in args.disallow.split(",") if t)
    if os.geteuid() != 0:
        parser.error("needs root: the private Asterisk runs in the project's chroot")
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed (tools/asterisk-setup.sh setup installs sip-tester)")

    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ari_cps-"))
    ast = PrivateAsterisk(f"switchctl-aricps-{os.getpid()}", free_port(socket.SOCK_STREAM),
                          free_port(socket.SOCK_DGRAM), workdir / "asterisk.out")
    drivers: dict = {}
    procs = []
    try:
        ast.start()
        site = write_site(workdir / "site", ast)
        for kind in ("baseline", "switchctl"):
            proc, pipe = start_driver(kind, ast, site)
            procs.append((proc, pipe))
            drivers[kind] = pipe
        print(f"ari_cps: private Asterisk pid {ast.proc.pid} ARI {ast.ari_port} SIP {ast.sip_port} "
              f"RTP {RTP_RANGE[0]}-{RTP_RANGE[1]}; work folder {workdir}", flush=True)
        rows = asyncio.run(main_async(args, ast, drivers, workdir))
        report(rows, args, time.monotonic() - began)
    finally:
        for proc, pipe in procs:
            try:
                pipe.send("stop")
            except OSError:
                pass
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        ast.stop()
        if args.keep:
            print(f"ari_cps: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
