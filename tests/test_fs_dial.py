"""FreeSwitchCall.dial / announce: the bridge completion parser on the real s3 captures, and dial
against the simulator (every outcome, sequential and simultaneous ringing, hangups, announce)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from switchctl.esl.codec import FrameParser, parse_plain_event
from switchctl.esl.outbound import OutboundServer, OutboundSession
from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
from switchctl.sim.bridge import parse_dial_groups
from switchctl.sim.config import GatewayBehaviour
from switchctl.switch.call import (
    CallError, CallGone, DialAnswer, DialOutcome, DialSpec, DialTarget,
)
from switchctl.switch.freeswitch import (
    CALL_EVENTS, FreeSwitchCall, call_info_from_channel_data, dial_result_from_bridge, dial_string,
)
from tests.capturepaths import CAPTURES

S3 = CAPTURES / "freeswitch-scenarios/s3_bridge"


def load_event(path):
    parser = FrameParser()
    frames = parser.feed(path.read_bytes())
    assert len(frames) == 1
    return parse_plain_event(frames[0].body)


# case: (outcome, cause, caller gone, peer uuid prefix or None)
S3_EXPECTED = {
    "b1_answered_then_b_hangs_up": (DialOutcome.ANSWERED, "NORMAL_CLEARING", False, "ddd690ae"),
    "b2_busy_486": (DialOutcome.BUSY, "USER_BUSY", True, None),
    "b2c_busy_486_continue_on_fail": (DialOutcome.BUSY, "USER_BUSY", False, None),
    "b3_no_answer_leg_timeout_5": (DialOutcome.NO_ANSWER, "ALLOTTED_TIMEOUT", True, None),
    "b3b_no_answer_call_timeout_5_continue_on_fail": (DialOutcome.NO_ANSWER, "NO_ANSWER", False, None),
    "b3c_no_answer_originate_timeout_5": (DialOutcome.NO_ANSWER, "NO_ANSWER", False, None),
    "b4_user_not_registered": (DialOutcome.FAILED, "USER_NOT_REGISTERED", True, None),
    "b5_unreachable_udp": (DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE", True, None),
    "b5b_unreachable_tcp": (DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE", True, None),
    "b6_unanswered_a_early_media_then_answer": (DialOutcome.ANSWERED, "NORMAL_CLEARING", False, "defdcd14"),
    "b7_unanswered_a_ringing_no_answer": (DialOutcome.NO_ANSWER, "NO_ANSWER", False, None),
}


@pytest.mark.parametrize("case", sorted(S3_EXPECTED))
def test_bridge_completion_parser_on_capture(case):
    done = load_event(S3 / f"{case}.A.CHANNEL_EXECUTE_COMPLETE_bridge.plain.raw")
    bridge = None
    if S3_EXPECTED[case][0] is DialOutcome.ANSWERED:
        [path] = sorted((S3 / f"{case}.A_outbound.msgs").glob("*_CHANNEL_BRIDGE.raw"))
        bridge = load_event(path)
    result = dial_result_from_bridge(done, bridge=bridge)
    outcome, cause, gone, peer = S3_EXPECTED[case]
    assert (result.outcome, result.cause, result.caller_hung_up) == (outcome, cause, gone)
    assert result.ended_at_us == int(done["Event-Date-Timestamp"])
    if peer:
        assert result.peer_uuid.startswith(peer)
        # early-media bridge: Other-Leg-Channel-Answered-Time is 0, the bridge time stands in
        assert result.answered_at_us == int(bridge["Caller-Channel-Bridged-Time"])
        assert result.talk_us == result.ended_at_us - result.answered_at_us > 0
    else:
        assert result.peer_uuid is None and result.talk_us == 0


# --- real FreeSWITCH 1.11.1 runs of FreeSwitchCall.dial (tests/data/fsreal_dial/README.md) ----------------------

FSREAL = Path(__file__).parent / "data" / "fsreal_dial"
FSREAL_B_LEGS = json.loads((FSREAL / "b_legs.json").read_text())

# case: (outcome, cause, caller gone, the target the result names: gateway name or phone extension)
FSREAL_EXPECTED = {
    "answered": (DialOutcome.ANSWERED, "NORMAL_CLEARING", False, "gwans"),
    "busy": (DialOutcome.BUSY, "USER_BUSY", False, "gwbusy"),
    "rejected": (DialOutcome.REJECTED, "CALL_REJECTED", False, "gwdecl"),
    "no_answer": (DialOutcome.NO_ANSWER, "ALLOTTED_TIMEOUT", False, "gwring"),
    "unreachable": (DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE", False, "gwdead"),
    "unregistered": (DialOutcome.FAILED, "USER_NOT_REGISTERED", False, "1002"),
    "sequential": (DialOutcome.ANSWERED, "NORMAL_CLEARING", False, "gwans"),  # busy | ring 3 s | answer
    "simultaneous": (DialOutcome.ANSWERED, "NORMAL_CLEARING", False, "gwans"),  # ring, answer, busy at once
    # a whole group failed: FreeSWITCH reports its FIRST leg's cause (dial order), whichever failed first
    "simul_all_fail": (DialOutcome.BUSY, "USER_BUSY", False, "gwbusy"),  # busy, decline
    "simul_all_fail2": (DialOutcome.REJECTED, "CALL_REJECTED", False, "gwdecl"),  # decline, ring 3 s
    "simul_ring_busy": (DialOutcome.NO_ANSWER, "ALLOTTED_TIMEOUT", False, "gwring"),  # busy failed 3 s earlier
    "simul_ring_decl_busy": (DialOutcome.NO_ANSWER, "ALLOTTED_TIMEOUT", False, "gwring"),
    "simul_unreg_busy": (DialOutcome.BUSY, "USER_BUSY", False, "gwbusy"),  # no channel for the unregistered
    "simul_busy_unreg": (DialOutcome.BUSY, "USER_BUSY", False, "gwbusy"),
    "seq_busy_decl": (DialOutcome.REJECTED, "CALL_REJECTED", False, "gwdecl"),
    "seq_busy_unreg": (DialOutcome.FAILED, "USER_NOT_REGISTERED", False, "1002"),
    "caller_hangup_ringing": (None, "NORMAL_CLEARING", True, "gwring"),  # dial raises CallGone
    "caller_hangup_bridge": (DialOutcome.ANSWERED, "NORMAL_CLEARING", True, "gwwait"),
    "announce_then_hangup": (DialOutcome.ANSWERED, "NORMAL_CLEARING", True, "gwwait"),  # we hung up at +5 s
    "our_hangup_bridge": (DialOutcome.ANSWERED, "NORMAL_CLEARING", True, "gwwait"),
}


def fsreal_dial(done):
    """Targets by origination uuid, and the uuids per group, from the dial string the bridge ran."""
    _, groups = parse_dial_groups(done["Application-Data"])
    targets, leg_groups = {}, []
    for group in groups:
        leg_groups.append([target.variables["origination_uuid"] for target in group])
        for target in group:
            timeout = float(target.variables["leg_timeout"])
            if target.dial.startswith("sofia/gateway/"):
                _, _, gateway, number = target.dial.split("/")
                dial_target = DialTarget("gateway", number, gateway=gateway, timeout=timeout)
            else:
                dial_target = DialTarget("phone", target.dial[len("user/"):].split("@")[0], timeout=timeout)
            targets[target.variables["origination_uuid"]] = dial_target
    return targets, leg_groups


def target_label(target):
    return target.gateway if target.kind == "gateway" else target.address


def test_fsreal_captures_are_all_checked():
    assert {p.name.split(".")[0] for p in FSREAL.glob("*.CHANNEL_EXECUTE_COMPLETE_bridge.raw")} == set(FSREAL_EXPECTED)


@pytest.mark.parametrize("case", sorted(FSREAL_EXPECTED))
def test_bridge_completion_parser_on_real_dial(case):
    done = load_event(FSREAL / f"{case}.CHANNEL_EXECUTE_COMPLETE_bridge.raw")
    bridge_path = FSREAL / f"{case}.CHANNEL_BRIDGE.raw"
    bridge = load_event(bridge_path) if bridge_path.exists() else None
    targets, leg_groups = fsreal_dial(done)
    last_target = targets[leg_groups[-1][-1]]
    result = dial_result_from_bridge(done, bridge=bridge, targets=targets, last_target=last_target,
                                     leg_groups=leg_groups)
    outcome, cause, gone, label = FSREAL_EXPECTED[case]
    assert (result.cause, result.caller_hung_up) == (cause if outcome else result.cause, gone)
    assert target_label(result.target) == label
    b_legs = FSREAL_B_LEGS[case]["b_legs"]
    assert FSREAL_B_LEGS[case]["channels_after"] == "0 total."  # no leg left behind on the real switch
    if outcome is None:  # caller hung up while ringing: the ringing leg was cancelled
        assert result.outcome is not DialOutcome.ANSWERED and result.caller_hung_up
        assert [leg["cause"] for leg in b_legs.values()] == ["ORIGINATOR_CANCEL"]
        return
    assert result.outcome is outcome
    if outcome is DialOutcome.ANSWERED:
        peer = b_legs[result.peer_uuid]
        # ignore_early_media=true: CHANNEL_BRIDGE carries the B leg's real answer time (not 0, s3 b1)...
        assert int(bridge["Other-Leg-Channel-Answered-Time"]) == int(peer["answered_at"]) > 0
        assert result.answered_at_us == int(peer["answered_at"])
        # ...and talk time from the switch's own stamps is the B leg's billusec, or one media tick more: the
        # bridge completes on the A leg's next 20 ms frame after B hung up ("answered": +20005 µs; the
        # completion carries no B hangup time, Other-Leg-Channel-Hangup-Time is 0)
        assert 0 <= result.talk_us - int(peer["billusec"]) <= 20_010
        assert 0 <= result.ended_at_us - int(peer["hangup_at"]) <= 20_010
    else:
        assert result.peer_uuid is None and result.talk_us == 0


def test_losing_legs_of_a_real_simultaneous_dial():
    """The ringing leg that lost is hung up with LOSE_RACE; a leg that had failed keeps its own cause."""
    done = load_event(FSREAL / "simultaneous.CHANNEL_EXECUTE_COMPLETE_bridge.raw")
    targets, _ = fsreal_dial(done)
    causes = {target_label(targets[uuid]): leg["cause"]
              for uuid, leg in FSREAL_B_LEGS["simultaneous"]["b_legs"].items()}
    assert causes == {"gwring": "LOSE_RACE", "gwans": "NORMAL_CLEARING", "gwbusy": "USER_BUSY"}


def test_real_completion_after_a_side_hangup_has_no_last_bridge_hangup_cause():
    for case in ("caller_hangup_bridge", "our_hangup_bridge"):
        done = load_event(FSREAL / f"{case}.CHANNEL_EXECUTE_COMPLETE_bridge.raw")
        assert done["Answer-State"] == "hangup" and done.get("variable_last_bridge_hangup_cause") is None
        assert done["variable_bridge_hangup_cause"] == "NORMAL_CLEARING"


def test_real_announce_runs_inside_the_bridge():
    """uuid_broadcast aleg during a bridge: the playback runs on the A leg and completes (its own
    Application-UUID, not one we sent) while the bridge goes on until our hangup ~2 s after the playback ended."""
    play = load_event(FSREAL / "announce_then_hangup.CHANNEL_EXECUTE_COMPLETE_playback.raw")
    done = load_event(FSREAL / "announce_then_hangup.CHANNEL_EXECUTE_COMPLETE_bridge.raw")
    sent = (FSREAL / "announce_then_hangup.sent.raw").read_text()
    assert play["Application-Response"] == "FILE PLAYED" and play["Answer-State"] == "answered"
    assert play["Application-UUID"] not in sent and done["Application-UUID"] in sent
    assert int(done["Event-Date-Timestamp"]) - int(play["Event-Date-Timestamp"]) > 1_500_000
    assert f"api uuid_broadcast {done['Unique-ID']} tone_stream://" in sent and sent.count("aleg\n") == 1


def test_dial_string_shape():
    spec = DialSpec(groups=[[DialTarget("phone", "1002"), DialTarget("gateway", "5551234", gateway="gw1", timeout=7.5)],
                            [DialTarget("uri", "sip:bob@127.0.0.1:5099")]],
                    timeout=20, caller_id_number="555", caller_id_name="Bar One", variables={"x": "1"})
    text = dial_string(spec, domain="pbx.local", profile="internal", leg_uuids=[["u1", "u2"], ["u3"]])
    assert text == ("{ignore_early_media=true,origination_caller_id_number=555,origination_caller_id_name=Bar One,x=1}"
                    "[leg_timeout=20,origination_uuid=u1]user/1002@pbx.local,"
                    "[leg_timeout=8,origination_uuid=u2]sofia/gateway/gw1/5551234|"
                    "[leg_timeout=20,origination_uuid=u3]sofia/internal/sip:bob@127.0.0.1:5099")


@pytest.mark.parametrize("target", [DialTarget("phone", "10 02"), DialTarget("phone", "1002,1003"),
                                    DialTarget("gateway", "555|1", gateway="gw"), DialTarget("gateway", "555"),
                                    DialTarget("fax", "1")])
def test_dial_string_refuses_bad_targets(target):
    with pytest.raises(CallError):
        dial_string(DialSpec(groups=[[target]]), domain=None, profile="internal", leg_uuids=[["u"]])


# --- against the simulator ----------------------------------------------------------------------------------

SPEED = 20.0
USERS = {
    "2001": UserBehaviour(answer_after=1.0),  # answers after 1 s, stays
    "2002": UserBehaviour(answer_after=1.0, hangup_after=2.0),  # answers, hangs up 2 s later
    "2003": UserBehaviour(busy=True),
    "2004": UserBehaviour(reject=True),
    "2005": UserBehaviour(answer_after=None),  # rings forever
    "2006": UserBehaviour(registered=False),
    "2007": UserBehaviour(reachable=False),
    "2008": UserBehaviour(answer_after=1.0, early_media=True, hangup_after=2.0),
}
GATEWAYS = {"gw1": GatewayBehaviour(answer_after=0.5, hangup_after=1.0), "down": GatewayBehaviour(reachable=False)}


def phone(ext, timeout=None):
    return DialTarget("phone", ext, timeout=timeout)


async def run_call(scenario, *, caller_hangup_after=None):
    """One simulated call to a socket route; `scenario(call, sim_call)` drives the FreeSwitchCall.
    Returns (scenario result or exception, sim CallResult, sim)."""
    outcome = {}

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
            outcome["bytes"] = session.bytes_received
            await call.hangup()

    server = OutboundServer(handler, port=0)
    await server.start()
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^9000$", "socket", f"127.0.0.1:{server.port} async full")],
                                  users=USERS, gateways=GATEWAYS, media_speed=SPEED,
                                  domain="127.0.0.1"))
    await sim.start()
    try:
        sim_call = sim.place_call("9000", "1001", hangup_after=caller_hangup_after)
        result = await asyncio.wait_for(sim_call.done, 10)
        for _ in range(100):  # B legs are destroyed by their own tasks
            if not sim.channels:
                break
            await asyncio.sleep(0.01)
        assert not sim.channels, f"legs left behind: {[c.data.name for c in sim.channels.values()]}"
    finally:
        await sim.close()
        await server.close()
    return outcome["value"], result, sim


async def test_answered_reports_answer_time_and_talk_time():
    answers: list[DialAnswer] = []

    async def on_answer(answer: DialAnswer) -> None:
        answers.append(answer)

    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[phone("2002")]], on_answer=on_answer))

    result, _, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.cause == "NORMAL_CLEARING"
    assert not result.caller_hung_up
    assert len(answers) == 1 and answers[0].peer_uuid == result.peer_uuid and answers[0].target == phone("2002")
    assert answers[0].answered_at_us == result.answered_at_us > 0
    # B talked 2 media seconds: 0.1 s of wall time at SPEED 20
    assert 0.07e6 < result.talk_us < 0.5e6


async def test_early_media_phone_bridges_at_answer_not_at_183():
    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[phone("2008")]]))

    result, _, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.answered_at_us > 0
    assert 0.07e6 < result.talk_us < 0.5e6  # ignore_early_media: the 1 s of ringing is not talk time


@pytest.mark.parametrize("ext,outcome,cause", [
    ("2003", DialOutcome.BUSY, "USER_BUSY"),
    ("2004", DialOutcome.REJECTED, "CALL_REJECTED"),
    ("2006", DialOutcome.FAILED, "USER_NOT_REGISTERED"),
    ("2007", DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE"),
    ("9999", DialOutcome.FAILED, "SUBSCRIBER_ABSENT"),
])
async def test_failed_dials_leave_the_caller_up(ext, outcome, cause):
    async def scenario(call, _):
        result = await call.dial(DialSpec(groups=[[phone(ext)]]))
        await call.play(["tone_stream://%(100,0,440)"])  # the caller is still there
        return result

    result, sim_result, _ = await run_call(scenario)
    assert (result.outcome, result.cause, result.caller_hung_up) == (outcome, cause, False)
    assert sim_result.hangup_cause == "NORMAL_CLEARING" and sim_result.hangup_by == "switch"


async def test_no_answer_by_leg_timeout():
    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[phone("2005")]], timeout=2))

    result, _, _ = await run_call(scenario)
    assert (result.outcome, result.cause) == (DialOutcome.NO_ANSWER, "ALLOTTED_TIMEOUT")
    assert result.target == phone("2005")


async def test_gateways_answer_and_fail():
    async def scenario(call, _):
        down = await call.dial(DialSpec(groups=[[DialTarget("gateway", "5551234", gateway="down")]]))
        up = await call.dial(DialSpec(groups=[[DialTarget("gateway", "5551234", gateway="gw1")]]))
        return down, up

    (down, up), _, _ = await run_call(scenario)
    assert (down.outcome, down.cause) == (DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE")
    assert up.outcome is DialOutcome.ANSWERED and up.target.gateway == "gw1"


async def test_sequential_busy_then_answer():
    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[phone("2003")], [phone("2002")]]))

    result, _, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.target == phone("2002")


async def test_simultaneous_first_answer_wins_ringing_leg_cancelled(monkeypatch):
    legs = []
    register = FreeSwitchSim.register_channel

    def recording(self, channel):
        legs.append(channel)
        register(self, channel)

    monkeypatch.setattr(FreeSwitchSim, "register_channel", recording)

    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[phone("2005"), phone("2002")]]))

    result, _, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.target == phone("2002")
    causes = {leg.data.destination: leg.data.hangup_cause for leg in legs}
    assert causes["2005"] == "LOSE_RACE"  # the ringing leg was cancelled when 2002 answered
    assert causes["2002"] == "NORMAL_CLEARING"


async def test_caller_hangs_up_while_ringing_raises_call_gone():
    async def scenario(call, sim_call):
        asyncio.get_running_loop().call_later(0.05, sim_call.hangup)
        return await call.dial(DialSpec(groups=[[phone("2005")]]))

    result, sim_result, _ = await run_call(scenario)
    assert isinstance(result, CallGone)
    assert sim_result.hangup_by == "caller"


async def test_caller_hangs_up_during_bridge():
    async def scenario(call, sim_call):
        async def on_answer(answer):
            asyncio.get_running_loop().call_later(0.05, sim_call.hangup)
        result = await call.dial(DialSpec(groups=[[phone("2001")]], on_answer=on_answer))
        with pytest.raises(CallGone):
            await call.play(["tone_stream://%(100,0,440)"])
        return result

    result, _, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.caller_hung_up
    assert result.talk_us > 0


async def test_b_hangs_up_and_the_caller_stays():
    async def scenario(call, _):
        result = await call.dial(DialSpec(groups=[[phone("2002")]]))
        await call.play(["tone_stream://%(100,0,440)"])
        return result

    result, sim_result, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and not result.caller_hung_up
    assert sim_result.hangup_by == "switch"


async def test_announce_during_bridge_keeps_the_bridge():
    async def scenario(call, sim_call):
        async def on_answer(answer):
            await call.announce("tone_stream://%(200,0,880)")
        return await call.dial(DialSpec(groups=[[phone("2002")]], on_answer=on_answer))

    result, sim_result, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.cause == "NORMAL_CLEARING"
    assert not result.caller_hung_up  # the bridge ran on until B hung up
    assert ("playback", "tone_stream://%(200,0,880)", "FILE PLAYED") in sim_result.apps


async def test_hangup_during_bridge_ends_both_legs():
    async def scenario(call, sim_call):
        async def on_answer(answer):
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(call.hangup("ALLOTTED_TIMEOUT")))
        return await call.dial(DialSpec(groups=[[phone("2001")]], on_answer=on_answer))

    result, sim_result, _ = await run_call(scenario)
    assert result.outcome is DialOutcome.ANSWERED and result.caller_hung_up
    assert result.cause == "ALLOTTED_TIMEOUT"
    assert sim_result.hangup_cause == "ALLOTTED_TIMEOUT"


async def test_dial_subscribes_channel_bridge_only_while_dialing():
    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[phone("2003")]]))

    _, sim_result, _ = await run_call(scenario)
    lines = [c.line for c in sim_result.commands]
    sub, unsub = lines.index("event plain CHANNEL_BRIDGE"), lines.index("nixevent CHANNEL_BRIDGE")
    bridge = next(i for i, c in enumerate(sim_result.commands) if c.headers.get("execute-app-name") == "bridge")
    assert sub < bridge < unsub
    assert any(line.startswith("api uuid_setvar_multi ") and "continue_on_fail=true" in line for line in lines)


async def test_sim_uuid_broadcast_replies():
    from switchctl.sim.api import run_api

    sim = FreeSwitchSim(SimConfig())
    assert run_api(sim, "uuid_broadcast") == "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"
    assert run_api(sim, "uuid_broadcast nosuch tone_stream://%(100,0,440) aleg") == "-ERR invalid uuid\n"


@pytest.mark.parametrize("groups,outcome,cause,target", [
    # the same shapes as the real runs simul_ring_busy, simul_unreg_busy, seq_busy_unreg, simul_all_fail2
    ([[phone("2005", 1), phone("2003")]], DialOutcome.NO_ANSWER, "ALLOTTED_TIMEOUT", "2005"),
    ([[phone("2006"), phone("2003")]], DialOutcome.BUSY, "USER_BUSY", "2003"),
    ([[phone("2003")], [phone("2006")]], DialOutcome.FAILED, "USER_NOT_REGISTERED", "2006"),
    ([[phone("2004"), phone("2005", 1)]], DialOutcome.REJECTED, "CALL_REJECTED", "2004"),
])
async def test_sim_failed_group_reports_its_first_leg_like_real_freeswitch(groups, outcome, cause, target):
    async def scenario(call, _):
        return await call.dial(DialSpec(groups=groups))

    result, _, _ = await run_call(scenario)
    assert (result.outcome, result.cause, result.target.address) == (outcome, cause, target)


async def test_sim_unreachable_gateway_gets_a_b_channel(monkeypatch):
    legs = []
    register = FreeSwitchSim.register_channel
    monkeypatch.setattr(FreeSwitchSim, "register_channel", lambda self, ch: (legs.append(ch), register(self, ch)))

    async def scenario(call, _):
        return await call.dial(DialSpec(groups=[[DialTarget("gateway", "5551234", gateway="down")]]))

    result, _, _ = await run_call(scenario)
    assert (result.outcome, result.cause, result.target.gateway) == (DialOutcome.FAILED, "NORMAL_TEMPORARY_FAILURE", "down")
    # like the real gwdead run and s3 b5: sofia creates the leg, then fails it with its own 503
    assert [leg.data.hangup_cause for leg in legs if leg.data.name.startswith("sofia/gateway/")] == [
        "NORMAL_TEMPORARY_FAILURE"]


# -- schedule_hangup: through the API, replacing the armed net -----------------------------------


async def test_schedule_hangup_replaces_the_armed_one_and_works_during_a_bridge():
    async def scenario(call, _):
        async def on_answer(answer):
            await call.schedule_hangup(1, "ALLOTTED_TIMEOUT")  # would fire first if it stayed
            await call.schedule_hangup(3, "MEDIA_TIMEOUT")

        return await call.dial(DialSpec(groups=[[phone("2001")]], on_answer=on_answer))

    result, sim_result, _ = await run_call(scenario)
    # FreeSWITCH keeps every sched_hangup task (switch_ivr_schedule_hangup): without the
    # sched_del before the second, the first would cut the call with ALLOTTED_TIMEOUT.
    assert result.outcome is DialOutcome.ANSWERED and result.caller_hung_up
    assert sim_result.hangup_cause == "MEDIA_TIMEOUT"
    lines = [c.line for c in sim_result.commands]
    dels = [line for line in lines if line.startswith("api sched_del ")]
    arms = [line for line in lines if line.startswith("api sched_hangup +")]
    assert len(dels) == 2 and [a.split()[2] for a in arms] == ["+1", "+3"]


async def test_simulated_sched_hangup_adds_tasks_like_freeswitch():
    sim = FreeSwitchSim(SimConfig(dialplan=[Route(r"^9000$", "park", "")], media_speed=SPEED))
    await sim.start()
    try:
        sim_call = sim.place_call("9000", "1001")
        for _ in range(100):
            if sim.channels:
                break
            await asyncio.sleep(0.01)
        uuid = next(iter(sim.channels))
        from switchctl.sim.api import run_api

        assert run_api(sim, f"sched_hangup +40 {uuid} MEDIA_TIMEOUT") == "+OK\n"
        assert run_api(sim, f"sched_hangup +60 {uuid} MEDIA_TIMEOUT") == "+OK\n"
        assert run_api(sim, f"sched_del {uuid}") == "+OK Deleted: 2\n"
        assert run_api(sim, f"sched_del {uuid}") == "+OK Deleted: 0\n"
        assert run_api(sim, f"sched_hangup +1 {uuid} ALLOTTED_TIMEOUT") == "+OK\n"
        result = await asyncio.wait_for(sim_call.done, 5)
        assert result.hangup_cause == "ALLOTTED_TIMEOUT"
    finally:
        await sim.close()
