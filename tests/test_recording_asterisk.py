"""Call recording end to end on a REAL (private) Asterisk 22, through the in-process controller
(issue 5 item 4; docs/RECORDING.md).

The site: one Asterisk whose `recording_dir` is this private instance's spool, `recordings:` in a
folder under it (`dir` as Asterisk sees it, `local_dir` the same folder seen from here through the
chroot), cdr_custom CDRs, a store (SQLite), the web API on a free port, and one gateway: a sipp UAS
that answers and talks (a 1000 Hz tone). The flow:

    answer -> record_call start -> play hello (600 Hz) -> record_call pause -> play secret (900 Hz)
    -> record_call resume -> dial the gateway -> hangup

The caller (sipp UAC) talks (400 Hz) from the answer and hangs up itself. While the call talks, a
console pauses and resumes the recording over POST /api/calls/{uuid}/recording.

Checked: the WAV in the dated folder, as long as the call and holding the caller, the prompt and the
far end but not the secret (muted: zeros, so the file keeps the call's timeline); the store row
(path, started/ended, paused_us, source live); the caller's cdr_custom rows carry the path in
`switchctl_recording(uservar)`; with the live row deleted the CDR collector writes it again from
the CDR (source cdr); no channel and no bridge is left.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import math
import shutil
import struct
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import delete

from switchctl import democall
from switchctl.billing.cdr import RECORDING_VAR, parse_ast_custom
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.features.prepaid.cutoff import wall_us
from switchctl.flows import FlowTrace
from switchctl.render.asterisk import (
    CDR_CUSTOM_FIELDS,
    asterisk_sound_files,
    render_asterisk,
)
from switchctl.sitecheck import check_site
from switchctl.store.database import Store
from switchctl.store.recording_models import RecordingLog, call_recordings
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

SITE_NAME = "astrec"
# taken: shared 10000-, deploy 12000-, restart 13000-/14000-, dial 16000-, prepaid 18000-/23000-,
# voicemail 25500-, and 27000-, 28000- by other suites
RTP_RANGE = (29000, 29999)
RATE = 8000
CALLER_HZ, HELLO_HZ, SECRET_HZ, FAR_HZ = 400, 600, 900, 1000
HELLO_S, SECRET_S = 1.0, 1.0
CALLER_TALK_S = 7.0  # the caller's stream from its ACK, then its BYE
API_PAUSE_S = 0.8  # the console's pause while the call talks
FLOW = """\
flow: recorded
numbers: ["7000"]
nodes:
  answer: {type: answer, next: rec}
  rec: {type: record_call, action: start, name: "call-${caller}-${uuid}", next: hello}
  hello: {type: play, prompts: [rec/hello], next: quiet}
  quiet: {type: record_call, action: pause, next: secret}
  secret: {type: play, prompts: [rec/secret], next: again}
  again: {type: record_call, action: resume, next: talk}
  talk: {type: dial, to: [{gateway: far, number: "5001"}], timeout: 10, next: bye, failed: bye}
  bye: {type: hangup}
"""


# --- audio ------------------------------------------------------------------------------------------


def _write_wav(path: Path, seconds: float, hz: int) -> None:
    """8 kHz 16-bit mono, what Asterisk's format_wav plays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / RATE)))
                      for i in range(int(seconds * RATE)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(frames)


def _ulaw(sample: int) -> int:
    """G.711 mu-law of a 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _tone_pcap(path: Path, seconds: float, hz: int) -> float:
    """democall's RTP stream (PCMU, 20 ms packets) with its silence turned into a tone of `hz`
    (a whole number of periods in 20 ms, so every packet carries the same payload)."""
    assert (hz * 160) % RATE == 0, hz
    payload = bytes(_ulaw(int(6000 * math.sin(2 * math.pi * hz * i / RATE))) for i in range(160))
    length = democall.write_dtmf_pcap(path, [(seconds, "")], digit_s=0.0, tail_s=0.0)
    data = path.read_bytes()
    assert data.count(b"\xff" * 160) > 10
    path.write_bytes(data.replace(b"\xff" * 160, payload))
    return length


def _samples(path: Path) -> tuple[int, list[int]]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        rate = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    return rate, [s for (s,) in struct.iter_unpack("<h", frames[: len(frames) // 2 * 2])]


def _tone_share(window: list[int], hz: int, rate: int) -> float:
    """The part of the window's energy at `hz` (Goertzel): about 1 for a pure tone, 1/2 for one of
    two equal tones, about 0 when absent."""
    energy = sum(s * s for s in window)
    if energy == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for sample in window:
        s1, s2 = sample + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return power / (len(window) / 2 * energy)


@dataclasses.dataclass
class Heard:
    seconds: float  # the file's length
    zero_runs: list[float]  # stretches of exact zeros (a muted recording), seconds, longest first
    tones: dict[int, float]  # seconds of 100 ms windows where that tone is clearly present
    audible_s: float  # seconds of windows that are not silence


def _listen(path: Path, freqs: tuple[int, ...]) -> Heard:
    rate, samples = _samples(path)
    runs, run = [], 0
    for s in samples:
        if s == 0:
            run += 1
        else:
            if run:
                runs.append(run / rate)
            run = 0
    if run:
        runs.append(run / rate)
    step = rate // 10
    tones = dict.fromkeys(freqs, 0.0)
    audible = 0.0
    for start in range(0, len(samples) - step + 1, step):
        window = samples[start:start + step]
        if max(abs(s) for s in window) < 300:
            continue
        audible += 0.1
        for hz in freqs:
            if _tone_share(window, hz, rate) > 0.15:
                tones[hz] += 0.1
    return Heard(len(samples) / rate, sorted(runs, reverse=True), tones, audible)


# --- the rig ------------------------------------------------------------------------------------------


def _write_site(folder: Path, env: PrivateAsterisk, far_port: int) -> Path:
    (folder / "dialplans").mkdir(parents=True)
    (folder / "dialplans" / "recorded.yaml").write_text(FLOW)
    _write_wav(folder / "sounds" / "rec" / "hello.wav", HELLO_S, HELLO_HZ)
    _write_wav(folder / "sounds" / "rec" / "secret.wav", SECRET_S, SECRET_HZ)
    ari = env.ari
    recording_dir = f"{env.state}/spool/recording"  # as Asterisk sees it
    lines = [
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        f"    ari: {{host: {ari.host}, port: {ari.port}, user: {ari.user}, password: {ari.password}, app: {ari.app}}}",
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {env.conf_dir}",
        f"    cdr: {{format: custom, path: {env.state_dir / 'log'}}}",
        f"    recording_dir: {recording_dir}",
        "flows: dialplans/",
        "sounds: [sounds/]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        "gateways:",
        f"  - {{name: far, proxy: 127.0.0.1:{far_port}, register: false}}",
        "recordings:",
        f"  dir: {recording_dir}/calls",
        f"  local_dir: {env.root}{recording_dir}/calls",
        'web: {listen: "127.0.0.1:8080"}',  # the test serves it on a free port (see `rig`)
    ]
    (folder / "site.yaml").write_text("\n".join(lines) + "\n")
    return folder / "site.yaml"


@dataclasses.dataclass
class RecAsterisk:
    env: PrivateAsterisk
    tmp: Path
    site_file: Path
    far_log: Path


@pytest.fixture(scope="module")
def rec_asterisk(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecAsterisk]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("astrec")
    env = create_private_asterisk(asterisk_chroot, tag="rec", log_dir=tmp, rtp=RTP_RANGE)
    sounds = env.root / "usr" / "share" / "asterisk" / "sounds" / "switchctl" / SITE_NAME
    far_port = free_udp_port()
    far_log = tmp / "far_messages.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        site_file = _write_site(tmp / "site", env, far_port)
        site = load_site(site_file)
        for rel, content in asterisk_sound_files(site).items():  # what deploy installs
            (sounds / rel).parent.mkdir(parents=True, exist_ok=True)
            (sounds / rel).write_bytes(content)
        env.write_config(render_asterisk(site))
        far_pcap = tmp / "far-talks.pcap"
        _tone_pcap(far_pcap, CALLER_TALK_S, FAR_HZ)
        proc = start_sipp_uas(SIPP_DIR / "rec_uas_answer_talk.xml", far_port, far_log,
                              "-key", "tone_pcap", str(far_pcap))
        env.start()
        wait_for_pjsip_endpoint(env, "far")
        assert proc.poll() is None, "the sipp UAS exited at once"
        yield RecAsterisk(env, tmp, site_file, far_log)
    finally:
        if proc is not None:
            stop_processes([proc])
        env.stop()
        env.remove()
        shutil.rmtree(sounds, ignore_errors=True)


@dataclasses.dataclass
class Rig:
    ast: RecAsterisk
    controller: Controller
    store: Store
    traces: list[tuple[str, FlowTrace | None]]
    recording_dir: str  # recordings `dir`, as Asterisk sees it
    local_dir: Path

    async def channels(self) -> list[str]:
        return [c.name for c in await self.controller.asterisks["ast1"].client.list_channels()]

    async def bridges(self) -> list[str]:
        return [b.id for b in await self.controller.asterisks["ast1"].client.list_bridges()]

    def call(self, number: str) -> asyncio.Task:  # type: ignore[type-arg]
        """A sipp UAC calling `number` that talks (CALLER_HZ) from the answer, then hangs up."""
        stem = self.ast.tmp / f"rec-uac-{time.monotonic_ns()}"
        pcap = stem.with_suffix(".pcap")
        length = _tone_pcap(pcap, CALLER_TALK_S, CALLER_HZ)
        actions = [f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>',
                   # play_pcap_audio does not block: the pause covers the stream
                   f'<pause milliseconds="{int(length * 1000)}"/>']
        text = (SIPP_DIR / "uac_ivr_script_caller_bye.xml").read_text()
        text = text.replace("<!-- @@SCRIPT@@ -->", "\n  ".join(actions)).replace("@@CALLER@@", "5550100")
        path = stem.with_suffix(".xml")
        path.write_text(text)
        sipp_env = dataclasses.replace(env_from_environment(), ari_port=self.ast.env.ari.port,
                                       sip_port=self.ast.env.sip_port)
        return asyncio.create_task(run_sipp(sipp_env, path, number, timeout_s=30))


@pytest_asyncio.fixture
async def rig(rec_asterisk: RecAsterisk, tmp_path: Path) -> AsyncIterator[Rig]:
    rec_asterisk.env.check_alive()
    site = load_site(rec_asterisk.site_file)
    checked = check_site(site)
    assert checked.ok, checked.report()
    assert site.recordings is not None and site.recordings.local_dir is not None
    site = dataclasses.replace(site, web_listen=("127.0.0.1", 0))
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'rec.db'}")
    await store.create_all()
    controller = Controller(site, checked.flows, store=store)
    traces: list[tuple[str, FlowTrace | None]] = []
    controller.on_trace = lambda uuid, trace: traces.append((uuid, trace))
    await controller.start()
    r = Rig(rec_asterisk, controller, store, traces, str(site.recordings.dir), Path(site.recordings.local_dir))
    try:
        await controller.asterisks["ast1"].wait_connected(10)
        yield r
    finally:
        await controller.stop(grace=2)
        await store.engine.dispose()


async def _until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# --- the test -----------------------------------------------------------------------------------------


async def test_a_call_is_recorded_paused_and_kept_with_its_cdr(rig: Rig) -> None:
    recorder = rig.controller.recorder
    assert recorder is not None and rig.controller.web is not None and rig.controller.billing is not None
    called_at_us = wall_us()
    caller = rig.call("7000")

    # -- the flow started the recording, paused it over the secret, resumed it, and dialled
    async def recording_live() -> bool:
        return any((s := recorder.status(u)) and s["state"] == "recording" for u in list(recorder._calls))

    await _until(recording_live, 10, "the flow's recording")
    [uuid] = list(recorder._calls)

    async def bridged() -> bool:
        return bool(await rig.bridges()) and len(await rig.channels()) >= 2

    await _until(bridged, 10, "the dial's bridge")
    assert recorder.status(uuid)["state"] == "recording"  # resumed before the dial

    # -- a console pauses and resumes it while the call talks
    url = f"{rig.controller.web.url}/api/calls/{uuid}/recording"
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(0.8)
        async with http.post(url, json={"action": "pause"}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["state"] == "paused" and body["call"] == uuid
        async with http.post(url, json={"action": "pause"}) as resp:
            assert resp.status == 409, await resp.text()
        await asyncio.sleep(API_PAUSE_S)
        async with http.post(url, json={"action": "resume"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["state"] == "recording"

    # -- the caller hangs up
    result = await asyncio.wait_for(caller, 35)
    assert result.returncode == 0, f"the caller failed:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
    ended_at_us = wall_us()

    async def traced() -> bool:
        return bool(rig.traces)

    await _until(traced, 10, "the flow's end")
    trace_uuid, trace = rig.traces[0]
    assert trace_uuid == uuid and trace is not None
    assert trace.path == ["answer", "rec", "hello", "quiet", "secret", "again", "talk"], trace
    assert trace.result == "caller_hangup", trace
    path = trace.variables["recording_path"]

    # -- the file: in the dated folder, named by the flow's template
    day = dt.datetime.fromtimestamp(called_at_us / 1e6, dt.UTC).strftime("%Y/%m/%d")  # site timezone: UTC
    assert path == f"{rig.recording_dir}/{day}/call-5550100-{uuid}.wav", path
    local = rig.local_dir / path[len(rig.recording_dir) + 1:]

    async def written() -> bool:
        return local.exists() and local.stat().st_size > 44 and recorder.status(uuid) is None

    await _until(written, 5, f"the recording {local}")
    heard = _listen(local, (CALLER_HZ, HELLO_HZ, SECRET_HZ, FAR_HZ))
    call_s = (ended_at_us - called_at_us) / 1e6
    print(f"\nrecording on Asterisk: {heard.seconds:.2f} s (call {call_s:.2f} s), audible {heard.audible_s:.1f} s, "
          f"zero runs {[round(r, 2) for r in heard.zero_runs[:4]]}, tones {heard.tones}")
    # muted, not cut: the file keeps the call's timeline (the recording starts after the answer)
    assert call_s - 2.5 < heard.seconds < call_s + 0.5, (heard.seconds, call_s)
    # the paused stretches are exact zeros: the secret (SECRET_S) and the console's pause
    assert heard.zero_runs and heard.zero_runs[0] >= SECRET_S - 0.2, heard.zero_runs
    assert len(heard.zero_runs) >= 2 and heard.zero_runs[1] >= API_PAUSE_S - 0.3, heard.zero_runs
    paused_s = heard.zero_runs[0] + heard.zero_runs[1]
    # not silence: about the unpaused time is audible, with every party in it but the secret
    assert heard.audible_s > heard.seconds - paused_s - 1.5, (heard.audible_s, heard.seconds, paused_s)
    assert heard.tones[CALLER_HZ] > 2.0, heard.tones  # the caller, all along
    assert heard.tones[HELLO_HZ] > HELLO_S / 2, heard.tones  # the prompt played before the pause
    assert heard.tones[FAR_HZ] > 1.5, heard.tones  # the far end, through the bridge
    assert heard.tones[SECRET_HZ] == 0.0, heard.tones  # played while paused: not in the file

    # -- the store row, written live
    log_ = RecordingLog(rig.store, wall_us)
    [row] = await log_.list(call_uuid=uuid)
    assert (row.switch, row.path, row.source, row.state) == ("ast1", path, "live", "stopped"), row
    assert called_at_us < row.started_us < row.ended_us <= ended_at_us + 5_000_000, row
    assert row.ended_by in ("hangup", "cdr"), row
    # the flow's pause (the secret) and the console's
    assert SECRET_S + API_PAUSE_S - 0.3 < row.paused_us / 1e6 < SECRET_S + API_PAUSE_S + 1.0, row

    listing = f"{rig.controller.web.url}/api/recordings"
    async with aiohttp.ClientSession() as http, http.get(listing, params={"call": uuid}) as resp:
        assert resp.status == 200, await resp.text()  # the console's view of it
        [listed] = (await resp.json())["recordings"]
    assert (listed["path"], listed["source"], listed["live"]) == (path, "live", None), listed

    # -- the caller's cdr_custom rows name the file
    cdr_file = rig.ast.env.state_dir / "log" / "cdr-custom" / "switchctl.csv"

    async def caller_cdr() -> bool:
        return cdr_file.exists() and uuid in cdr_file.read_text(errors="replace")

    await _until(caller_cdr, 5, "the caller's CDR")
    lines = [line for line in cdr_file.read_text().splitlines() if line.strip()]
    mine = [cdr for cdr in (parse_ast_custom(line, switch="ast1") for line in lines) if cdr.call_uuid == uuid]
    print("caller CDRs:", [(c.leg, c.answer_us, c.end_us, c.recording) for c in mine])
    assert mine and all(cdr.recording == path for cdr in mine), [(c.call_uuid, c.recording) for c in mine]
    column = CDR_CUSTOM_FIELDS.index(f"{RECORDING_VAR}(uservar)")  # the field itself, as Asterisk wrote it
    cells = [next(csv.reader([line])) for line in lines]
    assert [row_[column] for row_ in cells if row_[0] == uuid] == [path] * len(mine), cells
    cdr_end_us = max(cdr.end_us for cdr in mine)

    # -- a controller killed mid-call never wrote the row: the CDR collector writes it from the CDR
    collector = rig.controller.billing.collector
    await collector.catch_up()  # whatever the background round has not read yet
    # the live row ended with the call: it takes the CDR's end (the switch's clock), keeps the rest
    [completed] = await log_.list(call_uuid=uuid)
    assert (completed.source, completed.ended_by, completed.ended_us) == ("live", "cdr", cdr_end_us), completed
    assert (completed.started_us, completed.paused_us) == (row.started_us, row.paused_us), completed
    async with rig.store.write() as conn:
        await conn.execute(delete(call_recordings).where(call_recordings.c.call_uuid == uuid))
    assert await log_.list(call_uuid=uuid) == []
    await collector.cdrs.reset_file(cdr_file)
    report = await collector.catch_up()
    assert report.recordings == 1, report
    [again] = await log_.list(call_uuid=uuid)
    assert (again.path, again.source, again.state, again.ended_by) == (path, "cdr", "stopped", "cdr"), again
    assert again.ended_us == cdr_end_us and again.started_us <= row.started_us, again
    assert again.paused_us == 0  # the CDR knows no pauses

    # -- nothing left on the switch
    async def empty() -> bool:
        return not await rig.channels() and not await rig.bridges()

    await _until(empty, 4, "no channels and no bridges")
    far = rig.ast.far_log.read_text(errors="replace")
    assert "BYE sip:" in far  # the far end got Asterisk's BYE when the caller left
