"""Demo calls with sipp: one real SIP call to a switch, RFC 2833 digits at set times, and a report.

`switchctl sipcall` (and the slow tests) use this to check a running site end to end: sipp
(Debian's `sip-tester`) calls a number on the switch's SIP address, presses digits like a caller
who answers the menu while it is still playing, and waits for the switch to hang up (or hangs up
itself). What the switch did to the call is watched over ARI when the switch is an Asterisk.

Why the pieces look the way they do:
- The digits go as ONE continuous RTP stream written here as a pcap (PCMU silence + RFC 2833
  events, one SSRC, rising sequence numbers). sip-tester's own dtmf_2833_<d>.pcap files cannot be
  chained: each has fixed sequence numbers, so Asterisk drops a digit whose file numbers "before"
  the previous one, and a repeated digit as a duplicate (see tests/test_asterisk_ivr.py).
- sipp's exit code only says whether the scenario ran through; what happened (answered when,
  who hung up, a rejection) is read back from the log lines the scenario writes (`-trace_logs`).
- The observer is its own Stasis application with `subscribeAll`: it sees the call's events
  (StasisStart in the controller's app, prompts, DTMF, hangup cause) without taking the call.
  The call is recognised by the caller name this module puts in From.
Everything listens on 127.0.0.1, on ports that are free at the time; sipp is bounded by
`-m 1`, its own `-timeout` and a kill after that.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "DTMF_EVENTS", "DemoCallError", "DemoCallResult", "Observed", "PressPlan", "SipTarget",
    "format_result", "free_udp_port", "place_call", "plan_presses", "scenario_text", "write_dtmf_pcap",
]

Step = tuple[float, str]  # (seconds after the previous step, digit or "" for a pause)

DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, **{c: 12 + i for i, c in enumerate("ABCD")}}
HANGUP = "hangup"   # a press that hangs up instead of pressing digits
NOTHING = "-"       # a press that presses nothing (lets the prompt time out)

FIRST_PRESS_S = 3.0   # first group this long after the answer: the caller presses during the prompt
PRESS_EVERY_S = 3.0   # one group every ...
DIGIT_S = 0.1         # each digit's tone lasts ...
DIGIT_GAP_S = 0.1     # ... with this much silence before the group's next digit
SIPP_SLACK_S = 30     # sipp's own -timeout: the call's timeout + ringing/teardown slack
NO_RESPONSE_S = 5.0   # no SIP answer at all (not even 100 Trying) this long: nobody listens there
REJECTION_CODES = (403, 404, 408, 480, 486, 487, 488, 500, 502, 503, 603)


class DemoCallError(Exception):
    """The call could not be placed at all (no sipp, bad press); the message says why."""


@dataclass(frozen=True)
class SipTarget:
    """Where sipp sends the INVITE (the switch's SIP address)."""

    host: str
    port: int


@dataclass(frozen=True)
class PressPlan:
    """Digits as pcap steps (relative to the answer), and when the caller hangs up (None: never)."""

    steps: tuple[Step, ...]
    hangup_after_s: float | None
    groups: tuple[tuple[float, str], ...]  # (seconds after answer, the press as given)


def plan_presses(presses: Sequence[str], *, first_s: float = FIRST_PRESS_S, every_s: float = PRESS_EVERY_S,
                 digit_s: float = DIGIT_S, gap_s: float = DIGIT_GAP_S) -> PressPlan:
    """One group per press: the first `first_s` after answer, then every `every_s`; a group's digits
    follow each other `gap_s` apart. '-' presses nothing; 'hangup' hangs up then (and ends the plan)."""
    steps: list[Step] = []
    groups: list[tuple[float, str]] = []
    at = 0.0  # where the steps so far end
    for index, press in enumerate(presses):
        when = first_s + index * every_s
        press = press.strip()
        groups.append((when, press))
        if press == HANGUP:
            return PressPlan(tuple(steps), when, tuple(groups))
        if press in (NOTHING, ""):
            continue
        bad = [c for c in press if c not in DTMF_EVENTS]
        if bad:
            raise DemoCallError(f"press {press!r}: {''.join(bad)!r} is no DTMF digit (0-9 * # A-D), "
                                f"'{NOTHING}' (nothing) or '{HANGUP}'")
        if when < at:
            raise DemoCallError(f"press {press!r} is too long for one group every {every_s:g} s")
        for k, digit in enumerate(press):
            start = when + k * (digit_s + gap_s)
            steps.append((start - at, digit))
            at = start
    return PressPlan(tuple(steps), None, tuple(groups))


def write_dtmf_pcap(path: Path, script: Sequence[Step], *, digit_s: float = DIGIT_S, tail_s: float = 0.3) -> float:
    """Write an RTP stream as a pcap for sipp's play_pcap_audio: PCMU silence every 20 ms with RFC
    2833 events at the script's times, one SSRC, continuous sequence numbers and timestamps.
    Returns the stream's length in seconds."""
    starts: list[tuple[float, int]] = []
    at = 0.0
    for delay, digit in script:
        at += delay
        if digit:
            starts.append((at, DTMF_EVENTS[digit]))
    length = at + digit_s + tail_s
    packets: list[tuple[float, bytes]] = []
    seq, ssrc = 4000, 0x5C5C0002
    pending = list(starts)
    active: tuple[float, int, int] | None = None  # start time, event, rtp timestamp of the event
    for tick in range(int(length / 0.02) + 1):
        now = tick * 0.02
        ts = tick * 160
        first = False
        if active is None and pending and now >= pending[0][0] - 1e-9:
            _, event = pending.pop(0)
            active = (now, event, ts)
            first = True
        if active is not None:
            start, event, event_ts = active
            elapsed = now - start
            ended = elapsed + 0.02 >= digit_s - 1e-9
            duration = round((elapsed + 0.02) * 8000)
            payload = struct.pack(">BBH", event, (0x80 if ended else 0) | 10, duration)
            marker = 0x80 if first else 0
            for _ in range(3 if ended else 1):  # the end packet goes three times (RFC 4733)
                header = struct.pack(">BBHII", 0x80, marker | 101, seq & 0xFFFF, event_ts, ssrc)
                packets.append((now, header + payload))
                seq += 1
                marker = 0
            if ended:
                active = None
            continue
        header = struct.pack(">BBHII", 0x80, 0, seq & 0xFFFF, ts, ssrc)
        packets.append((now, header + b"\xff" * 160))
        seq += 1
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap header, Ethernet
    for when, rtp in packets:
        udp = struct.pack(">HHHH", 7000, 7002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        micros = round(when * 1e6)
        out.append(struct.pack("<IIII", 1_700_000_000 + micros // 1_000_000, micros % 1_000_000,
                               len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return length


def scenario_template() -> str:
    return resources.files("switchctl").joinpath("data/sipp/uac_democall.xml").read_text("utf-8")


def scenario_text(*, caller: str, caller_name: str, pcap: Path | None, wait_ms: int,
                  template: str | None = None) -> str:
    """The sipp scenario for one demo call (the template's @@...@@ fields filled in)."""
    for what, value in (("caller", caller), ("caller name", caller_name)):
        if not re.fullmatch(r"[A-Za-z0-9+*#._-]+", value):
            raise DemoCallError(f"{what} {value!r}: use letters, digits and + * # . _ - only")
    script = f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>' if pcap else ""
    rejections = "\n  ".join(
        f'<recv response="{code}" optional="true" next="rejected">'
        f'<action><log message="REJECTED {code} [clock_tick]"/></action></recv>'
        for code in REJECTION_CODES)
    text = template if template is not None else scenario_template()
    return (text.replace("@@REJECTIONS@@", rejections).replace("@@SCRIPT@@", script)
            .replace("@@WAIT_MS@@", str(max(1, wait_ms)))
            .replace("@@NO_RESPONSE_MS@@", str(round(NO_RESPONSE_S * 1000)))
            .replace("@@CALLER_NAME@@", caller_name).replace("@@CALLER@@", caller))


# Ports this process handed out: the kernel may offer a just-probed port again, and two sipps of one
# rig (or a sipp's SIP port and another's media range) given the same port made one exit at once,
# failing a whole test module once in a few CI runs. A port is handed out once per process.
_handed_out: set[int] = set()


def free_udp_port(*, even: bool = False, span: int = 1) -> int:
    """A UDP port on 127.0.0.1 that is free now, with `span` free ports from it (RTP needs 2-4),
    none of them handed out by this function before in this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if (even and port % 2) or port + span > 65535 or not _handed_out.isdisjoint(range(port, port + span)):
            continue
        holders: list[socket.socket] = []
        try:
            for p in range(port, port + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                holders.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in holders:
                s.close()
        _handed_out.update(range(port, port + span))
        return port
    raise DemoCallError("no free UDP port range on 127.0.0.1")


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Observed:
    """One thing the switch reported about the call over ARI, `at` seconds after sipp started."""

    at: float
    what: str


@dataclass
class DemoCallResult:
    number: str
    caller: str
    target: SipTarget
    sipp_returncode: int
    answered: bool = False
    answer_after_s: float | None = None     # from sipp's start to the 200 OK
    talk_s: float | None = None             # from the 200 OK to the BYE
    hung_up_by: str | None = None           # "switch" or "caller"
    reason: str = ""                        # the switch's BYE Reason header, if any
    rejected: int | None = None             # the final SIP status when not answered
    no_response: bool = False               # not even a 100 Trying came back
    hangup_cause: str = ""                  # from ARI (ChannelDestroyed)
    channel: str = ""                       # the Asterisk channel id, if it was seen over ARI
    observed: list[Observed] = field(default_factory=list)
    observer_problem: str = ""              # why nothing could be watched over ARI
    sipp_output: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.sipp_returncode == 0 and self.answered


def _read_sipp_log(result: DemoCallResult, text: str) -> None:
    ticks: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if not parts:
            continue
        kind = parts[0]
        if kind == "REJECTED" and len(parts) >= 2:
            result.rejected = int(parts[1])
        elif kind == "NO_RESPONSE":
            result.no_response = True
        elif kind in ("ANSWERED", "BYE_FROM_SWITCH", "BYE_FROM_CALLER") and len(parts) >= 2 and parts[1].isdigit():
            ticks[kind] = int(parts[1])
            if kind == "BYE_FROM_SWITCH":
                result.hung_up_by = "switch"
                result.reason = parts[2].split(":", 1)[-1].strip() if len(parts) > 2 else ""
            elif kind == "BYE_FROM_CALLER":
                result.hung_up_by = "caller"
    if "ANSWERED" in ticks:
        result.answered = True
        end = ticks.get("BYE_FROM_SWITCH", ticks.get("BYE_FROM_CALLER"))
        if end is not None:
            result.talk_s = (end - ticks["ANSWERED"]) / 1000


# ------------------------------------------------------------------------------------------ ARI observer


class _Observer:
    """Collects the ARI events of the channel whose caller name is `tag` (and its playbacks)."""

    def __init__(self, tag: str, t0: float) -> None:
        self.tag = tag
        self.t0 = t0
        self.channel = ""
        self.hangup_cause = ""
        self.lines: list[Observed] = []
        self.destroyed = asyncio.Event()

    def _note(self, what: str) -> None:
        self.lines.append(Observed(time.monotonic() - self.t0, what))

    def __call__(self, event: Any) -> None:
        raw: dict[str, Any] = dict(getattr(event, "raw", {}) or {})
        kind = raw.get("type", "")
        chan = raw.get("channel") if isinstance(raw.get("channel"), dict) else None
        if chan is not None and not self.channel:
            if (chan.get("caller") or {}).get("name") == self.tag:
                self.channel = chan.get("id", "")
        if kind.startswith("Playback"):
            playback = raw.get("playback") or {}
            if self.channel and playback.get("target_uri") == f"channel:{self.channel}" and kind == "PlaybackStarted":
                self._note(f"plays {_media_name(playback.get('media_uri', ''))}")
            return
        if chan is None or not self.channel or chan.get("id") != self.channel:
            return
        if kind == "StasisStart":
            self._note(f"enters Stasis app {raw.get('application', '?')} ({','.join(raw.get('args') or [])})")
        elif kind == "ChannelStateChange":
            self._note(f"state {chan.get('state', '?')}")
        elif kind == "ChannelDtmfReceived":
            self._note(f"DTMF {raw.get('digit', '?')} received ({raw.get('duration_ms', '?')} ms)")
        elif kind == "ChannelDialplan" and raw.get("dialplan_app"):
            self._note(f"dialplan {raw.get('dialplan_app')}({raw.get('dialplan_app_data', '')})")
        elif kind == "StasisEnd":
            self._note(f"leaves Stasis app {raw.get('application', '?')}")
        elif kind == "ChannelHangupRequest":
            cause = raw.get("cause")
            self._note("hangup requested" + (f" (cause {cause})" if cause is not None else ""))
        elif kind == "ChannelDestroyed":
            cause = raw.get("cause", "?")
            # a caller's BYE without a Reason header is cause 0 on Asterisk ("Unknown")
            text = "no cause given (0)" if cause == 0 else f"{raw.get('cause_txt', '?')} ({cause})"
            self.hangup_cause = text
            self._note(f"destroyed: {self.hangup_cause}")
            self.destroyed.set()


def _media_name(uri: str) -> str:
    if uri.startswith("sound:"):
        return uri.rsplit("/", 1)[-1]
    return uri


async def _start_observer(ari: Any, tag: str, t0: float) -> tuple[_Observer, Any, Any]:
    """Connect a watching Stasis app; returns (observer, stream, client). Raises on failure."""
    from .ari import AriClient
    from .ari.events import AriEventStream

    client = AriClient(ari.url, ari.user, ari.password, f"{ari.app}-sipcall-{tag[-8:]}", timeout=3.0)
    try:  # one REST request first: a refused port fails here at once, not after the stream's wait
        await client.info()
    except BaseException:
        await client.close()
        raise
    stream = AriEventStream(client, subscribe_all=True, heartbeat=None)
    observer = _Observer(tag, t0)
    stream.add_handler(observer)
    stream.start()
    try:
        await stream.wait_connected(5)
    except BaseException:
        await stream.stop(drain_timeout=0.5)
        await client.close()
        raise
    return observer, stream, client


# ------------------------------------------------------------------------------------------ the call


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise DemoCallError("sipp not found: install Debian's sip-tester (make setup does)")
    return path


async def place_call(target: SipTarget, number: str, presses: Sequence[str] = (), *, caller: str = "1001",
                     timeout_s: float = 60.0, ari: Any = None, workdir: Path | None = None) -> DemoCallResult:
    """Place one sipp call to `number` at `target`, press `presses` (see plan_presses), wait for the
    switch's BYE or hang up `timeout_s` after the answer. With `ari` (a config.site.AriConfig),
    the call is also watched over ARI. Never raises for a failed call: see the result."""
    if not re.fullmatch(r"[A-Za-z0-9+*#._-]+", number):
        raise DemoCallError(f"number {number!r}: use digits (and + * # . _ -) only")
    plan = plan_presses(presses)
    wait_s = plan.hangup_after_s if plan.hangup_after_s is not None else timeout_s
    tag = f"sipcall-{secrets.token_hex(4)}"
    sipp = sipp_binary()
    result = DemoCallResult(number, caller, target, sipp_returncode=-1)
    t0 = time.monotonic()
    observer = stream = client = None
    if ari is not None:
        try:
            observer, stream, client = await _start_observer(ari, tag, t0)
        except Exception as exc:  # noqa: BLE001 - the call still runs; say why nothing is watched
            result.observer_problem = f"ARI {ari.url} not watched: {exc}"
    with tempfile.TemporaryDirectory(prefix="switchctl-sipcall-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        pcap = tmpdir / "dtmf.pcap" if plan.steps else None
        if pcap is not None:
            write_dtmf_pcap(pcap, plan.steps)
        scenario = tmpdir / "call.xml"
        scenario.write_text(scenario_text(caller=caller, caller_name=tag, pcap=pcap, wait_ms=round(wait_s * 1000)))
        log_file = tmpdir / "call.log"
        sipp_timeout = int(wait_s) + SIPP_SLACK_S
        cmd = [
            sipp, "-sf", str(scenario), "-s", number,
            "-i", "127.0.0.1", "-p", str(free_udp_port()),
            "-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True, span=4)),
            "-cp", str(free_udp_port()),
            "-m", "1", "-timeout", f"{sipp_timeout}s", "-timeout_error",
            "-trace_logs", "-log_file", str(log_file),
            "-nostdin", "-nr",
            f"{target.host}:{target.port}",
        ]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=tmpdir, env={**os.environ, "TERM": "dumb"})
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=sipp_timeout + 5)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result.wall_s = time.monotonic() - t0
        result.sipp_returncode = proc.returncode if proc.returncode is not None else -1
        result.sipp_output = out.decode(errors="replace")
        if log_file.exists():
            _read_sipp_log(result, log_file.read_text(errors="replace"))
    if observer is not None:
        if observer.channel:
            try:  # the ChannelDestroyed follows the BYE closely
                await asyncio.wait_for(observer.destroyed.wait(), 2.0)
            except TimeoutError:
                pass
        result.observed = list(observer.lines)
        result.channel = observer.channel
        result.hangup_cause = observer.hangup_cause
        if not observer.channel and not result.observer_problem:
            result.observer_problem = "the call was not seen over ARI"
    if stream is not None:
        await stream.stop(drain_timeout=0.5)
    if client is not None:
        await client.close()
    return result


SIPP_EXIT = {0: "its scenario ran through", 1: "its scenario failed", 97: "sipp was stopped",
             99: "no call was processed", 254: "sipp could not bind its socket",
             255: "sipp stopped on an error, e.g. its -timeout", -9: "sipp was killed"}


def format_result(result: DemoCallResult, *, presses: Sequence[str] = ()) -> str:
    """What happened, for a person: the SIP side, then what the switch reported over ARI."""
    t = result.target
    lines = [f"call {result.caller} -> {result.number} at {t.host}:{t.port} (sipp, RFC 2833 DTMF)"
             + (f", presses {' '.join(presses)}" if presses else "")]
    plan = plan_presses(presses)
    if plan.groups:
        lines.append("  presses after answer: " + ", ".join(f"{p} at {w:g} s" for w, p in plan.groups))
    if result.answered:
        talk = f"{result.talk_s:.1f} s" if result.talk_s is not None else "unknown"
        lines.append(f"  answered; call lasted {talk} after the answer")
    elif result.rejected is not None:
        lines.append(f"  not answered: the switch answered SIP {result.rejected}")
        if result.rejected == 603 and any(o.what.startswith("dialplan Stasis(") for o in result.observed):
            # Stasis() into an app no WebSocket holds fails at once, and Asterisk declines the call
            lines.append("  (the call reached Stasis() but no controller held the app: is `switchctl run`"
                         " / `make run` running?)")
    elif result.no_response:
        lines.append(f"  not answered: nothing came back from {t.host}:{t.port} within {NO_RESPONSE_S:g} s"
                     " (is Asterisk running? make run / tools/asterisk-setup.sh start)")
    else:
        lines.append(f"  not answered: no final answer from {t.host}:{t.port}")
    if result.hung_up_by == "switch":
        lines.append("  the switch hung up" + (f" (Reason: {result.reason})" if result.reason else ""))
    elif result.hung_up_by == "caller":
        lines.append("  the caller (sipp) hung up" + (" as pressed" if plan.hangup_after_s is not None
                                                     else ": the switch had not hung up within --timeout"))
    if result.observed:
        lines.append(f"  on the switch (ARI, channel {result.channel}):")
        lines += [f"    +{o.at:5.1f} s  {o.what}" for o in result.observed]
    if result.observer_problem:
        lines.append(f"  ({result.observer_problem})")
    meaning = SIPP_EXIT.get(result.sipp_returncode, "see its output")
    lines.append(f"  sipp: exit {result.sipp_returncode} ({meaning}); {result.wall_s:.1f} s in all")
    if result.sipp_returncode != 0:
        tail = [line for line in result.sipp_output.splitlines() if line.strip()][-12:]
        lines += ["  sipp said:"] + [f"    {line}" for line in tail]
    return "\n".join(lines)
