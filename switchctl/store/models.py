"""SQLAlchemy models of the shared state: prepaid accounts, the ledger and live reservations.

Conventions (see docs/LEDGER.md):
- money columns are BIGINT micro-units (10⁻⁶ of the currency's major unit), never float or NUMERIC
  with a scale that could round;
- instants are BIGINT epoch µs taken from the clock the caller passes in (tests use a fake clock;
  µs is what the switches give), so the schema is the same on SQLite and PostgreSQL;
- `ledger_entries` is append-only: the code never UPDATEs or DELETEs it. `reservations` and the
  PIN-lockout columns of `accounts` are the only rows that change.
The schema is created by `Store.create_all()`; there are no migrations yet (no Alembic).
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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACCOUNT_KINDS = ("booth", "card", "customer")
ENTRY_KINDS = ("topup", "reserve", "commit", "release", "refund", "adjustment")
RESERVATION_STATES = ("live", "committed", "released")

# SQLite only autoincrements INTEGER PRIMARY KEY; BIGINT on PostgreSQL.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class AccountRow(Base):
    """A prepaid account: a booth, a calling card (PIN) or a customer. Its balance is not stored
    here: it is the running total carried by its latest ledger entry."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("tenant", "name", name="uq_accounts_tenant_name"),
        CheckConstraint(_one_of("kind", ACCOUNT_KINDS), name="ck_accounts_kind"),
        CheckConstraint("kind = 'card' OR pin_hash IS NULL", name="ck_accounts_pin_only_cards"),
        CheckConstraint("failed_attempts >= 0", name="ck_accounts_failed_attempts"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))  # booth id, card number, customer code
    account_class: Mapped[str] = mapped_column("class", String(64))
    currency: Mapped[str] = mapped_column(String(3))
    currency_exponent: Mapped[int] = mapped_column(Integer)
    pin_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)  # "scrypt$n$r$p$salt$hash"
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_failed_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    locked_until_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class LedgerEntryRow(Base):
    """One append-only ledger line.

    amount_micros: signed change of the settled balance (topup/refund +, commit −, adjustment ±,
    reserve/release 0). held_micros: signed change of the amount on hold (reserve +, commit and
    release − what the reservation held). balance_after/held_after: the account's running totals
    including this entry, so reading a balance is one indexed row, and `seq` (1, 2, 3 … per account,
    unique) makes two writers that raced past the account lock collide instead of forking the totals.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key", name="uq_ledger_account_key"),
        UniqueConstraint("account_id", "seq", name="uq_ledger_account_seq"),
        CheckConstraint(_one_of("kind", ENTRY_KINDS), name="ck_ledger_kind"),
        Index("ix_ledger_call", "switch", "call_uuid", "leg"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    held_micros: Mapped[int] = mapped_column(BigInteger)
    balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    held_after_micros: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # The request as asked (e.g. the actual amount of a commit), to detect a key reused for a
    # different request.
    requested_micros: Mapped[int] = mapped_column(BigInteger)
    switch: Mapped[str | None] = mapped_column(String(64), nullable=True)
    call_uuid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leg: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(String(500), default="")


class ReservationRow(Base):
    """The live hold of one call leg on an account (one per call ref, for the life of the call)."""

    __tablename__ = "reservations"
    __table_args__ = (
        UniqueConstraint("switch", "call_uuid", "leg", name="uq_reservations_call"),
        CheckConstraint(_one_of("state", RESERVATION_STATES), name="ck_reservations_state"),
        CheckConstraint("held_micros >= 0", name="ck_reservations_held"),
        Index("ix_reservations_account_state", "account_id", "state"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    switch: Mapped[str] = mapped_column(String(64))
    call_uuid: Mapped[str] = mapped_column(String(64))
    leg: Mapped[str] = mapped_column(String(16))
    held_micros: Mapped[int] = mapped_column(BigInteger)  # what is on hold now (0 once closed)
    state: Mapped[str] = mapped_column(String(16))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


accounts = AccountRow.__table__
ledger_entries = LedgerEntryRow.__table__
reservations = ReservationRow.__table__
