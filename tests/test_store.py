"""The store: URLs, SQLite settings, write exclusion on SQLite and row locks on PostgreSQL, schema."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from switchctl.billing.accounts import Accounts, PinPolicy
from switchctl.billing.money import currency
from switchctl.store import Store, StoreError
from switchctl.store.database import _engine_url, sqlite_pragmas
from switchctl.store.models import accounts, ledger_entries
from tests.pg_fixture import BACKENDS, FakeClock, store_on

EUR = currency("EUR")


def test_urls_pick_the_async_driver() -> None:
    assert _engine_url("/var/lib/switchctl/db.sqlite") == "sqlite+aiosqlite:////var/lib/switchctl/db.sqlite"
    assert _engine_url("sqlite:///rel.db") == "sqlite+aiosqlite:///rel.db"
    assert _engine_url("postgresql://u:p@127.0.0.1:5432/sw") == "postgresql+asyncpg://u:p@127.0.0.1:5432/sw"
    assert _engine_url("postgresql+asyncpg://u@h/sw") == "postgresql+asyncpg://u@h/sw"


@pytest.mark.parametrize("url, message", [
    ("sqlite://", "in-memory SQLite"),
    ("sqlite:///:memory:", "in-memory SQLite"),
    ("mysql://u@h/db", "unsupported database 'mysql'"),
    ("postgresql+psycopg2://u@h/db", "driver 'psycopg2' is not the one switchctl uses"),
])
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store.open(url)


async def test_sqlite_settings(tmp_path) -> None:
    async with store_on("sqlite", tmp_path, busy_timeout_ms=1234) as store:
        assert await sqlite_pragmas(store) == {
            "journal_mode": "wal", "busy_timeout": 1234, "foreign_keys": 1, "synchronous": 2,
        }
        await store.create_all()  # a second time is harmless


@pytest.mark.parametrize("backend", BACKENDS)
async def test_foreign_keys_and_uniques_hold(backend: str, tmp_path) -> None:
    async with store_on(backend, tmp_path) as store:
        with pytest.raises(IntegrityError):
            async with store.write() as conn:
                await conn.execute(insert(ledger_entries).values(
                    account_id=99, seq=1, kind="topup", amount_micros=1, held_micros=0,
                    balance_after_micros=1, held_after_micros=0, currency="EUR",
                    idempotency_key="k", requested_micros=1, created_at_us=1, note=""))
        with pytest.raises(IntegrityError):
            async with store.write() as conn:
                await conn.execute(insert(accounts).values(
                    kind="boat", tenant="t", name="n", **{"class": "c"}, currency="EUR",
                    currency_exponent=2, failed_attempts=0, created_at_us=1))
        async with store.read() as conn:
            assert (await conn.execute(select(accounts))).all() == []


async def test_sqlite_write_transactions_exclude_another_process(tmp_path) -> None:
    """BEGIN IMMEDIATE: a second writer (another process: its own engine, no shared asyncio lock)
    cannot start while the first holds a write transaction, even before it wrote anything; readers
    still read (WAL)."""
    path = tmp_path / "shared.db"
    async with Store.open(f"sqlite:///{path}") as first, \
            Store.open(f"sqlite:///{path}", busy_timeout_ms=100) as second:
        await first.create_all()
        clock = FakeClock()
        acct = await Accounts(first, clock, PinPolicy(scrypt_n=2**10)).create("booth", "b1", EUR)
        async with first.write() as conn:
            await first.lock_account(conn, acct.id)  # a read only: the lock was taken at BEGIN
            with pytest.raises(OperationalError, match="database is locked"):
                async with second.write() as other:
                    await other.execute(select(accounts.c.id))
            async with second.read() as reader:
                assert (await reader.execute(select(accounts.c.name))).scalar_one() == "b1"
        async with second.write() as other:  # free again
            await second.lock_account(other, acct.id)


async def test_sqlite_writers_in_one_process_queue_in_the_event_loop(tmp_path) -> None:
    async with store_on("sqlite", tmp_path, busy_timeout_ms=50) as store:
        order: list[str] = []

        async def writer(name: str) -> None:
            async with store.write() as conn:
                order.append(f"{name} in")
                await conn.execute(select(accounts.c.id))
                await asyncio.sleep(0.2)  # longer than busy_timeout: only the asyncio lock helps
                order.append(f"{name} out")

        await asyncio.gather(writer("a"), writer("b"))
        assert order == ["a in", "a out", "b in", "b out"]


async def test_postgres_account_lock_blocks_a_second_writer(tmp_path) -> None:
    async with store_on("postgresql", tmp_path) as store:
        acct = await Accounts(store, FakeClock(), PinPolicy(scrypt_n=2**10)).create("booth", "b1", EUR)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with store.write() as conn:
                await store.lock_account(conn, acct.id)
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()

        async def second() -> None:
            async with store.write() as conn:
                await store.lock_account(conn, acct.id)

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the row lock
        release.set()
        await asyncio.wait_for(waiting, 5)
        await task


def test_missing_postgres_server_names_the_package(tmp_path) -> None:
    from tests.pg_fixture import PostgresUnavailable, find_pg_bin

    with pytest.raises(PostgresUnavailable, match="install the Debian package 'postgresql'"):
        find_pg_bin(tmp_path, search_path="")
    (tmp_path / "15" / "bin").mkdir(parents=True)
    for tool in ("initdb", "pg_ctl"):
        (tmp_path / "15" / "bin" / tool).touch()
    assert find_pg_bin(tmp_path, search_path="") == tmp_path / "15" / "bin"
