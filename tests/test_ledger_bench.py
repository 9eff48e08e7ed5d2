"""Ledger throughput: reserve+commit pairs on SQLite and PostgreSQL.

As a test: a small run with a generous floor, so a gross regression (a lock held too long, a query
per entry) fails. For the figures in docs/LEDGER.md run the full benchmark:
    .venv/bin/python -m tests.test_ledger_bench
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from switchctl.billing.accounts import Accounts, PinPolicy
from switchctl.billing.ledger import CallRef, Ledger
from switchctl.billing.money import Money, currency
from switchctl.store import Store
from tests.pg_fixture import BACKENDS, FakeClock, start_cluster, store_on

EUR = currency("EUR")
ONE = Money.parse("1", EUR)
HALF = Money.parse("0.5", EUR)


async def measure(store: Store, pairs: int, tasks: int) -> dict[str, float]:
    """Ops/s (one op = one reserve or one commit) sequentially, with `tasks` concurrent tasks on
    one account and on one account each, and `available()` reads/s."""
    clock = FakeClock()
    ledger = Ledger(store, clock)
    accounts = Accounts(store, clock, PinPolicy(scrypt_n=2**10))

    async def funded(name: str) -> int:
        acct = (await accounts.create("booth", name, EUR)).id
        await ledger.topup(acct, Money.parse("1000000", EUR), f"{name}-topup")
        return acct

    async def calls(acct: int, tag: str, count: int) -> None:
        for i in range(count):
            ref = CallRef("fs1", f"{tag}-{i}")
            await ledger.reserve(acct, ref, ONE, f"{ref}-r")
            await ledger.commit(ref, HALF, f"{ref}-c")

    one = await funded("one")
    figures: dict[str, float] = {}
    start = time.perf_counter()
    await calls(one, "seq", pairs)
    figures["sequential"] = 2 * pairs / (time.perf_counter() - start)
    start = time.perf_counter()
    await asyncio.gather(*(calls(one, f"t{w}", pairs // tasks) for w in range(tasks)))
    figures[f"{tasks} tasks, one account"] = 2 * (pairs // tasks) * tasks / (time.perf_counter() - start)
    many = [await funded(f"b{w}") for w in range(tasks)]
    start = time.perf_counter()
    await asyncio.gather(*(calls(many[w], f"m{w}", pairs // tasks) for w in range(tasks)))
    figures[f"{tasks} tasks, {tasks} accounts"] = 2 * (pairs // tasks) * tasks / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(pairs):
        await ledger.available(one)
    figures["available() reads"] = pairs / (time.perf_counter() - start)
    assert await ledger.audit(one) == [] and await ledger.live_reservations(one) == []
    return figures


@pytest.mark.parametrize("backend", BACKENDS)
async def test_throughput_floor(backend: str, tmp_path) -> None:
    async with store_on(backend, tmp_path) as store:
        figures = await measure(store, pairs=60, tasks=6)
    # ~200+ ops/s measured on a 2-core VM; 40 leaves room for slow CI machines.
    assert min(figures.values()) > 40, figures


async def _main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            async with Store.open(f"sqlite:///{Path(tmp) / sync}.db", synchronous=sync) as store:
                await store.create_all()
                print(f"SQLite synchronous={sync}:", _fmt(await measure(store, 1000, 20)))
    for durable in (True, False):
        cluster = start_cluster(durable=durable)
        try:
            async with Store.open(cluster.create_database("bench"), pool_size=20) as store:
                await store.create_all()
                label = "fsync on" if durable else "fsync off"
                print(f"PostgreSQL ({label}):", _fmt(await measure(store, 1000, 20)))
        finally:
            cluster.stop()


def _fmt(figures: dict[str, float]) -> str:
    return "; ".join(f"{name} {value:,.0f}/s" for name, value in figures.items())


if __name__ == "__main__":
    asyncio.run(_main())
