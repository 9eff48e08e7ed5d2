"""The store: one async SQLAlchemy engine on SQLite (embedded default) or PostgreSQL (shared).

Write transactions are serialized per account so a check-then-write (is there enough credit? then
reserve) cannot interleave with another writer of the same account:
- SQLite: every write transaction starts with `BEGIN IMMEDIATE` (takes the database's single
  RESERVED lock up front, so two writers cannot both read the old balance; other processes wait up
  to `busy_timeout`). Inside one process the writers also queue on an asyncio.Lock first, so they
  wait in the event loop instead of in SQLite's sleeping busy handler. WAL lets readers run meanwhile.
- PostgreSQL: a plain READ COMMITTED transaction in which the ledger takes `SELECT … FOR UPDATE` on
  the account row (`lock_account`); every later statement of the transaction sees what the previous
  holder of the lock committed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import event, select, text
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# booth_models, rate_models, recording_models and voicemail_models are imported for their side effect: their tables join
# `Base.metadata`, so `create_all` creates them.
from switchctl.store import booth_models as _booth_models  # noqa: F401
from switchctl.store import rate_models as _rate_models  # noqa: F401
from switchctl.store import recording_models as _recording_models  # noqa: F401
from switchctl.store import voicemail_models as _voicemail_models  # noqa: F401
from switchctl.store.models import Base, accounts

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SQLITE_BEGIN = "switchctl_sqlite_begin"  # execution option read by the "begin" hook


class StoreError(RuntimeError):
    """The store cannot be opened or used as configured."""


def _engine_url(url: str) -> str:
    """Accept `sqlite:///path`, `postgresql://…` (driver chosen here) or a bare file path."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise StoreError(f"store URL '{url}': unsupported database '{backend}' (use sqlite or postgresql)")
    driver = parsed.drivername.partition("+")[2]
    if driver not in ("", _DRIVERS[backend].partition("+")[2]):
        raise StoreError(f"store URL '{url}': driver '{driver}' is not the one switchctl uses; "
                         f"leave it out ({backend}://…)")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StoreError("an in-memory SQLite store would give each connection its own empty "
                         "database; give a file path (sqlite:///var/switchctl.db)")
    return parsed.set(drivername=_DRIVERS[backend]).render_as_string(hide_password=False)


class Store:
    """Engine and transactions of the switchctl database."""

    def __init__(self, engine: AsyncEngine, *, sqlite: bool) -> None:
        self.engine = engine
        self.is_sqlite = sqlite
        self._write_lock = asyncio.Lock() if sqlite else None

    @classmethod
    def open(
        cls, url: str, *, busy_timeout_ms: int = 10_000, synchronous: str = "FULL",
        pool_size: int = 5, echo: bool = False,
    ) -> Store:
        """Open (lazily connect) the store at `url`. SQLite: WAL journal, `busy_timeout_ms`,
        foreign keys on, `synchronous` FULL by default (a committed top-up survives power loss)."""
        engine_url = _engine_url(url)
        if engine_url.startswith("sqlite"):
            if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
                raise StoreError(f"synchronous '{synchronous}' must be FULL, NORMAL or EXTRA")
            engine = create_async_engine(engine_url, echo=echo, pool_size=pool_size)
            _configure_sqlite(engine, busy_timeout_ms, synchronous.upper())
            return cls(engine, sqlite=True)
        # No pool_pre_ping: it costs a round trip per transaction (~30% of a ledger write); a
        # connection the server dropped fails its operation instead, and `retry_on_disconnect`
        # runs that (idempotent) operation once more on a fresh connection.
        engine = create_async_engine(engine_url, echo=echo, pool_size=pool_size)
        return cls(engine, sqlite=False)

    async def create_all(self) -> None:
        """Create the tables that do not exist yet (no migrations: a changed model needs a new DB)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction (deferred on SQLite: in WAL mode it never blocks the writer)."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on normal exit, rolled back on an exception. On SQLite it
        holds the database write lock from its first statement (see the module doc)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            conn = await conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
            async with conn.begin():
                yield conn

    async def lock_account(self, conn: AsyncConnection, account_id: int) -> Row[Any] | None:
        """The account's row, locked for the rest of the transaction (FOR UPDATE on PostgreSQL;
        on SQLite the IMMEDIATE transaction already excludes other writers). None if unknown."""
        stmt = select(accounts).where(accounts.c.id == account_id).with_for_update()
        return (await conn.execute(stmt)).first()


def retry_on_disconnect(operation: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a one-transaction operation once more if its connection turned out to be dead (database
    restarted, idle connection dropped). Only for operations that are safe to repeat: reads, and
    writes that are idempotent by key (if the first attempt did commit, the second replays it)."""

    @functools.wraps(operation)
    async def attempt(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await operation(*args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("store connection lost (%s); retrying %s once", exc.orig,
                        operation.__qualname__)
            return await operation(*args, **kwargs)

    return attempt


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the driver (it would defer it and never make it IMMEDIATE); the
        # "begin" hook below emits our own.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
            "PRAGMA foreign_keys=ON",
            f"PRAGMA synchronous={synchronous}",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


async def sqlite_pragmas(store: Store) -> dict[str, Any]:
    """The connection settings actually in force (for `switchctl status` and tests)."""
    out: dict[str, Any] = {}
    async with store.engine.connect() as conn:
        for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous"):
            out[name] = (await conn.execute(text(f"PRAGMA {name}"))).scalar()
    return out
