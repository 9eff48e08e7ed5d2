"""The example phone-bar IVR on a real Asterisk 22 (chroot) with real sipp calls and RFC 2833 DTMF.

The controller runs in-process with a site whose only switch is the chroot Asterisk (ARI
127.0.0.1:8088, app switchctl); sipp calls a number, Asterisk's default dialplan sends it into
Stasis(switchctl,inbound,<n>), and the flow drives the call over ARI. Expectations follow
tests/test_ivr_sim.py. Two differences, both for time: the flows are the example's with shorter
menu timeouts (2 s, inter-digit 1 s), and a transfer to a booth is checked by the channel coming
back into Stasis with the booth's number (the default dialplan's [from-loopback] sends every number
there; no flow claims 1005, so the controller then rejects it with UNALLOCATED_NUMBER).

Sounds: the example's sounds are copied into the chroot at sounds/switchctl/<site>/, the layout
deploy will install (switch/asterisk_media.py).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from switchctl.ari import AriClient
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.flows import FlowTrace
from switchctl.sitecheck import check_site
from switchctl import democall
from switchctl.switch.asterisk import AsteriskCall, AsteriskSwitch, sound_uri_for_site
from switchctl.switch.call import CallGone, CollectOutcome, CollectSpec
from tests.asterisk_fixture import SIPP_DIR, AsteriskEnv, asterisk, run_sipp  # noqa: F401

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"
SITE_NAME = "astivr"

Step = tuple[float, str]  # (seconds after the previous step, digit)


# ------------------------------------------------------------------------------------------ setup


def _install_sounds(env: AsteriskEnv) -> Path:
    target = env.base_dir / "root" / "usr" / "share" / "asterisk" / "sounds" / "switchctl" / SITE_NAME
    target.mkdir(parents=True, exist_ok=True)
    for wav in (EXAMPLE / "sounds").glob("*.wav"):
        shutil.copyfile(wav, target / wav.name)
    return target


def _write_site(tmp: Path, env: AsteriskEnv) -> Path:
    dialplans = tmp / "dialplans"
    dialplans.mkdir()
    for flow in (EXAMPLE / "dialplans").glob("*.yaml"):
        text = flow.read_text()
        text = re.sub(r"(?m)^(\s+)timeout: 5$", r"\1timeout: 2", text)
        text = re.sub(r"(?m)^(\s+)inter_digit_timeout: 2$", r"\1inter_digit_timeout: 1", text)
        (dialplans / flow.name).write_text(text)
    site = tmp / "site.yaml"
    site.write_text("\n".join([
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        (f"    ari: {{host: 127.0.0.1, port: {env.ari_port}, user: {env.ari_user}, "
         f"password: {env.ari_password}, app: {env.app}}}"),
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {tmp / 'conf'}",
        "flows: dialplans/",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        '  - {range: "1001-1010", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
        "values:",
        '  operator: "1000"',
    ]) + "\n")
    return site


def write_dtmf_pcap(path: Path, script: Sequence[Step], *, digit_s: float = 0.12, tail_s: float = 0.3) -> float:
    """switchctl.democall's continuous RFC 2833 stream (sip-tester's per-digit pcaps cannot be
    chained: Asterisk drops digits whose RTP sequence numbers go back), with this suite's digit length."""
    return democall.write_dtmf_pcap(path, script, digit_s=digit_s, tail_s=tail_s)


def _scenario(tmp: Path, template: str, script: Sequence[Step], caller: str) -> Path:
    stem = tmp / f"uac-{time.monotonic_ns()}"
    actions = []
    if script:
        pcap = stem.with_suffix(".pcap")
        length = write_dtmf_pcap(pcap, script)
        actions.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
        if "caller_bye" in template:  # hang up once the script is through (the BYE waits for it)
            actions.append(f'<pause milliseconds="{int(length * 1000)}"/>')
    text = (SIPP_DIR / template).read_text()
    text = text.replace("<!-- @@SCRIPT@@ -->", "\n  ".join(actions)).replace("@@CALLER@@", caller)
    path = stem.with_suffix(".xml")
    path.write_text(text)
    return path


@dataclass
class Played:
    channel: str
    media: tuple[str, ...]


@dataclass
class Harness:
    env: AsteriskEnv
    tmp: Path
    controller: Controller
    traces: list[tuple[str, FlowTrace | None]] = field(default_factory=list)
    played: list[Played] = field(default_factory=list)
    _trace_added: asyncio.Event = field(default_factory=asyncio.Event)

    def on_trace(self, uuid: str, trace: FlowTrace | None) -> None:
        self.traces.append((uuid, trace))
        self._trace_added.set()

    async def call(self, number: str, script: Sequence[Step] = (), *, caller: str = "5550100",
                   caller_hangs_up: bool = False, timeout_s: int = 30) -> tuple[str, FlowTrace]:
        """One sipp call; returns (channel id, trace) of the flow that ran for `number`."""
        template = "uac_ivr_script_caller_bye.xml" if caller_hangs_up else "uac_ivr_script_wait_bye.xml"
        scenario = _scenario(self.tmp, template, script, caller)
        seen = len(self.traces)
        result = await run_sipp(self.env, scenario, number, timeout_s=timeout_s)
        assert result.returncode == 0, f"sipp exit {result.returncode}:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
        return await self.trace_for(number, seen)

    async def trace_for(self, number: str, start: int = 0, timeout: float = 5.0) -> tuple[str, FlowTrace]:
        deadline = time.monotonic() + timeout
        while True:
            for uuid, trace in self.traces[start:]:
                if trace is not None and trace.steps and self._destination(uuid, trace) == number:
                    return uuid, trace
            left = deadline - time.monotonic()
            assert left > 0, f"no trace for {number}; traces: {self.traces[start:]}"
            self._trace_added.clear()
            try:
                await asyncio.wait_for(self._trace_added.wait(), left)
            except TimeoutError:
                pass

    def _destination(self, uuid: str, trace: FlowTrace) -> str:
        flow = trace.steps[0][0]
        return {"main": "9000", "hours": "9001"}.get(flow, "?")

    def prompts(self, channel: str) -> list[str]:
        """The sound names played on `channel`, in order (digits:/number: as they are)."""
        out = []
        for played in self.played:
            if played.channel == channel:
                out += [m.rsplit("/", 1)[-1] if m.startswith("sound:") else m for m in played.media]
        return out


@pytest.fixture
async def harness(asterisk: AsteriskEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _install_sounds(asterisk)
    site = load_site(_write_site(tmp_path, asterisk))
    checked = check_site(site)
    assert checked.ok, checked.report()
    h = Harness(asterisk, tmp_path, Controller(site, checked.flows))
    h.controller.on_trace = h.on_trace
    original_play = AriClient.play

    async def recording_play(self, channel_id, media, **kw):  # what Asterisk was asked to play
        h.played.append(Played(channel_id, (media,) if isinstance(media, str) else tuple(media)))
        return await original_play(self, channel_id, media, **kw)

    monkeypatch.setattr(AriClient, "play", recording_play)
    await h.controller.start()
    await h.controller.asterisks["ast1"].wait_connected(10)
    try:
        yield h
    finally:
        await h.controller.stop(grace=2)


# ------------------------------------------------------------------------------------------ the example IVR


async def test_menu_to_submenu_and_back_then_timeouts(harness: Harness) -> None:
    started = time.monotonic()
    channel, trace = await harness.call("9000", [(1.2, "1"), (2.0, "9")])
    assert trace.path == ["answer", "main_menu", "rates_menu", "main_menu", "goodbye"]
    assert [s[2] for s in trace.steps[:4]] == ["next", "1", "9", "timeout"]
    assert trace.result == "hangup" and trace.cause == "NORMAL_CLEARING"
    # back in the main menu: its greeting, two silent retries with the short greeting, the exit sound
    assert harness.prompts(channel)[-4:] == ["welcome", "main_short", "main_short", "goodbye"]
    assert harness.prompts(channel)[:2] == ["welcome", "rates_menu"]
    assert time.monotonic() - started < 20


async def test_invalid_entries_reach_invalid_outcome(harness: Harness) -> None:
    channel, trace = await harness.call("9000", [(1.0, "7"), (1.5, "8"), (1.5, "5")])
    assert trace.steps[1][2] == "invalid"
    assert trace.path[-1] == "goodbye"
    assert trace.result == "hangup" and trace.cause == "NORMAL_CLEARING"
    prompts = harness.prompts(channel)
    assert prompts.count("invalid") == 3 and prompts[-1] == "goodbye"


async def test_direct_dial_of_a_booth_continues_in_the_dialplan(harness: Harness) -> None:
    seen = len(harness.traces)
    channel, trace = await harness.call("9000", [(1.0, "1"), (0.25, "0"), (0.25, "0"), (0.25, "5")])
    assert trace.steps[1][2] == "direct_dial"
    assert trace.result == "transferred"
    # /continue took the channel to [from-loopback] 1005, which sent it back into Stasis: the same
    # channel reached the controller again, with 1005 as its number (no flow: rejected)
    later = [(uuid, t) for uuid, t in harness.traces[seen:] if uuid == channel and t is None]
    assert later, harness.traces[seen:]
    assert harness.controller.stats.active == 0


async def test_operator_option_transfers_to_site_operator(harness: Harness) -> None:
    channel, trace = await harness.call("9000", [(1.0, "0")])
    assert trace.path[-2:] == ["operator", "to_operator"]
    assert trace.result == "transferred"
    assert "operator" in harness.prompts(channel)


async def test_say_callers_number_as_digits(harness: Harness) -> None:
    channel, trace = await harness.call("9000", [(1.0, "2"), (5.0, "")], caller="5550123", caller_hangs_up=True)
    assert "say_number" in trace.path
    assert "digits:5550123" in harness.prompts(channel)
    assert trace.result == "caller_hangup" and trace.cause == "NORMAL_CLEARING"


async def test_transfer_to_another_flow_in_process(harness: Harness) -> None:
    channel, trace = await harness.call("9000", [(1.0, "3")])
    assert ("hours", "message", "next") in trace.steps
    assert trace.result == "hangup"
    assert harness.prompts(channel)[-2:] == ["hours", "goodbye"]


async def test_caller_hangs_up_in_the_middle_of_a_collect(harness: Harness) -> None:
    _channel, trace = await harness.call("9000", [(1.5, "")], caller_hangs_up=True)
    assert trace.result == "caller_hangup"
    assert trace.steps[-1] == ("main", "main_menu", "caller_hangup")
    assert trace.cause == "NORMAL_CLEARING"  # a BYE without Reason: Asterisk's cause 0
    # and the controller keeps serving: the next call runs normally
    _channel2, trace2 = await harness.call("9001")
    assert trace2.result == "hangup"


async def test_concurrent_calls_are_independent(harness: Harness) -> None:
    scripts: list[tuple[str, list[Step], bool]] = [
        ("9001", [], False),
        ("9000", [(1.0, "3")], False),
        ("9000", [(1.0, "0")], False),
        ("9000", [(1.0, "")], True),
    ]
    seen = len(harness.traces)
    results = await asyncio.gather(*(
        run_sipp(harness.env, _scenario(harness.tmp, "uac_ivr_script_caller_bye.xml" if bye
                                        else "uac_ivr_script_wait_bye.xml", script, "5550100"), number)
        for number, script, bye in scripts))
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stdout[-1500:] for r in results if r.returncode]
    await asyncio.sleep(0.5)
    outcomes = sorted(t.result for _u, t in harness.traces[seen:] if t is not None)
    assert outcomes == sorted(["hangup", "hangup", "transferred", "caller_hangup"])
    assert harness.controller.stats.active == 0


# ------------------------------------------------------------------------------------------ the backend alone


@dataclass
class Direct:
    switch: AsteriskSwitch
    calls: asyncio.Queue[AsteriskCall]


@pytest.fixture
async def direct(asterisk: AsteriskEnv):
    """An AsteriskSwitch whose calls are handed to the test (no flows)."""
    _install_sounds(asterisk)
    calls: asyncio.Queue[AsteriskCall] = asyncio.Queue()
    done = asyncio.Event()

    async def on_call(call: AsteriskCall) -> None:
        calls.put_nowait(call)
        await done.wait()  # the test drives the call; the task ends with the test

    client = AriClient(f"http://127.0.0.1:{asterisk.ari_port}", asterisk.ari_user, asterisk.ari_password, asterisk.app)
    switch = AsteriskSwitch("ast1", client, sound_uri=sound_uri_for_site(SITE_NAME, [EXAMPLE / "sounds"]),
                            on_call=on_call)
    switch.start()
    await switch.wait_connected(10)
    try:
        yield Direct(switch, calls)
    finally:
        done.set()
        await switch.stop(grace=1)


async def _sipp(env: AsteriskEnv, tmp: Path, number: str, script: Sequence[Step], *, caller_bye: bool = False):
    template = "uac_ivr_script_caller_bye.xml" if caller_bye else "uac_ivr_script_wait_bye.xml"
    return asyncio.create_task(run_sipp(env, _scenario(tmp, template, script, "5550100"), number, timeout_s=20))


async def test_barge_in_stops_the_prompts_and_digits_count(direct: Direct, asterisk: AsteriskEnv, tmp_path: Path) -> None:
    sipp = await _sipp(asterisk, tmp_path, "7100", [(1.0, "4"), (0.25, "2"), (0.25, "#")])
    call = await asyncio.wait_for(direct.calls.get(), 10)
    assert call.info.destination == "7100" and call.info.caller_number == "5550100"
    await call.answer()
    sounds = str(EXAMPLE / "sounds")
    long_prompts = [f"{sounds}/{n}.wav" for n in ("welcome", "rates_menu", "balance", "hours", "operator", "goodbye")]
    started = time.monotonic()
    result = await call.collect(CollectSpec(prompts=long_prompts, max_digits=4, timeout=3, inter_digit_timeout=2))
    took = time.monotonic() - started
    assert (result.outcome, result.digits, result.terminator) == (CollectOutcome.OK, "42", "#")
    assert took < 3.5, f"the prompts (4.7 s) were not stopped by the first digit: {took:.2f} s"
    await call.hangup()
    assert call.hangup_cause == "NORMAL_CLEARING"
    assert (await sipp).returncode == 0


async def test_tones_silence_variables_and_hangup_cause(direct: Direct, asterisk: AsteriskEnv, tmp_path: Path) -> None:
    sipp = await _sipp(asterisk, tmp_path, "7101", [])
    call = await asyncio.wait_for(direct.calls.get(), 10)
    await call.answer()
    started = time.monotonic()
    await call.play(["tone_stream://%(300,200,800)", "silence_stream://300", f"{EXAMPLE / 'sounds'}/main_short.wav"])
    took = time.monotonic() - started
    assert 1.0 < took < 2.5, took  # 0.3 tone + 0.2 + 0.3 silence + 0.35 sound
    await call.set_variable("switchctl_test", "hello")
    assert await call.get_variable("switchctl_test") == "hello"
    assert await call.get_variable("switchctl_never_set") is None
    await call.hangup("USER_BUSY")
    assert call.hangup_cause == "USER_BUSY"
    assert (await sipp).returncode == 0
    missing = await asyncio.wait_for(call.get_variable("switchctl_test"), 1)  # gone: the last known value
    assert missing == "hello"


async def test_schedule_hangup_is_a_switch_side_timeout(direct: Direct, asterisk: AsteriskEnv, tmp_path: Path) -> None:
    sipp = await _sipp(asterisk, tmp_path, "7102", [])
    call = await asyncio.wait_for(direct.calls.get(), 10)
    await call.answer()
    started = time.monotonic()
    await call.schedule_hangup(1.5)
    with pytest.raises(CallGone) as gone:
        await call.collect(CollectSpec(timeout=5))
    assert 1.2 < time.monotonic() - started < 3.0
    assert gone.value.cause == "ALLOTTED_TIMEOUT" == call.hangup_cause
    assert (await sipp).returncode == 0


async def test_caller_hangup_during_a_playback_is_callgone(direct: Direct, asterisk: AsteriskEnv, tmp_path: Path) -> None:
    sipp = await _sipp(asterisk, tmp_path, "7103", [(1.0, "")], caller_bye=True)
    call = await asyncio.wait_for(direct.calls.get(), 10)
    await call.answer()
    sounds = str(EXAMPLE / "sounds")
    with pytest.raises(CallGone) as gone:
        await call.play([f"{sounds}/{n}.wav" for n in ("welcome", "rates_menu", "balance", "hours")])
    assert gone.value.cause == "NORMAL_CLEARING"
    assert await asyncio.wait_for(call.wait_hangup(), 2) == "NORMAL_CLEARING"
    assert (await sipp).returncode == 0


async def test_a_missing_prompt_is_a_call_error_not_a_hangup(direct: Direct, asterisk: AsteriskEnv, tmp_path: Path) -> None:
    from switchctl.switch.call import CallError

    sipp = await _sipp(asterisk, tmp_path, "7104", [])
    call = await asyncio.wait_for(direct.calls.get(), 10)
    await call.answer()
    with pytest.raises(CallError, match="prompt not found") as err:
        await call.play([f"{EXAMPLE / 'sounds'}/no_such_prompt.wav"])
    assert not isinstance(err.value, CallGone)
    await call.say("42", __import__("switchctl.switch.call", fromlist=["SayKind"]).SayKind.NUMBER)
    await call.hangup()
    assert (await sipp).returncode == 0
