"""Voicemail: mailboxes in the store, deposit and PIN-protected retrieval (the flows' `voicemail`
and `voicemail_check` nodes drive the call through `Voicemail`, a `flows.hooks.VoicemailService`),
and new-message e-mails with the recording attached, sent by a small asyncio SMTP client.
docs/VOICEMAIL.md describes the nodes, the CLI and the site keys."""

from .mailboxes import Mailbox, Mailboxes, StoredMessage, VoicemailError
from .mailer import MailSettings, build_message
from .service import Voicemail, wav_duration_us
from .smtp import SmtpError, send_mail

__all__ = [
    "MailSettings",
    "Mailbox",
    "Mailboxes",
    "SmtpError",
    "StoredMessage",
    "Voicemail",
    "VoicemailError",
    "build_message",
    "send_mail",
    "wav_duration_us",
]
