"""Call detail records from the switches' own records, normalised (pure: no I/O).

Every source becomes one `Cdr` per call leg:

| source       | what                                                            | time precision |
| ------------ | --------------------------------------------------------------- | -------------- |
| `fs_json`    | FreeSWITCH mod_json_cdr file (one leg per file)                 | µs             |
| `fs_csv`     | FreeSWITCH mod_cdr_csv line, template `esl_usec` (as captured)  | µs             |
| `fs_event`   | FreeSWITCH CHANNEL_HANGUP_COMPLETE event headers                | µs             |
| `ast_custom` | Asterisk cdr_custom line as switchctl renders it (doubles)      | µs             |
| `ari`        | built by the Asterisk backend from ARI + `CDR(answer,u)`        | ms             |
| `ast_csv`    | Asterisk cdr_csv Master.csv line                                | whole seconds  |

Durations: `billable_us` is FreeSWITCH's `billusec` (end − answer of the two stored µs stamps) or,
on Asterisk, end − answer of the µs stamps. Never `billsec`: FreeSWITCH computes it as
floor(end) − floor(answer) and Asterisk truncates it, so both are up to a second off.

The identity of a record is (switch, call_uuid, leg, segment): `leg` is "a" for a channel the switch
received (direction inbound) and "b" for one it originated, so every source of one channel agrees;
`segment` is 0 except on Asterisk, where one channel can write several CDR rows (a failed Dial then
the Hangup, see captures 08_cdr f/g): there it is the row's CDR `sequence`. See docs/CDR.md.

Parsing errors raise `CdrError` whose message starts with the `where` given (`file:line`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

from switchctl.ari.models import fs_cause_name
from switchctl.billing.callkeys import ACCOUNT_VAR, CALL_VAR

# The channel variable (Asterisk: CDR user variable) naming the call's recording file, set by the
# recording feature (features/recording); a CDR carrying it keeps the path with the call even if
# the controller that started the recording died mid-call (docs/RECORDING.md).
RECORDING_VAR = "switchctl_recording"

SOURCES = ("fs_json", "fs_csv", "fs_event", "ast_csv", "ast_custom", "ari")
LEGS = ("a", "b")
MAX_CALLER_DIGITS = 20
MAX_CALLEE_DIGITS = 28
MAX_TEXT = 255  # longest caller / destination / context text kept (a column size)

# How exactly each source gives the call's times: a more precise record of a call supersedes a
# less precise one (docs/CDR.md, "Precedence").
SOURCE_PRECISION: Mapping[str, int] = {
    "fs_json": 3, "fs_csv": 3, "fs_event": 3, "ast_custom": 3, "ari": 2, "ast_csv": 1,
}
SWITCH_KIND: Mapping[str, str] = {
    "fs_json": "freeswitch", "fs_csv": "freeswitch", "fs_event": "freeswitch",
    "ast_csv": "asterisk", "ast_custom": "asterisk", "ari": "asterisk",
}

# Flags a record may carry (it is stored anyway: a call is never dropped for them).
FLAG_CALLER_TOO_LONG = "caller_too_long"  # a numeric caller of more than 20 digits
FLAG_CALLEE_TOO_LONG = "callee_too_long"  # a numeric destination of more than 28 digits: not rated
FLAG_NOT_A_NUMBER = "destination_not_a_number"  # "s", "uas-answer"...: not rated
FLAG_SECONDS_ONLY = "seconds_only"  # times known to the second only (Master.csv)

_NUMBER = re.compile(r"\+?(\d+)")
_US = re.compile(r"\d{1,19}")
_DOUBLE = re.compile(r"(\d{1,12})(?:\.(\d{1,6}))?")


class CdrError(ValueError):
    """A record that cannot be read; the message names where it is (`file:line: ...`)."""


@dataclass(frozen=True, slots=True)
class Cdr:
    """One call leg as the switch recorded it. Times are epoch µs on the switch's clock."""

    switch: str  # switchctl's name of the switch (site config), not its hostname
    call_uuid: str  # FreeSWITCH channel uuid / Asterisk uniqueid (= ARI channel id)
    leg: str  # "a" (the switch received the channel) or "b" (the switch originated it)
    direction: str  # "inbound" / "outbound", as the switch says
    caller: str  # caller-id number verbatim (a name such as "sipp" or "anonymous" stays)
    callee: str | None  # the destination as digits for rating (≤ 28, no '+'); None if not a number
    destination: str  # the destination as dialled
    context: str
    start_us: int
    answer_us: int | None  # None: never answered
    end_us: int
    billable_us: int  # 0 when unanswered
    hangup_cause: str  # FreeSWITCH's name (NORMAL_CLEARING, USER_BUSY, NO_ANSWER ...)
    codec: str | None
    peer: str | None  # the bridged leg: a uuid on FreeSWITCH, a channel name on Asterisk rows
    account: str | None  # switchctl_account / Asterisk accountcode
    booth: str | None
    source: str
    raw: str  # the original record as text
    segment: int = 0  # Asterisk CDR `sequence`; 0 elsewhere
    flags: tuple[str, ...] = ()
    # `switchctl_call` of a leg a prepaid dial created: the caller leg's uuid, which names the
    # call's reservation (billing/callkeys.py). Not stored in the `cdrs` table (it is in `raw`).
    prepaid_call: str | None = None
    # `switchctl_recording`: the call's recording file as the switch wrote it (None: not recorded).
    # Kept in the `call_recordings` table by the importer, not in `cdrs` (it is in `raw`).
    recording: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.source not in SOURCES:
            problems.append(f"unknown source '{self.source}'")
        if self.leg not in LEGS:
            problems.append(f"leg '{self.leg}' is not 'a' or 'b'")
        if not self.switch or not self.call_uuid:
            problems.append("switch and call uuid are required")
        if self.end_us < self.start_us:
            problems.append(f"ends ({self.end_us}) before it starts ({self.start_us})")
        if self.answer_us is None and self.billable_us != 0:
            problems.append(f"unanswered but {self.billable_us} µs billable")
        if self.answer_us is not None and not self.start_us <= self.answer_us <= self.end_us:
            problems.append(f"answer {self.answer_us} is outside start..end")
        if self.billable_us < 0:
            problems.append(f"negative billable time {self.billable_us}")
        if problems:
            raise CdrError("; ".join(problems))

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.switch, self.call_uuid, self.leg, self.segment)

    @property
    def answered(self) -> bool:
        return self.answer_us is not None

    @property
    def precision(self) -> int:
        return SOURCE_PRECISION[self.source]

    @property
    def switch_kind(self) -> str:
        return SWITCH_KIND[self.source]


# --------------------------------------------------------------------------------------------------
# Shared field normalisation


def leg_of(direction: str) -> str:
    """'a' for a channel the switch received, 'b' for one it originated (FreeSWITCH's direction)."""
    return "b" if direction == "outbound" else "a"


def _numbers(caller: str, destination: str) -> tuple[str, str | None, tuple[str, ...]]:
    flags: list[str] = []
    m = _NUMBER.fullmatch(caller)
    if m and len(m.group(1)) > MAX_CALLER_DIGITS:
        flags.append(FLAG_CALLER_TOO_LONG)
    callee: str | None = None
    m = _NUMBER.fullmatch(destination)
    if m is None:
        flags.append(FLAG_NOT_A_NUMBER)
    elif len(m.group(1)) > MAX_CALLEE_DIGITS:
        flags.append(FLAG_CALLEE_TOO_LONG)
    else:
        callee = m.group(1)
    return caller[:MAX_TEXT], callee, tuple(flags)


def _us(value: str | None, what: str) -> int:
    """A FreeSWITCH µs stamp or duration ("0" or empty = 0)."""
    if value is None or value == "":
        return 0
    if not _US.fullmatch(value):
        raise ValueError(f"{what} '{value}' is not a whole number of µs")
    return int(value)


def _double_us(value: str, what: str) -> int:
    """Asterisk `sec.usec` (cdr_custom double, CDR(x,u)) to µs, digit by digit (no float)."""
    m = _DOUBLE.fullmatch(value.strip())
    if not m:
        raise ValueError(f"{what} '{value}' is not seconds.microseconds")
    return int(m.group(1)) * 1_000_000 + int((m.group(2) or "").ljust(6, "0"))


def _opt(value: str | None) -> str | None:
    return value if value else None


def _build(where: str, **fields: Any) -> Cdr:
    caller, callee, flags = _numbers(fields.pop("caller"), fields["destination"])
    extra = fields.pop("flags", ())
    fields["destination"] = fields["destination"][:MAX_TEXT]
    fields["context"] = fields["context"][:MAX_TEXT]
    try:
        return Cdr(caller=caller, callee=callee, flags=flags + tuple(extra), **fields)
    except CdrError as exc:
        raise CdrError(f"{where}: {exc}") from None


def _booth(variables: Mapping[str, str]) -> str | None:
    """The booth of a FreeSWITCH leg: `switchctl_booth` is "true" on booth phones in the directory
    (the booth is then the directory user), or may name the booth itself."""
    booth = variables.get("switchctl_booth") or ""
    if booth == "true":
        return _opt(variables.get("user_name") or variables.get("dialed_user"))
    if booth in ("", "false"):
        return None
    return booth


# --------------------------------------------------------------------------------------------------
# FreeSWITCH


def _fs_cdr(where: str, source: str, raw: str, *, switch: str, variables: Mapping[str, str],
            caller: str, destination: str, context: str, direction: str | None = None) -> Cdr:
    """A FreeSWITCH leg from its channel variables (the same names in every FreeSWITCH source)."""
    try:
        uuid = variables.get("uuid") or ""
        direction = direction or variables.get("direction") or ""
        if direction not in ("inbound", "outbound"):
            raise ValueError(f"direction '{direction}' is not inbound or outbound")
        start = _us(variables.get("start_uepoch"), "start_uepoch")
        answer = _us(variables.get("answer_uepoch"), "answer_uepoch")
        end = _us(variables.get("end_uepoch"), "end_uepoch")
        if "billusec" not in variables:
            raise ValueError("no billusec (the exact billable µs)")
        billable = _us(variables.get("billusec"), "billusec")
        cause = variables.get("hangup_cause") or ""
        if not cause:
            raise ValueError("no hangup_cause")
    except ValueError as exc:
        raise CdrError(f"{where}: {exc}") from None
    if not uuid:
        raise CdrError(f"{where}: no channel uuid")
    return _build(
        where, switch=switch, call_uuid=uuid, leg=leg_of(direction), direction=direction,
        caller=caller, destination=destination, context=context, start_us=start,
        answer_us=answer or None, end_us=end, billable_us=billable if answer else 0,
        hangup_cause=cause,
        codec=_opt(variables.get("read_codec") or variables.get("rtp_use_codec_name")),
        peer=_opt(variables.get("bridge_uuid") or variables.get("last_bridge_to")
                  or variables.get("bleg_uuid")),
        account=_opt(variables.get("switchctl_account")), booth=_booth(variables),
        source=source, raw=raw, prepaid_call=_opt(variables.get(CALL_VAR)),
        recording=_opt(variables.get(RECORDING_VAR)),
    )


def parse_fs_json(text: str, *, switch: str, where: str = "<json_cdr>", url_encoded: bool = True) -> Cdr:
    """A mod_json_cdr document. `url_encoded`: the module's `encode-values` (default true: every
    variable value is URL-encoded, as captured)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CdrError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variables"), dict):
        raise CdrError(f"{where}: not a mod_json_cdr record (no 'variables' object)")
    decode = unquote if url_encoded else (lambda v: v)
    variables = {str(k): decode(str(v)) for k, v in doc["variables"].items()}
    # callflow is a list (newest caller profile first) since FreeSWITCH 1.10, an object before.
    callflow = doc.get("callflow")
    first = callflow[0] if isinstance(callflow, list) and callflow else callflow
    profile = first.get("caller_profile") if isinstance(first, dict) else None
    if not isinstance(profile, dict):
        raise CdrError(f"{where}: no callflow caller_profile")
    channel_data = doc.get("channel_data") if isinstance(doc.get("channel_data"), dict) else {}
    return _fs_cdr(
        where, "fs_json", text, switch=switch, variables=variables,
        caller=str(profile.get("caller_id_number") or ""),
        destination=str(profile.get("destination_number") or ""),
        context=str(profile.get("context") or ""),
        direction=variables.get("direction") or str(channel_data.get("direction") or ""),
    )


def parse_fs_event(headers: Mapping[str, str], *, switch: str, raw: str | None = None,
                   where: str = "<CHANNEL_HANGUP_COMPLETE>") -> Cdr:
    """A CHANNEL_HANGUP_COMPLETE event's headers, URL-decoded (as `esl.codec.Event.headers`)."""
    name = headers.get("Event-Name")
    if name != "CHANNEL_HANGUP_COMPLETE":
        raise CdrError(f"{where}: event {name!r} is not CHANNEL_HANGUP_COMPLETE")
    variables = {k[9:]: v for k, v in headers.items() if k.startswith("variable_")}
    variables.setdefault("uuid", headers.get("Unique-ID", ""))
    variables.setdefault("hangup_cause", headers.get("Hangup-Cause", ""))
    # The Caller-Channel-* times are the same stored µs stamps as the *_uepoch variables; use them
    # when a profile lacks the variables.
    variables.setdefault("start_uepoch", headers.get("Caller-Channel-Created-Time", ""))
    variables.setdefault("answer_uepoch", headers.get("Caller-Channel-Answered-Time", ""))
    variables.setdefault("end_uepoch", headers.get("Caller-Channel-Hangup-Time", ""))
    if "read_codec" not in variables and headers.get("Channel-Read-Codec-Name"):
        variables["read_codec"] = headers["Channel-Read-Codec-Name"]
    if raw is None:
        raw = "".join(f"{k}: {v}\n" for k, v in headers.items())
    return _fs_cdr(
        where, "fs_event", raw, switch=switch, variables=variables,
        caller=headers.get("Caller-Caller-ID-Number", ""),
        destination=headers.get("Caller-Destination-Number", ""),
        context=headers.get("Caller-Context", ""),
        direction=variables.get("direction") or headers.get("Call-Direction"),
    )


# mod_cdr_csv template `esl_usec`, the column order of the captured Master.csv (s8_cdr). The
# template text is in docs/CDR.md; each name is the channel variable of that column.
FS_CSV_ESL_USEC: tuple[str, ...] = (
    "uuid", "bleg_uuid", "direction", "caller_id_number", "destination_number", "context",
    "start_stamp", "answer_stamp", "end_stamp",
    "start_uepoch", "profile_start_uepoch", "progress_uepoch", "progress_media_uepoch",
    "answer_uepoch", "bridge_uepoch", "last_hold_epoch", "hold_accum_seconds", "end_uepoch",
    "duration", "billsec", "progresssec", "answersec", "waitsec", "progress_mediasec", "flow_billsec",
    "mduration", "billmsec", "progressmsec", "answermsec", "waitmsec", "progress_mediamsec",
    "flow_billmsec",
    "uduration", "billusec", "progressusec", "answerusec", "waitusec", "progress_mediausec",
    "flow_billusec",
    "hangup_cause", "hangup_cause_q850", "sip_hangup_disposition", "originate_disposition",
    "endpoint_disposition", "last_app", "last_arg",
)
# What switchctl rendered before call recordings: the captured template plus the codec and the
# prepaid call's account and caller-leg uuid (billing/callkeys.py). Files written then still parse.
FS_CSV_SWITCHCTL_V1: tuple[str, ...] = FS_CSV_ESL_USEC + ("read_codec", ACCOUNT_VAR, CALL_VAR)
# What switchctl renders (templates/freeswitch/autoload_configs/cdr_csv.conf.xml.j2): the above plus
# the call's recording file (features/recording). The layouts are told apart by their column count.
FS_CSV_SWITCHCTL: tuple[str, ...] = FS_CSV_SWITCHCTL_V1 + (RECORDING_VAR,)
_FS_CSV_LAYOUTS = {len(c): c for c in (FS_CSV_ESL_USEC, FS_CSV_SWITCHCTL_V1, FS_CSV_SWITCHCTL)}


def _csv_row(text: str, where: str) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(text.rstrip("\r\n"), newline=""), strict=True))
    except csv.Error as exc:
        raise CdrError(f"{where}: not a CSV row ({exc})") from None
    if len(rows) != 1:
        raise CdrError(f"{where}: expected one CSV row, found {len(rows)}")
    return rows[0]


def parse_fs_csv(line: str, *, switch: str, where: str = "<cdr_csv>",
                 columns: Sequence[str] | None = None) -> Cdr:
    """One mod_cdr_csv line; `columns` names the template's variables in order. The template must
    give uuid, direction, caller_id_number, destination_number, context, start/answer/end_uepoch,
    billusec and hangup_cause (mod_cdr_csv's stock `default` template lacks the µs fields).
    Default: switchctl's template (`FS_CSV_SWITCHCTL`, 50 columns), or by column count an older one:
    `FS_CSV_SWITCHCTL_V1` (49, before the recording column) or the captured `esl_usec` (46)."""
    cells = _csv_row(line, where)
    if columns is None:
        columns = _FS_CSV_LAYOUTS.get(len(cells), FS_CSV_SWITCHCTL)
        if len(cells) != len(columns):
            raise CdrError(f"{where}: {len(cells)} columns, the cdr_csv template has "
                           f"{len(FS_CSV_SWITCHCTL)} (switchctl's; {len(FS_CSV_SWITCHCTL_V1)} before "
                           f"recordings) or {len(FS_CSV_ESL_USEC)} (esl_usec, as captured)")
    if len(cells) != len(columns):
        raise CdrError(f"{where}: {len(cells)} columns, the cdr_csv template has {len(columns)}")
    variables = dict(zip(columns, cells))
    return _fs_cdr(
        where, "fs_csv", line.rstrip("\r\n"), switch=switch, variables=variables,
        caller=variables.get("caller_id_number", ""),
        destination=variables.get("destination_number", ""),
        context=variables.get("context", ""),
    )


# --------------------------------------------------------------------------------------------------
# Asterisk

# Asterisk's CDR disposition as a FreeSWITCH cause name (Master.csv has no hangup cause).
DISPOSITION_CAUSE: Mapping[str, str] = {
    "ANSWERED": "NORMAL_CLEARING",
    "BUSY": "USER_BUSY",
    "NO ANSWER": "NO_ANSWER",
    "CONGESTION": "NORMAL_CIRCUIT_CONGESTION",
    "FAILED": "NORMAL_TEMPORARY_FAILURE",
}
# cdr.conf [csv] with loguniqueid, loguserfield and newcdrcolumns = yes (the captured layout and
# what switchctl renders).
AST_MASTER_COLUMNS: tuple[str, ...] = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
    "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid",
    "userfield", "peeraccount", "linkedid", "sequence",
)
# cdr_custom.conf fields as switchctl renders them (render/asterisk.py CDR_CUSTOM_FIELDS; a test
# checks they agree).
# The last two are CDR user variables (`(uservar)`: res_cdrel_custom reads them from the CDR's own
# variables, which only `Set(CDR(name)=...)` / ARI `variable=CDR(name)` write; a plain channel
# variable of that name is not one). See docs/CDR.md, "Asterisk: prepaid variables".
# The layout before the recording's path was added (rows written by an Asterisk not re-rendered
# since are still read: told apart by their column count).
AST_CUSTOM_FIELDS_V1: tuple[str, ...] = (
    "uniqueid", "linkedid", "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
    "lastapp", "lastdata", "start(double)", "answer(double)", "end(double)", "duration", "billsec",
    "disposition", "amaflags", "userfield", "sequence", f"{CALL_VAR}(uservar)",
    f"{ACCOUNT_VAR}(uservar)",
)
AST_CUSTOM_FIELDS: tuple[str, ...] = AST_CUSTOM_FIELDS_V1 + (f"{RECORDING_VAR}(uservar)",)
_QUALIFIER = re.compile(r"\([^()]*\)$")  # `start(double)`, `x(uservar)`, `uniqueid(noquote)`
_AST_ORIGINATED_APPS = ("AppDial", "AppDial2")  # lastapp of a channel Asterisk originated


def ast_cause(disposition: str, hangupcause: str | None = None) -> str:
    """FreeSWITCH's cause name for an Asterisk CDR: from its Q.850 hangup cause when the record has
    one, else from the disposition."""
    if hangupcause and hangupcause.isdigit():
        return fs_cause_name(int(hangupcause))
    try:
        return DISPOSITION_CAUSE[disposition]
    except KeyError:
        raise ValueError(f"unknown disposition '{disposition}'") from None


def _ast_cdr(where: str, source: str, raw: str, *, switch: str, row: Mapping[str, str],
             start_us: int, answer_us: int | None, end_us: int, flags: tuple[str, ...] = ()) -> Cdr:
    try:
        cause = ast_cause(row["disposition"], row.get("hangupcause"))
        sequence = row.get("sequence", "0") or "0"
        if not sequence.isdigit():
            raise ValueError(f"sequence '{sequence}' is not a number")
    except ValueError as exc:
        raise CdrError(f"{where}: {exc}") from None
    if not row.get("uniqueid"):
        raise CdrError(f"{where}: no uniqueid (set loguniqueid = yes)")
    direction = "outbound" if row.get("lastapp") in _AST_ORIGINATED_APPS else "inbound"
    return _build(
        where, switch=switch, call_uuid=row["uniqueid"], leg=leg_of(direction), direction=direction,
        caller=row.get("src", ""), destination=row.get("dst", ""), context=row.get("dcontext", ""),
        start_us=start_us, answer_us=answer_us, end_us=end_us,
        billable_us=end_us - answer_us if answer_us is not None else 0,
        hangup_cause=cause, codec=None, peer=_opt(row.get("dstchannel")),
        account=_opt(row.get("accountcode") or row.get(ACCOUNT_VAR)), booth=None, source=source,
        raw=raw, segment=int(sequence), flags=flags, prepaid_call=_opt(row.get(CALL_VAR)),
        recording=_opt(row.get(RECORDING_VAR)),
    )


def _ast_stamp(value: str, zone: dt.tzinfo, what: str) -> int:
    try:
        local = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"{what} '{value}' is not YYYY-MM-DD HH:MM:SS") from None
    # fold=0: an ambiguous local time (DST fall-back hour) reads as its first occurrence.
    epoch = local.replace(tzinfo=zone) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (epoch.days * 86_400 + epoch.seconds) * 1_000_000


def parse_ast_master(line: str, *, switch: str, where: str = "<Master.csv>", usegmtime: bool = True,
                     timezone: str = "UTC") -> Cdr:
    """One cdr_csv Master.csv row (layout `AST_MASTER_COLUMNS`). Its times are whole seconds: in UTC
    with `usegmtime = yes` (what switchctl renders), else in the Asterisk host's `timezone`."""
    cells = _csv_row(line, where)
    if len(cells) != len(AST_MASTER_COLUMNS):
        raise CdrError(f"{where}: {len(cells)} columns, Master.csv with loguniqueid, loguserfield and "
                       f"newcdrcolumns has {len(AST_MASTER_COLUMNS)}")
    row = dict(zip(AST_MASTER_COLUMNS, cells))
    zone: dt.tzinfo = dt.UTC if usegmtime else zoneinfo.ZoneInfo(timezone)
    try:
        start = _ast_stamp(row["start"], zone, "start")
        answer = _ast_stamp(row["answer"], zone, "answer") if row["answer"] else None
        end = _ast_stamp(row["end"], zone, "end")
    except ValueError as exc:
        raise CdrError(f"{where}: {exc}") from None
    return _ast_cdr(where, "ast_csv", line.rstrip("\r\n"), switch=switch, row=row, start_us=start,
                    answer_us=answer, end_us=end, flags=(FLAG_SECONDS_ONLY,))


def parse_ast_custom(line: str, *, switch: str, where: str = "<cdr-custom>",
                     fields: Sequence[str] = AST_CUSTOM_FIELDS) -> Cdr:
    """One cdr_custom (dsv) row; start/answer/end as `sec.usec` doubles (answer 0.000000 when
    unanswered). `fields` is the `fields =` list of cdr_custom.conf."""
    cells = _csv_row(line, where)
    if fields == AST_CUSTOM_FIELDS and len(cells) == len(AST_CUSTOM_FIELDS_V1):
        fields = AST_CUSTOM_FIELDS_V1
    if len(cells) != len(fields):
        raise CdrError(f"{where}: {len(cells)} columns, the cdr_custom fields list has {len(fields)}")
    row = {_QUALIFIER.sub("", name.strip()).lower(): cell for name, cell in zip(fields, cells)}
    for name in ("uniqueid", "start", "answer", "end", "disposition"):
        if name not in row:
            raise CdrError(f"{where}: the cdr_custom fields lack '{name}'")
    try:
        start = _double_us(row["start"], "start")
        answer = _double_us(row["answer"], "answer")
        end = _double_us(row["end"], "end")
    except ValueError as exc:
        raise CdrError(f"{where}: {exc}") from None
    return _ast_cdr(where, "ast_custom", line.rstrip("\r\n"), switch=switch, row=row,
                    start_us=start, answer_us=answer or None, end_us=end)


def cdr_from_ari(*, switch: str, channel_id: str, direction: str, caller: str, destination: str,
                 context: str, start_us: int, answer_us: int | None, end_us: int,
                 cause: int | None, sequence: int, peer: str | None = None,
                 account: str | None = None, booth: str | None = None,
                 codec: str | None = None, raw: str = "") -> Cdr:
    """A record built live by the Asterisk backend: answer from `CDR(answer,u)`, end from
    `ChannelDestroyed.timestamp`, cause its Q.850 `cause`. `sequence` is `CDR(sequence)` so the
    record and the cdr_custom row of the same CDR share one identity."""
    return _build(
        f"<ari {channel_id}>", switch=switch, call_uuid=channel_id, leg=leg_of(direction),
        direction=direction, caller=caller, destination=destination, context=context,
        start_us=start_us, answer_us=answer_us, end_us=end_us,
        billable_us=end_us - answer_us if answer_us is not None else 0,
        hangup_cause=fs_cause_name(cause), codec=codec, peer=peer, account=account, booth=booth,
        source="ari", raw=raw, segment=sequence,
    )


# --------------------------------------------------------------------------------------------------
# File formats, for the incremental importer (billing/cdrstore.py)


class CdrFormat(Protocol):
    """How to read one kind of CDR file: `whole_file` formats hold one record per file (mod_json_cdr
    log-dir); the others one record per line."""

    source: ClassVar[str]
    whole_file: ClassVar[bool]

    def parse(self, text: str, where: str) -> Cdr: ...


@dataclass(frozen=True)
class FsJsonFormat:
    switch: str
    url_encoded: bool = True
    source: ClassVar[str] = "fs_json"
    whole_file: ClassVar[bool] = True

    def parse(self, text: str, where: str) -> Cdr:
        return parse_fs_json(text, switch=self.switch, where=where, url_encoded=self.url_encoded)


@dataclass(frozen=True)
class FsCsvFormat:
    switch: str
    columns: tuple[str, ...] | None = None  # None: parse_fs_csv's default (switchctl's template)
    source: ClassVar[str] = "fs_csv"
    whole_file: ClassVar[bool] = False

    def parse(self, text: str, where: str) -> Cdr:
        return parse_fs_csv(text, switch=self.switch, where=where, columns=self.columns)


@dataclass(frozen=True)
class AstMasterFormat:
    switch: str
    usegmtime: bool = True
    timezone: str = "UTC"
    source: ClassVar[str] = "ast_csv"
    whole_file: ClassVar[bool] = False

    def parse(self, text: str, where: str) -> Cdr:
        return parse_ast_master(text, switch=self.switch, where=where, usegmtime=self.usegmtime,
                                timezone=self.timezone)


@dataclass(frozen=True)
class AstCustomFormat:
    switch: str
    fields: tuple[str, ...] = AST_CUSTOM_FIELDS
    source: ClassVar[str] = "ast_custom"
    whole_file: ClassVar[bool] = False

    def parse(self, text: str, where: str) -> Cdr:
        return parse_ast_custom(text, switch=self.switch, where=where, fields=self.fields)
