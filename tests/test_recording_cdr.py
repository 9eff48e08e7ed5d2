"""`switchctl_recording` in the switches' CDRs: the parsers read it (FreeSWITCH JSON, CSV, event;
Asterisk cdr_custom) and the collector keeps the path of a recording the live path never wrote
(a controller killed mid-call), without touching one it did write."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from switchctl.billing.accounts import Accounts
from switchctl.billing.cdr import (
    AST_CUSTOM_FIELDS,
    AST_CUSTOM_FIELDS_V1,
    FS_CSV_SWITCHCTL,
    AstCustomFormat,
    parse_fs_csv,
    parse_fs_json,
)
from switchctl.billing.cdrcollect import CdrCollector, CdrSource
from switchctl.billing.cdrstore import CdrStore
from switchctl.billing.ledger import Ledger
from switchctl.render.asterisk import CDR_CUSTOM_FIELDS
from switchctl.store import Store
from switchctl.store.recording_models import RecordingLog
from tests.capturepaths import CAPTURES
from tests.pg_fixture import FakeClock

S8 = CAPTURES / "freeswitch-scenarios" / "s8_cdr"
A_UUID = "fafb3e97-d7ae-4627-a72f-bae112514e17"  # cd3 A leg
A_END = 1795632391204205
A_ANSWER = 1795632388204206
PATH = "/var/lib/freeswitch/recordings/2026/11/26/booth-1001.wav"


def a_leg_json(uuid: str = A_UUID, recording: str | None = PATH) -> str:
    doc = json.loads((S8 / "cd3_answered_bridged.A.json_cdr.cdr.json").read_text())
    doc["variables"]["uuid"] = uuid
    doc["callflow"][0]["caller_profile"]["uuid"] = uuid
    if recording is not None:
        doc["variables"]["switchctl_recording"] = quote(recording, safe="")  # encode-values
    return json.dumps(doc)


def a_leg_csv(recording: str) -> str:
    line = (S8 / "cd3_answered_bridged.A.cdr_csv.csv").read_text().strip()
    return line + f',"PCMU","","","{recording}"\n'


def ast_row(recording: str, fields: tuple[str, ...] = AST_CUSTOM_FIELDS, *, sequence: str = "80",
            end: str = "1795633523.25") -> str:
    values = dict.fromkeys(fields, "")
    values.update({"uniqueid": "1795633520.139", "linkedid": "1795633520.139", "dst": "7000",
                   "dcontext": "switchctl", "lastapp": "Stasis", "start(double)": "1795633520.0",
                   "answer(double)": "1795633520.5", "end(double)": end,
                   "disposition": "ANSWERED", "sequence": sequence})
    if "switchctl_recording(uservar)" in values:
        values["switchctl_recording(uservar)"] = recording
    return ",".join('"' + values[f] + '"' for f in fields) + "\n"


def test_parsers_read_the_recording() -> None:
    assert parse_fs_json(a_leg_json(), switch="fs1").recording == PATH
    assert parse_fs_json(a_leg_json(recording=None), switch="fs1").recording is None
    cdr = parse_fs_csv(a_leg_csv(PATH), switch="fs1")
    assert len(FS_CSV_SWITCHCTL) == 50 and cdr.recording == PATH and cdr.call_uuid == A_UUID
    # switchctl's 49-column template (no recording column) still reads
    line = (S8 / "cd3_answered_bridged.A.cdr_csv.csv").read_text().strip() + ',"PCMU","",""\n'
    assert parse_fs_csv(line, switch="fs1").recording is None
    assert AST_CUSTOM_FIELDS == CDR_CUSTOM_FIELDS and AST_CUSTOM_FIELDS[-1] == "switchctl_recording(uservar)"
    rec = "/var/spool/asterisk/recording/calls/2026/11/26/x.wav"
    cdr = AstCustomFormat("ast1").parse(ast_row(rec), "switchctl.csv:1")
    assert (cdr.call_uuid, cdr.recording) == ("1795633520.139", rec)
    # rows written before the field was rendered (one column fewer) still read
    old = AstCustomFormat("ast1").parse(ast_row(rec, AST_CUSTOM_FIELDS_V1), "switchctl.csv:2")
    assert old.recording is None and old.call_uuid == "1795633520.139"


@pytest.fixture
async def store(tmp_path: Path):
    store = Store.open(f"sqlite:///{tmp_path / 'cdr.db'}")
    await store.create_all()
    yield store
    await store.close()


def collector(store: Store, sources: list[CdrSource]) -> CdrCollector:
    clock = FakeClock()
    return CdrCollector(sources, CdrStore(store, clock=clock), Ledger(store, clock), Accounts(store, clock),
                        lambda: None, settle_seconds=0)  # type: ignore[arg-type, return-value]


async def test_collector_keeps_what_only_the_cdr_knew(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "json_cdr"
    folder.mkdir()
    (folder / f"a_{A_UUID}.cdr.json").write_text(a_leg_json())
    report = await collector(store, [CdrSource.freeswitch_json("fs1", folder)]).catch_up()
    assert report.recordings == 1 and not report.errors
    log = RecordingLog(store, lambda: 0)
    [row] = await log.list(call_uuid=A_UUID)
    assert (row.switch, row.path, row.source, row.state, row.ended_by) == ("fs1", PATH, "cdr", "stopped", "cdr")
    assert (row.started_us, row.ended_us) == (A_ANSWER, A_END)


async def test_collector_completes_a_live_row_and_respects_a_stop(tmp_path: Path, store: Store) -> None:
    log = RecordingLog(store, lambda: 1)
    other = "/var/lib/freeswitch/recordings/2026/11/26/stopped.wav"
    await log.started("fs1", A_UUID, PATH, A_ANSWER + 10)  # the controller died before the call ended
    await log.started("fs1", "other-call", other, A_ANSWER)
    await log.ended("fs1", "other-call", other, A_ANSWER + 500, by="stop")
    csv = tmp_path / "Master.csv"
    csv.write_text(a_leg_csv(PATH) + a_leg_csv(other).replace(A_UUID, "other-call"))
    report = await collector(store, [CdrSource.freeswitch_csv("fs1", csv)]).catch_up()
    assert report.recordings == 0 and not report.errors, report.errors
    [live] = await log.list(call_uuid=A_UUID)
    assert (live.source, live.state, live.started_us, live.ended_us, live.ended_by) == \
        ("live", "stopped", A_ANSWER + 10, A_END, "cdr")
    [stopped] = await log.list(call_uuid="other-call")
    assert (stopped.ended_us, stopped.ended_by) == (A_ANSWER + 500, "stop")


async def test_asterisk_rows_keep_the_path_with_the_call_end(tmp_path: Path, store: Store) -> None:
    rec = "/var/spool/asterisk/recording/calls/2026/11/26/x.wav"
    log_dir = tmp_path / "astlog"
    (log_dir / "cdr-custom").mkdir(parents=True)
    # one channel, two rows: a failed dial attempt, then the call's end
    (log_dir / "cdr-custom" / "switchctl.csv").write_text(
        ast_row(rec, sequence="80", end="1795633521.0") + ast_row(rec, sequence="81", end="1795633530.0"))
    report = await collector(store, [CdrSource.asterisk_custom("ast1", log_dir)]).catch_up()
    assert report.recordings == 1 and not report.errors, report.errors
    [row] = await RecordingLog(store, lambda: 0).list(call_uuid="1795633520.139")
    assert (row.switch, row.path, row.ended_us) == ("ast1", rec, 1795633530_000000)


def test_cli_lists_recordings(tmp_path: Path, capsys) -> None:
    from switchctl import cli

    (tmp_path / "flows").mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(f"""site: t
switches:
  - name: fs1
    esl: {{host: 127.0.0.1, port: 8021, password: ClueCon}}
    outbound: {{host: 127.0.0.1, port: 8084}}
    sip: {{ip: 127.0.0.1, port: 5060}}
database: sqlite+aiosqlite:///{tmp_path / 'cli.db'}
flows: flows/
""")

    async def setup() -> None:
        store = Store.open(f"sqlite:///{tmp_path / 'cli.db'}")
        await store.create_all()
        log = RecordingLog(store, lambda: 1)
        await log.started("fs1", A_UUID, PATH, A_ANSWER)
        await log.started("fs1", "other", "/r/o.wav", A_ANSWER + 1)
        await store.close()

    asyncio.run(setup())
    assert cli.main(["recordings", "list", "-c", str(site), "--call", A_UUID]) == 0
    out = capsys.readouterr().out
    assert A_UUID in out and PATH in out and "running" in out and "other" not in out
