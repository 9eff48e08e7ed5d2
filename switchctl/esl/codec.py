"""ESL wire codec, client side: framing, message decoding, command encoding. Pure (no I/O).

This is the hot path of every switchctl controller (every event of every call passes here), so event
frames are cut with one regex match (`_EVENT_FRAME_HEAD`) and the plain-event parser works on whole
header blocks with C-level byte operations instead of a Python loop per line (`_fast_plain_headers`,
which declines anything not shaped like FreeSWITCH's output; `_parse_plain_headers` is the exact
line-by-line path for the rest). Bench: bench/esl_parse.py.

Decisions (each covered by tests/test_esl_codec.py):
- Outer header values are URL-decoded with `unquote` semantics (never `+` -> space) because the
  outbound `connect` reply is a serialized event. `log/data` frames are the exception: FreeSWITCH
  writes their headers raw (a `%` in a log file name must survive), so they are kept verbatim.
- Plain-event values: lines are split at the first ': ' FIRST, then each value is URL-decoded, so an
  encoded `%0A` or `%3A` never breaks a line. `_undef_` stays the literal string (`Event.variable`
  maps it to None). Duplicate header names keep the last value (json too: orjson keeps the last).
- Multi-valued headers: plain sends `ARRAY::a|:b`, json sends a list. Both are stored as the same
  string `ARRAY::a|:b` so `headers` is always `dict[str, str]` and identical across formats;
  `Event.get_list()` splits them.
- xml bodies are cut to the event's inner Content-Length (FreeSWITCH's pretty printer appends
  indentation inside `<body>`).
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union
from urllib.parse import unquote

import orjson

from .errors import ConnectionLost, FrameTooLarge, ProtocolError

MAX_CONTENT_LENGTH = 16 * 1024 * 1024
# The biggest header block seen is the outbound `connect` reply (~6 KB); a block without its blank
# line after this many bytes is garbage, not a slow peer.
MAX_HEADER_BLOCK = 1024 * 1024
# execute arguments longer than this go in a text/plain body (FreeSWITCH reads headers in lines of
# limited length; the body path has no such limit).
MAX_INLINE_ARG = 2048
UNDEF = "_undef_"
_escape_decode = codecs.escape_decode  # type: ignore[attr-defined]

# --------------------------------------------------------------------------------------------
# URL decoding


def url_decode(value: str) -> str:
    """Exactly `urllib.parse.unquote(value)` (errors='replace'), about 8x faster on event values.

    Every `%XX` becomes `\\xXX` (existing backslashes doubled first) and CPython's C escape decoder
    assembles the bytes; UTF-8 sequences spread over several escapes come out whole. A '%' that is
    not followed by two hex digits makes the C decoder refuse, and the stdlib handles that value.
    """
    if "%" not in value:
        return value
    data = value.encode("utf-8")
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    try:
        raw = _escape_decode(data.replace(b"%", b"\\x"))[0]
    except ValueError:
        return unquote(value)
    return raw.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Frames


@dataclass(slots=True)
class Frame:
    """One server message: outer headers (decoded) and raw body bytes."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def _split_header_line(line: str, where: str) -> tuple[str, str]:
    key, sep, value = line.partition(": ")
    if sep:
        return key, value
    key, sep, value = line.partition(":")
    if not sep or not key:
        raise ProtocolError(f"{where}: header line without ':': {line[:80]!r}")
    return key, value.lstrip(" ")


def _parse_outer_headers(block: bytes | bytearray) -> dict[str, str]:
    text = block.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").rstrip("\r")
    # Line by line: event frames take the `_EVENT_OUTER_BLOCK` path, the rest are few and short.
    # (Splitting the whole block at every ': ' would pair a value with the wrong name when one line
    # holds two ': ' and another, like log/data's `User-Data:`, none.)
    headers: dict[str, str] = {}
    for line in text.split("\n"):
        if line:
            key, value = _split_header_line(line, "frame header")
            headers[key] = value
    if "%" in text and headers.get("Content-Type") != "log/data":
        for key, value in headers.items():
            if "%" in value:
                headers[key] = url_decode(value)
    return headers


# The outer header block of an event frame as FreeSWITCH writes it (mod_event_socket), with its blank
# line: it holds no other blank line, so this is exactly the frame head that the general path (find
# the blank line, `_parse_outer_headers`) would cut, with the same headers dict.
_EVENT_FRAME_HEAD = re.compile(
    rb"Content-Length: ([0-9]{1,9})\nContent-Type: (text/event-(?:plain|json|xml))\n\n"
)


def _content_length(headers: dict[str, str]) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    try:
        length = int(raw)
    except ValueError:
        raise ProtocolError(f"Content-Length is not an integer: {raw[:40]!r}") from None
    if length < 0 or length > MAX_CONTENT_LENGTH:
        raise FrameTooLarge(
            f"Content-Length {length} outside 0..{MAX_CONTENT_LENGTH} "
            f"(Content-Type {headers.get('Content-Type', '?')!r})"
        )
    return length


class FrameParser:
    """Reframes the server's byte stream across arbitrary chunk boundaries.

    `feed()` returns the complete frames; partial data stays buffered. Bytes are decoded only once a
    whole header block or body is present, so a chunk ending inside a UTF-8 sequence is harmless.
    After a ProtocolError the stream cannot be resynchronised: every later feed raises again.
    """

    __slots__ = ("_buf", "_pending_headers", "_pending_length", "_scan_from", "_error", "frames_parsed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending_headers: dict[str, str] | None = None
        self._pending_length = 0
        self._scan_from = 0  # where the search for the header terminator resumes
        self._error: ProtocolError | None = None
        self.frames_parsed = 0

    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete frame."""
        return len(self._buf)

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered (only inter-frame blank lines, if anything)."""
        return self._pending_headers is None and not self._buf.strip(b"\r\n")

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        append = frames.append
        pos = 0
        size = len(buf)
        try:
            while True:
                headers = self._pending_headers
                if headers is not None:
                    end = pos + self._pending_length
                    if end > size:
                        break
                    append(Frame(headers, bytes(buf[pos:end])))
                    pos = end
                    self._pending_headers = None
                    continue
                # FreeSWITCH's reader skips blank lines between frames; so do we.
                while pos < size and buf[pos] in b"\r\n":
                    pos += 1
                if pos >= size:
                    break
                # Nearly every frame is an event whose outer block is exactly these two lines: match
                # it in place (no slice, no find for the blank line, no line loop).
                outer = _EVENT_FRAME_HEAD.match(buf, pos)
                if outer is not None:
                    headers = {"Content-Length": outer[1].decode(), "Content-Type": outer[2].decode()}
                    length = int(outer[1])
                    if length > MAX_CONTENT_LENGTH:
                        _content_length(headers)  # raises FrameTooLarge
                    pos = outer.end()
                    end = pos + length
                    if end <= size:
                        append(Frame(headers, bytes(buf[pos:end])))
                        pos = end
                    else:
                        self._pending_headers = headers
                        self._pending_length = length
                    self._scan_from = 0
                    continue
                start = pos if pos > self._scan_from else self._scan_from
                end = buf.find(b"\n\n", start)
                crlf = buf.find(b"\n\r\n", start, size if end < 0 else end + 2)
                if crlf >= 0:
                    end, skip = crlf, 3
                else:
                    skip = 2
                if end < 0:
                    if size - pos > MAX_HEADER_BLOCK:
                        raise ProtocolError(
                            f"header block longer than {MAX_HEADER_BLOCK} bytes without a blank line"
                        )
                    self._scan_from = max(pos, size - 2)
                    break
                self._scan_from = 0
                headers = _parse_outer_headers(buf[pos:end])
                pos = end + skip
                length = _content_length(headers)
                if length:
                    self._pending_headers = headers
                    self._pending_length = length
                else:
                    append(Frame(headers))
        except ProtocolError as exc:
            self._error = exc
            raise
        finally:
            if pos:
                del buf[:pos]
                self._scan_from = max(0, self._scan_from - pos)
        self.frames_parsed += len(frames)
        return frames

    def feed_eof(self) -> None:
        """The stream ended: raise ConnectionLost(truncated=True) if a frame was cut off."""
        if self._pending_headers is not None:
            got = len(self._buf)
            raise ConnectionLost(
                f"stream ended after {got} of {self._pending_length} body bytes "
                f"(Content-Type {self._pending_headers.get('Content-Type', '?')!r})",
                truncated=True,
            )
        if not self.at_frame_boundary:
            raise ConnectionLost(
                f"stream ended inside a header block ({len(self._buf)} bytes buffered)", truncated=True
            )


# --------------------------------------------------------------------------------------------
# Events


@dataclass(slots=True)
class Event:
    """A FreeSWITCH event: decoded headers, optional body, and the wire format it came in."""

    headers: dict[str, str]
    body: str | None = None
    format: str = "plain"

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.headers.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.headers[key]

    def __contains__(self, key: object) -> bool:
        return key in self.headers

    @property
    def subclass(self) -> str | None:
        return self.headers.get("Event-Subclass")

    @property
    def unique_id(self) -> str | None:
        return self.headers.get("Unique-ID")

    def variable(self, name: str) -> str | None:
        """Channel variable `name` (header `variable_<name>`); None when absent or `_undef_`."""
        value = self.headers.get("variable_" + name)
        return None if value == UNDEF else value

    def get_list(self, key: str) -> list[str]:
        """A header as a list: `ARRAY::a|:b` -> ['a', 'b']; a plain value -> [value]; absent -> []."""
        value = self.headers.get(key)
        if value is None:
            return []
        if value.startswith("ARRAY::"):
            return value[7:].split("|:")
        return [value]


def _parse_plain_headers(head: str) -> dict[str, str]:
    """Header lines of a plain event (no trailing blank line) -> decoded dict. General path.

    Line by line, for what `_fast_plain_headers` declines: CRLF, raw non-ASCII, lines without ': '
    (`Name:value`) or with two, '%' in a name or not followed by two hex digits, values decoding to
    NUL. FreeSWITCH's own events take the fast path.
    """
    if "\r" in head:
        head = head.replace("\r\n", "\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if line:
            key, value = _split_header_line(line, "event header")
            headers[key] = url_decode(value)
    return headers


# Fast path for a plain event's header block as FreeSWITCH writes it. Every value is URL-encoded
# (':' ' ' CR LF NUL and non-ASCII bytes included), so the block is ASCII and its only ':', ' ', CR,
# LF and NUL bytes are the `: ` and `\n` separators. The whole block is checked and cut with C-level
# calls, never a Python loop per line:
# - skeleton: `translate` deletes every byte but those and '%'; with no '%' at a line start (names
#   are not URL-decoded) and the '%'s removed, it must read `: \n: \n...: ` (one ':' then one ' '
#   per line, in that order);
# - ':' ' ' LF all become NUL, the '%' escapes of the whole block are decoded in one call (an SDP's
#   `%0A` decodes to LF, harmless here) and one `split` gives name, between, value, name, ... where
#   every `between` must be empty (the ':' and ' ' are adjacent) and a value decoding to NUL shows
#   as extra pieces.
# Anything else goes to `_parse_plain_headers`. Single-byte operations only: CPython searches for
# two-byte needles like b": " several times slower than for one byte.
_SEPARATOR_BYTES = b": \r\n\x00%"
_NON_SEPARATOR_BYTES = bytes(b for b in range(256) if b not in _SEPARATOR_BYTES)
_SEPARATORS_TO_NUL = bytes.maketrans(b": \n", b"\x00\x00\x00")
_SKELETONS: dict[int, bytes] = {}  # line count -> b": \n" * (lines - 1) + b": "
_MAX_CACHED_SKELETON = 4096


def _skeleton(lines: int) -> bytes:
    skeleton = _SKELETONS.get(lines)
    if skeleton is None:
        skeleton = b": \n" * (lines - 1) + b": "
        if lines <= _MAX_CACHED_SKELETON:
            _SKELETONS[lines] = skeleton
    return skeleton


def _fast_plain_headers(head: bytes) -> dict[str, str] | None:
    """`_parse_plain_headers(head.decode())` for FreeSWITCH-shaped blocks, else None."""
    if not head.isascii():
        # Raw non-ASCII bytes next to escaped ones could merge into one UTF-8 sequence here but
        # not in the general path (which decodes the raw bytes first).
        return None
    skeleton = head.translate(None, _NON_SEPARATOR_BYTES)
    escaped = b"%" in skeleton
    if escaped:
        if skeleton[0] == 0x25 or b"\n%" in skeleton:  # a '%' in a name
            return None
        skeleton = skeleton.replace(b"%", b"")
    lines = (len(skeleton) + 1) // 3
    if not lines or skeleton != _skeleton(lines):
        return None
    flat = head.translate(_SEPARATORS_TO_NUL)  # `Name: value\n` -> `Name\0\0value\0`
    if escaped:
        if b"\\" in flat:
            flat = flat.replace(b"\\", b"\\\\")
        try:
            flat = _escape_decode(flat.replace(b"%", b"\\x"))[0]
        except ValueError:  # a '%' without two hex digits: unquote keeps it, see url_decode
            return None
    parts = flat.decode("utf-8", "replace").split("\x00")
    if len(parts) != 3 * lines or parts[1::3].count("") != lines:
        return None
    return dict(zip(parts[0::3], parts[2::3]))


def parse_plain_event(body: bytes) -> Event:
    headers: dict[str, str] | None = None
    if body.endswith(b"\n\n"):
        # Most events have no inner body. If the fast path accepts body[:-2], it holds no blank
        # line, so this final one is the first: the same split as the find() below.
        headers = _fast_plain_headers(body[:-2])
        inner = b""
    if headers is None:
        end = body.find(b"\n\n")
        if end < 0:
            head_bytes, inner = body.rstrip(b"\r\n"), b""
        else:
            head_bytes, inner = body[:end], body[end + 2 :]
        headers = _fast_plain_headers(head_bytes)
        if headers is None:
            headers = _parse_plain_headers(head_bytes.decode("utf-8", "replace"))
    text: str | None = None
    if "Content-Length" in headers:
        try:
            length = int(headers["Content-Length"])
        except ValueError:
            raise ProtocolError(
                f"event {headers.get('Event-Name', '?')}: inner Content-Length is not an integer"
            ) from None
        if length > len(inner):
            raise ProtocolError(
                f"event {headers.get('Event-Name', '?')}: inner Content-Length {length} "
                f"but only {len(inner)} bytes follow"
            )
        text = inner[:length].decode("utf-8", "replace")
    return Event(headers, text, "plain")


def _json_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "ARRAY::" + "|:".join(str(v) for v in value)
    return str(value)


def parse_json_event(body: bytes) -> Event:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"text/event-json body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("text/event-json body is not a JSON object")
    # FreeSWITCH's values are strings except multi-valued headers (arrays). `str.join` checks every
    # value's type in C and raises TypeError at the first non-string; only then convert each value.
    # Duplicate names need nothing here: orjson keeps the last value, like the plain parser.
    try:
        "".join(data.values())
    except TypeError:
        data = {k: _json_value(v) for k, v in data.items()}
    text = data.pop("_body", None)
    return Event(data, text, "json")


def parse_xml_event(body: bytes) -> Event:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProtocolError(f"text/event-xml body is not well-formed XML: {exc}") from None
    headers_el = root.find("headers")
    if root.tag != "event" or headers_el is None:
        raise ProtocolError("text/event-xml body has no <event><headers>")
    headers = {child.tag: url_decode(child.text or "") for child in headers_el}
    text: str | None = None
    body_el = root.find("body")
    if body_el is not None:
        text = body_el.text or ""
        length_el = root.find("Content-Length")
        if length_el is not None and (length_el.text or "").strip().isdigit():
            length = int(length_el.text.strip())  # type: ignore[union-attr]
            text = text.encode("utf-8")[:length].decode("utf-8", "replace")
            headers.setdefault("Content-Length", str(length))
    return Event(headers, text, "xml")


# --------------------------------------------------------------------------------------------
# Messages


@dataclass(slots=True)
class AuthRequest:
    """`auth/request`: the inbound socket wants `auth` or `userauth`."""


@dataclass(slots=True)
class CommandReply:
    reply_text: str
    headers: dict[str, str] = field(default_factory=dict)
    ok: bool = True

    @property
    def job_uuid(self) -> str | None:
        return self.headers.get("Job-UUID")


@dataclass(slots=True)
class ApiResponse:
    body: str


@dataclass(slots=True)
class LogData:
    headers: dict[str, str]
    text: str


@dataclass(slots=True)
class DisconnectNotice:
    """`text/disconnect-notice`. disposition 'linger' = hung up but events keep coming;
    'disconnect' or None = the socket is about to close."""

    disposition: str | None
    linger_time: int | None
    controlled_uuid: str | None
    text: str

    @property
    def is_linger(self) -> bool:
        return self.disposition == "linger"


@dataclass(slots=True)
class RudeRejection:
    text: str


@dataclass(slots=True)
class UnknownMessage:
    frame: Frame


Message = Union[
    AuthRequest, CommandReply, ApiResponse, Event, LogData, DisconnectNotice, RudeRejection, UnknownMessage
]

_EVENT_PARSERS = {
    "text/event-plain": parse_plain_event,
    "text/event-json": parse_json_event,
    "text/event-xml": parse_xml_event,
}


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def decode(frame: Frame) -> Message:
    """Frame -> typed message. An unknown Content-Type gives UnknownMessage (not an error)."""
    ctype = frame.headers.get("Content-Type", "")
    parser = _EVENT_PARSERS.get(ctype)
    if parser is not None:
        return parser(frame.body)
    if ctype == "command/reply":
        reply = frame.headers.get("Reply-Text", "")
        return CommandReply(reply, frame.headers, reply.startswith("+OK"))
    if ctype == "api/response":
        return ApiResponse(_text(frame.body))
    if ctype == "auth/request":
        return AuthRequest()
    if ctype == "text/disconnect-notice":
        linger = frame.headers.get("Linger-Time")
        try:
            linger_time = int(linger) if linger is not None else None
        except ValueError:
            linger_time = None
        return DisconnectNotice(
            frame.headers.get("Content-Disposition"),
            linger_time,
            frame.headers.get("Controlled-Session-UUID"),
            _text(frame.body),
        )
    if ctype == "log/data":
        return LogData(frame.headers, _text(frame.body))
    if ctype == "text/rude-rejection":
        return RudeRejection(_text(frame.body))
    return UnknownMessage(frame)


# --------------------------------------------------------------------------------------------
# Command encoders (client -> server)

_BAD_CHARS = re.compile(r"[\r\n]")


def _check_line(what: str, value: str) -> None:
    if _BAD_CHARS.search(value):
        raise ValueError(f"{what} must not contain a newline: {value[:80]!r}")


def encode_command(
    line: str, headers: Mapping[str, str] | None = None, body: bytes | str | None = None
) -> bytes:
    """One command: the line, `Name: value` headers, blank line, and a Content-Length body."""
    if not line.strip():
        raise ValueError("empty ESL command")
    _check_line("command", line)
    out = [line]
    if headers:
        for key, value in headers.items():
            if not key or ":" in key or " " in key:
                raise ValueError(f"invalid header name {key!r}")
            _check_line(f"header {key}", key)
            value = str(value)
            _check_line(f"header {key}", value)
            if key.lower() == "content-length":
                raise ValueError("Content-Length is computed from the body, do not pass it")
            out.append(f"{key}: {value}")
    data = b""
    if body is not None:
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        out.append(f"Content-Length: {len(data)}")
    return ("\n".join(out) + "\n\n").encode("utf-8") + data


def encode_sendmsg(
    uuid: str | None,
    call_command: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
) -> bytes:
    line = f"sendmsg {uuid}" if uuid else "sendmsg"
    all_headers = {"call-command": call_command}
    if headers:
        all_headers.update(headers)
    return encode_command(line, all_headers, body)


def encode_execute(
    app: str,
    arg: str = "",
    *,
    event_uuid: str,
    uuid: str | None = None,
    event_lock: bool = False,
    loops: int = 1,
) -> bytes:
    """sendmsg execute tagged with Event-UUID (it comes back as Application-UUID).

    An argument with a newline or longer than MAX_INLINE_ARG bytes travels as a text/plain body with
    no execute-app-arg header, which switch_ivr_parse_event reads as the argument.
    """
    if not app or any(c.isspace() for c in app):
        raise ValueError(f"invalid application name {app!r}")
    headers: dict[str, str] = {"execute-app-name": app}
    body: str | None = None
    if "\n" in arg or "\r" in arg or len(arg.encode("utf-8")) > MAX_INLINE_ARG:
        headers["content-type"] = "text/plain"
        body = arg
    elif arg:
        headers["execute-app-arg"] = arg
    if loops != 1:
        headers["loops"] = str(int(loops))
    if event_lock:
        headers["event-lock"] = "true"
    headers["Event-UUID"] = event_uuid
    return encode_sendmsg(uuid, "execute", headers, body)


def encode_hangup(cause: str = "NORMAL_CLEARING", uuid: str | None = None) -> bytes:
    return encode_sendmsg(uuid, "hangup", {"hangup-cause": cause})
