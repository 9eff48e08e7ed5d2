"""SQLAlchemy models of imported call detail records (docs/CDR.md).

They are declared on the shared `Base` of `store/models.py`, so `Store.create_all()` creates them
once this module has been imported (`billing/cdrstore.py` imports it).
Conventions as in models.py: instants are BIGINT epoch µs (the switch's), money BIGINT micro-units.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from switchctl.store.models import Base

_ID = BigInteger().with_variant(Integer(), "sqlite")


class CdrRow(Base):
    """One call leg, stored once per (switch, call_uuid, leg, segment). Changed only when a more
    precise source of the same record arrives (`revision` counts those changes)."""

    __tablename__ = "cdrs"
    __table_args__ = (
        UniqueConstraint("switch", "call_uuid", "leg", "segment", name="uq_cdrs_call"),
        Index("ix_cdrs_end", "end_us"),
        Index("ix_cdrs_account", "account", "end_us"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    switch: Mapped[str] = mapped_column(String(64))
    call_uuid: Mapped[str] = mapped_column(String(64))
    leg: Mapped[str] = mapped_column(String(1))
    segment: Mapped[int] = mapped_column(BigInteger, default=0)
    source: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))
    caller: Mapped[str] = mapped_column(String(255))
    callee: Mapped[str | None] = mapped_column(String(28), nullable=True)
    destination: Mapped[str] = mapped_column(String(255))
    context: Mapped[str] = mapped_column(String(255))
    start_us: Mapped[int] = mapped_column(BigInteger)
    answer_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    end_us: Mapped[int] = mapped_column(BigInteger)
    billable_us: Mapped[int] = mapped_column(BigInteger)
    hangup_cause: Mapped[str] = mapped_column(String(64))
    codec: Mapped[str | None] = mapped_column(String(64), nullable=True)
    peer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    account: Mapped[str | None] = mapped_column(String(128), nullable=True)
    booth: Mapped[str | None] = mapped_column(String(128), nullable=True)
    flags: Mapped[str] = mapped_column(String(255), default="")  # comma-separated
    cost_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    rate_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True)
    unrated_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    raw: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    imported_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class CdrFileRow(Base):
    """How far a CDR file has been imported: byte offset and line number of the next record, and
    what identifies the file's content so a rotated (replaced or truncated) file restarts at 0."""

    __tablename__ = "cdr_files"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    device: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[int] = mapped_column(BigInteger)  # lines consumed before `offset`
    head_sha256: Mapped[str] = mapped_column(String(64))  # of the first min(offset, 1024) bytes
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


cdrs = CdrRow.__table__
cdr_files = CdrFileRow.__table__
