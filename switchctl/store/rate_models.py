"""SQLAlchemy models of the stored rate tables (docs/RATING.md, "Rates in the store").

A rate table is named by (tenant, account class). Every import writes a new, complete *version* of
it (its rows), and the table's `current_version` says which version rating uses. Old versions stay
(for `switchctl rates show`, for re-rating a disputed call at the rates of its day, and to roll back
with `RateStore.use_version`). Versions are written once and never changed.
Declared on the shared `Base` of `store/models.py`: `Store.create_all()` creates these tables once
this module is imported (`store/__init__.py` imports it).
Conventions as in models.py: money is BIGINT micro-units, instants BIGINT epoch µs.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from switchctl.store.models import Base

_ID = BigInteger().with_variant(Integer(), "sqlite")


class RateTableRow(Base):
    """One (tenant, account class) rate table and the version rating uses now."""

    __tablename__ = "rate_tables"
    __table_args__ = (UniqueConstraint("tenant", "class", name="uq_rate_tables_key"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    account_class: Mapped[str] = mapped_column("class", String(64))
    current_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class RateVersionRow(Base):
    """One imported version of a table: its currency, timezone and where it came from."""

    __tablename__ = "rate_versions"
    __table_args__ = (UniqueConstraint("table_id", "version", name="uq_rate_versions_version"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    table_id: Mapped[int] = mapped_column(ForeignKey("rate_tables.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 … per table
    currency: Mapped[str] = mapped_column(String(3))
    currency_exponent: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(Integer)
    prefix_count: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(1024))  # the imported file, as given
    mode: Mapped[str] = mapped_column(String(16))  # "replace" or "merge"
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class RateRowRow(Base):
    """One row of a version: exactly the columns of the rate CSV that vary per row."""

    __tablename__ = "rate_rows"
    __table_args__ = (Index("ix_rate_rows_version", "version_id", "prefix"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("rate_versions.id", ondelete="RESTRICT"))
    prefix: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    per_minute_micros: Mapped[int] = mapped_column(BigInteger)
    connect_fee_micros: Mapped[int] = mapped_column(BigInteger)
    initial_s: Mapped[int] = mapped_column(Integer)
    increment_s: Mapped[int] = mapped_column(Integer)
    minimum_s: Mapped[int] = mapped_column(Integer)
    rounding: Mapped[str] = mapped_column(String(16))
    time_band: Mapped[str | None] = mapped_column(String(200), nullable=True)


rate_tables = RateTableRow.__table__
rate_versions = RateVersionRow.__table__
rate_rows = RateRowRow.__table__
