"""ARI REST client over aiohttp: typed methods for what a switch backend needs.

- `base_url` is Asterisk's HTTP root (`http://127.0.0.1:8088`) or the ARI root itself
  (`http://127.0.0.1:8088/ari`); paths in errors and `request()` are relative to /ari.
- Parameters go in the query string, as Asterisk's own docs and the captures do; only the
  `variables` of originate/create go in a JSON body (the one place ARI needs an object).
- HTTP errors raise `AriHttpError` subclasses by status; timeouts `AriTimeout`; connection
  failures `AriUnavailable` (see errors.py).
- Media URIs are checked before sending: Asterisk answers 201 for an unknown scheme and then never
  sends PlaybackFinished (captures 09), so a typo would hang whoever waits for the end.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .errors import AriProtocolError, AriTimeout, AriUnavailable, error_for_status
from .models import (
    Application,
    AsteriskPing,
    Bridge,
    Channel,
    LiveRecording,
    Playback,
    StoredRecording,
    decode_json,
    parse_list,
)

DEFAULT_TIMEOUT = 10.0

# Media schemes Asterisk 22 plays. `tone:` takes a tone name or a tone list (`tone:ring;tonezone=us`,
# `tone:!950/330,!1400/330`); http(s) is fetched through res_http_media_cache.
MEDIA_SCHEMES = frozenset({"sound", "recording", "number", "digits", "characters", "tone", "http", "https"})

Params = Mapping[str, object]


def media_uri_problem(uri: str) -> str | None:
    """Why `uri` is not a playable ARI media URI, or None when it is."""
    scheme, sep, rest = uri.partition(":")
    if not sep or not rest:
        return f"media URI {uri!r} has no 'scheme:' prefix (one of {', '.join(sorted(MEDIA_SCHEMES))})"
    if scheme not in MEDIA_SCHEMES:
        return f"media URI {uri!r} has unknown scheme {scheme!r} (one of {', '.join(sorted(MEDIA_SCHEMES))})"
    return None


def tone_uri(tone: str, tonezone: str | None = None) -> str:
    """`tone:` media for a named tone (ring, busy, dial...) or a tone list, in an optional zone."""
    return f"tone:{tone};tonezone={tonezone}" if tonezone else f"tone:{tone}"


def _media_param(media: str | Sequence[str]) -> str:
    uris = [media] if isinstance(media, str) else list(media)
    if not uris:
        raise ValueError("play needs at least one media URI")
    for uri in uris:
        problem = media_uri_problem(uri)
        if problem:
            raise ValueError(problem)
    return ",".join(uris)


def _seg(value: str) -> str:
    """One path segment (an id or a name) percent-encoded, so '/' or '?' cannot change the path."""
    if not value:
        raise ValueError("an ARI id or name cannot be empty")
    return quote(str(value), safe="")


def _query(params: Params | None) -> dict[str, str]:
    """Drop None, spell booleans as ARI does, join lists with commas."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


# Characters left as they are in a query value: RFC 3986 unreserved plus what ARI values carry
# and Asterisk reads back unchanged (`tone:!440/2000`, `sound:a,sound:b`, `PJSIP/sip:1000@h`).
_QUERY_SAFE = "-._~:/!,@*"


def _query_string(params: Params) -> str:
    """`params` (as `_query` spells them) as an encoded query string; "" when all are None."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe=_QUERY_SAFE)}" for k, v in _query(params).items())


def _error_message(body: str, reason: str) -> str:
    try:
        data = decode_json(body) if body else None
    except AriProtocolError:
        data = None
    if isinstance(data, Mapping):
        for key in ("message", "error"):
            if isinstance(data.get(key), str):
                return data[key]
    return body.strip() or reason or "no message"


class AriClient:
    """One ARI REST client (one aiohttp session). Use `async with` or call `close()`."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        app: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        url = URL(base_url.rstrip("/"))
        if not url.path.rstrip("/").endswith("/ari"):
            url = url / "ari"
        self.root = url
        self.app = app
        # The header itself (not aiohttp.BasicAuth, deprecated in 3.14): REST and WebSocket send it.
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self.auth_headers: Mapping[str, str] = {"Authorization": f"Basic {token}"}
        self.timeout = timeout
        self._root_text = str(url)
        self._session = session
        self._own_session = session is None

    @property
    def timeout(self) -> float:
        """Seconds a request may take, answer included (AriTimeout after that)."""
        return self._timeout.total or 0.0

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=seconds)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    def events_url(self, *, subscribe_all: bool = False) -> URL:
        """The WebSocket URL of this app's event stream."""
        scheme = "wss" if self.root.scheme == "https" else "ws"
        query = {"app": self.app, "subscribeAll": "true" if subscribe_all else "false"}
        return self.root.with_scheme(scheme).with_path(self.root.path + "/events").with_query(query)

    async def close(self) -> None:
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -----------------------------------------------------------------------------------------
    # Transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: object = None,
        data: str | bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        """One ARI call; `path` is relative to /ari and already encoded. Returns the decoded JSON
        body, or None for an empty body (204)."""
        # The fast path is most of a call's cost on our side (every playback, answer and hangup is
        # one): the query string is encoded here, once, into an already-encoded URL (no yarl
        # parsing or re-quoting), the headers and timeout are built once per client, and the body
        # is read as bytes (no charset sniffing) and decoded only when there is one.
        query = _query_string(params) if params else ""
        url = URL(f"{self._root_text}{path}?{query}" if query else f"{self._root_text}{path}", encoded=True)
        headers = self.auth_headers
        if json is not None:
            data = orjson.dumps(json)
            content_type = "application/json"
        if content_type:
            headers = {**headers, "Content-Type": content_type}
        try:
            async with self.session.request(method, url, data=data, headers=headers, timeout=self._timeout) as resp:
                body = await resp.read()
                status = resp.status
                reason = resp.reason or ""
        except TimeoutError:
            raise AriTimeout(
                f"ARI {method} {path}: no answer within {self.timeout:g} s", method=method, path=path
            ) from None
        except aiohttp.ClientError as exc:
            raise AriUnavailable(
                f"ARI {method} {path}: cannot reach Asterisk at {self.root}: {exc or type(exc).__name__}",
                method=method,
                path=path,
            ) from exc
        if status >= 400:
            text = body.decode("utf-8", "replace")
            raise error_for_status(method, path, status, _error_message(text, reason))
        if not body:
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            try:
                return decode_json(body)
            except AriProtocolError as exc:
                raise AriProtocolError(f"ARI {method} {path} -> {status}: {exc}") from None

    async def _object(self, method: str, path: str, **kw: Any) -> Mapping[str, Any]:
        result = await self.request(method, path, **kw)
        if not isinstance(result, Mapping):
            raise AriProtocolError(f"ARI {method} {path}: expected a JSON object, got {type(result).__name__}")
        return result

    # -----------------------------------------------------------------------------------------
    # Asterisk

    async def info(self) -> Mapping[str, Any]:
        """GET /asterisk/info: build, system, config and status sections as Asterisk sends them."""
        return await self._object("GET", "/asterisk/info")

    async def ping(self) -> AsteriskPing:
        return AsteriskPing.parse(await self._object("GET", "/asterisk/ping"))

    # -----------------------------------------------------------------------------------------
    # Channels

    async def list_channels(self) -> list[Channel]:
        return parse_list(await self.request("GET", "/channels"), Channel.parse)

    async def get_channel(self, channel_id: str) -> Channel:
        return Channel.parse(await self._object("GET", f"/channels/{_seg(channel_id)}"))

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """POST /channels: dial `endpoint` now. Into this app by default; into the dialplan when
        `extension`/`context` is given. The channel reaches StasisStart only once answered."""
        into_dialplan = extension is not None or context is not None
        params = {
            "endpoint": endpoint,
            "app": None if into_dialplan else (app or self.app),
            "appArgs": app_args,
            "extension": extension,
            "context": context,
            "priority": priority,
            "label": label,
            "callerId": caller_id,
            "timeout": timeout,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": formats,
        }
        body = {"variables": dict(variables)} if variables else None
        return Channel.parse(await self._object("POST", "/channels", params=params, json=body))

    async def create_channel(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """POST /channels/create: a Down channel in Stasis now (StasisStart at once); `dial()` it.
        No final Dial event comes for busy/no-answer: read ChannelDestroyed.cause."""
        params = {
            "endpoint": endpoint,
            "app": app or self.app,
            "appArgs": app_args,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": formats,
        }
        body = {"variables": dict(variables)} if variables else None
        return Channel.parse(await self._object("POST", "/channels/create", params=params, json=body))

    async def dial(self, channel_id: str, *, caller: str | None = None, timeout: int | None = None) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/dial", params={"caller": caller, "timeout": timeout})

    async def answer(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def hangup(self, channel_id: str, *, reason: str | None = None, reason_code: int | None = None) -> None:
        """DELETE /channels/{id}. `reason` (normal, busy, no_answer, congestion, ...) or
        `reason_code` (a Q.850 number), not both; none means normal clearing."""
        if reason is not None and reason_code is not None:
            raise ValueError("hangup takes reason or reason_code, not both")
        await self.request("DELETE", f"/channels/{_seg(channel_id)}", params={"reason": reason, "reason_code": reason_code})

    async def ring(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/ring")

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
        offsetms: int | None = None,
        skipms: int | None = None,
    ) -> Playback:
        """Start playing one URI or a list (one Playback for the whole list)."""
        params = {"media": _media_param(media), "playbackId": playback_id, "lang": lang, "offsetms": offsetms, "skipms": skipms}
        return Playback.parse(await self._object("POST", f"/channels/{_seg(channel_id)}/play", params=params))

    async def get_variable(self, channel_id: str, variable: str) -> str:
        """GET a channel variable or function (`CDR(answer,u)`); AriNotFound when it is not set."""
        result = await self._object("GET", f"/channels/{_seg(channel_id)}/variable", params={"variable": variable})
        return str(result.get("value", ""))

    async def set_variable(self, channel_id: str, variable: str, value: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/variable", params={"variable": variable, "value": value})

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        before: int | None = None,
        between: int | None = None,
        duration: int | None = None,
        after: int | None = None,
    ) -> None:
        params = {"dtmf": dtmf, "before": before, "between": between, "duration": duration, "after": after}
        await self.request("POST", f"/channels/{_seg(channel_id)}/dtmf", params=params)

    async def record(
        self,
        channel_id: str,
        name: str,
        *,
        format: str = "wav",
        max_duration: int | None = None,
        max_silence: int | None = None,
        if_exists: str | None = None,
        beep: bool | None = None,
        terminate_on: str | None = None,
    ) -> LiveRecording:
        """Record a channel. A channel inside a bridge answers 201 and then RecordingFailed."""
        return await self._record(f"/channels/{_seg(channel_id)}/record", name, format, max_duration,
                                  max_silence, if_exists, beep, terminate_on)

    async def _record(self, path: str, name: str, format: str, max_duration: int | None,
                      max_silence: int | None, if_exists: str | None, beep: bool | None,
                      terminate_on: str | None) -> LiveRecording:
        """POST <resource>/record: the same parameters for channels and bridges."""
        params = {
            "name": name,
            "format": format,
            "maxDurationSeconds": max_duration,
            "maxSilenceSeconds": max_silence,
            "ifExists": if_exists,
            "beep": beep,
            "terminateOn": terminate_on,
        }
        return LiveRecording.parse(await self._object("POST", path, params=params))

    async def snoop(
        self,
        channel_id: str,
        *,
        spy: str = "none",
        whisper: str = "none",
        app: str | None = None,
        app_args: str | None = None,
        snoop_id: str | None = None,
    ) -> Channel:
        """A Snoop channel on `channel_id` (spy/whisper: none, in, out, both), in Stasis and Up."""
        params = {"spy": spy, "whisper": whisper, "app": app or self.app, "appArgs": app_args, "snoopId": snoop_id}
        return Channel.parse(await self._object("POST", f"/channels/{_seg(channel_id)}/snoop", params=params))

    async def continue_in_dialplan(
        self,
        channel_id: str,
        *,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        """Leave Stasis (StasisEnd comes at once) and run the dialplan from there."""
        params = {"context": context, "extension": extension, "priority": priority, "label": label}
        await self.request("POST", f"/channels/{_seg(channel_id)}/continue", params=params)

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        """SIP 302 (ringing) or REFER (answered). Use `PJSIP/sip:user@host`: `PJSIP/<aor>/sip:...`
        answers 204 and silently does nothing. An answered channel stays in Stasis afterwards."""
        await self.request("POST", f"/channels/{_seg(channel_id)}/redirect", params={"endpoint": endpoint})

    async def hold(self, channel_id: str) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/hold")

    async def unhold(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/hold")

    async def start_moh(self, channel_id: str, moh_class: str | None = None) -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/moh", params={"mohClass": moh_class})

    async def stop_moh(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/moh")

    async def mute(self, channel_id: str, direction: str = "both") -> None:
        await self.request("POST", f"/channels/{_seg(channel_id)}/mute", params={"direction": direction})

    async def unmute(self, channel_id: str, direction: str = "both") -> None:
        await self.request("DELETE", f"/channels/{_seg(channel_id)}/mute", params={"direction": direction})

    # -----------------------------------------------------------------------------------------
    # Bridges

    async def list_bridges(self) -> list[Bridge]:
        return parse_list(await self.request("GET", "/bridges"), Bridge.parse)

    async def get_bridge(self, bridge_id: str) -> Bridge:
        return Bridge.parse(await self._object("GET", f"/bridges/{_seg(bridge_id)}"))

    async def create_bridge(
        self, *, type: str | Sequence[str] = "mixing", bridge_id: str | None = None, name: str | None = None
    ) -> Bridge:
        """POST /bridges (no BridgeCreated event follows). `type`: mixing, holding, dtmf_events,
        proxy_media, video_sfu... (comma list allowed)."""
        params = {"type": type, "bridgeId": bridge_id, "name": name}
        return Bridge.parse(await self._object("POST", "/bridges", params=params))

    async def add_channel(
        self,
        bridge_id: str,
        channel: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
        inhibit_connected_line_updates: bool | None = None,
    ) -> None:
        """Add (or move, from another bridge) channels. ChannelEnteredBridge may arrive before this
        returns."""
        params = {
            "channel": channel,
            "role": role,
            "absorbDTMF": absorb_dtmf,
            "mute": mute,
            "inhibitConnectedLineUpdates": inhibit_connected_line_updates,
        }
        await self.request("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params=params)

    async def remove_channel(self, bridge_id: str, channel: str | Sequence[str]) -> None:
        await self.request("POST", f"/bridges/{_seg(bridge_id)}/removeChannel", params={"channel": channel})

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{_seg(bridge_id)}")

    async def play_on_bridge(
        self,
        bridge_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
        offsetms: int | None = None,
        skipms: int | None = None,
    ) -> Playback:
        params = {"media": _media_param(media), "playbackId": playback_id, "lang": lang, "offsetms": offsetms, "skipms": skipms}
        return Playback.parse(await self._object("POST", f"/bridges/{_seg(bridge_id)}/play", params=params))

    async def record_bridge(
        self,
        bridge_id: str,
        name: str,
        *,
        format: str = "wav",
        max_duration: int | None = None,
        max_silence: int | None = None,
        if_exists: str | None = None,
        beep: bool | None = None,
        terminate_on: str | None = None,
    ) -> LiveRecording:
        return await self._record(f"/bridges/{_seg(bridge_id)}/record", name, format, max_duration,
                                  max_silence, if_exists, beep, terminate_on)

    async def start_bridge_moh(self, bridge_id: str, moh_class: str | None = None) -> None:
        await self.request("POST", f"/bridges/{_seg(bridge_id)}/moh", params={"mohClass": moh_class})

    async def stop_bridge_moh(self, bridge_id: str) -> None:
        await self.request("DELETE", f"/bridges/{_seg(bridge_id)}/moh")

    # -----------------------------------------------------------------------------------------
    # Applications

    async def list_applications(self) -> list[Application]:
        return parse_list(await self.request("GET", "/applications"), Application.parse)

    async def get_application(self, app: str | None = None) -> Application:
        return Application.parse(await self._object("GET", f"/applications/{_seg(app or self.app)}"))

    async def subscribe(self, event_source: str | Sequence[str], *, app: str | None = None) -> Application:
        """Subscribe the app to `channel:<id>`, `bridge:<id>`, `endpoint:<tech>/<res>` or
        `deviceState:<name>`. Inbound channels need this to deliver ChannelDestroyed."""
        path = f"/applications/{_seg(app or self.app)}/subscription"
        return Application.parse(await self._object("POST", path, params={"eventSource": event_source}))

    async def set_event_filter(
        self, *, allowed: Sequence[str] | None = None, disallowed: Sequence[str] | None = None, app: str | None = None
    ) -> Application:
        """PUT /applications/{app}/eventFilter: Asterisk sends the app only `allowed` event types
        (all when empty) minus `disallowed`. A list left None keeps Asterisk's current one; both
        None clear the filter. The filter lives as long as the app (redo it after a reconnect)."""
        body: dict[str, list[dict[str, str]]] = {}
        if allowed is not None:
            body["allowed"] = [{"type": t} for t in allowed]
        if disallowed is not None:
            body["disallowed"] = [{"type": t} for t in disallowed]
        path = f"/applications/{_seg(app or self.app)}/eventFilter"
        return Application.parse(await self._object("PUT", path, json=body))

    async def unsubscribe(self, event_source: str | Sequence[str], *, app: str | None = None) -> Application:
        """Asterisk answers 422 (not the documented 409) for a source that was not subscribed."""
        path = f"/applications/{_seg(app or self.app)}/subscription"
        return Application.parse(await self._object("DELETE", path, params={"eventSource": event_source}))

    # -----------------------------------------------------------------------------------------
    # Playbacks

    async def get_playback(self, playback_id: str) -> Playback:
        """AriNotFound once the playback has finished."""
        return Playback.parse(await self._object("GET", f"/playbacks/{_seg(playback_id)}"))

    async def control_playback(self, playback_id: str, operation: str) -> None:
        """operation: restart, pause, unpause, reverse, forward (unpause sends a new PlaybackStarted)."""
        await self.request("POST", f"/playbacks/{_seg(playback_id)}/control", params={"operation": operation})

    async def stop_playback(self, playback_id: str) -> None:
        """DELETE /playbacks/{id}: ends with PlaybackFinished state "done", like a natural end."""
        await self.request("DELETE", f"/playbacks/{_seg(playback_id)}")

    # -----------------------------------------------------------------------------------------
    # Recordings

    async def get_live_recording(self, name: str) -> LiveRecording:
        return LiveRecording.parse(await self._object("GET", f"/recordings/live/{_seg(name)}"))

    async def stop_recording(self, name: str) -> None:
        """Stop and keep the file (RecordingFinished follows)."""
        await self.request("POST", f"/recordings/live/{_seg(name)}/stop")

    async def cancel_recording(self, name: str) -> None:
        """Stop and discard the file."""
        await self.request("DELETE", f"/recordings/live/{_seg(name)}")

    async def pause_recording(self, name: str) -> None:
        await self.request("POST", f"/recordings/live/{_seg(name)}/pause")

    async def unpause_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/live/{_seg(name)}/pause")

    async def mute_recording(self, name: str) -> None:
        await self.request("POST", f"/recordings/live/{_seg(name)}/mute")

    async def unmute_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/live/{_seg(name)}/mute")

    async def list_stored_recordings(self) -> list[StoredRecording]:
        return parse_list(await self.request("GET", "/recordings/stored"), StoredRecording.parse)

    async def get_stored_recording(self, name: str) -> StoredRecording:
        return StoredRecording.parse(await self._object("GET", f"/recordings/stored/{_seg(name)}"))

    async def copy_stored_recording(self, name: str, destination: str) -> StoredRecording:
        path = f"/recordings/stored/{_seg(name)}/copy"
        return StoredRecording.parse(await self._object("POST", path, params={"destinationRecordingName": destination}))

    async def delete_stored_recording(self, name: str) -> None:
        await self.request("DELETE", f"/recordings/stored/{_seg(name)}")
