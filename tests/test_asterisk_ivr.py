"""The IVR suite (tests/ivr_cases.py) on a real Asterisk 22 (chroot), with real sipp calls and RFC 2833 DTMF.

The controller runs in-process with a site whose only switch is the chroot Asterisk (ARI
127.0.0.1:8088, app switchctl) and whose flows are the suite's (tests/sites/ivr/dialplans/, the same
files the FreeSWITCH runner uses); sipp calls a number, Asterisk's default dialplan sends it into
Stasis(switchctl,inbound,<n>), and the flow drives the call over ARI. Every case of the table runs
at once (one sipp per call), then each is checked against the table's expectations.

The adapter (what is Asterisk's own, not the table's):
- the caller is a sipp RTP stream: the case's actions become DTMF at their times, a hangup is the
  caller's BYE once the stream is through;
- prompts are what the controller asked Asterisk to play (sound:... by name, digits:<n>);
- a transfer out of the controller is ARI /continue into the dialplan: the default dialplan's
  [from-loopback] sends every number back into Stasis, so a transfer landed when the same channel
  re-entered the controller with the new number (no flow claims 1000 or 1005: it is then rejected).

Sounds: the example's sounds are copied into the chroot at sounds/switchctl/<site>/, the layout
deploy will install (switch/asterisk_media.py).

After the table, the Asterisk backend alone (no flows): barge-in, tones, variables, causes.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from switchctl import democall
from switchctl.ari import AriClient
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.flows import FlowTrace
from switchctl.sitecheck import check_site
from switchctl.switch.asterisk import AsteriskCall, AsteriskSwitch, sound_uri_for_site
from switchctl.switch.call import CallGone, CollectOutcome, CollectSpec
from tests.asterisk_fixture import SIPP_DIR, AsteriskEnv, asterisk, run_sipp  # noqa: F401
from tests.ivr_cases import (
    BY_ID,
    CASE_IDS,
    CASES,
    DIGIT_GAP,
    FLOWS_DIR,
    OPERATOR,
    SOUNDS_DIR,
    HangUp,
    IvrCase,
    Keys,
    Observed,
    check,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"
SITE_NAME = "astivr"
CALL_LIMIT_S = 30  # one sipp call, from INVITE to BYE

Step = tuple[float, str]  # (seconds after the previous step, digit; "" = nothing, the end of the stream)


# ------------------------------------------------------------------------------------------ setup


def _install_sounds(env: AsteriskEnv) -> Path:
    target = env.base_dir / "root" / "usr" / "share" / "asterisk" / "sounds" / "switchctl" / SITE_NAME
    target.mkdir(parents=True, exist_ok=True)
    for wav in SOUNDS_DIR.glob("*.wav"):
        shutil.copyfile(wav, target / wav.name)
    return target


def _write_site(tmp: Path, env: AsteriskEnv) -> Path:
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
        'database: "sqlite+aiosqlite:///:memory:"',
        f"flows: {FLOWS_DIR}",
        f"sounds: [{SOUNDS_DIR}]",
        "phones:",
        f'  - {{extension: "{OPERATOR}", name: Operator, password: op-1000}}',
        '  - {range: "1001-1010", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
        "values:",
        f'  operator: "{OPERATOR}"',
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


def dtmf_script(case: IvrCase) -> list[Step]:
    """The case's actions as a timed RTP caller: each action `after` seconds after the previous one,
    the digits of one action DIGIT_GAP apart; a silent try sends nothing (its time passes)."""
    steps: list[Step] = []
    carry = 0.0
    for action in case.actions:
        if isinstance(action, HangUp):
            steps.append((carry + action.after, ""))  # the stream ends here, then the BYE
            break
        assert isinstance(action, Keys)
        if not action.digits:
            carry += action.after
            continue
        for i, digit in enumerate(action.digits):
            steps.append(((carry + action.after) if i == 0 else DIGIT_GAP, digit))
        carry = -DIGIT_GAP * (len(action.digits) - 1)  # `after` counts from the action's first digit
    return steps


@dataclass
class Played:
    channel: str
    media: tuple[str, ...]


@dataclass
class Entry:
    """A channel entering the controller (Stasis): a new call, or one coming back after /continue."""

    channel: str
    destination: str
    caller: str


@dataclass
class Harness:
    env: AsteriskEnv
    tmp: Path
    controller: Controller
    entries: list[Entry] = field(default_factory=list)
    traces: list[tuple[str, FlowTrace | None]] = field(default_factory=list)
    played: list[Played] = field(default_factory=list)
    _trace_added: asyncio.Event = field(default_factory=asyncio.Event)

    def on_trace(self, uuid: str, trace: FlowTrace | None) -> None:
        self.traces.append((uuid, trace))
        self._trace_added.set()

    async def call(self, case: IvrCase) -> Observed:
        """One sipp call for `case`; what the controller and Asterisk made of it."""
        script = dtmf_script(case)
        template = "uac_ivr_script_caller_bye.xml" if case.caller_hangs_up else "uac_ivr_script_wait_bye.xml"
        result = await run_sipp(self.env, _scenario(self.tmp, template, script, case.caller), case.number,
                                timeout_s=CALL_LIMIT_S)
        assert result.returncode == 0, (f"{case.id}: sipp exit {result.returncode}:\n{result.stdout[-2500:]}\n"
                                        f"{result.stderr[-1500:]}")
        return await self.observe(case)

    async def observe(self, case: IvrCase, timeout: float = 5.0) -> Observed:
        # the newest call from the case's caller to its number (the table's callers are all different)
        channel = next((e.channel for e in reversed(self.entries) if (e.destination, e.caller) == (case.number, case.caller)),
                       None)
        assert channel is not None, f"{case.id}: no call from {case.caller} to {case.number} reached the controller"
        trace = await self._first_trace(channel, timeout)
        assert trace is not None, f"{case.id}: no flow ran on {channel}"
        # a transfer landed: the channel re-entered with the transferred number (rejected: no flow)
        later = [e.destination for e in self.entries if e.channel == channel][1:]
        transfer_to = later[0] if len(later) == 1 else (", ".join(later) if later else None)
        if trace.result == "transferred" and later:
            await self._trace_count(channel, 1 + len(later), timeout)
        return Observed(list(trace.steps), trace.result, trace.cause, self.prompts(channel), transfer_to,
                        [f"channel {channel}"])

    async def _first_trace(self, channel: str, timeout: float) -> FlowTrace | None:
        await self._trace_count(channel, 1, timeout)
        return next(t for uuid, t in self.traces if uuid == channel)

    async def _trace_count(self, channel: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for uuid, _ in self.traces if uuid == channel) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"channel {channel}: fewer than {count} controller runs; traces: {self.traces}"
            self._trace_added.clear()
            try:
                await asyncio.wait_for(self._trace_added.wait(), left)
            except TimeoutError:
                pass

    def prompts(self, channel: str) -> list[str]:
        """What the controller asked Asterisk to play on `channel`, by name (tones and silences left out)."""
        out = []
        for played in self.played:
            if played.channel == channel:
                for media in played.media:
                    if media.startswith("sound:"):
                        out.append(media.rsplit("/", 1)[-1])
                    elif media.startswith(("digits:", "number:")):
                        out.append(media)
        return out


async def _start_harness(env: AsteriskEnv, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    _install_sounds(env)
    site = load_site(_write_site(tmp, env))
    checked = check_site(site)
    assert checked.ok, checked.report()
    h = Harness(env, tmp, Controller(site, checked.flows))
    h.controller.on_trace = h.on_trace
    original_play = AriClient.play

    async def recording_play(self, channel_id, media, **kw):  # what Asterisk was asked to play
        h.played.append(Played(channel_id, (media,) if isinstance(media, str) else tuple(media)))
        return await original_play(self, channel_id, media, **kw)

    monkeypatch.setattr(AriClient, "play", recording_play)
    handle = h.controller.handle_asterisk_call  # looked up per call by the controller's on_call

    async def recording_handle(call: AsteriskCall, switch_name: str) -> None:
        h.entries.append(Entry(call.uuid, call.info.destination, call.info.caller_number))
        await handle(call, switch_name)

    monkeypatch.setattr(h.controller, "handle_asterisk_call", recording_handle)
    await h.controller.start()
    await h.controller.asterisks["ast1"].wait_connected(10)
    return h


@dataclass
class TableRun:
    seen: dict[str, Observed | BaseException]
    after_hangups: Observed | BaseException  # a call placed once the table's calls (caller hangups too) ended
    active_after: int
    took_s: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def table(asterisk: AsteriskEnv, tmp_path_factory: pytest.TempPathFactory) -> TableRun:
    """Every case at once, then one more call; the controller is stopped before any check runs (the
    backend tests below take the Stasis app over)."""
    tmp = tmp_path_factory.mktemp("asterisk_ivr")
    with pytest.MonkeyPatch.context() as monkeypatch:
        h = await _start_harness(asterisk, tmp, monkeypatch)
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(h.call(case) for case in CASES), return_exceptions=True)
            took = time.monotonic() - started
            again = BY_ID["opening_hours_dialled_directly"]
            after: Observed | BaseException
            try:
                after = await h.call(again)
            except (AssertionError, TimeoutError) as exc:
                after = exc
            await asyncio.sleep(0.2)
            active = h.controller.stats.active
        finally:
            await h.controller.stop(grace=2)
    return TableRun(dict(zip(CASE_IDS, results)), after, active, took)


# ------------------------------------------------------------------------------------------ the table


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_ivr_case(table: TableRun, case: IvrCase) -> None:
    seen = table.seen[case.id]
    if isinstance(seen, BaseException):
        raise seen
    check(case, seen)


def test_every_case_ran_at_once_and_none_is_left(table: TableRun) -> None:
    longest = 15.0  # the longest case (the sub-menu and back, then 3 timeouts) is about 12 s alone
    assert table.took_s < longest, f"the table's {len(CASES)} concurrent calls took {table.took_s:.1f} s"
    assert table.active_after == 0


def test_the_controller_keeps_serving_after_caller_hangups(table: TableRun) -> None:
    if isinstance(table.after_hangups, BaseException):
        raise table.after_hangups
    check(BY_ID["opening_hours_dialled_directly"], table.after_hangups)


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
