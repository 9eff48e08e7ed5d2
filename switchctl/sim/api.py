"""`api` / `bgapi` commands of the simulator (mod_commands / mod_sofia behaviour; bodies from apitext).

`run_api` answers the commands that return at once; `run_api_async` also runs the ones that take time
(originate). Both `api` (the connection waits, its events held back) and `bgapi` use `run_api_async`.
"""

from __future__ import annotations

import re
import time
import xml.parsers.expat
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from switchctl.sim import apitext
from switchctl.sim.channel import SimChannel, now_us
from switchctl.sim.events import HANGUP_CAUSE_Q850

if TYPE_CHECKING:
    from switchctl.sim.engine import FreeSwitchSim

# switch_version_full() / switch_version_revision_human() of the captured build (s6 api_status).
VERSION_FULL = "1.11.1-release+git~20260526T204126Z~c2c5964~64bit"
VERSION_REVISION_HUMAN = "git c2c5964 2026-05-26 20:41:26Z"


def _cause(text: str | None, default: str) -> str:
    """switch_channel_str2cause: a name or a Q.850 number; unknown -> default."""
    if not text:
        return default
    if text.upper() in HANGUP_CAUSE_Q850:
        return text.upper()
    if text.isdigit():
        for name, code in HANGUP_CAUSE_Q850.items():
            if code == int(text):
                return name
    return default


def _channel(sim: "FreeSwitchSim", uuid: str | None) -> SimChannel | None:
    if not uuid:
        return None
    channel = sim.channels.get(uuid)
    # switch_core_session_locate finds only channels that are up: a hung-up channel that still lingers on
    # its outbound socket is "No such channel" / uuid_exists false (s3 b2: false right after HANGUP_COMPLETE)
    return channel if channel is not None and not channel.hungup else None


def api_uuid_kill(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    if not argv:
        return apitext.usage("<uuid> [cause]")
    channel = _channel(sim, argv[0])
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    channel.hangup(_cause(argv[1] if len(argv) > 1 else None, "NORMAL_CLEARING"), kind="external", by="switch")
    return apitext.OK


def api_uuid_getvar(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    if len(argv) < 2:
        return apitext.usage("<uuid> <var>")
    channel = _channel(sim, argv[0])
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    return apitext.getvar_result(channel.vars.get(argv[1]))


def api_uuid_setvar(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split(" ", 2)
    if len(argv) < 2 or not argv[1]:
        return apitext.usage("<uuid> <var> [value]")
    channel = _channel(sim, argv[0])
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    channel.set_var(argv[1], argv[2] if len(argv) > 2 else None)  # no value: unset (s6)
    return apitext.OK


def api_uuid_setvar_multi(sim: "FreeSwitchSim", args: str) -> str:
    uuid, _, assignments = args.partition(" ")
    if not uuid or not assignments:
        return apitext.usage("<uuid> <var>=<value>;<var>=<value>...")
    channel = _channel(sim, uuid)
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    pairs = []
    for item in assignments.split(";"):
        name, _, value = item.partition("=")
        if not name:
            return "-ERR No variable specified\n"
        pairs.append((name, value))
    for name, value in pairs:
        channel.set_var(name, value or None)
    return apitext.OK


def api_uuid_exists(sim: "FreeSwitchSim", args: str) -> str:
    return apitext.uuid_exists(_channel(sim, args.strip()) is not None)


def api_uuid_dump(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    if not argv:
        return apitext.usage("<uuid> [format]")
    channel = _channel(sim, argv[0])
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    as_json = len(argv) > 1 and argv[1].lower() == "json"
    return apitext.uuid_dump(channel.data, as_json=as_json, factory=sim.events, now_us=now_us())


def api_uuid_send_dtmf(sim: "FreeSwitchSim", args: str) -> str:
    """Sends DTMF out to the far end (switch_core_session_send_dtmf_string): no DTMF event on the channel."""
    argv = args.split()
    if len(argv) < 2:
        return apitext.usage("<uuid> <dtmf_data>")
    channel = _channel(sim, argv[0])
    if channel is None:
        return "-ERR Cannot locate session!\n"
    channel.set_var("last_dtmf_sent", argv[1])
    return f"+OK {argv[0]} sent DTMF {argv[1]}.\n"


def api_uuid_answer(sim: "FreeSwitchSim", args: str) -> str:
    channel = _channel(sim, args.strip())
    if channel is None or channel.hungup:
        return "-ERROR\n"
    channel.mark_answered()
    return apitext.OK


def api_sched_hangup(sim: "FreeSwitchSim", args: str) -> str:
    """`sched_hangup [+]<time> <uuid> [<cause>]`; the cause defaults to ALLOTTED_TIMEOUT (s5 h1b used one)."""
    argv = args.split()
    if len(argv) < 2:
        return apitext.usage("[+]<time> <uuid> [<cause>]")
    channel = _channel(sim, argv[1])
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    when = argv[0]
    seconds = int(when[1:] or 0) if when.startswith("+") else int(when or 0) - int(time.time())
    cause = _cause(argv[2] if len(argv) > 2 else None, "ALLOTTED_TIMEOUT")
    if seconds <= 0 and when.startswith("+"):
        channel.hangup(cause, kind="external")
    else:
        channel.schedule_hangup(seconds, cause)
    return apitext.OK


def api_sched_del(sim: "FreeSwitchSim", args: str) -> str:
    """`sched_del <uuid | task id>` (mod_commands.c): deletes the group's tasks, always `+OK Deleted: N`."""
    name = args.strip()
    if not name:
        return "-ERR Invalid syntax\n"
    channel = None if name.isdigit() else _channel(sim, name)
    return f"+OK Deleted: {channel.delete_scheduled() if channel is not None else 0}\n"


def api_uuid_transfer(sim: "FreeSwitchSim", args: str) -> str:
    # switch_separate_string drops the single quotes around an argument
    argv = [arg[1:-1] if len(arg) > 1 and arg[0] == arg[-1] == "'" else arg for arg in args.split()]
    if len(argv) < 2 or len(argv) > 5:
        return apitext.usage("<uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]")
    channel = _channel(sim, argv[0])
    if channel is None:
        return apitext.NO_SUCH_CHANNEL
    rest = argv[1:]
    targets = [channel]
    if rest[0].startswith("-"):
        leg = rest.pop(0)[1:].lower()
        other = _channel(sim, channel.data.other_leg_uuid)
        if leg == "bleg" and other is not None:
            targets = [other]
        elif leg == "both" and other is not None:
            targets = [other, channel]
        if not rest:
            return apitext.usage("<uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]")
    for target in targets:
        sim.transfer(target, rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)
    return apitext.OK


SESS_REC_USAGE = "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>] [<recording_vars>]\n"


def api_uuid_record(sim: "FreeSwitchSim", args: str) -> str:
    """mod_commands session_record_function: start / stop / mask / unmask / pause / resume a media-bug recording
    (both directions, it goes on across bridges). Replies as captured in s7 (`+OK Success`, a second stop
    `-ERR Cannot stop record session!`). `<limit>` and `<recording_vars>` are not modelled."""
    from switchctl.sim.apps import mask_media_bug, pause_media_bug, start_media_bug, stop_media_bug

    argv = args.split(" ", 4)
    if len(argv) < 3 or not all(argv[:3]):
        return SESS_REC_USAGE
    uuid, action, path = argv[0], argv[1].lower(), argv[2]
    channel = _channel(sim, uuid)
    if channel is None:
        return "-ERR Cannot locate session!\n"
    if action == "start":
        return "+OK Success\n" if start_media_bug(channel, path) else "-ERR Cannot record session!\n"
    if action == "stop":
        return "+OK Success\n" if stop_media_bug(channel, path) else "-ERR Cannot stop record session!\n"
    if action in ("mask", "unmask"):
        if mask_media_bug(channel, path, mask=action == "mask"):
            return "+OK Success\n"
        return f"-ERR Cannot {action} recording session!\n"
    if action in ("pause", "resume"):
        if pause_media_bug(channel, path, pause=action == "pause"):
            return "+OK Success\n"
        return f"-ERR Cannot {action} recording session!\n"
    return SESS_REC_USAGE


BROADCAST_USAGE = "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n"


def api_uuid_broadcast(sim: "FreeSwitchSim", args: str) -> str:
    """mod_commands uuid_broadcast + switch_ivr_broadcast: queue `playback <path>` (or `app::args`) as a
    private event on the leg(s); a parked channel runs it from its park loop, a bridged one from the bridge
    loop with the other leg suspended, and the bridge goes on (switch_ivr_bridge.c audio_bridge_thread).
    No flag: aleg + holdb. `app!cause` queues a hangup after it. Replies `+OK Message sent`."""
    from switchctl.sim.channel import ExecuteRequest

    argv = args.split(" ", 3)[:3] if args else []
    if len(argv) < 2:
        return BROADCAST_USAGE
    channel = _channel(sim, argv[0])
    if channel is None:
        return "-ERR invalid uuid\n"
    flags = argv[2].lower() if len(argv) > 2 else "aleg holdb"
    echo_a = "aleg" in flags or "both" in flags
    echo_b = ("bleg" in flags or "both" in flags) and "holdb" not in flags
    app, path = "playback", argv[1]
    head, sep, rest = path.partition("::")
    if sep and ":" not in head:
        app, path = head, rest
    cause = None
    if "!" in app:
        app, _, cause = app.partition("!")
        cause = cause or "normal_clearing"
    other = _channel(sim, channel.data.other_leg_uuid) if channel.bridged_to is not None else None
    if echo_b and other is not None:
        other.queue_execute(ExecuteRequest(app, path, None))
    if echo_a:
        channel.queue_execute(ExecuteRequest(app, path, None))
    if cause:
        channel.queue_execute(ExecuteRequest("hangup", cause.upper(), None))
    return "+OK Message sent\n"


def api_hupall(sim: "FreeSwitchSim", args: str) -> str:
    argv = args.split()
    cause = _cause(argv[0] if argv else None, "MANAGER_REQUEST")
    if len(argv) >= 3:
        name, value = argv[1], argv[2]
        for channel in list(sim.channels.values()):
            if channel.vars.get(name) == value:
                channel.hangup(cause, kind="external")
        return f"+OK hangup all channels matching [{name}]=[{value}] with cause: {cause}\n"
    for channel in list(sim.channels.values()):
        channel.hangup(cause, kind="external")
    return f"+OK hangup all channels with cause {cause}\n"


def _live(sim: "FreeSwitchSim") -> list[SimChannel]:
    return [c for c in sim.channels.values() if not c.hungup]


def api_show(sim: "FreeSwitchSim", args: str) -> str:
    words = args.split()
    if not words:
        return "-USAGE: show <channels|calls|...>\n"
    what = words[0].lower()
    as_json = words[-2:] == ["as", "json"] or (len(words) > 2 and words[1:3] == ["as", "json"])
    channels = sorted(_live(sim), key=lambda c: c.data.created_us)
    if what == "channels":
        if len(words) > 1 and words[1] == "count":
            return apitext.show_count(len(channels))
        rows = [apitext.channel_row(c.data, hostname=sim.config.hostname) for c in channels]
        return apitext.show_channels(rows, as_json=as_json, hostname=sim.config.hostname)
    if what in ("calls", "bridged_calls"):
        rows = []
        seen: set[str] = set()
        for channel in channels:
            if channel.uuid in seen:
                continue
            other = _channel(sim, channel.data.other_leg_uuid) if channel.bridged_to is not None else None
            if what == "bridged_calls" and other is None:
                continue
            seen.add(channel.uuid)
            a_row = apitext.channel_row(channel.data, hostname=sim.config.hostname)
            b_row = None
            if other is not None:
                seen.add(other.uuid)
                b_row = apitext.channel_row(other.data, hostname=sim.config.hostname)
            rows.append(apitext.call_row(a_row, b_row, call_created_epoch=str(channel.data.created_us // 1_000_000)))
        if len(words) > 1 and words[1] == "count":
            return apitext.show_count(len(rows))
        return apitext.show_calls(rows, as_json=as_json)
    return "-USAGE: show <channels|calls|bridged_calls> [count] [as json]\n"


def api_status(sim: "FreeSwitchSim", args: str) -> str:
    return apitext.status_text(
        int((time.time() - sim.started_at) * 1_000_000), sim.sessions_since_startup, len(_live(sim)),
        peak=sim.peak_sessions, peak_5min=sim.peak_sessions, per_sec_max=sim.config.sessions_per_second,
        max_sessions=sim.config.max_sessions)


def api_version(sim: "FreeSwitchSim", args: str) -> str:
    return f"FreeSWITCH Version {VERSION_FULL} ({VERSION_REVISION_HUMAN})\n"


def xml_error(conf_dir: Path) -> tuple[int, str] | None:
    """The first well-formedness error under conf_dir as (line, message), ezxml's wording where known."""
    for path in sorted(conf_dir.rglob("*.xml")):
        text = path.read_bytes()
        parser = xml.parsers.expat.ParserCreate()
        try:
            parser.Parse(text, True)
        except xml.parsers.expat.ExpatError as error:
            message = xml.parsers.expat.ErrorString(error.code)
            if error.code == xml.parsers.expat.errors.codes[xml.parsers.expat.errors.XML_ERROR_TAG_MISMATCH]:
                line = text.decode("utf-8", "replace").splitlines()[error.lineno - 1]
                start = line.rfind("</", 0, error.offset + 2)  # expat points inside the closing tag
                found = re.match(r"</\s*([^\s>]+)", line[start:]) if start >= 0 else None
                if found:
                    message = f"unexpected closing tag </{found.group(1)}>"
            return error.lineno, message
    return None


def api_reloadxml(sim: "FreeSwitchSim", args: str) -> str:
    """s6: `+OK [Success]` and RELOADXML; a malformed file `+OK [[error near line N]: msg]`, no event, no log."""
    if sim.config.conf_dir is not None:
        error = xml_error(Path(sim.config.conf_dir))
        if error is not None:
            return apitext.reloadxml_error(*error)
    sim.fire_event("RELOADXML")
    sim.log("INFO", "Reloading XML")
    return apitext.reloadxml_ok()


def api_sofia(sim: "FreeSwitchSim", args: str) -> str:
    words = args.split()
    if len(words) >= 3 and words[0] == "profile" and words[2] == "rescan":
        if words[1] != sim.config.sip_profile:
            return f"Invalid Profile [{words[1]}]"
        if sim.config.conf_dir is not None and xml_error(Path(sim.config.conf_dir)) is not None:
            return "Reload XML [Failed]\n"
        sim.fire_event("RELOADXML")  # s6: the rescan reloads the XML and fires RELOADXML too
        return apitext.sofia_rescan_ok(words[1])
    if words[:1] == ["status"]:
        return _sofia_status(sim)
    return "-ERR Unsupported sofia command in the simulator\n"


def _sofia_status(sim: "FreeSwitchSim") -> str:
    """`sofia status`: the profile table mod_sofia prints (one profile, its alias, no gateways)."""
    rule = "=" * 91
    host = sim.config.domain
    rows = [
        ("Name", "Type", "Data", "State"),
        (sim.config.sip_profile, "profile", f"sip:mod_sofia@{host}:5070", "RUNNING (0)"),
        (host, "alias", sim.config.sip_profile, "ALIASED"),
    ]
    lines = [f"{rows[0][0]:>25}\t{rows[0][1]:>7}\t{rows[0][2]:>42}\t{rows[0][3]}", rule]
    lines += [f"{n:>25}\t{t:>7}\t{d:>42}\t{s}" for n, t, d, s in rows[1:]]
    lines += [rule, "1 profile 1 alias", ""]
    return "\n".join(lines)


def api_log(sim: "FreeSwitchSim", args: str) -> str:
    level, _, text = args.partition(" ")
    sim.log(level.upper() or "DEBUG", text)
    return "+OK\n"


def api_eval(sim: "FreeSwitchSim", args: str) -> str:
    return args


COMMANDS: dict[str, Callable[["FreeSwitchSim", str], str]] = {
    "status": api_status,
    "version": api_version,
    "uuid_kill": api_uuid_kill,
    "uuid_getvar": api_uuid_getvar,
    "uuid_setvar": api_uuid_setvar,
    "uuid_setvar_multi": api_uuid_setvar_multi,
    "uuid_exists": api_uuid_exists,
    "uuid_dump": api_uuid_dump,
    "uuid_send_dtmf": api_uuid_send_dtmf,
    "uuid_answer": api_uuid_answer,
    "uuid_transfer": api_uuid_transfer,
    "uuid_broadcast": api_uuid_broadcast,
    "uuid_record": api_uuid_record,
    "sched_hangup": api_sched_hangup,
    "sched_del": api_sched_del,
    "hupall": api_hupall,
    "show": api_show,
    "reloadxml": api_reloadxml,
    "sofia": api_sofia,
    "log": api_log,
    "eval": api_eval,
}


def _register_transfer_commands() -> None:
    from switchctl.sim.conference import api_conference
    from switchctl.sim.transfer import api_module_exists, api_uuid_break, api_uuid_bridge

    COMMANDS.update({"uuid_bridge": api_uuid_bridge, "uuid_break": api_uuid_break,
                     "module_exists": api_module_exists, "conference": api_conference})


def run_api(sim: "FreeSwitchSim", line: str) -> str:
    if "conference" not in COMMANDS:
        _register_transfer_commands()
    command, _, args = line.strip().partition(" ")
    handler = COMMANDS.get(command)
    if handler is None:
        return apitext.unknown_command(command)
    return handler(sim, args.strip())


async def run_api_async(sim: "FreeSwitchSim", line: str) -> str:
    command, _, args = line.strip().partition(" ")
    if command == "originate":
        from switchctl.sim.bridge import api_originate

        return await api_originate(sim, args.strip())
    if command == "uuid_send_dtmf":
        from switchctl.sim.loopback import api_uuid_send_dtmf as send_dtmf  # may pause (`w`): async

        return await send_dtmf(sim, args.strip())
    return run_api(sim, line)
