"""The transfer feature: the flows' `CallTransfers` hook plus the console operations.

`TransferService.dial` runs a flow's dial as a conversation (conversation.py) keyed by the caller's
uuid, alive while the dial hook runs. Consoles list conversations, ask for transfers (`request`) and
add call data (`set_data`); the answering parties do the same with feature codes. Everything that
happens to the caller happens in the caller's own coroutine: requests are checked here (a request
that cannot be done raises TransferError and changes nothing) and queued for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Any

from switchctl.events import EventBus
from switchctl.features.transfer.calldata import check_data
from switchctl.features.transfer.codes import ACTIONS, TRANSFER_ACTIONS
from switchctl.features.transfer.conversation import Conversation
from switchctl.features.transfer.errors import TransferError
from switchctl.features.transfer.options import TransferOptions
from switchctl.features.transfer.routes import TransferDestination, resolve_route
from switchctl.flows.hooks import DialContext, TransferredDial
from switchctl.switch.call import Call, CallError, DialSpec, Switch

log = logging.getLogger(__name__)

__all__ = ["TransferError", "TransferService"]


class TransferService:
    """Implements flows.hooks.CallTransfers. `switches`: the site's switches by name (a call's
    `info.switch`); `flows`: the names of the loaded flows a blind transfer may send a caller to."""

    def __init__(self, switches: Mapping[str, Switch], options: TransferOptions, *,
                 events: EventBus | None = None, flows: Collection[str] = ()) -> None:
        self._switches = switches
        self.options = options
        self._bus = events
        self._flows = frozenset(flows)
        self._conversations: dict[str, Conversation] = {}
        self._without_caller: set[asyncio.Task[None]] = set()  # consultations the caller left (Conversation.run)

    def set_flows(self, flows: Collection[str]) -> None:
        """The loaded flows changed (a reload): transfers to flows check against these names."""
        self._flows = frozenset(flows)

    # -- the flows' hook -------------------------------------------------------------------------

    async def dial(self, call: Call, spec: DialSpec, context: DialContext) -> TransferredDial:
        switch = self._switches.get(call.info.switch)
        if switch is None:
            log.warning("call %s: switch '%s' unknown to the transfer feature: plain dial",
                        call.uuid, call.info.switch)
            return TransferredDial(result=await call.dial(spec))
        if call.uuid in self._conversations:
            raise CallError(f"call {call.uuid} is already in a transferable dial")
        conversation = Conversation(call, switch, self.options, context,
                                    publish=self._publish, resolve=self._destination)
        self._conversations[call.uuid] = conversation
        try:
            return await conversation.run(spec)
        finally:
            rest = conversation.without_caller
            if rest is not None and not rest.done():
                # The caller left a consultation that goes on: consoles still see it until it ends.
                self._without_caller.add(rest)
                rest.add_done_callback(lambda task, uuid=call.uuid, c=conversation: self._ended(task, uuid, c))
            elif self._conversations.get(call.uuid) is conversation:
                del self._conversations[call.uuid]

    def _ended(self, task: asyncio.Task[None], uuid: str, conversation: Conversation) -> None:
        self._without_caller.discard(task)
        if self._conversations.get(uuid) is conversation:
            del self._conversations[uuid]

    async def close(self) -> None:
        """The controller stops: consultations whose caller already left are ended (their legs hung
        up: with no controller, nobody would hang up the one left when the other leaves)."""
        tasks = list(self._without_caller)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- consoles ----------------------------------------------------------------------------------

    def conversations(self) -> list[dict[str, Any]]:
        return [c.view() for c in self._conversations.values()]

    def conversation(self, caller_uuid: str) -> dict[str, Any] | None:
        conversation = self._conversations.get(caller_uuid)
        return conversation.view() if conversation else None

    async def request(self, caller_uuid: str, action: str, to: str | None = None) -> dict[str, Any]:
        """Start or steer a transfer of call `caller_uuid`; returns the conversation's view once the
        caller's coroutine has carried it out. `to`: the dialled digits (blind, attended)."""
        conversation = self._get(caller_uuid)
        if action not in ACTIONS:
            raise TransferError(f"unknown transfer action '{action}': expected blind, attended, "
                                "complete, cancel or three_way")
        conversation.check(action)  # state first: "no consultation" reads better than a route error
        future = conversation.submit(action, self._destination(action, to))
        return await asyncio.shield(future)  # a console that goes away does not undo a transfer

    def set_data(self, caller_uuid: str, values: Mapping[str, str]) -> dict[str, Any]:
        """Add call data (customer id, notes...): it follows the call to every later leg and pop."""
        conversation = self._get(caller_uuid)
        try:
            checked = check_data(values)
        except ValueError as exc:
            raise TransferError(str(exc)) from None
        return conversation.set_data(checked)

    # -- internals ------------------------------------------------------------------------------------

    def _get(self, caller_uuid: str) -> Conversation:
        conversation = self._conversations.get(caller_uuid)
        if conversation is None:
            raise TransferError(f"no transferable call '{caller_uuid}'")
        return conversation

    def _destination(self, action: str, to: str | None) -> TransferDestination | None:
        if action not in TRANSFER_ACTIONS:
            return None
        if not to:
            raise TransferError(f"a {action} transfer needs a number to transfer to")
        destination = resolve_route(self.options.routes, to)
        if destination.flow is not None:
            if action != "blind":
                raise TransferError(f"'{to}' goes to flow '{destination.flow}': only a blind transfer "
                                    "can send the caller to a flow")
            if destination.flow not in self._flows:
                raise TransferError(f"'{to}' goes to flow '{destination.flow}', which is not loaded")
        return destination

    def _publish(self, kind: str, payload: Mapping[str, Any]) -> None:
        if self._bus is not None:
            self._bus.publish(kind, payload)
