"""How long media lasts, computed from what FreeSWITCH would play. Pure functions, no I/O.

Durations are in media seconds (the engine divides them by `media_speed`).
"""

from __future__ import annotations

import math
import re

INFINITE = math.inf

_TONE_SEGMENT = re.compile(r"%\(\s*(\d+)\s*,\s*(\d+)\s*(?:,[^)]*)?\)")
_LOOPS = re.compile(r"(?:^|;)\s*(?:loops|L)\s*=\s*(-?\d+)")


class FileNotFound(Exception):
    """`playback` answers `FILE NOT FOUND` for this path (mod_dptools playback_function, SWITCH_STATUS_NOTFOUND)."""


def tone_stream_seconds(spec: str) -> float:
    """Length of a teletone script: every `%(on,off,freqs...)` segment, times `loops=N` (`-1`: forever).

    Captured: `tone_stream://%(400,100,600);loops=1` played 0.52 s (s1 v1b, EXECUTE 0.045 -> COMPLETE 0.567);
    `%(1000,0,440);loops=10` ran 10 s (s5 h1 was cut by a 3 s sched_hangup).
    """
    total_ms = sum(int(on) + int(off) for on, off in _TONE_SEGMENT.findall(spec))
    loops_match = _LOOPS.search(spec)
    loops = int(loops_match.group(1)) if loops_match else 1
    if loops < 0:
        return INFINITE
    return total_ms * max(loops, 1) / 1000.0


def playback_seconds(path: str, *, file_seconds: float, missing: frozenset[str] = frozenset()) -> float:
    """How long `playback <path>` plays. Raises FileNotFound for a missing file.

    `silence_stream://<ms>` lasts ms (negative: forever); `tone_stream://` per tone_stream_seconds;
    `file_string://a!b` plays each file in turn; any other path is a sound file of `file_seconds`.
    """
    path = path.strip()
    if path.startswith("file_string://"):
        return sum(playback_seconds(p, file_seconds=file_seconds, missing=missing)
                   for p in path[len("file_string://"):].split("!") if p)
    if path.startswith("silence_stream://"):
        ms_text = path[len("silence_stream://"):].split(",", 1)[0].strip()
        try:
            ms = int(ms_text)
        except ValueError:
            raise FileNotFound(path) from None
        return INFINITE if ms < 0 else ms / 1000.0
    if path.startswith("local_stream://"):
        return INFINITE  # mod_local_stream: a stream that never ends
    if path.startswith("tone_stream://"):
        return tone_stream_seconds(path[len("tone_stream://"):])
    if not path or path in missing:
        raise FileNotFound(path)
    return file_seconds


def _group_files(n: int) -> int:
    """Sound files mod_say_en plays for 0 < n < 1000: `digits/N`, `digits/hundred`, tens, ones (teens are one)."""
    files = 0
    hundreds, rest = divmod(n, 100)
    if hundreds:
        files += 2  # digits/<h>.wav + digits/hundred.wav
    if rest:
        if rest < 20:
            files += 1
        else:
            tens, ones = divmod(rest, 10)
            files += 1 + (1 if ones else 0)
    return files


def say_file_count(say_type: str, method: str, text: str) -> int:
    """How many sound files `say en <type> <method> <text>` plays (mod_say_en: one file per word).

    NUMBER pronounced: groups of thousands, each followed by its `digits/thousand|million|billion` file;
    iterated / DIGITS / anything spelled: one file per character.
    """
    say_type, method = say_type.lower(), method.lower()
    digits = re.sub(r"[^0-9]", "", text)
    if say_type in ("number", "items", "persons", "messages", "currency") and method == "pronounced":
        if not digits:
            return 0
        value = int(digits)
        if value == 0:
            return 1  # digits/0.wav
        files = 1 if text.strip().startswith("-") else 0  # currency/negative.wav
        for scale in (1_000_000_000, 1_000_000, 1_000):
            group, value = divmod(value, scale)
            if group:
                files += _group_files(group) + 1
        files += _group_files(value)
        return files
    # iterated, counted-as-digits, name_spelled, ...: one file per character said
    return len([c for c in text if not c.isspace()])
