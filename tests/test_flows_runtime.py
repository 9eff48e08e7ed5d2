"""Runtime of YAML call flows, driven through the scripted in-memory Call."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from switchctl.flows import FlowRunner, FlowSet
from switchctl.flows.parse import parse_flow
from switchctl.config.yamlsrc import load_text
from switchctl.switch.call import CollectOutcome, CollectResult

from .fakecall import ScriptedCall, check_texts

MENU = """
flow: main
numbers: ["9000"]
patterns: ['^9(\\d)(\\d\\d)$']
nodes:
  welcome: {type: answer, next: main_menu}
  main_menu:
    type: menu
    greeting: ivr/main_long
    short_greeting: ivr/main_short
    invalid_sound: ivr/invalid
    exit_sound: ivr/goodbye
    timeout: 5
    inter_digit_timeout: 2
    max_failures: 3
    max_timeouts: 2
    digit_len: 4
    direct_dial: {pattern: '^10(0[1-9]|10)$', next: booth}
    on: {"1": sales, "2": support, "0": operator, timeout: bye_timeout, invalid: bye_invalid}
  sales: {type: hangup, cause: USER_BUSY}
  support: {type: transfer, extension: "2000", context: support}
  operator: {type: transfer, extension: "0"}
  booth: {type: transfer, extension: "${digits}", context: "booth-${1}"}
  bye_timeout: {type: hangup}
  bye_invalid: {type: hangup, cause: CALL_REJECTED}
"""


def flows_of(tmp_path, *texts, **kw) -> FlowSet:
    result = check_texts(tmp_path, *texts, **kw)
    assert result.ok, result.report()
    return result.flows


async def run(flows: FlowSet, call: ScriptedCall, *, name: str | None = None, clock=None, **kw):
    match = flows.match(call.info.destination)
    if name is not None:
        flow, captures = flows[name], ()
    else:
        assert match is not None
        flow, captures = match
    runner = FlowRunner(flows, site_values=kw.pop("site_values", {}), lists=kw.pop("lists", {}),
                        **({"clock": clock} if clock else {}), **kw)
    return await runner.run(call, flow, captures)


@pytest.fixture
def menu_flows(tmp_path):
    return flows_of(tmp_path, MENU)


# -- menu --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "node", "result", "op"), [
    ("1", "sales", "hangup", ("hangup", "USER_BUSY")),
    ("2", "support", "transferred", ("transfer", "2000", "support")),
    ("0", "operator", "transferred", ("transfer", "0", None)),
])
async def test_menu_each_option(menu_flows, key, node, result, op):
    call = ScriptedCall([key])
    trace = await run(menu_flows, call)
    assert trace.result == result
    assert trace.steps == [("main", "welcome", "next"), ("main", "main_menu", key), ("main", node, trace.steps[-1][2])]
    assert call.ops[-1] == op
    assert call.played() == ["ivr/main_long"]


async def test_menu_collect_spec(menu_flows):
    call = ScriptedCall(["1"])
    await run(menu_flows, call)
    spec = call.collects()[0]
    assert (spec.min_digits, spec.max_digits, spec.timeout, spec.inter_digit_timeout) == (1, 4, 5.0, 2.0)
    assert spec.terminators == "#" and spec.invalid_prompt is None


async def test_menu_direct_dial_sets_digits_and_captures(menu_flows):
    call = ScriptedCall(["1005"])
    trace = await run(menu_flows, call)
    assert trace.steps[1] == ("main", "main_menu", "direct_dial")
    assert call.ops[-1] == ("transfer", "1005", "booth-05")


async def test_menu_timeouts_then_exit_sound(menu_flows):
    call = ScriptedCall(["timeout", "timeout"])
    trace = await run(menu_flows, call)
    assert trace.steps[1] == ("main", "main_menu", "timeout")
    assert trace.path[-1] == "bye_timeout"
    # long greeting first, short greeting on the retry, exit sound when max_timeouts is reached
    assert call.played() == ["ivr/main_long", "ivr/main_short", "ivr/goodbye"]
    assert trace.result == "hangup" and trace.cause == "NORMAL_CLEARING"


async def test_menu_invalid_after_max_failures(menu_flows):
    call = ScriptedCall(["7", "55", "9999"])
    trace = await run(menu_flows, call)
    assert trace.steps[1] == ("main", "main_menu", "invalid")
    assert call.played() == [
        "ivr/main_long", "ivr/invalid",
        "ivr/main_short", "ivr/invalid",
        "ivr/main_short", "ivr/invalid", "ivr/goodbye",
    ]
    assert call.ops[-1] == ("hangup", "CALL_REJECTED")


async def test_menu_counts_failures_and_timeouts_separately(menu_flows):
    # one timeout and two invalid entries: neither budget is spent, the fourth try succeeds
    call = ScriptedCall(["timeout", "8", "8", "2"])
    trace = await run(menu_flows, call)
    assert trace.steps[1] == ("main", "main_menu", "2")
    assert len(call.collects()) == 4


async def test_menu_switch_reported_invalid_counts_as_failure(menu_flows):
    bad = CollectResult(CollectOutcome.INVALID, "", "#")
    call = ScriptedCall([bad, bad, bad])
    trace = await run(menu_flows, call)
    assert trace.steps[1][2] == "invalid"


async def test_menu_max_visits_takes_exit(tmp_path):
    flows = flows_of(tmp_path, """
flow: repeat
numbers: ["1"]
nodes:
  m:
    type: menu
    greeting: ivr/m
    max_visits: 3
    on: {"9": m, "1": done, timeout: done, invalid: done}
  done: {type: hangup}
""")
    call = ScriptedCall(["9"] * 10, destination="1")
    trace = await run(flows, call)
    assert trace.path == ["m", "m", "m", "m", "done"]
    assert trace.steps[3] == ("repeat", "m", "timeout")  # 4th entry: budget spent, exit without prompting
    assert len(call.collects()) == 3


# -- collect, say, play, set -------------------------------------------------------------------

COLLECT = """
flow: pin
numbers: ["7000"]
nodes:
  ask:
    type: collect
    prompt: [ivr/enter_pin]
    min_digits: 4
    max_digits: 4
    timeout: 4
    inter_digit_timeout: 2
    terminators: "#"
    pattern: '^\\d{4}$'
    tries: 2
    invalid_prompt: ivr/bad_pin
    var: pin
    next: readback
    on: {timeout: silent, invalid: wrong}
  readback: {type: say, value: "${var.pin}", kind: digits, language: fr, next: store}
  store: {type: set, vars: {account: "acct-${var.pin}", lang: fr}, channel: true, next: greet}
  greet: {type: play, prompts: ["ivr/hello", "ivr/${var.lang}/account"], next: bye}
  bye: {type: hangup}
  silent: {type: hangup, cause: NO_USER_RESPONSE}
  wrong: {type: hangup, cause: CALL_REJECTED}
"""


async def test_collect_ok_say_set_play(tmp_path):
    flows = flows_of(tmp_path, COLLECT)
    call = ScriptedCall(["12", "4321"], destination="7000")
    trace = await run(flows, call)
    assert trace.path == ["ask", "readback", "store", "greet", "bye"]
    specs = call.collects()
    assert len(specs) == 2 and specs[0].min_digits == 4 and specs[0].pattern == r"^\d{4}$"
    # the invalid prompt after the short entry leads the next try's prompt (one switch application)
    assert specs[1].prompts == ["ivr/bad_pin", "ivr/enter_pin"]
    assert ("say", "4321", "digits", "fr") in call.ops
    assert ("set_variable", "account", "acct-4321") in call.ops
    assert ("play", ("ivr/hello", "ivr/fr/account")) in call.ops
    assert trace.variables == {"pin": "4321", "account": "acct-4321", "lang": "fr"}


async def test_collect_timeout_outcome(tmp_path):
    flows = flows_of(tmp_path, COLLECT)
    call = ScriptedCall([], destination="7000")
    trace = await run(flows, call)
    assert trace.steps == [("pin", "ask", "timeout"), ("pin", "silent", "hangup")]
    assert len(call.collects()) == 2 and "ivr/bad_pin" not in call.played()


async def test_collect_invalid_outcome(tmp_path):
    flows = flows_of(tmp_path, COLLECT)
    call = ScriptedCall(["1", "99"], destination="7000")
    trace = await run(flows, call)
    assert trace.steps[0] == ("pin", "ask", "invalid")
    assert call.played().count("ivr/bad_pin") == 2
    assert call.ops[-1] == ("hangup", "CALL_REJECTED")


async def test_collect_rechecks_what_the_switch_accepted(tmp_path):
    flows = flows_of(tmp_path, COLLECT)
    lax = CollectResult(CollectOutcome.OK, "12ab")  # a backend that ignored the pattern
    call = ScriptedCall([lax, lax], destination="7000")
    trace = await run(flows, call)
    assert trace.steps[0][2] == "invalid"


async def test_variables_from_call_channel_site_and_captures(tmp_path):
    flows = flows_of(tmp_path, """
flow: vars
patterns: ['^8(\\d)(\\d)$']
nodes:
  s:
    type: set
    vars: {all: "${caller}|${caller_name}|${destination}|${uuid}|${chan.lang}|${site.company}|${1}${2}|${digits}"}
    next: h
  h: {type: hangup}
""", site_values={"company": "Acme"})
    call = ScriptedCall(caller="555", destination="812", uuid="u-1", variables={"lang": "de"})
    trace = await run(flows, call, site_values={"company": "Acme"})
    assert trace.variables["all"] == "555|Alice|812|u-1|de|Acme|12|"


# -- route ---------------------------------------------------------------------------------------

ROUTE = """
flow: router
numbers: ["5000"]
nodes:
  r:
    type: route
    timezone: Europe/Paris
    rules:
      - {in_list: blocked, next: reject}
      - {caller: '^(33)\\d+$', next: french}
      - {destination: '^5(\\d+)$', not_in_list: vip, time: "08:00-18:00", days: mon-fri, next: office}
      - {dates: ["12-25", "2030-01-01..2030-01-03"], next: holiday}
    default: closed
  reject: {type: hangup, cause: CALL_REJECTED}
  french: {type: transfer, extension: "fr-${1}"}
  office: {type: transfer, extension: "office-${1}"}
  holiday: {type: hangup, cause: NORMAL_UNSPECIFIED}
  closed: {type: hangup}
"""

LISTS = {"blocked": ["666"], "vip": ["1234"]}


def at(text: str):
    when = dt.datetime.fromisoformat(text)
    return lambda: when


@pytest.mark.parametrize(("caller", "when", "node", "last_op"), [
    ("666", "2024-06-05T10:00:00+02:00", "reject", ("hangup", "CALL_REJECTED")),
    ("33123", "2024-06-05T10:00:00+02:00", "french", ("transfer", "fr-33", None)),
    ("1000", "2024-06-05T10:00:00+02:00", "office", ("transfer", "office-000", None)),  # Wednesday
    ("1000", "2024-06-05T07:59:00+02:00", "closed", ("hangup", "NORMAL_CLEARING")),  # before opening
    ("1000", "2024-06-05T15:30:00+00:00", "office", ("transfer", "office-000", None)),  # 17:30 in Paris
    ("1000", "2024-06-05T16:30:00+00:00", "closed", ("hangup", "NORMAL_CLEARING")),  # 18:30 in Paris
    ("1000", "2024-06-08T10:00:00+02:00", "closed", ("hangup", "NORMAL_CLEARING")),  # Saturday
    ("1234", "2024-06-05T10:00:00+02:00", "closed", ("hangup", "NORMAL_CLEARING")),  # in not_in_list
    ("1000", "2024-12-25T20:00:00+01:00", "holiday", ("hangup", "NORMAL_UNSPECIFIED")),
    ("1000", "2030-01-02T20:00:00+01:00", "holiday", ("hangup", "NORMAL_UNSPECIFIED")),
])
async def test_route(tmp_path, caller, when, node, last_op):
    flows = flows_of(tmp_path, ROUTE, lists=LISTS)
    call = ScriptedCall(caller=caller, destination="5000")
    trace = await run(flows, call, lists=LISTS, clock=at(when))
    assert trace.path == ["r", node], trace
    assert call.ops[-1] == last_op


async def test_route_timezone_falls_back_to_site_value(tmp_path):
    flows = flows_of(tmp_path, """
flow: tz
numbers: ["1"]
nodes:
  r:
    type: route
    rules: [{time: "09:00-17:00", next: open}]
    default: closed
  open: {type: hangup}
  closed: {type: hangup, cause: USER_BUSY}
""")
    when = at("2024-06-05T08:00:00+00:00")  # 08:00 UTC = 10:00 in Paris
    trace = await run(flows, ScriptedCall(destination="1"), clock=when, site_values={"timezone": "Europe/Paris"})
    assert trace.path == ["r", "open"]
    trace = await run(flows, ScriptedCall(destination="1"), clock=when)  # UTC by default
    assert trace.path == ["r", "closed"]


# -- transfer, call/return, goto ------------------------------------------------------------------

async def test_transfer_to_flow_runs_it_in_process(tmp_path):
    flows = flows_of(tmp_path, """
flow: first
numbers: ["1"]
nodes:
  a: {type: set, vars: {from: first}, next: go}
  go: {type: transfer, flow: second}
""", """
flow: second
nodes:
  b: {type: play, prompts: ["ivr/${var.from}"], next: end}
  end: {type: hangup}
""")
    call = ScriptedCall(destination="1")
    trace = await run(flows, call)
    assert trace.steps == [("first", "a", "next"), ("first", "go", "flow"),
                           ("second", "b", "next"), ("second", "end", "hangup")]
    assert call.played() == ["ivr/first"]


async def test_call_and_return(tmp_path):
    flows = flows_of(tmp_path, """
flow: sub
numbers: ["1"]
nodes:
  one: {type: call, section: beep, next: two}
  two: {type: call, section: beep, next: done}
  done: {type: hangup}
  beep: {type: play, prompts: ["tone_stream://%(100,0,440)"], next: back}
  back: {type: return}
""")
    call = ScriptedCall(destination="1")
    trace = await run(flows, call)
    assert trace.path == ["one", "beep", "back", "two", "beep", "back", "done"]
    assert call.names() == ["play", "play", "hangup"]


async def test_goto_bound(tmp_path):
    flows = flows_of(tmp_path, """
flow: loop
numbers: ["1"]
nodes:
  p: {type: play, prompts: [ivr/again], next: g}
  g: {type: goto, target: p, max: 2, on: {exhausted: end}}
  end: {type: hangup}
""")
    call = ScriptedCall(destination="1")
    trace = await run(flows, call)
    assert trace.path == ["p", "g", "p", "g", "p", "g", "end"]
    assert [o for _, n, o in trace.steps if n == "g"] == ["target", "target", "exhausted"]


# -- hangups, failures, limits ---------------------------------------------------------------------

async def test_caller_hangup_mid_collect(menu_flows, caplog):
    call = ScriptedCall(["timeout"], hangup_at=("collect", 2), caller_cause="ORIGINATOR_CANCEL")
    trace = await run(menu_flows, call)
    assert trace.result == "caller_hangup" and trace.cause == "ORIGINATOR_CANCEL"
    assert trace.steps[-1] == ("main", "main_menu", "caller_hangup")
    assert trace.error is None
    assert "hangup" not in call.names()  # nobody to hang up


async def test_exception_in_switch_hangs_up_and_logs(menu_flows, caplog):
    call = ScriptedCall(["1"], fail_at=("answer", 1), uuid="u-77")
    with caplog.at_level(logging.ERROR, logger="switchctl.flows"):
        trace = await run(menu_flows, call)
    assert trace.result == "error"
    assert "scripted failure" in trace.error
    assert trace.steps == [("main", "welcome", "error")]
    assert call.ops[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")
    record = next(r for r in caplog.records if r.name == "switchctl.flows")
    assert record.call == "u-77" and record.node == "welcome"


def _unchecked(text: str) -> FlowSet:
    """A flow built without check (as if `switchctl check` had been skipped)."""
    flow = parse_flow(load_text(text, "raw.yaml"), "raw.yaml", [])
    assert flow is not None
    return FlowSet([flow])


async def test_step_limit_stops_a_runaway_flow():
    flows = _unchecked("""
flow: spin
nodes:
  a: {type: goto, target: b}
  b: {type: goto, target: a}
""")
    call = ScriptedCall()
    trace = await FlowRunner(flows, site_values={}, lists={}, step_limit=50).run(call, flows["spin"])
    assert trace.result == "error" and "step limit (50)" in trace.error
    assert len(trace.steps) == 51 and call.ops == [("hangup", "NORMAL_TEMPORARY_FAILURE")]


async def test_depth_limit_stops_runaway_recursion():
    flows = _unchecked("""
flow: deep
nodes:
  a: {type: call, section: a, next: a}
""")
    trace = await FlowRunner(flows, site_values={}, lists={}, depth_limit=5).run(ScriptedCall(), flows["deep"])
    assert trace.result == "error" and "deeper than 5" in trace.error


async def test_return_outside_section_is_a_runtime_error_too():
    flows = _unchecked("""
flow: r
nodes:
  a: {type: return}
""")
    trace = await FlowRunner(flows, site_values={}, lists={}).run(ScriptedCall(), flows["r"])
    assert trace.result == "error" and "outside a section" in trace.error


def test_match_numbers_then_patterns(menu_flows):
    assert menu_flows.match("9000")[1] == ()
    flow, captures = menu_flows.match("9123")
    assert flow.name == "main" and captures == ("1", "23")
    assert menu_flows.match("91234") is None


async def test_invalid_sound_leads_the_next_try_in_one_collect(menu_flows):
    call = ScriptedCall(["7", "1"])
    trace = await run(menu_flows, call)
    assert trace.steps[1] == ("main", "main_menu", "1")
    specs = call.collects()
    assert specs[1].prompts == ["ivr/invalid", "ivr/main_short"]  # no separate play of the invalid sound
    assert not [op for op in call.ops if op[0] == "play"]


async def test_exit_sound_is_played_before_a_non_input_node(menu_flows):
    call = ScriptedCall(["7", "55", "9999"])
    await run(menu_flows, call)
    plays = [op for op in call.ops if op[0] == "play"]
    assert plays == [("play", ("ivr/invalid", "ivr/goodbye"))]  # both, in one play, before the hangup
    assert call.ops.index(plays[0]) < call.ops.index(("hangup", "CALL_REJECTED"))


BARGE = """
flow: info
numbers: ["7100"]
nodes:
  hello: {type: play, prompts: [ivr/rates], barge_in: true, next: pick}
  pick:
    type: menu
    greeting: ivr/pick
    on: {"1": again, timeout: bye, invalid: bye}
  again: {type: play, prompts: [ivr/rates], next: bye}
  bye: {type: hangup}
"""


async def test_barge_in_play_leads_the_following_menu(tmp_path):
    flows = flows_of(tmp_path, BARGE)
    call = ScriptedCall(["1"], destination="7100")
    trace = await run(flows, call)
    assert trace.path == ["hello", "pick", "again", "bye"]
    assert call.collects()[0].prompts == ["ivr/rates", "ivr/pick"]
    # a play without barge_in is played on its own, before the hangup
    assert [op for op in call.ops if op[0] == "play"] == [("play", ("ivr/rates",))]


async def test_barge_in_prompt_is_not_lost_when_the_menu_is_over_budget(tmp_path):
    text = BARGE.replace("greeting: ivr/pick", "greeting: ivr/pick\n    max_visits: 1").replace(
        '"1": again', '"1": hello, "2": again')
    flows = flows_of(tmp_path, text)
    call = ScriptedCall(["1"], destination="7100")
    trace = await run(flows, call)
    # second visit to pick is over budget: it does not prompt, but hello's lead-in is still played
    assert trace.steps[-2][1:] == ("pick", "timeout")
    assert ("play", ("ivr/rates",)) in call.ops
