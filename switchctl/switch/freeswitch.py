"""The FreeSWITCH backend: a `Call` driven over one outbound event-socket session.

Each operation is one dialplan application sent with `sendmsg execute` and awaited through its
CHANNEL_EXECUTE_COMPLETE (matched by Application-UUID in the ESL layer). What the completion says
is read the way FreeSWITCH 1.11.1 really reports it (captures freeswitch-scenarios/s2, s3, s5):
- play_and_get_digits puts the digits only in `variable_<var>`; `read_result` is `success` even when
  every try failed the regex (then `<var>` is absent and `<var>_invalid` holds the last input),
  `failure` (not `timeout`) when nothing was pressed with min_digits >= 1, and `timeout` when the
  accepted digits were ended by the inter-digit timeout.
- After a hangup the running application still completes, with `Answer-State: hangup`: that is how
  an operation learns the caller is gone while it runs.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence

from ..esl.codec import Event
from ..esl.errors import ChannelHungUp, CommandError, ConnectionLost, ESLError, ReplyTimeout
from ..esl.inbound import InboundClient
from ..esl.outbound import OutboundSession
from .call import (
    Call,
    CallError,
    CallGone,
    CallInfo,
    CollectOutcome,
    CollectResult,
    CollectSpec,
    DialResult,
    DialSpec,
    SayKind,
    Switch,
)

log = logging.getLogger("switchctl.freeswitch")

# The events a call needs. Every channel event carries all channel variables (2-9 KB each), so
# each one subscribed costs. The flows need only application completions: digits arrive in
# play_and_get_digits' completion, and the hangup shows as an application completing with
# `Answer-State: hangup` + `Hangup-Cause`, at the latest the `socket` app's own completion (captures
# s1 v12: 40.5 KB per IVR call, against 46.9 KB with DTMF + CHANNEL_HANGUP and 95.6 KB for
# `myevents`). `filter Unique-ID` keeps other channels' events off this socket (s1 v11).
# Features that need more (DTMF feature codes, CDR fields) subscribe to it on their calls.
CALL_EVENTS: tuple[str, ...] = ("CHANNEL_EXECUTE_COMPLETE",)

# play_and_get_digits splits its argument on spaces, so no field may contain one.
_NO_SPACE = re.compile(r"\s")
_SILENCE = "silence_stream://250"
DIGITS_VAR = "switchctl_digits"


def call_info_from_channel_data(data: Event, switch_name: str) -> CallInfo:
    """CallInfo from the `connect` reply (a serialized CHANNEL_DATA event)."""
    variables = {
        key[9:]: value for key, value in data.headers.items() if key.startswith("variable_")
    }
    return CallInfo(
        uuid=data.get("Unique-ID") or data.get("Channel-Call-UUID") or "",
        switch=switch_name,
        caller_number=data.get("Caller-Caller-ID-Number") or "",
        caller_name=data.get("Caller-Caller-ID-Name") or "",
        destination=data.get("Caller-Destination-Number") or "",
        channel_name=data.get("Channel-Name") or "",
        answered=(data.get("Answer-State") == "answered"),
        variables=variables,
    )


def _prompt_arg(prompts: Sequence[str]) -> str:
    """One playback argument for several prompts (FreeSWITCH's file_string:// joins with '!')."""
    if not prompts:
        return _SILENCE
    if len(prompts) == 1:
        return prompts[0]
    return "file_string://" + "!".join(prompts)


class FreeSwitchCall(Call):
    """A call owned by one outbound socket session."""

    def __init__(self, session: OutboundSession, info: CallInfo) -> None:
        self.session = session
        self.info = info
        self._cause: str | None = None
        self._fresh: Event | None = None
        session.add_event_handler(self._on_event)

    # -- state ---------------------------------------------------------------------------------

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    @property
    def variables(self) -> Mapping[str, str]:
        # Every channel event carries all channel variables; fold in only the newest, on demand.
        if self._fresh is not None:
            for key, value in self._fresh.headers.items():
                if key.startswith("variable_"):
                    self.info.variables[key[9:]] = value
            self._fresh = None
        return self.info.variables

    def _on_event(self, event: Event) -> None:
        self._fresh = event
        if self._cause is None and (event.name == "CHANNEL_HANGUP" or event.get("Answer-State") == "hangup"):
            self._cause = event.get("Hangup-Cause") or "NORMAL_CLEARING"
        elif event.name == "CHANNEL_ANSWER" or event.get("Answer-State") == "answered":
            self.info.answered = True

    def _gone(self) -> CallGone:
        return CallGone(self._cause or self.session.hangup_cause or "NORMAL_CLEARING")

    async def _execute(self, app: str, arg: str = "") -> Event:
        if self._cause is not None or self.session.hungup:
            raise self._gone()
        try:
            done = await self.session.execute(app, arg)
        except ChannelHungUp as exc:
            self._cause = self._cause or exc.cause
            raise self._gone() from None
        except (ConnectionLost, ReplyTimeout) as exc:
            # The switch or the socket went away: for the flow the call is over either way.
            self._cause = self._cause or "SWITCH_CONNECTION_LOST"
            raise CallGone(self._cause, f"lost the switch during '{app}': {exc}") from None
        except CommandError as exc:
            raise CallError(f"{app} {arg}: {exc}") from None
        if done.get("Answer-State") == "hangup":
            self._cause = self._cause or done.get("Hangup-Cause") or "NORMAL_CLEARING"
            raise self._gone()
        return done

    # -- operations ----------------------------------------------------------------------------

    async def answer(self) -> None:
        await self._execute("answer")
        self.info.answered = True

    async def play(self, prompts: Sequence[str]) -> None:
        if not prompts:
            return
        # Several prompts play as one file_string:// playback: one application, one completion
        # event (~5 KB of channel variables each) instead of one per prompt.
        done = await self._execute("playback", _prompt_arg(prompts))
        if (done.get("Application-Response") or "") == "FILE NOT FOUND":
            raise CallError(f"prompt not found on the switch: {' '.join(prompts)}")

    async def say(self, value: str, kind: SayKind, language: str = "en") -> None:
        method = "pronounced" if kind is SayKind.NUMBER else "iterated"
        if not value.isdigit():
            raise CallError(f"say {kind.value}: '{value}' is not a string of digits")
        await self._execute("say", f"{language} number {method} {value}")

    async def collect(self, spec: CollectSpec) -> CollectResult:
        # One name for every collect: switch_ivr_read clears <var> and play_and_get_digits clears
        # <var>_invalid before each run (switch_ivr_play_say.c), and fresh names per collect would
        # pile up variables that every later event of the call carries.
        var = DIGITS_VAR
        pattern = f"^(?:{spec.pattern})$" if spec.pattern else r"^\d+$"
        prompt = _prompt_arg(spec.prompts)
        invalid = spec.invalid_prompt or _SILENCE
        fields = (prompt, invalid, pattern, spec.terminators or "none")
        for field in fields:
            if _NO_SPACE.search(field):
                raise CallError(f"play_and_get_digits cannot take spaces: '{field}'")
        arg = " ".join(
            str(x)
            for x in (
                spec.min_digits,
                spec.max_digits,
                1,  # one try: retries, greetings and counting belong to the flow
                int(spec.timeout * 1000),
                spec.terminators or "none",
                prompt,
                invalid,
                var,
                pattern,
                int(spec.inter_digit_timeout * 1000),
            )
        )
        done = await self._execute("play_and_get_digits", arg)
        digits = done.get(f"variable_{var}")
        bad = done.get(f"variable_{var}_invalid")
        result = done.get("variable_read_result")
        terminator = done.get("variable_read_terminator_used")
        if terminator in (None, "_undef_", ""):
            terminator = None
        # Digits ended by the inter-digit timeout leave read_result "timeout" although
        # play_and_get_digits accepted them (switch_ivr_read / play_and_get_digits in
        # switch_ivr_play_say.c); too few digits leave "failure" with the digits still set (s2 c6).
        if digits not in (None, "_undef_") and result in ("success", "timeout"):
            return CollectResult(CollectOutcome.OK, digits, terminator)
        if bad not in (None, "_undef_"):
            return CollectResult(CollectOutcome.INVALID, bad, terminator)
        if digits not in (None, "_undef_", ""):  # too few digits: read_result failure, digits kept
            return CollectResult(CollectOutcome.INVALID, digits, terminator)
        if spec.min_digits == 0 and result == "timeout":
            return CollectResult(CollectOutcome.OK, "", terminator)
        return CollectResult(CollectOutcome.TIMEOUT, "", terminator)

    async def dial(self, spec: DialSpec) -> DialResult:  # INTERIM: replaced by the dial work
        raise CallError("dial is not implemented on this backend yet")

    async def announce(self, prompt: str) -> None:  # INTERIM: replaced by the dial work
        raise CallError("announce is not implemented on this backend yet")

    async def transfer(self, extension: str, context: str | None = None) -> None:
        if _NO_SPACE.search(extension):
            raise CallError(f"transfer: bad extension '{extension}'")
        await self._execute("transfer", f"{extension} XML {context or 'default'}")

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._cause is not None or self.session.hungup:
            return
        try:
            await self.session.hangup(cause)
            self._cause = await self.session.wait_hangup()
        except ESLError:
            self._cause = self._cause or cause

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT") -> None:
        # sched_hangup takes whole seconds: never arm it earlier than asked.
        await self._execute("sched_hangup", f"+{max(1, math.ceil(seconds))} {cause}")

    async def set_variable(self, name: str, value: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise CallError(f"bad channel variable name '{name}'")
        await self._execute("set", f"{name}={value}")
        self.info.variables[name] = value

    async def get_variable(self, name: str) -> str | None:
        if self._cause is not None:
            return self.info.variables.get(name)
        try:
            value = await self.session.api(f"uuid_getvar {self.uuid} {name}")
        except CommandError:
            return None
        except (ConnectionLost, ReplyTimeout):
            raise self._gone() from None
        return None if value == "_undef_" else value

    async def wait_hangup(self) -> str:
        if self._cause is None:
            self._cause = await self.session.wait_hangup()
        return self._cause


class FreeSwitchSwitch(Switch):
    """Channel-independent operations over the inbound event socket."""

    kind = "freeswitch"

    def __init__(self, name: str, client: InboundClient) -> None:
        self.name = name
        self.client = client

    async def api(self, command: str) -> str:
        return await self.client.api(command)

    async def reload_config(self) -> str:
        reply = await self.client.api("reloadxml", check=False)
        # A malformed file still answers "+OK [[error near line N]: ...]" (captures s6).
        if "[Success]" not in reply:
            raise CallError(f"FreeSWITCH rejected the configuration: {reply.strip()}")
        return reply
