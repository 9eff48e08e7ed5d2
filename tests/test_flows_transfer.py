"""Transfers and conferences in flows: a `dial` runs through the CallTransfers hook (with the flow's
context), its TransferredDial maps onto the node's outcomes, a flow jump continues elsewhere, paid
dials bypass the hook, and the `conference` node. Against a recording fake CallTransfers."""

from __future__ import annotations

import pytest

from switchctl.flows import FlowRunner, FlowSet
from switchctl.flows.hooks import DialContext, TransferredDial
from switchctl.switch.call import (
    Call,
    CallGone,
    DialOutcome,
    DialResult,
    DialSpec,
    DialTarget,
)

from .fakecall import ScriptedCall, check_texts
from .test_flows_prepaid import RecordingBilling


class FakeTransfers:
    """A CallTransfers answering from a script of TransferredDial (or an exception to raise)."""

    def __init__(self, *answers: TransferredDial | BaseException) -> None:
        self._answers = list(answers)
        self.calls: list[tuple[Call, DialSpec, DialContext]] = []

    async def dial(self, call: Call, spec: DialSpec, context: DialContext) -> TransferredDial:
        self.calls.append((call, spec, context))
        answer = self._answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


ANSWERED = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", DialTarget("phone", "1001"), "peer-b",
                      1_700_000_000_000_000, 1_700_000_042_000_000)

DESK = """
flow: desk
numbers: ["9000"]
nodes:
  hello: {type: answer, next: who}
  who: {type: set, vars: {customer: "C-${caller}"}, next: menu}
  menu:
    type: menu
    greeting: ivr/menu
    on: {"1": ring, timeout: ring, invalid: ring}
  ring:
    type: dial
    to: [{phone: "1001"}]
    next: after
    busy: busy
    failed: sorry
  after: {type: set, vars: {summary: "${var.dial_transfers}/${var.data_ticket}/${var.data_customer}"}, next: bye}
  busy: {type: play, prompts: [ivr/busy], next: bye}
  sorry: {type: play, prompts: [ivr/sorry], next: bye}
  bye: {type: hangup}
"""

SALES = """
flow: sales
numbers: ["9100"]
nodes:
  greet: {type: play, prompts: [ivr/sales], next: bye}
  bye: {type: hangup}
"""


def flows_of(tmp_path, *texts) -> FlowSet:
    result = check_texts(tmp_path, *texts, known_gateways={"upstream"})
    assert result.ok, result.report()
    return result.flows


async def run(flows: FlowSet, call: ScriptedCall, **kw):
    match = flows.match(call.info.destination)
    assert match is not None
    flow, captures = match
    return await FlowRunner(flows, site_values={}, lists={}, **kw).run(call, flow, captures)


async def test_dial_goes_through_the_hook_with_the_flows_context(tmp_path):
    flows = flows_of(tmp_path, DESK)
    transfers = FakeTransfers(TransferredDial(ANSWERED, transfers=2, data={"ticket": "T-7", "customer": "C-555"}))
    call = ScriptedCall(["1"], caller="555")
    trace = await run(flows, call, transfers=transfers)
    assert "dial" not in call.names()  # the feature dials, not the runner
    [(got_call, spec, context)] = transfers.calls
    assert got_call is call
    assert spec.groups == ((DialTarget("phone", "1001"),),)
    assert context == DialContext(flow="desk", node="ring", path=("hello", "who", "menu", "ring"),
                                  variables={"customer": "C-555"}, feature_codes=True)
    assert trace.path == ["hello", "who", "menu", "ring", "after", "bye"]
    assert trace.variables["summary"] == "2/T-7/C-555"  # data comes back as data_<key>
    assert trace.variables["dial_peer"] == "peer-b" and trace.variables["dial_talk_ms"] == "42000"


async def test_a_second_dial_gets_the_call_data_not_the_first_dials_results(tmp_path):
    # The fallback dial after a failed one: its parties' call data is the caller's, not how the first
    # dial went nor the data_* copies that dial brought back (seen on a real FreeSWITCH as
    # switchctl_data_data_caller_number=... on the second dial's leg).
    flows = flows_of(tmp_path, DESK.replace("  busy: {type: play, prompts: [ivr/busy], next: bye}",
                                            "  busy: {type: dial, to: [{phone: \"1009\"}], next: bye, failed: bye}"))
    transfers = FakeTransfers(
        TransferredDial(DialResult(DialOutcome.BUSY, "USER_BUSY"), data={"caller_number": "555", "customer": "C-555"}),
        TransferredDial(ANSWERED))
    await run(flows, ScriptedCall(["1"], caller="555"), transfers=transfers)
    first, second = (context for _, _, context in transfers.calls)
    assert first.variables == second.variables == {"customer": "C-555"}


async def test_transfer_false_turns_feature_codes_off(tmp_path):
    flows = flows_of(tmp_path, DESK.replace("    next: after\n", "    transfer: false\n    next: after\n"))
    transfers = FakeTransfers(TransferredDial(ANSWERED))
    await run(flows, ScriptedCall(["1"]), transfers=transfers)
    assert transfers.calls[0][2].feature_codes is False


@pytest.mark.parametrize(("outcome", "cause", "path_end"), [
    ("busy", "USER_BUSY", ["busy", "bye"]),
    ("no_answer", "NO_ANSWER", ["sorry", "bye"]),  # no branch: falls back to failed
    ("failed", "NORMAL_TEMPORARY_FAILURE", ["sorry", "bye"]),
])
async def test_a_failed_transferable_dial_takes_the_nodes_failure_branch(tmp_path, outcome, cause, path_end):
    flows = flows_of(tmp_path, DESK)
    transfers = FakeTransfers(TransferredDial(DialResult(DialOutcome(outcome), cause), transfers=1))
    trace = await run(flows, ScriptedCall(["1"]), transfers=transfers)
    assert trace.steps[3] == ("desk", "ring", outcome)
    assert trace.path[4:] == path_end
    assert trace.variables["dial_outcome"] == outcome and trace.variables["dial_cause"] == cause
    assert trace.variables["dial_transfers"] == "1"


async def test_the_caller_ending_the_last_bridge_ends_the_run(tmp_path):
    flows = flows_of(tmp_path, DESK)
    hung_up = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", peer_uuid="peer-c", caller_hung_up=True)
    trace = await run(flows, ScriptedCall(["1"]), transfers=FakeTransfers(TransferredDial(hung_up, transfers=1)))
    assert trace.result == "caller_hangup" and trace.path[-1] == "ring"


async def test_the_caller_hanging_up_while_it_rings_ends_the_run(tmp_path):
    flows = flows_of(tmp_path, DESK)
    trace = await run(flows, ScriptedCall(["1"]), transfers=FakeTransfers(CallGone("ORIGINATOR_CANCEL")))
    assert trace.result == "caller_hangup" and trace.cause == "ORIGINATOR_CANCEL"
    assert trace.steps[-1] == ("desk", "ring", "caller_hangup")


async def test_a_blind_transfer_to_a_flow_continues_there(tmp_path):
    flows = flows_of(tmp_path, DESK, SALES)
    moved = TransferredDial(DialResult(DialOutcome.ANSWERED, "TRANSFERRED", peer_uuid="peer-b"),
                            transfers=1, flow="sales")
    call = ScriptedCall(["1"])
    trace = await run(flows, call, transfers=FakeTransfers(moved))
    assert trace.steps[3:] == [("desk", "ring", "flow"), ("sales", "greet", "next"), ("sales", "bye", "hangup")]
    assert call.played()[-1] == "ivr/sales"


async def test_a_jump_to_a_flow_that_is_not_loaded_is_a_flow_error(tmp_path):
    flows = flows_of(tmp_path, DESK)
    moved = TransferredDial(DialResult(DialOutcome.ANSWERED, "TRANSFERRED"), transfers=1, flow="nowhere")
    call = ScriptedCall(["1"])
    trace = await run(flows, call, transfers=FakeTransfers(moved))
    assert trace.result == "error" and "flow 'nowhere' is not loaded" in trace.error
    assert call.ops[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")


async def test_without_transfers_a_dial_is_a_plain_call_dial(tmp_path):
    flows = flows_of(tmp_path, DESK)
    call = ScriptedCall(["1"], dials=["answered"])
    trace = await run(flows, call)
    assert "dial" in call.names()
    assert trace.variables["summary"] == "0//"  # no data_ keys: empty


PAID = """
flow: paid
numbers: ["9000"]
nodes:
  auth: {type: prepaid, account: "${caller}", destination: "123", next: ring, insufficient_funds: bye}
  ring: {type: dial, to: [{gateway: upstream, number: "123"}], next: bye, failed: bye}
  bye: {type: hangup}
"""


async def test_a_paid_dial_bypasses_the_transfer_feature(tmp_path):
    flows = flows_of(tmp_path, PAID)
    transfers = FakeTransfers()
    billing = RecordingBilling()
    call = ScriptedCall(dials=["answered"])
    trace = await run(flows, call, transfers=transfers, billing=billing)
    assert transfers.calls == []
    assert "dial" in call.names()
    assert billing.names() == ["authorize", "on_answer", "on_dial_end"]
    assert trace.variables["dial_transfers"] == "0"


async def test_a_dial_without_targets_never_reaches_the_feature(tmp_path):
    flows = flows_of(tmp_path, """
flow: empty
numbers: ["9000"]
nodes:
  ring: {type: dial, to: [{phone: "${chan.nobody}"}], next: bye, failed: bye}
  bye: {type: hangup}
""")
    transfers = FakeTransfers()
    trace = await run(flows, ScriptedCall(), transfers=transfers)
    assert transfers.calls == [] and trace.variables["dial_cause"] == "INVALID_NUMBER_FORMAT"


# -- conference -----------------------------------------------------------------------------------

ROOM = """
flow: room
numbers: ["9000"]
nodes:
  pick: {type: collect, max_digits: 3, var: room, next: join, on: {timeout: bye, invalid: bye}}
  join: {type: conference, room: "team-${var.room}", next: after}
  after: {type: play, prompts: [ivr/goodbye], next: bye}
  bye: {type: hangup}
"""


async def test_conference_node_joins_the_rendered_room_and_continues_when_taken_out(tmp_path):
    flows = flows_of(tmp_path, ROOM)
    call = ScriptedCall(["42"])
    trace = await run(flows, call)
    assert ("conference", "team-42") in call.ops
    assert trace.path == ["pick", "join", "after", "bye"] and trace.steps[1] == ("room", "join", "next")


async def test_a_hangup_in_the_conference_ends_the_run(tmp_path):
    flows = flows_of(tmp_path, ROOM)
    trace = await run(flows, ScriptedCall(["42"], hangup_at=("conference", 1)))
    assert trace.result == "caller_hangup" and trace.steps[-1] == ("room", "join", "caller_hangup")


async def test_a_rendered_room_that_is_not_a_room_name_is_a_flow_error(tmp_path):
    flows = flows_of(tmp_path, ROOM.replace('"team-${var.room}"', '"${chan.room}"'))
    call = ScriptedCall(["42"], variables={"room": "x@default"})
    trace = await run(flows, call)
    assert trace.result == "error" and "is not a room name" in trace.error
    assert "conference" not in call.names()


def test_conference_check_errors(tmp_path):
    result = check_texts(tmp_path, """
flow: bad
numbers: ["9000"]
nodes:
  a: {type: conference, next: b}
  b: {type: conference, room: "sales@default", next: c}
  c: {type: conference, room: "x-${var.nope}", nxt: d}
  d: {type: hangup}
""")
    assert result.report() == (
        "flow0.yaml:5:3: conference 'a' is missing required key 'room'\n"
        "flow0.yaml:6:31: conference 'b': room 'sales@default' may only use letters, digits, '_', '.' and '-' "
        "(at most 64)\n"
        "flow0.yaml:7:31: conference 'c': unknown flow variable '${var.nope}'; no 'set' or collect 'var' defines it\n"
        "flow0.yaml:7:48: conference 'c' has unknown key 'nxt' (did you mean 'next'?)\n"
    )


def test_dial_transfer_must_be_a_boolean(tmp_path):
    result = check_texts(tmp_path, """
flow: bad
numbers: ["9000"]
nodes:
  ring: {type: dial, to: [{phone: "1001"}], transfer: "no", next: bye, failed: bye}
  bye: {type: hangup}
""")
    assert "dial 'ring': 'transfer' must be true or false, got 'no'" in result.report()


def test_data_variables_are_known_only_after_a_dial(tmp_path):
    result = check_texts(tmp_path, """
flow: nodial
numbers: ["9000"]
nodes:
  s: {type: set, vars: {x: "${var.data_ticket}"}, next: bye}
  bye: {type: hangup}
""")
    assert "unknown flow variable '${var.data_ticket}'" in result.report()
