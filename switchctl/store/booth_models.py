"""SQLAlchemy model of phone-bar booth sessions (docs/BOOTHS.md).

A session is the stretch of a booth account's ledger between two collects: it covers the account's
ledger entries with `start_seq < seq <= end_seq`. Its bill is derived from those entries (the money)
and the CDRs (the details); the row stores when it was opened and, once collected, the settlement.
A row exists while a session is open only if it was opened explicitly (`switchctl booth open`);
a session opened by the booth's first call gets its row when it is collected.
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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from switchctl.store.models import Base

_ID = BigInteger().with_variant(Integer(), "sqlite")
SESSION_STATES = ("open", "collected")


class BoothSessionRow(Base):
    __tablename__ = "booth_sessions"
    __table_args__ = (
        # Two sessions can never start at the same point of one account's ledger: a second collect
        # of the same session (a retry, two cashiers at once) collides here if nothing else stops it.
        UniqueConstraint("account_id", "start_seq", name="uq_booth_sessions_start"),
        CheckConstraint("state IN ('open', 'collected')", name="ck_booth_sessions_state"),
        # At most one open session per account.
        Index("uq_booth_sessions_open", "account_id", unique=True,
              sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'")),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    booth: Mapped[str] = mapped_column(String(128))  # the booth's extension = its account's name
    state: Mapped[str] = mapped_column(String(16))
    start_seq: Mapped[int] = mapped_column(BigInteger)  # last ledger seq before the session
    end_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # its settlement entry
    opened_by: Mapped[str] = mapped_column(String(16))  # "open" (explicit) or "call" (first call)
    opened_at_us: Mapped[int] = mapped_column(BigInteger)
    collected_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # Σ call charges
    credits_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # deposits + refunds
    paid_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # taken at the counter
    returned_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # deposit given back


booth_sessions = BoothSessionRow.__table__
