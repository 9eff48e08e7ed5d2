"""Voicemail on a REAL (private) Asterisk 22, end to end through the in-process controller (issue 5:
"a voicemail deposit"), plus the pure media mapping it relies on (switch/asterisk_media.py).

The site: one Asterisk, a `voicemail:` section whose spool is a folder inside this Asterisk's
recording dir (`<astspooldir>/recording/voicemail`, as Asterisk sees it) with `local_spool` the
same folder seen from here (inside the chroot), an SMTP relay (a real aiosmtpd on 127.0.0.1).
Two flows: `8xxxx` leaves a message in mailbox xxxx (a short site greeting, then `voicemail`),
`7xxxx` listens to mailbox xxxx (`voicemail_check`, the stock prompts Asterisk says with its own
`vm-*` sounds, the site's `voicemail/vm-msg_menu`).

1. A sipp caller sends a 400 Hz tone (PCMU) for a few seconds after the beep, then RFC 2833 `#`:
   the WAV is in the spool with about that length, the message row has it, and its e-mail with
   the WAV attached reaches the relay.
2. A second call enters the PIN (`4321#`): the message is played back as `recording:voicemail/<name>`
   (PlaybackStarted for that URI, and it lasts as long as the WAV: Asterisk silently skips a
   missing recording in a media list, so the time is the proof), then the menu times out (the
   message stays new) and the flow hangs up.
3. No channel is left on the Asterisk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import math
import shutil
import socket
import struct
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP as SmtpServer

from switchctl import democall
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.features.prepaid.cutoff import wall_us
from switchctl.features.voicemail import Mailboxes
from switchctl.flows import FlowTrace
from switchctl.render.asterisk import asterisk_sound_files, render_asterisk
from switchctl.sitecheck import check_site
from switchctl.store.database import Store
from switchctl.switch.asterisk_media import (
    RECORDING_DIR,
    STOCK_SOUNDS,
    MediaError,
    MediaList,
    prompt_segments,
    recording_uri,
    site_sound_uri,
)
from tests.asterisk_fixture import SIPP_DIR, env_from_environment, run_sipp
from tests.private_asterisk import (  # noqa: F401  (asterisk_chroot is a fixture)
    PrivateAsterisk,
    asterisk_chroot,
    create_private_asterisk,
    free_port,
    wait_for_pjsip_endpoint,
)

# ------------------------------------------------------------------------------------------ fast


def test_a_recording_under_the_recording_dir_plays_as_recording_uri():
    assert recording_uri(f"{RECORDING_DIR}/voicemail/t-1002-17.5-99.wav") == "recording:voicemail/t-1002-17.5-99"
    assert recording_uri(f"{RECORDING_DIR}/flat.gsm") == "recording:flat"
    assert recording_uri("/srv/spool/recording/a/b.wav", "/srv/spool/recording/") == "recording:a/b"
    for outside in ("/tmp/x.wav", f"{RECORDING_DIR}/../x.wav", RECORDING_DIR, "/var/spool/asterisk/recordingX/a.wav"):
        assert recording_uri(outside) is None, outside
    with pytest.raises(MediaError):
        recording_uri(f"{RECORDING_DIR}/a,b.wav")  # ARI splits media on commas


def test_site_sounds_win_then_recordings_then_a_clear_error():
    uri = site_sound_uri("bar", ["/srv/sounds"], recording_dir="/var/tmp/ast/spool/recording")
    assert uri("/srv/sounds/vm/hello.wav") == "sound:switchctl/bar/vm/hello"
    assert uri("/var/tmp/ast/spool/recording/voicemail/m1.wav") == "recording:voicemail/m1"
    with pytest.raises(MediaError, match="recording dir"):
        uri(f"{RECORDING_DIR}/voicemail/m1.wav")  # not this switch's recording dir
    default = site_sound_uri("bar", [])
    assert default(f"{RECORDING_DIR}/voicemail/m1.wav") == "recording:voicemail/m1"


def test_a_message_and_the_menu_are_one_playback_and_stock_names_become_asterisk_sounds():
    uri = site_sound_uri("bar", ["/srv/sounds"])
    segments = prompt_segments([f"{RECORDING_DIR}/voicemail/m1.wav", "/srv/sounds/voicemail/vm-msg_menu.wav"], uri)
    assert segments == [MediaList(("recording:voicemail/m1", "sound:switchctl/bar/voicemail/vm-msg_menu"))]
    stock = prompt_segments(["voicemail/vm-person", "voicemail/vm-no_more_messages", "beep", "voicemail/vm-msg_menu"], uri)
    assert stock == [MediaList(("sound:vm-theperson", "sound:vm-nomore", "sound:beep", "sound:voicemail/vm-msg_menu"))]


def test_every_stock_voicemail_prompt_the_nodes_use_has_an_asterisk_sound():
    from switchctl.flows import model

    used = {v for k, v in vars(model).items() if k.startswith("VM_") and isinstance(v, str)}
    assert used - set(STOCK_SOUNDS) == {model.VM_MESSAGE_MENU}  # the one the site provides
    chroot_sounds = env_from_environment().base_dir / "root" / "usr" / "share" / "asterisk" / "sounds" / "en"
    if chroot_sounds.exists():  # the chroot's core sounds really have them
        missing = [n for n in STOCK_SOUNDS.values() if not list(chroot_sounds.glob(f"{n}.*"))]
        assert not missing, missing


# ------------------------------------------------------------------------------------------ slow

SITE_NAME = "astvm"
RTP_RANGE = (25500, 25999)  # shared 10000-, deploy 12000-, restart 13000-/14000-, dial 16000-, prepaid 18000-/23000-
MAILBOX, PIN = "1002", "4321"
TALK_S = 4.0  # from the answer to the caller's '#': the short greeting + beep, then ~3 s of tone
LEAVE = """\
flow: leave
patterns: ['^8(\\d{4})$']
start: greet
nodes:
  greet: {type: answer, next: leave}
  leave: {type: voicemail, mailbox: "${1}", greeting: [vm/hello], max_seconds: 20, silence_seconds: 3,
          next: bye, no_mailbox: bye}
  bye: {type: hangup}
"""
LISTEN = """\
flow: listen
patterns: ['^7(\\d{4})$']
start: pickup
nodes:
  pickup: {type: answer, next: check}
  check: {type: voicemail_check, mailbox: "${1}", tries: 2, next: bye, bad_pin: bye}
  bye: {type: hangup}
"""


def _write_wav(path: Path, seconds: float, hz: int) -> None:
    """8 kHz 16-bit mono, what Asterisk's format_wav plays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000)))
                      for i in range(int(seconds * 8000)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(frames)


def _ulaw(sample: int) -> int:
    """G.711 mu-law of a 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


# 20 ms of a 400 Hz tone: exactly 8 periods, so every packet carries the same payload
TONE_PAYLOAD = bytes(_ulaw(int(6000 * math.sin(2 * math.pi * 400 * i / 8000))) for i in range(160))


def _talking_pcap(path: Path, script: list[tuple[float, str]]) -> float:
    """democall's RTP stream (PCMU silence + RFC 2833 digits) with the silence turned into a tone:
    a caller who talks, so the message is not silence (and no silence detector ends it)."""
    length = democall.write_dtmf_pcap(path, script, digit_s=0.12, tail_s=0.3)
    data = path.read_bytes()
    assert data.count(b"\xff" * 160) > 10
    path.write_bytes(data.replace(b"\xff" * 160, TONE_PAYLOAD))
    return length


def _write_site(folder: Path, env: PrivateAsterisk, smtp_port: int) -> Path:
    (folder / "dialplans").mkdir(parents=True)
    (folder / "dialplans" / "leave.yaml").write_text(LEAVE)
    (folder / "dialplans" / "listen.yaml").write_text(LISTEN)
    _write_wav(folder / "sounds" / "vm" / "hello.wav", 0.5, 600)
    _write_wav(folder / "sounds" / "voicemail" / "vm-msg_menu.wav", 0.5, 900)
    ari = env.ari
    spool = f"{env.state}/spool/recording/voicemail"  # as Asterisk sees it
    lines = [
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        f"    ari: {{host: {ari.host}, port: {ari.port}, user: {ari.user}, password: {ari.password}, app: {ari.app}}}",
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {env.conf_dir}",
        f"    cdr: {{format: custom, path: {env.state_dir / 'log'}}}",
        # this private Asterisk records under its own astspooldir, not /var/spool/asterisk
        f"    recording_dir: {env.state}/spool/recording",
        "flows: dialplans/",
        "sounds: [sounds/]",
        "phones:",
        '  - {range: "1001-1003", name: "Desk {n}", password: "desk-{extension}"}',
        "voicemail:",
        f"  spool: {spool}",
        f"  local_spool: {env.root}{spool}",
        f"  smtp: 127.0.0.1:{smtp_port}",
        "  from: voicemail@bar.example",
    ]
    (folder / "site.yaml").write_text("\n".join(lines) + "\n")
    return folder / "site.yaml"


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        self.envelopes.append(envelope)
        self.arrived.set()
        return "250 Message accepted for delivery"


@dataclasses.dataclass
class Played:
    kind: str  # PlaybackStarted / PlaybackContinuing / PlaybackFinished
    playback: str
    media: str
    state: str
    at: float  # time.monotonic()


@dataclasses.dataclass
class VmRig:
    env: PrivateAsterisk
    tmp: Path
    controller: Controller
    mailboxes: Mailboxes
    inbox: Inbox
    played: list[Played]
    traces: list[tuple[str, FlowTrace | None]]
    recording_dir: str  # as Asterisk sees it
    local_spool: Path

    async def call(self, number: str, script: list[tuple[float, str]], *,
                   hang_up: bool = False) -> asyncio.Task:  # type: ignore[type-arg]
        """A sipp UAC calling `number` that plays a tone with the script's digits from the answer,
        then waits for Asterisk's BYE, or (`hang_up`) hangs up itself when the stream ends."""
        stem = self.tmp / f"vm-uac-{number}-{time.monotonic_ns()}"
        pcap = stem.with_suffix(".pcap")
        length = _talking_pcap(pcap, script)
        actions = [f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>']
        if hang_up:  # play_pcap_audio does not block: the pause covers the stream
            actions.append(f'<pause milliseconds="{int(length * 1000)}"/>')
        template = "uac_ivr_script_caller_bye.xml" if hang_up else "uac_ivr_script_wait_bye.xml"
        text = (SIPP_DIR / template).read_text()
        text = text.replace("<!-- @@SCRIPT@@ -->", "\n  ".join(actions)).replace("@@CALLER@@", "5550100")
        path = stem.with_suffix(".xml")
        path.write_text(text)
        sipp_env = dataclasses.replace(env_from_environment(), ari_port=self.env.ari.port, sip_port=self.env.sip_port)
        return asyncio.create_task(run_sipp(sipp_env, path, number, timeout_s=40))

    async def channels(self) -> list[str]:
        return [c.name for c in await self.controller.asterisks["ast1"].client.list_channels()]

    async def trace(self, index: int, timeout: float) -> tuple[str, FlowTrace | None]:
        deadline = time.monotonic() + timeout
        while len(self.traces) <= index:
            assert time.monotonic() < deadline, f"no flow trace #{index}: {self.traces}"
            await asyncio.sleep(0.05)
        return self.traces[index]


@dataclasses.dataclass
class VmAsterisk:
    env: PrivateAsterisk
    tmp: Path
    site_file: Path
    smtp_port: int  # the relay the site names; the test's aiosmtpd listens there


@pytest.fixture(scope="module")
def vm_asterisk(asterisk_chroot: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmAsterisk]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("astvm")
    env = create_private_asterisk(asterisk_chroot, tag="vm", log_dir=tmp, rtp=RTP_RANGE)
    sounds = env.root / "usr" / "share" / "asterisk" / "sounds" / "switchctl" / SITE_NAME
    try:
        smtp_port = free_port(socket.SOCK_STREAM)
        site_file = _write_site(tmp / "site", env, smtp_port)
        site = load_site(site_file)
        assert site.voicemail is not None and site.voicemail.local_spool is not None
        # the spool must exist (Asterisk makes no folder for a recording: 500, captures 05 z)
        site.voicemail.local_spool.mkdir(parents=True, exist_ok=True)
        # what deploy installs: the site's sounds under sounds/switchctl/<site>/ (the chroot's astdatadir)
        for rel, content in asterisk_sound_files(site).items():
            (sounds / rel).parent.mkdir(parents=True, exist_ok=True)
            (sounds / rel).write_bytes(content)
        env.write_config(render_asterisk(site))
        env.start()
        wait_for_pjsip_endpoint(env, "1001")
        yield VmAsterisk(env, tmp, site_file, smtp_port)
    finally:
        env.stop()
        env.remove()
        shutil.rmtree(sounds, ignore_errors=True)


@pytest_asyncio.fixture
async def vm(vm_asterisk: VmAsterisk, tmp_path: Path) -> AsyncIterator[VmRig]:
    env, tmp = vm_asterisk.env, vm_asterisk.tmp
    env.check_alive()
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SmtpServer(inbox, hostname="mx.test"), "127.0.0.1", vm_asterisk.smtp_port)
    site = load_site(vm_asterisk.site_file)
    checked = check_site(site)
    assert checked.ok, checked.report()
    assert site.voicemail is not None and site.voicemail.local_spool is not None
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'vm.db'}")
    await store.create_all()
    controller = Controller(site, checked.flows, store=store)
    traces: list[tuple[str, FlowTrace | None]] = []
    controller.on_trace = lambda uuid, trace: traces.append((uuid, trace))
    await controller.start()
    switch = controller.asterisks["ast1"]
    # the site's recording_dir reached the backend (recording) and the media mapping (playback)
    recording_dir = f"{env.state}/spool/recording"
    assert switch.recording_dir == recording_dir
    played: list[Played] = []

    def on_playback(event) -> None:  # type: ignore[no-untyped-def]
        pb = event.playback
        played.append(Played(type(event).__name__, pb.id, str(pb.raw.get("media_uri", "")),
                             str(pb.raw.get("state", "")), time.monotonic()))

    switch.stream.add_handler(on_playback, "PlaybackStarted", "PlaybackContinuing", "PlaybackFinished")
    mailboxes = Mailboxes(store, wall_us, tenant=site.billing.tenant)
    rig = VmRig(env, tmp, controller, mailboxes, inbox, played, traces, recording_dir, site.voicemail.local_spool)
    try:
        await switch.wait_connected(10)
        yield rig
    finally:
        await controller.stop(grace=2)
        await store.engine.dispose()
        smtp.close()
        await smtp.wait_closed()


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


@pytest.mark.slow
async def test_a_message_is_left_mailed_and_played_back_on_asterisk(vm: VmRig) -> None:
    await vm.mailboxes.create(MAILBOX, PIN, email="desk2@bar.example")

    # -- deposit: greeting, beep, ~3 s of tone, '#'
    started = time.monotonic()
    deposit = await vm.call(f"8{MAILBOX}", [(TALK_S, "#")])
    result = await asyncio.wait_for(deposit, 45)
    assert result.returncode == 0, f"deposit caller saw no BYE:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
    _uuid, trace = await vm.trace(0, 5)
    assert trace is not None and trace.path == ["greet", "leave", "bye"], trace
    assert trace.variables["voicemail_outcome"] == "stored", trace.variables
    [message] = await vm.mailboxes.messages(MAILBOX)
    assert message.caller == "5550100" and message.state == "new"
    # kept where the site says: the switch's path in the spool, read here under local_spool
    assert message.path.startswith(f"{vm.recording_dir}/voicemail/") and message.path.endswith(".wav")
    wav = Path(message.file)
    assert wav.parent == vm.local_spool and wav.exists()
    length = _wav_seconds(wav)
    print(f"\nvoicemail on Asterisk: message {length:.2f} s (row {message.duration_us} us), "
          f"deposit call {time.monotonic() - started:.1f} s")
    assert 2.0 < length < TALK_S + 0.5, length  # the tone after the beep, up to the '#'
    assert abs(message.duration_us / 1e6 - length) < 1.0  # RecordingFinished's whole seconds
    with wave.open(str(wav), "rb") as w:  # the caller's tone, not silence
        frames = w.readframes(w.getnframes())
    peak = max(abs(s) for (s,) in struct.iter_unpack("<h", frames[: len(frames) // 2 * 2]))
    assert peak > 2000, peak

    # -- the e-mail, WAV attached, on a real SMTP server
    await asyncio.wait_for(vm.inbox.arrived.wait(), 20)
    [envelope] = vm.inbox.envelopes
    assert envelope.rcpt_tos == ["desk2@bar.example"] and envelope.mail_from == "voicemail@bar.example"
    mail = email.message_from_bytes(envelope.content)
    assert f"mailbox {MAILBOX}" in mail["Subject"]
    [attachment] = [part for part in mail.walk() if part.get_content_disposition() == "attachment"]
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_payload(decode=True) == wav.read_bytes()

    # -- retrieval: PIN, "you have 1 new messages", the message (then the menu times out), goodbye
    vm.played.clear()
    pin = [(1.0, PIN[0])] + [(0.3, digit) for digit in PIN[1:]] + [(0.3, "#")]
    listen = await vm.call(f"7{MAILBOX}", pin)
    result = await asyncio.wait_for(listen, 45)
    assert result.returncode == 0, f"listening caller saw no BYE:\n{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
    _uuid, trace = await vm.trace(1, 5)
    assert trace is not None and trace.path == ["pickup", "check", "bye"], trace
    assert (trace.variables["voicemail_new"], trace.variables["voicemail_heard"]) == ("1", "1"), trace.variables
    uri = "recording:" + message.path[len(vm.recording_dir) + 1:].removesuffix(".wav")
    print("playbacks:", [(p.kind, p.media, p.state, round(p.at - vm.played[0].at, 2)) for p in vm.played])
    [start] = [p for p in vm.played if p.media == uri and p.kind == "PlaybackStarted"]
    # the same playback moves on to the menu prompt (or ends) only once the message has played
    after = [p for p in vm.played if p.playback == start.playback and p.at > start.at
             and p.kind in ("PlaybackContinuing", "PlaybackFinished")]
    assert after, vm.played
    assert after[0].at - start.at > length - 0.5, (after[0].at - start.at, length)
    assert all(p.state != "failed" for p in vm.played), vm.played
    # stock prompts became Asterisk's own sounds, and they played
    assert {"sound:vm-password", "sound:vm-youhave", "sound:vm-nomore"} <= {p.media for p in vm.played}
    [message] = await vm.mailboxes.messages(MAILBOX)
    assert message.state == "new"  # no key: "next" keeps it

    # -- nothing left on the switch
    deadline = time.monotonic() + 4
    while await vm.channels() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await vm.channels() == []


@pytest.mark.slow
async def test_a_caller_who_hangs_up_while_talking_leaves_a_message(vm: VmRig) -> None:
    await vm.mailboxes.create(MAILBOX, PIN, email="desk2@bar.example")
    deposit = await vm.call(f"8{MAILBOX}", [(3.5, "")], hang_up=True)  # ~2.5 s after the beep, then BYE
    result = await asyncio.wait_for(deposit, 30)
    assert result.returncode == 0, f"{result.stdout[-2500:]}\n{result.stderr[-1500:]}"
    _uuid, trace = await vm.trace(0, 10)
    assert trace is not None and trace.result == "caller_hangup", trace
    assert trace.variables["voicemail_outcome"] == "stored", trace.variables
    [message] = await vm.mailboxes.messages(MAILBOX)
    length = _wav_seconds(Path(message.file))
    assert 1.5 < length < 4.0, length
    assert message.duration_us >= 1_000_000
    await asyncio.wait_for(vm.inbox.arrived.wait(), 20)
    mail = email.message_from_bytes(vm.inbox.envelopes[0].content)
    [attachment] = [part for part in mail.walk() if part.get_content_disposition() == "attachment"]
    assert attachment.get_payload(decode=True) == Path(message.file).read_bytes()
    deadline = time.monotonic() + 4
    while await vm.channels() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await vm.channels() == []
