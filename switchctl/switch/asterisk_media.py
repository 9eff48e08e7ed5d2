"""Prompts as the flows write them (FreeSWITCH style) -> what Asterisk's ARI can play. Pure: no I/O.

What real Asterisk 22 does with ARI playback (checked against the chroot Asterisk, see the report
of tests/test_asterisk_ivr.py and captures asterisk-scenarios/01_dtmf, 09_errors):
- `sound:<name>` takes a name without extension, relative to the sounds folder (language folder
  first). Flows hand us absolute host paths; Asterisk runs in a chroot and cannot see them, so the
  site's sound folders are installed under `sounds/switchctl/<site>/` and `site_sound_uri` maps
  `<sound_dir>/<rel>.<ext>` to `sound:switchctl/<site>/<rel>`.
- `tone:` playbacks never end by themselves (even `tone:!800/300`, a tone played once): the
  client must DELETE the playback. And ARI splits `media` on commas, so a tone list
  (`tone:!800/300,!0/200`) cannot be sent at all. Hence a tone is one playback per tone, stopped
  by us after its duration, and never part of a media list (a list waits on it forever).
- `silence_stream://N` needs no media: an idle Stasis channel already sends nothing. We wait N ms.
- `number:`/`digits:` say a value (`lang` picks the language).
- `recording:<name>` plays a stored recording: `<name>` is the file's path relative to Asterisk's
  recording dir (`<astspooldir>/recording`), sub-folders included, without extension. Recordings
  (voicemail messages) are handed to us as the switch's absolute path (RecordResult.path), so
  `site_sound_uri` maps `<recording_dir>/<rel>.<ext>` to `recording:<rel>` (checked on the private
  Asterisk 22 of tests/test_voicemail_asterisk.py: `recording:voicemail/<file>` plays to its end).
- FreeSWITCH's stock voicemail sounds (`voicemail/vm-*`, what the voicemail nodes ask for when the
  site has no file of that name) do not exist in Asterisk's sounds; `STOCK_SOUNDS` names Asterisk's
  core sound that says the same thing (`vm-msg_menu` has none: a site provides it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

SoundUri = Callable[[str], str]

# <astspooldir>/recording of a stock Asterisk (and of tools/asterisk-setup.sh's chroot): where ARI
# records, and the folder `recording:` names are relative to. asterisk_record.py uses the same.
RECORDING_DIR = "/var/spool/asterisk/recording"

# FreeSWITCH stock voicemail sound -> the Asterisk core sound (sounds/<lang>/) saying the same.
STOCK_SOUNDS = {
    "voicemail/vm-person": "vm-theperson",  # "the person at extension"
    "voicemail/vm-not_available": "vm-isunavail",  # "is unavailable"
    "voicemail/vm-record_message": "vm-intro",  # "leave your message after the tone ... pound key"
    "voicemail/vm-enter_pass": "vm-password",  # "password"
    "voicemail/vm-fail_auth": "vm-incorrect",  # "login incorrect"
    "voicemail/vm-you_have": "vm-youhave",  # "you have"
    "voicemail/vm-new": "vm-INBOX",  # "new"
    "voicemail/vm-messages": "vm-messages",  # "messages"
    "voicemail/vm-deleted": "vm-deleted",  # "message deleted"
    "voicemail/vm-saved": "vm-msgsaved",  # "your message has been saved"
    "voicemail/vm-no_more_messages": "vm-nomore",  # "no more messages"
    "voicemail/vm-goodbye": "vm-goodbye",  # "goodbye"
}

# Schemes ARI plays that a flow may already use as they are.
_ARI_SCHEMES = ("sound:", "recording:", "number:", "digits:", "characters:", "http:", "https:")
_TONE_ELEMENT = re.compile(r"%\((\d+),(\d+),(\d+(?:,\d+)*)\)")
_MAX_TONE_LOOPS = 100


class MediaError(ValueError):
    """A prompt that cannot be played on Asterisk (the message says why)."""


@dataclass(frozen=True, slots=True)
class MediaList:
    """Media URIs played as one ARI playback (ends by itself with PlaybackFinished)."""

    uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Tone:
    """One `tone:` playback that we stop after `seconds`."""

    uri: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Silence:
    seconds: float


Segment = MediaList | Tone | Silence


def recording_uri(path: str, recording_dir: str = RECORDING_DIR) -> str | None:
    """`recording:<name>` for a file the switch holds under its recording dir (a voicemail message
    at /var/spool/asterisk/recording/voicemail/x.wav -> recording:voicemail/x), None for a path
    outside it. Only the last suffix is a format (`x.y.wav` is the recording `x.y`)."""
    folder = PurePosixPath(recording_dir.rstrip("/") or "/")
    p = PurePosixPath(path)
    if ".." in p.parts or not p.is_relative_to(folder) or p == folder:
        return None
    rel = p.relative_to(folder)
    name = str(rel.with_suffix("")) if rel.suffix else str(rel)
    if not name or name.startswith(".") or "," in name or any(c.isspace() for c in name):
        raise MediaError(f"recording {path}: ARI cannot name it (empty, hidden, a comma or a space)")
    return f"recording:{name}"


def site_sound_uri(site_name: str, sound_dirs: Sequence[str | PurePosixPath], *,
                   recording_dir: str = RECORDING_DIR) -> SoundUri:
    """The convention deploy implements: the site's sound folders are copied (merged) into the
    switch's Asterisk sounds folder under `switchctl/<site_name>/`. Files under the switch's
    `recording_dir` (voicemail messages, greetings recorded over ARI) play as `recording:`."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", site_name):
        raise MediaError(f"site name '{site_name}' cannot be a sounds folder name")
    dirs = [PurePosixPath(str(d)) for d in sound_dirs]

    def uri(path: str) -> str:
        p = PurePosixPath(path)
        for folder in dirs:
            try:
                rel = p.relative_to(folder)
            except ValueError:
                continue
            return f"sound:switchctl/{site_name}/{rel.with_suffix('')}"
        recording = recording_uri(path, recording_dir)
        if recording is not None:
            return recording
        where = ", ".join(str(d) for d in dirs) or "none configured"
        raise MediaError(f"prompt {path} is outside the site's sound folders ({where}) and Asterisk's "
                         f"recording dir ({recording_dir}): Asterisk cannot play it")

    return uri


def _tone_segments(spec: str) -> list[Segment]:
    """`tone_stream://%(on,off,hz[,hz2...])[;%(...)][;loops=N]` (FreeSWITCH's teletone syntax,
    the subset flows use): each element is `on` ms of the frequencies, then `off` ms of silence."""
    body = spec[len("tone_stream://"):]
    loops = 1
    elements: list[tuple[int, int, str]] = []
    for part in (p.strip() for p in body.split(";")):
        if not part:
            continue
        if part.startswith(("loops=", "L=")):
            value = part.split("=", 1)[1]
            if not value.lstrip("-").isdigit() or not 1 <= int(value) <= _MAX_TONE_LOOPS:
                raise MediaError(f"{spec}: loops must be 1..{_MAX_TONE_LOOPS} on Asterisk (it cannot loop for ever here)")
            loops = int(value)
            continue
        found = _TONE_ELEMENT.fullmatch(part)
        if found is None:
            raise MediaError(f"{spec}: only %(on,off,hz[,hz...]) tones translate to Asterisk, not '{part}'")
        on, off, freqs = int(found.group(1)), int(found.group(2)), found.group(3).split(",")
        elements.append((on, off, "+".join(freqs)))
    if not elements:
        raise MediaError(f"{spec}: no tone in it")
    segments: list[Segment] = []
    for _ in range(loops):
        for on, off, freqs in elements:
            if on > 0:
                segments.append(Tone(f"tone:!{freqs}/{on}", on / 1000))
            if off > 0:
                segments.append(Silence(off / 1000))
    return segments


def prompt_segments(prompts: Sequence[str], sound_uri: SoundUri) -> list[Segment]:
    """Prompts in order as playable segments; consecutive sounds are merged into one media list
    (one playback, one PlaybackFinished)."""
    segments: list[Segment] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            segments.append(MediaList(tuple(pending)))
            pending.clear()

    for prompt in prompts:
        if prompt.startswith("silence_stream://"):
            value = prompt[len("silence_stream://"):].split(",", 1)[0]
            if not value.isdigit():
                raise MediaError(f"{prompt}: silence needs a number of milliseconds")
            flush()
            segments.append(Silence(int(value) / 1000))
        elif prompt.startswith("tone_stream://"):
            flush()
            segments.extend(_tone_segments(prompt))
        elif prompt.startswith("tone:"):
            raise MediaError(f"{prompt}: a raw tone: URI never ends on Asterisk; use tone_stream://%(on,off,hz)")
        elif prompt.startswith(_ARI_SCHEMES):
            if "," in prompt:
                raise MediaError(f"{prompt}: ARI splits media on commas")
            pending.append(prompt)
        elif prompt.startswith("/"):
            uri = sound_uri(prompt)
            if "," in uri:
                raise MediaError(f"{prompt}: ARI splits media on commas; rename the file")
            pending.append(uri)
        elif "://" in prompt:
            raise MediaError(f"{prompt}: this kind of prompt has no Asterisk equivalent")
        else:
            # A name relative to Asterisk's own sounds folder (`beep`, `digits/1`), or one of
            # FreeSWITCH's stock voicemail sounds, said by Asterisk's equivalent.
            if "," in prompt:
                raise MediaError(f"{prompt}: ARI splits media on commas")
            name = str(PurePosixPath(prompt).with_suffix(""))
            pending.append("sound:" + STOCK_SOUNDS.get(name, name))
    flush()
    return segments
