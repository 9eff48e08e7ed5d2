"""CDR parsers on every captured CDR record: FreeSWITCH mod_json_cdr, mod_cdr_csv, CHANNEL_HANGUP_COMPLETE;
Asterisk Master.csv and cdr_custom. Expected values come from the captures' READMEs / summaries."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from switchctl.billing.cdr import (
    AST_CUSTOM_FIELDS,
    FLAG_CALLEE_TOO_LONG,
    FLAG_CALLER_TOO_LONG,
    FLAG_NOT_A_NUMBER,
    FLAG_SECONDS_ONLY,
    FS_CSV_ESL_USEC,
    AstCustomFormat,
    AstMasterFormat,
    Cdr,
    CdrError,
    FsCsvFormat,
    FsJsonFormat,
    ast_cause,
    cdr_from_ari,
    parse_ast_custom,
    parse_ast_master,
    parse_fs_csv,
    parse_fs_event,
    parse_fs_json,
)
from switchctl.esl.codec import FrameParser, decode
from switchctl.render.asterisk import CDR_CUSTOM_FIELDS
from tests.capturepaths import CAPTURES

S8 = CAPTURES / "freeswitch-scenarios" / "s8_cdr"
AST = CAPTURES / "asterisk-scenarios" / "08_cdr"
SUMMARY = json.loads((S8 / "summary.json").read_text())
# advanced_double.csv of the captures (cdr_custom.conf there, not the rendered one)
CAPTURED_DOUBLE_FIELDS = ("uniqueid", "linkedid", "channel", "dstchannel", "disposition", "start(double)",
                          "answer(double)", "end(double)", "duration", "billsec", "lastapp", "lastdata",
                          "sequence")

# (case, leg letter): uuid, leg, answer_us, end_us, billable_us, cause, peer   (s8_cdr README table)
FS_EXPECTED = {
    ("cd1_answered_no_bleg", "A"): ("4d302829-cf0b-4dae-addf-55f121d6d330", "a", 1795632378864211,
                                    1795632380864221, 2000010, "NORMAL_CLEARING", None),
    ("cd2_unanswered_busy", "A"): ("37d95122-dd91-4912-8635-e272db36a47a", "a", None,
                                   1795632384004236, 0, "USER_BUSY", None),
    ("cd2_unanswered_busy", "B"): ("ede6b842-8102-4d4b-b584-fcdd6944c47b", "b", None,
                                   1795632383984224, 0, "USER_BUSY", None),
    ("cd3_answered_bridged", "A"): ("fafb3e97-d7ae-4627-a72f-bae112514e17", "a", 1795632388204206,
                                    1795632391204205, 2999999, "NORMAL_CLEARING",
                                    "cdfb6afc-d6a4-47f2-bd19-f0afdab67073"),
    ("cd3_answered_bridged", "B"): ("cdfb6afc-d6a4-47f2-bd19-f0afdab67073", "b", 1795632388204206,
                                    1795632391204205, 2999999, "NORMAL_CLEARING",
                                    "fafb3e97-d7ae-4627-a72f-bae112514e17"),
}


def _event_headers(path: Path) -> dict[str, str]:
    frames = FrameParser().feed(path.read_bytes())
    assert len(frames) == 1
    return dict(decode(frames[0]).headers)  # type: ignore[union-attr]


def _check_fs(cdr: Cdr, case: str, letter: str) -> None:
    uuid, leg, answer, end, billable, cause, _peer = FS_EXPECTED[(case, letter)]
    assert (cdr.switch, cdr.call_uuid, cdr.leg, cdr.segment) == ("fs1", uuid, leg, 0)
    assert (cdr.answer_us, cdr.end_us, cdr.billable_us, cdr.hangup_cause) == (answer, end, billable, cause)
    assert cdr.direction == ("inbound" if leg == "a" else "outbound")
    assert cdr.caller == "55501" and cdr.context == "public"
    times = SUMMARY["cases"][case][letter]["json_cdr_time_vars"]
    assert cdr.start_us == int(times["start_uepoch"])
    # never billsec: it says 3 where 2,999,999 µs were billed
    if case == "cd3_answered_bridged":
        assert times["billsec"] == "3" and cdr.billable_us == 2_999_999


@pytest.mark.parametrize("case,letter", sorted(FS_EXPECTED))
def test_fs_json_every_captured_file(case: str, letter: str) -> None:
    path = S8 / f"{case}.{letter}.json_cdr.cdr.json"
    cdr = parse_fs_json(path.read_text(), switch="fs1", where=path.name)
    _check_fs(cdr, case, letter)
    assert cdr.source == "fs_json" and cdr.raw == path.read_text()
    assert cdr.peer == FS_EXPECTED[(case, letter)][6] or (letter == "B" and cdr.peer)
    assert cdr.codec == ("PCMU" if cdr.answered else None)


@pytest.mark.parametrize("case,letter", sorted(FS_EXPECTED))
def test_fs_csv_every_captured_line(case: str, letter: str) -> None:
    path = S8 / f"{case}.{letter}.cdr_csv.csv"
    cdr = parse_fs_csv(path.read_text(), switch="fs1", where=f"{path.name}:1")
    _check_fs(cdr, case, letter)
    assert cdr.source == "fs_csv" and cdr.raw == path.read_text().rstrip("\n")
    # the template's bleg_uuid is filled on the A leg only
    assert cdr.peer == (FS_EXPECTED[(case, letter)][6] if letter == "A" else None)


@pytest.mark.parametrize("case,letter", sorted(FS_EXPECTED))
def test_fs_hangup_complete_every_captured_event(case: str, letter: str) -> None:
    path = S8 / f"{case}.{letter}.CHANNEL_HANGUP_COMPLETE.plain.raw"
    cdr = parse_fs_event(_event_headers(path), switch="fs1")
    _check_fs(cdr, case, letter)
    assert cdr.source == "fs_event"


def test_the_three_freeswitch_sources_agree_on_every_leg() -> None:
    for case, letter in FS_EXPECTED:
        stem = S8 / f"{case}.{letter}"
        records = [
            parse_fs_json(Path(f"{stem}.json_cdr.cdr.json").read_text(), switch="fs1"),
            parse_fs_csv(Path(f"{stem}.cdr_csv.csv").read_text(), switch="fs1"),
            parse_fs_event(_event_headers(Path(f"{stem}.CHANNEL_HANGUP_COMPLETE.plain.raw")), switch="fs1"),
        ]
        fields = {(r.key, r.start_us, r.answer_us, r.end_us, r.billable_us, r.hangup_cause, r.callee,
                   r.destination, r.caller, r.direction) for r in records}
        assert len(fields) == 1, (case, letter, fields)


def test_monitor_stream_hangup_events_parse() -> None:
    """The live inbound connection's CHANNEL_HANGUP_COMPLETE events (cdr.monitor) are the same legs."""
    frames = FrameParser().feed((S8 / "cdr.monitor.recv.raw").read_bytes())
    uuids = []
    for frame in frames:
        message = decode(frame)
        headers = getattr(message, "headers", None)
        if headers and headers.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE":
            uuids.append(parse_fs_event(headers, switch="fs1").call_uuid)
    assert sorted(uuids) == sorted(v[0] for v in FS_EXPECTED.values())


def test_fs_destination_that_is_not_a_number_is_flagged_not_rated() -> None:
    cdr = parse_fs_json((S8 / "cd3_answered_bridged.B.json_cdr.cdr.json").read_text(), switch="fs1")
    assert cdr.destination == "uas-answer" and cdr.callee is None
    assert FLAG_NOT_A_NUMBER in cdr.flags


def test_fs_json_without_url_encoding_and_old_callflow_object() -> None:
    doc = json.loads((S8 / "cd1_answered_no_bleg.A.json_cdr.cdr.json").read_text())
    doc["callflow"] = doc["callflow"][0]  # FreeSWITCH < 1.10 writes one object
    doc["variables"]["switchctl_account"] = "acct%2042"
    cdr = parse_fs_json(json.dumps(doc), switch="fs1", url_encoded=False)
    assert cdr.account == "acct%2042" and cdr.destination == "7704"
    assert parse_fs_json(json.dumps(doc), switch="fs1").account == "acct 42"


def test_fs_booth_and_account_variables() -> None:
    headers = _event_headers(S8 / "cd3_answered_bridged.B.CHANNEL_HANGUP_COMPLETE.plain.raw")
    headers |= {"variable_switchctl_account": "7", "variable_switchctl_booth": "true",
                "variable_user_name": "booth3"}
    cdr = parse_fs_event(headers, switch="fs1")
    assert (cdr.account, cdr.booth) == ("7", "booth3")
    headers["variable_switchctl_booth"] = "false"
    assert parse_fs_event(headers, switch="fs1").booth is None


def test_number_limits_caller_flagged_callee_refused_for_rating() -> None:
    line = (S8 / "cd1_answered_no_bleg.A.cdr_csv.csv").read_text()
    cells = line.rstrip("\n").split('","')
    cells[3] = "+" + "1" * 20  # caller: 20 digits is fine
    cells[4] = "2" * 28  # callee: 28 digits is fine
    ok = parse_fs_csv('","'.join(cells), switch="fs1")
    assert ok.flags == () and ok.callee == "2" * 28 and ok.caller == "+" + "1" * 20
    cells[3] = "1" * 21
    cells[4] = "+" + "2" * 29
    long = parse_fs_csv('","'.join(cells), switch="fs1")
    assert set(long.flags) == {FLAG_CALLER_TOO_LONG, FLAG_CALLEE_TOO_LONG}
    assert long.caller == "1" * 21 and long.callee is None and long.destination == "+" + "2" * 29


@pytest.mark.parametrize("bad,message", [
    ('"x","y"', r"2 columns, the cdr_csv template has 50 \(switchctl's; 49 before recordings\) or 46"),
    ("", "expected one CSV row, found 0"),
])
def test_fs_csv_bad_rows_name_file_and_line(bad: str, message: str) -> None:
    with pytest.raises(CdrError, match=rf"^Master\.csv:7: .*{message}"):
        parse_fs_csv(bad, switch="fs1", where="Master.csv:7")


def test_fs_csv_bad_values_name_the_field() -> None:
    line = (S8 / "cd3_answered_bridged.A.cdr_csv.csv").read_text()
    bad = line.replace('"2999999"', '"2.9e6"', 1)
    with pytest.raises(CdrError, match=r"^m.csv:3: billusec '2.9e6' is not a whole number of µs$"):
        parse_fs_csv(bad, switch="fs1", where="m.csv:3")
    swapped = line.replace('"1795632391204205"', '"1795632300000000"', 1)  # end before start
    with pytest.raises(CdrError, match=r"^m.csv:4: .*before it starts"):
        parse_fs_csv(swapped, switch="fs1", where="m.csv:4")


def test_fs_json_errors() -> None:
    with pytest.raises(CdrError, match=r"^a.cdr.json: not JSON"):
        parse_fs_json('{"variables": {', switch="fs1", where="a.cdr.json")
    with pytest.raises(CdrError, match=r"no 'variables' object"):
        parse_fs_json("[]", switch="fs1", where="a.cdr.json")
    doc = json.loads((S8 / "cd1_answered_no_bleg.A.json_cdr.cdr.json").read_text())
    del doc["variables"]["billusec"]
    with pytest.raises(CdrError, match=r"^b.json: no billusec"):
        parse_fs_json(json.dumps(doc), switch="fs1", where="b.json")


def test_fs_event_must_be_hangup_complete() -> None:
    with pytest.raises(CdrError, match="is not CHANNEL_HANGUP_COMPLETE"):
        parse_fs_event({"Event-Name": "CHANNEL_ANSWER"}, switch="fs1")


def test_fs_csv_template_is_the_captured_order() -> None:
    """Each captured line, zipped with the template, matches the JSON CDR's variables."""
    assert len(FS_CSV_ESL_USEC) == 46
    for case, letter in FS_EXPECTED:
        line = SUMMARY["cases"][case][letter]["cdr_csv"][0]["line"]
        row = dict(zip(FS_CSV_ESL_USEC, line[1:-1].split('","')))
        times = SUMMARY["cases"][case][letter]["json_cdr_time_vars"]
        for name, value in times.items():
            if name in row and not name.endswith("_stamp"):
                assert row[name] == unquote(value), (case, letter, name)  # JSON values are URL-encoded


# --------------------------------------------------------------------------------------------------
# Asterisk

# case: [(uniqueid, sequence, leg, answered, cause, peer, callee)] one per row, from CDR_SUMMARY.md
AST_EXPECTED = {
    "a_ari_answered": [("1795633483.126", 72, "a", True, "NORMAL_CLEARING", None, "1601")],
    "b_ari_busy": [("1795633490.128", 73, "b", False, "USER_BUSY", None, None)],
    "c_ari_noanswer": [("1795633496.130", 74, "b", False, "NO_ANSWER", None, None)],
    "d_ari_bridged": [("1795633507.132", 75, "a", True, "NORMAL_CLEARING", "PJSIP/sipp-00000042", "1602")],
    "e_dialplan_answered": [("1795633518.135", 77, "a", True, "NORMAL_CLEARING", "PJSIP/sipp-00000044", "4000")],
    "f_dialplan_busy": [("1795633528.138", 79, "a", False, "USER_BUSY", "PJSIP/sipp-00000046", "4001"),
                        ("1795633528.138", 81, "a", False, "USER_BUSY", None, "4001")],
    "g_dialplan_noanswer": [("1795633535.142", 82, "a", False, "NO_ANSWER", "PJSIP/sipp-00000048", "4002"),
                            ("1795633535.142", 84, "a", False, "NO_ANSWER", None, "4002")],
}


def _legacy_raw(case: str) -> list[list[str]]:
    import csv
    return list(csv.reader((AST / case / "cdr" / "legacy_raw.csv").read_text().splitlines()))


def _us(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000 + int(frac.ljust(6, "0"))


@pytest.mark.parametrize("case", sorted(AST_EXPECTED))
def test_ast_master_every_captured_row(case: str) -> None:
    """The captures ran with usegmtime = no on a host in UTC: both settings read them the same."""
    path = AST / case / "cdr" / "Master.csv"
    lines = path.read_text().splitlines()
    assert len(lines) == len(AST_EXPECTED[case])
    for number, (line, expected, legacy) in enumerate(zip(lines, AST_EXPECTED[case], _legacy_raw(case)), 1):
        cdr = parse_ast_master(line, switch="ast1", where=f"{path}:{number}")
        local = parse_ast_master(line, switch="ast1", usegmtime=False, timezone="UTC")
        assert cdr == dataclasses.replace(local)
        uniqueid, sequence, leg, answered, cause, peer, callee = expected
        assert (cdr.call_uuid, cdr.segment, cdr.leg, cdr.answered, cdr.hangup_cause, cdr.peer, cdr.callee) \
            == (uniqueid, sequence, leg, answered, cause, peer, callee)
        assert cdr.source == "ast_csv" and FLAG_SECONDS_ONLY in cdr.flags
        # whole seconds: the µs stamps of the same CDR (CDR(x,u)) truncated
        assert cdr.start_us == _us(legacy[6]) // 1_000_000 * 1_000_000
        assert cdr.end_us == _us(legacy[10]) // 1_000_000 * 1_000_000
        if answered:
            assert cdr.answer_us == _us(legacy[8]) // 1_000_000 * 1_000_000
            assert cdr.billable_us == cdr.end_us - cdr.answer_us


def test_ast_master_local_time_zone() -> None:
    line = (AST / "a_ari_answered" / "cdr" / "Master.csv").read_text().splitlines()[0]
    utc = parse_ast_master(line, switch="ast1")
    paris = parse_ast_master(line, switch="ast1", usegmtime=False, timezone="Europe/Paris")
    assert utc.start_us - paris.start_us == 3600 * 1_000_000  # 19:04:43 in Paris (CET) is 18:04:43 UTC


@pytest.mark.parametrize("case", sorted(AST_EXPECTED))
def test_ast_custom_every_captured_row(case: str) -> None:
    path = AST / case / "cdr" / "advanced_double.csv"
    rows = path.read_text().splitlines()
    for number, (line, expected, legacy) in enumerate(zip(rows, AST_EXPECTED[case], _legacy_raw(case)), 1):
        cdr = parse_ast_custom(line, switch="ast1", where=f"{path}:{number}", fields=CAPTURED_DOUBLE_FIELDS)
        uniqueid, sequence, leg, answered, cause, peer, _callee = expected
        assert (cdr.call_uuid, cdr.segment, cdr.leg, cdr.answered, cdr.hangup_cause, cdr.peer) \
            == (uniqueid, sequence, leg, answered, cause, peer)
        assert cdr.start_us == _us(legacy[6]) and cdr.end_us == _us(legacy[10])
        if answered:
            assert cdr.answer_us == _us(legacy[8])
            # equals Asterisk's own billsec,f (the exact difference), not its truncated billsec
            assert cdr.billable_us == _us(legacy[14])
        else:
            assert cdr.answer_us is None and cdr.billable_us == 0
        assert cdr.flags in ((), (FLAG_NOT_A_NUMBER,))  # no dst column in the captured mapping


def test_ast_custom_as_rendered() -> None:
    """A row in the rendered cdr_custom layout (the captured row's values in render's field order)."""
    assert AST_CUSTOM_FIELDS == CDR_CUSTOM_FIELDS
    values = {"uniqueid": "1795633518.135", "linkedid": "1795633518.135", "accountcode": "acct9",
              "src": "sipp", "dst": "4000", "dcontext": "from-loopback", "clid": '"sipp-uac" <sipp>',
              "channel": "PJSIP/sipp-00000043", "dstchannel": "PJSIP/sipp-00000044", "lastapp": "Dial",
              "lastdata": "PJSIP/sipp/sip:4000@127.0.0.1:5091,10", "start(double)": "1795633518.343393",
              "answer(double)": "1795633519.346821", "end(double)": "1795633522.350416", "duration": "4",
              "billsec": "3", "disposition": "ANSWERED", "amaflags": "DOCUMENTATION", "userfield": "",
              "sequence": "77", "switchctl_call(uservar)": "", "switchctl_account(uservar)": "",
              "switchctl_recording(uservar)": ""}
    line = ",".join('"' + values[f].replace('"', '""') + '"' for f in AST_CUSTOM_FIELDS) + "\n"
    cdr = AstCustomFormat("ast1").parse(line, "switchctl.csv:1")
    assert (cdr.call_uuid, cdr.segment, cdr.leg, cdr.callee, cdr.context, cdr.account) == \
        ("1795633518.135", 77, "a", "4000", "from-loopback", "acct9")
    assert cdr.prepaid_call is None
    assert (cdr.answer_us, cdr.billable_us) == (1795633519346821, 3_003_595)
    assert cdr.raw == line.rstrip("\n") and cdr.source == "ast_custom"


def test_ast_master_and_custom_of_one_cdr_share_its_identity() -> None:
    for case in AST_EXPECTED:
        master = [parse_ast_master(x, switch="ast1")
                  for x in (AST / case / "cdr" / "Master.csv").read_text().splitlines()]
        custom = [parse_ast_custom(x, switch="ast1", fields=CAPTURED_DOUBLE_FIELDS)
                  for x in (AST / case / "cdr" / "advanced_double.csv").read_text().splitlines()]
        assert [c.key for c in master] == [c.key for c in custom]
        assert all(m.precision < c.precision for m, c in zip(master, custom))


def test_ast_bad_rows() -> None:
    with pytest.raises(CdrError, match=r"^Master.csv:2: 3 columns, Master.csv with loguniqueid"):
        parse_ast_master('"a","b","c"', switch="ast1", where="Master.csv:2")
    line = (AST / "a_ari_answered" / "cdr" / "Master.csv").read_text().splitlines()[0]
    with pytest.raises(CdrError, match=r"^M:1: start '2026-11-25T19:04:43' is not YYYY-MM-DD HH:MM:SS"):
        parse_ast_master(line.replace("2026-11-25 19:04:43", "2026-11-25T19:04:43", 1), switch="a", where="M:1")
    with pytest.raises(CdrError, match=r"unknown disposition 'WEIRD'"):
        parse_ast_master(line.replace('"ANSWERED"', '"WEIRD"'), switch="a")
    custom = (AST / "a_ari_answered" / "cdr" / "advanced_double.csv").read_text().splitlines()[0]
    with pytest.raises(CdrError, match=r"answer '1795633484,118416' is not seconds.microseconds"):
        parse_ast_custom(custom.replace("1795633484.118416", "1795633484,118416"), switch="a",
                         fields=CAPTURED_DOUBLE_FIELDS)
    with pytest.raises(CdrError, match=r"not a CSV row"):
        parse_ast_custom('"unterminated', switch="a")


def test_ast_cause_mapping() -> None:
    assert ast_cause("ANSWERED") == "NORMAL_CLEARING"
    assert ast_cause("BUSY", "17") == "USER_BUSY"
    assert ast_cause("FAILED", "34") == "NORMAL_CIRCUIT_CONGESTION"
    assert ast_cause("CONGESTION") == "NORMAL_CIRCUIT_CONGESTION"


def test_cdr_from_ari() -> None:
    cdr = cdr_from_ari(switch="ast1", channel_id="1795633518.135", direction="inbound", caller="sipp",
                       destination="4000", context="from-loopback", start_us=1795633518343393,
                       answer_us=1795633519346821, end_us=1795633522350000, cause=16, sequence=77)
    assert cdr.key == ("ast1", "1795633518.135", "a", 77)
    assert cdr.billable_us == 3_003_179 and cdr.hangup_cause == "NORMAL_CLEARING"
    assert cdr.precision == 2 and cdr.switch_kind == "asterisk"


def test_cdr_invariants() -> None:
    good = parse_fs_csv((S8 / "cd3_answered_bridged.A.cdr_csv.csv").read_text(), switch="fs1")
    with pytest.raises(CdrError, match="unanswered but 5 µs billable"):
        dataclasses.replace(good, answer_us=None, billable_us=5)
    with pytest.raises(CdrError, match="leg 'c'"):
        dataclasses.replace(good, leg="c")
    with pytest.raises(CdrError, match="unknown source"):
        dataclasses.replace(good, source="carrier")


def test_formats_parse_like_the_functions() -> None:
    line = (S8 / "cd1_answered_no_bleg.A.cdr_csv.csv").read_text()
    assert FsCsvFormat("fs1").parse(line, "x") == parse_fs_csv(line, switch="fs1")
    text = (S8 / "cd1_answered_no_bleg.A.json_cdr.cdr.json").read_text()
    assert FsJsonFormat("fs1").parse(text, "x") == parse_fs_json(text, switch="fs1")
    assert FsJsonFormat.whole_file and not FsCsvFormat.whole_file
    master = (AST / "e_dialplan_answered" / "cdr" / "Master.csv").read_text()
    assert AstMasterFormat("a").parse(master, "x") == parse_ast_master(master, switch="a")


def test_ast_custom_prepaid_user_variables() -> None:
    """`switchctl_call(uservar)` / `switchctl_account(uservar)` give the prepaid call's caller leg
    and account; accountcode wins over the user variable when both are set."""
    values = dict.fromkeys(AST_CUSTOM_FIELDS, "")
    values.update({"uniqueid": "1795633520.140", "linkedid": "1795633520.139", "dst": "4000",
                   "dcontext": "from-loopback", "lastapp": "AppDial2", "start(double)": "1795633520.0",
                   "answer(double)": "1795633521.5", "end(double)": "1795633523.25",
                   "disposition": "ANSWERED", "sequence": "80",
                   "switchctl_call(uservar)": "1795633520.139", "switchctl_account(uservar)": "booth7"})
    line = ",".join('"' + values[f] + '"' for f in AST_CUSTOM_FIELDS) + "\n"
    cdr = AstCustomFormat("ast1").parse(line, "switchctl.csv:2")
    assert (cdr.leg, cdr.prepaid_call, cdr.account, cdr.billable_us) == \
        ("b", "1795633520.139", "booth7", 1_750_000)
    values["accountcode"] = "acct9"
    line = ",".join('"' + values[f] + '"' for f in AST_CUSTOM_FIELDS) + "\n"
    assert AstCustomFormat("ast1").parse(line, "switchctl.csv:3").account == "acct9"
