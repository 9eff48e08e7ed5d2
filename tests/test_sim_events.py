"""sim.events must rebuild real FreeSWITCH events: same header names, order and values.

Each test fills a ChannelData from one captured event's values, rebuilds the event with the
EventFactory and compares the whole header list (and, for plain events, the encoded bytes).

Not reproduced by rule: Channel-State-Number values 2 and 8 seen on a few EXECUTE_COMPLETE/UNPARK
events of transfers and holds (the engine sets ChannelData.state_number there); sofia's own variables
(rtp statistics, sip_hangup_disposition) are the engine's. Per-call values (uuids, times, variables)
come from the capture because the simulator's engine decides them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from switchctl.esl import serverwire
from switchctl.sim.events import CALLING, ChannelData, EventFactory, hangup_timestamp_variables

from tests.capturepaths import CAPTURES

FS = CAPTURES / "freeswitch"
SIPP = FS / "outbound_sipp_dtmf"
SCEN = CAPTURES / "freeswitch-scenarios"

pytestmark = pytest.mark.skipif(not SIPP.is_dir(), reason="captures not available")

Headers = list[tuple[str, str]]


def _decode(value: str) -> str:
    return "" if value == "_undef_" else unquote(value)


def load(path: Path) -> tuple[Headers, str | None]:
    raw = path.read_bytes()
    if not raw.startswith(b"Event-Name"):  # framed event: drop the outer header block
        raw = raw.split(b"\n\n", 1)[1]
    head, _, rest = raw.partition(b"\n\n")
    headers = [(n, _decode(v)) for n, v in (line.split(": ", 1) for line in head.decode().split("\n"))]
    body = None
    if headers[-1][0] == "Content-Length":
        body = rest[: int(headers.pop()[1])].decode()
    return headers, body


def channel_from(headers: Headers) -> ChannelData:
    """A ChannelData holding the captured event's channel values."""
    h: dict[str, str] = {}
    for name, value in headers:
        h.setdefault(name, value)

    def codec(label: str) -> tuple[str, int, int] | None:
        name = h.get(f"Channel-{label}-Codec-Name")
        if name is None:
            return None
        return (name, int(h[f"Channel-{label}-Codec-Rate"]), int(h[f"Channel-{label}-Codec-Bit-Rate"]))

    ch = ChannelData(
        uuid=h["Unique-ID"],
        name=h["Channel-Name"],
        direction=h["Caller-Direction"],
        state=h["Channel-State"],
        call_state=h["Channel-Call-State"],
        answer_state=h["Answer-State"],
        caller_number=h.get("Caller-Caller-ID-Number", ""),
        caller_name=h.get("Caller-Caller-ID-Name", ""),
        destination=h.get("Caller-Destination-Number", ""),
        context=h.get("Caller-Context", ""),
        dialplan=h.get("Caller-Dialplan", ""),
        created_us=int(h["Caller-Channel-Created-Time"]),
        profile_created_us=int(h["Caller-Profile-Created-Time"]),
        answered_us=int(h["Caller-Channel-Answered-Time"]),
        progress_us=int(h["Caller-Channel-Progress-Time"]),
        progress_media_us=int(h["Caller-Channel-Progress-Media-Time"]),
        hungup_us=int(h["Caller-Channel-Hangup-Time"]),
        transferred_us=int(h["Caller-Channel-Transfer-Time"]),
        resurrected_us=int(h["Caller-Channel-Resurrect-Time"]),
        bridged_us=int(h["Caller-Channel-Bridged-Time"]),
        last_hold_us=int(h["Caller-Channel-Last-Hold"]),
        hold_accum_us=int(h["Caller-Channel-Hold-Accum"]),
        hangup_cause=h.get("Hangup-Cause"),
        variables={n[len("variable_") :]: v for n, v in headers if n.startswith("variable_")},
        username=h.get("Caller-Username", ""),
        orig_caller_name=h.get("Caller-Orig-Caller-ID-Name", ""),
        orig_caller_number=h.get("Caller-Orig-Caller-ID-Number", ""),
        logical_direction=h["Caller-Logical-Direction"],
        network_addr=h.get("Caller-Network-Addr", ""),
        ani=h.get("Caller-ANI", ""),
        source=h.get("Caller-Source", ""),
        callee_name=h.get("Caller-Callee-ID-Name", ""),
        callee_number=h.get("Caller-Callee-ID-Number", ""),
        # Channel-State-Number is derived (ChannelData.pending_state_number), not copied
        hit_dialplan=h["Channel-HIT-Dialplan"] == "true",
        read_codec=codec("Read"),
        write_codec=codec("Write"),
    )
    if not ch.variables:  # DTMF, CHANNEL_STATE: no variables, take what the engine would have
        if "Channel-Presence-ID" in h:
            ch.variables["presence_id"] = h["Channel-Presence-ID"]
        ch.variables["call_uuid"] = h["Channel-Call-UUID"]
    return ch


def factory_for(headers: Headers) -> EventFactory:
    h = dict(headers)
    return EventFactory(core_uuid=h["Core-UUID"], first_sequence=int(h["Event-Sequence"]))


def now_of(headers: Headers) -> int:
    return int(dict(headers)["Event-Date-Timestamp"])


def after_channel_data(headers: Headers, first: str) -> Headers:
    names = [n for n, _ in headers]
    return headers[names.index(first) :]


def rebuild_and_compare(path: Path, extra_names: Sequence_str) -> None:
    captured, _ = load(path)
    name = captured[0][1]
    extra = [(n, v) for n, v in captured if n in extra_names]
    built = factory_for(captured).channel_event(name, channel_from(captured), now_us=now_of(captured), extra=extra)
    assert built == captured
    assert serverwire.encode_event(built, None, "plain") == path.read_bytes()


Sequence_str = tuple[str, ...]
APP = ("Application", "Application-Data", "Application-Response", "Application-UUID")


@pytest.mark.parametrize(
    "file",
    [
        "event_CHANNEL_EXECUTE.plain.raw",
        "event_CHANNEL_EXECUTE_COMPLETE_answer.plain.raw",
        "event_CHANNEL_EXECUTE_COMPLETE_playback.plain.raw",
        "event_CHANNEL_EXECUTE_COMPLETE_play_and_get_digits.plain.raw",
        "event_CHANNEL_ANSWER.plain.raw",
    ],
)
def test_sipp_call_events(file: str) -> None:
    rebuild_and_compare(SIPP / file, APP)


def test_sipp_dtmf() -> None:
    rebuild_and_compare(SIPP / "event_DTMF.plain.raw", ("DTMF-Digit", "DTMF-Duration", "DTMF-Source"))


@pytest.mark.parametrize(
    "file",
    [
        "outbound_loopback_event_CHANNEL_EXECUTE.plain.raw",
        "outbound_loopback_event_CHANNEL_EXECUTE_COMPLETE_answer.plain.raw",
        "outbound_loopback_event_CHANNEL_ANSWER.plain.raw",
        "outbound_loopback_event_DTMF.plain.raw",
    ],
)
def test_loopback_call_events(file: str) -> None:
    rebuild_and_compare(FS / file, APP + ("DTMF-Digit", "DTMF-Duration", "DTMF-Source"))


def _scenario_event(case: str, event: str) -> Path:
    files = sorted((SCEN / "s1_event_sets" / f"{case}.msgs").glob(f"*_text_event_plain_{event}*.raw"))
    assert files, (case, event)
    return files[0]


@pytest.mark.parametrize(
    "event", ["CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_STATE", "CHANNEL_HANGUP", "CHANNEL_PROGRESS_MEDIA"]
)
def test_outbound_ivr_call_events(event: str) -> None:
    rebuild_and_compare(_scenario_event("v1b_myevents_plain", event), APP)


def test_socket_execute_complete_after_hangup() -> None:
    path = _scenario_event("v1b_myevents_plain", "CHANNEL_EXECUTE_COMPLETE_socket")
    captured, _ = load(path)
    assert dict(captured)["Hangup-Cause"] == "NORMAL_CLEARING"
    rebuild_and_compare(path, APP)


def _cdr_split(captured: Headers) -> tuple[Headers, Headers, Headers]:
    """(variables before the hangup variables, the hangup variables, sofia's variables after them)."""
    variables = [(n[len("variable_") :], v) for n, v in captured if n.startswith("variable_")]
    names = [n for n, _ in variables]
    start = names.index("hangup_cause")
    end = names.index("flow_billusec") + 1
    return variables[:start], variables[start:end], variables[end:]


def test_hangup_complete_rebuilt_with_computed_cdr_variables() -> None:
    path = SIPP / "event_CHANNEL_HANGUP_COMPLETE.plain.raw"
    captured, _ = load(path)
    before, cdr, sofia = _cdr_split(captured)
    ch = channel_from(captured)
    ch.variables = dict(before)
    ch.dtmf_log = dict(cdr)["digits_dialed"]
    ch.last_app = dict(cdr)["last_app"]
    ch.last_arg = dict(cdr)["last_arg"]
    ch.apply_hangup_variables()
    assert list(ch.variables.items())[len(before) :] == cdr  # names, order and computed values
    for name, value in sofia:  # sofia's media statistics, set after the timestamps
        ch.set_var(name, value)
    built = factory_for(captured).channel_event("CHANNEL_HANGUP_COMPLETE", ch, now_us=now_of(captured))
    assert built == captured
    assert serverwire.encode_event(built, None, "plain") == path.read_bytes()


def test_hangup_variables_truncation_rules() -> None:
    ch = ChannelData(uuid="u", name="n", caller_number="1001", created_us=1_000_000_980_000,
                     profile_created_us=1_000_000_980_000, answered_us=1_000_001_000_000,
                     hungup_us=1_000_004_900_000)  # fmt: skip
    values = dict(hangup_timestamp_variables(ch))
    assert values["duration"] == "4"  # 1000004 - 1000000, not int(3.92)
    assert values["billsec"] == "3"
    assert values["billusec"] == "3900000"
    assert values["uduration"] == "3920000"
    assert values["caller_id"] == "1001"
    assert values["digits_dialed"] == "none"
    assert values["last_app"] is None and "answer_stamp" in values and "bridge_stamp" not in values


def test_hangup_complete_of_unanswered_call_has_zero_billsec() -> None:
    ch = ChannelData(uuid="u", name="n", created_us=5_000_000, profile_created_us=5_000_000, hungup_us=9_500_000,
                     hangup_cause="NO_ANSWER")  # fmt: skip
    factory = EventFactory(core_uuid="core")
    headers = factory.channel_event("CHANNEL_HANGUP_COMPLETE", ch, now_us=9_600_000)
    h = dict(headers)
    assert headers[13] == ("Hangup-Cause", "NO_ANSWER")
    assert h["variable_billsec"] == "0" and h["variable_duration"] == "4"
    assert h["variable_hangup_cause_q850"] == "19"


def test_connect_reply_rebuilt() -> None:
    path = SIPP / "command_reply_connect.raw"
    captured, _ = load(path)
    ch = channel_from(captured)
    built = factory_for(captured).connect_headers(ch, now_us=now_of(captured))
    assert built == captured
    assert serverwire.connect_reply(built) == path.read_bytes()


def test_background_job_rebuilt() -> None:
    for path in [FS / "event_BACKGROUND_JOB.plain.raw", *sorted(SCEN.glob("s6_api/*.msgs/*BACKGROUND_JOB*"))]:
        captured, body = load(path)
        h = dict(captured)
        headers, out_body = factory_for(captured).background_job(
            h["Job-UUID"], h["Job-Command"], h.get("Job-Command-Arg"), body or "", now_us=now_of(captured),
            owner_uuid=h.get("Job-Owner-UUID"),
        )  # fmt: skip
        assert headers == captured, path
        assert serverwire.encode_event(headers, out_body, "plain") == path.read_bytes(), path


def test_json_form_of_rebuilt_event() -> None:
    """The same channel data serialized as json equals FreeSWITCH's json event of that call."""
    path = FS / "event_CHANNEL_ANSWER.json.raw"
    import json

    items = json.loads(path.read_bytes().split(b"\n\n", 1)[1], object_pairs_hook=list)
    built = factory_for(items).channel_event("CHANNEL_ANSWER", channel_from(items), now_us=now_of(items))
    assert built == items
    assert serverwire.encode_event(built, None, "json") == path.read_bytes()


def test_new_inbound_sip_matches_captured_create() -> None:
    path = SCEN / "s3_bridge/b1_answered_then_b_hangs_up.monitor.msgs/005_text_event_plain_CHANNEL_CREATE.raw"
    captured, _ = load(path)
    h = dict(captured)
    now = int(h["Caller-Channel-Created-Time"])
    ch = ChannelData.new_inbound_sip(
        h["Unique-ID"], "55501", "7803", now_us=now, session_id=int(h["variable_session_id"]),
        call_id=h["variable_sip_call_id"], from_tag=h["variable_sip_from_tag"],
        subject=h["variable_sip_subject"],
    )  # fmt: skip
    ch.variables["sip_full_via"] = h["variable_sip_full_via"]  # sipp's branch id
    built = factory_for(captured).channel_event("CHANNEL_CREATE", ch, now_us=now_of(captured))
    assert built == captured


def test_event_sequence_is_global_and_calling_table() -> None:
    factory = EventFactory(core_uuid="c")
    ch = ChannelData(uuid="u", name="sofia/internal/1001@127.0.0.1")
    a = dict(factory.channel_event("CHANNEL_STATE", ch, now_us=1_795_626_879_983_435))
    b = dict(factory.event("HEARTBEAT", now_us=0, calling=("switch_core.c", "send_heartbeat", 95)))
    assert (a["Event-Sequence"], b["Event-Sequence"]) == ("1", "2")
    assert a["Event-Date-Local"] == "2026-11-25 17:14:39"
    assert a["Event-Date-GMT"] == "Wed, 25 Nov 2026 17:14:39 GMT"
    assert "variable_uuid" not in a and "Channel-Presence-ID" not in a
    assert a["Channel-Call-UUID"] == "u" and a["Channel-HIT-Dialplan"] == "true"
    assert CALLING["CHANNEL_EXECUTE_COMPLETE"] == ("switch_core_session.c", "switch_core_session_exec", 2972)
    with pytest.raises(ValueError):
        factory.event("NO_SUCH_EVENT", now_us=0)
    with pytest.raises(ValueError):
        factory.channel_event("CHANNEL_STATE", ChannelData(uuid="u", name="n", state="BOGUS"), now_us=0)


def test_set_var_moves_to_end_and_unsets() -> None:
    ch = ChannelData(uuid="u", name="n", variables={"a": "1", "b": "2"})
    ch.set_var("a", "3")
    assert list(ch.variables.items()) == [("b", "2"), ("a", "3")]
    ch.set_var("b", None)
    assert ch.variables == {"a": "3"}


# --------------------------------------------------------------------------- apitext (s6_api)

from switchctl.sim import apitext  # noqa: E402

S6 = SCEN / "s6_api"


def api_body(name: str) -> str:
    return (S6 / f"{name}.raw").read_bytes().split(b"\n\n", 1)[1].decode()


def test_status_text() -> None:
    import re

    body = api_body("api_status")
    nums = [int(n) for n in re.findall(r"\d+", body.split("\n")[0])]
    years, days, hours, minutes, seconds, ms, us = nums
    uptime = ((((years * 365 + days) * 24 + hours) * 60 + minutes) * 60 + seconds) * 1_000_000 + ms * 1000 + us
    text = apitext.status_text(
        uptime, 100, 3, peak=3, peak_5min=3, per_sec=2, per_sec_peak=3, per_sec_peak_5min=3, idle_cpu="0.00/96.57"
    )
    assert text == body


def _rows(name: str) -> list[dict[str, str]]:
    import json

    return json.loads(api_body(name))["rows"]


def test_show_channels_json_and_plain() -> None:
    rows = _rows("api_show_channels_as_json")
    assert apitext.show_channels(rows, as_json=True) == api_body("api_show_channels_as_json")
    assert apitext.show_channels(rows, as_json=False) == api_body("api_show_channels")
    assert apitext.show_count(len(rows)) == api_body("api_show_channels_count")


def test_show_calls_json_and_plain() -> None:
    rows = _rows("api_show_calls_as_json")
    assert list(rows[0]) == apitext.CALL_COLUMNS
    assert apitext.show_calls(rows, as_json=True) == api_body("api_show_calls_as_json")
    assert apitext.show_calls(rows, as_json=False) == api_body("api_show_calls")
    bridged = _rows("api_show_bridged_calls_as_json")
    assert apitext.show_calls(bridged, as_json=True) == api_body("api_show_bridged_calls_as_json")


def test_show_empty_forms() -> None:
    assert apitext.show_channels([], as_json=True) == api_body("api_show_channels_as_json_empty")
    assert apitext.show_calls([], as_json=True) == api_body("api_show_calls_as_json_empty")
    assert apitext.show_channels([], as_json=True) == '{"row_count": 0}\n'
    assert apitext.show_channels([], as_json=False) == "\n0 total.\n"


def test_channel_row_from_channel_data() -> None:
    """A sofia inbound channel's derived row equals the captured row of such a channel."""
    (row,) = [r for r in _rows("api_show_channels_as_json") if r["direction"] == "inbound"]
    ch = ChannelData(
        uuid=row["uuid"], name=row["name"], state=row["state"], call_state=row["callstate"],
        caller_name="sipp", caller_number="55501", destination="7721", context="public",
        created_us=int(row["created_epoch"]) * 1_000_000 + 123, network_addr="127.0.0.1",
        variables={"presence_id": "55501@127.0.0.1", "call_uuid": row["uuid"],
                   "current_application": "bridge", "current_application_data": row["application_data"]},
        read_codec=("PCMU", 8000, 64000), write_codec=("PCMU", 8000, 64000),
    )  # fmt: skip
    assert apitext.channel_row(ch) == row
    with pytest.raises(KeyError):
        apitext.channel_row(ch, no_such_column="x")


def test_uuid_dump_plain_and_json_of_parked_channel() -> None:
    import json

    raw = api_body("api_uuid_dump_json_originated_parked")
    items = json.loads(raw, object_pairs_hook=list)
    if any(n == "Other-Type" for n, _ in items):
        pytest.skip("captured channel has an other leg")
    ch = channel_from(items)
    factory = factory_for(items)
    assert apitext.uuid_dump(ch, as_json=True, factory=factory, now_us=now_of(items)) == raw


def test_small_api_bodies() -> None:
    assert apitext.getvar_result("55501") == api_body("api_uuid_getvar_existing")
    assert apitext.getvar_result(None) == api_body("api_uuid_getvar_unset")
    assert apitext.NO_SUCH_CHANNEL == api_body("api_uuid_getvar_no_such_channel")
    assert apitext.usage("<uuid> <var>") == api_body("api_uuid_getvar_no_args")
    assert apitext.unknown_command("no_such_command") == api_body("api_unknown_command")
    assert apitext.uuid_exists(True) == api_body("api_uuid_exists_true")
    assert apitext.uuid_exists(False) == api_body("api_uuid_exists_false")
    assert apitext.reloadxml_ok() == api_body("api_reloadxml_ok")
    assert apitext.reloadxml_error(6470, "unexpected closing tag </context>") == api_body("api_reloadxml_malformed")
    assert apitext.sofia_rescan_ok("internal") == api_body("api_sofia_profile_internal_rescan")
    assert apitext.OK == api_body("api_uuid_setvar")
