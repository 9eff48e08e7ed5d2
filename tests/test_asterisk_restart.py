"""Issue 3 acceptance: Asterisk killed mid-call and restarted.

"The controller reconnects, resyncs, and new calls work; the log holds a bounded number of lines
about it." One slow test, on a *private* Asterisk (tests/private_asterisk.py: its own config,
state folders and ports in the project's chroot, its PID ours, so SIGKILL is possible without
touching the shared Asterisk on 8088/5060):

1. a Controller (site kind asterisk, the phone-bar flows with short menu timeouts) takes a sipp
   call that sits in the main menu;
2. Asterisk gets SIGKILL: no BYE, no WebSocket close frame, no ChannelDestroyed;
3. the call ends in the controller at once, Asterisk still down (CallGone SWITCH_CONNECTION_LOST,
   trace result caller_hangup), with no task left: also when the flow was waiting for the end of
   a prompt, an event that will never come;
4. the same Asterisk starts again: the controller reconnects by itself and resyncs;
5. a new call runs the IVR path (3: opening hours, then goodbye);
6. the switchctl log lines written from the kill until the new call: bounded.

Two fast tests pin the same behaviour on the fake ARI server of tests/test_asterisk_backend.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from switchctl.config.site import Site, load_site
from switchctl.controller import Controller
from switchctl.flows import FlowTrace
from switchctl.render.asterisk import (
    asterisk_sound_files,
    render_asterisk,
    sounds_subdir,
)
from switchctl.sitecheck import check_site
from switchctl.switch.call import CallGone
from tests.asterisk_fixture import (
    AsteriskEnv,
    env_from_environment,
    run_sipp,
    sipp_command,
)
from tests.private_asterisk import (  # noqa: F401  (asterisk_chroot is a fixture)
    PrivateAsterisk,
    asterisk_chroot,
    create_private_asterisk,
    running_private_asterisk,
)
from tests.test_asterisk_backend import SOUNDS, Rig, rig  # noqa: F401  (rig is a fixture)
from tests.test_asterisk_ivr import _scenario
from tests.ivr_cases import NOT_IVR_FLOWS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"
SITE_NAME = "astrestart"
RTP_RANGE = (14000, 14999)  # the shared Asterisk uses 10000-10999, the deploy test's 12000-12999

# What "bounded" means for one outage of a few seconds: the stream's one warning when lost and
# one info when back, the lost call's lines (flow + switch), a few spare; far below one per retry.
MAX_WARNINGS = 4
MAX_LINES = 10
DOWN_S = 6.0  # how long Asterisk stays dead


# ------------------------------------------------------------------------------------------ setup


def _write_site(folder: Path, env: PrivateAsterisk) -> Site:
    """The phone-bar example with 2 s menu timeouts, on the private Asterisk."""
    dialplans = folder / "dialplans"
    dialplans.mkdir(parents=True)
    for flow in (EXAMPLE / "dialplans").glob("*.yaml"):
        if flow.name in NOT_IVR_FLOWS:  # the booth flow needs a gateway and a number plan
            continue
        text = flow.read_text()
        text = re.sub(r"(?m)^(\s+)timeout: 5$", r"\1timeout: 2", text)
        text = re.sub(r"(?m)^(\s+)inter_digit_timeout: 2$", r"\1inter_digit_timeout: 1", text)
        (dialplans / flow.name).write_text(text)
    ari = env.ari
    (folder / "site.yaml").write_text("\n".join([
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        f"    ari: {{host: {ari.host}, port: {ari.port}, user: {ari.user}, password: {ari.password}, app: {ari.app}}}",
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {env.conf_dir}",
        "flows: dialplans/",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        '  - {range: "1001-1010", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
        "values:",
        '  operator: "1000"',
    ]) + "\n")
    return load_site(folder / "site.yaml")


def _install_sounds(env: PrivateAsterisk, site: Site) -> None:
    """What deploy installs: the site's prompts under <sounds>/switchctl/<site>/."""
    target = env.root / "usr" / "share" / "asterisk" / "sounds" / sounds_subdir(site)
    for rel, content in asterisk_sound_files(site).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


class Records(logging.Handler):
    """Every switchctl log record, with the time it was made."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def between(self, start: float, end: float) -> list[logging.LogRecord]:
        return [r for r in self.records if start <= r.created <= end and r.levelno >= logging.INFO]


@pytest.fixture
def switchctl_log() -> Iterator[Records]:
    logger = logging.getLogger("switchctl")
    handler = Records()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def killable(asterisk_chroot: Path, tmp_path: Path) -> Iterator[tuple[PrivateAsterisk, Site]]:  # noqa: F811
    env = create_private_asterisk(asterisk_chroot, tag="restart", log_dir=tmp_path, rtp=RTP_RANGE)
    site = _write_site(tmp_path / "site", env)
    env.write_config(render_asterisk(site))
    _install_sounds(env, site)
    yield from ((env, site) for env in running_private_asterisk(env))


def _sipp_env(env: PrivateAsterisk) -> AsteriskEnv:
    """The sipp helpers' view of the private Asterisk."""
    return dataclasses.replace(env_from_environment(), ari_port=env.ari.port, sip_port=env.sip_port)


async def _wait_for(what: str, condition: Callable[[], object], timeout: float) -> float:
    """Poll `condition()` every 50 ms; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _describe(records: Sequence[logging.LogRecord]) -> str:
    return "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in records)


# ------------------------------------------------------------------------------------------ fast, fake ARI


async def test_refused_reconnects_end_every_call_once(rig: Rig, switchctl_log: Records) -> None:  # noqa: F811
    call = await rig.call("k1")
    rig.fake.media_seconds["sound:switchctl/bar/long"] = 60.0
    playing = asyncio.create_task(call.play([f"{SOUNDS}/long.wav"]))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await rig.fake.close()  # the socket drops and the port refuses: Asterisk is gone
    with pytest.raises(CallGone) as gone:
        await asyncio.wait_for(playing, 2)
    assert gone.value.cause == "SWITCH_CONNECTION_LOST" == call.hangup_cause
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.5)  # many more refused attempts (backoff 0.05-0.1 s): nothing more is said
    warnings = [r for r in switchctl_log.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "ARI event stream lost (closed by Asterisk (code 1000)); reconnecting",
        "Asterisk is unreachable; ending its calls",
    ], _describe(warnings)


async def test_a_call_ended_in_the_outage_whose_channel_lives_is_hung_up(rig: Rig) -> None:  # noqa: F811
    ended = await rig.call("k2")
    kept = await rig.call("k3")
    ended.switch_lost()  # as if Asterisk had refused us, yet its channel is still there
    await rig.fake.drop()
    rig.fake.ws = await rig.fake.next_socket()
    await _wait_for("the orphan's hangup", lambda: rig.requests("k2", ""), 2)
    assert "k2" not in rig.switch.calls and "k3" in rig.switch.calls
    assert not rig.requests("k3", "")
    await kept.answer()  # the other call goes on


# ------------------------------------------------------------------------------------------ the real thing


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_after",
    [
        # the greeting (0.8 s) is playing: the flow waits for a PlaybackFinished that never comes
        pytest.param(0.3, id="during-the-greeting"),
        # the greeting is over: the flow waits for digits (2 s timeout)
        pytest.param(1.4, id="waiting-for-digits"),
    ],
)
async def test_asterisk_killed_mid_call_and_restarted(
    killable: tuple[PrivateAsterisk, Site], switchctl_log: Records, tmp_path: Path, kill_after: float
) -> None:
    env, site = killable
    checked = check_site(site)
    assert checked.ok, checked.report()
    traces: list[tuple[str, FlowTrace | None]] = []
    controller = Controller(site, checked.flows, on_trace=lambda uuid, trace: traces.append((uuid, trace)))
    await controller.start()
    switch = controller.asterisks["ast1"]
    sipp_env = _sipp_env(env)
    sipp: asyncio.subprocess.Process | None = None
    try:
        await switch.wait_connected(10)
        assert switch.stream.connections == 1

        # 1. a call that sits in the main menu (it sends no digit and waits for a BYE)
        scenario = _scenario(tmp_path, "uac_ivr_script_wait_bye.xml", [], "5550100")
        sipp = await asyncio.create_subprocess_exec(
            *sipp_command(sipp_env, scenario, "9000", timeout_s=30),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await _wait_for("the call answered in the controller",
                        lambda: any(c.info.answered for c in switch.calls.values()), 10)
        (channel,) = switch.calls
        await asyncio.sleep(kill_after)
        assert controller.stats.active == 1 and not traces

        # 2. SIGKILL
        killed_at = time.time()
        env.kill()

        # 3. the call ends in the controller, with nothing left running
        took = await _wait_for("the call ended in the controller", lambda: traces, 15)
        (uuid, trace), = traces
        assert uuid == channel and trace is not None
        assert trace.result == "caller_hangup" and trace.cause == "SWITCH_CONNECTION_LOST", trace
        assert trace.steps[-1] == ("main", "main_menu", "caller_hangup")
        # the first refused reconnect (0.5 s backoff) ends it, not the menu's timeout nor the restart
        assert took < 2.0, f"the call took {took:.2f} s to end"
        assert controller.stats.active == 0 and controller.stats.calls_finished == 1
        await _wait_for("the call's tasks ended", lambda: not switch.live_tasks, 3)
        print(f"call ended {took:.2f} s after the kill, cause {trace.cause}")

        # 4. the same Asterisk again after a few seconds; the controller reconnects by itself
        await asyncio.sleep(max(0.0, DOWN_S - (time.time() - killed_at)))  # failed reconnects meanwhile
        assert not switch.stream.connected and switch.stream.connections == 1
        env.launch()
        restarted_at = time.time()
        try:
            await switch.wait_connected(40)
        except TimeoutError:
            env.check_alive()
            raise
        back_at = time.time()
        assert switch.stream.connections == 2
        await _wait_for("the resync", lambda: switch.resyncs == 1, 3)
        assert not switch.calls  # the resync forgot the dead channel
        print(f"Asterisk down {restarted_at - killed_at:.1f} s, controller back {back_at - restarted_at:.2f} s after it")

        # 5. a new call runs the IVR path: 3 = opening hours (another flow), then goodbye
        seen = len(traces)
        result = await run_sipp(sipp_env, _scenario(tmp_path, "uac_ivr_script_wait_bye.xml", [(1.0, "3")], "5550101"),
                                "9000", timeout_s=20)
        assert result.returncode == 0, f"sipp exit {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-1000:]}"
        await _wait_for("the new call's trace", lambda: len(traces) > seen, 5)
        (_uuid2, trace2), = traces[seen:]
        assert trace2 is not None
        assert trace2.steps[:3] == [("main", "answer", "next"), ("main", "main_menu", "3"), ("main", "hours", "flow")]
        assert trace2.steps[-2:] == [("hours", "message", "next"), ("hours", "bye", "hangup")], trace2
        assert trace2.result == "hangup" and trace2.cause == "NORMAL_CLEARING", trace2
        assert controller.stats.active == 0 and not switch.live_tasks

        # 6. a bounded number of log lines from the kill until the new call
        outage = switchctl_log.between(killed_at, back_at + 0.5)
        print(_describe(outage))
        warnings = [r for r in outage if r.levelno >= logging.WARNING]
        assert len(warnings) <= MAX_WARNINGS, _describe(outage)
        assert len(outage) <= MAX_LINES, _describe(outage)
        about_stream = [r for r in outage if r.name == "switchctl.ari"]
        assert [r.levelname for r in about_stream] == ["WARNING", "INFO"], _describe(outage)
    finally:
        if sipp is not None and sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
        await controller.stop(grace=2)
