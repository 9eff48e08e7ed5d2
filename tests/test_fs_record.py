"""Recording on FreeSWITCH: Call.record (`record` app) and Call.start_recording (`uuid_record`) against the
simulator, the completion parser, and the simulator's RECORD_* events / uuid_record replies against the
real captures (freeswitch-scenarios/s7_record)."""

from __future__ import annotations

import asyncio
import math
import wave
from pathlib import Path

import pytest

from switchctl.esl import serverwire
from switchctl.esl.codec import Event
from switchctl.esl.outbound import OutboundServer, OutboundSession
from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
from switchctl.sim.apps import media_bugs, set_caller_speech, wav_bytes
from switchctl.sim.config import HangUp, Press
from switchctl.switch.call import (
    CallGone,
    DialOutcome,
    DialSpec,
    DialTarget,
    RecordSpec,
)
from switchctl.switch.freeswitch import (
    BEEP,
    CALL_EVENTS,
    FreeSwitchCall,
    call_info_from_channel_data,
    record_arg,
    record_result,
)
from tests.capturepaths import CAPTURES
from tests.test_sim_events import channel_from, factory_for, load, now_of

S7 = CAPTURES / "freeswitch-scenarios/s7_record"
SPEED = 20.0
USERS = {"2002": UserBehaviour(answer_after=0.5, hangup_after=2.0)}


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        return wav.getnframes() / 8000


async def run_call(scenario, *, script=(), speech: float | None = None):
    """One simulated call to a socket route; `scenario(call, sim_call)` drives the FreeSwitchCall.
    Returns (scenario result or exception, sim CallResult, events the sim fired as (name, headers))."""
    outcome = {}
    fired: list[tuple[str, list[tuple[str, str]]]] = []

    async def handler(session: OutboundSession) -> None:
        data = await session.connect()
        await session.subscribe(CALL_EVENTS)
        await session.linger()
        call = FreeSwitchCall(session, call_info_from_channel_data(data, "sim"))
        try:
            await call.answer()
            outcome["value"] = await scenario(call, sim_call)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["value"] = exc
        finally:
            await call.hangup()

    server = OutboundServer(handler, port=0)
    await server.start()
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^9000$", "socket", f"127.0.0.1:{server.port} async full")],
                                  users=USERS, media_speed=SPEED, domain="127.0.0.1"))
    dispatch = sim.dispatch

    def record_dispatch(name, headers, body):
        fired.append((name, list(headers)))
        dispatch(name, headers, body)

    sim.dispatch = record_dispatch  # type: ignore[method-assign]
    await sim.start()
    try:
        sim_call = sim.place_call("9000", "1001", script=script)
        if speech is not None:
            set_caller_speech(sim_call.channel, speech)
        result = await asyncio.wait_for(sim_call.done, 10)
        for _ in range(100):
            if not sim.channels:
                break
            await asyncio.sleep(0.01)
        assert not sim.channels
    finally:
        await sim.close()
        await server.close()
    return outcome["value"], result, fired


# --- Call.record against the simulator ------------------------------------------------------------------------

async def test_record_ends_on_terminator_and_restores_playback_terminators(tmp_path):
    path = tmp_path / "vm.wav"

    async def scenario(call, _):
        result = await call.record(RecordSpec(str(path)))
        return result, await call.get_variable("playback_terminators")

    (result, terminators_after), sim_result, fired = await run_call(scenario, script=[Press("5#")], speech=math.inf)
    assert (result.reason, result.terminator, result.path) == ("terminator", "#", str(path))
    assert 0.15e6 <= result.duration_us <= 0.4e6  # '5' is no terminator, '#' comes 0.2 media s in
    assert wav_seconds(path) * 1e6 == result.duration_us
    assert terminators_after is None  # back to FreeSWITCH's default (`*`)
    assert ("playback", BEEP, "FILE PLAYED") in sim_result.apps
    [record] = [app for app in sim_result.apps if app[0] == "record"]
    assert record[1] == f"{path} 119 200 5"
    assert [name for name, _ in fired if name.startswith("RECORD_")] == ["RECORD_START", "RECORD_STOP"]


async def test_record_ends_on_silence(tmp_path):
    path = tmp_path / "silence.wav"

    async def scenario(call, _):
        return await call.record(RecordSpec(str(path), silence_seconds=2, beep=False))

    result, sim_result, _ = await run_call(scenario, speech=1.5)
    assert result.reason == "silence" and result.terminator is None
    assert 3.4e6 <= result.duration_us <= 3.8e6  # 1.5 s of speech + 2 s of silence
    assert not any(app[0] == "playback" for app in sim_result.apps)


async def test_record_ends_at_max_time_never_longer(tmp_path):
    path = tmp_path / "max.wav"

    async def scenario(call, _):
        return await call.record(RecordSpec(str(path), max_seconds=3, silence_seconds=0))

    result, sim_result, _ = await run_call(scenario, speech=math.inf)
    assert result.reason == "max_time"
    assert 2.0e6 < result.duration_us <= 3.1e6  # limit 2 whole seconds: (2, 3] s
    assert ("record", f"{path} 2", "_none_") in sim_result.apps


async def test_hangup_during_record_keeps_the_message(tmp_path):
    path = tmp_path / "hangup.wav"

    async def scenario(call, _):
        result = await call.record(RecordSpec(str(path)))
        try:
            await call.play(["tone_stream://%(100,0,440)"])
        except CallGone as exc:
            return result, exc
        return result, None

    (result, gone), sim_result, _ = await run_call(scenario, script=[HangUp()], speech=math.inf)
    assert result.reason == "hangup" and result.duration_us > 0
    assert path.exists() and wav_seconds(path) * 1e6 == result.duration_us
    assert isinstance(gone, CallGone)  # the next operation learns the caller is gone
    assert sim_result.hangup_by == "caller"


async def test_hangup_before_record_raises_call_gone(tmp_path):
    path = tmp_path / "never.wav"

    async def scenario(call, sim_call):
        sim_call.hangup()
        await asyncio.sleep(0.05)
        return await call.record(RecordSpec(str(path)))

    result, _, _ = await run_call(scenario)
    assert isinstance(result, CallGone)
    assert not path.exists()


# --- Call.start_recording ----------------------------------------------------------------------------------------

async def test_start_pause_resume_stop_across_a_bridge(tmp_path):
    path = tmp_path / "call.wav"
    seen = {}

    async def scenario(call, sim_call):
        recording = await call.start_recording(str(path))

        async def on_answer(answer):
            await recording.pause()
            seen["masked"] = media_bugs(sim_call.channel)[str(path)].masked
            await recording.resume()
            seen["unmasked"] = not media_bugs(sim_call.channel)[str(path)].masked

        result = await call.dial(DialSpec(groups=[[DialTarget("phone", "2002")]], on_answer=on_answer))
        seen["running_after_bridge"] = str(path) in media_bugs(sim_call.channel)
        await recording.stop()
        await recording.stop()  # idempotent
        return result

    result, _, fired = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and not result.caller_hung_up
    assert seen == {"masked": True, "unmasked": True, "running_after_bridge": True}
    assert wav_seconds(path) >= 2.4  # 0.5 s ringing + 2 s of bridge
    stops = [dict(h) for name, h in fired if name == "RECORD_STOP"]
    assert len(stops) == 1 and stops[0]["Record-Completion-Cause"] == "success-maxtime"
    assert stops[0]["Record-File-Path"] == str(path)


async def test_call_recording_closed_by_hangup(tmp_path):
    path = tmp_path / "until_hangup.wav"

    async def scenario(call, sim_call):
        recording = await call.start_recording(str(path))
        await call.play(["tone_stream://%(1000,0,440)"])
        sim_call.hangup()
        await call.wait_hangup()
        await recording.stop()  # the call ended: already finished, no error
        return recording

    recording, _, fired = await run_call(scenario)
    assert recording.path == str(path) and wav_seconds(path) >= 1.0
    names = [(name, dict(h).get("Channel-State")) for name, h in fired
             if name in ("RECORD_STOP", "CHANNEL_STATE") and dict(h).get("Unique-ID")]
    # s7: CHANNEL_STATE CS_HANGUP, RECORD_STOP (in CS_HANGUP), CHANNEL_STATE CS_REPORTING
    i = names.index(("RECORD_STOP", "CS_HANGUP"))
    assert names[i - 1] == ("CHANNEL_STATE", "CS_HANGUP") and names[i + 1] == ("CHANNEL_STATE", "CS_REPORTING")
    stop = next(dict(h) for name, h in fired if name == "RECORD_STOP")
    assert stop["Record-Completion-Cause"] == "success-silence"


# --- pure parts ----------------------------------------------------------------------------------------------

def test_record_arg_shapes():
    assert record_arg(RecordSpec("/tmp/a.wav")) == "/tmp/a.wav 119 200 5"
    assert record_arg(RecordSpec("/tmp/a.wav", max_seconds=0.5, silence_seconds=2.5)) == "/tmp/a.wav 1 200 3"
    assert record_arg(RecordSpec("/tmp/a.wav", silence_seconds=0)) == "/tmp/a.wav 119"
    with pytest.raises(Exception, match="bad path"):
        record_arg(RecordSpec("/tmp/a b.wav"))


@pytest.mark.parametrize("headers,reason,terminator", [
    ({"Answer-State": "answered", "variable_playback_terminator_used": "#", "variable_record_ms": "1500",
      "variable_silence_hits_exhausted": "false"}, "terminator", "#"),
    ({"Answer-State": "answered", "variable_silence_hits_exhausted": "true", "variable_record_ms": "1500"},
     "silence", None),
    ({"Answer-State": "answered", "variable_silence_hits_exhausted": "false", "variable_record_ms": "1500"},
     "max_time", None),
    ({"Answer-State": "hangup", "Hangup-Cause": "NORMAL_CLEARING", "variable_silence_hits_exhausted": "false",
      "variable_record_ms": "1500"}, "hangup", None),
])
def test_record_result_parser(headers, reason, terminator):
    result = record_result(Event(headers), "/x.wav")
    assert (result.reason, result.terminator, result.duration_us) == (reason, terminator, 1_500_000)


def test_wav_bytes_sizes_match_captured_files():
    # s7 README: 2020 ms -> 32364 bytes, 1520 ms -> 24364, 1020 ms -> 16364
    for ms, size in ((2020, 32364), (1520, 24364), (1020, 16364)):
        assert len(wav_bytes(ms * 8)) == size


# --- the simulator against the captures ------------------------------------------------------------------------

@pytest.mark.parametrize("file", sorted(p.name for p in S7.glob("r1.RECORD_*.plain.raw")))
def test_captured_record_events_rebuilt_byte_exact(file):
    path = S7 / file
    captured, _ = load(path)
    extra = [(n, v) for n, v in captured if n in ("Record-File-Path", "Record-Completion-Cause")]
    built = factory_for(captured).channel_event(captured[0][1], channel_from(captured), now_us=now_of(captured),
                                                extra=extra)
    assert built == captured
    assert serverwire.encode_event(built, None, "plain") == path.read_bytes()


def _api_body(name: str) -> str:
    raw = (S7 / f"r1.api_response_uuid_record_{name}.raw").read_bytes()
    return raw.split(b"\n\n", 1)[1].decode()


def _shape(headers) -> list[str]:
    """Header names without the channel's variables (they depend on the call) plus the record_* variables;
    without the Channel-*-Codec-* headers, which the simulator's engine never sets (not a recording matter)."""
    return [n for n, _ in headers
            if (not n.startswith("variable_") or n.startswith("variable_record_")) and "-Codec-" not in n]


async def test_sim_uuid_record_replies_and_record_stop_shape_match_capture(tmp_path):
    path = tmp_path / "c2_uuid_record.wav"
    replies = {}

    async def scenario(call, sim_call):
        uuid = call.uuid
        replies["start"] = await call.session.api(f"uuid_record {uuid} start {path}", check=False)
        await call.play(["tone_stream://%(1500,0,600)"])
        replies["stop"] = await call.session.api(f"uuid_record {uuid} stop {path}", check=False)
        replies["stop_not_recording"] = await call.session.api(f"uuid_record {uuid} stop {path}", check=False)

    await_result, _, fired = await run_call(scenario)
    assert await_result is None
    for name, body in replies.items():
        assert body == _api_body(name), name
    captured_stop, _ = load(S7 / "r1.RECORD_STOP_c2_uuid_record.wav.plain.raw")
    captured_start, _ = load(S7 / "r1.RECORD_START_c2_uuid_record.wav.plain.raw")
    sim_stop = next(h for name, h in fired if name == "RECORD_STOP")
    sim_start = next(h for name, h in fired if name == "RECORD_START")
    assert _shape(sim_stop) == _shape(captured_stop)
    # the capture's RECORD_START carries the record_* variables of an earlier recording; ours is the first
    assert [n for n in _shape(sim_start) if not n.startswith("variable_")] == \
        [n for n in _shape(captured_start) if not n.startswith("variable_")]
    assert abs(wav_seconds(path) - 1.5) < 0.1
