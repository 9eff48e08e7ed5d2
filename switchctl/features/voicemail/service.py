"""The voicemail feature as the flows see it (`flows.hooks.VoicemailService`), plus its e-mail loop.

    voicemail = Voicemail(Mailboxes(store, clock, tenant=...), spool_dir="/var/lib/freeswitch/...",
                          mail=MailSettings.parse("127.0.0.1:25", "voicemail@example.com"))
    runner.voicemail = voicemail
    task = asyncio.create_task(voicemail.run(stop))    # sends pending e-mails, retries failures

A stored message queues its e-mail in the store and wakes the loop: the call never waits for SMTP,
and a failed send stays pending (retried after `retry_seconds`, doubling up to an hour) across
restarts. Without `mail` settings messages are stored and their e-mails wait for a controller that
has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import wave
from pathlib import Path, PurePosixPath

from switchctl.billing.ledger import Clock
from switchctl.flows.hooks import PinCheck, VoicemailBox, VoicemailMessage
from switchctl.switch.call import Call, RecordResult, RecordSpec

from .mailboxes import Mailbox, Mailboxes, StoredMessage
from .mailer import MailSettings, NewMessageMail, send_new_message
from .smtp import SmtpError

log = logging.getLogger(__name__)

MIN_MESSAGE_US = 1_000_000  # shorter recordings are hang-ups after the beep, not messages
MAX_RETRY_US = 3600 * 1_000_000
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # ~10 min of 8 kHz 16-bit WAV; relays refuse bigger mails
_SAFE = re.compile(r"[^0-9A-Za-z_.+\-]")


def wav_duration_us(path: str) -> int | None:
    """The length of a PCM WAV file from its header, None when it cannot be read."""
    try:
        with wave.open(path, "rb") as wav:
            rate = wav.getframerate()
            return wav.getnframes() * 1_000_000 // rate if rate else None
    except (OSError, EOFError, wave.Error):
        return None


def _public(message: StoredMessage) -> VoicemailMessage:
    return VoicemailMessage(message.id, message.path, message.caller, message.received_at_us,
                            message.duration_us, message.state)


class Voicemail:
    def __init__(self, mailboxes: Mailboxes, *, spool_dir: str, local_spool_dir: str | None = None,
                 mail: MailSettings | None = None, clock: Clock | None = None,
                 min_message_us: int = MIN_MESSAGE_US) -> None:
        self.mailboxes = mailboxes
        self.spool_dir = spool_dir  # on the switch's filesystem: where it writes recordings
        # The same folder as the controller sees it (a shared mount, Asterisk's chroot), when the
        # controller does not see it at the switch's path: recordings are read there for e-mail.
        self.local_spool_dir = local_spool_dir
        self.mail = mail
        self.clock = clock or mailboxes.clock
        self.min_message_us = min_message_us
        self._wake = asyncio.Event()

    # -- VoicemailService -----------------------------------------------------------------------

    async def mailbox(self, number: str) -> VoicemailBox | None:
        box = await self.mailboxes.get(number)
        return VoicemailBox(box.number, box.greeting) if box is not None else None

    def recording_path(self, box: VoicemailBox, call: Call) -> str:
        # Flat in the spool root, which must exist: FreeSWITCH's `record` application does not
        # create folders (switch_ivr_record_file; only record_session makes them), nor does ARI's
        # record (a 500), and the controller may not see the switch's filesystem to make one per
        # mailbox. On Asterisk the spool is a folder of its own inside the recording dir and the
        # message plays back as `recording:<folder>/<name>` (docs/VOICEMAIL.md "On Asterisk");
        # the names all have one shape, so none is a prefix of another (Asterisk matches by prefix).
        tenant, number = _SAFE.sub("_", self.mailboxes.tenant), _SAFE.sub("_", box.number)
        name = f"{tenant}-{number}-{_SAFE.sub('_', call.uuid)}-{self.clock()}.wav"
        return str(PurePosixPath(self.spool_dir) / name)

    def local_path(self, switch_path: str) -> str:
        """Where the controller reads the switch's file `switch_path`."""
        if self.local_spool_dir is None:
            return switch_path
        switch = PurePosixPath(self.spool_dir)
        path = PurePosixPath(switch_path)
        if not path.is_relative_to(switch):
            return switch_path
        return str(Path(self.local_spool_dir) / path.relative_to(switch))

    async def store_message(self, call: Call, box: VoicemailBox, spec: RecordSpec,
                            result: RecordResult) -> VoicemailMessage | None:
        # RecordResult.path is the switch's path of the file (both backends report it so).
        file = self.local_path(result.path)
        duration = result.duration_us or wav_duration_us(file) or 0
        if duration and duration < self.min_message_us:
            log.info("voicemail for %s: %d ms recorded, too short to keep", box.number, duration // 1000,
                     extra={"call": call.uuid})
            with contextlib.suppress(OSError):
                Path(file).unlink(missing_ok=True)
            return None
        stored = await self.mailboxes.get(box.number)
        if stored is None:  # deleted while the caller spoke: keep nothing we cannot file
            log.warning("voicemail for %s: the mailbox is gone, message dropped", box.number, extra={"call": call.uuid})
            return None
        message = await self.mailboxes.add_message(
            stored, caller=call.info.caller_number, caller_name=call.info.caller_name, call_uuid=call.uuid,
            received_at_us=self.clock(), duration_us=duration, path=result.path or spec.path, file=file)
        log.info("voicemail %d stored for %s (%d ms, %s)", message.id, box.number, duration // 1000, result.reason,
                 extra={"call": call.uuid})
        self._wake.set()
        return _public(message)

    async def check_pin(self, number: str, pin: str) -> PinCheck:
        return await self.mailboxes.check_pin(number, pin)

    async def messages(self, number: str) -> list[VoicemailMessage]:
        return [_public(m) for m in await self.mailboxes.messages(number)]

    async def set_state(self, number: str, message_id: int, state: str) -> None:
        await self.mailboxes.set_state(number, message_id, state)

    # -- e-mail ---------------------------------------------------------------------------------

    def _retry_at(self, attempts_before: int) -> int:
        assert self.mail is not None
        delay = min(int(self.mail.retry_seconds * 1_000_000) << min(attempts_before, 20), MAX_RETRY_US)
        return self.clock() + delay

    async def send_pending(self) -> tuple[int, int]:
        """Send every e-mail due now; returns (sent, failed). Failures stay pending for later."""
        if self.mail is None:
            return 0, 0
        sent = failed = 0
        while True:
            batch = await self.mailboxes.claim_due_mail()
            if not batch:
                return sent, failed
            for message, box in batch:
                try:
                    await self._send(message, box)
                except (SmtpError, OSError, TimeoutError, ValueError) as exc:
                    failed += 1
                    error = f"{type(exc).__name__}: {exc}"
                    await self.mailboxes.mail_failed(message.id, error, self._retry_at(message.mail_attempts))
                    log.warning("voicemail %d: e-mail to %s failed (%s); retried later", message.id, box.email, error)
                else:
                    sent += 1
                    await self.mailboxes.mail_sent(message.id)
                    log.info("voicemail %d: e-mailed to %s", message.id, box.email)
            if failed:  # the relay is down: the rest waits for the next round
                return sent, failed

    async def _send(self, message: StoredMessage, box: Mailbox) -> None:
        assert self.mail is not None and box.email is not None
        # A plain bounded read of a local file (as the CDR collector reads its files): no thread
        # for I/O, and at most MAX_ATTACHMENT_BYTES, a few ms of the loop.
        with open(message.file, "rb") as handle:  # noqa: ASYNC230
            audio = handle.read(MAX_ATTACHMENT_BYTES + 1)
        if len(audio) > MAX_ATTACHMENT_BYTES:
            raise ValueError(f"recording {message.file} is more than {MAX_ATTACHMENT_BYTES} bytes, "
                             "more than an e-mail carries")
        await send_new_message(self.mail, NewMessageMail(
            to=box.email, mailbox=box.number, message_id=message.id, caller=message.caller,
            caller_name=message.caller_name, received_at_us=message.received_at_us,
            duration_us=message.duration_us, audio=audio, filename=f"voicemail-{box.number}-{message.id}.wav"))

    async def run(self, stop: asyncio.Event, *, poll_seconds: float = 30.0) -> None:
        """Send e-mails as messages arrive and retry failed ones, until `stop` is set."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.send_pending()
            except Exception:  # the store may be down for a moment: try next round
                log.exception("voicemail e-mail round failed")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
