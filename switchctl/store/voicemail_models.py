"""SQLAlchemy model of voicemail: mailboxes and their messages (docs/VOICEMAIL.md).

A mailbox is a number of a tenant with a PIN (scrypt hash, as calling cards: billing/accounts.py)
whose failures lock it like a card's, an optional e-mail address and an optional greeting (a sound
file the switch plays). A message is one recording left in a mailbox; the audio stays a file on
the switch's side (`path`), the row says who left it, when, how long it is, whether it was heard,
and whether its e-mail went out: `mail_state` "pending" rows are sent (and retried after a failure,
`mail_next_at_us`) by the mailer, so a message whose e-mail failed is never forgotten.
Declared on the shared `Base`; `store/database.py` imports this module so `create_all` creates it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from switchctl.store.models import Base

_ID = BigInteger().with_variant(Integer(), "sqlite")
MESSAGE_STATES = ("new", "saved", "deleted")
MAIL_STATES = ("pending", "sent", "none")  # none: the mailbox has no e-mail address


class VoicemailBoxRow(Base):
    __tablename__ = "voicemail_boxes"
    __table_args__ = (UniqueConstraint("tenant", "number", name="uq_voicemail_boxes_number"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(64))
    pin_hash: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    greeting: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # a path the switch plays
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    # PIN lockout, the same policy as calling cards (billing/accounts.py PinPolicy).
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_failed_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    locked_until_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VoicemailMessageRow(Base):
    __tablename__ = "voicemail_messages"
    __table_args__ = (
        CheckConstraint("state IN ('new', 'saved', 'deleted')", name="ck_voicemail_messages_state"),
        CheckConstraint("mail_state IN ('pending', 'sent', 'none')", name="ck_voicemail_messages_mail"),
        Index("ix_voicemail_messages_box", "mailbox_id", "state"),
        Index("ix_voicemail_messages_mail", "mail_state", "mail_next_at_us"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("voicemail_boxes.id", ondelete="CASCADE"))
    caller: Mapped[str] = mapped_column(String(128))
    caller_name: Mapped[str] = mapped_column(String(128), default="")
    call_uuid: Mapped[str] = mapped_column(String(128), default="")
    received_at_us: Mapped[int] = mapped_column(BigInteger)
    duration_us: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(1024))  # the recording as the switch plays it back
    file: Mapped[str] = mapped_column(String(1024))  # the same file as the controller reads it (e-mail)
    state: Mapped[str] = mapped_column(String(16), default="new")
    mail_state: Mapped[str] = mapped_column(String(16))
    mail_attempts: Mapped[int] = mapped_column(Integer, default=0)
    mail_next_at_us: Mapped[int] = mapped_column(BigInteger, default=0)  # due from then on
    mail_error: Mapped[str] = mapped_column(String(512), default="")  # the last failure, for `voicemail list`
    mailed_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


voicemail_boxes = VoicemailBoxRow.__table__
voicemail_messages = VoicemailMessageRow.__table__
