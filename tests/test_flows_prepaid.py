"""The `prepaid` flow node and the billed `dial` after it, against a recording fake CallBilling."""

from __future__ import annotations

import pytest

from switchctl.config.yamlsrc import load_text
from switchctl.flows import FlowRunner, FlowSet
from switchctl.flows.hooks import Authorization, AuthorizeOutcome, PrepaidRequest
from switchctl.flows.parse import parse_flow
from switchctl.switch.call import Call, DialAnswer, DialOutcome, DialResult, DialTarget

from .fakecall import ScriptedCall, check_texts


class RecordingBilling:
    """A CallBilling that answers from a script and records every call made to it."""

    def __init__(self, *answers: AuthorizeOutcome | Authorization) -> None:
        self._answers = list(answers)
        self.events: list[tuple] = []
        self.issued = 0

    async def authorize(self, call: Call, request: PrepaidRequest) -> Authorization:
        self.events.append(("authorize", request))
        answer = self._answers.pop(0) if self._answers else AuthorizeOutcome.OK
        if isinstance(answer, Authorization):
            return answer
        self.issued += 1
        if answer is AuthorizeOutcome.OK:
            return Authorization(answer, ref=f"r{self.issued}", max_seconds=120,
                                 dial_variables={"switchctl_reservation": f"r{self.issued}"})
        return Authorization(answer, detail="scripted refusal")

    async def on_answer(self, call: Call, auth: Authorization, answer: DialAnswer) -> None:
        self.events.append(("on_answer", auth.ref, answer.peer_uuid, answer.answered_at_us))

    async def on_dial_end(self, call: Call, auth: Authorization, result: DialResult | None) -> None:
        self.events.append(("on_dial_end", auth.ref, result.outcome.value if result else None))

    async def release(self, call: Call, auth: Authorization) -> None:
        self.events.append(("release", auth.ref))

    def names(self) -> list[str]:
        return [e[0] for e in self.events]


PAID = """
flow: paid
patterns: ['^0(\\d+)$']
nodes:
  auth:
    type: prepaid
    account: "${caller}"
    destination: "${1}"
    next: ring
    insufficient_funds: broke
    no_rate: no_rate
  ring:
    type: dial
    to: [{gateway: upstream, number: "00${1}"}]
    next: bye
    failed: sorry
  broke: {type: play, prompts: [ivr/broke], next: bye}
  no_rate: {type: play, prompts: [ivr/no_rate], next: bye}
  sorry: {type: play, prompts: [ivr/sorry], next: bye}
  bye: {type: hangup}
"""

CARD = """
flow: card
numbers: ["8000"]
nodes:
  pin: {type: collect, prompt: ivr/pin, min_digits: 4, max_digits: 4, var: pin, next: number, on: {timeout: bye, invalid: bye}}
  number: {type: collect, prompt: ivr/number, max_digits: 15, var: number, next: auth, on: {timeout: bye, invalid: bye}}
  auth:
    type: prepaid
    account: "card-${var.pin}"
    destination: "${var.number}"
    pin: "${var.pin}"
    next: ring
    insufficient_funds: broke
    bad_pin: bad_pin
    locked: locked
  ring: {type: dial, to: [{gateway: upstream, number: "${var.number}"}], next: bye, failed: bye}
  broke: {type: hangup, cause: CALL_REJECTED}
  bad_pin: {type: hangup, cause: USER_BUSY}
  locked: {type: hangup, cause: OUTGOING_CALL_BARRED}
  bye: {type: hangup}
"""


def flows_of(tmp_path, *texts) -> FlowSet:
    result = check_texts(tmp_path, *texts, known_gateways={"upstream"})
    assert result.ok, result.report()
    return result.flows


async def run(flows: FlowSet, call: ScriptedCall, billing=None, **kw):
    match = flows.match(call.info.destination)
    assert match is not None
    flow, captures = match
    return await FlowRunner(flows, site_values={}, lists={}, billing=billing, **kw).run(call, flow, captures)


def dial_specs(call: ScriptedCall):
    return [op[1] for op in call.ops if op[0] == "dial"]


async def test_authorized_call_is_billed_through_the_dial(tmp_path):
    billing = RecordingBilling(AuthorizeOutcome.OK)
    call = ScriptedCall(caller="booth-3", destination="04412345", dials=["answered"])
    trace = await run(flows_of(tmp_path, PAID), call, billing)
    assert trace.path == ["auth", "ring", "bye"]
    assert billing.events == [
        ("authorize", PrepaidRequest(account="booth-3", destination="4412345", pin=None)),
        ("on_answer", "r1", "call-1-b", 1_700_000_000_000_000),
        ("on_dial_end", "r1", "answered"),
    ]  # the authorization was used: no release
    (spec,) = dial_specs(call)
    assert spec.variables == {"switchctl_reservation": "r1"} and spec.on_answer is not None
    assert trace.variables["prepaid_outcome"] == "ok" and trace.variables["prepaid_max_seconds"] == "120"


async def test_unanswered_dial_ends_the_authorization_once(tmp_path):
    billing = RecordingBilling()
    trace = await run(flows_of(tmp_path, PAID), ScriptedCall(destination="0123", dials=["busy"]), billing)
    assert trace.path == ["auth", "ring", "sorry", "bye"]
    assert billing.names() == ["authorize", "on_dial_end"] and billing.events[-1] == ("on_dial_end", "r1", "busy")


@pytest.mark.parametrize(("outcome", "node"), [
    (AuthorizeOutcome.INSUFFICIENT_FUNDS, "broke"),
    (AuthorizeOutcome.NO_RATE, "no_rate"),
    (AuthorizeOutcome.NO_ACCOUNT, "broke"),  # no branch: falls back to insufficient_funds
    (AuthorizeOutcome.LOCKED, "broke"),
    (AuthorizeOutcome.BAD_PIN, "broke"),  # no pin asked, yet the account wants one
])
async def test_refusals_take_their_branch_or_insufficient_funds(tmp_path, outcome, node):
    billing = RecordingBilling(outcome)
    call = ScriptedCall(destination="0123")
    trace = await run(flows_of(tmp_path, PAID), call, billing)
    assert trace.steps[0] == ("paid", "auth", outcome.value)
    assert trace.path == ["auth", node, "bye"] and "dial" not in call.names()
    assert billing.names() == ["authorize"]  # nothing reserved, nothing to release
    assert trace.variables["prepaid_outcome"] == outcome.value and trace.variables["prepaid_max_seconds"] == "0"


@pytest.mark.parametrize(("outcome", "cause"), [
    (AuthorizeOutcome.OK, "NORMAL_CLEARING"),
    (AuthorizeOutcome.BAD_PIN, "USER_BUSY"),
    (AuthorizeOutcome.LOCKED, "OUTGOING_CALL_BARRED"),
    (AuthorizeOutcome.INSUFFICIENT_FUNDS, "CALL_REJECTED"),
    (AuthorizeOutcome.NO_RATE, "CALL_REJECTED"),
])
async def test_calling_card_pin_and_branches(tmp_path, outcome, cause):
    billing = RecordingBilling(outcome)
    call = ScriptedCall(["1234", "0044123"], destination="8000", dials=["answered"])
    trace = await run(flows_of(tmp_path, CARD), call, billing)
    assert billing.events[0] == ("authorize", PrepaidRequest("card-1234", "0044123", "1234"))
    assert trace.cause == cause


async def test_flow_ending_without_dialling_releases_the_authorization(tmp_path):
    flows = flows_of(tmp_path, """
flow: nodial
numbers: ["9000"]
nodes:
  auth: {type: prepaid, account: "${caller}", destination: "123", next: bye, insufficient_funds: bye}
  bye: {type: hangup}
""")
    billing = RecordingBilling()
    trace = await run(flows, ScriptedCall(), billing)
    assert trace.result == "hangup" and billing.names() == ["authorize", "release"]


async def test_caller_hangup_before_the_dial_releases(tmp_path):
    flows = flows_of(tmp_path, PAID.replace("next: ring\n", "next: wait\n").replace(
        "  ring:\n", "  wait: {type: play, prompts: [ivr/wait], next: ring}\n  ring:\n"))
    billing = RecordingBilling()
    trace = await run(flows, ScriptedCall(destination="0123", hangup_at=("play", 1)), billing)
    assert trace.result == "caller_hangup" and billing.events[1:] == [("release", "r1")]


async def test_error_after_authorizing_releases(tmp_path):
    flows = flows_of(tmp_path, PAID.replace("next: ring\n", "next: wait\n").replace(
        "  ring:\n", "  wait: {type: play, prompts: [ivr/wait], next: ring}\n  ring:\n"))
    billing = RecordingBilling()
    call = ScriptedCall(destination="0123", fail_at=("play", 1))
    trace = await run(flows, call, billing)
    assert trace.result == "error" and billing.events[1:] == [("release", "r1")]
    assert call.ops[-1] == ("hangup", "NORMAL_TEMPORARY_FAILURE")


async def test_caller_hangup_while_ringing_ends_the_dial_and_never_releases(tmp_path):
    billing = RecordingBilling()
    call = ScriptedCall(destination="0123", hangup_at=("dial", 1))
    trace = await run(flows_of(tmp_path, PAID), call, billing)
    assert trace.result == "caller_hangup"
    assert billing.events[1:] == [("on_dial_end", "r1", None)]  # exactly once, and no release after it


async def test_dial_failing_on_the_switch_still_ends_the_authorization(tmp_path):
    billing = RecordingBilling()
    trace = await run(flows_of(tmp_path, PAID), ScriptedCall(destination="0123", fail_at=("dial", 1)), billing)
    assert trace.result == "error" and billing.events[1:] == [("on_dial_end", "r1", None)]


async def test_caller_ending_the_paid_bridge(tmp_path):
    billing = RecordingBilling()
    ended = DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", DialTarget("gateway", "00123", "upstream"),
                       "peer-1", answered_at_us=5, ended_at_us=9, caller_hung_up=True)
    trace = await run(flows_of(tmp_path, PAID), ScriptedCall(destination="0123", dials=[ended]), billing)
    assert trace.result == "caller_hangup"
    assert billing.events[1:] == [("on_answer", "r1", "peer-1", 5), ("on_dial_end", "r1", "answered")]


async def test_a_dial_without_targets_uses_up_the_authorization(tmp_path):
    flows = flows_of(tmp_path, """
flow: nowhere
numbers: ["9000"]
nodes:
  clear: {type: set, vars: {number: ""}, next: auth}
  auth: {type: prepaid, account: "${caller}", destination: "1", next: ring, insufficient_funds: bye}
  ring: {type: dial, to: [{gateway: upstream, number: "${var.number}"}], next: bye, failed: bye}
  bye: {type: hangup}
""")
    billing = RecordingBilling()
    call = ScriptedCall()
    await run(flows, call, billing)
    assert "dial" not in call.names()
    assert billing.events[1:] == [("on_dial_end", "r1", "failed")]


async def test_prepaid_without_billing_is_a_flow_error(tmp_path):
    call = ScriptedCall(destination="0123")
    trace = await run(flows_of(tmp_path, PAID), call)
    assert trace.result == "error" and "no billing is configured" in trace.error
    assert call.ops == [("hangup", "NORMAL_TEMPORARY_FAILURE")]


async def test_authorizing_again_releases_the_unused_one(tmp_path):
    flows = flows_of(tmp_path, """
flow: twice
numbers: ["9000"]
nodes:
  a1: {type: prepaid, account: "${caller}", destination: "1", next: a2, insufficient_funds: bye}
  a2: {type: prepaid, account: "${caller}", destination: "2", next: ring, insufficient_funds: bye}
  ring: {type: dial, to: [{phone: "1001"}], next: bye, failed: bye}
  bye: {type: hangup}
""")
    billing = RecordingBilling()
    await run(flows, ScriptedCall(dials=["answered"]), billing)
    assert [e[:2] for e in billing.events] == [
        ("authorize", PrepaidRequest("1000", "1")), ("release", "r1"), ("authorize", PrepaidRequest("1000", "2")),
        ("on_answer", "r2"), ("on_dial_end", "r2"),
    ]


async def test_each_dial_of_a_loop_gets_its_own_authorization(tmp_path):
    flows = flows_of(tmp_path, """
flow: loop
numbers: ["9000"]
nodes:
  auth: {type: prepaid, account: "${caller}", destination: "1", next: ring, insufficient_funds: bye}
  ring: {type: dial, to: [{phone: "1001"}], next: bye, failed: again}
  again: {type: goto, target: auth, max: 1, on: {exhausted: bye}}
  bye: {type: hangup}
""")
    billing = RecordingBilling()
    await run(flows, ScriptedCall(dials=["busy", "busy"]), billing)
    assert [e[:2] for e in billing.events] == [
        ("authorize", PrepaidRequest("1000", "1")), ("on_dial_end", "r1"),
        ("authorize", PrepaidRequest("1000", "1")), ("on_dial_end", "r2"),
    ]


# -- the used-authorization rule ----------------------------------------------------------------

SECOND_DIAL = """
flow: second
numbers: ["9000"]
nodes:
  auth: {type: prepaid, account: "${caller}", destination: "1", next: ring, insufficient_funds: free}
  ring: {type: dial, to: [{phone: "1001"}], next: again, failed: again}
  again: {type: dial, to: [{phone: "2000"}], next: bye, failed: bye}
  free: {type: dial, to: [{phone: "2000"}], next: bye, failed: bye}
  bye: {type: hangup}
"""


def test_check_rejects_a_dial_after_a_used_or_refused_authorization(tmp_path):
    report = check_texts(tmp_path, SECOND_DIAL).report()
    assert report == (
        "flow0.yaml:7:3: dial 'again' can run after a used or refused authorization (auth -next-> ring -next-> "
        "again); a paid dial needs a prepaid node of its own before it\n"
        "flow0.yaml:8:3: dial 'free' can run after a used or refused authorization (auth -insufficient_funds-> "
        "free); a paid dial needs a prepaid node of its own before it\n"
    )


def test_check_accepts_unbilled_dials_before_any_prepaid(tmp_path):
    assert check_texts(tmp_path, """
flow: free
numbers: ["9000"]
nodes:
  ring: {type: dial, to: [{phone: "1001"}], next: again, failed: again}
  again: {type: dial, to: [{phone: "2000"}], next: auth, failed: auth}
  auth: {type: prepaid, account: "${caller}", destination: "1", next: paid, insufficient_funds: bye}
  paid: {type: dial, to: [{phone: "2000"}], next: bye, failed: bye}
  bye: {type: hangup}
""").ok


def _unchecked(text: str) -> FlowSet:
    flow = parse_flow(load_text(text, "x.yaml"), "x.yaml", [])
    assert flow is not None
    return FlowSet([flow])


@pytest.mark.parametrize(("authorization", "path"), [
    (AuthorizeOutcome.OK, ["auth", "ring", "again"]),
    (AuthorizeOutcome.INSUFFICIENT_FUNDS, ["auth", "free"]),
])
async def test_runtime_refuses_a_dial_nobody_pays_for(authorization, path):
    flows = _unchecked(SECOND_DIAL)
    billing = RecordingBilling(authorization)
    call = ScriptedCall(dials=["answered", "answered"])
    trace = await FlowRunner(flows, site_values={}, lists={}, billing=billing).run(call, flows["second"])
    assert trace.path == path and trace.result == "error"
    assert "a paid dial needs a prepaid node of its own" in trace.error
    assert len(dial_specs(call)) == len(path) - 2  # the second dial never rang


async def test_unbilled_dial_when_no_prepaid_ran(tmp_path):
    flows = flows_of(tmp_path, """
flow: free
numbers: ["9000"]
nodes:
  ring: {type: dial, to: [{phone: "1001"}], next: bye, failed: bye}
  bye: {type: hangup}
""")
    billing = RecordingBilling()
    call = ScriptedCall(dials=["answered"])
    trace = await run(flows, call, billing)
    assert trace.result == "hangup" and billing.events == []
    (spec,) = dial_specs(call)
    assert spec.on_answer is None and spec.variables == {}
