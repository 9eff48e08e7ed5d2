"""Moving channels between bridges: `uuid_bridge`, `park_after_bridge`, `uuid_break`, `module_exists`.

- `uuid_bridge <a> <b>` (switch_ivr_uuid_bridge): both channels leave what they run (CF_REDIRECT; captures s4
  x2: each completes `park`, CHANNEL_EXECUTE application=uuid_bridge on both) and are bridged; reply
  `+OK <b>`. When one side hangs up or is moved away the other is parked if it has park_after_bridge=true
  (switch_ivr_bridge.c audio_bridge_on_exchange_media / the signal-bond cleanup), else hung up with
  NORMAL_CLEARING (x2: uuid_kill of L1 hung L2 up).
- `uuid_break <uuid> [all]`: the running playback stops (CF_BREAK); `all` also drops queued private events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from switchctl.sim import apitext
from switchctl.sim.apps import application
from switchctl.sim.channel import SimChannel, now_us

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

# Modules `module_exists` says are loaded (mod_local_stream is not: the real 1.11.1 here lacks it)
LOADED_MODULES = frozenset({"mod_sofia", "mod_dptools", "mod_commands", "mod_event_socket", "mod_conference",
                            "mod_loopback", "mod_tone_stream", "mod_sndfile", "mod_dialplan_xml"})


@dataclass
class UuidBridge:
    a: SimChannel
    b: SimChannel
    ended: bool = False


def _bridges(sim: "FreeSwitchSim") -> dict[str, UuidBridge]:
    found = getattr(sim, "_uuid_bridges", None)
    if found is None:
        found = sim._uuid_bridges = {}  # type: ignore[attr-defined]
    return found


def after_bridge(channel: SimChannel) -> None:
    """The bridge ended for `channel`, still up and not moved: park_after_bridge parks it, else hang up."""
    if not channel.ready or channel.transfer_to is not None:
        return
    if channel.vars.get("park_after_bridge", "").lower() == "true":
        channel.sim.transfer(channel, "park", "inline", None)
    else:
        channel.hangup("NORMAL_CLEARING", kind="external")


def ensure_runner(channel: SimChannel) -> None:
    """A channel whose own session loop is not running (a bridge app's B leg) runs its next dialplan."""
    sim = channel.sim
    if channel.task is None and not channel.destroyed.is_set():
        channel.task = sim.spawn(sim.run_moved(channel))


def api_uuid_bridge(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    if len(argv) != 2:
        return "-USAGE: <uuid> <other_uuid>\n"
    a, b = sim.channels.get(argv[0]), sim.channels.get(argv[1])
    if a is None or a.hungup:
        return f"-ERR Invalid uuid {argv[0]}\n"
    if b is None or b.hungup:
        return f"-ERR Invalid uuid {argv[1]}\n"
    bridge = UuidBridge(a, b)
    _bridges(sim)[a.uuid] = _bridges(sim)[b.uuid] = bridge
    for channel, other in ((a, b), (b, a)):
        sim.transfer(channel, f"uuid_bridge:{other.uuid}", "inline", None)
        ensure_runner(channel)
    return f"+OK {b.uuid}\n"


@application("uuid_bridge")
async def app_uuid_bridge(ch: SimChannel, arg: str) -> None:
    """Both sides run this (x2); the originator fires CHANNEL_BRIDGE once both are in it."""
    sim = ch.sim
    bridge = _bridges(sim).get(ch.uuid)
    if bridge is None:
        return
    other = bridge.b if ch is bridge.a else bridge.a
    other.wake()  # the originator waits for this side to be in
    if ch is bridge.a:
        await ch.wait(5.0, until=lambda: other.running_app == "uuid_bridge" or other.hungup)
        if ch.ready and other.ready:
            ch.bridged_to, other.bridged_to = other, ch
            ch.data.other_leg_uuid, other.data.other_leg_uuid = other.uuid, ch.uuid
            for side, peer in ((ch, other), (other, ch)):
                side.set_var("bridge_uuid", peer.uuid)
                side.set_var("signal_bond", peer.uuid)
                side.set_var("last_bridge_to", peer.uuid)
            ch.data.bridged_us = other.data.bridged_us = now_us()
            ch.fire("CHANNEL_BRIDGE", [("Bridge-A-Unique-ID", ch.uuid), ("Bridge-B-Unique-ID", other.uuid)])
    while not bridge.ended:
        woke = await ch.wait(None, on_dtmf=True, until=lambda: bridge.ended or other.hungup
                             or other.transfer_to is not None)
        if woke == "dtmf":
            ch.dequeue_dtmf()  # read by the bridge (DTMF event) and passed to the other side
            continue
        break
    if not bridge.ended:
        bridge.ended = True
        other.wake()
        if ch.bridged_to is other:
            ch.bridged_to = other.bridged_to = None
            a = bridge.a
            a.fire("CHANNEL_UNBRIDGE", [("Bridge-A-Unique-ID", bridge.a.uuid), ("Bridge-B-Unique-ID", bridge.b.uuid)])
    for side in (bridge.a, bridge.b):
        if _bridges(sim).get(side.uuid) is bridge and (side is ch):
            del _bridges(sim)[side.uuid]
    after_bridge(ch)


def api_uuid_break(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    if not argv:
        return "-USAGE: <uuid> [all]\n"
    channel = sim.channels.get(argv[0])
    if channel is None or channel.hungup:
        return apitext.NO_SUCH_CHANNEL
    if len(argv) > 1 and "all" in argv[1]:
        channel.app_queue.clear()  # switch_core_session_flush_private_events
    channel.break_media = True
    channel.wake()
    return apitext.OK


def api_module_exists(sim: "FreeSwitchSim", args: str) -> str:
    return "true" if args.strip() in LOADED_MODULES else "false"
