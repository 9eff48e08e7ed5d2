"""Booth sessions: bills from ledger commits + CDR details, and collect settling in one transaction.

Every test runs on SQLite (a file, WAL) and on a throwaway PostgreSQL (tests/pg_fixture.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from switchctl.billing import callkeys
from switchctl.billing.accounts import Accounts, PinPolicy
from switchctl.billing.booths import (
    Bill,
    BoothBusy,
    BoothError,
    Booths,
    NothingToCollect,
)
from switchctl.billing.cdr import Cdr
from switchctl.billing.cdrstore import CdrStore
from switchctl.billing.ledger import Ledger
from switchctl.billing.money import CurrencyMismatch, Money, currency
from switchctl.billing.rating import Rate, RateBook, RateRow, RateTable
from switchctl.store import Store
from switchctl.store.booth_models import booth_sessions
from tests.pg_fixture import BACKENDS, FakeClock, store_on

EUR = currency("EUR")
T0 = 1_772_442_000_000_000  # 2026-03-02 09:00:00 UTC


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


# 0.60/min on 1/1 blocks: 1 s = 0.01 EUR, so costs are easy to read.
BOOK = RateBook([RateTable.from_rows("default", "default", [
    RateRow("default", "default", "33", "France", Rate(eur("0.60"), eur("0"), 1, 1)),
])])


@dataclass
class Env:
    store: Store
    clock: FakeClock
    ledger: Ledger
    accounts: Accounts
    booths: Booths
    cdrs: CdrStore
    calls: int = 0

    async def float_(self, booth: str, amount: str) -> int:
        """An operator's float on the booth (account created if needed)."""
        acct = await self.accounts.find(booth) or await self.accounts.create("booth", booth, EUR)
        await self.ledger.topup(acct.id, eur(amount), f"float-{booth}-{amount}-{self.clock.now}")
        return acct.id

    async def call(self, booth: str, seconds: int, *, number: str = "33612345678",
                   cdr: bool = True, end: bool = True) -> str:
        """One answered booth call: reserve, commit (live path, callkeys names), and its two CDRs
        as FreeSWITCH writes them (A leg names the B leg as its peer; the B leg is rated)."""
        self.calls += 1
        a_uuid, b_uuid = f"a-{self.calls}", f"b-{self.calls}"
        acct = await self.accounts.named(booth)
        ref = callkeys.reservation_ref("fs1", a_uuid)
        await self.ledger.reserve(acct.id, ref, eur("1.00"), f"{ref}:reserve:0")
        if not end:
            return a_uuid
        cost = BOOK.rate(number, at_us=0).rate.cost(seconds * 1_000_000)
        await self.ledger.commit(ref, cost, callkeys.commit_key(ref))
        if cdr:
            await self.record_cdrs(a_uuid, b_uuid, seconds, number, booth)
        return a_uuid

    async def record_cdrs(self, a_uuid: str, b_uuid: str, seconds: int, number: str, booth: str) -> None:
        start = T0 + self.calls * 600_000_000
        answer = start + 5_000_000
        end = answer + seconds * 1_000_000
        common = {"switch": "fs1", "caller": booth, "destination": number, "context": "default", "start_us": start,
                      "end_us": end, "hangup_cause": "NORMAL_CLEARING", "codec": "PCMA", "account": booth,
                      "booth": booth, "source": "fs_json", "raw": "{}"}
        await self.cdrs.record(Cdr(call_uuid=a_uuid, leg="a", direction="inbound", callee=None,
                                   answer_us=start, billable_us=end - start, peer=b_uuid, **common), BOOK)
        await self.cdrs.record(Cdr(call_uuid=b_uuid, leg="b", direction="outbound", callee=number,
                                   answer_us=answer, billable_us=seconds * 1_000_000, peer=a_uuid,
                                   **common), BOOK)


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:  # type: ignore[misc]
    async with store_on(request.param, tmp_path) as store:
        clock = FakeClock(T0)
        ledger = Ledger(store, clock)
        accounts = Accounts(store, clock, PinPolicy(scrypt_n=2**10))
        booths = Booths(store, ledger, accounts, booths=["1001", "1002", "1003"], clock=clock)
        yield Env(store, clock, ledger, accounts, booths, CdrStore(store, clock=clock))


async def session_rows(store: Store) -> list[tuple[str, str, int, int | None]]:
    async with store.read() as conn:
        rows = (await conn.execute(select(booth_sessions).order_by(booth_sessions.c.id))).all()
    return [(r.booth, r.state, r.start_seq, r.end_seq) for r in rows]


async def test_a_session_opens_at_the_first_call_and_collect_settles_it(env: Env) -> None:
    acct = await env.float_("1001", "20.00")
    assert (await env.booths.bill("1001")).state == "idle"
    assert await env.booths.list() == []
    first = await env.call("1001", 65)
    await env.call("1001", 7, number="33144556677")
    bill = await env.booths.bill("1001")
    assert (bill.state, bill.opened_by, bill.total, bill.due) == ("open", "call", eur("0.72"), eur("0.72"))
    line = bill.lines[0]
    assert (line.call_ref.call_uuid, line.charged, line.destination, line.duration_us, line.cdr_cost) == \
        (first, eur("0.65"), "33612345678", 65_000_000, eur("0.65"))
    assert line.start_us == T0 + 600_000_000 + 5_000_000  # the B leg's answer, from its CDR
    text = bill.text(dt.UTC)
    assert "2026-03-02 09:10:05  33612345678              1:05.0        0.65" in text
    assert "total       0.72 EUR" in text and "due       0.72 EUR" in text
    listed = await env.booths.list()
    assert [(b.booth, b.total) for b in listed] == [("1001", eur("0.72"))]

    done = await env.booths.collect("1001")
    assert (done.paid, done.returned, done.bill.state, done.bill.total) == (eur("0.72"), eur("0"), "collected", eur("0.72"))
    # The customer's payment puts the float back where it was.
    assert await env.ledger.balance(acct) == eur("20.00")
    last = (await env.ledger.entries(acct, last=1))[0]
    assert (last.kind, last.amount, last.note) == ("topup", eur("0.72"), "booth 1001 session paid at the counter")
    assert await env.ledger.audit(acct) == []
    assert await env.booths.list() == []
    # `bill` now reprints the collected session.
    reprint = await env.booths.bill("1001")
    assert (reprint.state, reprint.total, reprint.paid, len(reprint.lines)) == ("collected", eur("0.72"), eur("0.72"), 2)
    assert "paid       0.72 EUR" in reprint.text(dt.UTC)
    # Collecting again is refused, clearly, and writes nothing.
    entries = len(await env.ledger.entries(acct))
    with pytest.raises(NothingToCollect, match=r"nothing to collect; its last session \(1\) was collected"):
        await env.booths.collect("1001")
    assert len(await env.ledger.entries(acct)) == entries
    # The next call starts the next session, which bills only its own calls.
    await env.call("1001", 3)
    nxt = await env.booths.bill("1001")
    assert (nxt.state, nxt.total, len(nxt.lines)) == ("open", eur("0.03"), 1)
    await env.booths.collect("1001", eur("0.03"))
    assert [r[:2] for r in await session_rows(env.store)] == [("1001", "collected"), ("1001", "collected")]


async def test_deposit_left_is_given_back(env: Env) -> None:
    opened = await env.booths.open("1002", deposit=eur("5.00"))  # creates the booth's account
    assert (opened.state, opened.opened_by, opened.credited, opened.due) == ("open", "open", eur("5.00"), eur("-5.00"))
    acct = (await env.accounts.named("1002"))
    assert acct.kind == "booth" and acct.currency == EUR
    await env.call("1002", 120)
    bill = await env.booths.bill("1002")
    assert (bill.total, bill.due) == (eur("1.20"), eur("-3.80"))
    assert "give       3.80 EUR back" in bill.text(dt.UTC)
    with pytest.raises(BoothError, match="nothing is due"):
        await env.booths.collect("1002", eur("1.20"))
    done = await env.booths.collect("1002")
    assert (done.paid, done.returned) == (eur("0"), eur("3.80"))
    assert await env.ledger.balance(acct.id) == eur("0")
    last = (await env.ledger.entries(acct.id, last=1))[0]
    assert (last.kind, last.amount) == ("adjustment", eur("-3.80"))
    assert await env.ledger.audit(acct.id) == []


async def test_a_wrong_paid_amount_writes_nothing(env: Env) -> None:
    acct = await env.float_("1001", "10")
    await env.call("1001", 30)
    before = await env.ledger.entries(acct)
    with pytest.raises(BoothError, match="0.30 EUR is due but 0.20 EUR was paid"):
        await env.booths.collect("1001", eur("0.20"))
    with pytest.raises(CurrencyMismatch):
        await env.booths.collect("1001", Money.parse("0.30", currency("USD")))
    assert await env.ledger.entries(acct) == before
    assert await session_rows(env.store) == []
    assert (await env.booths.collect("1001", eur("0.30"))).paid == eur("0.30")


async def test_a_booth_with_a_live_call_cannot_be_collected(env: Env) -> None:
    await env.float_("1001", "10")
    await env.call("1001", 10)
    live = await env.call("1001", 0, end=False)
    bill = await env.booths.bill("1001")
    assert [r.call_uuid for r in bill.live_calls] == [live]
    assert "call in progress: fs1/a-2/a" in bill.text()
    with pytest.raises(BoothBusy, match="has a call in progress"):
        await env.booths.collect("1001")
    ref = callkeys.reservation_ref("fs1", live)
    await env.ledger.commit(ref, eur("0.04"), callkeys.commit_key(ref))  # the call ends: billed
    done = await env.booths.collect("1001")
    assert done.paid == eur("0.14")
    # The CDR of the second call never came: the line is there, its details pending.
    assert [line.details_pending for line in done.bill.lines] == [False, True]
    assert "(details pending)" in done.bill.text()


async def test_concurrent_collects_settle_once(env: Env) -> None:
    acct = await env.float_("1001", "10")
    await env.call("1001", 42)
    results = await asyncio.gather(*(env.booths.collect("1001") for _ in range(4)), return_exceptions=True)
    settled = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, NothingToCollect)]
    assert len(settled) == 1 and len(refused) == 3, results
    entries = await env.ledger.entries(acct)
    assert [e.kind for e in entries].count("topup") == 2  # the float + one payment
    assert await env.ledger.balance(acct) == eur("10")


async def test_float_topups_are_not_billed_refunds_are_credited(env: Env) -> None:
    acct = await env.float_("1001", "10")
    first = await env.call("1001", 50)
    await env.float_("1001", "5")  # the operator adds float mid-session: not the customer's
    ref = callkeys.reservation_ref("fs1", first)
    await env.ledger.refund(acct, eur("0.50"), "refund-1", call_ref=ref, note="bad line")
    bill = await env.booths.bill("1001")
    assert (bill.total, bill.credited, bill.due) == (eur("0.50"), eur("0.50"), eur("0"))
    assert [c.kind for c in bill.credits] == ["refund"]
    done = await env.booths.collect("1001")
    assert (done.paid, done.returned) == (eur("0"), eur("0"))
    assert await env.ledger.balance(acct) == eur("15")


async def test_the_charge_is_the_ledgers_and_a_differing_cdr_is_flagged(env: Env) -> None:
    await env.float_("1001", "10")
    uuid = await env.call("1001", 20, cdr=False)
    await env.record_cdrs(uuid, "b-x", 21, "33612345678", "1001")  # the CDR says 21 s
    bill = await env.booths.bill("1001")
    assert (bill.lines[0].charged, bill.lines[0].cdr_cost, bill.total) == (eur("0.20"), eur("0.21"), eur("0.20"))
    assert "(CDR rated 0.21)" in bill.text()


async def test_open_rules_and_unknown_booths(env: Env) -> None:
    with pytest.raises(BoothError, match=r"'1000' is not a booth of the site \(booth phones: 1001, 1002, 1003\)"):
        await env.booths.bill("1000")
    await env.accounts.create("customer", "1003", EUR)
    with pytest.raises(BoothError, match="account '1003' is a customer account, not a booth's"):
        await env.booths.open("1003")
    await env.booths.open("1001")
    with pytest.raises(BoothError, match="already has an open session"):
        await env.booths.open("1001")
    with pytest.raises(BoothError, match="deposit must be positive"):
        await env.booths.open("1002", deposit=eur("0"))
    # An opened session with nothing in it closes without a trace, and the booth works on.
    done = await env.booths.collect("1001")
    assert (done.paid, done.returned, done.bill.session_id) == (eur("0"), eur("0"), None)
    assert await session_rows(env.store) == []
    with pytest.raises(NothingToCollect, match="no call since it was set up"):
        await env.booths.collect("1001")
    # A session started by a call is adopted by an explicit open (keeps its start, adds the deposit).
    await env.float_("1001", "10")
    await env.call("1001", 10)
    adopted = await env.booths.open("1001", deposit=eur("2"))
    assert (adopted.opened_by, adopted.total, adopted.credited) == ("call", eur("0.10"), eur("2"))
    assert (await env.booths.collect("1001")).returned == eur("1.90")


async def test_bill_of_a_booth_without_account_is_idle(env: Env) -> None:
    bill = await env.booths.bill("1003")
    assert bill == Bill("1003", "idle", EUR)
    assert "no session" in bill.text()
    with pytest.raises(NothingToCollect, match="never had a call"):
        await env.booths.collect("1003")
