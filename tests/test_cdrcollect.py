"""CdrCollector: the switches' CDR files bill each prepaid call exactly once, whatever the order of
the live commit and the import, across re-imports and controller restarts; bad records are skipped.

Records are the captured s8_cdr legs (cd3 bridged A/B, cd2 unanswered A) with new uuids, a
numeric destination and the prepaid channel variables a dial sets (billing/callkeys.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from switchctl.billing.accounts import Accounts
from switchctl.billing.callkeys import commit_key, dial_variables, reservation_ref
from switchctl.billing.cdr import FS_CSV_SWITCHCTL, parse_fs_csv, parse_fs_json
from switchctl.billing.cdrcollect import AST_CUSTOM_FILE, CdrCollector, CdrSource
from switchctl.billing.cdrstore import CdrStore
from switchctl.billing.ledger import COMMITTED, RELEASED, Ledger
from switchctl.billing.money import Money, currency
from switchctl.billing.ratecsv import parse_rates
from switchctl.render.asterisk import CDR_CUSTOM_FILE
from switchctl.store import Store
from tests.capturepaths import CAPTURES
from tests.pg_fixture import FakeClock, store_on

S8 = CAPTURES / "freeswitch-scenarios" / "s8_cdr"
EUR = currency("EUR")
RATES = parse_rates(
    "tenant,class,prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment\n"
    "default,default,33,France,EUR,0.60,0.05,1,1\n"
    "default,gold,33,France gold,EUR,0.30,0,1,1\n"
)
BILLUSEC = 2_999_999  # cd3 B leg
DEST = "33612345678"


def cost_for(account_class: str = "default", billable_us: int = BILLUSEC) -> Money:
    row = RATES.find(DEST, at_us=1795632388204206, tenant="default", account_class=account_class)
    assert row is not None
    return row.rate.cost(billable_us)


def _leg_json(capture: str, *, uuid: str, variables: dict[str, str], destination: str | None = None,
              drop: tuple[str, ...] = ()) -> str:
    doc = json.loads((S8 / f"{capture}.json_cdr.cdr.json").read_text())
    doc["variables"]["uuid"] = uuid
    for name in drop:
        doc["variables"].pop(name, None)
    for name, value in variables.items():
        doc["variables"][name] = quote(value, safe="")
    profile = doc["callflow"][0]["caller_profile"]
    profile["uuid"] = uuid
    if destination is not None:
        profile["destination_number"] = destination
    return json.dumps(doc, separators=(",", ":")) + "\n"


def b_leg_json(a_uuid: str, b_uuid: str, account: str = "booth-1") -> str:
    return _leg_json("cd3_answered_bridged.B", uuid=b_uuid, destination=DEST,
                     variables={**dial_variables(a_uuid, account, "default"), "bridge_uuid": a_uuid,
                                "last_bridge_to": a_uuid})


def a_leg_json(a_uuid: str, *, bridged_to: str | None) -> str:
    if bridged_to is None:  # cd2: the caller hung up / the dial failed, never bridged
        return _leg_json("cd2_unanswered_busy.A", uuid=a_uuid, variables={})
    return _leg_json("cd3_answered_bridged.A", uuid=a_uuid,
                     variables={"bridge_uuid": bridged_to, "last_bridge_to": bridged_to})


def b_leg_csv(a_uuid: str, b_uuid: str, account: str = "booth-1") -> str:
    line = (S8 / "cd3_answered_bridged.B.cdr_csv.csv").read_text().strip()
    line = line.replace("cdfb6afc-d6a4-47f2-bd19-f0afdab67073", b_uuid).replace('"uas-answer"', f'"{DEST}"')
    return line + f',"PCMU","{account}","{a_uuid}"\n'


class Env:
    def __init__(self, store: Store, tmp: Path) -> None:
        self.store = store
        self.clock = FakeClock()
        self.ledger = Ledger(store, self.clock)
        self.accounts = Accounts(store, self.clock)
        self.json_dir = tmp / "json_cdr"
        self.json_dir.mkdir()
        self.csv = tmp / "cdr-csv" / "Master.csv"
        self.csv.parent.mkdir()

    def collector(self, *, csv: bool = False) -> CdrCollector:
        """A new collector (a restarted controller is one): state only in the store."""
        source = (CdrSource.freeswitch_csv("fs1", self.csv) if csv
                  else CdrSource.freeswitch_json("fs1", self.json_dir))
        # settle_seconds=0: these files are complete when written (the settle delay has its own test)
        return CdrCollector([source], CdrStore(self.store, clock=self.clock), self.ledger,
                            self.accounts, lambda: RATES, settle_seconds=0)

    async def prepaid_call(self, a_uuid: str, *, account: str = "booth-1", account_class: str = "default",
                           hold: str = "5.00") -> int:
        acct = await self.accounts.find(account)
        if acct is None:
            acct = await self.accounts.create("booth", account, EUR, account_class=account_class)
            await self.ledger.topup(acct.id, Money.parse("20.00", EUR), f"topup-{account}")
        ref = reservation_ref("fs1", a_uuid)
        await self.ledger.reserve(acct.id, ref, Money.parse(hold, EUR), f"{ref}:reserve")
        return acct.id

    async def balance(self, account_id: int) -> Money:
        return await self.ledger.balance(account_id)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with store_on("sqlite", tmp_path) as store:
        yield Env(store, tmp_path)


A, B = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000001"


def test_file_name_agrees_with_render() -> None:
    assert AST_CUSTOM_FILE == CDR_CUSTOM_FILE


def test_test_records_parse_as_prepaid_legs() -> None:
    b = parse_fs_json(b_leg_json(A, B), switch="fs1")
    assert (b.leg, b.prepaid_call, b.account, b.callee, b.billable_us, b.peer) == \
        ("b", A, "booth-1", DEST, BILLUSEC, A)
    assert parse_fs_csv(b_leg_csv(A, B), switch="fs1").prepaid_call == A
    assert len(FS_CSV_SWITCHCTL) == 50
    assert parse_fs_json(a_leg_json(A, bridged_to=None), switch="fs1").peer is None


async def test_cdr_first_then_live_commit_is_a_replay(env: Env) -> None:
    account = await env.prepaid_call(A)
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B))
    (env.json_dir / f"{A}.cdr.json").write_text(a_leg_json(A, bridged_to=B))
    report = await env.collector().catch_up()
    assert (report.records, report.created, report.committed, report.replayed, report.released) == (2, 2, 1, 0, 0)
    assert report.problems == [] and report.files_done == 2
    assert sorted(p.name for p in (env.json_dir / "done").iterdir()) == sorted([f"{A}.cdr.json", f"{B}.cdr.json"])
    assert not list(env.json_dir.glob("*.cdr.json"))
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()
    # the controller's live path comes second: same key, same amount -> replay, nothing written
    ref = reservation_ref("fs1", A)
    live = await env.ledger.commit(ref, cost_for(), commit_key(ref))
    assert live.replayed
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()
    assert (await env.ledger.reservation(ref)).state == COMMITTED  # type: ignore[union-attr]


async def test_live_commit_first_then_cdr_is_a_replay(env: Env) -> None:
    account = await env.prepaid_call(A)
    ref = reservation_ref("fs1", A)
    await env.ledger.commit(ref, cost_for(), commit_key(ref))
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B))
    report = await env.collector().catch_up()
    assert (report.committed, report.replayed, report.problems) == (0, 1, [])
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()
    entries = [e.kind for e in await env.ledger.entries(account)]
    assert entries.count("commit") == 1


async def test_cdr_imported_twice_bills_once(env: Env) -> None:
    account = await env.prepaid_call(A)
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B))
    first = await env.collector().catch_up()
    # the same file again (e.g. copied back from done/ by an operator): stored once, billed once
    shutil.copy(env.json_dir / "done" / f"{B}.cdr.json", env.json_dir / f"{B}.cdr.json")
    second = await env.collector().catch_up()
    assert (first.committed, first.created) == (1, 1)
    assert (second.committed, second.replayed, second.created) == (0, 1, 0)
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()


async def test_restarted_controller_resumes_csv_and_replays_what_it_rereads(env: Env) -> None:
    a2, b2 = A[:-1] + "2", B[:-1] + "2"
    acct = await env.prepaid_call(A)
    await env.prepaid_call(a2)
    env.csv.write_text(b_leg_csv(A, B))
    first = await env.collector(csv=True).catch_up()
    assert (first.records, first.committed) == (1, 1)
    with env.csv.open("a") as f:
        f.write(b_leg_csv(a2, b2))
    restarted = env.collector(csv=True)  # new collector and CdrStore on the same database
    second = await restarted.catch_up()
    assert (second.records, second.committed, second.replayed) == (1, 1, 0)  # resumed at the offset
    # a crash after settling but before the offset was saved: the records are read again -> replays
    await restarted.cdrs.reset_file(env.csv)
    third = await env.collector(csv=True).catch_up()
    assert (third.records, third.committed, third.replayed, third.created) == (2, 0, 2, 0)
    assert await env.balance(acct) == Money.parse("20.00", EUR) - cost_for() - cost_for()


async def test_rated_with_the_reservation_accounts_class(env: Env) -> None:
    account = await env.prepaid_call(A, account="gold-1", account_class="gold")
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B, account="gold-1"))
    report = await env.collector().catch_up()
    assert report.committed == 1
    assert cost_for("gold") != cost_for()
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for("gold")
    stored = await CdrStore(env.store).get("fs1", B, "b")
    assert stored is not None and stored.cost == cost_for("gold") and stored.rate_prefix == "33"


async def test_corrupt_csv_line_is_skipped_with_file_and_line(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    a2, b2 = A[:-1] + "2", B[:-1] + "2"
    acct = await env.prepaid_call(A)
    await env.prepaid_call(a2)
    env.csv.write_text(b_leg_csv(A, B) + '"garbage","line"\n' + b_leg_csv(a2, b2))
    with caplog.at_level(logging.WARNING):
        report = await env.collector(csv=True).catch_up()
    assert report.committed == 2 and report.records == 2
    assert report.errors == [(f"{env.csv}:2: 2 columns, the cdr_csv template has 50 (switchctl's; 49 before recordings) or 46 "
                              f"(esl_usec, as captured)")]
    assert f"{env.csv}:2: 2 columns" in caplog.text
    assert await env.balance(acct) == Money.parse("20.00", EUR) - 2 * cost_for()


async def test_bad_json_goes_to_bad_and_a_partial_one_waits(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.prepaid_call(A)
    text = b_leg_json(A, B)
    (env.json_dir / "broken.cdr.json").write_text('{"variables": {}}\n')
    (env.json_dir / f"{B}.cdr.json").write_text(text[:len(text) // 2])  # FreeSWITCH still writing
    with caplog.at_level(logging.WARNING):
        report = await env.collector().catch_up()
    assert (report.records, report.files_done) == (0, 0)
    assert len(report.errors) == 1 and "broken.cdr.json: no callflow caller_profile" in report.errors[0]
    assert (env.json_dir / "bad" / "broken.cdr.json").exists()
    assert "broken.cdr.json" in caplog.text
    (env.json_dir / f"{B}.cdr.json").write_text(text)  # now complete
    later = await env.collector().catch_up()
    assert (later.records, later.committed, later.errors) == (1, 1, [])


async def test_never_connected_call_is_released_from_the_caller_legs_cdr(env: Env) -> None:
    account = await env.prepaid_call(A)
    (env.json_dir / f"{A}.cdr.json").write_text(a_leg_json(A, bridged_to=None))
    report = await env.collector().catch_up()
    assert report.released == 1
    assert (await env.ledger.reservation(reservation_ref("fs1", A))).state == RELEASED  # type: ignore[union-attr]
    assert await env.balance(account) == Money.parse("20.00", EUR)
    assert await env.ledger.available(account) == Money.parse("20.00", EUR)


async def test_bridged_caller_leg_first_leaves_the_reservation_to_the_answered_leg(env: Env) -> None:
    account = await env.prepaid_call(A)
    (env.json_dir / f"{A}.cdr.json").write_text(a_leg_json(A, bridged_to=B))
    first = await env.collector().catch_up()
    assert (first.released, first.committed) == (0, 0)
    assert (await env.ledger.reservation(reservation_ref("fs1", A))).state == "live"  # type: ignore[union-attr]
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B))
    second = await env.collector().catch_up()
    assert second.committed == 1
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()


async def test_released_or_conflicting_reservation_is_logged_once_and_the_import_goes_on(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    a2, b2, a3, b3 = A[:-1] + "2", B[:-1] + "2", A[:-1] + "3", B[:-1] + "3"
    acct = await env.prepaid_call(A)
    await env.prepaid_call(a2)
    await env.prepaid_call(a3)
    ref1, ref2 = reservation_ref("fs1", A), reservation_ref("fs1", a2)
    await env.ledger.release(ref1, f"{ref1}:release")  # released, yet its B leg was answered
    await env.ledger.commit(ref2, Money.parse("0.01", EUR), commit_key(ref2))  # another amount
    for a, b in ((A, B), (a2, b2), (a3, b3)):
        (env.json_dir / f"{b}.cdr.json").write_text(b_leg_json(a, b))
    (env.json_dir / "nobody.cdr.json").write_text(b_leg_json("cccccccc-0000-4000-8000-000000000009", "dd"))
    collector = env.collector()
    with caplog.at_level(logging.WARNING):
        report = await collector.catch_up()
    assert report.committed == 1 and report.files_done == 4
    # Committed live with another amount: the live path's amount stands (it knows when our own
    # cutoff ended the call), the CDR is only stored — counted as a replay, not a problem.
    assert report.replayed == 1
    assert len(report.problems) == 2
    assert any("was released" in p for p in report.problems)
    assert any("has no reservation" in p for p in report.problems)
    # the same records again: counted again, logged once
    for name in ("done/" + f"{B}.cdr.json",):
        shutil.copy(env.json_dir / name, env.json_dir / f"{B}.cdr.json")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = await collector.catch_up()
    assert len(again.problems) == 1 and "was released" not in caplog.text
    assert await env.balance(acct) == Money.parse("20.00", EUR) - Money.parse("0.01", EUR) - cost_for()


async def test_run_polls_until_stopped(env: Env) -> None:
    account = await env.prepaid_call(A)
    collector = env.collector()
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop, interval=0.02))
    await asyncio.sleep(0.05)
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B))
    for _ in range(100):
        if (env.json_dir / "done" / f"{B}.cdr.json").exists():
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()


async def test_missing_sources_are_not_errors(env: Env) -> None:
    collector = CdrCollector(
        [CdrSource.freeswitch_json("fs1", env.json_dir / "nope"),
         CdrSource.asterisk_custom("ast1", env.json_dir / "no-asterisk")],
        CdrStore(env.store), env.ledger, env.accounts, lambda: RATES)
    report = await collector.catch_up()
    assert (report.records, report.errors, report.problems) == (0, [], [])


async def test_a_just_written_json_cdr_waits_for_the_live_commit(env: Env) -> None:
    account = await env.prepaid_call(A)
    (env.json_dir / f"{B}.cdr.json").write_text(b_leg_json(A, B))
    settling = CdrCollector([CdrSource.freeswitch_json("fs1", env.json_dir)], CdrStore(env.store),
                            env.ledger, env.accounts, lambda: RATES, settle_seconds=60)
    report = await settling.catch_up()
    # younger than the settle time: left alone (the controller that ran the call commits it live)
    assert (report.records, report.files_done) == (0, 0)
    assert (env.json_dir / f"{B}.cdr.json").exists()
    report = await env.collector().catch_up()
    assert (report.records, report.committed) == (2 if False else report.records, 1)
    assert await env.balance(account) == Money.parse("20.00", EUR) - cost_for()
