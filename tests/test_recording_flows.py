"""The `record_call` node and the recording feature on a scripted call: paths, the channel
variable, pause/resume/stop, the store rows, the API's state checks, and the flow check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from switchctl.features.recording import CallRecorder, RecordingError, UnknownCall, safe_name
from switchctl.features.recording.layout import day_folder, local_path, recording_path
from switchctl.flows import FlowRunner
from switchctl.store import Store
from switchctl.store.recording_models import RecordingLog
from switchctl.switch.call import CallError

from .fakecall import ScriptedCall, ScriptedRecording, check_texts

T0 = 1_795_000_000_000_000  # 2026-11-18T11:06:40Z, epoch µs


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


RECORDED = """
flow: recorded
numbers: ["7000"]
nodes:
  answer: {type: answer, next: rec}
  rec: {type: record_call, action: start, name: "booth-${caller}", next: card}
  card: {type: record_call, action: pause, next: read}
  read: {type: say, value: "${var.recording_path}", kind: digits, next: resume}
  resume: {type: record_call, action: resume, next: talk}
  talk: {type: dial, to: [{phone: "1001"}], next: stop, failed: stop}
  stop: {type: record_call, action: stop, next: bye}
  bye: {type: hangup}
"""

NOTHING_RUNNING = """
flow: idle
numbers: ["7001"]
nodes:
  pause: {type: record_call, action: pause, next: resume}
  resume: {type: record_call, action: resume, next: stop}
  stop: {type: record_call, action: stop, next: bye}
  bye: {type: hangup}
"""

START_ONLY = """
flow: start_only
numbers: ["7002"]
nodes:
  rec: {type: record_call, action: start, next: talk, failed: sorry}
  talk: {type: dial, to: [{phone: "1001"}], next: bye, failed: bye}
  sorry: {type: hangup, cause: CALL_REJECTED}
  bye: {type: hangup}
"""


@pytest.fixture
async def store(tmp_path: Path):
    store = Store.open(f"sqlite:///{tmp_path / 'rec.db'}")
    await store.create_all()
    yield store
    await store.close()


def runner(tmp_path: Path, recorder: CallRecorder | None, *texts: str) -> FlowRunner:
    folder = tmp_path / "flows"
    folder.mkdir(exist_ok=True)
    result = check_texts(folder, *texts)
    assert result.ok, result.report()
    return FlowRunner(result.flows, site_values={}, lists={}, recordings=recorder)


def test_layout() -> None:
    at = dt.datetime(2026, 11, 26, 23, 30, tzinfo=dt.UTC)
    assert day_folder(at) == "2026/11/26"
    assert day_folder(at, "Europe/Berlin") == "2026/11/27"  # already tomorrow there
    assert recording_path("/rec", "abc", at) == "/rec/2026/11/26/abc.wav"
    assert safe_name("../../etc/passwd", "u1") == "_.._etc_passwd"
    assert safe_name(" a b/c ", "u1") == "a_b_c"
    assert safe_name("", "uuid-1") == "uuid-1"
    assert safe_name("///", "uuid-1") == "uuid-1"
    assert local_path("/rec/2026/11/26/a.wav", "/rec", "/mnt/rec") == "/mnt/rec/2026/11/26/a.wav"
    assert local_path("/rec/a.wav", "/rec", None) == "/rec/a.wav"
    with pytest.raises(ValueError):
        recording_path("/rec", "a", at, fmt="mp3")


async def test_flow_records_pauses_resumes_and_stops(tmp_path: Path, store: Store) -> None:
    clock = Clock()
    recorder = CallRecorder(RecordingLog(store, clock), directory="/rec/", clock=clock)
    call = ScriptedCall(caller="1000", uuid="uuid-a", destination="7000", dials=["answered"])
    async with recorder.tracking(call):
        r = runner(tmp_path, recorder, RECORDED)
        trace = await r.run(call, r.flowset["recorded"])
    assert trace.result == "hangup", trace
    path = "/rec/2026/11/18/booth-1000.wav"
    assert day_folder(dt.datetime.fromtimestamp(T0 / 1e6, dt.UTC)) == "2026/11/18"
    assert trace.variables["recording_path"] == path
    assert call.variables["switchctl_recording"] == path
    names = call.names()
    # started before the dial, paused around the card read-out, stopped after the dial
    assert names.index("start_recording") < names.index("recording_pause") < names.index("say") \
        < names.index("recording_resume") < names.index("dial") < names.index("recording_stop")
    assert call.recordings[0].state == "stopped"
    rows = await RecordingLog(store, clock).list(call_uuid="uuid-a")
    assert [(r.path, r.state, r.source, r.ended_by, r.switch) for r in rows] == [(path, "stopped", "live", "stop", "test")]
    assert rows[0].started_us == T0 and rows[0].ended_us == T0


async def test_paused_time_is_counted_and_hangup_ends_the_row(store: Store) -> None:
    clock = Clock()
    log = RecordingLog(store, clock)
    recorder = CallRecorder(log, directory="/rec", clock=clock)
    call = ScriptedCall(uuid="uuid-b")
    async with recorder.tracking(call):
        started = await recorder.start(call, "x")
        assert started.new
        again = await recorder.start(call, "y")  # one at a time: the running one is kept
        assert again == type(again)(started.path, new=False)
        clock.now += 5_000_000
        assert await recorder.pause(call)
        assert not await recorder.pause(call)  # already paused
        clock.now += 2_000_000
        assert await recorder.resume(call)
        clock.now += 1_000_000
        assert await recorder.pause(call)
        clock.now += 3_000_000
        await call.hangup()  # ends while paused
    [row] = await log.list(call_uuid="uuid-b")
    assert row.state == "stopped" and row.ended_by == "hangup"
    assert row.paused_us == 5_000_000 and row.ended_us == T0 + 11_000_000
    # the CDR's end (the switch's clock) replaces ours for a recording that ended with the call
    assert not await log.from_cdr("test", "uuid-b", row.path, start_us=T0, end_us=T0 + 11_500_000)
    [row] = await log.list(call_uuid="uuid-b")
    assert row.ended_us == T0 + 11_500_000 and row.ended_by == "cdr"


async def test_nothing_running_goes_next(tmp_path: Path) -> None:
    recorder = CallRecorder(None, directory="/rec")
    r = runner(tmp_path, recorder, NOTHING_RUNNING)
    call = ScriptedCall(uuid="uuid-c", destination="7001")
    async with recorder.tracking(call):
        trace = await r.run(call, r.flowset["idle"])
    assert trace.path == ["pause", "resume", "stop", "bye"] and trace.result == "hangup"
    assert "start_recording" not in call.names()


async def test_switch_refusal_takes_failed_and_no_service_is_an_error(tmp_path: Path) -> None:
    recorder = CallRecorder(None, directory="/rec")
    r = runner(tmp_path, recorder, START_ONLY)
    call = ScriptedCall(uuid="uuid-d", destination="7002", fail_at=("start_recording", 1))
    trace = await r.run(call, r.flowset["start_only"])
    assert trace.path == ["rec", "sorry"] and trace.cause == "CALL_REJECTED"
    bare = runner(tmp_path, None, START_ONLY)
    call = ScriptedCall(uuid="uuid-e", destination="7002")
    trace = await bare.run(call, bare.flowset["start_only"])
    assert trace.result == "error" and "no call recording is configured" in (trace.error or "")


async def test_second_start_gets_its_own_file(tmp_path: Path) -> None:
    recorder = CallRecorder(None, directory="/rec", local_directory=str(tmp_path / "local"), clock=Clock())
    call = ScriptedCall(uuid="uuid-f")
    async with recorder.tracking(call):
        first = await recorder.start(call, "same")
        await recorder.stop(call)
        second = await recorder.start(call, "same")
    assert first.path.endswith("/same.wav") and second.path.endswith("/same-2.wav")
    assert (tmp_path / "local" / "2026" / "11" / "18").is_dir()  # the day's folder, made locally


async def test_api_actions_check_the_state() -> None:
    recorder = CallRecorder(None, directory="/rec", clock=Clock())
    call = ScriptedCall(uuid="uuid-g")
    with pytest.raises(UnknownCall):
        await recorder.act("uuid-g", "start")
    async with recorder.tracking(call):
        with pytest.raises(RecordingError, match="not recording"):
            await recorder.act("uuid-g", "pause")
        status = await recorder.act("uuid-g", "start")
        assert status["state"] == "recording" and status["path"].endswith("/uuid-g.wav")
        with pytest.raises(RecordingError, match="already"):
            await recorder.act("uuid-g", "start")
        assert (await recorder.act("uuid-g", "pause"))["state"] == "paused"
        with pytest.raises(RecordingError, match="paused"):
            await recorder.act("uuid-g", "pause")
        assert (await recorder.act("uuid-g", "resume"))["state"] == "recording"
        assert (await recorder.act("uuid-g", "stop"))["state"] == "stopped"
        with pytest.raises(ValueError):
            await recorder.act("uuid-g", "rewind")
    assert recorder.status("uuid-g") is None


async def test_a_failing_switch_operation_is_a_recording_error() -> None:
    class Refusing(ScriptedRecording):
        async def pause(self) -> None:
            raise CallError("uuid_record mask: -ERR Cannot mask recording session!")

    call = ScriptedCall(uuid="uuid-h")

    async def start_recording(path: str):
        call.ops.append(("start_recording", path))
        return Refusing(path, call)

    call.start_recording = start_recording  # type: ignore[method-assign]
    recorder = CallRecorder(None, directory="/rec")
    async with recorder.tracking(call):
        await recorder.act("uuid-h", "start")
        with pytest.raises(RecordingError, match="failed on the switch"):
            await recorder.act("uuid-h", "pause")


def test_check_reports_bad_nodes(tmp_path: Path) -> None:
    bad = """
flow: bad
numbers: ["7100"]
nodes:
  a: {type: record_call, action: rewind, next: b}
  b: {type: record_call, action: stop, name: x, next: c}
  c: {type: record_call, next: d}
  d: {type: record_call, action: start, name: "${var.nope}", nxt: e}
  e: {type: hangup}
"""
    result = check_texts(tmp_path, bad)
    messages = [d.message for d in result.errors]
    assert "record_call 'a': 'action' must be one of start, pause, resume, stop, got 'rewind'" in messages
    assert "record_call 'b': 'name' only applies to action 'start'" in messages
    assert "record_call 'c' is missing required key 'action'" in messages
    assert any("unknown flow variable '${var.nope}'" in m for m in messages)
    assert any("unknown key 'nxt'" in m for m in messages)


def test_recording_path_is_a_known_variable(tmp_path: Path) -> None:
    result = check_texts(tmp_path, RECORDED)
    assert result.ok, result.report()


async def test_asterisk_calls_also_get_the_cdr_variable() -> None:
    recorder = CallRecorder(None, directory="/var/spool/asterisk/recording/calls", clock=Clock(),
                            cdr_variable_switches={"test"})
    call = ScriptedCall(uuid="1795633520.139")
    async with recorder.tracking(call):
        started = await recorder.start(call, "")
    sets = [op[1:] for op in call.ops if op[0] == "set_variable"]
    assert sets == [("switchctl_recording", started.path), ("CDR(switchctl_recording)", started.path)]
    assert started.path == "/var/spool/asterisk/recording/calls/2026/11/18/1795633520.139.wav"
