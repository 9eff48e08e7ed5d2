"""Outgoing legs: the `bridge` application and the `originate` api (switch_ivr_originate, mod_dptools).

A leg's fate comes from `SimConfig.users` (`user/<id>`, `sofia/<profile>/<id>@host`) or `SimConfig.gateways`
(`sofia/gateway/<name>/<number>`). Captured outcomes (s3, s6): unregistered user -> USER_NOT_REGISTERED in ~20 ms
with no B channel; unknown endpoint -> CHAN_NOT_IMPLEMENTED; unreachable -> NORMAL_TEMPORARY_FAILURE (sofia's 503);
busy -> USER_BUSY (486); `{leg_timeout=N}` -> ALLOTTED_TIMEOUT; `call_timeout` / `{originate_timeout=N}` ->
NO_ANSWER. A failed bridge hangs the A leg up (before the bridge's EXECUTE_COMPLETE) unless continue_on_fail.
`|` separates groups tried in turn, `,` the targets of a group rung at once: the first to answer wins, the
others are hung up with LOSE_RACE. `{ignore_early_media=true}` makes a 183 leg bridge only on its 200.
`[origination_uuid=...]` names a leg. While bridged, queued private events (sendmsg execute, uuid_broadcast) run on
the A leg and the bridge goes on (switch_ivr_bridge.c audio_bridge_thread).
"""

from __future__ import annotations

import asyncio
import copy
import re
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from switchctl.sim import loopback
from switchctl.sim.apps import application
from switchctl.sim.channel import SimChannel, now_us
from switchctl.sim.config import GatewayBehaviour, UserBehaviour
from switchctl.sim.events import ChannelData

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

# Signalling latency of a failure the switch decides itself (s3 b4/b5: ~20 ms), in media seconds.
FAIL_FAST = 0.02
DEFAULT_ORIGINATE_TIMEOUT = 60
ORIGINATE_USAGE = ("-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] "
                   "[<cid_name>] [<cid_num>] [<timeout_sec>]\n")
SIP_CODE = {"USER_BUSY": 486, "CALL_REJECTED": 603, "NO_ANSWER": 487, "ALLOTTED_TIMEOUT": 487, "LOSE_RACE": 487,
            "NORMAL_TEMPORARY_FAILURE": 503, "NORMAL_CLEARING": 200, "ORIGINATOR_CANCEL": 487}
SIP_PHRASE = {486: "Busy Here", 603: "Decline", 487: "Request Terminated", 503: "Service Unavailable", 200: "OK"}


@dataclass
class Target:
    dial: str
    variables: dict[str, str]


@dataclass
class LegOutcome:
    cause: str  # "SUCCESS" or the failure cause
    leg: SimChannel | None
    tried: list[tuple[str, str]] = field(default_factory=list)  # (B leg uuid, cause or NONE): originate_causes
    last_ended: str | None = None  # cause of the B leg (with a channel) that ended last: last_bridge_hangup_cause


@dataclass
class Race:
    """The legs of one `,` group: the first to answer wins, the others are hung up with LOSE_RACE
    (switch_ivr_originate: `switch_channel_hangup(peer, SWITCH_CAUSE_LOSE_RACE)`)."""

    winner: SimChannel | None = None
    legs: list[SimChannel] = field(default_factory=list)

    def claim(self, leg: SimChannel) -> bool:
        if self.winner is not None and self.winner is not leg:
            return False
        self.winner = leg
        for other in self.legs:
            if other is not leg:
                other.wake()
        return True


def split_top(text: str, separator: str) -> list[str]:
    """Split on `separator` outside `{}` / `[]` / `<>` (switch_separate_string_string with nesting)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "{[<":
            depth += 1
        elif char in "}]>":
            depth = max(0, depth - 1)
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_dial_groups(dial: str) -> tuple[dict[str, str], list[list[Target]]]:
    """`{a=1,b=2}[x=1]t1,[y=2]t2|t3`: `{}` vars for every leg, `|` separates groups tried one after the other
    (failover), `,` separates the targets of a group, rung at once (switch_ivr_originate)."""
    global_vars: dict[str, str] = {}
    dial = dial.strip()
    if dial.startswith("{"):
        end = dial.index("}")
        global_vars = _vars(dial[1:end])
        dial = dial[end + 1:]
    groups: list[list[Target]] = []
    for group_text in split_top(dial, "|"):
        group = []
        for part in split_top(group_text, ","):
            part = part.strip()
            local: dict[str, str] = {}
            if part.startswith("["):
                end = part.index("]")
                local = _vars(part[1:end])
                part = part[end + 1:]
            if part:
                group.append(Target(part, local))
        if group:
            groups.append(group)
    return global_vars, groups


def parse_dial_string(dial: str) -> tuple[dict[str, str], list[Target]]:
    """The `{}` vars and every target in order (groups flattened)."""
    global_vars, groups = parse_dial_groups(dial)
    return global_vars, [target for group in groups for target in group]


def _vars(text: str) -> dict[str, str]:
    out = {}
    for item in split_top(text, ","):
        name, _, value = item.partition("=")
        if name.strip():
            out[name.strip()] = value
    return out


def _behaviour(sim: "FreeSwitchSim", dial: str) -> tuple[str, UserBehaviour | GatewayBehaviour | None, str]:
    """(failure cause or "", behaviour, display name of the leg)."""
    if dial.startswith("error/"):
        return dial[len("error/"):].upper() or "NORMAL_CLEARING", None, dial
    if dial.startswith("user/"):
        user = dial[len("user/"):].split("@", 1)[0]
        behaviour = sim.config.users.get(user)
        if behaviour is None:
            sim.log("WARNING", f"Can't find user [{user}@{sim.config.domain}]")
            return "SUBSCRIBER_ABSENT", None, dial
        if not behaviour.registered:
            return "USER_NOT_REGISTERED", None, dial
        name = f"sofia/{sim.config.sip_profile}/{user}@{sim.config.domain}"
        if not behaviour.reachable:
            return "NORMAL_TEMPORARY_FAILURE", None, name  # sofia's internal 503 (s3 b5), on a B channel
        return "", behaviour, name
    if dial.startswith("sofia/gateway/"):
        name = dial[len("sofia/gateway/"):].split("/", 1)[0]
        gateway = sim.config.gateways.get(name)
        if gateway is None:
            sim.log("ERR", f"Invalid Gateway '{name}'")
            return "INVALID_GATEWAY", None, dial
        if not gateway.reachable:
            return "NORMAL_TEMPORARY_FAILURE", None, dial  # on a B channel, as above
        return "", gateway, dial
    if dial.startswith("sofia/"):
        parts = dial.split("/", 2)
        user = parts[2].split("@", 1)[0] if len(parts) > 2 else ""
        behaviour = sim.config.users.get(user)
        if behaviour is None:
            # nothing answers there: sofia's own 503 on a B channel (s3 b5, b5b)
            return "NORMAL_TEMPORARY_FAILURE", None, dial
        return "", behaviour, dial
    return "CHAN_NOT_IMPLEMENTED", None, dial


def _new_leg_data(sim: "FreeSwitchSim", name: str, destination: str, *, caller_number: str, caller_name: str,
                  variables: dict[str, str], uuid: str | None = None) -> ChannelData:
    uuid = uuid or str(uuidlib.uuid4())
    data = ChannelData(uuid=uuid, name=name, direction="outbound", state="CS_NONE", caller_number=caller_number,
                       caller_name=caller_name, destination=destination, context=sim.config.context,
                       created_us=now_us(), profile_created_us=now_us(), network_addr=sim.config.domain)
    data.variables.update({"direction": "outbound", "uuid": uuid, "call_uuid": uuid, "channel_name": name,
                           "is_outbound": "true"})
    data.variables.update(variables)
    return data


async def originate_leg(sim: "FreeSwitchSim", dial: str, *, a_leg: SimChannel | None,
                        extra_vars: dict[str, str] | None = None) -> LegOutcome:
    """Ring the dial string's groups one after the other until a leg answers (SUCCESS) or all failed."""
    global_vars, groups = parse_dial_groups(dial)
    if not groups:
        return LegOutcome("DESTINATION_OUT_OF_ORDER", None)
    outcome = LegOutcome("NORMAL_TEMPORARY_FAILURE", None)
    tried: list[tuple[str, str]] = []
    last_ended: str | None = None
    for group in groups:  # `|` failover: the next group only after the whole group failed
        outcome = await _ring_group(sim, group, {**(extra_vars or {}), **global_vars}, a_leg=a_leg)
        tried += outcome.tried
        last_ended = outcome.last_ended or last_ended
        if outcome.cause == "SUCCESS" or (a_leg is not None and a_leg.hungup):
            break
    outcome.tried = tried
    outcome.last_ended = last_ended
    return outcome


async def _ring_group(sim: "FreeSwitchSim", group: list[Target], variables: dict[str, str], *,
                      a_leg: SimChannel | None) -> LegOutcome:
    race = Race()
    ended: list[LegOutcome] = []  # in the order the legs ended

    async def ring(target: Target) -> LegOutcome:
        outcome = await _try_target(sim, target, {**variables, **target.variables}, a_leg=a_leg, race=race)
        ended.append(outcome)
        return outcome

    outcomes = await asyncio.gather(*(ring(target) for target in group))
    tried = [(o.leg.uuid, "NONE" if o.cause == "SUCCESS" else o.cause) for o in outcomes if o.leg is not None]
    for outcome in outcomes:
        if outcome.cause == "SUCCESS":
            return LegOutcome("SUCCESS", outcome.leg, tried)
    # The group's cause is that of its first leg in dial order that got a channel, whichever failed first
    # (real 1.11.1, tests/data/fsreal_dial: [ring 3 s, busy] -> ALLOTTED_TIMEOUT, [unregistered, busy] ->
    # USER_BUSY); last_bridge_hangup_cause is the cause of the channel that ended last.
    with_channel = [o for o in outcomes if o.leg is not None]
    first = (with_channel or list(outcomes))[0]
    last_ended = next((o.cause for o in reversed(ended) if o.leg is not None), None)
    return LegOutcome(first.cause, first.leg, tried, last_ended)


async def _try_target(sim: "FreeSwitchSim", target: Target, variables: dict[str, str], *,
                      a_leg: SimChannel | None, race: Race) -> LegOutcome:
    speed = sim.config.media_speed
    cause, behaviour, name = _behaviour(sim, target.dial)
    # A sofia leg that cannot reach its far end still gets a channel (it is in originate_causes: s3 b5, real
    # gateway to a closed port); the other failures are decided before any channel exists (s3 b4).
    unreachable = cause == "NORMAL_TEMPORARY_FAILURE" and name.startswith("sofia/")
    if cause and not unreachable:
        await asyncio.sleep(FAIL_FAST / speed)
        return LegOutcome(cause, None)
    refused = sim.admit_session()
    if refused is not None:
        sim.log("CRIT", refused)
        return LegOutcome("NORMAL_TEMPORARY_FAILURE", None)
    a_vars = a_leg.vars if a_leg is not None else {}
    leg_timeout = variables.get("leg_timeout")
    call_timeout = variables.get("originate_timeout") or a_vars.get("call_timeout") or variables.get("call_timeout")
    timeout_cause = "ALLOTTED_TIMEOUT" if leg_timeout else "NO_ANSWER"
    timeout = float(leg_timeout or call_timeout or DEFAULT_ORIGINATE_TIMEOUT)
    caller_number = variables.get("origination_caller_id_number") or (
        a_leg.data.caller_number if a_leg is not None else "0000000000")
    caller_name = variables.get("origination_caller_id_name") or (
        a_leg.data.caller_name if a_leg is not None else "FreeSWITCH")
    exported = dict(a_leg.exported) if a_leg is not None else {}
    data = _new_leg_data(sim, name, target.dial.rsplit("/", 1)[-1].split("@", 1)[0], caller_number=caller_number,
                         caller_name=caller_name, variables={**exported, **{
                             k: v for k, v in variables.items() if not k.startswith("origination_")}},
                         uuid=variables.get("origination_uuid"))
    leg = SimChannel(sim, data)
    sim.register_channel(leg)
    race.legs.append(leg)
    # s3 b1 monitor, B leg: CHANNEL_OUTGOING (CS_NONE) before CHANNEL_CREATE, then CHANNEL_ORIGINATE
    leg.fire("CHANNEL_OUTGOING")
    sim.set_state(leg, "CS_INIT")
    leg.fire("CHANNEL_CREATE")
    leg.fire("CHANNEL_ORIGINATE")
    sim.set_state(leg, "CS_ROUTING")
    sim.set_state(leg, "CS_CONSUME_MEDIA")
    if a_leg is not None:
        a_leg.set_callstate("RING_WAIT")
    if unreachable:
        await asyncio.sleep(FAIL_FAST / speed)
        await _fail_leg(sim, leg, cause)
        return LegOutcome(cause, leg)
    assert behaviour is not None
    if getattr(behaviour, "early_media", False):
        leg.pre_answer()  # 183 + SDP
    else:
        leg.data.progress_us = now_us()
        leg.fire("CHANNEL_PROGRESS")  # 180 Ringing
    if getattr(behaviour, "busy", False):
        fail = "USER_BUSY"
    elif getattr(behaviour, "reject", False):
        fail = "CALL_REJECTED"
    else:
        fail = ""
    if fail:
        await asyncio.sleep(FAIL_FAST / speed)
        await _fail_leg(sim, leg, fail)
        return LegOutcome(fail, leg)
    answer_after = behaviour.answer_after
    # ignore_early_media=true: originate waits for the 200 (early_ok = 0 in switch_ivr_originate); the caller
    # hears the `ringback` / `transfer_ringback` of the A leg meanwhile instead of the far end's media.
    ignore_early = variables.get("ignore_early_media", "").lower() in ("true", "yes", "on", "1")
    if getattr(behaviour, "early_media", False) and not ignore_early and race.claim(leg):
        # Bridged at early media: originate returns on the 183, A gets PROGRESS_MEDIA + CHANNEL_BRIDGE before
        # the B leg's 200 (s3 b6; b1 bridged 20 ms after the bridge started although B answered 1 s later)
        sim.spawn(_answer_later(leg, answer_after, behaviour.hangup_after))
        return LegOutcome("SUCCESS", leg)
    ring = timeout if answer_after is None else min(answer_after, timeout)

    if a_leg is not None:
        a_leg.linked.add(leg)  # the A leg's hangup / transfer must wake the ringing leg
    try:
        woke = await leg.wait(ring, until=lambda: race.winner is not None or (a_leg is not None and (
            a_leg.hungup or a_leg.transfer_to is not None)))
    finally:
        if a_leg is not None:
            a_leg.linked.discard(leg)
    if woke == "until" or (a_leg is not None and a_leg.hungup):
        lost = race.winner is not None and not (a_leg is not None and a_leg.hungup)
        cause = "LOSE_RACE" if lost else "ORIGINATOR_CANCEL"
        await _fail_leg(sim, leg, cause)
        return LegOutcome(cause, leg)
    if woke == "hangup":  # uuid_kill of the ringing leg (a cancelled originate)
        if leg.task is None:
            leg.task = sim.spawn(sim.report_and_destroy(leg))
        return LegOutcome(leg.data.hangup_cause or "NORMAL_CLEARING", leg)
    if answer_after is None or answer_after > timeout:
        # FreeSWITCH CANCELs the leg: the phone answers 487 (s3 b3: B leg sip_invite_failure_status 487)
        leg.set_var("sip_invite_failure_status", "487")
        await _fail_leg(sim, leg, timeout_cause)
        return LegOutcome(timeout_cause, leg)
    if not race.claim(leg):
        await _fail_leg(sim, leg, "LOSE_RACE")
        return LegOutcome("LOSE_RACE", leg)
    leg.mark_answered()
    start_far_end_dtmf(leg, behaviour)
    hangup_after = behaviour.hangup_after
    if hangup_after is not None:
        sim.spawn(_hangup_later(leg, hangup_after))
    return LegOutcome("SUCCESS", leg)


def start_far_end_dtmf(leg: SimChannel, behaviour: UserBehaviour | GatewayBehaviour) -> None:
    """The far end's scripted keys (`dtmf`): RFC 2833 digits arriving at `t` s after the answer, 100 ms apart."""
    for after, digits in getattr(behaviour, "dtmf", ()):
        leg.sim.spawn(_press_later(leg, after, digits))


async def _press_later(leg: SimChannel, after: float, digits: str) -> None:
    from switchctl.sim.engine import DIGIT_SPACING

    speed = leg.sim.config.media_speed
    await asyncio.sleep(after / speed)
    for index, digit in enumerate(digits):
        if index:
            await asyncio.sleep(DIGIT_SPACING / speed)
        if leg.hungup:
            return
        leg.receive_dtmf(digit)


async def _answer_later(leg: SimChannel, answer_after: float | None, hangup_after: float | None) -> None:
    if answer_after is None:
        return
    if await leg.wait(answer_after) != "done":
        return
    leg.mark_answered()
    behaviour = _behaviour(leg.sim, leg.data.name)[1]
    if behaviour is not None:
        start_far_end_dtmf(leg, behaviour)
    if hangup_after is not None:
        await _hangup_later(leg, hangup_after)


async def _hangup_later(leg: SimChannel, media_seconds: float) -> None:
    await asyncio.sleep(media_seconds / leg.sim.config.media_speed)
    leg.set_var("sip_hangup_phrase", "OK")
    leg.hangup("NORMAL_CLEARING", kind="caller", by="callee")


async def _fail_leg(sim: "FreeSwitchSim", leg: SimChannel, cause: str) -> None:
    code = SIP_CODE.get(cause)
    if code:
        leg.set_var("sip_hangup_phrase", SIP_PHRASE.get(code, ""))
        leg.set_var("last_bridge_proto_specific_hangup_cause", f"sip:{code}")
    leg.hangup(cause, kind="session", by="callee")
    sim.spawn(sim.report_and_destroy(leg))


def _dialstatus(cause: str) -> str:
    """switch_ivr_originate.c: DIALSTATUS from the failure cause."""
    return {"SUCCESS": "SUCCESS", "ORIGINATOR_CANCEL": "CANCEL", "USER_BUSY": "BUSY", "NO_ANSWER": "NOANSWER",
            "DESTINATION_OUT_OF_ORDER": "INVALIDARGS", "INVALID_PROFILE": "INVALIDARGS",
            "CALL_REJECTED": "DONTCALL"}.get(cause, cause)


@application("bridge")
async def app_bridge(ch: SimChannel, arg: str) -> None:
    sim = ch.sim
    outcome = await originate_leg(sim, arg, a_leg=ch)
    leg = outcome.leg
    ch.set_var("originate_disposition", outcome.cause)
    ch.set_var("DIALSTATUS", _dialstatus(outcome.cause))
    if outcome.tried:
        # one value per B leg; several become an ARRAY:: value (switch_channel_add_variable_var_check, PUSH)
        legs = [sim.channels[uuid] for uuid, _ in outcome.tried if uuid in sim.channels]
        ch.set_var("originated_legs", _array([f"{b.uuid};Outbound Call;{b.data.destination}" for b in legs]))
        ch.set_var("originate_causes", _array([f"{uuid};{cause}" for uuid, cause in outcome.tried]))
    if outcome.cause != "SUCCESS" or leg is None:
        ch.set_var("originate_failed_cause", outcome.cause)
        if outcome.last_ended is not None and not ch.hungup:
            # not after the caller hung up while ringing (real: absent then)
            ch.set_var("last_bridge_hangup_cause", outcome.last_ended)
        if leg is not None:
            proto = leg.vars.get("last_bridge_proto_specific_hangup_cause")
            if proto:
                ch.set_var("last_bridge_proto_specific_hangup_cause", proto)
            if leg.vars.get("sip_hangup_phrase"):
                ch.set_var("sip_hangup_phrase", leg.vars["sip_hangup_phrase"])
        if ch.ready:
            continue_on_fail = ch.vars.get("continue_on_fail", "")
            if not (continue_on_fail.lower() == "true" or outcome.cause in continue_on_fail.split(",")):
                # s3 b2/b4/b5: the A leg is hung up with the B cause, CHANNEL_HANGUP before EXECUTE_COMPLETE
                ch.hangup(outcome.cause, kind="session")
        return
    await bridge_legs(sim, ch, leg)


def _array(values: list[str]) -> str | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else "ARRAY::" + "|:".join(values)


async def bridge_legs(sim: "FreeSwitchSim", a: SimChannel, b: SimChannel) -> None:
    """switch_ivr_multi_threaded_bridge, seen from the A leg's bridge application."""
    if not a.ready:
        b.hangup("ORIGINATOR_CANCEL", kind="external")
        sim.spawn(sim.report_and_destroy(b))
        return
    a.pre_answer()
    stamp = now_us()
    a.data.other_leg_uuid, b.data.other_leg_uuid = b.uuid, a.uuid
    # The A leg's Other-Leg-* profile is a copy taken when originate returned (switch_caller_profile_clone):
    # s3 b1 shows Other-Leg-Channel-Answered-Time 0 on CHANNEL_BRIDGE *and* UNBRIDGE after an early-media
    # bridge, and Other-Leg-Channel-Bridged-Time 0.
    a.data.other_type, a.data.other_leg = "originatee", copy.copy(b.data)
    a.data.other_leg.bridged_us = 0
    b.data.other_type, b.data.other_leg = "originator", a.data
    a.bridged_to, b.bridged_to = b, a
    for name, value in (("last_bridge_to", b.uuid), ("bridge_channel", b.data.name), ("bridge_uuid", b.uuid),
                        ("signal_bond", b.uuid)):
        a.set_var(name, value)
    b.set_var("bridge_uuid", a.uuid)
    b.set_var("signal_bond", a.uuid)
    if b.answered:
        a.mark_answered()
    a.data.bridged_us = b.data.bridged_us = stamp
    bridge_ids = [("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)]
    a.fire("CHANNEL_BRIDGE", bridge_ids)
    sim.set_state(b, "CS_EXCHANGE_MEDIA")
    while True:
        woke = await a.wait(None, on_queue=True, until=lambda: b.hungup or (b.answered and not a.answered)
                            or b.transfer_to is not None or bool(b.dtmf_buffer))
        if woke == "until" and b.dtmf_buffer and not b.hungup and b.transfer_to is None:
            b.dequeue_dtmf()  # B's bridge side reads its keys (DTMF event with B's Unique-ID) and passes them on
            continue
        if woke == "until" and b.answered and not a.answered and not b.hungup and b.transfer_to is None:
            a.mark_answered()  # early-media bridge: the A leg is answered when B answers (s3 b6)
            continue
        if woke == "queue":
            # audio_bridge_thread: a queued private event (sendmsg execute, uuid_broadcast) runs on the A leg
            # with B suspended (switch_ivr_parse_next_event), then the bridge goes on.
            request = a.app_queue.popleft()
            await a.execute(request.app, request.arg, request.event_uuid)
            continue
        break
    b_moved = b.transfer_to is not None and not b.hungup
    if a.hungup and not b.hungup and not b_moved:
        # the signal-bond cleanup parks a peer with park_after_bridge=true, else hangs it up (switch_ivr_bridge.c)
        if b.vars.get("park_after_bridge", "").lower() == "true":
            sim.transfer(b, "park", "inline", None)
            b_moved = True
        else:
            b.hangup("NORMAL_CLEARING", kind="external")
    if a.transfer_to is not None and not b.hungup and not b_moved:
        b.hangup("NORMAL_CLEARING", kind="external")  # a blind transfer of A drops the B leg here
    b_cause = b.data.hangup_cause or "NORMAL_CLEARING"
    a.bridged_to = b.bridged_to = None
    a.fire("CHANNEL_UNBRIDGE", bridge_ids)
    if not a.hungup:
        # Real 1.11.1: after the A side ended the bridge (caller or uuid_kill / our hangup) the bridge's
        # completion has bridge_hangup_cause but no last_bridge_hangup_cause (tests/data/fsreal_dial).
        a.set_var("last_bridge_hangup_cause", b_cause)
    a.set_var("bridge_hangup_cause", b_cause)
    a.set_var("sip_hangup_phrase", b.vars.get("sip_hangup_phrase", "OK"))
    a.set_var("last_bridge_proto_specific_hangup_cause", f"sip:{SIP_CODE.get(b_cause, 200)}")
    if b_moved and b.task is None:
        # B was uuid_transferred out of the bridge (CF_TRANSFER): it runs its new extension; A's bridge app
        # returns with A up when hangup_after_bridge is false (end of switch_ivr_multi_threaded_bridge)
        b.task = sim.spawn(sim.run_moved(b))
    if not b.destroyed.is_set() and b.task is None:
        b.task = sim.spawn(sim.report_and_destroy(b))
    if a.ready and not b_moved and a.vars.get("hangup_after_bridge", "").lower() == "true":
        a.hangup("NORMAL_CLEARING", kind="session")


async def api_originate(sim: "FreeSwitchSim", args: str) -> str:
    """`originate <url> <exten>|&app(arg) [dialplan] [context] [cid_name] [cid_num] [timeout]`."""
    argv = args.split()
    if len(argv) < 2:
        return ORIGINATE_USAGE
    dial, destination = argv[0], argv[1]
    context = argv[3] if len(argv) > 3 else sim.config.context
    extra: dict[str, str] = {}
    if len(argv) > 4 and argv[4] != "undef":
        extra["origination_caller_id_name"] = argv[4]
    if len(argv) > 5 and argv[5] != "undef":
        extra["origination_caller_id_number"] = argv[5]
    if len(argv) > 6:
        extra["originate_timeout"] = argv[6]
    if loopback.is_loopback_dial(dial):
        global_vars, targets = parse_dial_string(dial)
        if len(targets) != 1:
            return "-ERR DESTINATION_OUT_OF_ORDER\n"
        return await loopback.originate(sim, {**global_vars, **targets[0].variables, **extra}, targets[0].dial,
                                        destination, argv[2] if len(argv) > 2 else None,
                                        argv[3] if len(argv) > 3 else None)
    outcome = await originate_leg(sim, dial, a_leg=None, extra_vars=extra)
    if outcome.cause != "SUCCESS" or outcome.leg is None:
        return f"-ERR {outcome.cause}\n"
    leg = outcome.leg
    leg.data.context = context
    if destination.startswith("&"):
        found = re.match(r"&([\w:]+)(?:\((.*)\))?$", destination)
        app, app_arg = (found.group(1), found.group(2) or "") if found else (destination[1:], "")
        leg.task = sim.spawn(_run_originated_app(sim, leg, app, app_arg))
    else:
        leg.data.destination = destination
        leg.task = sim.spawn(_run_originated_dialplan(sim, leg))
    return f"+OK {leg.uuid}\n"


async def _run_originated_app(sim: "FreeSwitchSim", leg: SimChannel, app: str, arg: str) -> None:
    sim.set_state(leg, "CS_EXECUTE")
    await leg.execute(app, arg, None)
    if leg.transfer_to is not None and leg.ready:
        await sim.run_dialplan(leg)  # moved (uuid_transfer / uuid_bridge): its new extension
    if leg.ready:
        leg.hangup("NORMAL_CLEARING", kind="session")
    await sim.report_and_destroy(leg)


async def _run_originated_dialplan(sim: "FreeSwitchSim", leg: SimChannel) -> None:
    await sim.run_dialplan(leg)
    await sim.report_and_destroy(leg)
