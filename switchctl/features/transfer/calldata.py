"""The call's data, which follows the caller through every transfer.

Data = the caller's number and name, the flow's variables, what consoles add (`set_data`); the IVR
path travels beside it. Every leg rung for a conversation carries `switchctl_conversation=<caller
uuid>` and the data's values that can go into a FreeSWITCH dial string (`switchctl_data_<key>`):
a value with a comma, a quote, a space or a brace would break `{var=value}`, so it is left out (the
screen pop carries everything).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

CONVERSATION_VAR = "switchctl_conversation"
DATA_VAR_PREFIX = "switchctl_data_"
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.@+-]+")
_SAFE_KEY = re.compile(r"[A-Za-z0-9_]+")
MAX_KEY = 64
MAX_VALUE = 1024


def check_data(values: Mapping[str, str]) -> dict[str, str]:
    """Validated copy of data a console sets; ValueError with a readable message otherwise."""
    checked: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key) or len(key) > MAX_KEY:
            raise ValueError(f"data key {key!r}: letters, digits and _ only, up to {MAX_KEY}")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise ValueError(f"data '{key}': the value must be text of up to {MAX_VALUE} characters")
        checked[key] = value
    return checked


def leg_variables(conversation: str, data: Mapping[str, str]) -> dict[str, str]:
    """The channel variables for a leg rung for `conversation`."""
    variables = {CONVERSATION_VAR: conversation}
    for key, value in data.items():
        if _SAFE_KEY.fullmatch(key) and _SAFE_VALUE.fullmatch(value):
            variables[DATA_VAR_PREFIX + key] = value
    return variables
