"""Errors of the ARI layer. Backends translate them into `switchctl.switch.call` errors.

Every HTTP error carries the request's method and path (relative to /ari), the status and the
body's message. Asterisk puts the message under "message", except some 500s that use "error"
(`{"error":"Allocation failed"}` for an unknown endpoint); both are read.
"""

from __future__ import annotations

from .models import AriProtocolError

__all__ = [
    "AriAuthError",
    "AriBadRequest",
    "AriConflict",
    "AriError",
    "AriForbidden",
    "AriHttpError",
    "AriMethodNotAllowed",
    "AriNotFound",
    "AriPreconditionFailed",
    "AriProtocolError",
    "AriServerError",
    "AriTimeout",
    "AriUnavailable",
    "AriUnprocessable",
    "error_for_status",
]


class AriError(Exception):
    """Base of every ARI failure that is not a programming error."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.path = path


class AriHttpError(AriError):
    """Asterisk answered with a 4xx/5xx status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"ARI {method} {path} -> {status}: {message}", method=method, path=path)
        self.status = status
        self.message = message


class AriBadRequest(AriHttpError):
    """400: a missing or invalid parameter (bad hangup reason, bad snoop direction, bad JSON...)."""


class AriAuthError(AriHttpError):
    """401: wrong ARI user or password."""


class AriForbidden(AriHttpError):
    """403."""


class AriNotFound(AriHttpError):
    """404: the channel, bridge, playback, recording, variable or application does not exist."""


class AriMethodNotAllowed(AriHttpError):
    """405: the resource exists but not with this method."""


class AriConflict(AriHttpError):
    """409: the resource is in the wrong state (not in Stasis, not Down, id already exists...)."""


class AriPreconditionFailed(AriHttpError):
    """412: the channel is in an invalid state (e.g. created but never dialled)."""


class AriUnprocessable(AriHttpError):
    """422: the request names something unusable (channel not in Stasis / not in this bridge,
    unknown recording format, event source not subscribed...)."""


class AriServerError(AriHttpError):
    """5xx: Asterisk failed (allocation failed, missing recording directory, bad bridge type...)."""


class AriTimeout(AriError):
    """No complete answer within the client's timeout."""


class AriUnavailable(AriError):
    """Could not reach Asterisk (connection refused, reset, DNS...)."""


_BY_STATUS: dict[int, type[AriHttpError]] = {
    400: AriBadRequest,
    401: AriAuthError,
    403: AriForbidden,
    404: AriNotFound,
    405: AriMethodNotAllowed,
    409: AriConflict,
    412: AriPreconditionFailed,
    422: AriUnprocessable,
}


def error_for_status(method: str, path: str, status: int, message: str) -> AriHttpError:
    """The exception for an HTTP error status (pure: used by the client and by tests)."""
    cls = _BY_STATUS.get(status) or (AriServerError if status >= 500 else AriHttpError)
    return cls(method, path, status, message)
