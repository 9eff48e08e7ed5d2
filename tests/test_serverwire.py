"""serverwire must write the exact bytes FreeSWITCH 1.11.1 wrote in the captures.

Every captured message is parsed here by a small independent parser (not switchctl.esl.codec),
re-encoded with serverwire and compared byte for byte.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from switchctl.esl import serverwire as sw
from switchctl.esl.errors import FrameTooLarge

from tests.capturepaths import CAPTURES
FS = CAPTURES / "freeswitch"
SCENARIOS = CAPTURES / "freeswitch-scenarios"

pytestmark = pytest.mark.skipif(not FS.is_dir(), reason="captures not available")


def _message_files() -> list[Path]:
    if not FS.is_dir():
        return []
    files = [p for p in FS.rglob("*.raw") if not p.name.endswith("recv.raw")]
    files += [p for p in SCENARIOS.rglob("*") if p.is_file() and p.parent.name.endswith(".msgs")]
    return sorted(files)


MESSAGES = _message_files()


def _outer(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    head, sep, rest = raw.partition(b"\n\n")
    assert sep, "no header block end"
    headers = [tuple(line.decode().split(": ", 1)) for line in head.split(b"\n")]
    return headers, rest  # type: ignore[return-value]


def _content_type(raw: bytes) -> str:
    m = re.search(rb"(?m)^Content-Type: (.*)$", raw.partition(b"\n\n")[0])
    return m.group(1).decode() if m else ""


def _by_type(kind: str) -> list[Path]:
    return [p for p in MESSAGES if _content_type(p.read_bytes()) == kind]


def _decode(value: str) -> str:
    return "" if value == "_undef_" else unquote(value, errors="surrogateescape")


def _parse_plain_event(data: bytes) -> tuple[list[tuple[str, str]], str | None]:
    head, _, rest = data.partition(b"\n\n")
    headers = []
    for line in head.decode("ascii").split("\n"):
        name, value = line.split(": ", 1)
        headers.append((name, _decode(value)))
    body = None
    if headers and headers[-1][0] == "Content-Length":
        length = int(headers.pop()[1])
        body = rest[:length].decode("utf-8", "surrogateescape")
        assert len(rest) == length
    else:
        assert rest == b""
    return headers, body


def _parse_json_event(data: bytes) -> tuple[list[tuple[str, object]], str | None]:
    items = json.loads(data, object_pairs_hook=list)
    body = None
    if len(items) >= 2 and items[-1][0] == "_body" and items[-2][0] == "Content-Length":
        body = items.pop()[1]
        items.pop()
    return items, body


_XML_ENTITY = re.compile(r"&(amp|lt|gt|#xD|#x[0-9A-F]+);")


def _xml_unescape(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        return {"amp": "&", "lt": "<", "gt": ">"}.get(name) or chr(int(name[2:], 16))

    return _XML_ENTITY.sub(repl, text)


def _parse_xml_event(data: bytes) -> tuple[list[tuple[str, str]], str | None]:
    text = data.decode("utf-8")
    assert text.startswith("<event>\n  <headers>\n")
    head_part, _, tail = text[len("<event>\n  <headers>\n") :].partition("  </headers>\n")
    headers = []
    for line in head_part.splitlines():
        m = re.fullmatch(r"    <([^>]+)>(.*)</\1>", line)
        assert m, line
        headers.append((m.group(1), _decode(_xml_unescape(m.group(2)))))
    body = None
    m = re.match(r"  <Content-Length>(\d+)</Content-Length>\n  <body>", tail)
    if m:
        length = int(m.group(1))
        raw_body = tail[m.end() :]
        assert raw_body.endswith("</body>\n</event>\n")
        raw_body = _xml_unescape(raw_body[: -len("</body>\n</event>\n")])
        if len(raw_body.encode()) == length + 2 and raw_body.endswith("\n  "):
            raw_body = raw_body[:-2]
        body = raw_body
        assert len(body.encode()) == length
    else:
        assert tail == "</event>\n"
    return headers, body


# --------------------------------------------------------------------------- events


def test_capture_set_is_complete() -> None:
    kinds = {_content_type(p.read_bytes()) for p in MESSAGES}
    assert {"text/event-plain", "text/event-json", "text/event-xml", "command/reply"} <= kinds
    assert len(MESSAGES) > 2000


@pytest.mark.parametrize("fmt", ["plain", "json", "xml"])
def test_every_captured_event_reencodes_byte_exact(fmt: str) -> None:
    parse = {"plain": _parse_plain_event, "json": _parse_json_event, "xml": _parse_xml_event}[fmt]
    files = _by_type(f"text/event-{fmt}")
    assert files
    failures = []
    for path in files:
        raw = path.read_bytes()
        outer, inner = _outer(raw)
        assert outer[0] == ("Content-Length", str(len(inner)))
        headers, body = parse(inner)
        if sw.encode_event(headers, body, fmt) != raw:  # type: ignore[arg-type]
            failures.append(path)
    assert not failures, f"{len(failures)} of {len(files)} differ, first {failures[:3]}"


def test_event_body_forms() -> None:
    headers = [("Event-Name", "BACKGROUND_JOB"), ("Job-Command", "status")]
    plain = sw.encode_event(headers, "+OK x\n", "plain")
    assert plain.endswith(b"Job-Command: status\nContent-Length: 6\n\n+OK x\n")
    assert sw.encode_event(headers, None, "plain").endswith(b"Job-Command: status\n\n")
    assert sw.encode_event(headers, "", "plain").endswith(b"Job-Command: status\n\n")
    js = sw.encode_event(headers, "a\"\\\x01\tb", "json")
    assert js.endswith(b'"Content-Length":"6","_body":"a\\"\\\\\\u0001\\tb"}')
    xml = sw.encode_event(headers, "<a&b>\r\n", "xml")
    assert b"<body>&lt;a&amp;b&gt;&#xD;\n  </body>\n</event>\n" in xml
    assert b"<Content-Length>7</Content-Length>" in xml
    with pytest.raises(ValueError):
        sw.encode_event(headers, None, "yaml")


def test_event_empty_value_and_arrays() -> None:
    headers = [("Empty", ""), ("Multi", ["a b", "c"])]
    # the whole "ARRAY::a b|:c" string is url-encoded (switch_event_serialize)
    assert b"Empty: _undef_\nMulti: ARRAY%3A%3Aa%20b%7C%3Ac\n\n" in sw.encode_event(headers, None, "plain")
    assert b"One: x\n\n" in sw.encode_event([("One", ["x"])], None, "plain")
    assert b'{"One":["x"]}' in sw.encode_event([("One", ["x"])], None, "json")
    assert b'{"Empty":"","Multi":["a b","c"]}' in sw.encode_event(headers, None, "json")
    xml = sw.encode_event(headers, None, "xml")
    assert b"    <Empty></Empty>\n    <Multi>a%20b</Multi>\n    <Multi>c</Multi>\n" in xml


def test_xml_non_ascii_body_uses_character_references() -> None:
    xml = sw.encode_event([("A", "b")], "caf\u00e9 \u20ac", "xml")
    assert b"<body>caf&#xE9; &#x20AC;</body>" in xml
    assert b"<Content-Length>9</Content-Length>" in xml


# --------------------------------------------------------------------------- url encoding


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("fd00::2", "fd00%3A%3A2"),
        ("Wed, 25 Nov 2026 17:14:39 GMT", "Wed,%2025%20Nov%202026%2017%3A14%3A39%20GMT"),
        ("+OK\n", "%2BOK%0A"),
        ("tone_stream://%(400,100,600);loops=1", "tone_stream%3A//%25(400,100,600)%3Bloops%3D1"),
        ("50%20off", "50%20off"),  # existing uppercase %XX passes through
        ("50%2f", "50%252f"),  # lowercase hex is not an escape for FreeSWITCH
        ("100%", "100%25"),
        ("%4", "%254"),
        ("caf\u00e9", "caf%C3%A9"),
        ("a\tb\x7fc~", "a%09b%7Fc~"),
        ("/path's,(x)!*-_.", "/path's,(x)!*-_."),
        ('"<>[]^`{|}\\@?&=#', "%22%3C%3E%5B%5D%5E%60%7B%7C%7D%5C%40%3F%26%3D%23"),
    ],
)
def test_url_encode(value: str, wire: str) -> None:
    assert sw.url_encode(value) == wire


# --------------------------------------------------------------------------- other frames


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_command_replies_byte_exact() -> None:
    files = _by_type("command/reply")
    checked = 0
    for path in files:
        raw = path.read_bytes()
        headers, rest = _outer(raw)
        assert rest == b""
        if headers[0][0] != "Content-Type":  # connect replies: tested below
            continue
        (_, _), (name, text), *extra = headers
        assert name == "Reply-Text"
        assert sw.command_reply(text, extra) == raw, path
        checked += 1
    assert checked > 400


def test_connect_replies_byte_exact() -> None:
    files = [p for p in _by_type("command/reply") if p.read_bytes().startswith(b"Event-Name: CHANNEL_DATA\n")]
    assert len(files) >= 40
    for path in files:
        raw = path.read_bytes()
        head = raw[:-2].decode("ascii")
        headers = [(n, _decode(v)) for n, v in (line.split(": ", 1) for line in head.split("\n"))]
        assert headers[-4:-2] == [("Content-Type", "command/reply"), ("Reply-Text", "+OK\n")]
        assert sw.connect_reply(headers) == raw, path


def test_connect_reply_requires_command_reply_header() -> None:
    with pytest.raises(sw.ProtocolError):
        sw.connect_reply([("Event-Name", "CHANNEL_DATA")])


def test_api_responses_byte_exact() -> None:
    files = _by_type("api/response")
    assert len(files) > 100
    for path in files:
        raw = path.read_bytes()
        headers, body = _outer(raw)
        assert headers == [("Content-Type", "api/response"), ("Content-Length", str(len(body)))]
        assert sw.api_response(body.decode("utf-8", "surrogateescape")) == raw, path


def test_api_response_empty_is_no_reply() -> None:
    assert sw.api_response("") == b"Content-Type: api/response\nContent-Length: 14\n\n-ERR no reply\n"


def test_auth_request_and_rude_rejection() -> None:
    for path in _by_type("auth/request"):
        assert sw.auth_request() == path.read_bytes()
    (rude,) = _by_type("text/rude-rejection")
    assert sw.rude_rejection() == rude.read_bytes()


def test_disconnect_notices_byte_exact() -> None:
    files = _by_type("text/disconnect-notice")
    assert len(files) > 100
    shapes = set()
    for path in files:
        raw = path.read_bytes()
        headers = dict(_outer(raw)[0])
        shapes.add(tuple(headers))
        uuid = headers.get("Controlled-Session-UUID")
        if headers.get("Content-Disposition") == "linger":
            built = sw.disconnect_notice(
                controlled_uuid=uuid,
                disposition="linger",
                channel_name=headers["Channel-Name"],
                linger_time=int(headers["Linger-Time"]),
            )
        elif uuid:
            built = sw.disconnect_notice(controlled_uuid=uuid, disposition="disconnect")
            assert built == sw.disconnect_notice(controlled_uuid=uuid)
        else:
            built = sw.disconnect_notice()
        assert built == raw, path
    assert len(shapes) == 3


def test_disconnect_notice_variants_and_errors() -> None:
    assert sw.disconnect_notice(with_goodbye_text=False) == (
        b"Content-Type: text/disconnect-notice\nContent-Length: 14\n\nDisconnected.\n"
    )
    with pytest.raises(ValueError):
        sw.disconnect_notice(disposition="linger", controlled_uuid="u")
    with pytest.raises(ValueError):
        sw.disconnect_notice(disposition="bogus", controlled_uuid="u")
    with pytest.raises(ValueError):
        sw.disconnect_notice(disposition="disconnect")
    with pytest.raises(ValueError):
        sw.disconnect_notice(controlled_uuid="u", linger_time=3)


def test_log_data_byte_exact() -> None:
    files = _by_type("log/data")
    assert files
    for path in files:
        raw = path.read_bytes()
        headers, body = _outer(raw)
        h = dict(headers)
        built = sw.log_data(
            body.decode(),
            level=int(h["Log-Level"]),
            text_channel=int(h["Text-Channel"]),
            file=h["Log-File"],
            func=h["Log-Func"],
            line=int(h["Log-Line"]),
            user_data=h["User-Data"],
        )
        assert built == raw, path


def test_header_values_with_newline_are_refused() -> None:
    with pytest.raises(ValueError):
        sw.command_reply("+OK\nInjected: yes")


# --------------------------------------------------------------------------- client commands


def _sent_commands() -> list[tuple[Path, list[bytes]]]:
    out = []
    for path in sorted(SCENARIOS.rglob("*.sent.json")):
        entries = json.loads(path.read_text())
        chunks = [e["text"].encode() for e in entries]
        for entry, chunk in zip(entries, chunks):
            assert len(chunk) == entry["bytes"], path
        out.append((path, chunks))
    return out


def _expected(chunk: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """What the client meant: first line, `Name: value` lines, body after the blank line."""
    head, _, body = chunk.partition(b"\n\n")
    lines = head.decode().split("\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    return lines[0], headers, body  # type: ignore[return-value]


def _feed_in_chunks(reader: sw.CommandReader, data: bytes, rng: random.Random) -> list[sw.ClientCommand]:
    out: list[sw.ClientCommand] = []
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 3, 7, 64, 1000])
        out += reader.feed(data[pos : pos + size])
        pos += size
    return out


def test_command_reader_on_every_recorded_client_stream() -> None:
    rng = random.Random(1234)
    streams = _sent_commands()
    assert len(streams) >= 90
    total = 0
    for path, chunks in streams:
        expected = [_expected(c) for c in chunks]
        for whole in (True, False):
            reader = sw.CommandReader()
            data = b"".join(chunks)
            got = reader.feed(data) if whole else _feed_in_chunks(reader, data, rng)
            assert [(c.line, c.header_items, c.body) for c in got] == expected, path
            assert reader.buffered == 0
        total += len(chunks)
    assert total > 500


def test_command_reader_sendmsg_fields() -> None:
    raw = (
        b"sendmsg 6de40c24\ncall-command: execute\nexecute-app-name: playback\n"
        b"execute-app-arg: tone_stream://%(400,100,600);loops=1\nEvent-UUID: abc\n\n"
    )
    (cmd,) = sw.CommandReader().feed(raw)
    assert cmd.verb == "sendmsg" and cmd.args == "6de40c24"
    # FreeSWITCH does not url-decode what the client sends
    assert cmd.headers["execute-app-arg"] == "tone_stream://%(400,100,600);loops=1"
    assert cmd.header("EVENT-UUID") == "abc"
    assert cmd.header("missing") is None


def test_command_reader_body_blank_lines_and_cr() -> None:
    reader = sw.CommandReader()
    data = (
        b"\r\n\n"  # leading blank lines are skipped
        b"sendmsg\r\ncall-command: execute\r\nexecute-app-name: speak\r\n"
        b"content-type: text/plain\r\nContent-Length: 12\r\n\r\nline1\n\nline2"
        b"\napi status\n\n"
        b"exit\n\n"
    )
    cmds = reader.feed(data)
    assert [c.line for c in cmds] == ["sendmsg", "api status", "exit"]
    assert cmds[0].body == b"line1\n\nline2"
    assert cmds[0].headers["Content-Length"] == "12"
    assert [c.verb for c in cmds] == ["sendmsg", "api", "exit"]
    assert cmds[1].args == "status" and cmds[2].args == ""


def test_command_reader_partial_body_waits() -> None:
    reader = sw.CommandReader()
    assert reader.feed(b"sendevent CUSTOM\nContent-Length: 5\n\nab") == []
    (cmd,) = reader.feed(b"cde")
    assert cmd.body == b"abcde"


def test_command_reader_quirks_of_read_packet() -> None:
    # Lines without ':' are ignored, the value's leading spaces go, a NUL cuts the body.
    (cmd,) = sw.CommandReader().feed(b"cmd\nnocolon\nA:   spaced\nContent-Length: 3\n\na\0b")
    assert cmd.header_items == [("A", "spaced"), ("Content-Length", "3")]
    assert cmd.body == b"a"
    # '\r' makes strip_cr cut there even when '\n' comes first (FreeSWITCH searches '\r' first).
    (cmd,) = sw.CommandReader().feed(b"api status\nX: 1\r\n\r\n")
    assert cmd.line == "api status\nX: 1"
    # atoi(): garbage after digits is ignored, no digits is 0 (no body).
    (cmd,) = sw.CommandReader().feed(b"x\nContent-Length: 2abc\n\nhi")
    assert cmd.body == b"hi"
    (cmd,) = sw.CommandReader().feed(b"x\nContent-Length: abc\n\n")
    assert cmd.body == b""


@pytest.mark.parametrize(
    "length", [b"-1", b"16777217", b"99999999999999999999999", b"4294967295"]
)
def test_command_reader_rejects_bad_content_length(length: bytes) -> None:
    reader = sw.CommandReader()
    with pytest.raises(FrameTooLarge):
        reader.feed(b"sendmsg\nContent-Length: " + length + b"\n\n")
    with pytest.raises(FrameTooLarge):  # the connection is gone for good
        reader.feed(b"exit\n\n")


def test_command_reader_accepts_max_content_length_header() -> None:
    reader = sw.CommandReader()
    assert reader.feed(b"sendevent X\nContent-Length: 16777216\n\n" + b"a" * 10) == []
    assert reader.buffered == len(b"a" * 10)
