"""Voicemail: deposit (greeting, record, store, e-mail through a real aiosmtpd server on 127.0.0.1),
PIN-protected retrieval with lockout, the e-mail outbox's retries, the SMTP client, the CLI.
Calls are ScriptedCalls; a WAV file in tmp_path stands in for the switch's recording."""

from __future__ import annotations

import asyncio
import email
import email.policy
import wave
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as SmtpServer

from switchctl import cli
from switchctl.billing.accounts import PinPolicy
from switchctl.features.voicemail import Mailboxes, MailSettings, Voicemail, send_mail
from switchctl.features.voicemail.smtp import SmtpError, dot_stuff, parse_reply_line
from switchctl.flows import FlowRunner
from switchctl.flows.hooks import PinCheck
from switchctl.flows.model import VM_ENTER_PASS, VM_FAIL_AUTH, VM_PERSON
from switchctl.store import Store
from switchctl.switch.call import RecordResult, RecordSpec

from .fakecall import ScriptedCall, check_texts

T0 = 1_760_000_000_000_000
MINUTE = 60_000_000
CHEAP_PINS = PinPolicy(scrypt_n=2**4)  # same code path, test-speed hashing


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Inbox:
    """An aiosmtpd handler that keeps every envelope."""

    def __init__(self) -> None:
        self.envelopes: list = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook name
        self.envelopes.append(envelope)
        self.arrived.set()
        return "250 Message accepted for delivery"


async def start_smtp(inbox: Inbox, port: int = 0) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SmtpServer(inbox, hostname="mx.test"), "127.0.0.1", port)


def make_wav(path: Path, seconds: float) -> bytes:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(range(256)) * int(seconds * 8000 * 2 / 256))
    return path.read_bytes()


@pytest.fixture
async def store(tmp_path: Path):
    store = Store.open(f"sqlite:///{tmp_path / 'vm.db'}")
    await store.create_all()
    yield store
    await store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def mailboxes(store: Store, clock: Clock) -> Mailboxes:
    boxes = Mailboxes(store, clock, tenant="acme", pin_policy=CHEAP_PINS)
    await boxes.create("1001", "4321", email="alice@example.com")
    return boxes


DEPOSIT = """
flow: vm
patterns: ['^\\*9(\\d+)$']
nodes:
  answer: {type: answer, next: leave}
  leave:
    type: voicemail
    mailbox: "${1}"
    max_seconds: 60
    next: bye
    no_mailbox: nobody
  nobody: {type: play, prompts: [ivr/nobody], next: bye}
  bye: {type: hangup}
"""

CHECK = """
flow: vmcheck
numbers: ["*98"]
nodes:
  answer: {type: answer, next: listen}
  listen:
    type: voicemail_check
    mailbox: "${caller}"
    next: bye
    bad_pin: bye
    locked: locked
  locked: {type: play, prompts: [ivr/locked], next: bye}
  bye: {type: hangup}
"""


def runner_for(tmp_path: Path, voicemail: Voicemail | None) -> FlowRunner:
    result = check_texts(tmp_path / "flows", DEPOSIT, CHECK)
    assert result.ok, result.report()
    return FlowRunner(result.flows, site_values={}, lists={}, voicemail=voicemail)


async def deposit(runner: FlowRunner, call: ScriptedCall, mailbox: str = "1001"):
    flow, captures = runner.flowset.match(f"*9{mailbox}")
    return await runner.run(call, flow, captures)


# -- deposit and e-mail --------------------------------------------------------------------------


async def test_deposit_is_stored_and_mailed_with_the_recording(tmp_path: Path, mailboxes: Mailboxes,
                                                                clock: Clock) -> None:
    inbox = Inbox()
    server = await start_smtp(inbox)
    port = server.sockets[0].getsockname()[1]
    voicemail = Voicemail(mailboxes, spool_dir="/var/spool/vm",
                          mail=MailSettings.parse(f"127.0.0.1:{port}", "voicemail@pbx.example.com"))
    runner = runner_for(tmp_path, voicemail)
    audio = make_wav(tmp_path / "rec.wav", 3.0)
    call = ScriptedCall(caller="0612345678", caller_name="Bob",
                        records=[RecordResult(str(tmp_path / "rec.wav"), "terminator", 3_000_000, "#")])
    stop = asyncio.Event()
    loop_task = asyncio.create_task(voicemail.run(stop, poll_seconds=5))
    try:
        trace = await deposit(runner, call)
        assert trace.path == ["answer", "leave", "bye"] and trace.result == "hangup"
        assert trace.variables["voicemail_outcome"] == "stored"
        # The stock announcement: "the person at extension" 1 0 0 1 "is not available...", then record.
        assert call.names() == ["answer", "play", "say", "play", "record", "hangup"]
        assert call.ops[1] == ("play", (VM_PERSON,)) and call.ops[2] == ("say", "1001", "digits", "en")
        spec = call.ops[4][1]
        assert spec.path.startswith("/var/spool/vm/acme-1001-call-1-") and spec.max_seconds == 60
        await asyncio.wait_for(inbox.arrived.wait(), 10)
    finally:
        stop.set()
        await loop_task
        server.close()
        await server.wait_closed()
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == "voicemail@pbx.example.com" and envelope.rcpt_tos == ["alice@example.com"]
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert msg["To"] == "alice@example.com"
    assert msg["Subject"] == "New voicemail from Bob (0612345678) in mailbox 1001"
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_content_type() == "audio/wav"
    assert attachment.get_filename() == f"voicemail-1001-{trace.variables['voicemail_message']}.wav"
    assert attachment.get_content() == audio
    assert "Length:   0:03" in msg.get_body(("plain",)).get_content()
    (message,) = await mailboxes.messages("1001")
    assert (message.state, message.mail_state, message.caller, message.duration_us) == ("new", "sent", "0612345678", 3_000_000)
    assert message.path == message.file == str(tmp_path / "rec.wav")  # the switch's path, seen as is


async def test_hangup_during_recording_keeps_the_message(tmp_path: Path, mailboxes: Mailboxes) -> None:
    voicemail = Voicemail(mailboxes, spool_dir="/spool")
    runner = runner_for(tmp_path, voicemail)
    call = ScriptedCall(records=[RecordResult("/spool/x.wav", "hangup", 4_200_000)])
    trace = await deposit(runner, call)
    assert trace.result == "caller_hangup" and trace.steps[-1] == ("vm", "leave", "caller_hangup")
    assert trace.variables["voicemail_outcome"] == "stored"
    (message,) = await mailboxes.messages("1001")
    assert message.duration_us == 4_200_000 and message.mail_state == "pending"  # no mail settings here


async def test_too_short_message_is_dropped(tmp_path: Path, mailboxes: Mailboxes) -> None:
    voicemail = Voicemail(mailboxes, spool_dir="/spool")
    runner = runner_for(tmp_path, voicemail)
    short = tmp_path / "short.wav"
    make_wav(short, 0.5)
    # The switch did not report a length: the WAV header's tells 0.5 s.
    call = ScriptedCall(records=[RecordResult(str(short), "hangup", 0)])
    trace = await deposit(runner, call)
    assert trace.variables["voicemail_outcome"] == "too_short" and trace.result == "caller_hangup"
    assert await mailboxes.messages("1001") == [] and not short.exists()
    call = ScriptedCall(records=[RecordResult("/spool/y.wav", "silence", 999_999)])
    trace = await deposit(runner, call)
    assert trace.variables["voicemail_outcome"] == "too_short" and trace.path[-1] == "bye"
    assert await mailboxes.messages("1001") == []


async def test_unknown_mailbox_and_own_greeting(tmp_path: Path, mailboxes: Mailboxes) -> None:
    await mailboxes.create("1002", "1111", greeting="/greetings/1002.wav")
    runner = runner_for(tmp_path, Voicemail(mailboxes, spool_dir="/spool"))
    call = ScriptedCall()
    trace = await deposit(runner, call, "7777")
    assert trace.path == ["answer", "leave", "nobody", "bye"] and "record" not in call.names()
    call = ScriptedCall()
    trace = await deposit(runner, call, "1002")
    assert call.ops[1] == ("play", ("/greetings/1002.wav",)) and call.names()[2] == "record"
    assert len(await mailboxes.messages("1002")) == 1


async def test_voicemail_node_without_service_fails_the_call(tmp_path: Path) -> None:
    runner = runner_for(tmp_path, None)
    call = ScriptedCall()
    trace = await deposit(runner, call)
    assert trace.result == "error" and "no voicemail is configured" in (trace.error or "")


# -- retrieval -----------------------------------------------------------------------------------


async def listen(runner: FlowRunner, script: list, caller: str = "1001") -> tuple:
    call = ScriptedCall(script, caller=caller, destination="*98")
    flow, captures = runner.flowset.match("*98")
    return await runner.run(call, flow, captures), call


async def two_messages(voicemail: Voicemail, clock: Clock) -> None:
    for i in range(2):
        clock.now += MINUTE
        await voicemail.store_message(ScriptedCall(caller=f"06000000{i}", uuid=f"c{i}"),
                                      await voicemail.mailbox("1001"),
                                      RecordSpec(f"/spool/m{i}.wav"),
                                      RecordResult(f"/spool/m{i}.wav", "terminator", 5_000_000))


async def test_retrieval_right_pin_delete_and_save(tmp_path: Path, mailboxes: Mailboxes, clock: Clock) -> None:
    voicemail = Voicemail(mailboxes, spool_dir="/spool")
    await two_messages(voicemail, clock)
    runner = runner_for(tmp_path, voicemail)
    trace, call = await listen(runner, ["4321#", "7", "9"])
    assert trace.path == ["answer", "listen", "bye"]
    assert trace.variables["voicemail_new"] == "2" and trace.variables["voicemail_heard"] == "2"
    assert ("say", "2", "number", "en") in call.ops
    menus = [c.prompts[0] for c in call.collects()[1:]]
    assert menus == ["/spool/m0.wav", "/spool/m1.wav"]  # oldest first, played as the menu's prompt
    remaining = await mailboxes.messages("1001", states=("new", "saved", "deleted"))
    assert [(m.path, m.state) for m in remaining] == [("/spool/m1.wav", "saved"), ("/spool/m0.wav", "deleted")]
    # Next time: no new message, the saved one is still played; "1" (next) leaves it saved.
    trace, call = await listen(runner, ["4321", "1"])
    assert trace.variables["voicemail_new"] == "0" and trace.variables["voicemail_heard"] == "1"
    assert [m.state for m in await mailboxes.messages("1001")] == ["saved"]


async def test_wrong_pin_then_right(tmp_path: Path, mailboxes: Mailboxes) -> None:
    runner = runner_for(tmp_path, Voicemail(mailboxes, spool_dir="/spool"))
    trace, call = await listen(runner, ["1111#", "4321#"])
    assert trace.path == ["answer", "listen", "bye"] and trace.variables["voicemail_new"] == "0"
    assert list(call.collects()[1].prompts) == [VM_FAIL_AUTH, VM_ENTER_PASS]


async def test_silence_is_bad_pin_without_lockout(tmp_path: Path, mailboxes: Mailboxes) -> None:
    runner = runner_for(tmp_path, Voicemail(mailboxes, spool_dir="/spool"))
    trace, call = await listen(runner, ["timeout", "timeout", "timeout"])
    assert trace.path == ["answer", "listen", "bye"] and trace.steps[1][2] == "bad_pin"
    assert len(call.collects()) == 3
    assert await mailboxes.check_pin("1001", "4321") is PinCheck.OK  # timeouts never lock


async def test_three_wrong_pins_lock_the_mailbox(tmp_path: Path, mailboxes: Mailboxes, clock: Clock) -> None:
    runner = runner_for(tmp_path, Voicemail(mailboxes, spool_dir="/spool"))
    trace, _ = await listen(runner, ["1111", "2222", "3333"])
    assert trace.steps[1][2] == "locked" and trace.path == ["answer", "listen", "locked", "bye"]
    # Locked: even the right PIN is refused, in this call or the next, until the lockout ends.
    trace, call = await listen(runner, ["4321"])
    assert trace.steps[1][2] == "locked" and len(call.collects()) == 1
    clock.now += CHEAP_PINS.lockout_us + 1
    trace, _ = await listen(runner, ["4321"])
    assert trace.steps[1][2] == "next"


async def test_unknown_mailbox_is_asked_for_a_pin_like_any_other(tmp_path: Path, mailboxes: Mailboxes) -> None:
    runner = runner_for(tmp_path, Voicemail(mailboxes, spool_dir="/spool"))
    trace, call = await listen(runner, ["4321", "4321", "4321"], caller="5555")
    assert trace.steps[1][2] == "bad_pin" and len(call.collects()) == 3  # never "locked": nothing to lock


# -- e-mail retries ------------------------------------------------------------------------------


async def test_smtp_down_is_retried_later(tmp_path: Path, mailboxes: Mailboxes, clock: Clock) -> None:
    probe = await start_smtp(Inbox())
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # nothing listens on `port` now
    voicemail = Voicemail(mailboxes, spool_dir="/spool",
                          mail=MailSettings.parse(f"127.0.0.1:{port}", "vm@pbx.example.com", retry_seconds=60))
    audio = make_wav(tmp_path / "rec.wav", 2.0)
    runner = runner_for(tmp_path, voicemail)
    await deposit(runner, ScriptedCall(records=[RecordResult(str(tmp_path / "rec.wav"), "terminator", 2_000_000)]))
    assert await voicemail.send_pending() == (0, 1)
    (message,) = await mailboxes.messages("1001")
    assert message.mail_state == "pending" and message.mail_attempts == 1
    assert "ConnectionRefusedError" in message.mail_error and message.mail_next_at_us == clock.now + 60_000_000
    inbox = Inbox()
    server = await start_smtp(inbox, port)
    try:
        assert await voicemail.send_pending() == (0, 0)  # not due yet
        clock.now += 60_000_000
        assert await voicemail.send_pending() == (1, 0)
    finally:
        server.close()
        await server.wait_closed()
    (envelope,) = inbox.envelopes
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert next(msg.iter_attachments()).get_content() == audio
    (message,) = await mailboxes.messages("1001")
    assert message.mail_state == "sent" and message.mail_attempts == 2 and message.mail_error == ""


async def test_refused_recipient_backs_off_doubling(tmp_path: Path, mailboxes: Mailboxes, clock: Clock) -> None:
    class Refuser(Inbox):
        async def handle_RCPT(self, server, session, envelope, address, options):
            return "550 no such user"

    server = await start_smtp(Refuser())
    port = server.sockets[0].getsockname()[1]
    voicemail = Voicemail(mailboxes, spool_dir="/spool",
                          mail=MailSettings.parse(f"127.0.0.1:{port}", "vm@pbx.example.com", retry_seconds=10))
    make_wav(tmp_path / "rec.wav", 2.0)
    runner = runner_for(tmp_path, voicemail)
    try:
        await deposit(runner, ScriptedCall(records=[RecordResult(str(tmp_path / "rec.wav"), "terminator", 2_000_000)]))
        assert await voicemail.send_pending() == (0, 1)
        clock.now += 10_000_000
        assert await voicemail.send_pending() == (0, 1)
    finally:
        server.close()
        await server.wait_closed()
    (message,) = await mailboxes.messages("1001")
    assert message.mail_attempts == 2 and message.mail_next_at_us == clock.now + 20_000_000
    assert "550" in message.mail_error


# -- SMTP client ---------------------------------------------------------------------------------


def test_dot_stuffing_and_reply_lines() -> None:
    assert dot_stuff(b"a\n.b\n..c\nd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert dot_stuff(b"x\r\n.\r\n") == b"x\r\n..\r\n.\r\n"
    assert parse_reply_line(b"250-mx.test\r\n") == (250, False, "mx.test")
    assert parse_reply_line(b"250 OK\r\n") == (250, True, "OK")
    assert parse_reply_line(b"354\r\n") == (354, True, "")
    with pytest.raises(SmtpError):
        parse_reply_line(b"hello\r\n")


async def test_send_mail_keeps_lines_that_start_with_a_dot() -> None:
    inbox = Inbox()
    server = await start_smtp(inbox)
    port = server.sockets[0].getsockname()[1]
    body = b"Subject: dots\r\n\r\nfirst\r\n.\r\n.hidden\r\nlast\r\n"
    try:
        await send_mail("127.0.0.1", port, "a@x.example", ["b@y.example", "c@y.example"], body, timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == ["b@y.example", "c@y.example"]
    assert envelope.original_content == body


async def test_send_mail_rejects_header_injection() -> None:
    with pytest.raises(ValueError):
        await send_mail("127.0.0.1", 1, "a@x.example\r\nRCPT TO:<evil@x>", ["b@y.example"], b"x")


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_create_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.yaml"
    (tmp_path / "flows").mkdir()
    site.write_text("\n".join([
        "site: vmtest",
        "switches:",
        "  - name: fs1",
        "    kind: freeswitch",
        "    esl: {host: 127.0.0.1, port: 18021, password: ClueCon}",
        "    outbound: {host: 127.0.0.1, port: 18084}",
        "    sip: {ip: 127.0.0.1, port: 15060}",
        f"    conf_dir: {tmp_path / 'conf'}",
        f"flows: {tmp_path / 'flows'}",
        f"database: sqlite:///{tmp_path / 'store.db'}",
    ]) + "\n")
    assert cli.main(["voicemail", "create", "-c", str(site), "1001", "--email", "a@example.com", "--pin", "4321"]) == 0
    assert "created mailbox 1001 (tenant default), e-mail to a@example.com" in capsys.readouterr().out
    assert cli.main(["voicemail", "create", "-c", str(site), "1001", "--pin", "4321"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["voicemail", "create", "-c", str(site), "1002", "--pin", "12"]) == 1
    assert "PIN" in capsys.readouterr().err

    async def leave() -> None:
        async with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
            boxes = Mailboxes(store, Clock())
            vm = Voicemail(boxes, spool_dir="/spool")
            await vm.store_message(ScriptedCall(caller="0611", caller_name="Bob"), await vm.mailbox("1001"),
                                   RecordSpec("/spool/a.wav"),
                                   RecordResult("/spool/a.wav", "terminator", 7_000_000))

    asyncio.run(leave())
    assert cli.main(["voicemail", "list", "-c", str(site), "1001"]) == 0
    out = capsys.readouterr().out
    assert "mailbox 1001: 1 new, 0 saved; e-mail a@example.com" in out
    assert "new" in out and "7 s  Bob <0611>  mail pending (0 tries)" in out
    assert cli.main(["voicemail", "list", "-c", str(site), "9999"]) == 1
    assert "no mailbox '9999'" in capsys.readouterr().err


async def test_recording_read_where_the_controller_sees_the_switch_spool(tmp_path: Path, mailboxes: Mailboxes) -> None:
    inbox = Inbox()
    server = await start_smtp(inbox)
    port = server.sockets[0].getsockname()[1]
    voicemail = Voicemail(mailboxes, spool_dir="/switch/spool", local_spool_dir=str(tmp_path / "mnt"),
                          mail=MailSettings.parse(f"127.0.0.1:{port}", "vm@pbx.example.com"))
    local = tmp_path / "mnt" / "acme" / "1001" / "x.wav"
    local.parent.mkdir(parents=True)
    audio = make_wav(local, 2.0)
    runner = runner_for(tmp_path, voicemail)
    # The switch reported no length: the WAV header (read at the local path) says 2 s.
    trace = await deposit(runner, ScriptedCall(records=[RecordResult("/switch/spool/acme/1001/x.wav", "terminator", 0)]))
    assert trace.variables["voicemail_outcome"] == "stored"
    try:
        assert await voicemail.send_pending() == (1, 0)
    finally:
        server.close()
        await server.wait_closed()
    (message,) = await mailboxes.messages("1001")
    assert (message.path, message.file, message.duration_us) == ("/switch/spool/acme/1001/x.wav", str(local), 2_000_000)
    msg = email.message_from_bytes(inbox.envelopes[0].content, policy=email.policy.default)
    assert next(msg.iter_attachments()).get_content() == audio
