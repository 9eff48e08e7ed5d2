"""The simulator's mod_json_cdr and mod_cdr_csv output: one record per channel at reporting.

Modelled on the s8_cdr captures (FreeSWITCH 1.11.1, json_cdr `log-b-leg` true, `encode-values`
default, cdr_csv legs `ab`):
- JSON: `<dir>/<uuid>.cdr.json`, unformatted JSON then a newline; top-level keys `core-uuid`,
  `switchname`, `channel_data`, `callStats`, `variables` (values URL-encoded as switch_url_encode
  does), `app_log` (only when the channel ran applications), `callflow` (a list, newest profile
  first: dialplan, profile_index, `extension` when the dialplan ran, `caller_profile` with the other
  leg under `originator`/`originatee`, `times` in µs);
- CSV: one line of switchctl's `esl_usec` template (`billing.cdr.FS_CSV_SWITCHCTL`) appended to
  `<dir>/Master.csv`; an unset variable expands to the empty string.
The hangup variables (billusec, *_uepoch...) are the channel's own, set before
CHANNEL_HANGUP_COMPLETE (`events.hangup_timestamp_variables`), so event, JSON and CSV agree.
Plain file writes: a CDR is a few KiB, written once per channel, like the module does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from switchctl.sim.events import ChannelData

# switch_url_encode: these, control characters and non-ASCII bytes become %XX (upper-case hex).
_URL_UNSAFE = frozenset('\r\n "#%&+:;<=>?@[\\]^`{|}')
_PROFILE_TIMES = (
    ("created_time", "created_us"), ("profile_created_time", "profile_created_us"),
    ("progress_time", "progress_us"), ("progress_media_time", "progress_media_us"),
    ("answered_time", "answered_us"), ("bridged_time", "bridged_us"),
    ("last_hold_time", "last_hold_us"), ("hold_accum_time", "hold_accum_us"),
    ("hangup_time", "hungup_us"), ("resurrect_time", "resurrected_us"),
    ("transfer_time", "transferred_us"),
)


def url_encode(value: str) -> str:
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if byte < 0x20 or byte > 0x7E or char in _URL_UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(char)
    return "".join(out)


def _profile(ch: ChannelData) -> dict[str, Any]:
    return {
        "username": ch.username, "dialplan": ch.dialplan, "caller_id_name": ch.caller_name,
        "ani": ch.ani if ch.ani is not None else ch.caller_number, "aniii": ch.aniii,
        "caller_id_number": ch.caller_number, "network_addr": ch.network_addr, "rdnis": ch.rdnis,
        "destination_number": ch.destination, "uuid": ch.uuid, "source": ch.source,
        "context": ch.context, "chan_name": ch.profile_channel_name or ch.name,
    }


def json_cdr(ch: ChannelData, *, core_uuid: str, switchname: str,
             apps: Sequence[tuple[str, str]] = (), app_stamps: Sequence[int] = ()) -> str:
    """The mod_json_cdr document of a reported channel (its hangup variables already set)."""
    profile = _profile(ch)
    if ch.other_leg is not None and ch.other_type in ("originator", "originatee"):
        role = ch.other_type
        profile[role] = {f"{role}_caller_profiles": [_profile(ch.other_leg)]}
    flow: dict[str, Any] = {"dialplan": ch.dialplan, "profile_index": ch.profile_index}
    if apps and ch.direction == "inbound":
        flow["extension"] = {"name": ch.destination, "number": ch.destination,
                             "applications": [{"app_name": a, "app_data": d} for a, d in apps]}
    flow["caller_profile"] = profile
    flow["times"] = {name: str(getattr(ch, attr) or 0) for name, attr in _PROFILE_TIMES}
    doc: dict[str, Any] = {
        "core-uuid": core_uuid,
        "switchname": switchname,
        "channel_data": {"state": "CS_REPORTING", "direction": ch.direction, "state_number": "11",
                         "flags": "", "caps": ""},
        "callStats": {},
        "variables": {name: url_encode(value) for name, value in ch.variables.items()},
    }
    if apps:
        stamps = list(app_stamps) + [ch.hungup_us] * (len(apps) - len(app_stamps))
        doc["app_log"] = {"applications": [{"app_name": a, "app_data": d, "app_stamp": str(s)}
                                           for (a, d), s in zip(apps, stamps)]}
    doc["callflow"] = [flow]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"


def csv_cdr(ch: ChannelData, columns: Sequence[str]) -> str:
    """One mod_cdr_csv line: each column is `"${variable}"`, quotes in values doubled."""
    values = dict(ch.variables)
    values.setdefault("uuid", ch.uuid)
    values.setdefault("direction", ch.direction)
    values.setdefault("caller_id_number", ch.caller_number)
    values.setdefault("destination_number", ch.destination)
    values.setdefault("context", ch.context)
    if ch.read_codec is not None:
        values.setdefault("read_codec", ch.read_codec[0])
    if ch.other_leg is not None and ch.direction == "inbound":
        values.setdefault("bleg_uuid", ch.other_leg.uuid)
    return ",".join('"' + values.get(c, "").replace('"', '""') + '"' for c in columns) + "\n"


def write_cdr_files(folder: Path, ch: ChannelData, *, core_uuid: str, switchname: str,
                    apps: Sequence[tuple[str, str]] = (), csv_columns: Sequence[str] | None = None) -> None:
    """Write the channel's JSON CDR (and its cdr_csv line when `csv_columns` is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json_cdr(ch, core_uuid=core_uuid, switchname=switchname, apps=apps)
    # written under a temporary name and renamed: a reader never sees half a file from the sim
    # (real FreeSWITCH writes in place; the collector copes with both)
    tmp = folder / f".{ch.uuid}.cdr.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, folder / f"{ch.uuid}.cdr.json")
    if csv_columns is not None:
        csv_dir = folder / "cdr-csv"
        csv_dir.mkdir(exist_ok=True)
        with open(csv_dir / "Master.csv", "a", encoding="utf-8") as handle:
            handle.write(csv_cdr(ch, csv_columns))


def write_channel_cdr(sim: Any, channel: Any) -> None:
    """The engine's hook at CS_REPORTING (`sim.config.cdr_dir` set): write `channel`'s records."""
    from switchctl.billing.cdr import FS_CSV_SWITCHCTL

    config = sim.config
    write_cdr_files(Path(config.cdr_dir), channel.data, core_uuid=sim.core_uuid,
                    switchname=config.hostname, apps=[(app, arg) for app, arg, _ in channel.apps_run],
                    csv_columns=FS_CSV_SWITCHCTL if config.cdr_csv else None)
