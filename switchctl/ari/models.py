"""ARI resources and events as typed, immutable dataclasses. Pure: no I/O.

Parsing follows what Asterisk 22 really sends (../shared/captures/asterisk*), not the API docs:
- `parse_event` never fails on a well-formed JSON object: unknown types, and known types whose
  body is not what we expect, become `UnknownEvent` (with `problem` saying why) so one odd frame
  cannot stop the event stream.
- Every event and resource keeps its `raw` dict, so a backend can read fields we do not model.
- Timestamps keep Asterisk's exact text (`2026-11-25T17:22:10.431+0000`, milliseconds) beside the
  parsed aware datetime.
- `ChannelHangupRequest.cause` with `soft=True` is an internal AST_SOFTHANGUP_* flag (32 = explicit
  DELETE, 1 = device), not a Q.850 cause; the real cause is `ChannelDestroyed.cause`/`cause_txt`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson


class AriProtocolError(ValueError):
    """A frame or body that is not the JSON object ARI always sends."""


# ---------------------------------------------------------------------------------------------
# Timestamps


_UNPARSED: Any = object()


class Timestamp:
    """An ARI time: `text` exactly as sent, `at` parsed (None when the text does not parse).

    Every event carries one and every channel another, and most handlers never read them, so
    `at` is parsed on first read (then kept). Read-only; equal when text and time are.
    """

    __slots__ = ("_at", "text")

    def __init__(self, text: str, at: datetime | None = _UNPARSED) -> None:
        self.text = text
        if at is not _UNPARSED:
            self._at = at

    @property
    def at(self) -> datetime | None:
        try:
            return self._at
        except AttributeError:
            self._at = value = parse_time(self.text)
            return value

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        return cls(text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self.text == other.text and self.at == other.at

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Timestamp(text={self.text!r}, at={self.at!r})"


_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z")


def parse_time(text: str) -> datetime | None:
    """Parse ARI's `YYYY-MM-DDTHH:MM:SS.mmm+0000` (also without fraction); None when not a time."""
    # fromisoformat reads ARI's shape ~50x faster than strptime (every event carries a timestamp;
    # bench/ari_cps.py profiled strptime at a fifth of the controller's time). It accepts more
    # shapes than ARI sends, so only a date-T-time with an offset takes this path.
    if len(text) >= 24 and text[10] == "T" and text[-5] in "+-":
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _ts(value: object) -> Timestamp | None:
    return Timestamp.parse(value) if isinstance(value, str) and value else None


# ---------------------------------------------------------------------------------------------
# Resources


@dataclass(frozen=True, slots=True)
class CallerId:
    name: str
    number: str

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> CallerId:
        data = data or {}
        return cls(str(data.get("name", "")), str(data.get("number", "")))


@dataclass(frozen=True, slots=True)
class DialplanLocation:
    context: str
    exten: str
    priority: int
    app_name: str
    app_data: str

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> DialplanLocation:
        data = data or {}
        return cls(
            str(data.get("context", "")),
            str(data.get("exten", "")),
            int(data.get("priority", 0)),
            str(data.get("app_name", "")),
            str(data.get("app_data", "")),
        )


class Channel:
    """A channel snapshot. `state` is Asterisk's text: Down, Rsrvd, OffHook, Dialing, Ring,
    Ringing, Up, Busy, Dialing Offhook, Pre-ring, Unknown.

    Nearly every event carries one, and a call's handlers read little of it (routing reads only
    `id`), so only `id` is read at once (a channel without one does not parse); the other fields
    are read from `raw` when first used, the nested ones then kept. Read-only.
    """

    __slots__ = ("_caller", "_channelvars", "_connected", "_creationtime", "_dialplan", "id", "raw")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.id = str(raw["id"])
        self.raw = raw

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Channel:
        return cls(data)

    @property
    def name(self) -> str:
        return str(self.raw.get("name", ""))

    @property
    def state(self) -> str:
        return str(self.raw.get("state", ""))

    @property
    def protocol_id(self) -> str:
        return str(self.raw.get("protocol_id", ""))

    @property
    def accountcode(self) -> str:
        return str(self.raw.get("accountcode", ""))

    @property
    def language(self) -> str:
        return str(self.raw.get("language", ""))

    @property
    def caller(self) -> CallerId:
        try:
            return self._caller
        except AttributeError:
            self._caller = value = CallerId.parse(self.raw.get("caller"))
            return value

    @property
    def connected(self) -> CallerId:
        try:
            return self._connected
        except AttributeError:
            self._connected = value = CallerId.parse(self.raw.get("connected"))
            return value

    @property
    def dialplan(self) -> DialplanLocation:
        try:
            return self._dialplan
        except AttributeError:
            self._dialplan = value = DialplanLocation.parse(self.raw.get("dialplan"))
            return value

    @property
    def creationtime(self) -> Timestamp | None:
        try:
            return self._creationtime
        except AttributeError:
            self._creationtime = value = _ts(self.raw.get("creationtime"))
            return value

    @property
    def channelvars(self) -> Mapping[str, str] | None:
        """The variables ari.conf's `channelvars` asks for; None when Asterisk sent none."""
        try:
            return self._channelvars
        except AttributeError:
            found = self.raw.get("channelvars")
            self._channelvars = value = dict(found) if isinstance(found, Mapping) else None
            return value

    def _fields(self) -> tuple[Any, ...]:
        return (self.id, self.name, self.state, self.protocol_id, self.caller, self.connected, self.accountcode,
                self.dialplan, self.creationtime, self.language, self.channelvars)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Channel):
            return NotImplemented
        return self is other or self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Channel(id={self.id!r}, name={self.name!r}, state={self.state!r})"


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge snapshot. `technology` moves (simple_bridge, native_rtp, softmix, holding_bridge)
    and a snapshot inside an event can lag a GET; `channels` is the member channel ids."""

    id: str
    technology: str
    bridge_type: str
    bridge_class: str
    creator: str
    name: str
    channels: tuple[str, ...]
    creationtime: Timestamp | None
    video_mode: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Bridge:
        return cls(
            id=str(data["id"]),
            technology=str(data.get("technology", "")),
            bridge_type=str(data.get("bridge_type", "")),
            bridge_class=str(data.get("bridge_class", "")),
            creator=str(data.get("creator", "")),
            name=str(data.get("name", "")),
            channels=tuple(str(c) for c in data.get("channels", ())),
            creationtime=_ts(data.get("creationtime")),
            video_mode=str(data.get("video_mode", "")),
            raw=data,
        )


class Playback:
    """`state`: queued, playing, paused, continuing, done, failed (a hangup), cancelled.

    Like Channel: `id` is read at once (required), the rest from `raw` when used. Read-only."""

    __slots__ = ("id", "raw")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.id = str(raw["id"])
        self.raw = raw

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Playback:
        return cls(data)

    @property
    def media_uri(self) -> str:
        return str(self.raw.get("media_uri", ""))

    @property
    def target_uri(self) -> str:
        return str(self.raw.get("target_uri", ""))

    @property
    def state(self) -> str:
        return str(self.raw.get("state", ""))

    @property
    def language(self) -> str:
        return str(self.raw.get("language", ""))

    @property
    def next_media_uri(self) -> str | None:
        return self.raw.get("next_media_uri")

    def _fields(self) -> tuple[Any, ...]:
        return (self.id, self.media_uri, self.target_uri, self.state, self.language, self.next_media_uri)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Playback):
            return NotImplemented
        return self is other or self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Playback(id={self.id!r}, media_uri={self.media_uri!r}, state={self.state!r})"


@dataclass(frozen=True, slots=True)
class LiveRecording:
    """`duration` and friends are whole seconds; talking/silence only with maxSilenceSeconds."""

    name: str
    format: str
    state: str
    target_uri: str
    cause: str | None = None
    duration: int | None = None
    talking_duration: int | None = None
    silence_duration: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> LiveRecording:
        return cls(
            name=str(data["name"]),
            format=str(data.get("format", "")),
            state=str(data.get("state", "")),
            target_uri=str(data.get("target_uri", "")),
            cause=data.get("cause"),
            duration=_opt_int(data.get("duration")),
            talking_duration=_opt_int(data.get("talking_duration")),
            silence_duration=_opt_int(data.get("silence_duration")),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class StoredRecording:
    name: str
    format: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> StoredRecording:
        return cls(str(data["name"]), str(data.get("format", "")))


@dataclass(frozen=True, slots=True)
class Application:
    name: str
    channel_ids: tuple[str, ...]
    bridge_ids: tuple[str, ...]
    endpoint_ids: tuple[str, ...]
    device_names: tuple[str, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Application:
        return cls(
            name=str(data["name"]),
            channel_ids=tuple(data.get("channel_ids", ())),
            bridge_ids=tuple(data.get("bridge_ids", ())),
            endpoint_ids=tuple(data.get("endpoint_ids", ())),
            device_names=tuple(data.get("device_names", ())),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class AsteriskPing:
    ping: str
    timestamp: Timestamp | None
    asterisk_id: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> AsteriskPing:
        return cls(str(data.get("ping", "")), _ts(data.get("timestamp")), str(data.get("asterisk_id", "")))


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _opt_channel(value: object) -> Channel | None:
    return Channel.parse(value) if isinstance(value, Mapping) else None


def _opt_bridge(value: object) -> Bridge | None:
    return Bridge.parse(value) if isinstance(value, Mapping) else None


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every ARI event carries."""

    type: str
    timestamp: Timestamp | None = None
    application: str = ""
    asterisk_id: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def channel_ids(self) -> tuple[str, ...]:
        """Ids of the channels this event is about (for routing events to per-call tasks)."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent(Event):
    """An event type we do not model, or a known type whose body did not parse (`problem`)."""

    problem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEvent(Event):
    """Base of the events about one channel."""

    channel: Channel

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class StasisStart(ChannelEvent):
    """`replace_channel`: set on the Local halves a transfer puts in place of a transferer."""

    args: tuple[str, ...] = ()
    replace_channel: Channel | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StasisEnd(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelCreated(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDestroyed(ChannelEvent):
    """The real end of a channel: `cause` is Q.850 (0 "Unknown" for a plain remote BYE; not an
    error). `tech_cause` is the SIP status when there was one (486, 404...)."""

    cause: int
    cause_txt: str
    tech_cause: int | None = None

    @property
    def fs_cause(self) -> str:
        """The cause as FreeSWITCH names it (what `switchctl.switch.call` uses)."""
        return fs_cause_name(self.cause)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHangupRequest(ChannelEvent):
    """`soft=True`: `cause` is an AST_SOFTHANGUP_* flag, not Q.850. No cause at all: a remote BYE
    without a Reason header."""

    cause: int | None = None
    soft: bool = False
    tech_cause: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStateChange(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelVarset(Event):
    """`channel` is None for a global variable."""

    variable: str
    value: str
    channel: Channel | None = None

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,) if self.channel else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDialplan(ChannelEvent):
    dialplan_app: str = ""
    dialplan_app_data: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelCallerId(ChannelEvent):
    caller_presentation: int = 0
    caller_presentation_txt: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConnectedLine(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDtmfReceived(ChannelEvent):
    """Sent once, at the end of the digit; `duration_ms` is the RTP event's duration."""

    digit: str
    duration_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelHold(ChannelEvent):
    musicclass: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelUnhold(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelTalkingStarted(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelTalkingFinished(ChannelEvent):
    duration: int = 0  # milliseconds of talking


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelEnteredBridge(Event):
    bridge: Bridge
    channel: Channel | None = None

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,) if self.channel else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelLeftBridge(Event):
    bridge: Bridge
    channel: Channel

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return (self.channel.id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeCreated(Event):
    bridge: Bridge


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeDestroyed(Event):
    bridge: Bridge


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelTransfer(Event):
    """A SIP REFER under PJSIP_TRANSFER_HANDLING(ari-only); `state` is set on the echoes of
    `transfer_progress`. `destination` is refer_to.requested_destination.destination."""

    destination: str | None = None
    source_channel: Channel | None = None
    connected_channel: Channel | None = None
    bridge: Bridge | None = None
    state: str | None = None

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in (self.source_channel, self.connected_channel) if c)


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeBlindTransfer(Event):
    channel: Channel
    result: str
    is_external: bool
    context: str = ""
    exten: str = ""
    replace_channel: Channel | None = None
    transferee: Channel | None = None
    bridge: Bridge | None = None

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in (self.channel, self.transferee, self.replace_channel) if c)


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeAttendedTransfer(Event):
    transferer_first_leg: Channel
    transferer_second_leg: Channel
    result: str
    is_external: bool
    destination_type: str
    transferee: Channel | None = None
    transfer_target: Channel | None = None
    transferer_first_leg_bridge: Bridge | None = None
    transferer_second_leg_bridge: Bridge | None = None
    destination_link_first_leg: Channel | None = None
    destination_link_second_leg: Channel | None = None
    destination_bridge: str | None = None
    destination_application: str | None = None

    @property
    def channel_ids(self) -> tuple[str, ...]:
        legs = (self.transferer_first_leg, self.transferer_second_leg, self.transferee, self.transfer_target)
        return tuple(c.id for c in legs if c)


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial(Event):
    """`dialstatus` is "" on the first event, then RINGING, ANSWER, BUSY, NOANSWER, CANCEL...
    Asterisk never fills `caller` here in the captures, and the final status is often missing:
    use ChannelDestroyed.cause as the dial outcome."""

    peer: Channel
    dialstatus: str = ""
    dialstring: str | None = None
    forward: str | None = None
    caller: Channel | None = None
    forwarded: Channel | None = None

    @property
    def channel_ids(self) -> tuple[str, ...]:
        return (self.peer.id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackEvent(Event):
    playback: Playback


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackStarted(PlaybackEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackContinuing(PlaybackEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackFinished(PlaybackEvent):
    """`playback.state`: "done" (natural end or DELETE) or "failed" (hangup, unknown sound)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingEvent(Event):
    recording: LiveRecording


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingStarted(RecordingEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFinished(RecordingEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFailed(RecordingEvent):
    """`recording.cause` says why, e.g. "Cannot record channel while in bridge"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationReplaced(Event):
    """Another WebSocket took our application; this connection gets nothing more."""


# How to read the type-specific fields of each modelled event from its JSON body.
def _channel_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"channel": Channel.parse(d["channel"])}


def _with_channel(**extra: Any) -> Any:
    def read(d: Mapping[str, Any]) -> dict[str, Any]:
        out = _channel_fields(d)
        for key, convert in extra.items():
            if key in d:
                out[key] = convert(d[key])
        return out

    return read


def _bool(value: object) -> bool:
    return value is True or value == "true"


def _transfer(d: Mapping[str, Any]) -> dict[str, Any]:
    refer_to = d.get("refer_to") or {}
    referred_by = d.get("referred_by") or {}
    requested = refer_to.get("requested_destination") or {}
    return {
        "destination": requested.get("destination"),
        "source_channel": _opt_channel(referred_by.get("source_channel")),
        "connected_channel": _opt_channel(referred_by.get("connected_channel")),
        "bridge": _opt_bridge(referred_by.get("bridge")),
        "state": d.get("state"),
    }


def _blind(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "channel": Channel.parse(d["channel"]),
        "result": str(d.get("result", "")),
        "is_external": _bool(d.get("is_external")),
        "context": str(d.get("context", "")),
        "exten": str(d.get("exten", "")),
        "replace_channel": _opt_channel(d.get("replace_channel")),
        "transferee": _opt_channel(d.get("transferee")),
        "bridge": _opt_bridge(d.get("bridge")),
    }


def _attended(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "transferer_first_leg": Channel.parse(d["transferer_first_leg"]),
        "transferer_second_leg": Channel.parse(d["transferer_second_leg"]),
        "result": str(d.get("result", "")),
        "is_external": _bool(d.get("is_external")),
        "destination_type": str(d.get("destination_type", "")),
        "transferee": _opt_channel(d.get("transferee")),
        "transfer_target": _opt_channel(d.get("transfer_target")),
        "transferer_first_leg_bridge": _opt_bridge(d.get("transferer_first_leg_bridge")),
        "transferer_second_leg_bridge": _opt_bridge(d.get("transferer_second_leg_bridge")),
        "destination_link_first_leg": _opt_channel(d.get("destination_link_first_leg")),
        "destination_link_second_leg": _opt_channel(d.get("destination_link_second_leg")),
        "destination_bridge": d.get("destination_bridge"),
        "destination_application": d.get("destination_application"),
    }


def _dial(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "peer": Channel.parse(d["peer"]),
        "dialstatus": str(d.get("dialstatus", "")),
        "dialstring": d.get("dialstring"),
        "forward": d.get("forward"),
        "caller": _opt_channel(d.get("caller")),
        "forwarded": _opt_channel(d.get("forwarded")),
    }


_PARSERS: dict[str, tuple[type[Event], Any]] = {
    "StasisStart": (
        StasisStart,
        lambda d: {
            **_channel_fields(d),
            "args": tuple(str(a) for a in d.get("args", ())),
            "replace_channel": _opt_channel(d.get("replace_channel")),
        },
    ),
    "StasisEnd": (StasisEnd, _channel_fields),
    "ChannelCreated": (ChannelCreated, _channel_fields),
    "ChannelDestroyed": (
        ChannelDestroyed,
        lambda d: {
            **_channel_fields(d),
            "cause": int(d.get("cause", 0)),
            "cause_txt": str(d.get("cause_txt", "")),
            "tech_cause": _opt_int(d.get("tech_cause")),
        },
    ),
    "ChannelHangupRequest": (
        ChannelHangupRequest,
        lambda d: {
            **_channel_fields(d),
            "cause": _opt_int(d.get("cause")),
            "soft": _bool(d.get("soft")),
            "tech_cause": _opt_int(d.get("tech_cause")),
        },
    ),
    "ChannelStateChange": (ChannelStateChange, _channel_fields),
    "ChannelVarset": (
        ChannelVarset,
        lambda d: {
            "variable": str(d["variable"]),
            "value": str(d.get("value", "")),
            "channel": _opt_channel(d.get("channel")),
        },
    ),
    "ChannelDialplan": (ChannelDialplan, _with_channel(dialplan_app=str, dialplan_app_data=str)),
    "ChannelCallerId": (ChannelCallerId, _with_channel(caller_presentation=int, caller_presentation_txt=str)),
    "ChannelConnectedLine": (ChannelConnectedLine, _channel_fields),
    "ChannelDtmfReceived": (
        ChannelDtmfReceived,
        lambda d: {**_channel_fields(d), "digit": str(d["digit"]), "duration_ms": int(d.get("duration_ms", 0))},
    ),
    "ChannelHold": (ChannelHold, _with_channel(musicclass=str)),
    "ChannelUnhold": (ChannelUnhold, _channel_fields),
    "ChannelTalkingStarted": (ChannelTalkingStarted, _channel_fields),
    "ChannelTalkingFinished": (ChannelTalkingFinished, _with_channel(duration=int)),
    "ChannelEnteredBridge": (
        ChannelEnteredBridge,
        lambda d: {"bridge": Bridge.parse(d["bridge"]), "channel": _opt_channel(d.get("channel"))},
    ),
    "ChannelLeftBridge": (
        ChannelLeftBridge,
        lambda d: {"bridge": Bridge.parse(d["bridge"]), "channel": Channel.parse(d["channel"])},
    ),
    "BridgeCreated": (BridgeCreated, lambda d: {"bridge": Bridge.parse(d["bridge"])}),
    "BridgeDestroyed": (BridgeDestroyed, lambda d: {"bridge": Bridge.parse(d["bridge"])}),
    "ChannelTransfer": (ChannelTransfer, _transfer),
    "BridgeBlindTransfer": (BridgeBlindTransfer, _blind),
    "BridgeAttendedTransfer": (BridgeAttendedTransfer, _attended),
    "Dial": (Dial, _dial),
    "PlaybackStarted": (PlaybackStarted, lambda d: {"playback": Playback.parse(d["playback"])}),
    "PlaybackContinuing": (PlaybackContinuing, lambda d: {"playback": Playback.parse(d["playback"])}),
    "PlaybackFinished": (PlaybackFinished, lambda d: {"playback": Playback.parse(d["playback"])}),
    "RecordingStarted": (RecordingStarted, lambda d: {"recording": LiveRecording.parse(d["recording"])}),
    "RecordingFinished": (RecordingFinished, lambda d: {"recording": LiveRecording.parse(d["recording"])}),
    "RecordingFailed": (RecordingFailed, lambda d: {"recording": LiveRecording.parse(d["recording"])}),
    "ApplicationReplaced": (ApplicationReplaced, lambda d: {}),
}

EVENT_TYPES: frozenset[str] = frozenset(_PARSERS)


def decode_json(text: str | bytes) -> Any:
    """JSON text to Python; AriProtocolError (with a short excerpt) when it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        excerpt = text[:80] if isinstance(text, str) else text[:80].decode("utf-8", "replace")
        raise AriProtocolError(f"not JSON ({exc}): {excerpt!r}") from None


def parse_event(message: str | bytes | Mapping[str, Any]) -> Event:
    """One WebSocket text frame (or its decoded dict) to an Event.

    Raises AriProtocolError only when the frame is not a JSON object; anything else parses,
    unknown or malformed types into `UnknownEvent`.
    """
    data = decode_json(message) if type(message) is str or isinstance(message, (str, bytes)) else message
    if type(data) is not dict and not isinstance(data, Mapping):  # dict first: no ABC check per event
        raise AriProtocolError(f"an ARI event is a JSON object, got {type(data).__name__}")
    etype = str(data.get("type", ""))
    common: dict[str, Any] = {
        "type": etype,
        "timestamp": _ts(data.get("timestamp")),
        "application": str(data.get("application", "")),
        "asterisk_id": str(data.get("asterisk_id", "")),
        "raw": data,
    }
    entry = _PARSERS.get(etype)
    if entry is None:
        return UnknownEvent(**common, problem=None if etype else "event has no 'type'")
    cls, read = entry
    try:
        return cls(**common, **read(data))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return UnknownEvent(**common, problem=f"{etype} did not parse: {type(exc).__name__}: {exc}")


def parse_list(items: object, parse: Any) -> list[Any]:
    """A JSON array of resources, each through `parse` (Channel.parse, Bridge.parse...)."""
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise AriProtocolError(f"expected a JSON array, got {type(items).__name__}")
    return [parse(item) for item in items]


# ---------------------------------------------------------------------------------------------
# Hangup causes: Asterisk's numeric Q.850 causes <-> FreeSWITCH's names (switch_channel.c).

Q850_TO_FS: Mapping[int, str] = {
    1: "UNALLOCATED_NUMBER",
    2: "NO_ROUTE_TRANSIT_NET",
    3: "NO_ROUTE_DESTINATION",
    6: "CHANNEL_UNACCEPTABLE",
    7: "CALL_AWARDED_DELIVERED",
    16: "NORMAL_CLEARING",
    17: "USER_BUSY",
    18: "NO_USER_RESPONSE",
    19: "NO_ANSWER",
    20: "SUBSCRIBER_ABSENT",
    21: "CALL_REJECTED",
    22: "NUMBER_CHANGED",
    23: "REDIRECTION_TO_NEW_DESTINATION",
    25: "EXCHANGE_ROUTING_ERROR",
    27: "DESTINATION_OUT_OF_ORDER",
    28: "INVALID_NUMBER_FORMAT",
    29: "FACILITY_REJECTED",
    30: "RESPONSE_TO_STATUS_ENQUIRY",
    31: "NORMAL_UNSPECIFIED",
    34: "NORMAL_CIRCUIT_CONGESTION",
    38: "NETWORK_OUT_OF_ORDER",
    41: "NORMAL_TEMPORARY_FAILURE",
    42: "SWITCH_CONGESTION",
    43: "ACCESS_INFO_DISCARDED",
    44: "REQUESTED_CHAN_UNAVAIL",
    45: "PRE_EMPTED",
    50: "FACILITY_NOT_SUBSCRIBED",
    52: "OUTGOING_CALL_BARRED",
    54: "INCOMING_CALL_BARRED",
    57: "BEARERCAPABILITY_NOTAUTH",
    58: "BEARERCAPABILITY_NOTAVAIL",
    63: "SERVICE_UNAVAILABLE",
    65: "BEARERCAPABILITY_NOTIMPL",
    66: "CHAN_NOT_IMPLEMENTED",
    69: "FACILITY_NOT_IMPLEMENTED",
    79: "SERVICE_NOT_IMPLEMENTED",
    81: "INVALID_CALL_REFERENCE",
    88: "INCOMPATIBLE_DESTINATION",
    95: "INVALID_MSG_UNSPECIFIED",
    96: "MANDATORY_IE_MISSING",
    97: "MESSAGE_TYPE_NONEXIST",
    98: "WRONG_MESSAGE",
    99: "IE_NONEXIST",
    100: "INVALID_IE_CONTENTS",
    101: "WRONG_CALL_STATE",
    102: "RECOVERY_ON_TIMER_EXPIRE",
    103: "MANDATORY_IE_LENGTH_ERROR",
    111: "PROTOCOL_ERROR",
    127: "INTERWORKING",
}

# Asterisk-only numbers. 0 "Unknown" is what a remote BYE without a Reason header gives (captures
# 02a, 04c, 04d): FreeSWITCH calls that hangup NORMAL_CLEARING. 26 is Asterisk's "answered
# elsewhere" (the losing fork of a ring group), FreeSWITCH's LOSE_RACE.
_ASTERISK_ONLY: Mapping[int, str] = {0: "NORMAL_CLEARING", 26: "LOSE_RACE"}

_FS_TO_Q850: Mapping[str, int] = {name: code for code, name in Q850_TO_FS.items()}


def fs_cause_name(cause: int | None) -> str:
    """Asterisk's `ChannelDestroyed.cause` as FreeSWITCH's cause name.

    None (no cause given) and 0 read as NORMAL_CLEARING; a number outside the table reads as
    NORMAL_UNSPECIFIED (Q.850 31, "normal, unspecified"), so the result is always a valid name.
    """
    if cause is None:
        return "NORMAL_CLEARING"
    return Q850_TO_FS.get(cause) or _ASTERISK_ONLY.get(cause) or "NORMAL_UNSPECIFIED"


def q850_code(fs_cause: str) -> int | None:
    """FreeSWITCH's cause name to its Q.850 number, for `DELETE /channels/{id}?reason_code=`.

    None for FreeSWITCH's non-Q.850 causes (ALLOTTED_TIMEOUT, ORIGINATOR_CANCEL, MANAGER_REQUEST...);
    hang those up with the default (normal clearing).
    """
    return _FS_TO_Q850.get(fs_cause.upper())
