"""Asterisk REST Interface: typed models and events (pure), the REST client, the event stream.

Backends import from here: `AriClient` for REST, `AriEventStream` for events, `parse_event` and
the model classes, the `Ari*` errors, and `fs_cause_name`/`q850_code` to translate hangup causes
between Asterisk's Q.850 numbers and the FreeSWITCH names `switchctl.switch.call` uses.
"""

from .client import AriClient, media_uri_problem, tone_uri
from .errors import (
    AriAuthError,
    AriBadRequest,
    AriConflict,
    AriError,
    AriHttpError,
    AriMethodNotAllowed,
    AriNotFound,
    AriPreconditionFailed,
    AriProtocolError,
    AriServerError,
    AriTimeout,
    AriUnavailable,
    AriUnprocessable,
)
from .events import AriEventStream, Snapshot
from .models import Event, UnknownEvent, fs_cause_name, parse_event, q850_code

__all__ = [
    "AriAuthError",
    "AriBadRequest",
    "AriClient",
    "AriConflict",
    "AriError",
    "AriEventStream",
    "AriHttpError",
    "AriMethodNotAllowed",
    "AriNotFound",
    "AriPreconditionFailed",
    "AriProtocolError",
    "AriServerError",
    "AriTimeout",
    "AriUnavailable",
    "AriUnprocessable",
    "Event",
    "Snapshot",
    "UnknownEvent",
    "fs_cause_name",
    "media_uri_problem",
    "parse_event",
    "q850_code",
    "tone_uri",
]
