"""A minimal SMTP client on asyncio streams (RFC 5321): EHLO (HELO fallback), MAIL FROM, RCPT TO,
DATA with dot-stuffing, QUIT. Enough to hand a voicemail e-mail to a local relay (a smart host such
as the site's Postfix on 127.0.0.1:25); no TLS and no AUTH — those belong to the relay.

The byte-level parts (`dot_stuff`, `parse_reply_line`, `check_address`) are pure; `send_mail` does
the I/O, every read and the connect bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_REPLY_LINES = 100  # a multi-line reply longer than this is not a server we talk to
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"\\]+@[A-Za-z0-9.\-]+")


class SmtpError(Exception):
    """The server refused a step (or spoke nonsense, or went away): nothing was delivered, unless
    `after_data` says the final DATA reply was lost, then the server may have taken the message."""

    def __init__(self, message: str, code: int | None = None, *, after_data: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.after_data = after_data


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)


def check_address(address: str) -> str:
    """A bare `local@domain` (what goes between < and >); raises ValueError otherwise (no CR/LF,
    no spaces or brackets: nothing can smuggle an extra command into the envelope)."""
    if not _ADDRESS.fullmatch(address) or len(address) > 254:
        raise ValueError(f"'{address}' is not a plain e-mail address like name@example.com")
    return address


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """One reply line: (code, is_last, text). `250-x` continues, `250 x` / `250` ends the reply."""
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    if len(text) < 3 or not text[:3].isdigit() or (len(text) > 3 and text[3] not in " -"):
        raise SmtpError(f"malformed SMTP reply line {text[:80]!r}")
    return int(text[:3]), len(text) == 3 or text[3] == " ", text[4:]


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload for `data`: CRLF line ends, a '.' doubled at the start of a line (RFC 5321
    4.5.2), ending with the CRLF '.' CRLF terminator."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    async def reply(self) -> Reply:
        lines: list[str] = []
        code = None
        for _ in range(MAX_REPLY_LINES):
            try:
                raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
            except (asyncio.LimitOverrunError, ValueError) as exc:
                raise SmtpError(f"SMTP reply line too long: {exc}") from exc
            if not raw:
                raise SmtpError("the SMTP server closed the connection")
            line_code, last, text = parse_reply_line(raw)
            if code is not None and line_code != code:
                raise SmtpError(f"SMTP reply changed its code mid-reply ({code} then {line_code})")
            code = line_code
            lines.append(text)
            if last:
                assert code is not None
                return Reply(code, tuple(lines))
        raise SmtpError(f"SMTP reply longer than {MAX_REPLY_LINES} lines")

    async def command(self, line: str, expect: Sequence[int], what: str) -> Reply:
        self.writer.write(line.encode("ascii") + b"\r\n")
        await asyncio.wait_for(self.writer.drain(), self.timeout)
        reply = await self.reply()
        if reply.code not in expect:
            raise SmtpError(f"SMTP {what} refused: {reply.code} {reply.text}", reply.code)
        return reply


async def send_mail(host: str, port: int, sender: str, recipients: Sequence[str], data: bytes, *,
                    helo: str = "localhost", timeout: float = 30.0) -> None:
    """Deliver `data` (an RFC 5322 message, CRLF or LF line ends, 7-bit) to the SMTP server at
    host:port for `recipients`. Returns once the server accepted the DATA (250); raises SmtpError
    (a refusal) or OSError / TimeoutError (no connection)."""
    check_address(sender)
    if not recipients:
        raise ValueError("send_mail: no recipients")
    for rcpt in recipients:
        check_address(rcpt)
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", helo):
        raise ValueError(f"helo name '{helo}' must be a host name")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    session = _Session(reader, writer, timeout)
    try:
        greeting = await session.reply()
        if greeting.code != 220:
            raise SmtpError(f"SMTP server not ready: {greeting.code} {greeting.text}", greeting.code)
        try:
            await session.command(f"EHLO {helo}", (250,), "EHLO")
        except SmtpError as exc:
            if exc.code is None or not 500 <= exc.code < 600:
                raise
            await session.command(f"HELO {helo}", (250,), "HELO")  # an old server without ESMTP
        await session.command(f"MAIL FROM:<{sender}>", (250,), "MAIL FROM")
        for rcpt in recipients:
            await session.command(f"RCPT TO:<{rcpt}>", (250, 251), f"RCPT TO {rcpt}")
        await session.command("DATA", (354,), "DATA")
        writer.write(dot_stuff(data))
        await asyncio.wait_for(writer.drain(), timeout)
        try:
            final = await session.reply()
        except (SmtpError, OSError, TimeoutError) as exc:
            raise SmtpError(f"no answer to the end of DATA: {exc}", after_data=True) from exc
        if final.code != 250:
            raise SmtpError(f"SMTP message refused: {final.code} {final.text}", final.code)
        with contextlib.suppress(SmtpError, OSError, TimeoutError):
            await session.command("QUIT", (221,), "QUIT")
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)
