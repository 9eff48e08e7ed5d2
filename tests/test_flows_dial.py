"""The `dial` flow node: what DialSpec it builds, where each outcome leads, and what it checks."""

from __future__ import annotations

import pytest

from switchctl.flows import FlowRunner, FlowSet
from switchctl.switch.call import DialOutcome, DialResult, DialSpec, DialTarget

from .fakecall import ScriptedCall, check_texts

DEFAULT_RINGBACK = DialSpec(groups=()).ringback

RING = """
flow: ring
patterns: ['^8(\\d+)$']
nodes:
  ring:
    type: dial
    to:
      - {phone: "10${1}"}
      - {gateway: upstream, number: "00${1}", timeout: 20}
      - {uri: "sip:desk-${1}@127.0.0.1:5090"}
    timeout: 25
    caller_id: {number: "${caller}", name: "Bar ${caller_name}"}
    next: after
    busy: busy
    no_answer: no_answer
    rejected: rejected
    failed: failed
  after: {type: set, vars: {summary: "${var.dial_outcome}/${var.dial_cause}/${var.dial_talk_ms}/${var.dial_peer}"}, next: bye}
  busy: {type: hangup, cause: USER_BUSY}
  no_answer: {type: hangup, cause: NO_ANSWER}
  rejected: {type: hangup, cause: CALL_REJECTED}
  failed: {type: hangup, cause: NORMAL_TEMPORARY_FAILURE}
  bye: {type: hangup}
"""


def flows_of(tmp_path, *texts, **kw) -> FlowSet:
    result = check_texts(tmp_path, *texts, known_gateways={"upstream"}, **kw)
    assert result.ok, result.report()
    return result.flows


async def run(flows: FlowSet, call: ScriptedCall, **kw):
    match = flows.match(call.info.destination)
    assert match is not None
    flow, captures = match
    return await FlowRunner(flows, site_values={}, lists={}, **kw).run(call, flow, captures)


def dials(call: ScriptedCall) -> list[DialSpec]:
    return [op[1] for op in call.ops if op[0] == "dial"]


async def test_to_builds_one_simultaneous_group_from_templates(tmp_path):
    flows = flows_of(tmp_path, RING)
    call = ScriptedCall(destination="801", caller="555", caller_name="Ann", dials=["answered"])
    trace = await run(flows, call)
    (spec,) = dials(call)
    assert spec.groups == ((DialTarget("phone", "1001"), DialTarget("gateway", "0001", "upstream", 20.0),
                            DialTarget("uri", "sip:desk-01@127.0.0.1:5090")),)
    assert spec.timeout == 25.0 and spec.ringback == DEFAULT_RINGBACK
    assert (spec.caller_id_number, spec.caller_id_name) == ("555", "Bar Ann")
    assert spec.variables == {} and spec.on_answer is None  # no prepaid node: an unbilled dial
    assert trace.path == ["ring", "after", "bye"] and trace.result == "hangup"
    assert trace.variables["summary"] == "answered/NORMAL_CLEARING/60000/call-1-b"


@pytest.mark.parametrize(("outcome", "node", "cause"), [
    ("busy", "busy", "USER_BUSY"),
    ("no_answer", "no_answer", "NO_ANSWER"),
    ("rejected", "rejected", "CALL_REJECTED"),
    ("failed", "failed", "NORMAL_TEMPORARY_FAILURE"),
])
async def test_each_unanswered_outcome_takes_its_branch(tmp_path, outcome, node, cause):
    flows = flows_of(tmp_path, RING)
    call = ScriptedCall(destination="801", dials=[outcome])
    trace = await run(flows, call)
    assert trace.steps[0] == ("ring", "ring", outcome)
    assert trace.path == ["ring", node]
    assert trace.variables["dial_outcome"] == outcome and trace.variables["dial_cause"] == cause
    assert trace.variables["dial_talk_ms"] == "0" and trace.variables["dial_peer"] == ""


FALLBACK = """
flow: fb
numbers: ["9000"]
nodes:
  ring: {type: dial, to: [{phone: "1001"}], next: bye, failed: sorry}
  sorry: {type: play, prompts: [ivr/sorry], next: bye}
  bye: {type: hangup}
"""


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "rejected", "failed"])
async def test_missing_outcome_branches_fall_back_to_failed(tmp_path, outcome):
    flows = flows_of(tmp_path, FALLBACK)
    trace = await run(flows, ScriptedCall(dials=[outcome]))
    assert trace.steps[0] == ("fb", "ring", outcome)  # the trace keeps the real outcome
    assert trace.path == ["ring", "sorry", "bye"]


async def test_sequence_tries_groups_with_their_own_ring_times(tmp_path):
    flows = flows_of(tmp_path, """
flow: seq
numbers: ["9000"]
nodes:
  ring:
    type: dial
    sequence:
      - to: [{phone: "1001"}, {phone: "1002", timeout: 5}]
        timeout: 15
      - to: [{gateway: upstream, number: "${destination}"}]
    timeout: 40
    ringback: none
    next: bye
    failed: bye
  bye: {type: hangup}
""")
    call = ScriptedCall(dials=["busy"])
    await run(flows, call)
    (spec,) = dials(call)
    assert spec.groups == (
        (DialTarget("phone", "1001", timeout=15.0), DialTarget("phone", "1002", timeout=5.0)),
        (DialTarget("gateway", "9000", "upstream"),),  # rings for the node's 40 s
    )
    assert spec.timeout == 40.0 and spec.ringback is None and spec.caller_id_number is None


@pytest.mark.parametrize(("ringback", "expected"), [
    ("tone_stream://%(1000,4000,425);loops=-1", "tone_stream://%(1000,4000,425);loops=-1"),
    ("ivr/ringing", "SOUNDS/ivr/ringing.wav"),
])
async def test_ringback_forms(tmp_path, ringback, expected):
    flows = flows_of(tmp_path, f"""
flow: rb
numbers: ["9000"]
nodes:
  ring: {{type: dial, to: [{{phone: "1001"}}], ringback: "{ringback}", next: bye, failed: bye}}
  bye: {{type: hangup}}
""")
    call = ScriptedCall()
    await run(flows, call, sound_dirs=[tmp_path / "sounds"])
    (spec,) = dials(call)
    assert spec.ringback == expected.replace("SOUNDS", str((tmp_path / "sounds").resolve()))


OPTIONAL_TARGETS = """
flow: opt
numbers: ["9000"]
nodes:
  setup: {type: set, vars: {desk: "", uri: "URI"}, next: ring}
  ring:
    type: dial
    to: [{phone: "${var.desk}"}, {uri: "${var.uri}"}, LAST]
    next: bye
    failed: failed
  failed: {type: set, vars: {why: "${var.dial_cause}"}, next: bye}
  bye: {type: hangup}
"""


async def test_empty_or_non_sip_targets_are_skipped(tmp_path):
    flows = flows_of(tmp_path, OPTIONAL_TARGETS.replace("URI", "http://x").replace("LAST", '{phone: "1001"}'))
    call = ScriptedCall(dials=["answered"])
    await run(flows, call)
    (spec,) = dials(call)
    assert spec.groups == ((DialTarget("phone", "1001"),),)


async def test_no_target_at_all_fails_without_dialling(tmp_path):
    flows = flows_of(tmp_path, OPTIONAL_TARGETS.replace("URI", "").replace("LAST", '{phone: "${var.desk}"}'))
    call = ScriptedCall()
    trace = await run(flows, call)
    assert "dial" not in call.names()
    assert trace.path == ["setup", "ring", "failed", "bye"]
    assert trace.steps[1][2] == "failed" and trace.variables["why"] == "INVALID_NUMBER_FORMAT"


async def test_caller_hanging_up_the_bridge_ends_the_run(tmp_path):
    flows = flows_of(tmp_path, RING)
    ended = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", DialTarget("phone", "1001"), "peer-9",
                       answered_at_us=1_000_000, ended_at_us=3_500_000, caller_hung_up=True)
    call = ScriptedCall(destination="801", dials=[ended])
    trace = await run(flows, call)
    assert trace.steps == [("ring", "ring", "caller_hangup")]  # `after` never runs for a gone caller
    assert (trace.result, trace.cause) == ("caller_hangup", "NORMAL_CLEARING")
    assert trace.variables["dial_talk_ms"] == "2500" and trace.variables["dial_peer"] == "peer-9"
    assert "hangup" not in call.names()


async def test_callee_hanging_up_continues_at_next(tmp_path):
    flows = flows_of(tmp_path, RING)
    ended = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", DialTarget("phone", "1001"), "peer-9",
                       answered_at_us=1_000_000, ended_at_us=2_000_000)
    trace = await run(flows, ScriptedCall(destination="801", dials=[ended]))
    assert trace.path == ["ring", "after", "bye"]
    assert trace.variables["summary"] == "answered/NORMAL_CLEARING/1000/peer-9"


async def test_caller_hangup_while_ringing(tmp_path):
    flows = flows_of(tmp_path, RING)
    call = ScriptedCall(destination="801", hangup_at=("dial", 1), caller_cause="ORIGINATOR_CANCEL")
    trace = await run(flows, call)
    assert trace.steps == [("ring", "ring", "caller_hangup")]
    assert (trace.result, trace.cause) == ("caller_hangup", "ORIGINATOR_CANCEL")


async def test_dial_failing_on_the_switch_is_a_flow_error(tmp_path):
    flows = flows_of(tmp_path, RING)
    call = ScriptedCall(destination="801", fail_at=("dial", 1))
    trace = await run(flows, call)
    assert trace.result == "error" and call.ops[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")


async def test_dial_outcomes_lead_back_into_a_bounded_retry(tmp_path):
    flows = flows_of(tmp_path, """
flow: retry
numbers: ["9000"]
nodes:
  ring: {type: dial, to: [{phone: "1001"}], next: bye, failed: again}
  again: {type: goto, target: ring, max: 2, on: {exhausted: bye}}
  bye: {type: hangup}
""")
    call = ScriptedCall(dials=["busy", "no_answer", "rejected"])
    trace = await run(flows, call)
    assert trace.path == ["ring", "again", "ring", "again", "ring", "again", "bye"]
    assert len(dials(call)) == 3


# -- check --------------------------------------------------------------------------------------


def test_check_gateways_only_when_the_site_lists_them(tmp_path):
    text = """
flow: gw
nodes:
  ring: {type: dial, to: [{gateway: upstrem, number: "1"}], next: bye, failed: bye}
  bye: {type: hangup}
"""
    assert check_texts(tmp_path, text).ok  # no site given: gateway names are not checked
    report = check_texts(tmp_path, text, known_gateways=set()).report()
    assert report == "flow0.yaml:4:37: dial 'ring' names unknown gateway 'upstrem' (site has: no gateways)\n"
    report = check_texts(tmp_path, text, known_gateways={"upstream"}).report()
    assert report == "flow0.yaml:4:37: dial 'ring' names unknown gateway 'upstrem' (site has: upstream)\n"


def test_check_phone_extensions_when_known(tmp_path):
    text = """
flow: ph
nodes:
  ring: {type: dial, to: [{phone: "1003"}, {phone: "${digits}"}, {phone: 1001}], next: bye, failed: bye}
  bye: {type: hangup}
"""
    assert check_texts(tmp_path, text).ok
    result = check_texts(tmp_path, text, known_extensions={"1001"})
    assert result.report() == ("flow0.yaml:4:35: dial 'ring': phone '1003' is not a known extension "
                               "(did you mean '1001'?)\n")


def test_dial_variables_are_known_to_later_nodes(tmp_path):
    text = """
flow: v
nodes:
  ring: {type: dial, to: [{phone: "1001"}], next: say, failed: say}
  say: {type: say, value: "${var.dial_talk_ms}", next: bye}
  bye: {type: hangup}
"""
    assert check_texts(tmp_path, text).ok


def test_outcome_edges_count_for_reachability(tmp_path):
    text = """
flow: r
nodes:
  ring: {type: dial, to: [{phone: "1001"}], next: bye, no_answer: vm, failed: bye}
  vm: {type: transfer, extension: "1001"}
  bye: {type: hangup}
  lost: {type: hangup}
"""
    report = check_texts(tmp_path, text).report()
    assert report == "flow0.yaml:7:3: node 'lost' is unreachable from the start node 'ring'\n"
