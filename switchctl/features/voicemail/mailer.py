"""The new-message e-mail: an RFC 5322 message with the recording attached as audio/wav, handed to
the site's SMTP relay by the asyncio client in smtp.py.

The message is 7-bit clean (text quoted-printable where needed, the WAV base64) with CRLF line ends
(`email.policy.SMTP`), so any relay takes it without 8BITMIME. Header values that come from the
caller (caller id name and number) are cleaned of control characters first.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from .smtp import check_address, send_mail

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class MailSettings:
    """Where new-message e-mails go (site `voicemail:` keys `smtp`, `from`, `retry_seconds`)."""

    host: str
    port: int
    sender: str
    helo: str = "localhost"
    timeout: float = 30.0
    retry_seconds: float = 60.0  # first retry after a failed send; doubles up to an hour

    def __post_init__(self) -> None:
        check_address(self.sender)
        if not 0 < self.port < 65536:
            raise ValueError(f"SMTP port {self.port} is not a TCP port")

    @classmethod
    def parse(cls, smtp: str, sender: str, **kwargs: object) -> MailSettings:
        """From the site's `smtp: host:port` text (port 25 when left out)."""
        host, _, port = smtp.rpartition(":") if ":" in smtp else (smtp, "", "25")
        if not host or not port.isdigit():
            raise ValueError(f"smtp '{smtp}' must be host:port, e.g. 127.0.0.1:25")
        return cls(host, int(port), sender, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NewMessageMail:
    """What the e-mail tells."""

    to: str
    mailbox: str
    message_id: int
    caller: str
    caller_name: str
    received_at_us: int
    duration_us: int
    audio: bytes
    filename: str


def clean_header(value: str, limit: int = 80) -> str:
    return _CONTROL.sub(" ", value).strip()[:limit]


def build_message(mail: NewMessageMail, sender: str) -> EmailMessage:
    check_address(mail.to)
    received = dt.datetime.fromtimestamp(mail.received_at_us // 1_000_000, dt.UTC)
    seconds = (mail.duration_us + 500_000) // 1_000_000
    caller = clean_header(mail.caller) or "unknown"
    name = clean_header(mail.caller_name)
    who = f"{name} ({caller})" if name and name != caller else caller
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail.to
    msg["Subject"] = f"New voicemail from {who} in mailbox {clean_header(mail.mailbox)}"
    msg["Date"] = format_datetime(received)
    msg["Message-ID"] = make_msgid(idstring=f"vm{mail.message_id}", domain=sender.rpartition("@")[2])
    msg.set_content(
        f"You have a new voicemail in mailbox {clean_header(mail.mailbox)}.\n\n"
        f"From:     {who}\n"
        f"Received: {received.strftime('%Y-%m-%d %H:%M:%S')} UTC\n"
        f"Length:   {seconds // 60}:{seconds % 60:02d}\n\n"
        "The recording is attached.\n"
    )
    msg.add_attachment(mail.audio, maintype="audio", subtype="wav", filename=mail.filename)
    return msg


async def send_new_message(settings: MailSettings, mail: NewMessageMail) -> None:
    """Build and deliver one new-message e-mail (raises SmtpError / OSError / TimeoutError)."""
    message = build_message(mail, settings.sender)
    data = message.as_bytes(policy=email.policy.SMTP)
    await send_mail(settings.host, settings.port, settings.sender, [mail.to], data,
                    helo=settings.helo, timeout=settings.timeout)
