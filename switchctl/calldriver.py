"""Place and steer test/demo calls over inbound ESL only, so the same code drives the simulator and a real FreeSWITCH.

```python
driver = EslCallDriver(InboundClient(host, port, password, events=DRIVER_EVENTS, event_format="plain"))
await driver.start()
outcome = await driver.call("9000", presses=["1", "9"], caller="1001", timeout=60)
await driver.close()
```

A call is `bgapi originate {origination_uuid=<ours>,origination_caller_id_number=<caller>}loopback/<dial>/<context>
&park` (captures: freeswitch/inbound_plain, outbound_loopback; mod_loopback.c). FreeSWITCH then has two legs:

- the *caller leg*, `loopback/<dial>-a`: the originated channel, parked. Its uuid is ours (origination_uuid), so
  it is known before any event; DTMF sent to it (`uuid_send_dtmf`) is received by the other leg, and killing it
  (`uuid_kill`) is the caller hanging up.
- the *call leg*, `loopback/<dial>-b`: runs the dialplan for <dial>, i.e. reaches the controller's outbound
  socket. Found by its CHANNEL_CREATE, whose `variable_other_loopback_leg_uuid` is the caller leg's uuid.
  Everything the outcome reports about "the call" (apps, events, hangup cause, billsec) is this leg's.

Presses: one entry per digit-collecting application (`play_and_get_digits`, `read`) the call leg starts, sent
`press_delay` seconds after its CHANNEL_EXECUTE: digits (`uuid_send_dtmf`, `w`/`W` pauses and `@ms` allowed),
"-" or "" for silence, "hangup" for the caller hanging up. Applications beyond the list get silence.
Several calls may run at once on one driver: events are routed by channel uuid.
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuidlib
from dataclasses import dataclass, field

from switchctl.esl.codec import Event
from switchctl.esl.errors import ESLError
from switchctl.esl.inbound import InboundClient

# What the driver subscribes to (`event plain ...`). DTMF and CHANNEL_ANSWER are optional extras: with them the
# outcome lists the digits the call leg received and has CHANNEL_ANSWER in `events`.
REQUIRED_EVENTS = ("CHANNEL_CREATE", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP_COMPLETE",
                   "BACKGROUND_JOB")
DRIVER_EVENTS = REQUIRED_EVENTS + ("CHANNEL_ANSWER", "DTMF")
COLLECT_APPS = frozenset({"play_and_get_digits", "read"})
PRESS_DELAY = 0.2  # seconds after the collecting app's CHANNEL_EXECUTE: inside its prompt, like a caller
SILENCE = ("-", "")
HANGUP = "hangup"
_DTMF_PRESS = re.compile(r"^[0-9A-Da-d#*wW]+(@\d+)?(\+[0-9A-Da-d#*wW]+(@\d+)?)*$")
_UNSAFE_VALUE = re.compile(r"[,{}\[\]\s'\"]")


class CallDriverTimeout(asyncio.TimeoutError):
    """The call did not end within its timeout; `outcome` holds what was seen (the caller leg was killed)."""

    def __init__(self, message: str, outcome: CallOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class CallOutcome:
    """What one driven call did, from FreeSWITCH's events."""

    dial: str
    caller_uuid: str  # the originated leg, loopback/<dial>-a
    uuid: str | None = None  # the leg that ran the dialplan (loopback/<dial>-b); None if it never existed
    originate: str | None = None  # the originate's result: "+OK <caller_uuid>" or "-ERR <cause>"
    hangup_cause: str | None = None  # the call leg's CHANNEL_HANGUP_COMPLETE Hangup-Cause
    caller_hangup_cause: str | None = None
    answered: bool = False
    billsec: int | None = None  # whole seconds, truncated as FreeSWITCH does
    billusec: int | None = None
    # (app, arg, Application-Response) of every CHANNEL_EXECUTE_COMPLETE of the call leg, in order, including the
    # dialplan's own `socket` (its EXECUTE_COMPLETE comes when the controller lets go): exactly what the switch ran,
    # the same list as the simulator's CallResult.apps.
    apps: list[tuple[str, str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # the call leg's event names, in order
    caller_events: list[str] = field(default_factory=list)
    dtmf: str = ""  # digits the call leg dequeued (DTMF events, when subscribed)
    presses_used: int = 0  # collecting applications seen (each consumed one entry of `presses`)
    press_errors: list[str] = field(default_factory=list)  # uuid_send_dtmf / uuid_kill failures
    variables: dict[str, str] = field(default_factory=dict)  # the call leg's variables at CHANNEL_HANGUP_COMPLETE

    @property
    def ok(self) -> bool:
        return bool(self.originate and self.originate.startswith("+OK"))


class _Call:
    """Book-keeping of one call in flight."""

    def __init__(self, outcome: CallOutcome, presses: list[str]) -> None:
        self.outcome = outcome
        self.presses = list(presses)
        self.caller_done = False
        self.leg_done = False
        self.finished = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[None]] = set()

    def check_finished(self) -> None:
        outcome = self.outcome
        failed_early = outcome.originate is not None and not outcome.ok and not outcome.caller_events
        over = self.caller_done and (outcome.uuid is None or self.leg_done)
        if (over or failed_early) and not self.finished.done():
            self.finished.set_result(None)


class EslCallDriver:
    """Places loopback calls and plays their callers, using only inbound ESL commands FreeSWITCH has."""

    def __init__(self, client: InboundClient, *, context: str = "default", press_delay: float = PRESS_DELAY) -> None:
        self.client = client
        self.context = context
        self.press_delay = press_delay
        self._by_caller: dict[str, _Call] = {}
        self._by_leg: dict[str, _Call] = {}
        self._started = False

    async def start(self) -> None:
        """Check the client's subscription, connect it, start routing its events."""
        subscribed = set(self.client.events)
        missing = [name for name in REQUIRED_EVENTS if name not in subscribed]
        if missing and "ALL" not in subscribed:
            raise ValueError(f"EslCallDriver needs the inbound client subscribed to {' '.join(REQUIRED_EVENTS)}; "
                             f"missing: {' '.join(missing)} (use events=calldriver.DRIVER_EVENTS)")
        if not self._started:
            self.client.add_event_handler(self._on_event)
            self._started = True
        await self.client.connect()

    async def close(self) -> None:
        """Kill the caller legs of calls still in flight, then close the client."""
        for call in list(self._by_caller.values()):
            for task in call.tasks:
                task.cancel()
            if not call.caller_done and self.client.connected:
                try:
                    await self.client.api(f"uuid_kill {call.outcome.caller_uuid}", check=False, timeout=5.0)
                except ESLError:
                    pass
        self._by_caller.clear()
        self._by_leg.clear()
        await self.client.close()

    async def call(self, dial: str, presses: list[str] | tuple[str, ...] = (), *, caller: str = "1001",
                   caller_name: str | None = None, timeout: float = 60.0,
                   variables: dict[str, str] | None = None) -> CallOutcome:
        """Call `dial` from `caller`, play `presses`, return once both legs are hung up.

        Raises CallDriverTimeout (after killing the caller leg) if that takes longer than `timeout` seconds.
        """
        if not self._started:
            raise RuntimeError("EslCallDriver.start() has not been awaited")
        for press in presses:
            if press not in SILENCE and press.lower() != HANGUP and not _DTMF_PRESS.match(press):
                raise ValueError(f"press {press!r}: digits 0-9 A-D # * (w/W pauses, @ms), '-' or 'hangup'")
        caller_uuid = str(uuidlib.uuid4())
        channel_vars = {"origination_uuid": caller_uuid, "origination_caller_id_number": caller}
        if caller_name is not None:
            channel_vars["origination_caller_id_name"] = caller_name
        channel_vars.update(variables or {})
        for name, value in channel_vars.items():
            if _UNSAFE_VALUE.search(value) or _UNSAFE_VALUE.search(name) or "=" in name:
                raise ValueError(f"originate variable {name}={value!r}: no spaces, commas, quotes or brackets")
        if _UNSAFE_VALUE.search(dial) or "/" in dial:
            raise ValueError(f"dial {dial!r}: a plain destination number")
        call = _Call(CallOutcome(dial=dial, caller_uuid=caller_uuid), list(presses))
        self._by_caller[caller_uuid] = call
        assignments = ",".join(f"{name}={value}" for name, value in channel_vars.items())
        command = f"originate {{{assignments}}}loopback/{dial}/{self.context} &park"
        originate = asyncio.get_running_loop().create_task(self._originate(call, command, timeout))
        try:
            await asyncio.wait_for(asyncio.shield(call.finished), timeout)
        except TimeoutError:
            await self._kill(call.outcome.caller_uuid, call)
            raise CallDriverTimeout(f"call to {dial} (caller leg {caller_uuid}) did not end within {timeout:g} s; "
                                    f"events seen: {' '.join(call.outcome.events) or 'none'}", call.outcome) from None
        finally:
            for task in call.tasks:
                task.cancel()
            self._forget(call)
            if not originate.done():
                originate.cancel()
        return call.outcome

    # --- internals -------------------------------------------------------------------------------------------
    async def _originate(self, call: _Call, command: str, timeout: float) -> None:
        try:
            body = await self.client.bgapi(command, timeout=timeout, check=False)
        except ESLError as error:
            body = f"-ERR {error}"
        call.outcome.originate = body.strip()
        call.check_finished()

    def _forget(self, call: _Call) -> None:
        self._by_caller.pop(call.outcome.caller_uuid, None)
        if call.outcome.uuid is not None:
            self._by_leg.pop(call.outcome.uuid, None)

    def _on_event(self, event: Event) -> None:
        uuid = event.unique_id
        if not uuid:
            return
        name = event.name
        call = self._by_caller.get(uuid)
        if call is not None:
            self._on_caller_event(call, name, event)
            return
        call = self._by_leg.get(uuid)
        if call is None and name == "CHANNEL_CREATE":
            call = self._by_caller.get(event.variable("other_loopback_leg_uuid") or "")
            if call is None or call.outcome.uuid is not None:
                return
            call.outcome.uuid = uuid
            self._by_leg[uuid] = call
        if call is not None:
            self._on_leg_event(call, name, event)

    def _on_caller_event(self, call: _Call, name: str, event: Event) -> None:
        call.outcome.caller_events.append(name)
        if name == "CHANNEL_HANGUP_COMPLETE":
            call.outcome.caller_hangup_cause = event.get("Hangup-Cause")
            call.caller_done = True
            call.check_finished()

    def _on_leg_event(self, call: _Call, name: str, event: Event) -> None:
        outcome = call.outcome
        outcome.events.append(name)
        if name == "CHANNEL_EXECUTE":
            app = event.get("Application") or ""
            if app in COLLECT_APPS:
                press = call.presses.pop(0) if call.presses else "-"
                outcome.presses_used += 1
                if press not in SILENCE:
                    task = asyncio.get_running_loop().create_task(self._press(call, press))
                    call.tasks.add(task)
                    task.add_done_callback(call.tasks.discard)
        elif name == "CHANNEL_EXECUTE_COMPLETE":
            outcome.apps.append((_text(event.get("Application")), _text(event.get("Application-Data")),
                                 _text(event.get("Application-Response"))))
        elif name == "DTMF":
            outcome.dtmf += event.get("DTMF-Digit") or ""
        elif name == "CHANNEL_HANGUP_COMPLETE":
            outcome.hangup_cause = event.get("Hangup-Cause")
            outcome.variables = {key[len("variable_"):]: value for key, value in event.headers.items()
                                 if key.startswith("variable_")}
            answered_us = event.get("Caller-Channel-Answered-Time") or "0"
            outcome.answered = answered_us.isdigit() and int(answered_us) > 0
            outcome.billsec = _int(outcome.variables.get("billsec"))
            outcome.billusec = _int(outcome.variables.get("billusec"))
            call.leg_done = True
            call.check_finished()

    async def _press(self, call: _Call, press: str) -> None:
        await asyncio.sleep(self.press_delay)
        if press.lower() == HANGUP:
            await self._kill(call.outcome.caller_uuid, call)
            return
        try:
            body = await self.client.bgapi(f"uuid_send_dtmf {call.outcome.caller_uuid} {press}", check=False)
        except ESLError as error:
            body = f"-ERR {error}"
        if not body.startswith("+OK"):
            call.outcome.press_errors.append(f"uuid_send_dtmf {press}: {body.strip()}")

    async def _kill(self, uuid: str, call: _Call) -> None:
        try:
            body = await self.client.bgapi(f"uuid_kill {uuid} NORMAL_CLEARING", check=False, timeout=10.0)
        except ESLError as error:
            body = f"-ERR {error}"
        if not body.startswith("+OK"):
            call.outcome.press_errors.append(f"uuid_kill: {body.strip()}")


def _text(value: str | None) -> str:
    """A header's text; FreeSWITCH writes an empty value as `_undef_` in plain events (switch_event.c)."""
    return "" if value in (None, "_undef_") else value


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


__all__ = ["DRIVER_EVENTS", "REQUIRED_EVENTS", "CallDriverTimeout", "CallOutcome", "EslCallDriver"]
