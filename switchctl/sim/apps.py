"""Dialplan applications of the simulator, each modelled on its mod_dptools / switch_ivr source.

Every application is `async def app(channel, arg) -> None`; its Application-Response is whatever it left in the
channel variable `current_application_response` (`_none_` when unset), like switch_core_session_exec reads it.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Awaitable, Callable, Literal

from switchctl.sim.channel import SimChannel
from switchctl.sim.events import HANGUP_CAUSE_Q850
from switchctl.sim.media import INFINITE, FileNotFound, playback_seconds, say_file_count

AppFn = Callable[[SimChannel, str], Awaitable[None]]
PlayStatus = Literal["success", "break", "notfound", "error"]
ReadStatus = Literal["success", "timeout", "too_small", "false", "notfound", "error"]

APPLICATIONS: dict[str, AppFn] = {}
# Applications without SAF_SUPPORT_NOMEDIA: executing them on an inbound channel without media pre-answers it.
MEDIA_APPS = {"playback", "play_and_get_digits", "read", "say", "sleep", "record_session"}


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
        woke = await ch.wait(remaining, on_dtmf=mode is not None)
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
