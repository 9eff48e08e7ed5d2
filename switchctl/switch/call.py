"""The one interface flows and features see: a `Call` on some `Switch`.

Each backend (FreeSWITCH over ESL, Asterisk over ARI) maps these operations onto its switch. A
flow or feature written against this module runs on both; it never imports a backend.

Conventions shared by every backend:
- Every operation is a coroutine that returns when the switch reports the operation finished
  (FreeSWITCH: CHANNEL_EXECUTE_COMPLETE with our Application-UUID), not when the command was
  accepted.
- When the caller hangs up, the running operation and every later one raise `CallGone`, carrying
  the switch's hangup cause. A flow therefore never has to poll for a hangup.
- Hangup causes are Q.850 names as FreeSWITCH spells them (`NORMAL_CLEARING`, `USER_BUSY`,
  `NO_ANSWER`, `CALL_REJECTED`, `ALLOTTED_TIMEOUT`, ...); the Asterisk backend maps its numeric
  causes onto the same names.
- Prompts are strings the switch understands: a sound file path, `tone_stream://...`,
  `silence_stream://N`. Backends translate what they must.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class CallError(Exception):
    """An operation on a call failed on the switch (rejected command, unknown application...)."""


class CallGone(CallError):
    """The call hung up (or was lost) before or during the operation."""

    def __init__(self, cause: str = "NORMAL_CLEARING", message: str | None = None) -> None:
        super().__init__(message or f"call is gone ({cause})")
        self.cause = cause


class CollectOutcome(str, enum.Enum):
    OK = "ok"  # digits satisfied min/max and the pattern
    TIMEOUT = "timeout"  # nothing was pressed
    INVALID = "invalid"  # something was pressed but it failed min_digits or the pattern


@dataclass(frozen=True, slots=True)
class CollectResult:
    outcome: CollectOutcome
    digits: str = ""  # the accepted digits (OK) or what was pressed (INVALID); never the terminator
    terminator: str | None = None


@dataclass(frozen=True, slots=True)
class CollectSpec:
    """One try of digit collection: play the prompts, then wait for digits.

    `timeout` is how long to wait for the first digit after the prompts end, `inter_digit_timeout`
    between digits. Collection stops at `max_digits`, at a terminator, or at a timeout.
    `pattern` is a regular expression the whole input must match (fullmatch semantics).
    `invalid_prompt`, when set, is played by the switch after a failed try (FreeSWITCH's
    play_and_get_digits does this for timeouts too; see captures s2).
    """

    prompts: Sequence[str] = ()
    min_digits: int = 1
    max_digits: int = 1
    timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    terminators: str = "#"
    pattern: str | None = None
    invalid_prompt: str | None = None


class SayKind(str, enum.Enum):
    NUMBER = "number"  # 1234 -> "one thousand two hundred thirty four"
    DIGITS = "digits"  # 1234 -> "one two three four"


@dataclass
class CallInfo:
    """What the switch told us about the call when it reached us."""

    uuid: str
    switch: str  # the site's name for the switch
    caller_number: str = ""
    caller_name: str = ""
    destination: str = ""
    channel_name: str = ""
    answered: bool = False
    variables: dict[str, str] = field(default_factory=dict)


class Call(abc.ABC):
    """A live call under our control."""

    info: CallInfo

    @property
    def uuid(self) -> str:
        return self.info.uuid

    @property
    def variables(self) -> Mapping[str, str]:
        """Channel variables as last reported by the switch (read-only view)."""
        return self.info.variables

    @property
    @abc.abstractmethod
    def hangup_cause(self) -> str | None:
        """The cause once the call has hung up, else None."""

    @abc.abstractmethod
    async def answer(self) -> None: ...

    @abc.abstractmethod
    async def play(self, prompts: Sequence[str]) -> None:
        """Play prompts in order; returns when the last one finished."""

    @abc.abstractmethod
    async def say(self, value: str, kind: SayKind, language: str = "en") -> None: ...

    @abc.abstractmethod
    async def collect(self, spec: CollectSpec) -> CollectResult:
        """One try of `spec`; the flow decides about retries."""

    @abc.abstractmethod
    async def transfer(self, extension: str, context: str | None = None) -> None:
        """Hand the call back to the switch's dialplan at `extension` (leaves our control)."""

    @abc.abstractmethod
    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up; returns once the switch confirmed the hangup. Idempotent."""

    @abc.abstractmethod
    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT") -> None:
        """Arm a switch-side hangup `seconds` from now (a safety net that works without us)."""

    @abc.abstractmethod
    async def set_variable(self, name: str, value: str) -> None: ...

    @abc.abstractmethod
    async def get_variable(self, name: str) -> str | None:
        """Read a channel variable from the switch (None when unset)."""

    @abc.abstractmethod
    async def wait_hangup(self) -> str:
        """Wait until the call has hung up; returns the cause."""


class Switch(abc.ABC):
    """A switch the controller drives: the channel-independent operations."""

    name: str
    kind: str  # "freeswitch" or "asterisk"

    @abc.abstractmethod
    async def api(self, command: str) -> str:
        """Run a switch management command and return its text output."""

    @abc.abstractmethod
    async def reload_config(self) -> str:
        """Make the switch re-read its configuration; raise CallError if it rejected it."""
