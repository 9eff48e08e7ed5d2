"""Errors of the ESL layer. Backends translate them into `switchctl.switch.call` errors."""

from __future__ import annotations


class ESLError(Exception):
    """Base of every ESL failure."""


class ProtocolError(ESLError):
    """Bytes that are not a valid ESL frame; the message says what and where."""


class FrameTooLarge(ProtocolError):
    """A Content-Length above the 16 MiB cap FreeSWITCH and libesl both enforce, or negative."""


class ConnectionLost(ESLError):
    """The peer closed, reset or announced a disconnect while we still expected something.

    `truncated` is True when the stream ended in the middle of a frame; `pending` names the
    command whose reply was still awaited (None when nothing was pending).
    """

    def __init__(self, reason: str, *, truncated: bool = False, pending: str | None = None) -> None:
        parts = [reason]
        if truncated:
            parts.append("stream truncated mid-frame")
        if pending:
            parts.append(f"while waiting for the reply to '{pending}'")
        super().__init__("; ".join(parts))
        self.reason = reason
        self.truncated = truncated
        self.pending = pending


class ReplyTimeout(ESLError):
    """No reply within the deadline.

    The connection keeps a placeholder for the late reply so later replies still pair with
    their commands; callers that cannot tolerate a slow switch should close the connection.
    """


class CommandError(ESLError):
    """FreeSWITCH refused a command (`-ERR ...` reply or api body)."""

    def __init__(self, reply: str, command: str | None = None) -> None:
        where = f" to '{command}'" if command else ""
        super().__init__(f"FreeSWITCH answered{where}: {reply.strip()}")
        self.reply = reply
        self.command = command


class AuthError(CommandError):
    """Wrong password or user for the inbound socket."""


class AccessDenied(ESLError):
    """The switch's ACL refused our address (`text/rude-rejection`)."""


class ChannelHungUp(ESLError):
    """The channel of an outbound session hung up; `cause` is FreeSWITCH's hangup cause."""

    def __init__(self, cause: str = "NORMAL_CLEARING") -> None:
        super().__init__(f"channel hung up ({cause})")
        self.cause = cause
