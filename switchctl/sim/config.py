"""What a simulated FreeSWITCH is configured with, and what a simulated caller does.

Plain data only: the engine (`engine.py`) reads these; tests and `switchctl flow test` build them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Route:
    """One dialplan extension: `pattern` (regex on the destination number, first match wins) runs `app arg`.

    `$1`..`$9` in `arg` are replaced by the pattern's groups, like FreeSWITCH's XML dialplan does.
    `app` is any application the simulator knows (`socket`, `bridge`, `park`, `playback`, ...).
    `context` restricts the route to one dialplan context (None: any).
    """

    pattern: str
    app: str
    arg: str = ""
    context: str | None = None

    def match(self, destination: str, context: str) -> str | None:
        """The expanded argument when this route takes `destination`, else None."""
        if self.context is not None and self.context != context:
            return None
        found = re.search(self.pattern, destination)
        if found is None:
            return None
        arg = self.arg
        groups = found.groups()
        for index in range(9, 0, -1):  # $10 does not exist in FreeSWITCH; replace $9 before $1
            value = groups[index - 1] if index <= len(groups) and groups[index - 1] is not None else ""
            arg = arg.replace(f"${index}", value)
        return arg


@dataclass(frozen=True)
class UserBehaviour:
    """How a directory user (`user/<id>`) behaves when the switch calls it (bridge, originate).

    `answer_after` seconds of ringing (media time, divided by media_speed); None never answers.
    `early_media`: the phone sends 183+SDP before answering (bridge happens at early media, s3 b6).
    `hangup_after`: the B leg hangs up N seconds after answering (s3 b1: the phone sent BYE 3 s after ACK).
    """

    registered: bool = True
    answer_after: float | None = 0.5
    busy: bool = False
    reject: bool = False
    early_media: bool = False
    hangup_after: float | None = None
    # registered, but nothing answers at the contact: sofia's own 503 -> NORMAL_TEMPORARY_FAILURE (s3 b5)
    reachable: bool = True
    # the far end presses keys (RFC 2833) after answering: ((seconds after answer, "*2201#"), ...)
    dtmf: tuple[tuple[float, str], ...] = ()


@dataclass(frozen=True)
class GatewayBehaviour:
    """A `sofia/gateway/<name>/...` destination. `reachable=False` gives sofia's internal 503 (s3 b5)."""

    reachable: bool = True
    answer_after: float | None = 0.5
    busy: bool = False
    hangup_after: float | None = None
    reject: bool = False  # 603 Decline -> CALL_REJECTED
    early_media: bool = False
    dtmf: tuple[tuple[float, str], ...] = ()  # as UserBehaviour.dtmf


@dataclass(frozen=True)
class SimConfig:
    esl_host: str = "127.0.0.1"
    esl_port: int = 0
    password: str = "ClueCon"
    acl: tuple[str, ...] = ("127.0.0.0/8",)
    dialplan: list[Route] = field(default_factory=list)
    users: dict[str, UserBehaviour] = field(default_factory=dict)
    gateways: dict[str, GatewayBehaviour] = field(default_factory=dict)
    media_speed: float = 1.0
    sessions_per_second: int = 30
    max_sessions: int = 1000
    conf_dir: Path | str | None = None
    file_seconds: float = 1.0
    # Files that `playback` reports as `FILE NOT FOUND`; tone/silence streams always exist.
    missing_files: frozenset[str] = frozenset()
    max_call_seconds: float = 300.0
    # FreeSWITCH waits 25 s for the first command on an outbound socket (mod_event_socket read_packet(..., 25)).
    outbound_first_command_timeout: float = 25.0
    # CHANNEL_PARK reached the outbound socket on 12 of 67 recorded calls (scenarios README): it is fired by the
    # socket app's park, racing with the client's `myevents`. False = the usual case (park before the
    # subscription, not seen); True = park fired after the first command that follows `connect`.
    park_after_first_command: bool = False
    hostname: str = "vm"
    domain: str = "127.0.0.1"
    sip_profile: str = "internal"
    context: str = "public"
    # mod_json_cdr's log-dir: every channel writes <cdr_dir>/<uuid>.cdr.json at reporting (None: no
    # files); with cdr_csv also a cdr_csv line in <cdr_dir>/cdr-csv/Master.csv (sim/cdrfiles.py)
    cdr_dir: Path | None = None
    cdr_csv: bool = False

    def __post_init__(self) -> None:
        if self.media_speed <= 0:
            raise ValueError(f"media_speed must be > 0, got {self.media_speed}")
        if self.esl_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the simulator binds loopback only, got esl_host={self.esl_host!r}")


# --- what the simulated caller does -------------------------------------------------------------------------


@dataclass(frozen=True)
class Press:
    """Send `digits` as RFC2833 DTMF while the next digit-collecting application plays its prompt."""

    digits: str

    def __post_init__(self) -> None:
        bad = [d for d in self.digits if d not in "0123456789*#ABCDabcd"]
        if bad:
            raise ValueError(f"Press: not DTMF digits: {''.join(bad)!r}")


@dataclass(frozen=True)
class Silence:
    """Press nothing during the next digit-collecting application."""


@dataclass(frozen=True)
class HangUp:
    """Hang up (caller BYE) during the next digit-collecting application."""


ScriptStep = Press | Silence | HangUp
