"""The `conference` application and api of mod_conference, as FreeSWITCH 1.11.1 shows them (captures s4 x4).

- `conference <room>@<profile>` makes the room on its first member (CUSTOM conference::maintenance
  `conference-create`), adds the member (`add-member`, ids 1, 2, 3 ... per room) and runs until the member
  leaves: hangup, transfer, or `kick`. A kicked member's application completes with the channel still up
  (x4 L2: EXECUTE_COMPLETE with Answer-State answered; conference_api_sub_kick only clears MFLAG_RUNNING).
  Leaving fires `del-member`; the last member's leaving fires `conference-destroy`.
- api `conference <room> list | json_list | kick <id> | hup <id>`, `conference list`: bodies as captured.
The simulator has no audio: floor changes, energy and the sounds of a profile are not modelled.
"""

from __future__ import annotations

import itertools
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from switchctl.sim.apps import application
from switchctl.sim.channel import SimChannel, now_us

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

SUBCLASS = "conference::maintenance"
# Event-Calling-* of conference events (mod_conference conference_member.c / conference.c), as captured in x4
CALLING = ("conference_member.c", "conference_member_add_event_data", 0)


@dataclass
class Member:
    id: int
    channel: SimChannel
    joined_us: int
    kicked: bool = False


@dataclass
class Room:
    name: str
    profile: str
    uuid: str
    created_us: int
    members: list[Member] = field(default_factory=list)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


def rooms(sim: "FreeSwitchSim") -> dict[str, Room]:
    found = getattr(sim, "_conference_rooms", None)
    if found is None:
        found = sim._conference_rooms = {}  # type: ignore[attr-defined]
    return found


def _conference_headers(room: Room, action: str) -> list[tuple[str, str]]:
    return [("Event-Subclass", SUBCLASS), ("Conference-Name", room.name),
            ("Conference-Domain", "127.0.0.1"), ("Conference-Size", str(len(room.members))),
            ("Conference-Ghosts", "0"), ("Conference-Profile-Name", room.profile),
            ("Conference-Unique-ID", room.uuid)]


def _fire_room(sim: "FreeSwitchSim", room: Room, action: str) -> None:
    headers = sim.events.event("CUSTOM", now_us=now_us(), calling=CALLING,
                               extra=_conference_headers(room, action) + [("Action", action)])
    sim.dispatch("CUSTOM", headers, None)


def _fire_member(sim: "FreeSwitchSim", room: Room, member: Member, action: str) -> None:
    """A member event: the conference headers, the channel's data, then Member-ID / Action (x4 add-member)."""
    extra = _conference_headers(room, action) + [("Member-ID", str(member.id)), ("Member-Type", "participant"),
                                                  ("Action", action)]
    headers = sim.events.channel_event("CUSTOM", member.channel.data, now_us=now_us(), calling=CALLING,
                                       extra=extra)
    sim.dispatch("CUSTOM", headers, None)


@application("conference")
async def app_conference(ch: SimChannel, arg: str) -> None:
    sim = ch.sim
    spec = arg.split()[0] if arg.split() else ""
    name, _, profile = spec.partition("@")
    name = name.split("+", 1)[0]
    if not name:
        sim.log("ERR", "Invalid arguments", channel=ch)
        return
    ch.mark_answered()  # conference_function answers the channel
    table = rooms(sim)
    room = table.get(name)
    if room is None:
        room = table[name] = Room(name, profile or "default", str(uuidlib.uuid4()), now_us())
        _fire_room(sim, room, "conference-create")
    member = Member(next(room.ids), ch, now_us())
    room.members.append(member)
    _fire_member(sim, room, member, "add-member")
    try:
        while True:
            woke = await ch.wait(None, on_dtmf=True, until=lambda: member.kicked)
            if woke == "dtmf":
                ch.dequeue_dtmf()  # the member's keys are read by the conference (DTMF events fire)
                continue
            break
    finally:
        room.members.remove(member)
        _fire_member(sim, room, member, "del-member")
        if not room.members:
            table.pop(name, None)
            _fire_room(sim, room, "conference-destroy")


def _member_line(member: Member) -> str:
    data = member.channel.data
    return (f"{member.id};{data.name};{data.uuid};{data.caller_name};{data.caller_number};hear|speak;0;0;100")


def _member_json(member: Member, now: int) -> dict[str, object]:
    data = member.channel.data
    return {"type": "caller", "id": member.id,
            "flags": {"can_hear": True, "can_see": True, "can_speak": True, "hold": False, "mute_detect": False,
                      "talking": False, "has_video": False, "video_bridge": False, "has_floor": False,
                      "is_moderator": False, "end_conference": False, "mandatory_member_end_conference": False,
                      "pass_digits": False},
            "uuid": data.uuid, "caller_id_name": data.caller_name, "caller_id_number": data.caller_number,
            "join_time": (now - member.joined_us) // 1_000_000, "last_talking": 0, "energy": 100,
            "volume_in": 0, "volume_out": 0, "output-volume": 0, "input-volume": 0}


def api_conference(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    table = rooms(sim)
    if not argv:
        return "-USAGE: conference <conference_name> <command> [<args>]\n"
    if argv[0] == "list":
        lines = []
        for room in table.values():
            lines.append(f"+OK Conference {room.name} ({len(room.members)} member"
                         f"{'s' if len(room.members) != 1 else ''} rate: 8000 flags: running|answered|"
                         "enforce_min|dynamic|exit_sound|enter_sound)")
            lines += [_member_line(m) for m in reversed(room.members)]
        return "\n".join(lines) + "\n" if lines else "+OK No active conferences.\n"
    room = table.get(argv[0])
    if room is None:
        return f"-ERR Conference {argv[0]} not found\n"
    command = argv[1] if len(argv) > 1 else ""
    if command == "list":
        return "".join(_member_line(m) + "\n" for m in reversed(room.members))
    if command == "json_list":
        now = now_us()
        data = [{"conference_name": room.name, "member_count": len(room.members), "ghost_count": 0,
                 "rate": 8000, "run_time": (now - room.created_us) // 1_000_000,
                 "conference_uuid": room.uuid, "running": True, "answered": True, "dynamic": True,
                 "variables": {}, "members": [_member_json(m, now) for m in reversed(room.members)]}]
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if command in ("kick", "hup") and len(argv) > 2:
        targets = [m for m in room.members if argv[2] == "all" or str(m.id) == argv[2]]
        if not targets:
            return f"-ERR Member: {argv[2]} not found.\n"
        for member in targets:
            if command == "kick":
                _fire_member(sim, room, member, "kick-member")
                member.kicked = True
                member.channel.wake()
            else:  # conference_api_sub_hup: the member's channel is hung up
                member.channel.hangup("NORMAL_CLEARING", kind="external")
        return "".join(f"+OK {'kicked' if command == 'kick' else 'hup'} {m.id}\n" for m in targets)
    return f"-ERR Unsupported conference command {command!r} in the simulator\n"
