"""FreeSWITCH dial strings (pure): a target's endpoint and a `{...}` block of channel variables, as
the `bridge` application (Call.dial) and `originate` (Switch.originate) both take them.

What a field may not contain: the dial string's own separators, quoting and ${} expansion
(switch_event_create_brackets splits on ',' and '='). An `originate` is an api command, split on
spaces: its values may not contain whitespace either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .call import CallError, DialTarget

_ADDRESS_FORBIDDEN = re.compile(r"[\s,|{}\[\]<>^'\"=$]")
_VALUE_FORBIDDEN = re.compile(r"[,|{}\[\]<>^'\"=$]")
_VALUE_FORBIDDEN_IN_API = re.compile(r"[,|{}\[\]<>^'\"=$\s]")
_VAR_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def target_dial(target: DialTarget, *, domain: str | None, profile: str) -> str:
    """The endpoint string of one target (without its [] variables)."""
    fields = [target.address] + ([target.gateway] if target.kind == "gateway" else [])
    for value in fields:
        if not value or _ADDRESS_FORBIDDEN.search(value):
            raise CallError(f"dial: bad {target.kind} target '{value}'")
    if target.kind == "phone":
        return f"user/{target.address}@{domain}" if domain else f"user/{target.address}"
    if target.kind == "gateway":
        return f"sofia/gateway/{target.gateway}/{target.address}"
    if target.kind == "uri":
        return f"sofia/{profile}/{target.address}"
    raise CallError(f"dial: unknown target kind '{target.kind}'")


def variables_block(base: Mapping[str, str], *, caller_id_number: str | None, caller_id_name: str | None,
                    variables: Mapping[str, str], what: str, api: bool = False) -> str:
    """`{name=value,...}`: `base`, then the caller id shown to the far end, then the caller's own
    `variables` (which win). CallError names the first one a dial string cannot carry."""
    merged = dict(base)
    if caller_id_number:
        merged["origination_caller_id_number"] = caller_id_number
    if caller_id_name:
        merged["origination_caller_id_name"] = caller_id_name
    merged.update(variables)
    forbidden = _VALUE_FORBIDDEN_IN_API if api else _VALUE_FORBIDDEN
    for name, value in merged.items():
        if not _VAR_NAME.fullmatch(name) or forbidden.search(str(value)):
            raise CallError(f"{what}: variable {name}={value!r} cannot go into a dial string")
    return "{" + ",".join(f"{name}={value}" for name, value in merged.items()) + "}"
