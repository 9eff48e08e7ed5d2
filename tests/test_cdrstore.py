"""CdrStore: each leg stored once, rated once, precedence by precision, incremental file import.

Runs on SQLite and a throwaway PostgreSQL (tests/pg_fixture.py); the hypothesis property on both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select

from switchctl.billing.cdr import (
    AstCustomFormat,
    AstMasterFormat,
    Cdr,
    FsCsvFormat,
    FsJsonFormat,
    parse_ast_custom,
    parse_ast_master,
    parse_fs_csv,
    parse_fs_event,
    parse_fs_json,
)
from switchctl.billing.cdrstore import CdrStore
from switchctl.billing.money import Money, currency
from switchctl.billing.ratecsv import parse_rates
from switchctl.esl.codec import FrameParser, decode
from switchctl.store import Store
from switchctl.store.cdr_models import cdrs
from tests.capturepaths import CAPTURES
from tests.pg_fixture import BACKENDS, FakeClock, store_on

S8 = CAPTURES / "freeswitch-scenarios" / "s8_cdr"
AST = CAPTURES / "asterisk-scenarios" / "08_cdr"
CAPTURED_DOUBLE_FIELDS = ("uniqueid", "linkedid", "channel", "dstchannel", "disposition", "start(double)",
                          "answer(double)", "end(double)", "duration", "billsec", "lastapp", "lastdata",
                          "sequence")
EUR = currency("EUR")
RATES = parse_rates(
    "tenant,class,prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment\n"
    "default,default,4,dialplan tests,EUR,0.12,0.05,30,6\n"
    "default,default,16,ari tests,EUR,0.60,0,1,1\n"
    "default,default,33,France,EUR,0.02,0,60,60\n"
    "vip,default,33,France vip,EUR,0.01,0,1,1\n"
)
FS_CASES = [("cd1_answered_no_bleg", "A"), ("cd2_unanswered_busy", "A"), ("cd2_unanswered_busy", "B"),
            ("cd3_answered_bridged", "A"), ("cd3_answered_bridged", "B")]
AST_CASES = sorted(p.name for p in AST.iterdir() if (p / "cdr").is_dir())


def _event_headers(path: Path) -> dict[str, str]:
    return dict(decode(FrameParser().feed(path.read_bytes())[0]).headers)  # type: ignore[union-attr]


def _dialled(cdr: Cdr) -> Cdr:
    """A captured B leg whose destination is a real number (the capture dialled 'uas-answer')."""
    return dataclasses.replace(cdr, destination="33612345678", callee="33612345678", flags=())


def fs_sources(case: str, letter: str) -> list[Cdr]:
    """The three FreeSWITCH records of one captured leg (event, JSON file, CSV line)."""
    stem = f"{case}.{letter}"
    out = [parse_fs_event(_event_headers(S8 / f"{stem}.CHANNEL_HANGUP_COMPLETE.plain.raw"), switch="fs1"),
           parse_fs_json((S8 / f"{stem}.json_cdr.cdr.json").read_text(), switch="fs1"),
           parse_fs_csv((S8 / f"{stem}.cdr_csv.csv").read_text(), switch="fs1")]
    return [_dialled(c) for c in out] if letter == "B" else out


def ast_sources(case: str) -> list[list[Cdr]]:
    """Per Asterisk CDR row: its Master.csv (seconds) and cdr_custom (µs) records."""
    master = (AST / case / "cdr" / "Master.csv").read_text().splitlines()
    custom = (AST / case / "cdr" / "advanced_double.csv").read_text().splitlines()
    out = []
    for m, c in zip(master, custom):
        seconds = parse_ast_master(m, switch="ast1")
        exact = parse_ast_custom(c, switch="ast1", fields=CAPTURED_DOUBLE_FIELDS)
        # the captured custom mapping has no src/dst/dcontext: take them from the same CDR's Master row
        exact = dataclasses.replace(exact, caller=seconds.caller, destination=seconds.destination,
                                    callee=seconds.callee, context=seconds.context, flags=())
        out.append([seconds, exact])
    return out


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:  # type: ignore[misc]
    async with store_on(request.param, tmp_path) as s:
        yield s


async def _count(store: Store) -> int:
    async with store.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(cdrs))).scalar_one())


async def test_create_all_creates_the_cdr_tables(store: Store) -> None:
    async with store.read() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"cdrs", "cdr_files", "accounts", "ledger_entries"} <= names


async def test_record_once_then_duplicates_change_nothing(store: Store) -> None:
    clock = FakeClock()
    cdrs_ = CdrStore(store, clock=clock)
    event, json_cdr, csv_cdr = fs_sources("cd3_answered_bridged", "B")
    first = await cdrs_.record(event, RATES)
    assert first.created and first.stored.cdr == event and first.stored.revision == 0
    for again in (event, json_cdr, csv_cdr, event):
        repeat = await cdrs_.record(again, RATES)
        assert not repeat.created and repeat.stored == first.stored  # the first record, untouched
    assert await _count(store) == 1
    got = await cdrs_.get("fs1", event.call_uuid, "b")
    assert got == first.stored and got.cdr.source == "fs_event"


async def test_rating_of_the_billed_leg_at_answer_time(store: Store) -> None:
    cdrs_ = CdrStore(store, clock=FakeClock())
    b_leg = fs_sources("cd3_answered_bridged", "B")[0]
    stored = (await cdrs_.record(b_leg, RATES)).stored
    # 2,999,999 µs on 60/60 at 0.02/min: one minute, 0.02 EUR (billsec would not change it here,
    # but the rate is applied to billable_us)
    assert stored.cost == Money.parse("0.02", EUR) and stored.rate_prefix == "33"
    assert stored.cost == RATES.rate("33612345678", at_us=b_leg.answer_us).rate.cost(b_leg.billable_us)
    a_leg = dataclasses.replace(fs_sources("cd3_answered_bridged", "A")[0], callee="4000", destination="4000")
    a = (await cdrs_.record(a_leg, RATES)).stored
    assert a.cost is None and a.unrated_reason == "leg a is not billed on freeswitch"
    busy = (await cdrs_.record(fs_sources("cd2_unanswered_busy", "B")[0], RATES)).stored
    assert busy.cost is None and busy.unrated_reason == "not answered"
    # the tenant's table applies when given
    vip = CdrStore(store, clock=FakeClock())
    other = dataclasses.replace(b_leg, call_uuid="other-uuid")
    assert (await vip.record(other, RATES, tenant="vip")).stored.cost == Money.parse("0.01", EUR)
    unknown = dataclasses.replace(b_leg, call_uuid="u2", callee="999", destination="999")
    assert (await cdrs_.record(unknown, RATES)).stored.unrated_reason == "no rate for 999"
    no_book = dataclasses.replace(b_leg, call_uuid="u3")
    assert (await cdrs_.record(no_book, None)).stored.unrated_reason == "no rate book given"


async def test_more_precise_source_supersedes_whole_seconds(store: Store) -> None:
    cdrs_ = CdrStore(store, clock=FakeClock())
    (seconds, exact), = ast_sources("e_dialplan_answered")
    first = await cdrs_.record(seconds, RATES)
    assert first.created and first.stored.cdr.billable_us == 3_000_000
    # 3 s on 30/6 bills 30 s: 0.05 + 0.06 = 0.11; the exact 3.003595 s bills the same blocks
    assert first.stored.cost == Money.parse("0.11", EUR)
    upgraded = await cdrs_.record(exact, RATES)
    assert not upgraded.created and upgraded.stored.revision == 1
    assert upgraded.stored.cdr.billable_us == 3_003_595 and upgraded.stored.cdr.source == "ast_custom"
    again = await cdrs_.record(seconds, RATES)  # the less precise record no longer changes anything
    assert again.stored == upgraded.stored and (await cdrs_.get(*exact.key)) == upgraded.stored
    assert await _count(store) == 1


async def test_asterisk_rows_of_one_channel_are_separate_segments(store: Store) -> None:
    cdrs_ = CdrStore(store, clock=FakeClock())
    rows = ast_sources("f_dialplan_busy")
    for seconds, _exact in rows:
        assert (await cdrs_.record(seconds, RATES)).created
    stored = await cdrs_.list(switch="ast1")
    assert [(s.cdr.call_uuid, s.cdr.segment) for s in stored] == [("1795633528.138", 79), ("1795633528.138", 81)]


async def test_list_filters(store: Store) -> None:
    cdrs_ = CdrStore(store, clock=FakeClock())
    for case, letter in FS_CASES:
        await cdrs_.record(fs_sources(case, letter)[0], RATES)
    for case in AST_CASES:
        for _seconds, exact in ast_sources(case):
            await cdrs_.record(dataclasses.replace(exact, account="acct1") if case == "a_ari_answered" else exact, RATES)
    everything = await cdrs_.list()
    assert len(everything) == 5 + 9
    assert [s.cdr.end_us for s in everything] == sorted(s.cdr.end_us for s in everything)
    assert len(await cdrs_.list(switch="fs1")) == 5
    assert [s.cdr.call_uuid for s in await cdrs_.list(account="acct1")] == ["1795633483.126"]
    cut = 1795633500_000000
    assert all(s.cdr.end_us >= cut for s in await cdrs_.list(cut))
    assert len(await cdrs_.list(cut)) + len(await cdrs_.list(until_us=cut)) == 14
    assert len(await cdrs_.list(limit=3)) == 3


# --------------------------------------------------------------------------------------------------
# Incremental import


def _fs_csv_lines() -> list[str]:
    return [(S8 / f"{case}.{letter}.cdr_csv.csv").read_text() for case, letter in FS_CASES]


async def test_import_resumes_and_leaves_a_partial_last_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    lines = _fs_csv_lines()
    half = len(lines[2]) // 2
    path.write_text("".join(lines[:2]) + lines[2][:half])  # the switch is still writing line 3
    cdrs_ = CdrStore(store, clock=FakeClock())
    fmt = FsCsvFormat("fs1")
    first = await cdrs_.import_file(path, fmt, rating=RATES)
    assert (first.created, first.duplicates, first.errors) == (2, 0, [])
    assert first.pending_bytes == half and first.offset == len("".join(lines[:2]).encode())
    with path.open("a") as f:
        f.write(lines[2][half:] + "".join(lines[3:]))
    second = await CdrStore(store, clock=FakeClock()).import_file(path, fmt, rating=RATES)  # a new process
    assert (second.created, second.duplicates, second.pending_bytes) == (3, 0, 0)
    third = await cdrs_.import_file(path, fmt, rating=RATES)
    assert (third.created, third.duplicates, third.offset) == (0, 0, path.stat().st_size)
    assert await _count(store) == 5


async def test_import_bad_rows_name_file_and_line_and_are_skipped(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    lines = _fs_csv_lines()
    path.write_text(lines[0] + '"broken","row"\n' + "\n" + lines[1])
    cdrs_ = CdrStore(store, clock=FakeClock())
    report = await cdrs_.import_file(path, FsCsvFormat("fs1"))
    assert report.created == 2
    assert report.errors == [f"{path}:2: 2 columns, the cdr_csv template has 50 (switchctl\'s; 49 before recordings) or 46 (esl_usec, as captured)"]
    with path.open("a") as f:  # line numbers carry on across resumed imports
        f.write("not,a,cdr\n" + lines[2])
    later = await cdrs_.import_file(path, FsCsvFormat("fs1"))
    assert later.created == 1 and later.errors == [f"{path}:5: 3 columns, the cdr_csv template has 50 (switchctl\'s; 49 before recordings) or 46 (esl_usec, as captured)"]


async def test_import_after_rotation_reads_the_new_file_from_the_start(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    lines = _fs_csv_lines()
    path.write_text("".join(lines[:3]))
    cdrs_ = CdrStore(store, clock=FakeClock())
    assert (await cdrs_.import_file(path, FsCsvFormat("fs1"))).created == 3
    # rotation: the switch renames the file and starts a new one (new inode, shorter)
    os.rename(path, tmp_path / "Master.csv.1")
    path.write_text(lines[3])
    rotated = await cdrs_.import_file(path, FsCsvFormat("fs1"))
    assert rotated.restarted and rotated.created == 1
    # rewritten in place, same size or longer, different start: detected by the head hash
    path.write_text(lines[2] + lines[4])
    rewritten = await cdrs_.import_file(path, FsCsvFormat("fs1"))
    assert rewritten.restarted and (rewritten.created, rewritten.duplicates) == (1, 1)
    # the renamed file is imported under its own name: everything in it is already stored
    old = await cdrs_.import_file(tmp_path / "Master.csv.1", FsCsvFormat("fs1"))
    assert (old.created, old.duplicates) == (0, 3)
    await cdrs_.reset_file(path)
    again = await cdrs_.import_file(path, FsCsvFormat("fs1"))
    assert (again.created, again.duplicates, again.restarted) == (0, 2, False)
    assert await _count(store) == 5


async def test_import_in_bounded_chunks(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    lines = _fs_csv_lines()
    path.write_text("".join(lines))
    cdrs_ = CdrStore(store, clock=FakeClock())
    created, calls = 0, 0
    while True:
        report = await cdrs_.import_file(path, FsCsvFormat("fs1"), max_bytes=600)
        created += report.created
        calls += 1
        if report.offset == path.stat().st_size:
            break
    assert created == 5 and calls > 2
    huge = await cdrs_.import_file(tmp_path / "x", FsCsvFormat("fs1"), max_bytes=10) \
        if (tmp_path / "x").write_text("y" * 50 + "\n") else None
    assert huge is not None and huge.errors == [f"{tmp_path / 'x'}:1: a record longer than 10 bytes"]


async def test_import_json_cdr_files(store: Store, tmp_path: Path) -> None:
    cdrs_ = CdrStore(store, clock=FakeClock())
    text = (S8 / "cd3_answered_bridged.B.json_cdr.cdr.json").read_text()
    path = tmp_path / "b_cdfb6afc.cdr.json"
    path.write_text(text[:100])  # mod_json_cdr still writing it
    partial = await cdrs_.import_file(path, FsJsonFormat("fs1"), rating=RATES)
    assert (partial.created, partial.errors, partial.pending_bytes) == (0, [], 100)
    path.write_text(text)
    done = await cdrs_.import_file(path, FsJsonFormat("fs1"), rating=RATES)
    assert done.created == 1 and done.offset == len(text.encode())
    assert (await cdrs_.import_file(path, FsJsonFormat("fs1"))).created == 0
    bad = tmp_path / "bad.cdr.json"
    bad.write_text('{"no": "variables"}')
    report = await cdrs_.import_file(bad, FsJsonFormat("fs1"))
    assert report.errors == [f"{bad}: not a mod_json_cdr record (no 'variables' object)"]


async def test_import_asterisk_files_master_then_custom(store: Store, tmp_path: Path) -> None:
    cdrs_ = CdrStore(store, clock=FakeClock())
    master = tmp_path / "Master.csv"
    custom = tmp_path / "advanced_double.csv"
    master.write_text("".join((AST / c / "cdr" / "Master.csv").read_text() for c in AST_CASES))
    custom.write_text("".join((AST / c / "cdr" / "advanced_double.csv").read_text() for c in AST_CASES))
    m = await cdrs_.import_file(master, AstMasterFormat("ast1"), rating=RATES)
    c = await cdrs_.import_file(custom, AstCustomFormat("ast1", fields=CAPTURED_DOUBLE_FIELDS), rating=RATES)
    assert (m.created, c.created, c.revised, c.errors) == (9, 0, 9, [])
    stored = await cdrs_.list(switch="ast1")
    assert len(stored) == 9 and all(s.cdr.source == "ast_custom" for s in stored)


# --------------------------------------------------------------------------------------------------
# Property: any interleaving and duplication of the sources of a set of calls stores each leg once,
# with the cost of its most precise record.

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                          HealthCheck.function_scoped_fixture])


def _all_groups() -> list[list[Cdr]]:
    groups = [fs_sources(case, letter) for case, letter in FS_CASES]
    for case in AST_CASES:
        groups.extend(ast_sources(case))
    return groups


GROUPS = _all_groups()


def _expected(group: list[Cdr]) -> tuple[int, Money | None]:
    best = max(group, key=lambda c: c.precision)
    return best.billable_us, _cost(best)


def _cost(cdr: Cdr) -> Money | None:
    """The reference cost: Rate.cost on billable_us, billed legs only (FreeSWITCH b, Asterisk a)."""
    billed = {"freeswitch": "b", "asterisk": "a"}[cdr.switch_kind]
    if cdr.answer_us is None or cdr.leg != billed or cdr.callee is None:
        return None
    row = RATES.find(cdr.callee, at_us=cdr.answer_us)
    return row.rate.cost(cdr.billable_us) if row else None


async def _interleave(backend: str, picks: list[int], copies: list[int], seed: int, concurrent: bool) -> None:
    chosen = [GROUPS[i] for i in sorted(set(picks))]
    records = [cdr for group, n in zip(chosen, copies) for cdr in group * n]
    random.Random(seed).shuffle(records)
    with tempfile.TemporaryDirectory() as tmp:
        async with store_on(backend, Path(tmp)) as store:
            cdrs_ = CdrStore(store, clock=FakeClock())
            if concurrent:
                await asyncio.gather(*(cdrs_.record(c, RATES) for c in records))
            else:
                for c in records:
                    await cdrs_.record(c, RATES)
            stored = await cdrs_.list(limit=10_000)
            assert len(stored) == len(chosen) == len({s.cdr.key for s in stored})
            by_key = {s.cdr.key: s for s in stored}
            for group in chosen:
                billable, cost = _expected(group)
                s = by_key[group[0].key]
                assert (s.cdr.billable_us, s.cost) == (billable, cost)
                assert s.cdr.precision == max(c.precision for c in group)
                # only a strictly more precise record replaces: at most one step per precision level
                assert s.revision <= len({c.precision for c in group}) - 1


interleavings = {
    "picks": st.lists(st.integers(0, len(GROUPS) - 1), min_size=1, max_size=len(GROUPS)),
    "copies": st.lists(st.integers(1, 3), min_size=len(GROUPS), max_size=len(GROUPS)),
    "seed": st.integers(0, 2**32),
    "concurrent": st.booleans(),
}


@settings(SETTINGS, max_examples=25)
@given(**interleavings)
def test_any_interleaving_stores_each_leg_once_with_one_cost_sqlite(picks, copies, seed, concurrent) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_interleave("sqlite", picks, copies, seed, concurrent))


@settings(SETTINGS, max_examples=8)
@given(**interleavings)
def test_any_interleaving_stores_each_leg_once_with_one_cost_postgres(picks, copies, seed, concurrent) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(_interleave("postgresql", picks, copies, seed, concurrent))


def test_the_property_covers_rated_and_upgraded_legs() -> None:
    """The groups include rated legs and legs whose sources differ in precision (so the property
    can fail if precedence or idempotency were wrong)."""
    assert sum(1 for g in GROUPS if _cost(max(g, key=lambda c: c.precision)) is not None) >= 3
    assert any(len({c.billable_us for c in g}) > 1 for g in GROUPS)
