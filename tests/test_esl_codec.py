"""ESL codec against every captured FreeSWITCH byte stream and message."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchctl.esl.codec import (
    MAX_CONTENT_LENGTH,
    ApiResponse,
    AuthRequest,
    CommandReply,
    DisconnectNotice,
    Event,
    FrameParser,
    LogData,
    RudeRejection,
    UnknownMessage,
    decode,
    encode_command,
    encode_execute,
    encode_hangup,
    encode_sendmsg,
    parse_plain_event,
    url_decode,
)
from switchctl.esl.errors import ConnectionLost, FrameTooLarge, ProtocolError

from tests.capturepaths import CAPTURES
FS = CAPTURES / "freeswitch"
SCEN = CAPTURES / "freeswitch-scenarios"

pytestmark = pytest.mark.skipif(not FS.is_dir(), reason="captures not available")

ALL_RAW = sorted(p for root in (FS, SCEN) for p in root.rglob("*.raw") if not p.name.endswith(".recv.raw"))
STREAMS = sorted(p for root in (FS, SCEN) for p in root.rglob("*.recv.raw"))
SMALL_STREAMS = [p for p in STREAMS if p.stat().st_size < 60_000]


def parse_all(data: bytes, chunk: int | None = None) -> list:
    parser = FrameParser()
    frames = []
    if chunk is None:
        frames = parser.feed(data)
    else:
        for i in range(0, len(data), chunk):
            frames.extend(parser.feed(data[i : i + chunk]))
    assert parser.pending() == 0 and parser.at_frame_boundary
    parser.feed_eof()
    return frames


def one(path: Path):
    frames = parse_all(path.read_bytes())
    assert len(frames) == 1
    return decode(frames[0])


def index_of(stream: Path) -> list[dict]:
    return json.loads(stream.with_name(stream.name.replace(".recv.raw", ".index.json")).read_text())


def check_against_index(frames, index, where: str) -> None:
    assert len(frames) == len(index), where
    for frame, entry in zip(frames, index):
        assert frame.content_type == entry["content_type"], (where, entry["n"])
        msg = decode(frame)
        if entry.get("reply_text") is not None:
            assert isinstance(msg, CommandReply) and msg.reply_text == entry["reply_text"], (where, entry["n"])
        if entry.get("event"):
            assert isinstance(msg, Event) and msg.name == entry["event"], (where, entry["n"])
            for field, header in (("unique_id", "Unique-ID"), ("application", "Application"),
                                  ("application_uuid", "Application-UUID"),
                                  ("application_response", "Application-Response"),
                                  ("hangup_cause", "Hangup-Cause"), ("job_uuid", "Job-UUID"),
                                  ("dtmf_digit", "DTMF-Digit"), ("channel_state", "Channel-State"),
                                  ("answer_state", "Answer-State"), ("subclass", "Event-Subclass"),
                                  ("application_data", "Application-Data")):
                if entry.get(field) is not None:
                    assert msg.get(header) == entry[field], (where, entry["n"], field)
            if entry.get("body") is not None:
                assert msg.body == entry["body"], (where, entry["n"])
        if entry.get("content_disposition"):
            assert isinstance(msg, DisconnectNotice) and msg.disposition == entry["content_disposition"]


def test_captures_found():
    assert len(ALL_RAW) > 2500 and len(STREAMS) > 100


@pytest.mark.parametrize("path", ALL_RAW, ids=lambda p: str(p.relative_to(CAPTURES)))
def test_every_single_message_raw_is_one_frame(path: Path):
    msg = one(path)
    assert not isinstance(msg, UnknownMessage)


@pytest.mark.parametrize("stream", STREAMS, ids=lambda p: str(p.relative_to(CAPTURES)))
def test_every_stream_matches_its_index(stream: Path):
    data = stream.read_bytes()
    index = index_of(stream)
    check_against_index(parse_all(data), index, str(stream))
    check_against_index(parse_all(data, 1000), index, str(stream))


@pytest.mark.parametrize("chunk", [1, 7])
@pytest.mark.parametrize("stream", [FS / "inbound_plain/inbound_plain.recv.raw",
                                    FS / "inbound_json/inbound_json.recv.raw",
                                    FS / "inbound_xml/inbound_xml.recv.raw",
                                    FS / "outbound_sipp_dtmf/call001.recv.raw"], ids=lambda p: p.name)
def test_tiny_chunks(stream: Path, chunk: int):
    check_against_index(parse_all(stream.read_bytes(), chunk), index_of(stream), str(stream))


@pytest.mark.parametrize("stream", SMALL_STREAMS, ids=lambda p: str(p.relative_to(CAPTURES)))
def test_small_streams_in_7_byte_chunks(stream: Path):
    check_against_index(parse_all(stream.read_bytes(), 7), index_of(stream), str(stream))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_chunking(data):
    stream = data.draw(st.sampled_from(STREAMS))
    raw = stream.read_bytes()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=40)))
    parser = FrameParser()
    frames = []
    last = 0
    for cut in cuts + [len(raw)]:
        frames.extend(parser.feed(raw[last:cut]))
        last = cut
    check_against_index(frames, index_of(stream), str(stream))


# ---- specific messages ----------------------------------------------------------------------

def test_plain_event_values_are_url_decoded():
    ev = one(FS / "event_BACKGROUND_JOB.plain.raw")
    assert ev.format == "plain"
    assert ev["FreeSWITCH-IPv6"] == "fd00::2"
    assert ev["Event-Date-GMT"] == "Wed, 25 Nov 2026 17:14:29 GMT"
    assert ev["Job-Command-Arg"].endswith("loopback/7703/default &park")
    assert ev.body == "+OK 7f39e4b4-d546-4d68-a42d-79df5c4747c2\n"
    assert ev.name == "BACKGROUND_JOB"


def test_background_job_body_in_all_formats():
    for fmt in ("json", "xml"):
        ev = one(FS / f"event_BACKGROUND_JOB.{fmt}.raw")
        assert ev.format == fmt
        assert ev.body is not None and ev.body.startswith("+OK ") and ev.body.endswith("\n")
        assert len(ev.body) == 41
        assert ev["FreeSWITCH-IPv6"] == "fd00::2"


def test_undef_and_variable():
    ev = Event({"variable_a": "_undef_", "variable_b": "x"})
    assert ev["variable_a"] == "_undef_" and ev.variable("a") is None
    assert ev.variable("b") == "x" and ev.variable("missing") is None
    raw = b"Event-Name: CUSTOM\nvariable_empty: _undef_\n\n"
    assert parse_plain_event(raw).get("variable_empty") == "_undef_"


def test_plain_encoded_newline_and_colon_stay_in_value():
    raw = b"Event-Name: X\nvariable_sdp: v%3D0%0Ao%3D-%201%202%0A\nNext: a%3A%20b\n\n"
    ev = parse_plain_event(raw)
    assert ev["variable_sdp"] == "v=0\no=- 1 2\n" and ev["Next"] == "a: b"


def test_plain_nul_and_utf8_escapes():
    raw = b"Event-Name: X\nA: x%00y\nB: caf%C3%A9\nC: 50%zz\n\n"
    ev = parse_plain_event(raw)
    assert ev["A"] == "x\x00y" and ev["B"] == "café" and ev["C"] == "50%zz"


@given(st.text(max_size=40))
def test_url_decode_is_unquote(text):
    from urllib.parse import quote
    for value in (text, quote(text, safe=""), text.replace("a", "%")):
        assert url_decode(value) == unquote(value)


def test_array_header():
    ev = parse_plain_event(b"Event-Name: X\nMulti: ARRAY::a|:b%20c\n\n")
    assert ev["Multi"] == "ARRAY::a|:b c" and ev.get_list("Multi") == ["a", "b c"]
    body = b'{"Event-Name":"X","Multi":["a","b c"],"N":1}'
    jev = decode(parse_all(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body)[0])
    assert jev["Multi"] == "ARRAY::a|:b c" and jev["N"] == "1"


def test_connect_reply_is_decoded():
    msg = one(FS / "outbound_sipp_dtmf_command_reply_connect.raw")
    assert isinstance(msg, CommandReply) and msg.ok
    assert msg.reply_text == "+OK\n"
    assert msg.headers["Event-Name"] == "CHANNEL_DATA"
    assert msg.headers["Socket-Mode"] == "async" and msg.headers["Control"] == "full"
    assert msg.headers["variable_current_application_data"] == "127.0.0.1:8084 async full"
    assert msg.headers["FreeSWITCH-IPv6"] == "fd00::2"


def test_bgapi_reply_job_uuid():
    msg = one(FS / "plain_05_command_reply_bgapi.raw")
    assert isinstance(msg, CommandReply) and msg.job_uuid == "7a51183a-1260-45c7-9b03-2aac0d4b8b41"


def test_api_responses():
    assert isinstance(one(FS / "plain_03_api_response_status.raw"), ApiResponse)
    assert one(FS / "plain_03b_api_response_err.raw").body.startswith("-ERR No such channel!")
    assert isinstance(one(FS / "plain_01_auth_request.raw"), AuthRequest)
    err = one(FS / "plain_11_command_reply_unknown.raw")
    assert isinstance(err, CommandReply) and not err.ok


def test_log_data_headers_kept_verbatim():
    msg = one(FS / "plain_09_log_data.raw")
    assert isinstance(msg, LogData)
    assert msg.headers["User-Data"] == "" and msg.headers["Log-Level"] == "5"
    assert msg.text.endswith("esl capture test line\n")
    # A '%' in a log header is not an escape: log/data headers are not URL-encoded.
    raw = b"Content-Type: log/data\nContent-Length: 2\nLog-File: 100%25.c\nUser-Data:\n\nhi"
    assert decode(parse_all(raw)[0]).headers["Log-File"] == "100%25.c"


def test_disconnect_notices():
    linger = one(FS / "outbound_loopback_text_disconnect_notice.raw")
    assert isinstance(linger, DisconnectNotice) and linger.is_linger and linger.linger_time == -1
    assert linger.controlled_uuid == "e3cabb2a-0c10-46af-bb9c-de08674b65ba"
    final = one(FS / "outbound_loopback_text_disconnect_notice_after_exit.raw")
    assert final.disposition == "disconnect" and final.linger_time is None
    assert final.text.startswith("Disconnected, goodbye.")
    plain = one(FS / "plain_13_text_disconnect_notice.raw")
    assert plain.disposition is None


def test_rude_rejection():
    frames = parse_all((SCEN / "s9_auth_acl/a4_acl_rejected_from_127_0_0_2.recv.raw").read_bytes())
    msgs = [decode(f) for f in frames]
    assert isinstance(msgs[0], RudeRejection) and msgs[0].text == "Access Denied, go away.\n"
    assert isinstance(msgs[1], DisconnectNotice)


def test_plain_and_json_same_headers():
    """Same event captured in both formats (different calls): same header names, and the values
    that do not depend on the call are identical after decoding."""
    for name in ("CHANNEL_ANSWER", "DTMF", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE_COMPLETE"):
        plain = one(FS / f"event_{name}.plain.raw")
        js = one(FS / f"event_{name}.json.raw")
        xml = one(FS / f"event_{name}.xml.raw")
        assert set(plain.headers) == set(js.headers) == set(xml.headers), name
        for key in ("FreeSWITCH-IPv6", "Event-Name", "Caller-Caller-ID-Name", "Channel-Name"):
            assert plain.get(key) == js.get(key) == xml.get(key), (name, key)


def test_same_connection_plain_and_json_byte_identical_values():
    """s1 v1b (plain) and v2 (json) deliver the same kinds of events; every header common to two
    same-named events whose value does not vary by call/time must be equal."""
    v1b = [decode(f) for f in parse_all((SCEN / "s1_event_sets/v1b_myevents_plain.recv.raw").read_bytes())]
    v2 = [decode(f) for f in parse_all((SCEN / "s1_event_sets/v2_myevents_json.recv.raw").read_bytes())]
    p = next(m for m in v1b if isinstance(m, Event) and m.name == "DTMF")
    j = next(m for m in v2 if isinstance(m, Event) and m.name == "DTMF")
    assert set(p.headers) == set(j.headers)
    for key in ("DTMF-Digit", "DTMF-Source", "Caller-Destination-Number", "Caller-Caller-ID-Number"):
        assert p[key] == j[key]


# ---- bad input ------------------------------------------------------------------------------

def test_malformed_header_line():
    with pytest.raises(ProtocolError, match="without ':'"):
        FrameParser().feed(b"Content-Type command/reply\n\n")


def test_non_integer_content_length():
    with pytest.raises(ProtocolError, match="not an integer"):
        FrameParser().feed(b"Content-Type: api/response\nContent-Length: 12x\n\n")


@pytest.mark.parametrize("length", [MAX_CONTENT_LENGTH + 1, -1, 999_999_999])
@pytest.mark.parametrize("head", ["Content-Type: api/response\nContent-Length: {}\n\n",
                                  "Content-Length: {}\nContent-Type: text/event-plain\n\n"])
def test_content_length_out_of_range_rejected_before_body(length, head):
    parser = FrameParser()
    with pytest.raises(FrameTooLarge):
        parser.feed(head.format(length).encode())
    with pytest.raises(FrameTooLarge):  # the stream stays broken
        parser.feed(b"x")


def test_truncated_body_reported():
    parser = FrameParser()
    assert parser.feed(b"Content-Type: api/response\nContent-Length: 10\n\nabc") == []
    assert not parser.at_frame_boundary and parser.pending() == 3
    with pytest.raises(ConnectionLost) as exc:
        parser.feed_eof()
    assert exc.value.truncated and "3 of 10" in str(exc.value)


def test_unknown_content_type_is_not_fatal():
    frames = parse_all(b"Content-Type: text/new-thing\nContent-Length: 2\n\nhi"
                       b"Content-Type: auth/request\n\n")
    assert isinstance(decode(frames[0]), UnknownMessage) and isinstance(decode(frames[1]), AuthRequest)


def test_crlf_and_leading_blank_lines():
    frames = parse_all(b"\n\r\nContent-Type: command/reply\r\nReply-Text: +OK\r\n\r\n\n"
                       b"Content-Type: api/response\nContent-Length: 2\n\nok")
    assert decode(frames[0]).reply_text == "+OK" and decode(frames[1]).body == "ok"


def test_utf8_split_across_chunks():
    body = "héllo ☎".encode()
    raw = b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body
    assert decode(parse_all(raw, 1)[0]).body == "héllo ☎"


# ---- encoders -------------------------------------------------------------------------------

def test_encode_command():
    assert encode_command("api status") == b"api status\n\n"
    assert encode_command("bgapi status", {"Job-UUID": "j1"}) == b"bgapi status\nJob-UUID: j1\n\n"
    assert encode_command("sendevent CUSTOM", None, "héllo") == \
        b"sendevent CUSTOM\nContent-Length: 6\n\nh\xc3\xa9llo"
    for bad in ("api status\napi x", "api\r"):
        with pytest.raises(ValueError):
            encode_command(bad)
    with pytest.raises(ValueError):
        encode_command("sendmsg", {"x": "a\nb"})


def test_encode_execute_inline_and_body():
    data = encode_execute("playback", "tone_stream://%(500,0,500)", event_uuid="e1", uuid="u1")
    assert data == (b"sendmsg u1\ncall-command: execute\nexecute-app-name: playback\n"
                    b"execute-app-arg: tone_stream://%(500,0,500)\nEvent-UUID: e1\n\n")
    data = encode_execute("set", "a=1\nb=2", event_uuid="e2", event_lock=True, loops=2)
    head, _, body = data.partition(b"\n\n")
    assert b"execute-app-arg" not in head and b"content-type: text/plain" in head
    assert b"loops: 2" in head and b"event-lock: true" in head and b"Content-Length: 7" in head
    assert body == b"a=1\nb=2" and head.startswith(b"sendmsg\n")
    long = "x" * 3000
    assert encode_execute("log", long, event_uuid="e3").endswith(long.encode())
    with pytest.raises(ValueError):
        encode_execute("play back", event_uuid="e")


def test_encode_hangup_and_sendmsg():
    assert encode_hangup("USER_BUSY", "u1") == b"sendmsg u1\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n"
    assert encode_sendmsg(None, "nomedia", {"nomedia-uuid": "x"}).startswith(b"sendmsg\ncall-command: nomedia\n")


# ---- fast paths agree with the exact semantics ----------------------------------------------

def _reference_plain_headers(lines: list[str]) -> dict[str, str]:
    """The documented semantics, line by line: split at the first ': ' (else at the first ':' and
    drop the spaces after it), then unquote the value; the last of duplicate names wins."""
    headers = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            key, _, value = line.partition(":")
            value = value.lstrip(" ")
        headers[key] = unquote(value)
    return headers


# Pieces mixing what FreeSWITCH sends (escapes, SDP's %0D%0A) with what it never sends raw but a
# parser must still get right (':', ' ', NUL, CR, backslash, non-ASCII, broken escapes).
_PIECES = st.sampled_from(
    ["a", "Z9", "-", "%20", "%3A", "%0A", "%0D%0A", "%00", "%25", "%C3%A9", "%C3", "%A9", "%E2%98",
     "%zz", "%4", "%", "%41", "\\", "\\x41", ":", " ", ": ", "\x00", "\r", "é", "\xff", "ARRAY::x|:y", "_undef_"]
)
_PLAIN_TEXT = st.lists(_PIECES, max_size=6).map("".join)
_PLAIN_KEYS = st.one_of(st.sampled_from(["Event-Name", "Unique-ID", "Channel-Write-Codec-Name", "k"]),
                        _PLAIN_TEXT.filter(lambda k: k and ":" not in k and "\r" not in k))


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.tuples(_PLAIN_KEYS, st.sampled_from([": ", ": ", ":", ":  "]), _PLAIN_TEXT)
                      .map("".join).filter(lambda line: not line.endswith("\r")), min_size=1, max_size=8))
def test_plain_fast_path_matches_line_by_line_semantics(lines):
    ev = parse_plain_event(("\n".join(lines) + "\n\n").encode())
    assert ev.headers == _reference_plain_headers(lines)
    # The same block with an inner body takes the find() route; same headers.
    lines.append("Content-Length: 3")
    ev = parse_plain_event(("\n".join(lines) + "\n\nabc").encode())
    assert ev.headers == _reference_plain_headers(lines) and ev.body == "abc"


def test_plain_fast_path_rejects_misaligned_lines():
    # Same number of ': ' as lines, but not one per line: must not pair a value with the wrong key.
    ev = parse_plain_event(b"Event-Name: X\nA: b: c\nD:e\n\n")
    assert ev.headers == {"Event-Name": "X", "A": "b: c", "D": "e"}
    # One ':' and one ' ' per line, in that order, but not adjacent.
    assert parse_plain_event(b"A:x y\nB: z\n\n").headers == {"A": "x y", "B": "z"}
    assert parse_plain_event(b"A x: y\n\n").headers == {"A x": "y"}


def test_duplicate_headers_last_value_wins_in_both_formats():
    plain = parse_plain_event(b"Event-Name: X\nChannel-Write-Codec-Name: L16\nB: 1\n"
                              b"Channel-Write-Codec-Name: PCMU\n\n")
    body = b'{"Event-Name":"X","Channel-Write-Codec-Name":"L16","B":"1","Channel-Write-Codec-Name":"PCMU"}'
    js = decode(parse_all(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body)[0])
    assert plain.headers == js.headers == {"Event-Name": "X", "Channel-Write-Codec-Name": "PCMU", "B": "1"}
    assert list(plain.headers) == list(js.headers)


def test_json_array_next_to_a_value_ending_in_quote_colon():
    # A string value ending in `":` puts an extra `":"` in the text; the array must still be found.
    body = b'{"Event-Name":"X","Multi":["a","b"],"V":"q\\":"}'
    jev = decode(parse_all(b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body)[0])
    assert jev.headers == {"Event-Name": "X", "Multi": "ARRAY::a|:b", "V": 'q":'}


@pytest.mark.parametrize("outer", [
    b"Content-Length: %d\nContent-Type: text/event-plain\n\n",
    b"Content-Type: text/event-plain\nContent-Length: %d\n\n",
    b"Content-Length: %d\r\nContent-Type: text/event-plain\r\n\r\n",
    b"Content-Length:  %d\nContent-Type: text/event-plain\n\n",
])
def test_event_outer_block_variants(outer):
    body = b"Event-Name: X\nA: b%20c\n\n"
    frames = parse_all(outer % len(body) + body)
    assert frames[0].headers["Content-Type"] == "text/event-plain"
    assert int(frames[0].headers["Content-Length"]) == len(body)
    assert decode(frames[0]).headers == {"Event-Name": "X", "A": "b c"}
