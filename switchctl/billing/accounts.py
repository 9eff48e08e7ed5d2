"""Prepaid accounts (booth, calling card, customer) and calling-card PIN authentication.

PINs are stored as salted scrypt hashes (`scrypt$n$r$p$salt$hash`, base64) and compared in constant
time. A card is named by its number (printed on the card, or what the IVR collects first) and
authenticated by its PIN: the lockout counter belongs to the card, so a failure must name the card
(with a PIN-only lookup a wrong PIN identifies no card whose counter could grow). After
`max_failures` wrong PINs within `window_us` the card is locked for `lockout_us`; while locked,
even the right PIN is refused. An unknown card costs the same hashing time as a wrong PIN, so
timing does not reveal which card numbers exist.
Hashing is CPU work (~tens of ms by design); it runs in a worker thread so the event loop keeps
serving calls (no I/O happens in that thread).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from switchctl.billing.ledger import (
    Clock,
    Entry,
    Ledger,
    Reservation,
    Totals,
    UnknownAccount,
    account_currency,
)
from switchctl.billing.money import Currency
from switchctl.store.database import Store, retry_on_disconnect
from switchctl.store.models import ACCOUNT_KINDS, accounts

DEFAULT = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
_PIN = re.compile(r"[0-9]+")
US_PER_MINUTE = 60_000_000


class AccountError(ValueError):
    """An account cannot be created or changed as asked."""


class AccountExists(AccountError):
    pass


@dataclass(frozen=True, slots=True)
class PinPolicy:
    max_failures: int = 3
    window_us: int = 15 * US_PER_MINUTE  # failures counted from the first failure of the window
    lockout_us: int = 15 * US_PER_MINUTE
    min_digits: int = 4
    max_digits: int = 16
    scrypt_n: int = 2**14  # ~16 MiB, ~30-50 ms per hash
    scrypt_r: int = 8
    scrypt_p: int = 1

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_us <= 0 or self.lockout_us <= 0:
            raise ValueError("PIN policy: max_failures ≥ 1 and positive window and lockout needed")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    kind: str
    tenant: str
    name: str
    account_class: str
    currency: Currency
    has_pin: bool
    created_at_us: int
    locked_until_us: int | None


@dataclass(frozen=True, slots=True)
class CardAuth:
    """Outcome of `authenticate_card`: `ok`; else `reason` is "invalid" (unknown card or wrong
    PIN: the caller must not learn which) or "locked" (until `locked_until_us`)."""

    ok: bool
    reason: str
    account: Account | None = None
    locked_until_us: int | None = None


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What `switchctl account show` prints."""

    account: Account
    totals: Totals
    reservations: list[Reservation]
    recent: list[Entry]


def _account(row: Row[Any]) -> Account:
    return Account(
        id=row.id, kind=row.kind, tenant=row.tenant, name=row.name,
        account_class=row._mapping["class"], currency=account_currency(row),
        has_pin=row.pin_hash is not None, created_at_us=row.created_at_us,
        locked_until_us=row.locked_until_us,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_pin(pin: str, policy: PinPolicy, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(16) if salt is None else salt
    n, r, p = policy.scrypt_n, policy.scrypt_r, policy.scrypt_p
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_pin(pin: str, stored: str) -> bool:
    """Constant-time check of `pin` against a `hash_pin` string (its own parameters)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(expected), maxmem=256 * 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


class Accounts:
    """Create, find and authenticate prepaid accounts; money moves through `Ledger`."""

    def __init__(self, store: Store, clock: Clock, pin_policy: PinPolicy | None = None) -> None:
        self.store = store
        self.clock = clock
        self.pin_policy = pin_policy or PinPolicy()
        # An unknown card is checked against this so it costs the same time as a wrong PIN
        # (made on first use, off the event loop).
        self._decoy: str | None = None

    def _check_pin(self, pin: str) -> None:
        p = self.pin_policy
        if not _PIN.fullmatch(pin) or not p.min_digits <= len(pin) <= p.max_digits:
            raise AccountError(f"a PIN is {p.min_digits} to {p.max_digits} digits")

    async def create(
        self, kind: str, name: str, currency: Currency, *, tenant: str = DEFAULT,
        account_class: str = DEFAULT, pin: str | None = None,
    ) -> Account:
        if kind not in ACCOUNT_KINDS:
            raise AccountError(f"account kind '{kind}' is not one of: {', '.join(ACCOUNT_KINDS)}")
        for what, value in (("name", name), ("tenant", tenant), ("class", account_class)):
            if not _NAME.fullmatch(value):
                raise AccountError(f"account {what} '{value}' must be letters, digits, '_', '.', "
                                   f"'@', '+' or '-' (at most 128)")
        if pin is not None and kind != "card":
            raise AccountError(f"only cards have a PIN, not a {kind}")
        if kind == "card" and pin is None:
            raise AccountError("a card needs a PIN")
        pin_hash = None
        if pin is not None:
            self._check_pin(pin)
            pin_hash = await asyncio.to_thread(hash_pin, pin, self.pin_policy)
        try:
            async with self.store.write() as conn:
                new_id = (await conn.execute(insert(accounts).values(
                    kind=kind, tenant=tenant, name=name, **{"class": account_class},
                    currency=currency.code, currency_exponent=currency.exponent,
                    pin_hash=pin_hash, failed_attempts=0, created_at_us=self.clock(),
                ).returning(accounts.c.id))).scalar_one()
        except IntegrityError:
            raise AccountExists(f"tenant '{tenant}' already has an account named '{name}'") from None
        return await self.get(new_id)

    @retry_on_disconnect
    async def get(self, account_id: int) -> Account:
        async with self.store.read() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        if row is None:
            raise UnknownAccount(f"no account {account_id}")
        return _account(row)

    @retry_on_disconnect
    async def find(self, name: str, *, tenant: str = DEFAULT) -> Account | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(accounts).where(
                accounts.c.tenant == tenant, accounts.c.name == name))).first()
        return _account(row) if row is not None else None

    async def named(self, name: str, *, tenant: str = DEFAULT) -> Account:
        account = await self.find(name, tenant=tenant)
        if account is None:
            raise UnknownAccount(f"tenant '{tenant}' has no account named '{name}'")
        return account

    async def set_pin(self, account_id: int, pin: str) -> None:
        """Replace a card's PIN (and clear its failure counter and lock)."""
        account = await self.get(account_id)
        if account.kind != "card":
            raise AccountError(f"account {account_id} is a {account.kind}; only cards have a PIN")
        self._check_pin(pin)
        pin_hash = await asyncio.to_thread(hash_pin, pin, self.pin_policy)
        async with self.store.write() as conn:
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(
                pin_hash=pin_hash, failed_attempts=0, first_failed_at_us=None, locked_until_us=None))

    async def authenticate_card(self, card: str, pin: str, *, tenant: str = DEFAULT) -> CardAuth:
        """Check `pin` for the card named `card`, counting failures towards the lockout."""
        async with self.store.read() as conn:
            row = (await conn.execute(select(accounts).where(
                accounts.c.tenant == tenant, accounts.c.name == card,
                accounts.c.kind == "card"))).first()
        now = self.clock()
        if row is not None and row.locked_until_us is not None and row.locked_until_us > now:
            return CardAuth(False, "locked", locked_until_us=row.locked_until_us)
        if row is not None and row.pin_hash:
            stored = row.pin_hash
        else:
            if self._decoy is None:
                self._decoy = await asyncio.to_thread(hash_pin, secrets.token_hex(8), self.pin_policy)
            stored = self._decoy
        good = await asyncio.to_thread(verify_pin, pin, stored) and row is not None
        if row is None:
            return CardAuth(False, "invalid")
        policy = self.pin_policy
        async with self.store.write() as conn:
            # Re-read under the lock: attempts racing this one may have locked the card meanwhile,
            # and then even a right PIN is refused (parallel guessing gains nothing).
            fresh = await self.store.lock_account(conn, row.id)
            assert fresh is not None
            now = self.clock()
            if fresh.locked_until_us is not None and fresh.locked_until_us > now:
                return CardAuth(False, "locked", locked_until_us=fresh.locked_until_us)
            if good:
                await conn.execute(update(accounts).where(accounts.c.id == row.id).values(
                    failed_attempts=0, first_failed_at_us=None, locked_until_us=None))
                return CardAuth(True, "ok", account=_account(fresh))
            in_window = (fresh.first_failed_at_us is not None
                         and now - fresh.first_failed_at_us < policy.window_us)
            failures = fresh.failed_attempts + 1 if in_window else 1
            first = fresh.first_failed_at_us if in_window else now
            if failures >= policy.max_failures:
                until = now + policy.lockout_us
                await conn.execute(update(accounts).where(accounts.c.id == row.id).values(
                    failed_attempts=0, first_failed_at_us=None, locked_until_us=until))
                return CardAuth(False, "locked", locked_until_us=until)
            await conn.execute(update(accounts).where(accounts.c.id == row.id).values(
                failed_attempts=failures, first_failed_at_us=first))
            return CardAuth(False, "invalid")

    async def summary(self, ledger: Ledger, name: str, *, tenant: str = DEFAULT,
                      recent: int = 10) -> AccountSummary:
        account = await self.named(name, tenant=tenant)
        return AccountSummary(
            account=account,
            totals=await ledger.totals(account.id),
            reservations=await ledger.live_reservations(account.id),
            recent=await ledger.entries(account.id, last=recent),
        )
