"""Errors of the ESL layer. Backends translate them into `switchctl.switch.call` errors."""

from __future__ import annotations


class ESLError(Exception):
    """Base of every ESL failure."""


class ProtocolError(ESLError):
    """Bytes that are not a valid ESL frame; the message says what and where."""


class FrameTooLarge(ProtocolError):
    """A Content-Length above the 16 MiB cap FreeSWITCH and libesl both enforce, or negative."""


class ConnectionLost(ESLError):
    """The peer closed, reset or announced a disconnect while we still expected something."""


class ReplyTimeout(ESLError):
    """No reply within the deadline; the connection is no longer trusted."""


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
