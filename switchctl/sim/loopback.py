"""The `loopback/` endpoint of the simulator (mod_loopback): one originate, two legs joined back to back.

`originate {vars}loopback/9000/default &park` creates, as FreeSWITCH 1.11 does (captures: freeswitch/inbound_plain,
outbound_loopback; source: src/mod/endpoints/mod_loopback/mod_loopback.c):

- `loopback/9000-a`, direction outbound: the originated channel. Its uuid is what originate prints (`+OK <uuid>`,
  also in the BACKGROUND_JOB body) and it runs the originate's `&app` (here `park`) once it is answered.
- `loopback/9000-b`, direction inbound: created in the A leg's on_init, it runs the dialplan for 9000 in context
  `default` (so a `socket` route hands it to the controller's outbound socket).

Each leg's `other_loopback_leg_uuid` names the other one (set before either CHANNEL_CREATE); `loopback_leg` is A/B.
The originate's `{vars}` are set on both legs (`__loopback_vars__`). What links them:

- answer: the B leg's answer marks the A leg answered first (channel_receive_message INDICATE_ANSWER, only from
  the leg that is not TFLAG_OUTBOUND): CHANNEL_ANSWER of A, then of B. A pre-answer of B pre-answers A the same way.
  originate returns when A is answered; neither leg fires CHANNEL_PROGRESS_MEDIA on answer.
- DTMF: DTMF sent to one leg (`uuid_send_dtmf`) is queued on the other (channel_send_dtmf); the other leg fires
  DTMF (DTMF-Source UNKNOWN, DTMF-Duration 2000 by default) when an application dequeues it.
- hangup: when either leg enters CS_HANGUP it hangs up the other with its own cause (channel_on_hangup).
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from switchctl.sim.channel import SimChannel, now_us
from switchctl.sim.events import ChannelData

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

PREFIX = "loopback/"
DEFAULT_ORIGINATE_TIMEOUT = 60  # switch_ivr_originate's default originate_timeout, seconds
# SWITCH_DEFAULT_DTMF_DURATION / MIN / MAX (switch_types.h), in samples; L16 at 8 kHz: 8 samples per ms
DTMF_DURATION = 2000
DTMF_MIN_DURATION = 400
DTMF_MAX_DURATION = 192000
SAMPLES_PER_MS = 8
# switch_core_session_send_dtmf: an endpoint without CC_QUEUEABLE_DTMF_DELAY sleeps for `w` / `W`, in seconds
DTMF_PAUSE = {"w": 0.5, "W": 1.0}
_IS_DTMF = set("0123456789ABCDabcd#*wWFf")  # is_dtmf() in switch_utils.h


@dataclass(frozen=True)
class LoopbackTarget:
    """`loopback/<destination>[/<context>[/<dialplan>]]` as channel_outgoing_channel splits it."""

    destination: str
    context: str = "default"
    dialplan: str = "xml"


def parse_target(dial: str) -> LoopbackTarget:
    """`loopback/9000/default` -> LoopbackTarget("9000", "default", "xml"). ValueError when not a loopback target."""
    if not dial.startswith(PREFIX):
        raise ValueError(f"not a loopback target: {dial!r}")
    destination, _, rest = dial[len(PREFIX):].partition("/")
    context, _, dialplan = rest.partition("/")
    if not destination:
        raise ValueError(f"loopback target without a destination: {dial!r}")
    return LoopbackTarget(destination, context or "default", dialplan or "xml")


class LoopbackLeg(SimChannel):
    """One leg of a loopback pair; `leg` is "a" (originated, outbound) or "b" (runs the dialplan, inbound)."""

    answer_implies_early_media = False

    def __init__(self, sim: FreeSwitchSim, data: ChannelData, *, leg: str) -> None:
        super().__init__(sim, data)
        self.leg = leg
        self.peer: LoopbackLeg | None = None

    def pre_answer(self) -> None:
        if self.media_ready or self.hungup:
            return
        if self.leg == "b" and self.peer is not None:
            self.peer.pre_answer()  # INDICATE_PROGRESS -> switch_channel_mark_pre_answered(other)
        super().pre_answer()

    def mark_answered(self) -> None:
        if self.answered or self.hungup:
            return
        if self.leg == "b" and self.peer is not None:
            self.peer.mark_answered()  # INDICATE_ANSWER -> switch_channel_mark_answered(other), before our own
        super().mark_answered()

    def on_hangup_state(self) -> None:
        """channel_on_hangup: `switch_channel_hangup(other_channel, switch_channel_get_cause(channel))`."""
        peer, self.peer = self.peer, None
        if peer is not None and not peer.hungup:
            # From this leg's thread, so "external" for the other leg; a hung-up A leg is the caller going away.
            peer.hangup(self.data.hangup_cause or "NORMAL_CLEARING", kind="external",
                        by="caller" if self.leg == "a" else "switch")
        if peer is not None:
            peer.peer = None

    def send_dtmf(self, digit: str, duration: int) -> None:
        """channel_send_dtmf: queued on the other leg (switch_channel_queue_dtmf)."""
        if self.peer is not None:
            self.peer.receive_dtmf(digit, duration=duration, source="UNKNOWN")


def _leg_data(uuid: str, other_uuid: str, target: LoopbackTarget, *, leg: str,
              caller_name: str, caller_number: str, variables: dict[str, str]) -> ChannelData:
    data = ChannelData.new_loopback(uuid, target.destination, now_us=now_us(), leg=leg, context=target.context,
                                    caller_number=caller_number, caller_name=caller_name, other_uuid=other_uuid)
    data.state = "CS_NONE" if leg == "a" else "CS_INIT"
    data.dialplan = target.dialplan
    data.callee_name = "Outbound Call"  # switch_ivr_originate's callee id; the number is what followed the slash
    data.callee_number = target.context
    data.hit_dialplan = leg == "b"
    other = data.variables.pop("other_loopback_leg_uuid")
    leg_name = data.variables.pop("loopback_leg")
    data.variables.pop("session_id", None)
    if leg == "a":
        data.variables["is_outbound"] = "true"
    data.variables["call_uuid"] = uuid
    data.variables.update(variables)
    if leg == "a":
        data.variables["originate_endpoint"] = "loopback"
    data.variables["other_loopback_leg_uuid"] = other
    data.variables["loopback_leg"] = leg_name
    return data


def _register(sim: FreeSwitchSim, channel: SimChannel) -> None:
    sim.register_channel(channel)
    channel.data.variables["session_id"] = str(sim.sessions_since_startup)


async def originate(sim: FreeSwitchSim, variables: dict[str, str], dial: str, destination: str,
                    dialplan: str | None, context: str | None) -> str:
    """`originate {variables}loopback/... <destination> [dialplan] [context]`: the api body (`+OK <A uuid>\\n`)."""
    try:
        target = parse_target(dial)
    except ValueError:
        return "-ERR DESTINATION_OUT_OF_ORDER\n"
    for _leg in "ab":
        refused = sim.admit_session()
        if refused is not None:
            sim.log("CRIT", refused)
            return "-ERR NORMAL_TEMPORARY_FAILURE\n"
    a_uuid = variables.get("origination_uuid") or str(uuidlib.uuid4())
    if a_uuid in sim.channels:
        return "-ERR DESTINATION_OUT_OF_ORDER\n"
    b_uuid = str(uuidlib.uuid4())
    name = variables.get("origination_caller_id_name", "")
    number = variables.get("origination_caller_id_number", "0000000000")
    a = LoopbackLeg(sim, _leg_data(a_uuid, b_uuid, target, leg="a", caller_name=name, caller_number=number,
                                   variables=variables), leg="a")
    b = LoopbackLeg(sim, _leg_data(b_uuid, a_uuid, target, leg="b", caller_name=name, caller_number=number,
                                   variables=variables), leg="b")
    a.peer, b.peer = b, a
    _register(sim, a)
    # inbound_plain capture order: A OUTGOING, A CS_INIT, A CREATE, (B CS_INIT), A ORIGINATE, A CS_ROUTING,
    # A CS_CONSUME_MEDIA, B CREATE, B CALLSTATE RINGING, B CS_ROUTING, B CS_EXECUTE ...
    a.fire("CHANNEL_OUTGOING")
    sim.set_state(a, "CS_INIT")
    _register(sim, b)
    a.fire("CHANNEL_CREATE")
    sim.set_state(b, "CS_INIT")  # B's thread starts here (Event-Sequence between A's CREATE and ORIGINATE)
    a.fire("CHANNEL_ORIGINATE")
    sim.set_state(a, "CS_ROUTING")
    sim.set_state(a, "CS_CONSUME_MEDIA")
    b.task = sim.spawn(_run_b_leg(sim, b))

    timeout = _seconds(variables.get("originate_timeout"), DEFAULT_ORIGINATE_TIMEOUT)
    woke = await a.wait(timeout, until=lambda: a.answered)
    if woke != "until":
        if not a.hungup:
            a.hangup("NO_ANSWER", kind="session")  # originate gave up: the A leg goes, and B with it
        a.task = sim.spawn(sim.report_and_destroy(a))
        return f"-ERR {a.data.hangup_cause}\n"
    a.task = sim.spawn(_run_a_leg(sim, a, destination, dialplan, context))
    return f"+OK {a.uuid}\n"


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value > 0 else default


async def _run_b_leg(sim: FreeSwitchSim, b: LoopbackLeg) -> None:
    """The B leg's session thread: created, ringing, the dialplan (engine.run_dialplan), reporting."""
    limit = sim.spawn(_call_limit(sim, b))
    try:
        b.fire("CHANNEL_CREATE")
        b.data.state = "CS_ROUTING"  # captured: CALLSTATE RINGING already shows CS_ROUTING, then its CHANNEL_STATE
        b.set_callstate("RINGING")
        await sim.run_dialplan(b)
        await sim.report_and_destroy(b)
    finally:
        limit.cancel()


async def _call_limit(sim: FreeSwitchSim, leg: SimChannel) -> None:
    """`max_call_seconds` bounds a loopback call like any simulated call (media time)."""
    await asyncio.sleep(sim.config.max_call_seconds / sim.config.media_speed)
    leg.hangup("NORMAL_CLEARING", kind="external", by="limit")


async def _run_a_leg(sim: FreeSwitchSim, a: LoopbackLeg, destination: str, dialplan: str | None,
                     context: str | None) -> None:
    """After the answer: the originate's `&app(arg)`, or the extension in the A leg's own dialplan."""
    if destination.startswith("&"):
        found = re.match(r"&([\w:]+)(?:\((.*)\))?$", destination)
        app, arg = (found.group(1), found.group(2) or "") if found else (destination[1:], "")
        sim.set_state(a, "CS_EXECUTE")
        await a.execute(app, arg, None)
        if a.ready:
            a.hangup("NORMAL_CLEARING", kind="session")
    else:
        a.data.destination = destination
        if context:
            a.data.context = context
        if dialplan:
            a.data.dialplan = dialplan
        await sim.run_dialplan(a)
    await sim.report_and_destroy(a)


async def api_uuid_send_dtmf(sim: FreeSwitchSim, args: str) -> str:
    """mod_commands uuid_send_dtmf + switch_core_session_send_dtmf_string.

    `digits[@ms][+digits[@ms]...]`; `w` / `W` pause 0.5 s / 1 s inline (the api returns after the pauses); a
    leading `~` is accepted. On a loopback leg the digits reach the other leg; elsewhere they leave the switch.
    """
    from switchctl.sim.api import api_uuid_send_dtmf as send_to_far_end

    argv = args.split()
    channel = sim.channels.get(argv[0]) if argv else None
    if len(argv) < 2 or not isinstance(channel, LoopbackLeg) or channel.hungup:
        return send_to_far_end(sim, args)
    dtmf_string = argv[1]
    text = dtmf_string.removeprefix("~")
    if not text or len(text) > 99:
        return "-ERR Operation failed\n"
    sent = 0
    for part in text.split("+"):
        digits, _, ms = part.partition("@")
        duration = DTMF_DURATION
        if ms.isdigit() and int(ms) > DTMF_MIN_DURATION // SAMPLES_PER_MS:
            duration = min(int(ms) * SAMPLES_PER_MS, DTMF_MAX_DURATION)
        for digit in digits:
            if digit not in _IS_DTMF:
                continue
            if digit in DTMF_PAUSE:
                await asyncio.sleep(DTMF_PAUSE[digit] / sim.config.media_speed)
                continue
            if channel.hungup:
                break
            channel.send_dtmf(digit, duration)
            sent += 1
    if not sent:
        return "-ERR Operation failed\n"
    return f"+OK {argv[0]} sent DTMF {dtmf_string}.\n"


def is_loopback_dial(dial: str) -> bool:
    """True for an originate/bridge target on the loopback endpoint (after any `{vars}`)."""
    if dial.startswith("{") and "}" in dial:
        dial = dial[dial.index("}") + 1:]
    return dial.startswith(PREFIX)


__all__ = ["LoopbackLeg", "LoopbackTarget", "api_uuid_send_dtmf", "is_loopback_dial", "originate", "parse_target"]
