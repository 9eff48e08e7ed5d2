"""Dialled transfer digits -> where they go (pure): the site's transfer routes, first match wins."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from switchctl.features.transfer.errors import TransferError
from switchctl.features.transfer.options import TransferRoute
from switchctl.switch.call import DialTarget


@dataclass(frozen=True, slots=True)
class TransferDestination:
    """`to`: the digits as dialled; exactly one of `target` (a party to ring) and `flow` is set."""

    to: str
    target: DialTarget | None = None
    flow: str | None = None


def resolve_route(routes: Sequence[TransferRoute], digits: str) -> TransferDestination:
    """The first route whose pattern fullmatches `digits`; TransferError when none does."""
    for route in routes:
        if not re.fullmatch(route.pattern, digits):
            continue
        if route.kind == "flow":
            return TransferDestination(digits, flow=route.flow)
        address = route.prefix + digits[route.strip:]
        if not address:
            raise TransferError(f"transfer route '{route.pattern}' leaves nothing to dial of '{digits}'")
        gateway = route.gateway if route.kind == "gateway" else None
        return TransferDestination(digits, target=DialTarget(route.kind, address, gateway=gateway))
    raise TransferError(f"no transfer route for '{digits}'")
