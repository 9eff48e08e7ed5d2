"""switch/freeswitch_adopt.py parsing, on the real bodies of captures freeswitch-scenarios/s6_api."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchctl.switch.call import CallError
from switchctl.switch.freeswitch_adopt import channel_uuids, live_channel_from_dump

S6 = Path("/work/shared/captures/freeswitch-scenarios/s6_api")
pytestmark = pytest.mark.skipif(not S6.is_dir(), reason="captures not present")


def body(name: str) -> str:
    raw = (S6 / name).read_bytes()
    return raw.split(b"\n\n", 1)[1].decode()


def test_show_channels_as_json_lists_every_uuid() -> None:
    assert channel_uuids(body("api_show_channels_as_json.raw")) == [
        "fa376681-6d7c-4806-a807-32839b0dd41e",
        "bfd40c28-491b-4e03-bfab-1a01c3935f0a",
        "3fc046a6-8c12-4554-a967-998bfc9f1afb",
    ]
    assert channel_uuids(body("api_show_channels_as_json_empty.raw")) == []


def test_show_channels_error_is_a_call_error() -> None:
    with pytest.raises(CallError):
        channel_uuids("-ERR no reply\n")


def test_uuid_dump_of_a_bridged_leg() -> None:
    channel = live_channel_from_dump(body("api_uuid_dump_json_bridged_A.raw"), "fs1")
    assert channel is not None
    assert channel.uuid == "bfd40c28-491b-4e03-bfab-1a01c3935f0a" and channel.switch == "fs1"
    assert channel.bridged_to == "3fc046a6-8c12-4554-a967-998bfc9f1afb"
    assert channel.answered_at_us == 0  # this capture's A leg was bridged on early media
    assert channel.variables["call_uuid"] == channel.uuid
    assert not any(key.startswith("variable_") for key in channel.variables)


def test_uuid_dump_of_a_parked_answered_leg() -> None:
    channel = live_channel_from_dump(body("api_uuid_dump_json_originated_parked.raw"), "fs1")
    assert channel is not None and channel.bridged_to is None
    assert channel.answered_at_us > 1_700_000_000_000_000


def test_uuid_dump_of_a_gone_channel_is_none() -> None:
    assert live_channel_from_dump("-ERR No such channel!\n", "fs1") is None
