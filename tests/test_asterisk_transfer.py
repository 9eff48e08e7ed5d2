"""Transfer and conference primitives on Asterisk (asterisk_legs.py): originate, take_leg, Leg.park /
bridge / join_conference / on_dtmf, Call.hold / bridge / conference, Switch.conference_remove.

The slow tests run a *private* Asterisk (tests/private_asterisk.py) whose site has one gateway per
far-end behaviour, each a long-lived sipp UAS on loopback (tests/sipp/uas_*.xml):

    wait   rings 300 ms, answers, waits for the BYE        busy   486        ring   180 until CANCEL
    dtmf   answers, presses `*2201#` (RFC 2833) from 800 ms on, waits (uas_answer_dtmf.xml, -key dtmf_pcap)

The caller (A) is a sipp UAC into Stasis (tests/test_asterisk_dial.py's Direct); the test drives
its AsteriskCall directly. After every test no channel, no bridge and no leg is left.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchctl.ari import AriClient
from switchctl.config.site import load_site
from switchctl.democall import write_dtmf_pcap
from switchctl.render.asterisk import render_asterisk
from switchctl.switch.asterisk import AsteriskCall, AsteriskSwitch, sound_uri_for_site
from switchctl.switch.asterisk_dial import DialLeg
from switchctl.switch.asterisk_legs import AsteriskLeg, LegBook, music_segments
from switchctl.switch.asterisk_media import Silence, Tone
from switchctl.switch.call import (
    CallError,
    CallGone,
    DialAnswer,
    DialFailed,
    DialOutcome,
    DialSpec,
    DialTarget,
    OriginateSpec,
)
from tests.asterisk_fixture import SIPP_DIR, free_udp_port
from tests.private_asterisk import (  # noqa: F401  (asterisk_chroot is a fixture)
    PrivateAsterisk,
    asterisk_chroot,
    create_private_asterisk,
    start_sipp_uas,
    stop_processes,
    wait_for_pjsip_endpoint,
)
from tests.test_asterisk_dial import (
    EXAMPLE,
    SITE_NAME,
    DialRig,
    Direct,
    _finish,
    _near_now,
    _write_site,
)

RTP_RANGE = (21000, 21999)  # shared 10000-, deploy 12000-, restart 13000-/14000-, dial 16000-, prepaid 18000-/23000-
DIGITS = "*2201#"
UAS: dict[str, tuple[str, tuple[str, ...]]] = {  # gateway -> (scenario, extra sipp arguments)
    "wait": ("uas_answer_wait.xml", ()),
    "busy": ("uas_busy.xml", ()),
    "ring": ("uas_ring_forever.xml", ()),
    "dtmf": ("uas_answer_dtmf.xml", ("-key", "dtmf_pcap", "@@PCAP@@")),
}
DIGIT_SCRIPT = [(0.8, DIGITS[0]), *((0.25, digit) for digit in DIGITS[1:])]  # (seconds after the previous, digit)
TONE = "tone_stream://%(400,200,440)"


# ------------------------------------------------------------------------------------------ fast


def test_music_is_one_cadence_of_a_tone_or_a_prompt() -> None:
    assert music_segments("tone_stream://%(2000,4000,440,480);loops=-1", lambda p: p) == [
        Tone("tone:!440+480/2000", 2.0), Silence(4.0)]
    with pytest.raises(CallError, match="music"):
        music_segments("silence_stream://100", lambda p: p)


async def test_a_feature_bridge_pair_is_dissolved_when_one_side_hangs_up() -> None:
    """Without a switch: the bookkeeping that decides what the other side of a pair learns."""

    class NoClient:
        def __init__(self) -> None:
            self.deleted: list[str] = []

        async def destroy_bridge(self, bridge_id: str) -> None:
            self.deleted.append(bridge_id)

    client = NoClient()
    book = LegBook("ast", client, lambda p: p, {}, {})  # type: ignore[arg-type]
    from switchctl.switch.asterisk_legs import FeatureBridge

    pair = FeatureBridge("p1", members={"a", "b"})
    book.where.update(a=pair, b=pair)
    seat = asyncio.get_running_loop().create_future()
    book.seats["a"] = seat
    book.member_gone("b")
    assert seat.result() == "peer_gone" and not book.where
    room = FeatureBridge("r1", room="lobby", members={"x", "y"})
    book.rooms["lobby"] = room
    book.where.update(x=room, y=room)
    book.member_gone("x")
    assert book.rooms["lobby"] is room and book.where == {"y": room}
    book.member_gone("y")
    assert "lobby" not in book.rooms
    await asyncio.sleep(0.01)
    assert client.deleted == ["p1", "r1"]


async def test_a_leg_routes_its_digits_to_the_handler() -> None:
    from tests.test_asterisk_dial import _event

    leg = DialLeg("b1", DialTarget("gateway", "1", gateway="g"), 5)
    digits: list[str] = []
    leg.dtmf_handler = digits.append
    leg.on_event(_event("ChannelDtmfReceived", digit="5", duration_ms=100))
    leg.dtmf_handler = None
    leg.on_event(_event("ChannelDtmfReceived", digit="6", duration_ms=100))
    assert digits == ["5"]


# ------------------------------------------------------------------------------------------ slow: setup


@pytest.fixture(scope="module")
def transfer_rig(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialRig]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("asttransfer")
    env = create_private_asterisk(asterisk_chroot, tag="transfer", log_dir=tmp, rtp=RTP_RANGE)
    ports = {name: free_udp_port() for name in UAS}
    logs: dict[str, Path] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        site = load_site(_write_site(tmp / "site", env, ports))
        env.write_config(render_asterisk(site))
        pcap = tmp / "digits.pcap"
        write_dtmf_pcap(pcap, DIGIT_SCRIPT)
        for name, (scenario, extra) in UAS.items():
            extra = tuple(str(pcap) if arg == "@@PCAP@@" else arg for arg in extra)
            logs[name] = tmp / f"uas_{name}_messages.log"
            procs.append(start_sipp_uas(SIPP_DIR / scenario, ports[name], logs[name], *extra))
        env.start()
        wait_for_pjsip_endpoint(env, "wait")
        for proc in procs:
            assert proc.poll() is None, f"a sipp UAS exited at once: {proc.args}"
        yield DialRig(env, ports, logs, tmp)
    finally:
        stop_processes(procs)
        env.stop()
        env.remove()


@pytest.fixture
async def tx(transfer_rig: DialRig):
    transfer_rig.env.check_alive()
    calls: asyncio.Queue[AsteriskCall] = asyncio.Queue()
    done = asyncio.Event()

    async def on_call(call: AsteriskCall) -> None:
        calls.put_nowait(call)
        await done.wait()

    ari = transfer_rig.env.ari
    client = AriClient(f"http://127.0.0.1:{ari.port}", ari.user, ari.password, ari.app)
    switch = AsteriskSwitch("ast1", client, sound_uri=sound_uri_for_site(SITE_NAME, [EXAMPLE / "sounds"]),
                            on_call=on_call)
    switch.start()
    await switch.wait_connected(10)
    d = Direct(transfer_rig, switch, calls, [])
    try:
        yield d
        for leg in list(switch.book.legs.values()):
            await leg.hangup()
        for call in list(switch.calls.values()):
            await call.hangup()
        deadline = time.monotonic() + 4
        while (await d.channels() or await d.bridges()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await d.channels() == [] and await d.bridges() == [], "channels or bridges left behind"
        assert not switch.legs and not switch.book.legs and not switch.book.where and not switch.book.rooms
    finally:
        done.set()
        await switch.stop(grace=1)


def target(gateway: str, number: str = "5000", timeout: float | None = None) -> DialTarget:
    return DialTarget("gateway", number, gateway=gateway, timeout=timeout)


async def members(d: Direct) -> list[set[str]]:
    return [set(b.channels) for b in await d.switch.client.list_bridges()]


async def eventually(check, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def dial_and_take(d: Direct, call: AsteriskCall, gateway: str = "wait", *, feature_keys: bool = True,
                        ) -> tuple[asyncio.Task, asyncio.Future[AsteriskLeg]]:  # type: ignore[type-arg]
    """A's dial to `gateway` running in a task; the answered peer taken over in on_answer."""
    taken: asyncio.Future[AsteriskLeg] = asyncio.get_running_loop().create_future()

    async def on_answer(answer: DialAnswer) -> None:
        taken.set_result(await d.switch.take_leg(answer.peer_uuid))

    spec = DialSpec([[target(gateway)]], timeout=5, on_answer=on_answer, feature_keys=feature_keys)
    dialing = asyncio.create_task(call.dial(spec))
    await asyncio.wait_for(asyncio.shield(taken), 5)
    await eventually(lambda: _bridged(d, {call.uuid, taken.result().uuid}))
    return dialing, taken


async def _bridged(d: Direct, channels: set[str]) -> bool:
    return channels in await members(d)


# ------------------------------------------------------------------------------------------ slow: originate


@pytest.mark.slow
async def test_originate_answers_a_parked_leg(tx: Direct) -> None:
    leg = await tx.switch.originate(OriginateSpec(target("wait", "5100"), timeout=5, caller_id_number="5557777"))
    assert leg.hangup_cause is None and _near_now(leg.answered_at_us) and leg.target == target("wait", "5100")
    assert len(await tx.channels()) == 1 and await tx.bridges() == []  # parked: in no bridge
    assert leg.uuid not in tx.switch.calls  # never a flow's call
    await leg.announce("tone_stream://%(200,0,800)")
    await leg.hangup()
    assert leg.hangup_cause == "NORMAL_CLEARING" and await leg.wait_hangup() == "NORMAL_CLEARING"
    assert await tx.channels() == []


@pytest.mark.slow
@pytest.mark.parametrize(("gateway", "outcome", "cause", "timeout"), [
    pytest.param("busy", DialOutcome.BUSY, "USER_BUSY", 5.0, id="busy"),
    pytest.param("ring", DialOutcome.NO_ANSWER, "NO_ANSWER", 1.0, id="no-answer"),
])
async def test_originate_failures_raise_dial_failed(tx: Direct, gateway: str, outcome: DialOutcome, cause: str,
                                                    timeout: float) -> None:
    started = time.monotonic()
    with pytest.raises(DialFailed) as failed:
        await tx.switch.originate(OriginateSpec(target(gateway), timeout=timeout))
    assert (failed.value.outcome, failed.value.cause) == (outcome, cause)
    assert time.monotonic() - started < timeout + 2
    assert await tx.channels() == [] and not tx.switch.legs


@pytest.mark.slow
async def test_cancelling_originate_hangs_up_the_ringing_leg(tx: Direct) -> None:
    ringing = asyncio.create_task(tx.switch.originate(OriginateSpec(target("ring"), timeout=10)))
    await eventually(lambda: _count(tx, 1))
    ringing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ringing
    assert await tx.channels() == [] and not tx.switch.legs


async def _count(d: Direct, n: int) -> bool:
    return len(await d.channels()) == n


# ------------------------------------------------------------------------------------------ slow: take_leg


@pytest.mark.slow
async def test_parking_a_taken_peer_ends_the_dial_transferred_both_up(tx: Direct) -> None:
    sipp, call = await tx.caller("7400")
    await call.answer()
    dialing, taken = await dial_and_take(tx, call)
    leg = taken.result()
    await asyncio.sleep(0.5)
    await leg.park(TONE)
    result = await asyncio.wait_for(dialing, 3)
    assert result.outcome is DialOutcome.ANSWERED and result.cause == "TRANSFERRED" and not result.caller_hung_up
    assert result.peer_uuid == leg.uuid and 300_000 < result.talk_us < 2_000_000, result
    assert not call.gone and not leg.gone
    assert len(await tx.channels()) == 2  # both up
    await eventually(lambda: _no_bridges(tx))  # the dial's bridge gone (GET may lag its DELETE a moment)
    await call.play(["tone_stream://%(200,0,800)"])  # A is still the flow's
    await asyncio.sleep(0.3)
    assert not leg.gone  # A's dial ending did not take B with it
    await leg.hangup()
    await _finish(call, sipp)


@pytest.mark.slow
async def test_a_taken_peer_still_in_the_dial_hangs_up_with_the_caller(tx: Direct) -> None:
    sipp, call = await tx.caller("7401")
    await call.answer()
    dialing, taken = await dial_and_take(tx, call)
    await call.hangup()
    result = await asyncio.wait_for(dialing, 5)
    assert result.caller_hung_up and taken.result().gone
    await _finish(call, sipp)


@pytest.mark.slow
async def test_consult_leg_bridge_and_a_leg_left_parked_when_the_other_hangs_up(tx: Direct) -> None:
    sipp, call = await tx.caller("7402")
    await call.answer()
    dialing, taken = await dial_and_take(tx, call)
    leg_b = taken.result()
    await leg_b.park(TONE)
    assert (await asyncio.wait_for(dialing, 3)).cause == "TRANSFERRED"
    await call.hold(TONE)  # A waits with music while B consults C
    leg_c = await tx.switch.originate(OriginateSpec(target("wait", "5200"), timeout=5))
    await leg_b.bridge(leg_c)
    assert await members(tx) == [{leg_b.uuid, leg_c.uuid}]
    await leg_c.hangup()
    await eventually(lambda: _no_bridges(tx))
    await asyncio.sleep(0.3)
    assert not leg_b.gone  # the Leg rule: never hung up because the other side did
    # complete the transfer the other way: A with B
    bridging = asyncio.create_task(call.bridge(leg_b))
    await eventually(lambda: _bridged(tx, {call.uuid, leg_b.uuid}))
    await leg_b.hangup()
    result = await asyncio.wait_for(bridging, 3)
    assert result.outcome is DialOutcome.ANSWERED and result.cause == "NORMAL_CLEARING"
    assert not result.caller_hung_up and result.peer_uuid == leg_b.uuid and result.talk_us > 0
    assert not call.gone
    await _finish(call, sipp)


async def _no_bridges(d: Direct) -> bool:
    return await d.bridges() == []


# ------------------------------------------------------------------------------------------ slow: Call.bridge


@pytest.mark.slow
async def test_call_bridge_ends_transferred_when_the_leg_is_moved_and_the_leg_survives_the_caller(tx: Direct) -> None:
    sipp, call = await tx.caller("7403", bye_after_ms=2500)
    await call.answer()
    await call.hold(TONE)
    leg = await tx.switch.originate(OriginateSpec(target("wait", "5300"), timeout=5))
    bridging = asyncio.create_task(call.bridge(leg))
    await eventually(lambda: _bridged(tx, {call.uuid, leg.uuid}))
    await leg.park()
    result = await asyncio.wait_for(bridging, 3)
    assert result.cause == "TRANSFERRED" and not result.caller_hung_up and result.talk_us > 0, result
    assert not leg.gone and not call.gone
    # the pair is dissolved by the leg's move, which may finish just after the caller's bridge returned
    await eventually(lambda: _no_bridges(tx))
    # again, and now the caller hangs up (its sipp sends BYE 2.5 s after the answer)
    result = await asyncio.wait_for(call.bridge(leg), 5)
    assert result.caller_hung_up and result.cause == "NORMAL_CLEARING" and result.talk_us > 0, result
    await eventually(lambda: _no_bridges(tx))
    await asyncio.sleep(0.3)
    assert not leg.gone  # left parked, the feature hangs it up
    with pytest.raises(CallGone):
        await call.bridge(leg)
    await leg.hangup()
    await _finish(call, sipp)


@pytest.mark.slow
async def test_hold_with_music_on_hold_then_bridge_a_leg_already_gone_fails(tx: Direct) -> None:
    sipp, call = await tx.caller("7404")
    await call.answer()
    await call.hold()  # POST /channels/{id}/moh
    leg = await tx.switch.originate(OriginateSpec(target("wait", "5400"), timeout=5))
    await leg.hangup()
    result = await call.bridge(leg)
    assert result.outcome is DialOutcome.FAILED and result.cause == "NORMAL_CLEARING"
    await call.play(["tone_stream://%(200,0,800)"])
    await _finish(call, sipp)


# ------------------------------------------------------------------------------------------ slow: conference


@pytest.mark.slow
async def test_conference_with_the_caller_and_two_legs_and_conference_remove(tx: Direct) -> None:
    sipp, call = await tx.caller("7405")
    await call.answer()
    leg_b = await tx.switch.originate(OriginateSpec(target("wait", "5501"), timeout=5))
    leg_c = await tx.switch.originate(OriginateSpec(target("wait", "5502"), timeout=5))
    await leg_b.join_conference("room1")
    await leg_c.join_conference("room1")
    conferencing = asyncio.create_task(call.conference("room1"))
    await eventually(lambda: _bridged(tx, {call.uuid, leg_b.uuid, leg_c.uuid}))
    assert len(await tx.bridges()) == 1
    await tx.switch.conference_remove("room1", call.uuid)
    assert await asyncio.wait_for(conferencing, 3) == "left"
    assert await members(tx) == [{leg_b.uuid, leg_c.uuid}] and not call.gone
    await leg_b.hangup()  # C stays in the room, alone
    await eventually(lambda: _bridged(tx, {leg_c.uuid}))
    assert not leg_c.gone
    await leg_c.park()  # the last member left: the room is gone
    await eventually(lambda: _no_bridges(tx))
    assert "room1" not in tx.switch.book.rooms
    # A back in a room, and hanging up there
    conferencing = asyncio.create_task(call.conference("room2"))
    await leg_c.join_conference("room2")
    await eventually(lambda: _bridged(tx, {call.uuid, leg_c.uuid}))
    await call.hangup()
    with pytest.raises(CallGone):
        await asyncio.wait_for(conferencing, 3)
    await leg_c.hangup()
    await _finish(call, sipp)


# ------------------------------------------------------------------------------------------ slow: DTMF


@pytest.mark.slow
async def test_digits_pressed_by_a_taken_peer_reach_on_dtmf(tx: Direct) -> None:
    sipp, call = await tx.caller("7406")
    await call.answer()
    dialing, taken = await dial_and_take(tx, call, "dtmf")
    pressed: list[str] = []
    taken.result().on_dtmf(pressed.append)
    deadline = time.monotonic() + 5
    while "".join(pressed) != DIGITS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "".join(pressed) == DIGITS
    await call.hangup()
    assert (await asyncio.wait_for(dialing, 5)).caller_hung_up
    await _finish(call, sipp)


@pytest.mark.slow
async def test_a_dial_without_feature_keys_may_bridge_natively_and_keys_pass_by(tx: Direct) -> None:
    # The cheaper bridge of a plain call (a booth's paid dial): Asterisk may pick native RTP, so
    # the far end's RFC 2833 keys go past it: nothing reaches the controller.
    sipp, call = await tx.caller("7407")
    await call.answer()
    dialing, taken = await dial_and_take(tx, call, "dtmf", feature_keys=False)
    [bridge] = await tx.switch.client.list_bridges()
    assert "dtmf_events" not in str(bridge.raw.get("bridge_type")), bridge.raw
    pressed: list[str] = []
    taken.result().on_dtmf(pressed.append)
    await asyncio.sleep(3)  # the far end presses its keys 0.8 s into the call
    assert pressed == []
    await call.hangup()
    assert (await asyncio.wait_for(dialing, 5)).caller_hung_up
    await _finish(call, sipp)


@pytest.mark.slow
async def test_digits_pressed_by_an_originated_parked_leg_reach_on_dtmf(tx: Direct) -> None:
    pressed: list[str] = []
    leg = await tx.switch.originate(OriginateSpec(target("dtmf", "5600"), timeout=5))
    leg.on_dtmf(pressed.append)
    deadline = time.monotonic() + 5
    while "".join(pressed) != DIGITS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "".join(pressed) == DIGITS
    await leg.hangup()
