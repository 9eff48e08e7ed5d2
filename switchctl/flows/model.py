"""The validated form of a call flow: nodes, their outcome edges, and the set of all flows.

Parsing (`parse.py`) builds these from YAML; the checker (`check.py`, `graph.py`) proves them; the
runtime (`runtime.py`) walks them. Every node keeps the marks of what it was built from, so each
diagnostic can point at `file:line:column`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from switchctl.config.yamlsrc import Mark

from .template import Template
from .timecond import DateRange, TimeRange

DEFAULT_MAX_VISITS = 10  # menu/collect entries per call before they take their exit outcome


@dataclass(frozen=True, slots=True)
class Diagnostic:
    mark: Mark
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.mark}: {prefix}{self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.mark.file, self.mark.line, self.mark.column, self.message)


@dataclass(frozen=True, slots=True)
class Edge:
    """One outcome of a node and the node it leads to."""

    outcome: str  # "next", a menu key, "timeout", "invalid", "exhausted", "rule 2", "default"...
    target: str  # a node id in the same flow
    mark: Mark  # where the target is written
    section: bool = False  # the edge of a `call` node into its section (not a plain successor)


@dataclass(frozen=True, slots=True)
class Located:
    """A value of the flow file together with where it was written."""

    value: str
    mark: Mark


@dataclass
class Node:
    id: str
    mark: Mark  # where the node's id is written
    edges: dict[str, Edge] = field(default_factory=dict)
    # Everything the checker verifies beyond the graph, gathered while parsing:
    templates: list[tuple[Template, Mark]] = field(default_factory=list)
    prompts: list[tuple[Template, Mark]] = field(default_factory=list)
    list_refs: list[Located] = field(default_factory=list)
    defines: list[Located] = field(default_factory=list)  # flow variables this node sets
    regex_groups: int = 0  # most capture groups of the regexes in this node

    kind: ClassVar[str] = ""

    def target(self, outcome: str) -> str | None:
        edge = self.edges.get(outcome)
        return edge.target if edge else None

    # Outcomes that, when the flow does not name a branch for them, take another outcome's branch
    # (a dial's `busy` falls back to `failed`). The check requires the fallback branch itself.
    fallbacks: ClassVar[Mapping[str, str]] = {}

    def edge_for(self, outcome: str) -> Edge | None:
        """The edge the runtime follows for `outcome`: its own branch, else its fallback's."""
        edge = self.edges.get(outcome)
        if edge is None and outcome in self.fallbacks:
            edge = self.edges.get(self.fallbacks[outcome])
        return edge

    @property
    def exit_outcome(self) -> str | None:
        """The outcome a bounded node takes once its budget is spent (None: not a bounded node)."""
        return None

    @property
    def budgeted_outcomes(self) -> frozenset[str]:
        """Outcomes that each consume one unit of the node's budget (see graph.check_loops)."""
        return frozenset()


@dataclass
class AnswerNode(Node):
    kind: ClassVar[str] = "answer"


@dataclass
class PlayNode(Node):
    prompt_list: tuple[Template, ...] = ()
    barge_in: bool = False  # before a menu/collect: its prompts lead that node's first prompt
    kind: ClassVar[str] = "play"


@dataclass
class SayNode(Node):
    value: Template | None = None
    say_kind: str = "number"
    language: str = "en"
    kind: ClassVar[str] = "say"


class _BoundedInput:
    """Menu and collect: entered at most `max_visits` times per call, then they take their exit."""

    edges: dict[str, Edge]

    @property
    def exit_outcome(self) -> str | None:
        return "exhausted" if "exhausted" in self.edges else "timeout"

    @property
    def budgeted_outcomes(self) -> frozenset[str]:
        return frozenset(o for o in self.edges if o != self.exit_outcome)


@dataclass
class CollectNode(_BoundedInput, Node):
    prompt_list: tuple[Template, ...] = ()
    min_digits: int = 1
    max_digits: int = 1
    timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    terminators: str = "#"
    pattern: str | None = None
    tries: int = 3
    invalid_prompt: Template | None = None
    var: str | None = None
    max_visits: int = DEFAULT_MAX_VISITS
    kind: ClassVar[str] = "collect"


@dataclass
class MenuNode(_BoundedInput, Node):
    greeting: Template | None = None
    short_greeting: Template | None = None
    invalid_sound: Template | None = None
    exit_sound: Template | None = None
    timeout: float = 5.0
    inter_digit_timeout: float = 2.0
    max_failures: int = 3
    max_timeouts: int = 3
    digit_len: int = 1
    direct_dial: re.Pattern[str] | None = None
    options: tuple[str, ...] = ()  # the DTMF keys of `on:`
    max_visits: int = DEFAULT_MAX_VISITS
    kind: ClassVar[str] = "menu"


@dataclass
class SetNode(Node):
    values: tuple[tuple[str, Template], ...] = ()
    channel: bool = False
    kind: ClassVar[str] = "set"


@dataclass
class RouteRule:
    mark: Mark
    caller: re.Pattern[str] | None = None
    destination: re.Pattern[str] | None = None
    times: tuple[TimeRange, ...] = ()
    days: frozenset[int] | None = None
    dates: tuple[DateRange, ...] = ()
    in_list: str | None = None
    not_in_list: str | None = None
    holidays: tuple[str, ...] = ()  # site holiday calendars; the rule holds on a day of any of them
    timezone: str | None = None


@dataclass
class RouteNode(Node):
    rules: tuple[RouteRule, ...] = ()  # rule i (0-based) leads to edges[f"rule {i + 1}"]
    timezone: str | None = None
    holiday_refs: list[Located] = field(default_factory=list)
    kind: ClassVar[str] = "route"


@dataclass
class TransferNode(Node):
    flow: Located | None = None  # run another flow in-process
    extension: Template | None = None  # or hand the call back to the switch dialplan
    context: Template | None = None
    kind: ClassVar[str] = "transfer"


@dataclass
class HangupNode(Node):
    cause: str = "NORMAL_CLEARING"
    kind: ClassVar[str] = "hangup"


@dataclass
class GotoNode(Node):
    max: int | None = None  # passes to `target` at most this many times per call
    kind: ClassVar[str] = "goto"

    @property
    def exit_outcome(self) -> str | None:
        return "exhausted" if self.max is not None else None

    @property
    def budgeted_outcomes(self) -> frozenset[str]:
        return frozenset({"target"}) if self.max is not None else frozenset()


@dataclass
class CallNode(Node):
    section: str = ""
    kind: ClassVar[str] = "call"


@dataclass
class ReturnNode(Node):
    kind: ClassVar[str] = "return"


@dataclass(frozen=True, slots=True)
class DialTargetSpec:
    """One entry of a dial node's `to:` list, before its templates are rendered."""

    kind: str  # "phone", "gateway" or "uri" (DialTarget.kind)
    address: Template  # the extension, the number sent to the gateway, or the SIP URI
    mark: Mark
    gateway: str | None = None  # the site's gateway name (kind "gateway")
    timeout: float | None = None  # overrides the group's ring time


@dataclass(frozen=True, slots=True)
class DialGroupSpec:
    """Targets that ring at the same time; groups are tried one after the other."""

    targets: tuple[DialTargetSpec, ...]
    mark: Mark
    timeout: float | None = None  # overrides the node's ring time for this group


DIAL_OUTCOMES = ("next", "busy", "no_answer", "rejected", "failed")  # "next": answered, call ended
DIAL_VARIABLES = ("dial_outcome", "dial_cause", "dial_talk_ms", "dial_peer", "dial_transfers")
# The call data a transferable dial gives back (TransferredDial.data) lands in flow variables named
# `data_<key>`: a console's PATCH can add keys but never overwrite the flow's own variables.
DATA_VARIABLE_PREFIX = "data_"


@dataclass
class DialNode(Node):
    groups: tuple[DialGroupSpec, ...] = ()
    timeout: float = 30.0
    ringback: Template | None = None  # None: the node's `ringback_none` or the Call default
    ringback_none: bool = False  # `ringback: none`: the caller hears the far end's early media
    caller_id_number: Template | None = None
    caller_id_name: Template | None = None
    gateway_refs: list[Located] = field(default_factory=list)
    # `transfer: false` turns the answering party's DTMF feature codes off for this dial (a transfer
    # through the web API stays possible). Only meaningful when the controller runs transfers.
    feature_codes: bool = True
    kind: ClassVar[str] = "dial"
    fallbacks: ClassVar[Mapping[str, str]] = {"busy": "failed", "no_answer": "failed", "rejected": "failed"}


PREPAID_OUTCOMES = ("next", "insufficient_funds", "no_rate", "no_account", "bad_pin", "locked")
PREPAID_VARIABLES = ("prepaid_outcome", "prepaid_max_seconds")


@dataclass
class PrepaidNode(Node):
    account: Template | None = None
    destination: Template | None = None
    pin: Template | None = None
    kind: ClassVar[str] = "prepaid"
    # `bad_pin` is required when `pin` is set; without a pin it can only come from an account
    # that wants one, which is as good as refused.
    fallbacks: ClassVar[Mapping[str, str]] = {
        "no_rate": "insufficient_funds", "no_account": "insufficient_funds",
        "locked": "insufficient_funds", "bad_pin": "insufficient_funds",
    }


NUMBER_OUTCOMES = ("next", "blocked", "invalid_number", "no_route")  # besides the plan's routes
NUMBER_VARIABLES = ("number_route", "number_out", "number_blocked_by", "number_blocked_entry")


@dataclass
class NumberNode(Node):
    """Number analysis and screening: the outcome is the destination's route in a site plan."""

    plan: Located | None = None
    number: Template | None = None  # the dialled number (default `${destination}`)
    caller: Template | None = None  # the caller screened (default `${caller}`)
    tenant: Template | None = None  # whose black/white lists apply (default `default`)
    routes: tuple[Located, ...] = ()  # the route names of `on:`, checked against the plan
    kind: ClassVar[str] = "number"
    fallbacks: ClassVar[Mapping[str, str]] = {"invalid_number": "no_route"}

    def edge_for(self, outcome: str) -> Edge | None:
        """A route without its own branch under `on:` takes `next`."""
        edge = Node.edge_for(self, outcome)
        if edge is None and outcome not in NUMBER_OUTCOMES:
            edge = self.edges.get("next")
        return edge


VOICEMAIL_OUTCOMES = ("next", "no_mailbox")
VOICEMAIL_VARIABLES = ("voicemail_outcome", "voicemail_message")
VOICEMAIL_CHECK_OUTCOMES = ("next", "bad_pin", "locked")
VOICEMAIL_CHECK_VARIABLES = ("voicemail_new", "voicemail_heard")

# FreeSWITCH's stock voicemail sounds (sounds/en/us/callie/voicemail): relative names the switch
# resolves against its own sound prefix unless a site sound folder has a file of that name.
VM_PERSON = "voicemail/vm-person"  # "the person at extension"
VM_NOT_AVAILABLE = "voicemail/vm-not_available"  # "is not available"
VM_RECORD = "voicemail/vm-record_message"  # "record your message at the tone, press # when done"
VM_ENTER_PASS = "voicemail/vm-enter_pass"  # "please enter your password, then press #"
VM_FAIL_AUTH = "voicemail/vm-fail_auth"  # "login incorrect"
VM_YOU_HAVE = "voicemail/vm-you_have"
VM_NEW = "voicemail/vm-new"
VM_MESSAGES = "voicemail/vm-messages"
VM_MESSAGE_MENU = "voicemail/vm-msg_menu"  # "1 next message, 7 delete, 9 save" (site provides)
VM_DELETED = "voicemail/vm-deleted"
VM_SAVED = "voicemail/vm-saved"
VM_NO_MORE = "voicemail/vm-no_more_messages"
VM_GOODBYE = "voicemail/vm-goodbye"


@dataclass
class VoicemailNode(Node):
    """Leave a message: the mailbox's greeting (or `greeting`, else the stock announcement with the
    number's digits), then a recording stored in the mailbox and e-mailed to its owner."""

    mailbox: Template | None = None
    greeting: tuple[Template, ...] = ()  # replaces the stock announcement for mailboxes without one
    max_seconds: float = 120.0
    silence_seconds: float = 5.0
    kind: ClassVar[str] = "voicemail"


@dataclass
class VoicemailCheckNode(Node):
    """Listen to a mailbox: PIN (`tries`), the count of new messages, then each message with its
    menu (1 next, 7 delete, 9 save; nothing pressed = next)."""

    mailbox: Template | None = None
    tries: int = 3
    kind: ClassVar[str] = "voicemail_check"
    fallbacks: ClassVar[Mapping[str, str]] = {"locked": "bad_pin"}


CONFERENCE_ROOM = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # no '@' (a FreeSWITCH profile), no spaces


@dataclass
class ConferenceNode(Node):
    """Put the call into conference `room` until a feature takes it out ("left": `next`); a hangup
    in the room ends the run like anywhere else."""

    room: Template | None = None
    kind: ClassVar[str] = "conference"


RECORD_CALL_ACTIONS = ("start", "pause", "resume", "stop")
RECORD_CALL_OUTCOMES = ("next", "failed")
RECORD_CALL_VARIABLES = ("recording_path",)


@dataclass
class RecordCallNode(Node):
    """Start, pause, resume or stop the call's whole-call recording (features/recording). A start
    sets `recording_path`; the recording goes on across dials and transfers until stopped or the
    call ends. `failed` (the switch refused a start, pause...) falls back to `next`: a recording is
    not worth dropping a call for, unless the flow says so."""

    action: str = "start"
    name: Template | None = None  # the file's name (start); default `${call.uuid}`
    kind: ClassVar[str] = "record_call"
    fallbacks: ClassVar[Mapping[str, str]] = {"failed": "next"}


NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls
    for cls in (AnswerNode, PlayNode, SayNode, CollectNode, MenuNode, SetNode, RouteNode,
                TransferNode, HangupNode, GotoNode, CallNode, ReturnNode, DialNode, PrepaidNode,
                NumberNode, VoicemailNode, VoicemailCheckNode, ConferenceNode, RecordCallNode)
}


@dataclass
class Flow:
    name: str
    file: str
    mark: Mark  # where the name is written
    start: str
    nodes: dict[str, Node]
    numbers: tuple[Located, ...] = ()
    patterns: tuple[tuple[re.Pattern[str], Mark], ...] = ()

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, {self.file!r}, {len(self.nodes)} nodes)"


class FlowSet:
    """All usable flows of a site, and which destination each one answers."""

    def __init__(self, flows: Sequence[Flow] = ()) -> None:
        self._flows: dict[str, Flow] = {}
        self._numbers: dict[str, Flow] = {}
        self._patterns: list[tuple[re.Pattern[str], Flow]] = []
        for flow in flows:
            if flow.name in self._flows:
                raise ValueError(f"flow '{flow.name}' is defined twice")
            self._flows[flow.name] = flow
            for number in flow.numbers:
                if number.value in self._numbers:
                    raise ValueError(f"number '{number.value}' is claimed by two flows")
                self._numbers[number.value] = flow
            self._patterns.extend((pattern, flow) for pattern, _ in flow.patterns)

    def match(self, destination: str) -> tuple[Flow, tuple[str, ...]] | None:
        """The flow answering `destination`: exact numbers first, then patterns in file order."""
        flow = self._numbers.get(destination)
        if flow is not None:
            return flow, ()
        for pattern, flow in self._patterns:
            m = pattern.fullmatch(destination)
            if m:
                return flow, tuple(g or "" for g in m.groups())
        return None

    def get(self, name: str) -> Flow | None:
        return self._flows.get(name)

    def __getitem__(self, name: str) -> Flow:
        return self._flows[name]

    def __contains__(self, name: object) -> bool:
        return name in self._flows

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._flows.values())

    def __len__(self) -> int:
        return len(self._flows)

    @property
    def names(self) -> Mapping[str, Flow]:
        return dict(self._flows)
