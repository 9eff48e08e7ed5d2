"""Playing a prompt's segments on one Asterisk channel, once (an announcement) or looped (ringback,
hold music): the one loop every caller of it shares.

A prompt becomes segments (asterisk_media.py): media lists played by one playback each, tones that
ARI plays for ever and we stop after their time, silences we wait out. The channel is reached through
a `Player` (its playback start/stop, how to forget a finished playback's id, whether it is gone), so
the same loop serves a flow's call and a Leg, whose events reach different objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..ari import AriError
from .asterisk_media import MediaList, Segment, Silence, Tone
from .call import CallError

log = logging.getLogger("switchctl.asterisk.play")

FAILED = "failed"  # a playback's end state when Asterisk could not play it (missing file, hangup)


@dataclass(frozen=True, slots=True)
class Player:
    """How to play on one channel. `start(media)` returns an object with `.id` and `.done` (a future
    of the playback's end state, also resolved when the channel goes)."""

    channel_id: str
    start: Callable[[str | list[str]], Awaitable[Any]]
    stop: Callable[[str], Awaitable[None]]
    forget: Callable[[str], None]
    gone: Callable[[], bool]


def _media(segment: MediaList | Tone) -> str | list[str]:
    if isinstance(segment, Tone):
        return segment.uri
    return segment.uris[0] if len(segment.uris) == 1 else list(segment.uris)


async def play_segments(player: Player, segments: Sequence[Segment], *, looped: bool,
                        started: asyncio.Future[None] | None = None) -> None:
    """Play `segments` once, or again and again until cancelled or the channel goes (`looped`).
    `started` resolves once the first playback was accepted (or a leading silence began), with the
    CallError when the very first one failed. Later failures end the play quietly: an announcement
    or music over a call that just hung up is nothing to report. A looped media that Asterisk cannot
    play (state "failed") ends the loop instead of retrying it at REST speed."""

    def begun() -> None:
        if started is not None and not started.done():
            started.set_result(None)

    try:
        while not player.gone():
            for segment in segments:
                if isinstance(segment, Silence):
                    begun()
                    await asyncio.sleep(segment.seconds)
                    continue
                playback = await player.start(_media(segment))
                begun()
                try:
                    if isinstance(segment, Tone):
                        await asyncio.sleep(segment.seconds)
                    elif await asyncio.shield(playback.done) == FAILED and looped:
                        return
                finally:
                    player.forget(playback.id)
                    if not playback.done.done() and not player.gone():
                        # shielded: a cancelled play must still stop its endless tone
                        with contextlib.suppress(Exception):
                            await asyncio.shield(player.stop(playback.id))
            if not looped:
                return
    except (CallError, AriError) as exc:
        if started is not None and not started.done():
            started.set_exception(exc if isinstance(exc, CallError) else CallError(f"play: {exc}"))
        log.debug("play ended: %s", exc, extra={"call": player.channel_id})
    finally:
        begun()


class Music:
    """Segments looped on one channel in the background until stopped: ringback, hold music."""

    def __init__(self, player: Player) -> None:
        self.player = player
        self._task: asyncio.Task[None] | None = None

    @property
    def playing(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start_loop(self, segments: Sequence[Segment]) -> None:
        """Loop `segments`; returns once the first playback was accepted (raises if it failed)."""
        await self.stop()
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(play_segments(self.player, segments, looped=True, started=started),
                                         name=f"music-{self.player.channel_id}")
        await asyncio.shield(started)

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def drop(self) -> None:
        """The channel is gone: stop the loop without talking to the switch."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
