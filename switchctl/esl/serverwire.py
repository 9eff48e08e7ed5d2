"""FreeSWITCH's side of the ESL wire, byte for byte (pure: no I/O).

The simulator speaks ESL as FreeSWITCH 1.11.1 does, so every function here reproduces what
mod_event_socket.c, switch_event.c (serialize / serialize_json / xmlize), switch_xml.c
(toxml) and cJSON write, checked against the captures in ../shared/captures/freeswitch*.

- `CommandReader` frames what a client sends (mod_event_socket `read_packet`).
- `url_encode` is `switch_url_encode` with double_encode FALSE.
- The frame encoders return the exact bytes FreeSWITCH writes for one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from switchctl.esl.errors import FrameTooLarge, ProtocolError

__all__ = [
    "ClientCommand",
    "CommandReader",
    "GOODBYE_TEXT",
    "HeaderValue",
    "MAX_CONTENT_LENGTH",
    "MAX_HEADER_BLOCK",
    "api_response",
    "auth_request",
    "command_reply",
    "connect_reply",
    "disconnect_notice",
    "encode_event",
    "event_json",
    "event_plain",
    "event_xml",
    "json_string",
    "serialize_event",
    "log_data",
    "rude_rejection",
    "url_encode",
]

# mod_event_socket.c MAX_CONTENT_LENGTH: a larger (or negative) client Content-Length drops the connection.
MAX_CONTENT_LENGTH = 16 * 1024 * 1024
# read_packet's max_len: a header block this long is cut and parsed as if it had ended.
MAX_HEADER_BLOCK = 10485760

GOODBYE_TEXT = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
# send_disconnect()'s text when called without a message (module shutdown, kill_listener).
_DEFAULT_DISCONNECT_TEXT = "Disconnected.\n"
_RUDE_REJECTION_TEXT = "Access Denied, go away.\n"

# A header value: one string, or several for a multi-valued header (switch_event_add_header ARRAY).
HeaderValue = str | Sequence[str]


# --------------------------------------------------------------------------- client -> server


@dataclass(slots=True)
class ClientCommand:
    """One client command as FreeSWITCH's read_packet sees it.

    `line` is the command line as parse_command uses it (strip_cr of the header block).
    `headers` maps each header name, as sent, to its FIRST value (switch_event_get_header returns the
    first match); values are raw: FreeSWITCH url-decodes nothing the client sends, not even sendmsg's.
    `header_items` keeps every header in order, duplicates included. `body` is the Content-Length
    body as FreeSWITCH keeps it (switch_event_add_body "%s": cut at the first NUL byte).
    """

    line: str
    headers: dict[str, str]
    body: bytes
    header_items: list[tuple[str, str]] = field(default_factory=list)

    @property
    def verb(self) -> str:
        """First word of the command line, e.g. `sendmsg`, `api`, `auth`."""
        return self.line.split(" ", 1)[0]

    @property
    def args(self) -> str:
        """The rest of the command line after the verb and one space (may be empty)."""
        parts = self.line.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive lookup, first match wins (switch_event_get_header)."""
        wanted = name.lower()
        for key, value in self.header_items:
            if key.lower() == wanted:
                return value
        return default


def _strip_cr(text: str) -> str:
    """mod_event_socket strip_cr(): cut at the first '\\r' anywhere, else at the first '\\n'."""
    cut = text.find("\r")
    if cut < 0:
        cut = text.find("\n")
    return text if cut < 0 else text[:cut]


def _c_atoi(text: str) -> int:
    """glibc atoi() on a 64-bit host: (int) strtol(text, NULL, 10)."""
    i, n = 0, len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    sign = 1
    if i < n and text[i] in "+-":
        sign = -1 if text[i] == "-" else 1
        i += 1
    start = i
    while i < n and text[i].isascii() and text[i].isdigit():
        i += 1
    if i == start:
        return 0
    value = sign * int(text[start:i])
    value = max(-(2**63), min(2**63 - 1, value))  # strtol saturates at LONG_MIN/LONG_MAX
    value &= 0xFFFFFFFF  # the (int) cast keeps the low 32 bits
    return value - 2**32 if value >= 2**31 else value


def _parse_header_block(block: str) -> tuple[str, list[tuple[str, str]], list[int]]:
    """read_packet's line loop over one header block.

    Returns the command line, the headers in order, and the Content-Length values in the order they
    appeared (each one makes FreeSWITCH read that many body bytes right away).
    """
    headers: list[tuple[str, str]] = []
    lengths: list[int] = []
    line = _strip_cr(block)
    cur: int | None = 0
    count = 0
    while cur is not None:
        nxt = block.find("\r", cur)
        if nxt < 0:
            nxt = block.find("\n", cur)
        if nxt >= 0:
            while nxt < len(block) and block[nxt] in "\r\n":
                nxt += 1
        count += 1
        if count > 1:
            var = _strip_cr(block[cur:])
            if var:
                name, colon, value = var.partition(":")
                if colon:
                    value = value.lstrip(" ")
                    headers.append((name, value))
                    if name.lower() == "content-length":
                        lengths.append(_c_atoi(value))
        cur = nxt if nxt >= 0 else None
    return line, headers, lengths


class CommandReader:
    """Incremental client->server framing, as mod_event_socket's read_packet does it.

    A command is a header block that ends at the second '\\n' ('\\r' does not reset the count);
    '\\r' or '\\n' before a command starts is skipped. Each `Content-Length` header makes FreeSWITCH
    read that many body bytes right after the block; a negative one or one above 16 MiB makes it
    drop the connection, raised here as `FrameTooLarge`. After that error the reader is unusable.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already scanned for the end of the header block
        self._newlines = 0  # read_packet's crcount
        self._pending: tuple[str, list[tuple[str, str]], list[int]] | None = None
        self._failed: ProtocolError | None = None

    def feed(self, data: bytes) -> list[ClientCommand]:
        """Add bytes from the socket; return every command completed by them, in order."""
        if self._failed is not None:
            raise self._failed
        self._buf += data
        commands: list[ClientCommand] = []
        while True:
            command = self._next()
            if command is None:
                return commands
            commands.append(command)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete command."""
        return len(self._buf)

    def _next(self) -> ClientCommand | None:
        if self._pending is None:
            block = self._take_header_block()
            if block is None:
                return None
            line, headers, lengths = _parse_header_block(block.decode("utf-8", "surrogateescape"))
            for length in lengths:
                if length < 0 or length > MAX_CONTENT_LENGTH:
                    self._failed = FrameTooLarge(
                        f"client Content-Length {length} is out of range (0..{MAX_CONTENT_LENGTH}); "
                        "FreeSWITCH drops the connection"
                    )
                    raise self._failed
            self._pending = (line, headers, lengths)
        line, headers, lengths = self._pending
        need = sum(lengths)
        if len(self._buf) < need:
            return None
        body = b""
        offset = 0
        for length in lengths:  # several Content-Length headers: each body replaces the previous
            body = bytes(self._buf[offset : offset + length]).split(b"\0", 1)[0]
            offset += length
        del self._buf[:need]
        self._pending = None
        first: dict[str, str] = {}
        for name, value in headers:
            first.setdefault(name, value)
        return ClientCommand(line=line, headers=first, body=body, header_items=list(headers))

    def _take_header_block(self) -> bytes | None:
        buf = self._buf
        # Leading '\r'/'\n' reset read_packet's buffer: blank lines between commands are skipped.
        skip = 0
        while skip < len(buf) and buf[skip] in (0x0D, 0x0A) and self._scan == 0:
            skip += 1
        if skip:
            del buf[:skip]
        i = self._scan
        while i < len(buf):
            byte = buf[i]
            i += 1
            if byte == 0x0A:
                self._newlines += 1
            elif byte != 0x0D:
                self._newlines = 0
            if i >= MAX_HEADER_BLOCK:
                self._newlines = 2
            if self._newlines == 2:
                block = bytes(buf[:i])
                del buf[:i]
                self._scan = 0
                self._newlines = 0
                return block
        self._scan = i
        return None


# --------------------------------------------------------------------------- url encoding

_URL_UNSAFE = frozenset(b"\r\n #%&+:;<=>?@[\\]^`{|}\"")
_HEX_UPPER = b"0123456789ABCDEF"


def url_encode(value: str) -> str:
    """switch_url_encode(value, double_encode=FALSE), on the value's UTF-8 bytes.

    Bytes outside 0x20..0x7e and the SWITCH_URL_UNSAFE set become %XX (uppercase hex); a '%'
    followed by two UPPERCASE hex digits is passed through unencoded (so `50%20off` stays as is).
    """
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    n = len(raw)
    for i, byte in enumerate(raw):
        if byte == 0x25 and i + 2 < n and raw[i + 1] in _HEX_UPPER and raw[i + 2] in _HEX_UPPER:
            out.append(byte)
        elif byte < 0x20 or byte > 0x7E or byte in _URL_UNSAFE:
            out += b"%" + _HEX_UPPER[byte >> 4 : (byte >> 4) + 1] + _HEX_UPPER[byte & 15 : (byte & 15) + 1]
        else:
            out.append(byte)
    return out.decode("ascii")


# --------------------------------------------------------------------------- simple frames


def auth_request() -> bytes:
    """The banner of an inbound connection."""
    return b"Content-Type: auth/request\n\n"


def _header_line(name: str, value: str) -> str:
    if "\n" in name or "\n" in value:
        raise ValueError(f"header {name!r} would break the frame: newline in name or value")
    return f"{name}: {value}\n"


def command_reply(reply_text: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """`command/reply` with `Reply-Text` and, for the `~` replies (bgapi, userauth), extra headers."""
    head = "Content-Type: command/reply\n" + _header_line("Reply-Text", reply_text)
    head += "".join(_header_line(name, value) for name, value in extra)
    return (head + "\n").encode("utf-8")


def api_response(body: str) -> bytes:
    """`api/response`; an empty result is sent as `-ERR no reply\\n` (api_exec)."""
    data = body.encode("utf-8", "surrogateescape") or b"-ERR no reply\n"
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def rude_rejection() -> bytes:
    """What an ACL-refused peer gets instead of auth/request (a disconnect-notice follows)."""
    data = _RUDE_REJECTION_TEXT.encode()
    return b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(data) + data


def disconnect_notice(
    *,
    controlled_uuid: str | None = None,
    disposition: str | None = None,
    channel_name: str | None = None,
    linger_time: int | None = None,
    with_goodbye_text: bool = True,
) -> bytes:
    """`text/disconnect-notice` in its three captured shapes.

    - inbound close (exit, auth failure, ACL): no arguments;
    - outbound close: `controlled_uuid` (disposition `disconnect`, the default with a uuid);
    - outbound linger start: `disposition="linger"`, `controlled_uuid`, `channel_name`,
      `linger_time` (-1 for plain `linger`), no body.
    `with_goodbye_text=False` sends send_disconnect()'s default text `Disconnected.\\n`.
    """
    if disposition == "linger":
        if controlled_uuid is None or channel_name is None or linger_time is None:
            raise ValueError("a linger notice needs controlled_uuid, channel_name and linger_time")
        head = (
            "Content-Type: text/disconnect-notice\n"
            + _header_line("Controlled-Session-UUID", controlled_uuid)
            + "Content-Disposition: linger\n"
            + _header_line("Channel-Name", channel_name)
            + f"Linger-Time: {int(linger_time)}\n"
            + "Content-Length: 0\n\n"
        )
        return head.encode("utf-8")
    if disposition not in (None, "disconnect"):
        raise ValueError(f"unknown disconnect disposition {disposition!r} (linger or disconnect)")
    if channel_name is not None or linger_time is not None:
        raise ValueError("channel_name and linger_time belong to a linger notice only")
    text = (GOODBYE_TEXT if with_goodbye_text else _DEFAULT_DISCONNECT_TEXT).encode()
    if controlled_uuid is None:
        if disposition is not None:
            raise ValueError("an inbound (no session) disconnect notice has no Content-Disposition")
        head = f"Content-Type: text/disconnect-notice\nContent-Length: {len(text)}\n\n"
    else:
        head = (
            "Content-Type: text/disconnect-notice\n"
            + _header_line("Controlled-Session-UUID", controlled_uuid)
            + f"Content-Disposition: disconnect\nContent-Length: {len(text)}\n\n"
        )
    return head.encode("utf-8") + text


def log_data(
    text: str,
    *,
    level: int,
    text_channel: int = 3,
    file: str,
    func: str,
    line: int,
    user_data: str | None = None,
) -> bytes:
    """`log/data` after `log <level>`; its headers are NOT url-encoded, `User-Data:` may be empty."""
    data = text.encode("utf-8", "surrogateescape")
    head = (
        "Content-Type: log/data\n"
        f"Content-Length: {len(data)}\n"
        f"Log-Level: {int(level)}\n"
        f"Text-Channel: {int(text_channel)}\n"
        f"Log-File: {file}\n"
        f"Log-Func: {func}\n"
        f"Log-Line: {int(line)}\n"
        f"User-Data: {user_data or ''}\n"
        "\n"
    )
    return head.encode("utf-8") + data


# --------------------------------------------------------------------------- events


def _values(value: HeaderValue) -> list[str] | None:
    """None for a plain string value, else the list of an array header's values."""
    if isinstance(value, str):
        return None
    return [str(v) for v in value]


def _serialize_plain(headers: Sequence[tuple[str, HeaderValue]], body: str | None) -> bytes:
    """switch_event_serialize(event, encode=TRUE)."""
    parts: list[str] = []
    for name, value in headers:
        items = _values(value)
        if items is None:
            text = value
        else:  # switch_event_base_add_header: "ARRAY::" prefix only from the second value on
            text = ("ARRAY::" if len(items) > 1 else "") + "|:".join(items)
        encoded = url_encode(text)  # type: ignore[arg-type]
        parts.append(f"{name}: {encoded or '_undef_'}\n")
    head = "".join(parts).encode("utf-8", "surrogateescape")
    data = _c_string(body) if body is not None else b""
    if data:
        return head + b"Content-Length: %d\n\n" % len(data) + data
    return head + b"\n"


def _c_string(text: str) -> bytes:
    """UTF-8 bytes as C sees the string: up to the first NUL."""
    return text.encode("utf-8", "surrogateescape").split(b"\0", 1)[0]


def _json_string(text: str) -> bytes:
    """cJSON print_string_ptr: escape '"', '\\\\', \\b \\f \\n \\r \\t, other bytes < 32 as \\u00xx."""
    out = bytearray(b'"')
    for byte in _c_string(text):
        if byte > 31 and byte not in (0x22, 0x5C):
            out.append(byte)
        elif byte == 0x22:
            out += b'\\"'
        elif byte == 0x5C:
            out += b"\\\\"
        elif byte == 0x08:
            out += b"\\b"
        elif byte == 0x0C:
            out += b"\\f"
        elif byte == 0x0A:
            out += b"\\n"
        elif byte == 0x0D:
            out += b"\\r"
        elif byte == 0x09:
            out += b"\\t"
        else:
            out += b"\\u%04x" % byte
    out += b'"'
    return bytes(out)


def json_string(text: str) -> bytes:
    """One JSON string exactly as FreeSWITCH's cJSON prints it (for api bodies built from tables)."""
    return _json_string(text)


def serialize_event(headers: Sequence[tuple[str, HeaderValue]], body: str | None, fmt: str) -> bytes:
    """The serialized event without the outer frame (uuid_dump's api body, for instance)."""
    kind = fmt.removeprefix("text/event-")
    if kind not in _SERIALIZERS:
        raise ValueError(f"unknown event format {fmt!r}: use plain, json or xml")
    return _SERIALIZERS[kind](headers, body)


def _serialize_json(headers: Sequence[tuple[str, HeaderValue]], body: str | None) -> bytes:
    """switch_event_serialize_json: cJSON_PrintUnformatted of headers (+ Content-Length, _body)."""
    members: list[bytes] = []
    for name, value in headers:
        items = _values(value)
        if items is None:
            rendered = _json_string(value)  # type: ignore[arg-type]
        else:
            rendered = b"[" + b",".join(_json_string(v) for v in items) + b"]"
        members.append(_json_string(name) + b":" + rendered)
    if body is not None:
        data = _c_string(body)
        members.append(b'"Content-Length":' + _json_string(str(len(data))))
        members.append(b'"_body":' + _json_string(body))
    return b"{" + b",".join(members) + b"}"


def _xml_text(data: bytes) -> bytes:
    """switch_xml_ampencode(a=0, use_utf8_encoding=TRUE) of element text."""
    out = bytearray()
    expecting = 0
    code = 0
    i = 0
    while i < len(data):
        byte = data[i]
        i += 1
        if byte == 0:
            break
        if byte == 0x3C and i < len(data) and data[i] == 0x21:  # "<!": the rest is copied verbatim
            out += data[i - 1 :].split(b"\0", 1)[0]
            break
        if byte == 0x26:
            out += b"&amp;"
        elif byte == 0x3C:
            out += b"&lt;"
        elif byte == 0x3E:
            out += b"&gt;"
        elif byte == 0x0D:
            out += b"&#xD;"
        elif byte in (0x22, 0x0A, 0x09):
            out.append(byte)
        elif expecting == 0 and byte & 0x80:
            num = 1
            while num < 4 and (byte >> (7 - num)) & 1:
                num += 1
            code = byte & {2: 0x1F, 3: 0x0F, 4: 0x07}.get(num, 0)
            expecting = num - 1  # a stray continuation byte (num 1) is dropped
        elif expecting > 0:
            if (byte >> 6) & 3 != 2:
                expecting = 0  # invalid sequence: FreeSWITCH drops this byte too
                continue
            code = (code << 6) | (byte & 0x3F)
            expecting -= 1
            if expecting == 0:
                out += b"&#x%X;" % code
        else:
            out.append(byte)
    return bytes(out)


def _serialize_xml(headers: Sequence[tuple[str, HeaderValue]], body: str | None) -> bytes:
    """switch_event_xmlize + switch_xml_toxml(prn_header=FALSE): values url-encoded, then escaped."""

    def element(indent: bytes, name: str, text: bytes) -> bytes:
        inner = _xml_text(text)
        closing = indent if inner.endswith(b"\n") else b""
        tag = name.encode("utf-8", "surrogateescape")
        return indent + b"<" + tag + b">" + inner + closing + b"</" + tag + b">\n"

    out = bytearray(b"<event>\n  <headers>\n" if headers else b"<event>\n  <headers>")
    for name, value in headers:
        items = _values(value)
        for text in [value] if items is None else items:  # arrays: one element per value
            out += element(b"    ", name, url_encode(text).encode("ascii"))  # type: ignore[arg-type]
    out += b"  </headers>\n" if headers else b"</headers>\n"
    data = _c_string(body) if body is not None else b""
    if data:
        out += element(b"  ", "Content-Length", str(len(data)).encode())
        out += element(b"  ", "body", data)
    out += b"</event>\n"
    return bytes(out)


_SERIALIZERS = {"plain": _serialize_plain, "json": _serialize_json, "xml": _serialize_xml}


def encode_event(headers: Sequence[tuple[str, HeaderValue]], body: str | None, fmt: str) -> bytes:
    """The whole `text/event-<fmt>` frame FreeSWITCH writes for one event.

    `headers` in event order (name, value); a value may be a sequence of strings for a
    multi-valued header. `body` is the event body (BACKGROUND_JOB output) or None.
    `fmt` is `plain`, `json` or `xml` (also accepted with the `text/event-` prefix).
    """
    kind = fmt.removeprefix("text/event-")
    serializer = _SERIALIZERS.get(kind)
    if serializer is None:
        raise ValueError(f"unknown event format {fmt!r}: use plain, json or xml")
    data = serializer(headers, body)
    return b"Content-Length: %d\nContent-Type: text/event-%s\n\n" % (len(data), kind.encode()) + data


def event_plain(headers: Sequence[tuple[str, HeaderValue]], body: str | None = None) -> bytes:
    """Shorthand for `encode_event(headers, body, "plain")`."""
    return encode_event(headers, body, "plain")


def event_json(headers: Sequence[tuple[str, HeaderValue]], body: str | None = None) -> bytes:
    """Shorthand for `encode_event(headers, body, "json")`."""
    return encode_event(headers, body, "json")


def event_xml(headers: Sequence[tuple[str, HeaderValue]], body: str | None = None) -> bytes:
    """Shorthand for `encode_event(headers, body, "xml")`."""
    return encode_event(headers, body, "xml")


def connect_reply(headers: Sequence[tuple[str, str]]) -> bytes:
    """The outbound `connect` reply: a plain-serialized CHANNEL_DATA event sent as a bare header block.

    `headers` is the whole event (see `switchctl.sim.events.EventFactory.connect_headers`), ending
    with Content-Type `command/reply`, Reply-Text `+OK\\n`, Socket-Mode and Control; every value
    is url-encoded (`Reply-Text: %2BOK%0A`), and no outer frame header is added.
    """
    if not any(name == "Content-Type" and value == "command/reply" for name, value in headers):
        raise ProtocolError("a connect reply must carry Content-Type: command/reply")
    return _serialize_plain(headers, None)
