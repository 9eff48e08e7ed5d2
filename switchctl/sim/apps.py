"""Dialplan applications of the simulator, each modelled on its mod_dptools / switch_ivr source.

Every application is `async def app(channel, arg) -> None`; its Application-Response is whatever it left in the
channel variable `current_application_response` (`_none_` when unset), like switch_core_session_exec reads it.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
import weakref
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from switchctl.sim.channel import SimChannel
from switchctl.sim.events import HANGUP_CAUSE_Q850, RECORD_FILE_CALLING
from switchctl.sim.media import INFINITE, FileNotFound, playback_seconds, say_file_count

AppFn = Callable[[SimChannel, str], Awaitable[None]]
PlayStatus = Literal["success", "break", "notfound", "error"]
ReadStatus = Literal["success", "timeout", "too_small", "false", "notfound", "error"]

APPLICATIONS: dict[str, AppFn] = {}
# Applications without SAF_SUPPORT_NOMEDIA: executing them on an inbound channel without media pre-answers it.
MEDIA_APPS = {"playback", "play_and_get_digits", "read", "say", "sleep", "record_session", "record"}


def application(name: str) -> Callable[[AppFn], AppFn]:
    def register(fn: AppFn) -> AppFn:
        APPLICATIONS[name] = fn
        return fn
    return register


# --- media primitives (switch_ivr_play_say.c / switch_ivr.c) ------------------------------------------------

async def play_file(ch: SimChannel, path: str | None, *, mode: Literal["callback", "buf", None],
                    buf: list[str] | None = None, seconds: float | None = None) -> PlayStatus:
    """switch_ivr_play_file. `mode`:
    - "callback": playback's on_dtmf: every digit is dequeued; one in `playback_terminators` (default `*`) stops
      the file and is stored in playback_terminator_used (mod_dptools on_dtmf);
    - "buf": read/pagd prompt: the first digit is dequeued into `buf` and stops the prompt (barge-in);
    - None: args NULL (pagd's invalid file): digits stay queued, nothing stops the file.
    Cut by the caller's BYE -> error (PLAYBACK ERROR, s5 h3); by any other hangup -> success (FILE PLAYED, s5 h1).
    """
    if not path:
        return "success"
    if seconds is None:
        try:
            seconds = playback_seconds(path, file_seconds=ch.sim.config.file_seconds,
                                       missing=ch.sim.config.missing_files)
        except FileNotFound:
            ch.sim.log("ERR", f"Can't open {path}", channel=ch)
            return "notfound"
    loop = asyncio.get_running_loop()
    speed = ch.sim.config.media_speed
    started = loop.time()
    end = None if seconds == INFINITE else started + seconds / speed
    ch.fire("PLAYBACK_START", [("Playback-File-Path", path)])
    status: PlayStatus = "success"
    while True:
        remaining = None if end is None else max(0.0, (end - loop.time()) * speed)
        woke = await ch.wait(remaining, on_dtmf=mode is not None, until=lambda: ch.break_media)
        if woke == "until":  # uuid_break: switch_ivr_play_file sees CF_BREAK and returns BREAK
            ch.break_media = False
            status = "break"
            break
        if woke == "dtmf":
            digit = ch.dequeue_dtmf()
            if digit is None:
                continue
            if mode == "buf" and buf is not None:
                buf.append(digit)
                status = "break"
                break
            terminators = ch.vars.get("playback_terminators", "*")
            if terminators.lower() == "any":
                terminators = "1234567890*#"
            elif terminators.lower() == "none":
                terminators = ""
            if digit in terminators:
                ch.set_var("playback_terminator_used", digit)
                status = "break"
                break
            continue
        if woke == "hangup":
            status = "error" if ch.hangup_kind == "caller" else "success"
        break
    played_ms = int((loop.time() - started) * speed * 1000)
    ch.set_var("playback_ms", str(played_ms))
    ch.set_var("playback_seconds", str(played_ms // 1000))
    ch.set_var("playback_samples", str(played_ms * 8))
    ch.set_var("playback_last_offset_pos", str(played_ms * 8))
    ch.fire("PLAYBACK_STOP", [("Playback-File-Path", path),
                              ("Playback-Status", "break" if status == "break" else "done")])
    return status


async def collect_digits_count(ch: SimChannel, buf: list[str], max_digits: int, terminators: str,
                               first_timeout: int, digit_timeout: int) -> tuple[ReadStatus, str]:
    """switch_ivr_collect_digits_count (switch_ivr.c): returns (status, terminator)."""
    if len(buf) >= max_digits:
        return "false", ""
    for index, digit in enumerate(buf):
        if terminators and digit in terminators:
            del buf[index:]
            return "success", digit
    if digit_timeout and first_timeout:
        eff_timeout = first_timeout
    elif digit_timeout and not first_timeout:
        eff_timeout = digit_timeout
    else:
        eff_timeout = digit_timeout = first_timeout
    loop = asyncio.get_running_loop()
    speed = ch.sim.config.media_speed
    digit_started = loop.time()
    while True:
        if ch.hungup or ch.transfer_to is not None:
            return "false", ""
        remaining = None
        if eff_timeout:
            elapsed_media_ms = (loop.time() - digit_started) * speed * 1000
            if elapsed_media_ms >= eff_timeout:
                return "timeout", ""
            remaining = (eff_timeout - elapsed_media_ms) / 1000
        if ch.dtmf_buffer:
            if eff_timeout:
                eff_timeout = digit_timeout
                digit_started = loop.time()
            while ch.dtmf_buffer:
                digit = ch.dequeue_dtmf()
                assert digit is not None
                if terminators and digit in terminators:
                    return "success", digit
                buf.append(digit)
                if len(buf) >= max_digits:
                    return "success", ""
            continue
        await ch.wait(remaining, on_dtmf=True)


async def ivr_read(ch: SimChannel, min_digits: int, max_digits: int, prompt: str | None, var_name: str | None,
                   timeout: int, terminators: str, digit_timeout: int) -> tuple[ReadStatus, str]:
    """switch_ivr_read (switch_ivr_play_say.c), outcome for outcome: read_result success / timeout / failure."""
    term_required = terminators.startswith("=")
    if not digit_timeout:
        digit_timeout = timeout
    if max_digits < min_digits:
        max_digits = min_digits
    ch.set_var("read_result", None)
    if var_name:
        ch.set_var(var_name, None)
    ch.pre_answer()
    buf: list[str] = []
    status: ReadStatus = "success"
    if prompt and prompt.lower() != "silence":
        played = await play_file(ch, prompt, mode="buf", buf=buf)
        status = "success" if played in ("success", "break") else played  # type: ignore[assignment]
    if status == "success":
        terminator = ""
        if (min_digits and len(buf) < min_digits) or len(buf) < max_digits:
            status, terminator = await collect_digits_count(
                ch, buf, max_digits, terminators, digit_timeout if buf else timeout, digit_timeout)
        if terminator:
            ch.set_var("read_terminator_used", terminator)
            position = terminators.find(terminator)
            if position >= 1 and terminators[position - 1] in "+x":
                buf.append(terminator)  # `+#`: the terminator is kept in the digits
        elif term_required:
            status = "too_small"
        if min_digits and len(buf) < min_digits:
            status = "too_small"
        ch.set_var("read_result", {"success": "success", "timeout": "timeout"}.get(status, "failure"))
    if max_digits == 1 and len(buf) == 1 and terminators and buf[0] in terminators:
        buf.clear()
    digits = "".join(buf)
    if var_name and digits:
        ch.set_var(var_name, digits)
    return status, digits


def _split(arg: str, limit: int) -> list[str]:
    """switch_separate_string on ' ' with at most `limit` fields (the last keeps the rest)."""
    parts = arg.split()
    if len(parts) > limit:
        parts = parts[: limit - 1] + [" ".join(parts[limit - 1:])]
    return parts


def _atoi(text: str | None, default: int = 0) -> int:
    match = re.match(r"\s*[-+]?\d+", text or "")
    return int(match.group(0)) if match else default


# --- applications --------------------------------------------------------------------------------------------

@application("answer")
async def app_answer(ch: SimChannel, arg: str) -> None:
    ch.mark_answered()


@application("pre_answer")
async def app_pre_answer(ch: SimChannel, arg: str) -> None:
    ch.pre_answer()


@application("playback")
async def app_playback(ch: SimChannel, arg: str) -> None:
    """mod_dptools playback_function: FILE PLAYED / FILE NOT FOUND / PLAYBACK ERROR."""
    ch.set_var("playback_terminator_used", None)
    status = await play_file(ch, arg.strip(), mode="callback")
    response = {"success": "FILE PLAYED", "break": "FILE PLAYED", "notfound": "FILE NOT FOUND"}.get(
        status, "PLAYBACK ERROR")
    ch.set_var("current_application_response", response)


@application("play_and_get_digits")
async def app_play_and_get_digits(ch: SimChannel, arg: str) -> None:
    """mod_dptools play_and_get_digits_function + switch_play_and_get_digits, including their quirks (s2):
    all tries failing the regex leave read_result=success and only <var>_invalid; the invalid file is played
    after every failed try, including the last."""
    argv = _split(arg, 11)
    if not argv:
        ch.sim.log("ERR", "No arguments specified.", channel=ch)
        return
    get = lambda i: argv[i] if len(argv) > i else None  # noqa: E731
    min_digits = max(0, _atoi(get(0)))
    max_digits = max(_atoi(get(1)), min_digits)
    max_tries = _atoi(get(2))
    timeout = max(_atoi(get(3), 1000), 1000)
    terminators = get(4) or "#"
    prompt, bad_input, var_name, regex = get(5), get(6), get(7), get(8)
    digit_timeout = _atoi(get(9))
    transfer_on_failure = get(10)
    if ch.hooks.on_collect_start is not None:
        ch.hooks.on_collect_start()
    if regex and var_name:
        ch.set_var(f"{var_name}_invalid", None)
    while ch.ready and ch.transfer_to is None and max_tries > 0:
        status, digits = await ivr_read(ch, min_digits, max_digits, prompt, var_name, timeout, terminators,
                                        digit_timeout)
        if status == "timeout" and len(digits) >= min_digits:
            status = "success"
        if min_digits == 0 and not digits and "read_terminator_used" in ch.vars:
            return
        if not (status == "too_small" and not digits) and status == "success" and digits:
            if not regex:
                return
            try:
                matched = re.search(regex, digits) is not None
            except re.error:
                matched = False
            if matched:
                return
            ch.set_var(var_name or "", None)
            if var_name:
                ch.set_var(f"{var_name}_invalid", digits)
        if not ch.ready:
            break
        await play_file(ch, bad_input, mode=None)
        max_tries -= 1
    if transfer_on_failure and ch.ready:
        target = transfer_on_failure.split()
        ch.sim.log("WARNING", "PAGD failure! Transfer to: " + " / ".join(target + ["(null)"] * (3 - len(target))),
                   channel=ch)
        ch.sim.transfer(ch, target[0], target[1] if len(target) > 1 else None,
                        target[2] if len(target) > 2 else None)


@application("read")
async def app_read(ch: SimChannel, arg: str) -> None:
    """mod_dptools read_function: `<min> <max> <file> <var> <timeout> <terminators> [digit_timeout]`;
    min is forced to >= 1 and timeout to >= 1000 ms."""
    argv = _split(arg, 7)
    if not argv:
        ch.sim.log("ERR", "No arguments specified.", channel=ch)
        return
    get = lambda i: argv[i] if len(argv) > i else None  # noqa: E731
    min_digits = max(_atoi(get(0)), 1)
    max_digits = max(_atoi(get(1)), min_digits)
    timeout = max(_atoi(get(4), 1000), 1000)
    if ch.hooks.on_collect_start is not None:
        ch.hooks.on_collect_start()
    await ivr_read(ch, min_digits, max_digits, get(2), get(3), timeout, get(5) or "#", _atoi(get(6)))


@application("say")
async def app_say(ch: SimChannel, arg: str) -> None:
    """mod_dptools say: `<module> <type> <method> [gender] <text>`; mod_say_en plays one file per word."""
    argv = arg.split()
    if len(argv) < 4:
        ch.sim.log("ERR", "Usage: say <module_name>[:<lang>] <say_type> <say_method> [<say_gender>] <text>",
                   channel=ch)
        return
    text = argv[-1]
    files = say_file_count(argv[1], argv[2], text)
    await play_file(ch, f"say://{argv[0]}/{argv[1]}/{text}", mode="callback",
                    seconds=files * ch.sim.config.file_seconds)


@application("sleep")
async def app_sleep(ch: SimChannel, arg: str) -> None:
    """switch_ivr_sleep: a queued digit breaks it (args without callback), the digit stays queued."""
    if not arg.strip():
        ch.sim.log("ERR", "No timeout specified.", channel=ch)
        return
    await ch.wait(_atoi(arg) / 1000.0, on_dtmf=True)


def _set_assignment(ch: SimChannel, arg: str, app: str) -> tuple[str, str | None] | None:
    if "=" not in arg:
        ch.sim.log("ERR", f"{app}: Usage: <var>=<value>", channel=ch)
        return None
    name, value = arg.split("=", 1)
    return name.strip(), (value if value != "" else None)


@application("set")
async def app_set(ch: SimChannel, arg: str) -> None:
    assignment = _set_assignment(ch, arg, "set")
    if assignment:
        ch.set_var(*assignment)


@application("export")
async def app_export(ch: SimChannel, arg: str) -> None:
    """export: set here and remember the name in export_vars for the legs this channel originates."""
    assignment = _set_assignment(ch, arg, "export")
    if assignment:
        name, value = assignment
        if name.startswith("nolocal:"):
            name = name[len("nolocal:"):]
        else:
            ch.set_var(name, value)
        exported = [v for v in ch.vars.get("export_vars", "").split(",") if v]
        if name not in exported:
            exported.append(name)
        ch.set_var("export_vars", ",".join(exported))
        ch.exported[name] = value or ""


@application("unset")
async def app_unset(ch: SimChannel, arg: str) -> None:
    ch.set_var(arg.strip(), None)


@application("hangup")
async def app_hangup(ch: SimChannel, arg: str) -> None:
    cause = arg.strip() or "NORMAL_CLEARING"
    ch.hangup(cause if cause in _KNOWN_CAUSES else "NORMAL_CLEARING", kind="session")


@application("sched_hangup")
async def app_sched_hangup(ch: SimChannel, arg: str) -> None:
    """mod_dptools sched_hangup_function: `+N [cause]` (default ALLOTTED_TIMEOUT, s5 h1) or an epoch time."""
    argv = arg.split()
    if not argv:
        ch.sim.log("ERR", "No time specified.", channel=ch)
        return
    cause = argv[1] if len(argv) > 1 and argv[1] in _KNOWN_CAUSES else "ALLOTTED_TIMEOUT"
    seconds = _atoi(argv[0][1:]) if argv[0].startswith("+") else _atoi(argv[0]) - int(time.time())
    if argv[0].startswith("+") and seconds == 0:
        ch.hangup(cause, kind="session")
    else:
        ch.schedule_hangup(seconds, cause)


@application("log")
async def app_log(ch: SimChannel, arg: str) -> None:
    level, _, text = arg.partition(" ")
    if level.upper() not in _LOG_LEVELS:
        level, text = "DEBUG", arg
    ch.sim.log(level.upper(), text, channel=ch)


@application("info")
async def app_info(ch: SimChannel, arg: str) -> None:
    ch.sim.log("INFO", f"CHANNEL_DATA: {ch.data.name} {ch.uuid}", channel=ch)


@application("endless_playback")
async def app_endless_playback(ch: SimChannel, arg: str) -> None:
    """mod_dptools endless_playback_function: plays the file again while the channel is ready; a BREAK
    (uuid_break) only restarts it. A transfer or a hangup ends it (the channel is no longer ready)."""
    status: PlayStatus = "success"
    while ch.ready and ch.transfer_to is None:
        status = await play_file(ch, arg.strip(), mode=None)
        if status not in ("success", "break"):
            break
    ch.set_var("current_application_response", {"success": "FILE PLAYED", "break": "FILE PLAYED",
                                                 "notfound": "FILE NOT FOUND"}.get(status, "PLAYBACK ERROR"))


@application("park")
async def app_park(ch: SimChannel, arg: str) -> None:
    await ch.park(while_=lambda: True)


@application("transfer")
async def app_transfer(ch: SimChannel, arg: str) -> None:
    """`transfer <ext> [XML] [context]`: the channel leaves what it runs and re-enters the dialplan."""
    argv = arg.split()
    if not argv:
        ch.sim.log("ERR", "Usage: transfer <exten> [<dialplan> <context>]", channel=ch)
        return
    ch.sim.transfer(ch, argv[0], argv[1] if len(argv) > 1 else None, argv[2] if len(argv) > 2 else None)


_LOG_LEVELS = {"CONSOLE", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG"}
_KNOWN_CAUSES = set(HANGUP_CAUSE_Q850)


# --- recording (switch_ivr_play_say.c switch_ivr_record_file_event, switch_ivr_async.c media bugs) -------------
# The simulator has no audio: what the caller "says" is a length of speech (media seconds from the start of a
# `record`), after which the caller is silent. Files are written as FreeSWITCH writes them for an 8 kHz
# PCMU call (s7: 44-byte RIFF header + 16-bit mono samples; 1520 ms -> 24364 bytes), all silence.

RATE = 8000
DEFAULT_CALLER_SPEECH = 2.0
_CALLER_SPEECH: weakref.WeakKeyDictionary[SimChannel, float] = weakref.WeakKeyDictionary()


def set_caller_speech(ch: SimChannel, seconds: float) -> None:
    """The caller on `ch` speaks for `seconds` (media time; math.inf: never stops) at each `record`."""
    _CALLER_SPEECH[ch] = seconds


def caller_speech(ch: SimChannel) -> float:
    return _CALLER_SPEECH.get(ch, DEFAULT_CALLER_SPEECH)


def wav_bytes(samples: int) -> bytes:
    """A 16-bit mono 8 kHz PCM WAV of `samples` samples of silence (what mod_sndfile writes, s7 sizes)."""
    data = samples * 2
    header = b"".join([
        b"RIFF", (36 + data).to_bytes(4, "little"), b"WAVE",
        b"fmt ", (16).to_bytes(4, "little"), (1).to_bytes(2, "little"), (1).to_bytes(2, "little"),
        RATE.to_bytes(4, "little"), (RATE * 2).to_bytes(4, "little"), (2).to_bytes(2, "little"),
        (16).to_bytes(2, "little"),
        b"data", data.to_bytes(4, "little"),
    ])
    return header + bytes(data)


def write_recording(path: str, samples: int) -> bool:
    """Write the file when its directory exists on this machine (the sim's switch filesystem is ours)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return False
    with open(path, "wb") as out:
        out.write(wav_bytes(samples))
    return True


def _record_vars(ch: SimChannel, samples: int, *, app: bool) -> None:
    """The record_* variables in FreeSWITCH's order: the `record` app sets record_record_file_size,
    record_file_size, record_seconds, record_ms, record_samples; a media bug record_file_size,
    record_samples, record_seconds, record_ms (send_record_stop_event)."""
    size = str(44 + samples * 2)
    if app:
        ch.set_var("record_record_file_size", size)
        ch.set_var("record_file_size", size)
        ch.set_var("record_seconds", str(samples // RATE))
        ch.set_var("record_ms", str(samples // (RATE // 1000)))
        ch.set_var("record_samples", str(samples))
    else:
        ch.set_var("record_file_size", size)
        ch.set_var("record_samples", str(samples))
        ch.set_var("record_seconds", str(samples // RATE))
        ch.set_var("record_ms", str(samples // (RATE // 1000)))


def _fire_record_file_event(ch: SimChannel, name: str, path: str) -> None:
    headers = ch.sim.events.channel_event(name, ch.data, now_us=int(time.time_ns() // 1000),
                                          extra=[("Record-File-Path", path)], calling=RECORD_FILE_CALLING[name])
    ch.sim.dispatch(name, headers, None)


def _frames(media_seconds: float) -> int:
    """Samples of whole 20 ms frames (FreeSWITCH writes frame by frame)."""
    return int(media_seconds * 50) * (RATE // 50)


@application("record")
async def app_record(ch: SimChannel, arg: str) -> None:
    """mod_dptools record_function: `record <path> [+][<limit secs>] [<silence thresh>] [<silence hits secs>]`.

    Ends on a digit in playback_terminators (default `*`; stored in playback_terminator_used), on
    `hits` seconds of silence (thresh > 0; hits 0 -> 3 s; sets silence_hits_exhausted=true), on the time
    limit or on the hangup. The limit counts whole epoch seconds: it ends once now - start > limit, so
    a recording lasts between limit and limit + 1 s. Unlike FreeSWITCH (which hangs up with
    DESTINATION_OUT_OF_ORDER when it cannot open the file) a missing directory only skips the file.
    """
    argv = arg.split()
    if not argv:
        ch.sim.log("ERR", "No file specified.", channel=ch)
        return
    path = argv[0]
    limit = _atoi(argv[1].lstrip("+")) if len(argv) > 1 else 0
    thresh = _atoi(argv[2]) if len(argv) > 2 else 0
    hits = (_atoi(argv[3]) if len(argv) > 3 else 0) or 3
    ch.set_var("playback_terminator_used", None)
    ch.set_var("silence_hits_exhausted", "false")
    loop = asyncio.get_running_loop()
    speed = ch.sim.config.media_speed
    started = loop.time()
    # media seconds from the start at which each way of ending is due
    ends = [math.inf]
    if limit:
        ends.append(limit + 1 - (time.time() % 1.0))
    silence_end = caller_speech(ch) + hits if thresh else math.inf
    ends.append(silence_end)
    _fire_record_file_event(ch, "RECORD_START", path)
    if ch.hooks.on_collect_start is not None:
        ch.hooks.on_collect_start()  # a scripted caller presses keys / hangs up now
    while True:
        elapsed = (loop.time() - started) * speed
        due = min(ends)
        if elapsed >= due:
            if due == silence_end:
                ch.set_var("silence_hits_exhausted", "true")
            break
        woke = await ch.wait(due - elapsed, on_dtmf=True)
        if woke == "dtmf":
            digit = ch.dequeue_dtmf()
            terminators = ch.vars.get("playback_terminators", "*")
            if terminators.lower() == "any":
                terminators = "1234567890*#"
            elif terminators.lower() == "none":
                terminators = ""
            if digit is not None and digit in terminators:
                ch.set_var("playback_terminator_used", digit)
                break
            continue
        if woke in ("hangup", "transfer"):
            break
    samples = _frames((loop.time() - started) * speed)
    write_recording(path, samples)
    _record_vars(ch, samples, app=True)
    _fire_record_file_event(ch, "RECORD_STOP", path)


@dataclass
class MediaBugRecording:
    """One `uuid_record start` / `record_session` recording (both directions, goes on across bridges)."""

    path: str
    started: float  # loop time
    masked: bool = False
    paused_at: float | None = None
    paused_total: float = 0.0

    def media_seconds(self, now: float, speed: float) -> float:
        paused = self.paused_total + ((now - self.paused_at) if self.paused_at is not None else 0.0)
        return max(0.0, (now - self.started - paused) * speed)


_MEDIA_BUGS: weakref.WeakKeyDictionary[SimChannel, dict[str, MediaBugRecording]] = weakref.WeakKeyDictionary()


def media_bugs(ch: SimChannel) -> dict[str, MediaBugRecording]:
    """The running recordings of `ch` by path (tests look at `masked` / `paused_at`)."""
    return _MEDIA_BUGS.setdefault(ch, {})


def start_media_bug(ch: SimChannel, path: str) -> bool:
    """switch_ivr_record_session_event: RECORD_START as the bug starts (s7: right after `+OK Success`)."""
    if ch.hungup:
        return False
    bugs = media_bugs(ch)
    if path in bugs:
        return True
    bugs[path] = MediaBugRecording(path, asyncio.get_running_loop().time())
    if not getattr(ch, "_sim_record_hangup_hook", False):
        # The bugs close as the channel enters CS_HANGUP (s7: CHANNEL_STATE CS_HANGUP, RECORD_STOP,
        # CHANNEL_STATE CS_REPORTING): wrap this channel's on_hangup_state.
        endpoint_hook = ch.on_hangup_state

        def on_hangup_state() -> None:
            for bug_path in list(media_bugs(ch)):
                stop_media_bug(ch, bug_path, cause="success-silence")
            endpoint_hook()

        ch.on_hangup_state = on_hangup_state  # type: ignore[method-assign]
        ch._sim_record_hangup_hook = True  # type: ignore[attr-defined]
    ch.fire("RECORD_START", [("Record-File-Path", path)])
    return True


def stop_media_bug(ch: SimChannel, path: str, *, cause: str = "success-maxtime") -> bool:
    """switch_ivr_stop_record_session / the bug's CLOSE: write the file, record_* variables, RECORD_STOP
    with Record-Completion-Cause (stopped on a live channel: success-maxtime; closed by the hangup:
    success-silence, s7). False when no recording of `path` runs (`-ERR Cannot stop record session!`)."""
    bug = media_bugs(ch).pop(path, None)
    if bug is None:
        return False
    samples = _frames(bug.media_seconds(asyncio.get_running_loop().time(), ch.sim.config.media_speed))
    write_recording(path, samples)
    _record_vars(ch, samples, app=False)
    ch.set_var("record_completion_cause", cause)
    ch.fire("RECORD_STOP", [("Record-File-Path", path), ("Record-Completion-Cause", cause)])
    return True


def pause_media_bug(ch: SimChannel, path: str, *, pause: bool) -> bool:
    bug = media_bugs(ch).get(path)
    if bug is None:
        return False
    now = asyncio.get_running_loop().time()
    if pause and bug.paused_at is None:
        bug.paused_at = now
    elif not pause and bug.paused_at is not None:
        bug.paused_total += now - bug.paused_at
        bug.paused_at = None
    return True


def mask_media_bug(ch: SimChannel, path: str, *, mask: bool) -> bool:
    """Masked audio is written as silence: the file keeps its length (all of the sim's audio is silence)."""
    bug = media_bugs(ch).get(path)
    if bug is None:
        return False
    bug.masked = mask
    return True


@application("record_session")
async def app_record_session(ch: SimChannel, arg: str) -> None:
    """`record_session <path>`: starts a media bug and returns at once (s7)."""
    path = arg.split()[0] if arg.split() else ""
    if not path:
        ch.sim.log("ERR", "No file specified.", channel=ch)
        return
    start_media_bug(ch, path)


@application("stop_record_session")
async def app_stop_record_session(ch: SimChannel, arg: str) -> None:
    path = arg.strip()
    if path.lower() == "all":
        for bug_path in list(media_bugs(ch)):
            stop_media_bug(ch, bug_path)
    elif path:
        stop_media_bug(ch, path)
