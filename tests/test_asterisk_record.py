"""Recording on Asterisk (switch/asterisk_record.py): the pure parts fast, the real behaviour on a *private*
Asterisk (the dial suite's rig: tests/test_asterisk_dial.py) with sipp callers sending RFC 2833 '#'."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import wave
from pathlib import Path

import pytest

from switchctl import democall
from switchctl.ari.models import LiveRecording, parse_event
from switchctl.switch.asterisk import AsteriskCall, _channel_id
from switchctl.switch.asterisk_record import (
    RECORDING_DIR,
    record_reason,
    recording_name,
    terminate_on,
)
from switchctl.switch.call import CallError, CallGone, DialOutcome, DialSpec, RecordSpec
from tests.asterisk_fixture import SIPP_DIR, env_from_environment, run_sipp
from tests.private_asterisk import asterisk_chroot  # noqa: F401  (fixture)
from tests.test_asterisk_dial import Direct, dial_rig, direct  # noqa: F401  (fixtures)

# ------------------------------------------------------------------------------------------ fast


def test_recording_names_and_paths():
    assert recording_name("vm/1001.wav") == ("vm/1001", "wav", f"{RECORDING_DIR}/vm/1001.wav")
    assert recording_name(f"{RECORDING_DIR}/x.gsm") == ("x", "gsm", f"{RECORDING_DIR}/x.gsm")
    assert recording_name("plain") == ("plain", "wav", f"{RECORDING_DIR}/plain.wav")
    assert recording_name("/srv/spool/recording/a.wav", "/srv/spool/recording/")[0] == "a"
    for bad in ("/tmp/x.wav", "../x.wav", "a b.wav", "x.mp3", ""):
        with pytest.raises(CallError):
            recording_name(bad)


def test_terminate_on_takes_one_key_any_or_none():
    assert [terminate_on(t) for t in ("#", "", "none", "#*")] == ["#", "none", "none", "any"]
    with pytest.raises(CallError):
        terminate_on("x")


def test_record_reason():
    spec = RecordSpec("x.wav", max_seconds=20, silence_seconds=3)
    done = LiveRecording("x", "wav", "done", "channel:1", duration=4)
    assert record_reason(done, hung_up=False, terminator="#", spec=spec) == "terminator"
    assert record_reason(done, hung_up=True, terminator=None, spec=spec) == "hangup"
    assert record_reason(done, hung_up=False, terminator=None, spec=spec) == "silence"
    long = LiveRecording("x", "wav", "done", "channel:1", duration=20)
    assert record_reason(long, hung_up=False, terminator=None, spec=spec) == "max_time"
    assert record_reason(done, hung_up=False, terminator=None,
                         spec=RecordSpec("x.wav", max_seconds=20, silence_seconds=0)) == "max_time"


async def test_a_record_refused_until_the_snoop_is_in_stasis_is_retried():
    from switchctl.ari.errors import AriConflict
    from switchctl.switch.asterisk_record import _record_once_in_stasis

    class Client:
        def __init__(self, refusals: int, message: str = "Channel not in Stasis application") -> None:
            self.refusals, self.message, self.posts = refusals, message, 0

        async def record(self, channel_id: str, name: str, **kw: object) -> None:
            self.posts += 1
            if self.posts <= self.refusals:
                raise AriConflict("POST", f"/channels/{channel_id}/record", 409, self.message)

    class Call:
        def __init__(self, client: Client) -> None:
            self.client = client

    racing = Client(refusals=2)
    await _record_once_in_stasis(Call(racing), "snoop-1", "calls/x", "wav")  # type: ignore[arg-type]
    assert racing.posts == 3
    other = Client(refusals=1, message="Recording with the same name exists")
    with pytest.raises(AriConflict):  # any other conflict is not waited out
        await _record_once_in_stasis(Call(other), "snoop-1", "calls/x", "wav")  # type: ignore[arg-type]
    assert other.posts == 1


def test_recording_events_route_to_their_channel_only():
    # captured frames (05_recording a / b): a channel recording goes to its call, a bridge's to none
    channel = parse_event({"type": "RecordingFinished", "timestamp": "2026-11-25T19:03:16.983+0000",
                           "recording": {"name": "cap5-terminate", "format": "wav", "state": "done",
                                         "target_uri": "channel:1795633391.104", "duration": 4},
                           "asterisk_id": "02:fc:00:00:00:01", "application": "demo"})
    bridge = parse_event({"type": "RecordingStarted", "timestamp": "2026-11-25T19:03:51.000+0000",
                          "recording": {"name": "cap5-bridge", "format": "wav", "state": "recording",
                                        "target_uri": "bridge:br-5b"},
                          "asterisk_id": "02:fc:00:00:00:01", "application": "demo"})
    assert _channel_id(channel) == "1795633391.104"
    assert _channel_id(bridge) is None


# ------------------------------------------------------------------------------------------ slow

SPOOL_REL = "spool/recording"
# Asterisk writes only the frames it receives: a caller must send RTP (PCMU silence) to be recorded.
RTP_ONLY = [(6.0, "")]


@dataclasses.dataclass
class RecRig:
    direct: Direct
    recording_dir: str  # as Asterisk sees it
    host_dir: Path  # the same folder from here (inside the chroot)

    def host_path(self, switch_path: str) -> Path:
        return self.host_dir / switch_path[len(self.recording_dir) + 1:]


@pytest.fixture
async def rec(direct: Direct) -> RecRig:  # noqa: F811
    env = direct.rig.env
    recording_dir = f"{env.state}/{SPOOL_REL}"
    direct.switch.recording_dir = recording_dir
    return RecRig(direct, recording_dir, env.state_dir / SPOOL_REL)


async def caller(rig: RecRig, number: str, script: list[tuple[float, str]], *, bye_after_s: float | None = None):
    """A sipp UAC into Stasis that plays an RFC 2833 stream (`script`: (delay s, digit)) from the answer;
    with `bye_after_s` it hangs up that long after the stream ended, else it waits for our BYE."""
    tmp = rig.direct.rig.tmp
    stem = tmp / f"rec-uac-{time.monotonic_ns()}"
    actions = []
    template = "uac_ivr_script_wait_bye.xml" if bye_after_s is None else "uac_ivr_script_caller_bye.xml"
    length = 0.0
    if script:
        pcap = stem.with_suffix(".pcap")
        length = democall.write_dtmf_pcap(pcap, script, digit_s=0.12, tail_s=0.3)
        actions.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
    if bye_after_s is not None:  # play_pcap_audio does not block: the pause covers the stream too
        actions.append(f'<pause milliseconds="{int((length + bye_after_s) * 1000)}"/>')
    text = (SIPP_DIR / template).read_text()
    text = text.replace("<!-- @@SCRIPT@@ -->", "\n  ".join(actions)).replace("@@CALLER@@", "5550100")
    path = stem.with_suffix(".xml")
    path.write_text(text)
    sipp_env = dataclasses.replace(env_from_environment(), ari_port=rig.direct.rig.env.ari.port,
                                   sip_port=rig.direct.rig.env.sip_port)
    task = asyncio.create_task(run_sipp(sipp_env, path, number, timeout_s=30))
    call: AsteriskCall = await asyncio.wait_for(rig.direct.calls.get(), 10)
    return task, call


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


async def finish(call: AsteriskCall, sipp: asyncio.Task) -> None:  # type: ignore[type-arg]
    if not call.gone:
        await call.hangup()
    result = await asyncio.wait_for(sipp, 30)
    assert result.returncode == 0, result.stdout[-2000:]


@pytest.mark.slow
async def test_record_ends_on_hash_and_the_file_has_that_length(rec: RecRig) -> None:
    sipp, call = await caller(rec, "7300", [(3.0, "#")])
    await call.answer()
    started = time.monotonic()
    result = await call.record(RecordSpec("rec-hash.wav", max_seconds=20, silence_seconds=0))
    elapsed = time.monotonic() - started
    assert (result.reason, result.terminator) == ("terminator", "#")
    assert result.path == f"{rec.recording_dir}/rec-hash.wav"
    length = wav_seconds(rec.host_path(result.path))
    assert abs(length - elapsed) < 0.5 + 0.5, (length, elapsed)  # minus the beep
    assert 1.5 < length < 3.5
    await call.play(["tone_stream://%(100,0,440)"])  # the caller is still here
    await finish(call, sipp)


@pytest.mark.slow
async def test_record_ends_at_max_time(rec: RecRig) -> None:
    sipp, call = await caller(rec, "7300", RTP_ONLY)
    await call.answer()
    result = await call.record(RecordSpec("rec-max.wav", max_seconds=2, silence_seconds=0, beep=False))
    assert result.reason == "max_time" and result.terminator is None
    # Asterisk's maxDurationSeconds overshoots: 2.56 s for 2 here, 9 s for 8 in captures 05 a
    assert 2.0 <= wav_seconds(rec.host_path(result.path)) <= 3.1
    assert result.duration_us == 2_000_000  # RecordingFinished's whole seconds
    await finish(call, sipp)


@pytest.mark.slow
async def test_hangup_during_record_keeps_the_message(rec: RecRig) -> None:
    sipp, call = await caller(rec, "7300", [(2.0, "")], bye_after_s=0.5)
    await call.answer()
    result = await call.record(RecordSpec("rec-hangup.wav", max_seconds=20, silence_seconds=0, beep=False))
    assert result.reason == "hangup"
    assert 1.5 < wav_seconds(rec.host_path(result.path)) < 3.0
    with pytest.raises(CallGone):
        await call.play(["tone_stream://%(100,0,440)"])
    await finish(call, sipp)


@pytest.mark.slow
async def test_call_recording_runs_across_a_dial_and_stops(rec: RecRig) -> None:
    sipp, call = await caller(rec, "7300", RTP_ONLY)
    await call.answer()
    recording = await call.start_recording("rec-call.wav")
    await recording.pause()
    await recording.resume()
    result = await call.dial(DialSpec([[rec.direct.rig.target("answer", "5001")]], timeout=5))
    assert result.outcome is DialOutcome.ANSWERED
    await call.play(["tone_stream://%(300,0,440)"])
    await recording.stop()
    await recording.stop()  # idempotent
    path = rec.host_path(recording.path)
    for _ in range(50):
        if path.exists():
            break
        await asyncio.sleep(0.1)
    # the bridge alone lasted HOLD_MS (1.5 s): the file covers ringing, the bridge and the tone
    assert wav_seconds(path) >= 1.8
    await finish(call, sipp)
    assert not [c for c in await rec.direct.channels() if c.startswith("Snoop")]


@pytest.mark.slow
async def test_call_recording_ends_with_the_call(rec: RecRig) -> None:
    sipp, call = await caller(rec, "7300", [(1.5, "")], bye_after_s=0.5)
    await call.answer()
    recording = await call.start_recording("rec-until-hangup.wav")
    await call.wait_hangup()
    await recording.stop()  # already finished: no error
    path = rec.host_path(recording.path)
    for _ in range(50):
        if path.exists() and wav_seconds(path) > 0:
            break
        await asyncio.sleep(0.1)
    assert 1.0 < wav_seconds(path) < 3.0
    await finish(call, sipp)
    assert math.isfinite(wav_seconds(path))
