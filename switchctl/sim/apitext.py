"""Bodies of api commands as FreeSWITCH 1.11.1 prints them (pure; see captures s6_api/).

The engine decides what a command does; these functions only format the answer byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from switchctl.esl.serverwire import json_string, serialize_event
from switchctl.sim.events import ChannelData, EventFactory, local_stamp

__all__ = [
    "CALL_COLUMNS",
    "CHANNEL_COLUMNS",
    "NO_SUCH_CHANNEL",
    "call_row",
    "channel_row",
    "getvar_result",
    "reloadxml_error",
    "reloadxml_ok",
    "show_calls",
    "show_channels",
    "show_count",
    "sofia_rescan_ok",
    "status_text",
    "unknown_command",
    "usage",
    "uuid_dump",
    "uuid_exists",
]

NO_SUCH_CHANNEL = "-ERR No such channel!\n"
OK = "+OK\n"
VERSION = "1.11.1-release git c2c5964 2026-05-26 20:41:26Z 64bit"

# Columns of the core db `channels` view (show channels) and `basic_calls` (show calls).
CHANNEL_COLUMNS = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,"
    "application_data,dialplan,context,read_codec,read_rate,read_bit_rate,write_codec,write_rate,"
    "write_bit_rate,secure,hostname,presence_id,presence_data,accountcode,callstate,callee_name,"
    "callee_num,callee_direction,call_uuid,sent_callee_name,sent_callee_num,initial_cid_name,"
    "initial_cid_num,initial_ip_addr,initial_dest,initial_dialplan,initial_context"
).split(",")
_CALL_LEG = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,presence_id,"
    "presence_data,accountcode,callstate,callee_name,callee_num,callee_direction"
).split(",")
CALL_COLUMNS = (
    _CALL_LEG
    + ["call_uuid", "hostname", "sent_callee_name", "sent_callee_num"]
    + [f"b_{c}" for c in _CALL_LEG]
    + ["b_sent_callee_name", "b_sent_callee_num", "call_created_epoch"]
)


def status_text(
    uptime_us: int,
    sessions_since_startup: int,
    sessions: int,
    *,
    peak: int = 0,
    peak_5min: int = 0,
    per_sec: int = 0,
    per_sec_max: int = 30,
    per_sec_peak: int = 0,
    per_sec_peak_5min: int = 0,
    max_sessions: int = 1000,
    idle_cpu: str = "0.00/99.00",
    stack: str = "240K/8192K",
    version: str = VERSION,
) -> str:
    """`api status` body (mod_commands status_function); note the trailing spaces FreeSWITCH prints."""
    seconds, micro = divmod(uptime_us, 1_000_000)
    millis, micro = divmod(micro, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    years, days = divmod(days, 365)
    return (
        f"UP {years} years, {days} days, {hours} hours, {minutes} minutes, {seconds} seconds, "
        f"{millis} milliseconds, {micro} microseconds\n"
        f"FreeSWITCH (Version {version}) is ready\n"
        f"{sessions_since_startup} session(s) since startup\n"
        f"{sessions} session(s) - peak {peak}, last 5min {peak_5min} \n"
        f"{per_sec} session(s) per Sec out of max {per_sec_max}, peak {per_sec_peak}, "
        f"last 5min {per_sec_peak_5min} \n"
        f"{max_sessions} session(s) max\n"
        f"min idle cpu {idle_cpu}\n"
        f"Current Stack Size/Max {stack}\n"
    )


def channel_row(ch: ChannelData, *, hostname: str = "vm", **columns: str) -> dict[str, str]:
    """One `show channels` row from a channel; keyword arguments override/add columns
    (application, application_data, callee_direction, sent_callee_*, initial_* ...)."""
    row = dict.fromkeys(CHANNEL_COLUMNS, "")
    codec_r = ch.read_codec or ("", "", "")
    codec_w = ch.write_codec or ("", "", "")
    row.update(
        uuid=ch.uuid,
        direction=ch.direction,
        created=local_stamp(ch.created_us),
        created_epoch=str(ch.created_us // 1_000_000),
        name=ch.name,
        state=ch.state,
        cid_name=ch.caller_name,
        cid_num=ch.caller_number,
        ip_addr=ch.network_addr,
        dest=ch.destination,
        application=ch.variables.get("current_application", ""),
        application_data=ch.variables.get("current_application_data", ""),
        dialplan=ch.dialplan,
        context=ch.context,
        read_codec=str(codec_r[0]),
        read_rate=str(codec_r[1]),
        read_bit_rate=str(codec_r[2]),
        write_codec=str(codec_w[0]),
        write_rate=str(codec_w[1]),
        write_bit_rate=str(codec_w[2]),
        hostname=hostname,
        presence_id=ch.variables.get("presence_id", ""),
        presence_data=ch.variables.get("presence_data", ""),
        callstate=ch.call_state,
        callee_name=ch.callee_name,
        callee_num=ch.callee_number,
        call_uuid=ch.variables.get("call_uuid", ch.uuid),
        initial_cid_name=ch.caller_name,
        initial_cid_num=ch.caller_number,
        initial_ip_addr=ch.network_addr,
        initial_dest=ch.destination,
        initial_dialplan=ch.dialplan,
        initial_context=ch.context,
    )
    _apply(row, columns)
    return row


def call_row(a: Mapping[str, str], b: Mapping[str, str] | None, *, call_created_epoch: str = "") -> dict[str, str]:
    """One `show calls` row from the A leg's and (bridged) B leg's channel rows."""
    row = dict.fromkeys(CALL_COLUMNS, "")
    for col in _CALL_LEG + ["call_uuid", "hostname", "sent_callee_name", "sent_callee_num"]:
        row[col] = a.get(col, "")
    if b is not None:
        for col in _CALL_LEG + ["sent_callee_name", "sent_callee_num"]:
            row[f"b_{col}"] = b.get(col, "")
        row["call_created_epoch"] = call_created_epoch
    return row


def _apply(row: dict[str, str], columns: Mapping[str, str]) -> None:
    for key, value in columns.items():
        if key not in row:
            raise KeyError(f"unknown column {key!r}")
        row[key] = value


def _table(rows: Sequence[Mapping[str, str]], columns: Sequence[str], as_json: bool) -> str:
    """mod_commands show: csv with a `N total.` footer, or compact json ({"row_count": 0}\\n if empty)."""
    if as_json:
        if not rows:
            return '{"row_count": 0}\n'
        parts = []
        for row in rows:
            members = b",".join(json_string(c) + b":" + json_string(row.get(c, "")) for c in columns)
            parts.append(b"{" + members + b"}")
        data = b'{"row_count":%d,"rows":[' % len(rows) + b",".join(parts) + b"]}"
        return data.decode("utf-8")
    lines = []
    if rows:
        lines.append(",".join(columns))
        lines += [",".join(row.get(c, "") for c in columns) for row in rows]
    return "".join(line + "\n" for line in lines) + f"\n{len(rows)} total.\n"


def show_channels(
    channels: Sequence[ChannelData | Mapping[str, str]], *, as_json: bool, hostname: str = "vm"
) -> str:
    """`show channels [as json]`: ChannelData (default row) or ready rows from `channel_row`."""
    rows = [channel_row(c, hostname=hostname) if isinstance(c, ChannelData) else c for c in channels]
    return _table(rows, CHANNEL_COLUMNS, as_json)


def show_calls(rows: Sequence[Mapping[str, str]], *, as_json: bool) -> str:
    """`show calls [as json]` / `show bridged_calls` from `call_row` rows."""
    return _table(rows, CALL_COLUMNS, as_json)


def show_count(count: int) -> str:
    """`show channels count` / `show calls count`."""
    return f"\n{count} total.\n"


def uuid_dump(
    ch: ChannelData, *, as_json: bool, factory: EventFactory, now_us: int
) -> str:
    """`uuid_dump <uuid> [json]`: the channel's CHANNEL_DATA event, serialized (no frame)."""
    headers = factory.event(
        "CHANNEL_DATA",
        now_us=now_us,
        calling=("mod_commands.c", "uuid_dump_function", 6495),
        extra=ch.basic_headers("CHANNEL_DATA") + ch.variable_headers(),
    )
    return serialize_event(headers, None, "json" if as_json else "plain").decode("utf-8", "surrogateescape")


def getvar_result(value: str | None) -> str:
    """`uuid_getvar` body: the value without newline, `_undef_` when unset."""
    return "_undef_" if value is None else value


def uuid_exists(exists: bool) -> str:
    return "true" if exists else "false"


def usage(text: str) -> str:
    """A usage error, e.g. usage("<uuid> <var>") -> `-USAGE: <uuid> <var>\\n`."""
    return f"-USAGE: {text}\n"


def unknown_command(command: str) -> str:
    return f"-ERR {command} Command not found!\n"


def reloadxml_ok() -> str:
    return "+OK [Success]\n"


def reloadxml_error(line: int, message: str) -> str:
    """A failed reloadxml still starts with +OK (the line is in the preprocessed XML)."""
    return f"+OK [[error near line {line}]: {message}]\n"


def sofia_rescan_ok(profile: str) -> str:
    """`sofia profile <profile> rescan` (the profile name is not printed)."""
    del profile
    return "Reload XML [Success]\n+OK scan complete\n"
