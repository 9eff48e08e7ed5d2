"""FreeSWITCH: find the calls live on the switch and take them over after a controller restart.

A call's own outbound socket died with the controller that served it; the channel lives on (its
bridge runs in the channel's park loop, which checks the socket only between applications, so a
bridged call goes on talking). What is left to reach it is the inbound connection (InboundClient):
- `live_calls`: `show channels as json` (the uuids) + `uuid_dump <uuid> json` per channel (its
  variables, `Caller-Channel-Answered-Time`, `variable_bridge_to`), captures s6_api.
- an adopted call: hangup = `uuid_kill <uuid> <cause>`, schedule_hangup = `sched_del <uuid>` +
  `sched_hangup +N <uuid> <cause>` (replaces the armed net, as FreeSwitchCall does), announce =
  `uuid_broadcast <uuid> <prompt> aleg`, get_variable = `uuid_getvar`, wait_hangup = the channel's
  CHANNEL_HANGUP_COMPLETE on the inbound connection (its answer and hangup µs come with it).

The inbound connection is subscribed to CHANNEL_HANGUP_COMPLETE only while adopted calls exist
(every channel's hangup event is 2-9 KB; a controller with no adopted call should not pay for it).
A hangup whose event was missed (the connection was down when it came) is found by polling
`uuid_exists`; such a call ends without the switch's times (`ended_at_us` 0): billing then leaves
it to the CDR importer, which has the switch's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re

import orjson

from ..esl.codec import Event
from ..esl.connection import ESLConnection
from ..esl.errors import ESLError
from ..esl.inbound import InboundClient
from .call import (
    AdoptedCall,
    CallError,
    CallGone,
    CallInfo,
    LiveChannel,
)

log = logging.getLogger("switchctl.freeswitch.adopt")

HANGUP_EVENT = "CHANNEL_HANGUP_COMPLETE"
POLL_SECONDS = 2.0  # how often a waiting adopted call checks that it still exists
LATE_EVENT_SECONDS = 0.5  # after uuid_exists said false: how long its hangup event may still take
HANGUP_CONFIRM_SECONDS = 5.0
_NO_SPACE = re.compile(r"\s")
_VARIABLE = "variable_"


# -- pure parsing (captures s6_api) ---------------------------------------------------------------
def channel_uuids(show_body: str) -> list[str]:
    """The uuids in a `show channels as json` body (`{"row_count": 0}` when there are none)."""
    text = show_body.strip()
    if not text.startswith("{"):
        raise CallError(f"show channels as json: unexpected reply {text[:80]!r}")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CallError(f"show channels as json: not JSON ({exc})") from None
    return [row["uuid"] for row in data.get("rows", ()) if isinstance(row, dict) and row.get("uuid")]


def _us(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def live_channel_from_dump(body: str, switch: str) -> LiveChannel | None:
    """A `uuid_dump <uuid> json` body as a LiveChannel (None: the channel is gone, `-ERR ...`)."""
    text = body.strip()
    if not text.startswith("{"):
        return None
    headers = orjson.loads(text)
    variables = {key[len(_VARIABLE):]: str(value) for key, value in headers.items()
                 if key.startswith(_VARIABLE)}
    bridged = variables.get("bridge_to") or variables.get("signal_bond") or None
    return LiveChannel(
        uuid=str(headers.get("Unique-ID") or variables.get("uuid") or ""),
        switch=switch,
        answered_at_us=_us(headers.get("Caller-Channel-Answered-Time")),
        bridged_to=bridged,
        variables=variables,
    )


# -- the adopter (one per switch) ------------------------------------------------------------------

def sched_hangup_time(seconds: float, at_us: int | None) -> str:
    """sched_hangup's time argument: an absolute epoch second when the instant is known (the first
    whole second at or after it: FreeSWITCH runs the task once its whole-second clock reaches it,
    whenever the command arrived), else `+N` whole seconds from floor(arrival), never early.

    mod_commands reads `sec = atol(argv[0] + 1)` and hangs up AT ONCE when it is 0, for the
    absolute form too: an epoch second whose digits after the first are all zeros (e.g.
    2000000000) would cut the call now; such a second is armed one later."""
    if at_us is None:
        return f"+{max(1, math.ceil(seconds))}"
    epoch_s = -(-at_us // 1_000_000)
    if int(str(epoch_s)[1:] or "0") == 0:
        epoch_s += 1
    return str(epoch_s)

class FreeSwitchAdopter:
    """Lists a FreeSWITCH's live channels and hands out adopted calls over its inbound connection."""

    def __init__(self, switch: str, client: InboundClient) -> None:
        self.switch = switch
        self.client = client
        self._calls: dict[str, FreeSwitchAdoptedCall] = {}
        self._subscribed: ESLConnection | None = None
        self._sub_lock = asyncio.Lock()
        # others that need CHANNEL_HANGUP_COMPLETE on this connection (the leg tracker): while any is
        # here the subscription stays
        self.hangup_users: set[object] = set()
        client.add_event_handler(self._on_event)

    async def live_calls(self) -> list[LiveChannel]:
        try:
            uuids = channel_uuids(await self.client.api("show channels as json", check=False))
            channels = []
            for uuid in uuids:
                channel = live_channel_from_dump(await self.client.api(f"uuid_dump {uuid} json", check=False),
                                                 self.switch)
                if channel is not None:  # hung up between the two commands
                    channels.append(channel)
        except ESLError as exc:
            raise CallError(f"{self.switch}: live channels not read: {exc}") from None
        return channels

    async def adopt(self, uuid: str) -> FreeSwitchAdoptedCall:
        if not uuid or _NO_SPACE.search(uuid):
            raise CallError(f"adopt: bad uuid {uuid!r}")
        existing = self._calls.get(uuid)
        if existing is not None:
            return existing
        call = FreeSwitchAdoptedCall(self, CallInfo(uuid=uuid, switch=self.switch, answered=True))
        self._calls[uuid] = call
        try:
            await self.ensure_subscribed()  # before the dump: a hangup after it is not missed
            dump = await self.client.api(f"uuid_dump {uuid} json", check=False)
        except ESLError as exc:
            self._calls.pop(uuid, None)
            raise CallError(f"adopt {uuid}: {exc}") from None
        channel = live_channel_from_dump(dump, self.switch)
        if channel is None:
            if call.hangup_cause is None:  # no event seen: it was gone before we subscribed
                self._calls.pop(uuid, None)
                raise CallGone("NORMAL_CLEARING", f"adopt {uuid}: no such channel on {self.switch}")
            return call
        call.info.variables.update(channel.variables)
        call.info.caller_number = channel.variables.get("caller_id_number", "")
        call.info.destination = channel.variables.get("destination_number", "")
        call.answered_at_us = channel.answered_at_us
        return call

    async def ensure_subscribed(self) -> None:
        """CHANNEL_HANGUP_COMPLETE on the current inbound connection (again after a reconnect)."""
        async with self._sub_lock:
            conn = self.client.connection
            if conn is None or conn is self._subscribed:
                return
            await self.client.send(f"event {self.client.event_format} {HANGUP_EVENT}")
            self._subscribed = conn

    async def _forget(self, call: FreeSwitchAdoptedCall) -> None:
        if self._calls.get(call.uuid) is call:
            del self._calls[call.uuid]
        if self._calls or self.hangup_users or HANGUP_EVENT in self.client.events:
            return
        async with self._sub_lock:
            conn, self._subscribed = self._subscribed, None
            if conn is not None and conn is self.client.connection:
                with contextlib.suppress(ESLError):
                    await self.client.send(f"nixevent {HANGUP_EVENT}")

    def _on_event(self, event: Event) -> None:
        if event.name != HANGUP_EVENT:
            return
        call = self._calls.get(event.unique_id or "")
        if call is not None:
            call._hung_up(event)


class FreeSwitchAdoptedCall(AdoptedCall):
    """A live FreeSWITCH channel driven over the inbound connection (see module)."""

    def __init__(self, adopter: FreeSwitchAdopter, info: CallInfo) -> None:
        self.adopter = adopter
        self.info = info
        self.answered_at_us = 0
        self.ended_at_us = 0
        self._cause: str | None = None
        self._ended = asyncio.Event()

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    def _hung_up(self, event: Event) -> None:
        if self._ended.is_set():
            return
        self._cause = event.get("Hangup-Cause") or event.variable("hangup_cause") or "NORMAL_CLEARING"
        self.answered_at_us = _us(event.get("Caller-Channel-Answered-Time")) or self.answered_at_us
        self.ended_at_us = _us(event.get("Caller-Channel-Hangup-Time")) or _us(event.get("Event-Date-Timestamp"))
        self._ended.set()

    def _gone_without_record(self, cause: str = "NORMAL_CLEARING") -> None:
        if not self._ended.is_set():
            self._cause = cause
            self.ended_at_us = 0
            self._ended.set()

    async def _api(self, command: str) -> str:
        try:
            return await self.adopter.client.api(command, check=False)
        except ESLError as exc:
            raise CallError(f"{command.split(' ', 1)[0]} {self.uuid}: {exc}") from None

    def _check_reply(self, command: str, reply: str) -> None:
        if reply.startswith("+OK"):
            return
        if "No such channel" in reply or "Cannot locate session" in reply:
            raise CallGone(self._cause or "NORMAL_CLEARING", f"{command} {self.uuid}: {reply.strip()}")
        raise CallError(f"{command} {self.uuid}: {reply.strip()}")

    # -- what an adopted call supports -------------------------------------------------------------
    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        if self._ended.is_set():
            return
        if _NO_SPACE.search(cause):
            raise CallError(f"hangup: bad cause '{cause}'")
        reply = await self._api(f"uuid_kill {self.uuid} {cause}")
        if not reply.startswith("+OK") and ("No such channel" in reply or "Cannot locate" in reply):
            await self._settle()
            return
        self._check_reply("uuid_kill", reply)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), HANGUP_CONFIRM_SECONDS)

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        if self._ended.is_set():
            raise CallGone(self._cause or "NORMAL_CLEARING")
        if _NO_SPACE.search(cause):
            raise CallError(f"schedule_hangup: bad cause '{cause}'")
        await self._api(f"sched_del {self.uuid}")  # sched_hangup adds a task: replace the armed one
        reply = await self._api(f"sched_hangup {sched_hangup_time(seconds, at_us)} {self.uuid} {cause}")
        self._check_reply("sched_hangup", reply)

    async def announce(self, prompt: str) -> None:
        if self._ended.is_set():
            raise CallGone(self._cause or "NORMAL_CLEARING")
        if not prompt or _NO_SPACE.search(prompt):
            raise CallError(f"announce: bad prompt '{prompt}'")
        self._check_reply("uuid_broadcast", await self._api(f"uuid_broadcast {self.uuid} {prompt} aleg"))

    async def get_variable(self, name: str) -> str | None:
        if self._ended.is_set():
            return self.info.variables.get(name)
        value = await self._api(f"uuid_getvar {self.uuid} {name}")
        if value.startswith("-ERR"):
            if "No such channel" in value:
                return self.info.variables.get(name)
            raise CallError(f"uuid_getvar {self.uuid} {name}: {value.strip()}")
        return None if value == "_undef_" else value

    async def wait_hangup(self) -> str:
        """Until CHANNEL_HANGUP_COMPLETE; checks every POLL_SECONDS that the channel still exists
        (and that the subscription survived a reconnect)."""
        try:
            while not self._ended.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), POLL_SECONDS)
                    break
                with contextlib.suppress(ESLError, CallError):
                    await self.adopter.ensure_subscribed()
                    if (await self._api(f"uuid_exists {self.uuid}")).strip() == "false":
                        await self._settle()
        finally:
            if self._ended.is_set():
                await self.adopter._forget(self)
        assert self._cause is not None
        return self._cause

    async def release(self) -> None:
        await self.adopter._forget(self)

    async def _settle(self) -> None:
        """The channel is gone: give its hangup event a moment (it may follow the api reply)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), LATE_EVENT_SECONDS)
        self._gone_without_record()
