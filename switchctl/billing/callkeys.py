"""How a prepaid call is named in the ledger, shared by every path that bills it.

A call is billed either live (the prepaid feature commits when the bridge ends) or afterwards from
the switch's own CDR (a controller that was down when the call ended). Both must name the same
reservation and use the same idempotency key, so whichever comes first bills it and the other is a
replay: exactly once.

- The reservation belongs to the caller's leg: `CallRef(switch, <A-leg uuid>, "a")`.
- The legs the dial creates carry channel variables naming that call and account (set through
  `DialSpec.variables`), so a B-leg CDR leads back to the reservation even when nobody was
  listening when it ended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .ledger import CallRef

CALL_VAR = "switchctl_call"  # on B legs: the A leg's uuid
ACCOUNT_VAR = "switchctl_account"  # on both legs: the paying account's name
TENANT_VAR = "switchctl_tenant"
# On B legs: the destination the call was authorized (and rated) for, so a controller that restarts
# during the call rates it as the live path would (the B leg's callee may carry a trunk prefix).
DESTINATION_VAR = "switchctl_destination"
# What a destination may be to travel in a dial string (its separators and quoting are excluded).
_SAFE_VALUE = re.compile(r"[0-9A-Za-z+*#._\-]{1,64}")


def reservation_ref(switch: str, call_uuid: str) -> CallRef:
    """The reservation of the call whose caller leg is `call_uuid` on `switch`."""
    return CallRef(switch, call_uuid, "a")


def commit_key(ref: CallRef) -> str:
    return f"{ref}:commit"


def release_key(ref: CallRef) -> str:
    return f"{ref}:release"


def dial_variables(call_uuid: str, account: str, tenant: str,
                   destination: str | None = None) -> dict[str, str]:
    """Channel variables every leg a prepaid dial creates must carry (the destination only when it
    can travel in a dial string; a restarted controller otherwise falls back to the B leg's callee)."""
    variables = {CALL_VAR: call_uuid, ACCOUNT_VAR: account, TENANT_VAR: tenant}
    if destination and _SAFE_VALUE.fullmatch(destination):
        variables[DESTINATION_VAR] = destination
    return variables


def ref_from_leg_variables(switch: str, variables: Mapping[str, str]) -> CallRef | None:
    """The reservation a B leg's CDR belongs to (None: not a prepaid call)."""
    call_uuid = variables.get(CALL_VAR)
    return reservation_ref(switch, call_uuid) if call_uuid else None
