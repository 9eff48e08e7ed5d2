"""SQLAlchemy model of call recordings (docs/RECORDING.md).

One row per recording file of a call: the switch and the call's uuid (the same pair that names the
call's CDR rows, so a CDR's recording is found by call uuid), the path as the SWITCH wrote it, when
it started and ended, and how long it was paused. The audio stays a file on the switch's side.

Rows come from two places that must agree: the recording feature writes one when it starts a
recording (and completes it on stop or at the call's end), and the CDR importer writes or
completes one from the `switchctl_recording` variable of a CDR, so a controller killed mid-call
loses nothing. `source` says which one created the row.
Declared on the shared `Base`; `store/database.py` imports this module so `create_all` creates it
(a new table only: existing databases gain it without a migration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from switchctl.store.models import Base

if TYPE_CHECKING:  # database.py imports this module to register the table
    from switchctl.store.database import Store

_ID = BigInteger().with_variant(Integer(), "sqlite")
RECORDING_STATES = ("recording", "paused", "stopped")
RECORDING_SOURCES = ("live", "cdr")


class CallRecordingRow(Base):
    __tablename__ = "call_recordings"
    __table_args__ = (
        UniqueConstraint("switch", "call_uuid", "path", name="uq_call_recordings_file"),
        CheckConstraint("state IN ('recording', 'paused', 'stopped')", name="ck_call_recordings_state"),
        CheckConstraint("source IN ('live', 'cdr')", name="ck_call_recordings_source"),
        Index("ix_call_recordings_call", "call_uuid"),
        Index("ix_call_recordings_started", "started_us"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    switch: Mapped[str] = mapped_column(String(64))
    call_uuid: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(1024))  # as the switch wrote it
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(8))
    # epoch µs; started: when we asked the switch to start (or the CDR's answer/start when only the
    # CDR knew of it); ended: the CDR's end (the switch clock) when the call ended the recording,
    # our clock for a stop; None while it runs.
    started_us: Mapped[int] = mapped_column(BigInteger)
    ended_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(8), nullable=True)  # stop, hangup or cdr
    paused_us: Mapped[int] = mapped_column(BigInteger, default=0)  # total time paused (finished pauses)
    paused_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # a pause running now
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


call_recordings = CallRecordingRow.__table__


# --- access, shared by the recording feature and the CDR importer (both sit above the store) -----
# Kept here rather than in features/recording: billing/cdrcollect.py writes these rows too, and
# billing must not import a feature.

ENDED_BY = ("stop", "hangup", "cdr")
MAX_LIST = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRecording:
    id: int
    switch: str
    call_uuid: str
    path: str
    state: str
    source: str
    started_us: int
    ended_us: int | None
    ended_by: str | None
    paused_us: int

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class RecordingLog:
    """The `call_recordings` rows. Every write is idempotent by (switch, call uuid, path), so the
    live path and the CDR importer may each write a recording's row in either order (and a write
    retried after a lost connection replays)."""

    def __init__(self, store: Store, clock: Callable[[], int]) -> None:
        self.store = store
        self.clock = clock

    async def started(self, switch: str, call_uuid: str, path: str, started_us: int) -> None:
        now = self.clock()
        async with self.store.write() as conn:
            found = (await conn.execute(select(call_recordings.c.id).where(
                call_recordings.c.switch == switch, call_recordings.c.call_uuid == call_uuid,
                call_recordings.c.path == path))).first()
            if found is None:
                try:
                    await conn.execute(insert(call_recordings).values(
                        switch=switch, call_uuid=call_uuid, path=path, state="recording", source="live",
                        started_us=started_us, ended_us=None, ended_by=None, paused_us=0,
                        paused_at_us=None, updated_at_us=now))
                    return
                except IntegrityError:  # the CDR importer wrote it meanwhile (another process)
                    pass
            await conn.execute(update(call_recordings).where(
                call_recordings.c.switch == switch, call_recordings.c.call_uuid == call_uuid,
                call_recordings.c.path == path, call_recordings.c.source == "live",
            ).values(state="recording", started_us=started_us, ended_us=None, ended_by=None,
                     updated_at_us=now))

    async def _row(self, conn: Any, switch: str, call_uuid: str, path: str) -> Any:
        return (await conn.execute(select(call_recordings).where(
            call_recordings.c.switch == switch, call_recordings.c.call_uuid == call_uuid,
            call_recordings.c.path == path))).first()

    async def paused(self, switch: str, call_uuid: str, path: str, at_us: int) -> None:
        async with self.store.write() as conn:
            row = await self._row(conn, switch, call_uuid, path)
            if row is None or row.state != "recording":
                return
            await conn.execute(update(call_recordings).where(call_recordings.c.id == row.id).values(
                state="paused", paused_at_us=at_us, updated_at_us=self.clock()))

    async def resumed(self, switch: str, call_uuid: str, path: str, at_us: int) -> None:
        async with self.store.write() as conn:
            row = await self._row(conn, switch, call_uuid, path)
            if row is None or row.state != "paused":
                return
            paused = row.paused_us + max(0, at_us - (row.paused_at_us or at_us))
            await conn.execute(update(call_recordings).where(call_recordings.c.id == row.id).values(
                state="recording", paused_us=paused, paused_at_us=None, updated_at_us=self.clock()))

    async def ended(self, switch: str, call_uuid: str, path: str, at_us: int, *, by: str) -> None:
        """The recording finished: `by` "stop" (asked: `at_us` is when), or "hangup" (it ended
        with the call: `at_us` is our clock, replaced by the CDR's end when that is imported)."""
        if by not in ENDED_BY:
            raise ValueError(f"ended by {by!r}: one of {', '.join(ENDED_BY)}")
        async with self.store.write() as conn:
            row = await self._row(conn, switch, call_uuid, path)
            if row is None or row.state == "stopped":
                return
            paused = row.paused_us
            if row.state == "paused" and row.paused_at_us is not None:
                paused += max(0, at_us - row.paused_at_us)
            await conn.execute(update(call_recordings).where(call_recordings.c.id == row.id).values(
                state="stopped", ended_us=at_us, ended_by=by, paused_us=paused, paused_at_us=None,
                updated_at_us=self.clock()))

    async def from_cdr(self, switch: str, call_uuid: str, path: str, *, start_us: int,
                       end_us: int) -> bool:
        """A CDR of the call names `path` (its `switchctl_recording`): the row is written if the live
        path did not write it, and a recording that ended with the call takes the CDR's end (the
        switch's clock). True when a row was created."""
        now = self.clock()
        async with self.store.write() as conn:
            row = await self._row(conn, switch, call_uuid, path)
            if row is None:
                try:
                    await conn.execute(insert(call_recordings).values(
                        switch=switch, call_uuid=call_uuid, path=path, state="stopped", source="cdr",
                        started_us=start_us, ended_us=end_us, ended_by="cdr", paused_us=0,
                        paused_at_us=None, updated_at_us=now))
                    return True
                except IntegrityError:
                    return False
            if row.ended_by == "stop":
                return False  # stopped on purpose: our stop time is the truth
            # One Asterisk channel writes a row per dial attempt: the call's end is the latest.
            end = max(end_us, row.ended_us or 0) if row.ended_by == "cdr" else end_us
            start = min(start_us, row.started_us) if row.source == "cdr" else row.started_us
            paused = row.paused_us
            if row.state == "paused" and row.paused_at_us is not None:
                paused += max(0, end - row.paused_at_us)
            await conn.execute(update(call_recordings).where(call_recordings.c.id == row.id).values(
                state="stopped", started_us=start, ended_us=max(end, start), ended_by="cdr",
                paused_us=paused, paused_at_us=None, updated_at_us=now))
            return False

    async def list(self, *, call_uuid: str | None = None, switch: str | None = None,
                   limit: int = 100) -> list[StoredRecording]:
        """Newest first; `call_uuid` / `switch` narrow it down."""
        stmt = select(call_recordings)
        if call_uuid is not None:
            stmt = stmt.where(call_recordings.c.call_uuid == call_uuid)
        if switch is not None:
            stmt = stmt.where(call_recordings.c.switch == switch)
        stmt = stmt.order_by(call_recordings.c.started_us.desc(), call_recordings.c.id.desc())
        stmt = stmt.limit(max(1, min(limit, MAX_LIST)))
        async with self.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [StoredRecording(r.id, r.switch, r.call_uuid, r.path, r.state, r.source, r.started_us,
                                r.ended_us, r.ended_by, r.paused_us) for r in rows]
