"""Mailboxes and messages in the store (store/voicemail_models.py).

PINs are hashed and checked like calling-card PINs (billing/accounts.py `hash_pin`/`verify_pin`,
the same `PinPolicy`): after `max_failures` wrong PINs within `window_us` the mailbox is locked for
`lockout_us`, and while locked even the right PIN is refused. An unknown mailbox costs the same
hashing time as a wrong PIN. Hashing is CPU work run in a worker thread (as for cards), no I/O.

The e-mail outbox is the message rows themselves: `mail_state` "pending" rows are due from
`mail_next_at_us`; `claim_due_mail` leases them (pushes `mail_next_at_us` ahead) so two controllers
sharing a store do not both send one.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from switchctl.billing.accounts import PinPolicy, hash_pin, verify_pin
from switchctl.billing.ledger import Clock
from switchctl.flows.hooks import PinCheck
from switchctl.store.database import Store
from switchctl.store.voicemail_models import voicemail_boxes, voicemail_messages

from .smtp import check_address

DEFAULT_TENANT = "default"
_NUMBER = re.compile(r"[0-9A-Za-z*#+_.\-]{1,64}")
_PIN = re.compile(r"[0-9]+")
MAIL_LEASE_US = 5 * 60 * 1_000_000  # a claimed e-mail is someone's for this long


class VoicemailError(ValueError):
    """A mailbox cannot be created or changed as asked."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    tenant: str
    number: str
    email: str | None
    greeting: str | None
    created_at_us: int
    locked_until_us: int | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    mailbox_id: int
    caller: str
    caller_name: str
    call_uuid: str
    received_at_us: int
    duration_us: int
    path: str  # as the switch plays it
    file: str  # as the controller reads it
    state: str
    mail_state: str
    mail_attempts: int
    mail_next_at_us: int
    mail_error: str
    mailed_at_us: int | None


def _mailbox(row: Row[Any]) -> Mailbox:
    return Mailbox(row.id, row.tenant, row.number, row.email, row.greeting, row.created_at_us, row.locked_until_us)


def _message(row: Row[Any]) -> StoredMessage:
    return StoredMessage(
        row.id, row.mailbox_id, row.caller, row.caller_name, row.call_uuid, row.received_at_us,
        row.duration_us, row.path, row.file, row.state, row.mail_state, row.mail_attempts,
        row.mail_next_at_us, row.mail_error, row.mailed_at_us,
    )


class Mailboxes:
    def __init__(self, store: Store, clock: Clock, *, tenant: str = DEFAULT_TENANT,
                 pin_policy: PinPolicy | None = None) -> None:
        self.store = store
        self.clock = clock
        self.tenant = tenant
        self.pin_policy = pin_policy or PinPolicy()
        self._decoy: str | None = None

    # -- mailboxes ------------------------------------------------------------------------------

    async def create(self, number: str, pin: str, *, email: str | None = None,
                     greeting: str | None = None) -> Mailbox:
        if not _NUMBER.fullmatch(number):
            raise VoicemailError(f"mailbox number '{number}' must be 1-64 digits/letters (no spaces)")
        policy = self.pin_policy
        if not _PIN.fullmatch(pin) or not policy.min_digits <= len(pin) <= policy.max_digits:
            raise VoicemailError(f"a PIN is {policy.min_digits} to {policy.max_digits} digits")
        if email is not None:
            try:
                check_address(email)
            except ValueError as exc:
                raise VoicemailError(str(exc)) from None
        pin_hash = await asyncio.to_thread(hash_pin, pin, policy)
        try:
            async with self.store.write() as conn:
                result = await conn.execute(insert(voicemail_boxes).values(
                    tenant=self.tenant, number=number, pin_hash=pin_hash, email=email, greeting=greeting,
                    created_at_us=self.clock(), failed_attempts=0))
                new_id = result.inserted_primary_key[0]
        except IntegrityError:
            raise VoicemailError(f"mailbox '{number}' already exists (tenant '{self.tenant}')") from None
        box = await self.get(number)
        assert box is not None and box.id == new_id
        return box

    async def get(self, number: str) -> Mailbox | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(voicemail_boxes).where(
                voicemail_boxes.c.tenant == self.tenant, voicemail_boxes.c.number == number))).first()
        return _mailbox(row) if row is not None else None

    async def check_pin(self, number: str, pin: str) -> PinCheck:
        """Check `pin` for mailbox `number`, counting failures towards the lockout."""
        async with self.store.read() as conn:
            row = (await conn.execute(select(voicemail_boxes).where(
                voicemail_boxes.c.tenant == self.tenant, voicemail_boxes.c.number == number))).first()
        now = self.clock()
        if row is not None and row.locked_until_us is not None and row.locked_until_us > now:
            return PinCheck.LOCKED
        if row is not None:
            stored = row.pin_hash
        else:
            if self._decoy is None:
                self._decoy = await asyncio.to_thread(hash_pin, secrets.token_hex(8), self.pin_policy)
            stored = self._decoy
        good = await asyncio.to_thread(verify_pin, pin, stored) and row is not None
        if row is None:
            return PinCheck.INVALID
        policy = self.pin_policy
        async with self.store.write() as conn:
            # Re-read under the lock: a parallel guess may have locked the mailbox meanwhile.
            fresh = (await conn.execute(select(voicemail_boxes).where(
                voicemail_boxes.c.id == row.id).with_for_update())).first()
            assert fresh is not None
            now = self.clock()
            if fresh.locked_until_us is not None and fresh.locked_until_us > now:
                return PinCheck.LOCKED
            where = voicemail_boxes.c.id == row.id
            if good:
                await conn.execute(update(voicemail_boxes).where(where).values(
                    failed_attempts=0, first_failed_at_us=None, locked_until_us=None))
                return PinCheck.OK
            in_window = fresh.first_failed_at_us is not None and now - fresh.first_failed_at_us < policy.window_us
            failures = fresh.failed_attempts + 1 if in_window else 1
            if failures >= policy.max_failures:
                await conn.execute(update(voicemail_boxes).where(where).values(
                    failed_attempts=0, first_failed_at_us=None, locked_until_us=now + policy.lockout_us))
                return PinCheck.LOCKED
            await conn.execute(update(voicemail_boxes).where(where).values(
                failed_attempts=failures, first_failed_at_us=fresh.first_failed_at_us if in_window else now))
            return PinCheck.INVALID

    # -- messages -------------------------------------------------------------------------------

    async def add_message(self, box: Mailbox, *, caller: str, caller_name: str, call_uuid: str,
                          received_at_us: int, duration_us: int, path: str, file: str) -> StoredMessage:
        async with self.store.write() as conn:
            result = await conn.execute(insert(voicemail_messages).values(
                mailbox_id=box.id, caller=caller[:128], caller_name=caller_name[:128], call_uuid=call_uuid[:128],
                received_at_us=received_at_us, duration_us=duration_us, path=path, file=file, state="new",
                mail_state="pending" if box.email else "none", mail_attempts=0,
                mail_next_at_us=received_at_us, mail_error=""))
            new_id = result.inserted_primary_key[0]
            row = (await conn.execute(select(voicemail_messages).where(voicemail_messages.c.id == new_id))).one()
        return _message(row)

    async def messages(self, number: str, *, states: tuple[str, ...] = ("new", "saved")) -> list[StoredMessage]:
        """The mailbox's messages in `states`: new first, then saved, each oldest first."""
        box = await self.get(number)
        if box is None:
            return []
        async with self.store.read() as conn:
            rows = (await conn.execute(select(voicemail_messages).where(
                voicemail_messages.c.mailbox_id == box.id, voicemail_messages.c.state.in_(states)
            ).order_by(voicemail_messages.c.received_at_us, voicemail_messages.c.id))).all()
        order = {"new": 0, "saved": 1, "deleted": 2}
        return sorted((_message(r) for r in rows), key=lambda m: order[m.state])

    async def set_state(self, number: str, message_id: int, state: str) -> None:
        if state not in ("new", "saved", "deleted"):
            raise VoicemailError(f"message state '{state}' is not new, saved or deleted")
        box = await self.get(number)
        if box is None:
            raise VoicemailError(f"no mailbox '{number}'")
        async with self.store.write() as conn:
            result = await conn.execute(update(voicemail_messages).where(
                voicemail_messages.c.id == message_id, voicemail_messages.c.mailbox_id == box.id
            ).values(state=state))
        if result.rowcount != 1:
            raise VoicemailError(f"mailbox '{number}' has no message {message_id}")

    async def counts(self, number: str) -> dict[str, int]:
        box = await self.get(number)
        if box is None:
            return {}
        async with self.store.read() as conn:
            rows = (await conn.execute(select(voicemail_messages.c.state, func.count()).where(
                voicemail_messages.c.mailbox_id == box.id).group_by(voicemail_messages.c.state))).all()
        return {state: count for state, count in rows}

    # -- e-mail outbox --------------------------------------------------------------------------

    async def claim_due_mail(self, limit: int = 20) -> list[tuple[StoredMessage, Mailbox]]:
        """Pending e-mails due now, each leased to the caller for MAIL_LEASE_US (a crash mid-send
        makes it due again after the lease, never lost)."""
        now = self.clock()
        claimed: list[tuple[StoredMessage, Mailbox]] = []
        async with self.store.write() as conn:
            rows = (await conn.execute(
                select(voicemail_messages, voicemail_boxes.c.tenant, voicemail_boxes.c.number,
                       voicemail_boxes.c.email, voicemail_boxes.c.greeting, voicemail_boxes.c.created_at_us.label("box_created"),
                       voicemail_boxes.c.locked_until_us)
                .join(voicemail_boxes, voicemail_boxes.c.id == voicemail_messages.c.mailbox_id)
                .where(voicemail_messages.c.mail_state == "pending", voicemail_messages.c.mail_next_at_us <= now,
                       voicemail_boxes.c.tenant == self.tenant)
                .order_by(voicemail_messages.c.mail_next_at_us, voicemail_messages.c.id)
                .limit(limit))).all()
            for row in rows:
                # Conditional on the value read: another controller that claimed it first wins.
                result = await conn.execute(update(voicemail_messages).where(
                    voicemail_messages.c.id == row.id,
                    voicemail_messages.c.mail_next_at_us == row.mail_next_at_us,
                    voicemail_messages.c.mail_state == "pending",
                ).values(mail_next_at_us=now + MAIL_LEASE_US))
                if result.rowcount == 1:
                    box = Mailbox(row.mailbox_id, row.tenant, row.number, row.email, row.greeting,
                                  row.box_created, row.locked_until_us)
                    claimed.append((_message(row), box))
        return claimed

    async def mail_sent(self, message_id: int) -> None:
        async with self.store.write() as conn:
            await conn.execute(update(voicemail_messages).where(voicemail_messages.c.id == message_id).values(
                mail_state="sent", mailed_at_us=self.clock(), mail_error="",
                mail_attempts=voicemail_messages.c.mail_attempts + 1))

    async def mail_failed(self, message_id: int, error: str, retry_at_us: int) -> None:
        async with self.store.write() as conn:
            await conn.execute(update(voicemail_messages).where(voicemail_messages.c.id == message_id).values(
                mail_error=error[:500], mail_next_at_us=retry_at_us,
                mail_attempts=voicemail_messages.c.mail_attempts + 1))
