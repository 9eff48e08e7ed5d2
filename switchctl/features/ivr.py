"""The IVR feature: a call that reaches us runs the flow that claims its destination number."""

from __future__ import annotations

import logging

from ..flows import FlowRunner, FlowSet, FlowTrace
from ..switch.call import Call, CallError

log = logging.getLogger("switchctl.ivr")


class IvrFeature:
    """Dispatches `on_call` for every call handed to the controller."""

    def __init__(self, flows: FlowSet, runner: FlowRunner) -> None:
        self.flows = flows
        self.runner = runner

    async def on_call(self, call: Call) -> FlowTrace | None:
        match = self.flows.match(call.info.destination)
        if match is None:
            log.warning(
                "no flow answers this number",
                extra={"call": call.uuid, "destination": call.info.destination},
            )
            try:
                await call.hangup("UNALLOCATED_NUMBER")
            except CallError:
                pass
            return None
        flow, captures = match
        return await self.runner.run(call, flow, captures)
