"""Reloading a FreeSWITCH over its event socket, for `switchctl deploy`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..esl.inbound import InboundClient
from .deploy import reload_accepted

log = logging.getLogger("switchctl.deploy")


def freeswitch_reloader(host: str, port: int, password: str, *, profile: str = "internal",
                        name: str = "deploy") -> Callable[[], Awaitable[str]]:
    """A `reload` for `deploy()`: `reloadxml`, then (when accepted) `sofia profile <p> rescan`.

    Returns reloadxml's answer, which deploy() judges (`+OK [Success]` or the error FreeSWITCH
    still prefixes with +OK, captures s6). A dead switch raises, and deploy() restores the backup.
    """

    async def reload() -> str:
        client = InboundClient(host, port, password, name=name, events=())
        await client.connect()
        try:
            reply = await client.api("reloadxml", check=False)
            if reload_accepted(reply):
                rescan = await client.api(f"sofia profile {profile} rescan", check=False)
                log.info("sofia rescan", extra={"reply": rescan.strip()})
            return reply
        finally:
            await client.close()

    return reload
