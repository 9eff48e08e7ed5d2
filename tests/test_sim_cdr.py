"""The simulator's mod_json_cdr / mod_cdr_csv files: the captured format (s8_cdr), read back by the
CDR parsers, and billed by the CDR collector like a real switch's files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from switchctl.billing.cdr import parse_fs_csv, parse_fs_json
from switchctl.sim import FreeSwitchSim, Route, SimConfig, UserBehaviour
from switchctl.sim.cdrfiles import url_encode
from tests.test_sim_client import CAPTURES, EslClient, OutboundServer, sendmsg_execute

S8 = CAPTURES / "freeswitch-scenarios" / "s8_cdr"


def _shape(doc: dict) -> dict:  # type: ignore[type-arg]
    flow = doc["callflow"][0]
    profile = flow["caller_profile"]
    return {
        "top": list(doc),
        "channel_data": list(doc["channel_data"]),
        "callflow": [k for k in flow],
        "caller_profile": list(profile),
        "times": list(flow["times"]),
        "other": {k: [list(p) for p in v[f"{k}_caller_profiles"]] for k, v in profile.items()
                  if k in ("originator", "originatee")},
    }


async def _bridged_call(tmp_path: Path, *, csv: bool) -> tuple[str, list[str]]:
    """A (inbound, answered by the controller) bridged to user 1002 (answers after 0.5 s, hangs up
    1 s later) with the prepaid variables a dial sets on the B leg."""
    async def controller(client: EslClient) -> None:
        reply = await client.command("connect")
        a_uuid = reply.event["Unique-ID"]
        await client.command("myevents")
        await client.command("linger")
        client.send(sendmsg_execute("answer"))
        client.send(sendmsg_execute(
            "bridge", f"{{switchctl_call={a_uuid},switchctl_account=booth-1}}user/1002", "br"))
        await client.event("CHANNEL_EXECUTE_COMPLETE", Application_UUID="br")
        client.send("sendmsg\ncall-command: hangup\n\n")
        await client.next(lambda f: f.content_type == "text/disconnect-notice")
        client.send("exit\n\n")
        await client.drain()

    async with OutboundServer(controller) as server:
        sim = FreeSwitchSim(SimConfig(
            dialplan=[Route(r"^9000$", "socket", f"127.0.0.1:{server.port} async full")],
            users={"1002": UserBehaviour(answer_after=0.5, hangup_after=1.0)}, media_speed=25,
            cdr_dir=tmp_path / "json_cdr", cdr_csv=csv))
        await sim.start()
        try:
            result = await asyncio.wait_for(sim.place_call("9000", "1001").done, 10)
            for _ in range(200):  # both legs reported
                if len(list((tmp_path / "json_cdr").glob("*.cdr.json"))) >= 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            await sim.close()
    files = sorted(p.name for p in (tmp_path / "json_cdr").glob("*.cdr.json"))
    return result.uuid, files


def test_url_encoding_is_switch_url_encode() -> None:
    captured = json.loads((S8 / "cd3_answered_bridged.A.json_cdr.cdr.json").read_text())["variables"]
    assert url_encode("Wed, 25 Nov 2026 18:46:27 +0000") == captured["RFC2822_DATE"]
    assert url_encode('"sipp" <sip:55501@127.0.0.1:5080>;tag=9697SIPpTag001') == captured["sip_full_from"]
    assert url_encode("a/b-c_d.e,f") == "a/b-c_d.e,f" and url_encode("é") == "%C3%A9"


async def test_sim_json_cdr_files_have_the_captured_shape_and_parse(tmp_path: Path) -> None:
    a_uuid, files = await _bridged_call(tmp_path, csv=True)
    assert len(files) == 2 and f"{a_uuid}.cdr.json" in files
    b_name = next(f for f in files if f != f"{a_uuid}.cdr.json")
    a_text = (tmp_path / "json_cdr" / f"{a_uuid}.cdr.json").read_text()
    b_text = (tmp_path / "json_cdr" / b_name).read_text()
    assert a_text.endswith("}\n") and "\n" not in a_text[:-1]  # unformatted, one newline, as captured
    # same keys as the captured legs of the same kind (A: inbound with apps; B: originated)
    for text, captured in ((a_text, "cd3_answered_bridged.A"), (b_text, "cd3_answered_bridged.B")):
        mine, theirs = json.loads(text), json.loads((S8 / f"{captured}.json_cdr.cdr.json").read_text())
        assert _shape(mine) == _shape(theirs), captured
        assert isinstance(mine["callflow"], list)
        for name in ("uuid", "direction", "start_uepoch", "answer_uepoch", "end_uepoch", "billusec",
                     "billsec", "uduration", "hangup_cause", "hangup_cause_q850"):
            assert name in mine["variables"], (captured, name)
    a = parse_fs_json(a_text, switch="sim")
    b = parse_fs_json(b_text, switch="sim")
    assert (a.leg, a.call_uuid, a.answered) == ("a", a_uuid, True)
    assert (b.leg, b.destination, b.prepaid_call, b.account) == ("b", "1002", a_uuid, "booth-1")
    assert b.answered and b.billable_us == b.end_us - b.answer_us  # type: ignore[operator]
    assert a.peer == b.call_uuid and b.peer == a_uuid
    # the cdr_csv lines carry the very same µs stamps as the JSON files
    lines = (tmp_path / "json_cdr" / "cdr-csv" / "Master.csv").read_text().splitlines()
    by_uuid = {c.call_uuid: c for c in (parse_fs_csv(line, switch="sim") for line in lines)}
    for leg in (a, b):
        row = by_uuid[leg.call_uuid]
        assert (row.start_us, row.answer_us, row.end_us, row.billable_us, row.hangup_cause) == \
            (leg.start_us, leg.answer_us, leg.end_us, leg.billable_us, leg.hangup_cause)
        assert (row.prepaid_call, row.account) == (leg.prepaid_call, leg.account)


def test_sim_json_of_a_captured_channel_round_trips() -> None:
    """The captured B leg's variables, written by the sim's writer, parse to the same record."""
    from switchctl.sim.cdrfiles import json_cdr
    from switchctl.sim.events import ChannelData

    captured = json.loads((S8 / "cd3_answered_bridged.B.json_cdr.cdr.json").read_text())
    from urllib.parse import unquote
    variables = {k: unquote(v) for k, v in captured["variables"].items()}
    profile = captured["callflow"][0]["caller_profile"]
    ch = ChannelData(uuid=variables["uuid"], name=profile["chan_name"], direction="outbound",
                     caller_number=profile["caller_id_number"], destination=profile["destination_number"],
                     context=profile["context"], variables=variables)
    mine = parse_fs_json(json_cdr(ch, core_uuid="c", switchname="vm"), switch="fs1")
    theirs = parse_fs_json(json.dumps(captured), switch="fs1")
    assert mine == dataclasses.replace(theirs, raw=mine.raw)


async def test_sim_cdr_files_bill_a_prepaid_call_once(tmp_path: Path) -> None:
    """End to end: the sim's files, imported by the collector, commit the call's reservation with
    the B leg's exact billable µs; a second collector (a restart) replays it."""
    from switchctl.billing.accounts import Accounts
    from switchctl.billing.callkeys import reservation_ref
    from switchctl.billing.cdrcollect import CdrCollector, CdrSource
    from switchctl.billing.cdrstore import CdrStore
    from switchctl.billing.ledger import Ledger
    from switchctl.billing.money import Money, currency
    from switchctl.billing.ratecsv import parse_rates
    from tests.pg_fixture import FakeClock, store_on

    eur = currency("EUR")
    rates = parse_rates("tenant,class,prefix,description,currency,rate_per_minute,connect_fee,"
                        "initial_block,increment\ndefault,default,1,local,EUR,0.60,0,1,1\n")
    a_uuid, _files = await _bridged_call(tmp_path, csv=False)
    async with store_on("sqlite", tmp_path) as store:
        clock = FakeClock()
        ledger, accounts = Ledger(store, clock), Accounts(store, clock)
        acct = await accounts.create("booth", "booth-1", eur)
        await ledger.topup(acct.id, Money.parse("10.00", eur), "t1")
        await ledger.reserve(acct.id, reservation_ref("sim", a_uuid), Money.parse("1.00", eur), "r1")

        def collector() -> CdrCollector:
            return CdrCollector([CdrSource.freeswitch_json("sim", tmp_path / "json_cdr")],
                                CdrStore(store, clock=clock), ledger, accounts, lambda: rates,
                                settle_seconds=0)

        report = await collector().catch_up()
        assert (report.records, report.committed, report.problems, report.errors) == (2, 1, [], [])
        b = next(c for c in await CdrStore(store).list() if c.cdr.leg == "b")
        expected = rates.find("1002", at_us=b.cdr.answer_us, tenant="default",
                              account_class="default").rate.cost(b.cdr.billable_us)  # type: ignore[arg-type,union-attr]
        assert await ledger.balance(acct.id) == Money.parse("10.00", eur) - expected
        for path in (tmp_path / "json_cdr" / "done").iterdir():  # re-delivered files: replays
            path.rename(tmp_path / "json_cdr" / path.name)
        again = await collector().catch_up()
        assert (again.committed, again.replayed) == (0, 1)
        assert await ledger.balance(acct.id) == Money.parse("10.00", eur) - expected
