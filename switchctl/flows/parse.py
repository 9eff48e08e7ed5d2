"""YAML flow file → `Flow`, with a diagnostic for every schema problem (never stopping at the first).

Only what one file can tell is checked here: keys, value types, required keys, regexes, time
conditions, `${...}` syntax, and that input nodes name their `timeout`/`invalid` branches. Graph
properties (dangling, unreachable, loops, sections) are `graph.py`; what needs other files or the
site (prompts, site values, lists, flows) is `check.py`.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Collection
from typing import Any

from switchctl.config.yamlsrc import Mark, YList, YMap

from .model import (
    CONFERENCE_ROOM,
    DIAL_OUTCOMES,
    DIAL_VARIABLES,
    NODE_TYPES,
    NUMBER_OUTCOMES,
    NUMBER_VARIABLES,
    PREPAID_OUTCOMES,
    PREPAID_VARIABLES,
    RECORD_CALL_ACTIONS,
    RECORD_CALL_OUTCOMES,
    RECORD_CALL_VARIABLES,
    VOICEMAIL_CHECK_OUTCOMES,
    VOICEMAIL_CHECK_VARIABLES,
    VOICEMAIL_OUTCOMES,
    VOICEMAIL_VARIABLES,
    AnswerNode,
    CallNode,
    CollectNode,
    ConferenceNode,
    Diagnostic,
    DialGroupSpec,
    DialNode,
    DialTargetSpec,
    Edge,
    Flow,
    GotoNode,
    HangupNode,
    Located,
    MenuNode,
    Node,
    NumberNode,
    PlayNode,
    PrepaidNode,
    RecordCallNode,
    ReturnNode,
    RouteNode,
    RouteRule,
    SayNode,
    SetNode,
    TransferNode,
    VoicemailCheckNode,
    VoicemailNode,
)
from .template import Template, TemplateError, parse_template
from .timecond import parse_dates, parse_days, parse_time_ranges

TOP_KEYS = ("flow", "description", "numbers", "patterns", "start", "nodes")
INPUT_OUTCOMES = ("timeout", "invalid", "exhausted")
_DTMF = re.compile(r"[0-9*#]+")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Hangup causes as FreeSWITCH spells them (switch_channel.c CAUSE_CHART); Asterisk maps onto these.
HANGUP_CAUSES = frozenset("""
UNSPECIFIED UNALLOCATED_NUMBER NO_ROUTE_TRANSIT_NET NO_ROUTE_DESTINATION CHANNEL_UNACCEPTABLE
CALL_AWARDED_DELIVERED NORMAL_CLEARING USER_BUSY NO_USER_RESPONSE NO_ANSWER SUBSCRIBER_ABSENT
CALL_REJECTED NUMBER_CHANGED REDIRECTION_TO_NEW_DESTINATION EXCHANGE_ROUTING_ERROR
DESTINATION_OUT_OF_ORDER INVALID_NUMBER_FORMAT FACILITY_REJECTED RESPONSE_TO_STATUS_ENQUIRY
NORMAL_UNSPECIFIED NORMAL_CIRCUIT_CONGESTION NETWORK_OUT_OF_ORDER NORMAL_TEMPORARY_FAILURE
SWITCH_CONGESTION ACCESS_INFO_DISCARDED REQUESTED_CHAN_UNAVAIL PRE_EMPTED FACILITY_NOT_SUBSCRIBED
OUTGOING_CALL_BARRED INCOMING_CALL_BARRED BEARERCAPABILITY_NOTAUTH BEARERCAPABILITY_NOTAVAIL
SERVICE_UNAVAILABLE BEARERCAPABILITY_NOTIMPL CHAN_NOT_IMPLEMENTED FACILITY_NOT_IMPLEMENTED
SERVICE_NOT_IMPLEMENTED INVALID_CALL_REFERENCE INCOMPATIBLE_DESTINATION INVALID_MSG_UNSPECIFIED
MANDATORY_IE_MISSING MESSAGE_TYPE_NONEXIST WRONG_MESSAGE IE_NONEXIST INVALID_IE_CONTENTS
WRONG_CALL_STATE RECOVERY_ON_TIMER_EXPIRE MANDATORY_IE_LENGTH_ERROR PROTOCOL_ERROR INTERWORKING
ORIGINATOR_CANCEL CRASH SYSTEM_SHUTDOWN LOSE_RACE MANAGER_REQUEST BLIND_TRANSFER
ATTENDED_TRANSFER ALLOTTED_TIMEOUT USER_CHALLENGE MEDIA_TIMEOUT PICKED_OFF USER_NOT_REGISTERED
PROGRESS_TIMEOUT GATEWAY_DOWN
""".split())

# Keys each node type accepts besides `type` (the schema; docs/FLOWS.md documents each).
NODE_KEYS: dict[str, tuple[str, ...]] = {
    "answer": ("next",),
    "play": ("prompts", "barge_in", "next"),
    "say": ("value", "kind", "language", "next"),
    "collect": ("prompt", "min_digits", "max_digits", "timeout", "inter_digit_timeout",
                "terminators", "pattern", "tries", "invalid_prompt", "var", "max_visits",
                "next", "on"),
    "menu": ("greeting", "short_greeting", "invalid_sound", "exit_sound", "timeout",
             "inter_digit_timeout", "max_failures", "max_timeouts", "digit_len", "direct_dial",
             "max_visits", "on"),
    "set": ("vars", "channel", "next"),
    "route": ("rules", "default", "timezone"),
    "transfer": ("flow", "extension", "context"),
    "hangup": ("cause",),
    "goto": ("target", "max", "on"),
    "call": ("section", "next"),
    "return": (),
    "dial": ("to", "sequence", "timeout", "ringback", "caller_id", "transfer", *DIAL_OUTCOMES),
    "prepaid": ("account", "destination", "pin", *PREPAID_OUTCOMES),
    "number": ("plan", "number", "caller", "tenant", "on", *NUMBER_OUTCOMES),
    "voicemail": ("mailbox", "greeting", "max_seconds", "silence_seconds", *VOICEMAIL_OUTCOMES),
    "voicemail_check": ("mailbox", "tries", *VOICEMAIL_CHECK_OUTCOMES),
    "conference": ("room", "next"),
    "record_call": ("action", "name", *RECORD_CALL_OUTCOMES),
}
RULE_KEYS = ("caller", "destination", "time", "days", "dates", "holiday", "in_list", "not_in_list",
             "timezone", "next")
_MISSING = object()


def suggestion(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"'{value}'"


def valid_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class _Fields:
    """Typed reads of one YAML mapping; every problem becomes a diagnostic, never an exception."""

    def __init__(self, diags: list[Diagnostic], m: YMap, what: str, at: Mark) -> None:
        self.diags = diags
        self.m = m
        self.what = what  # e.g. "menu 'main'"
        self.at = at  # where "missing key" problems are reported
        self.allowed: Collection[str] = ()

    def error(self, mark: Mark, message: str) -> None:
        self.diags.append(Diagnostic(mark, message))

    def check_keys(self, allowed: Collection[str]) -> None:
        self.allowed = allowed
        for key in self.m:
            if key not in allowed:
                hint = suggestion(key, allowed) or (
                    f" (known keys: {', '.join(sorted(allowed))})" if allowed else ""
                )
                self.error(self.m.key_mark(key), f"{self.what} has unknown key '{key}'{hint}")

    def _misspelled(self, key: str) -> bool:
        """Is `key` present under a misspelling already reported as "did you mean"?"""
        return any(k not in self.allowed and suggestion(k, self.allowed) == f" (did you mean '{key}'?)"
                   for k in self.m)

    def _raw(self, key: str, required: bool) -> Any:
        if key not in self.m:
            if required and not self._misspelled(key):
                self.error(self.at, f"{self.what} is missing required key '{key}'")
            return _MISSING
        return self.m[key]

    def bad(self, key: str, expected: str) -> None:
        value = self.m[key]
        self.error(self.m.mark_of(key), f"{self.what}: '{key}' must be {expected}, got {_describe(value)}")

    def text(self, key: str, *, required: bool = False, allow_number: bool = False) -> str | None:
        value = self._raw(key, required)
        if value is _MISSING:
            return None
        if allow_number and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value:
            self.bad(key, "text")
            return None
        return value

    def template(self, node: Node, key: str, *, required: bool = False, allow_number: bool = False,
                 value: Any = _MISSING, mark: Mark | None = None) -> Template | None:
        text = self.text(key, required=required, allow_number=allow_number) if value is _MISSING else value
        if text is None:
            return None
        mark = mark or self.m.mark_of(key)
        try:
            tpl = parse_template(text)
        except TemplateError as exc:
            self.error(mark, f"{self.what}: {exc}")
            return None
        node.templates.append((tpl, mark))
        return tpl

    def prompt(self, node: Node, key: str, *, required: bool = False) -> Template | None:
        tpl = self.template(node, key, required=required)
        if tpl is not None:
            node.prompts.append((tpl, self.m.mark_of(key)))
        return tpl

    def prompts(self, node: Node, key: str, *, required: bool = False) -> tuple[Template, ...]:
        value = self._raw(key, required)
        if value is _MISSING:
            return ()
        if isinstance(value, str):
            one = self.prompt(node, key)
            return (one,) if one else ()
        if not isinstance(value, YList) or not value:
            self.bad(key, "a prompt or a list of prompts")
            return ()
        out = []
        for i, item in enumerate(value):
            mark = value.mark_of(i)
            if not isinstance(item, str) or not item:
                self.error(mark, f"{self.what}: each of '{key}' must be a prompt (text), got {_describe(item)}")
                continue
            tpl = self.template(node, key, value=item, mark=mark)
            if tpl is not None:
                node.prompts.append((tpl, mark))
                out.append(tpl)
        return tuple(out)

    def integer(self, key: str, default: int | None, *, minimum: int = 0) -> int | None:
        value = self._raw(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.bad(key, f"a whole number >= {minimum}")
            return default
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self._raw(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 3600:
            self.bad(key, "a number of seconds (0 < s <= 3600)")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._raw(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.bad(key, "true or false")
            return default
        return value

    def regex(self, key: str, *, required: bool = False) -> re.Pattern[str] | None:
        text = self.text(key, required=required)
        return None if text is None else self.compile(text, self.m.mark_of(key))

    def compile(self, text: str, mark: Mark) -> re.Pattern[str] | None:
        try:
            return re.compile(text)
        except re.error as exc:
            self.error(mark, f"{self.what}: invalid regex '{text}': {exc.msg} at position {exc.pos}")
            return None

    def edge(self, node: Node, key: str, outcome: str, *, required: bool = False,
             section: bool = False) -> None:
        target = self.text(key, required=required)
        if target is not None:
            node.edges[outcome] = Edge(outcome, target, self.m.mark_of(key), section)

    def sub(self, key: str, what: str) -> _Fields | None:
        """The mapping under `key`, as fields of its own (reported as `what`)."""
        value = self.m.get(key)
        if not isinstance(value, YMap):
            self.bad(key, "a mapping")
            return None
        return _Fields(self.diags, value, what, self.m.key_mark(key))


def _on(f: _Fields, node: Node, allowed: Collection[str], *, keys_are_dtmf: bool = False,
        required: bool = False) -> None:
    """Read `on: {outcome: node}` into node.edges."""
    if f._raw("on", required) is _MISSING:
        return
    on = f.sub("on", f.what)
    if on is None:
        return
    for outcome, target in on.m.items():
        if outcome not in allowed and not (keys_are_dtmf and _DTMF.fullmatch(outcome)):
            if keys_are_dtmf:
                hint = suggestion(outcome, allowed) or " (an option is DTMF keys 0-9, * or #)"
            else:
                hint = suggestion(outcome, allowed) or f" (outcomes: {', '.join(allowed)})"
            f.error(on.m.key_mark(outcome), f"{f.what} has no outcome '{outcome}'{hint}")
            continue
        if not isinstance(target, str) or not target:
            f.error(on.m.mark_of(outcome), f"{f.what}: outcome '{outcome}' must name a node, got {_describe(target)}")
            continue
        node.edges[outcome] = Edge(outcome, target, on.m.mark_of(outcome))


def _require_branches(f: _Fields, node: Node, outcomes: Collection[str]) -> None:
    where = f.m.mark_of("on") if "on" in f.m else f.at
    for outcome in outcomes:
        if outcome not in node.edges:
            f.error(where, f"{f.what} has no '{outcome}' branch")


def _answer(f: _Fields, node: AnswerNode) -> None:
    f.edge(node, "next", "next", required=True)


def _play(f: _Fields, node: PlayNode) -> None:
    node.prompt_list = f.prompts(node, "prompts", required=True)
    node.barge_in = f.boolean("barge_in", False)
    f.edge(node, "next", "next", required=True)


def _say(f: _Fields, node: SayNode) -> None:
    node.value = f.template(node, "value", required=True, allow_number=True)
    kind = f.text("kind")
    if kind is not None:
        if kind in ("number", "digits"):
            node.say_kind = kind
        else:
            f.bad("kind", "number or digits")
    node.language = f.text("language") or "en"
    f.edge(node, "next", "next", required=True)


def _collect(f: _Fields, node: CollectNode) -> None:
    node.prompt_list = f.prompts(node, "prompt")
    node.min_digits = f.integer("min_digits", 1, minimum=1) or 1
    node.max_digits = f.integer("max_digits", node.min_digits, minimum=1) or node.min_digits
    if node.max_digits < node.min_digits:
        f.error(f.m.mark_of("max_digits"), f"{f.what}: 'max_digits' ({node.max_digits}) is less than 'min_digits' ({node.min_digits})")
    node.timeout = f.seconds("timeout", 5.0)
    node.inter_digit_timeout = f.seconds("inter_digit_timeout", 3.0)
    if "terminators" in f.m:
        term = f.m["terminators"]
        if not isinstance(term, str) or (term and not _DTMF.fullmatch(term)):
            f.bad("terminators", "DTMF keys such as \"#\" (quote it: # starts a YAML comment) or \"\"")
        else:
            node.terminators = term
    if "pattern" in f.m:
        regex = f.regex("pattern")
        node.pattern = regex.pattern if regex else None
    node.tries = f.integer("tries", 3, minimum=1) or 3
    node.invalid_prompt = f.prompt(node, "invalid_prompt")
    var = f.text("var")
    if var is not None:
        if _IDENT.fullmatch(var):
            node.var = var
            node.defines.append(Located(var, f.m.mark_of("var")))
        else:
            f.bad("var", "a variable name (letters, digits, _)")
    node.max_visits = f.integer("max_visits", node.max_visits, minimum=1) or node.max_visits
    f.edge(node, "next", "next", required=True)
    _on(f, node, INPUT_OUTCOMES)
    _require_branches(f, node, ("timeout", "invalid"))


def _menu(f: _Fields, node: MenuNode) -> None:
    node.greeting = f.prompt(node, "greeting", required=True)
    node.short_greeting = f.prompt(node, "short_greeting")
    node.invalid_sound = f.prompt(node, "invalid_sound")
    node.exit_sound = f.prompt(node, "exit_sound")
    node.timeout = f.seconds("timeout", 5.0)
    node.inter_digit_timeout = f.seconds("inter_digit_timeout", 2.0)
    node.max_failures = f.integer("max_failures", 3, minimum=1) or 3
    node.max_timeouts = f.integer("max_timeouts", 3, minimum=1) or 3
    node.max_visits = f.integer("max_visits", node.max_visits, minimum=1) or node.max_visits
    _on(f, node, INPUT_OUTCOMES, keys_are_dtmf=True, required=True)
    node.options = tuple(o for o in node.edges if o not in INPUT_OUTCOMES)
    if "direct_dial" in f.m:
        dd = f.sub("direct_dial", f"direct_dial of {f.what}")
        if dd is not None:
            dd.check_keys(("pattern", "next"))
            node.direct_dial = dd.regex("pattern", required=True)
            if node.direct_dial is not None:
                node.regex_groups = node.direct_dial.groups
            dd.edge(node, "next", "direct_dial", required=True)
    longest = max((len(o) for o in node.options), default=1)
    if node.direct_dial is not None and "digit_len" not in f.m:
        f.error(f.at, f"{f.what} is missing required key 'digit_len' (needed with 'direct_dial')")
    node.digit_len = f.integer("digit_len", longest, minimum=1) or longest
    if "on" in f.m and isinstance(f.m["on"], YMap):
        on = f.m["on"]
        for option in node.options:
            if len(option) > node.digit_len:
                f.error(on.key_mark(option), f"{f.what}: option '{option}' is longer than 'digit_len' ({node.digit_len})")
    if "on" in f.m and not node.options and node.direct_dial is None:
        f.error(f.m.mark_of("on"), f"{f.what} has no options (DTMF keys under 'on:')")
    if "on" in f.m:
        _require_branches(f, node, ("timeout", "invalid"))


def _set(f: _Fields, node: SetNode) -> None:
    values = []
    if f._raw("vars", True) is not _MISSING:
        sub = f.sub("vars", f.what)
        if sub is not None and not sub.m:
            f.bad("vars", "a non-empty mapping of name: value")
        if sub is not None:
            for name, value in sub.m.items():
                mark = sub.m.mark_of(name)
                if not _IDENT.fullmatch(name):
                    f.error(sub.m.key_mark(name), f"{f.what}: '{name}' is not a variable name (letters, digits, _)")
                    continue
                if isinstance(value, bool):
                    value = "true" if value else "false"
                elif isinstance(value, (int, float)):
                    value = str(value)
                elif not isinstance(value, str):
                    f.error(mark, f"{f.what}: value of '{name}' must be text or a number, got {_describe(value)}")
                    continue
                tpl = f.template(node, name, value=value, mark=mark)
                if tpl is not None:
                    values.append((name, tpl))
                    node.defines.append(Located(name, sub.m.key_mark(name)))
    node.values = tuple(values)
    node.channel = f.boolean("channel", False)
    f.edge(node, "next", "next", required=True)


def _timezone(f: _Fields) -> str | None:
    tz = f.text("timezone")
    if tz is not None and not valid_timezone(tz):
        f.error(f.m.mark_of("timezone"), f"{f.what}: unknown timezone '{tz}' (use an IANA name such as 'Europe/Paris')")
        return None
    return tz


def _rule(f: _Fields, node: RouteNode, index: int, raw: Any, mark: Mark) -> RouteRule | None:
    if not isinstance(raw, YMap):
        f.error(mark, f"{f.what}: rule {index} must be a mapping with conditions and 'next', got {_describe(raw)}")
        return None
    r = _Fields(f.diags, raw, f"rule {index} of {f.what}", mark)
    r.check_keys(RULE_KEYS)
    rule = RouteRule(mark)
    rule.caller = r.regex("caller")
    rule.destination = r.regex("destination")
    groups = (rule.destination or rule.caller)
    if groups is not None:
        node.regex_groups = max(node.regex_groups, groups.groups)
    for key in ("time", "days", "dates"):
        if key in raw:
            value = raw[key]
            try:
                if key == "dates":
                    rule.dates = parse_dates(value)
                elif not isinstance(value, (str, list)):
                    raise ValueError(f"expected text or a list, got {_describe(value)}")
                elif key == "time":
                    rule.times = parse_time_ranges(value)
                else:
                    rule.days = parse_days(value)
            except ValueError as exc:
                r.error(raw.mark_of(key), f"{r.what}: bad '{key}': {exc}")
    for key in ("in_list", "not_in_list"):
        name = r.text(key)
        if name is not None:
            setattr(rule, key, name)
            node.list_refs.append(Located(name, raw.mark_of(key)))
    if "holiday" in raw:
        value = raw["holiday"]
        names = [value] if isinstance(value, str) else list(value) if isinstance(value, YList) else None
        if not names or not all(isinstance(n, str) and n for n in names):
            r.bad("holiday", "a holiday calendar of the site, or a list of them")
        else:
            rule.holidays = tuple(names)
            node.holiday_refs.extend(
                Located(n, raw.mark_of("holiday") if isinstance(value, str) else value.mark_of(i))
                for i, n in enumerate(names))
    rule.timezone = _timezone(r)
    r.edge(node, "next", f"rule {index}", required=True)
    return rule


def _route(f: _Fields, node: RouteNode) -> None:
    rules = []
    raw_rules = f._raw("rules", True)
    if raw_rules is not _MISSING:
        if not isinstance(raw_rules, YList) or not raw_rules:
            f.bad("rules", "a non-empty list of rules")
        else:
            for i, raw in enumerate(raw_rules):
                rule = _rule(f, node, i + 1, raw, raw_rules.mark_of(i))
                if rule is not None:
                    rules.append(rule)
    node.rules = tuple(rules)
    node.timezone = _timezone(f)
    f.edge(node, "default", "default", required=True)


def _transfer(f: _Fields, node: TransferNode) -> None:
    has_flow, has_ext = "flow" in f.m, "extension" in f.m
    if has_flow == has_ext:
        f.error(f.at, f"{f.what} needs exactly one of 'flow' (another flow) or 'extension' (the switch dialplan)")
    if has_flow:
        name = f.text("flow")
        if name is not None:
            node.flow = Located(name, f.m.mark_of("flow"))
        if "context" in f.m:
            f.error(f.m.key_mark("context"), f"{f.what}: 'context' only applies to 'extension'")
    if has_ext:
        node.extension = f.template(node, "extension", allow_number=True)
        node.context = f.template(node, "context")


def _hangup(f: _Fields, node: HangupNode) -> None:
    cause = f.text("cause")
    if cause is not None:
        if cause in HANGUP_CAUSES:
            node.cause = cause
        else:
            hint = suggestion(cause, HANGUP_CAUSES) or " (use a Q.850 name such as NORMAL_CLEARING, USER_BUSY, CALL_REJECTED)"
            f.error(f.m.mark_of("cause"), f"{f.what}: unknown hangup cause '{cause}'{hint}")


def _goto(f: _Fields, node: GotoNode) -> None:
    f.edge(node, "target", "target", required=True)
    node.max = f.integer("max", None, minimum=1)
    _on(f, node, ("exhausted",))
    if node.max is not None:
        _require_branches(f, node, ("exhausted",))
    elif "max" not in f.m and "exhausted" in node.edges:
        f.error(f.m.mark_of("on"), f"{f.what} has an 'exhausted' branch but no 'max'")


def _call(f: _Fields, node: CallNode) -> None:
    f.edge(node, "section", "section", required=True, section=True)
    node.section = node.target("section") or ""
    f.edge(node, "next", "next", required=True)


def _return(f: _Fields, node: ReturnNode) -> None:
    pass


RING_SECONDS = (1, 600)
TARGET_KINDS = ("phone", "gateway", "uri")
URI_SCHEMES = ("sip:", "sips:")


def _ring_seconds(f: _Fields, key: str) -> float | None:
    """A ring time: seconds within RING_SECONDS (None when absent or wrong, reported)."""
    value = f._raw(key, False)
    if value is _MISSING:
        return None
    low, high = RING_SECONDS
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        f.bad(key, f"a number of seconds ({low} <= s <= {high})")
        return None
    return float(value)


def _dial_target(f: _Fields, node: DialNode, raw: Any, mark: Mark, what: str) -> DialTargetSpec | None:
    if not isinstance(raw, YMap):
        f.error(mark, f"{what} must be a mapping such as {{phone: \"1001\"}}, {{gateway: NAME, number: N}} "
                      f"or {{uri: \"sip:user@host\"}}, got {_describe(raw)}")
        return None
    t = _Fields(f.diags, raw, what, mark)
    t.check_keys(("phone", "gateway", "number", "uri", "timeout"))
    kinds = [k for k in TARGET_KINDS if k in raw]
    if len(kinds) != 1:
        t.error(mark, f"{what} needs exactly one of 'phone', 'gateway' or 'uri'"
                      + (f" (has {', '.join(repr(k) for k in kinds)})" if kinds else ""))
        return None
    kind = kinds[0]
    timeout = _ring_seconds(t, "timeout")
    if kind == "gateway":
        name = t.text("gateway")
        number = t.template(node, "number", required=True, allow_number=True)
        if name is None or number is None:
            return None
        node.gateway_refs.append(Located(name, raw.mark_of("gateway")))
        return DialTargetSpec("gateway", number, raw.mark_of("number"), gateway=name, timeout=timeout)
    if "number" in raw:
        t.error(raw.key_mark("number"), f"{what}: 'number' only applies to a 'gateway' target")
    address = t.template(node, kind, allow_number=kind == "phone")
    if address is None:
        return None
    if kind == "uri" and not address.source.startswith("${") and not address.source.startswith(URI_SCHEMES):
        t.error(raw.mark_of("uri"), f"{what}: uri '{address.source}' must start with 'sip:' or 'sips:'")
        return None
    return DialTargetSpec(kind, address, raw.mark_of(kind), timeout=timeout)


def _dial_group(f: _Fields, node: DialNode, raw: Any, mark: Mark, what: str) -> DialGroupSpec | None:
    """A `to:` list (the node's own, or one step of `sequence:`)."""
    if not isinstance(raw, YList) or not raw:
        got = "an empty list" if isinstance(raw, YList) else _describe(raw)
        f.error(mark, f"{what} must be a non-empty list of targets, got {got}")
        return None
    targets = []
    for i, item in enumerate(raw):
        target = _dial_target(f, node, item, raw.mark_of(i), f"target {i + 1} of {what}")
        if target is not None:
            targets.append(target)
    return DialGroupSpec(tuple(targets), mark) if len(targets) == len(raw) else None


def _dial(f: _Fields, node: DialNode) -> None:
    has_to, has_sequence = "to" in f.m, "sequence" in f.m
    if has_to == has_sequence:
        f.error(f.at, f"{f.what} needs exactly one of 'to' (targets ringing at once) or 'sequence' "
                      "(groups of targets tried one after the other)")
    groups: list[DialGroupSpec] = []
    if has_to:
        group = _dial_group(f, node, f.m["to"], f.m.mark_of("to"), f"'to' of {f.what}")
        if group is not None:
            groups.append(group)
    elif has_sequence:
        sequence = f.m["sequence"]
        if not isinstance(sequence, YList) or not sequence:
            f.bad("sequence", "a non-empty list of {to: [targets], timeout: seconds}")
        else:
            for i, raw in enumerate(sequence):
                mark = sequence.mark_of(i)
                what = f"step {i + 1} of the sequence of {f.what}"
                if not isinstance(raw, YMap):
                    f.error(mark, f"{what} must be a mapping with 'to' (and optional 'timeout'), got {_describe(raw)}")
                    continue
                g = _Fields(f.diags, raw, what, mark)
                g.check_keys(("to", "timeout"))
                timeout = _ring_seconds(g, "timeout")
                if g._raw("to", True) is _MISSING:
                    continue
                group = _dial_group(g, node, raw["to"], raw.mark_of("to"), f"'to' of {what}")
                if group is not None:
                    groups.append(DialGroupSpec(group.targets, mark, timeout))
    node.groups = tuple(groups)
    node.timeout = _ring_seconds(f, "timeout") or node.timeout
    if "ringback" in f.m:
        if f.m["ringback"] == "none":
            node.ringback_none = True
        else:
            node.ringback = f.prompt(node, "ringback")
    if "caller_id" in f.m:
        cid = f.sub("caller_id", f"caller_id of {f.what}")
        if cid is not None:
            cid.check_keys(("number", "name"))
            node.caller_id_number = cid.template(node, "number", allow_number=True)
            node.caller_id_name = cid.template(node, "name")
            if not cid.m:
                f.error(f.m.mark_of("caller_id"), f"{f.what}: 'caller_id' is empty (give 'number' and/or 'name')")
    node.feature_codes = f.boolean("transfer", True)
    for outcome in DIAL_OUTCOMES:
        f.edge(node, outcome, outcome, required=outcome == "next")
    if "failed" not in node.edges and "failed" not in f.m and not f._misspelled("failed"):
        f.error(f.at, f"{f.what} has no 'failed' branch (busy, no_answer and rejected fall back to it)")
    node.defines.extend(Located(name, node.mark) for name in DIAL_VARIABLES)


def _prepaid(f: _Fields, node: PrepaidNode) -> None:
    node.account = f.template(node, "account", required=True, allow_number=True)
    node.destination = f.template(node, "destination", required=True, allow_number=True)
    node.pin = f.template(node, "pin", allow_number=True)
    for outcome in PREPAID_OUTCOMES:
        f.edge(node, outcome, outcome, required=outcome == "next")
    missing = [o for o in ("insufficient_funds", "bad_pin" if "pin" in f.m else None)
               if o is not None and o not in f.m and not f._misspelled(o)]
    for outcome in missing:
        why = ("no_rate, no_account and locked fall back to it" if outcome == "insufficient_funds"
               else "required with 'pin'")
        f.error(f.at, f"{f.what} has no '{outcome}' branch ({why})")
    node.defines.extend(Located(name, node.mark) for name in PREPAID_VARIABLES)


def _number(f: _Fields, node: NumberNode) -> None:
    plan = f.text("plan", required=True)
    if plan is not None:
        node.plan = Located(plan, f.m.mark_of("plan"))
    node.number = f.template(node, "number", allow_number=True) or parse_template("${destination}")
    node.caller = f.template(node, "caller", allow_number=True) or parse_template("${caller}")
    node.tenant = f.template(node, "tenant") or parse_template("default")
    for outcome in NUMBER_OUTCOMES:
        f.edge(node, outcome, outcome, required=outcome == "next")
    for outcome, why in (("blocked", "screening refused the caller or the destination"),
                         ("no_route", "no rule of the plan matches; invalid_number falls back to it")):
        if outcome not in f.m and not f._misspelled(outcome):
            f.error(f.at, f"{f.what} has no '{outcome}' branch ({why})")
    if "on" in f.m:
        on = f.sub("on", f.what)
        routes = []
        for route, target in (on.m.items() if on is not None else ()):
            if route in NUMBER_OUTCOMES or not _IDENT.fullmatch(route):
                hint = (f" ('{route}' is a key of the node itself, not of 'on:')" if route in NUMBER_OUTCOMES
                        else " (a route name of the plan)")
                f.error(on.m.key_mark(route), f"{f.what} has no route '{route}' under 'on:'{hint}")
                continue
            if not isinstance(target, str) or not target:
                f.error(on.m.mark_of(route), f"{f.what}: route '{route}' must name a node, got {_describe(target)}")
                continue
            node.edges[route] = Edge(route, target, on.m.mark_of(route))
            routes.append(Located(route, on.m.key_mark(route)))
        node.routes = tuple(routes)
    node.defines.extend(Located(name, node.mark) for name in NUMBER_VARIABLES)


def _voicemail(f: _Fields, node: VoicemailNode) -> None:
    node.mailbox = f.template(node, "mailbox", required=True, allow_number=True)
    node.greeting = f.prompts(node, "greeting")
    node.max_seconds = f.seconds("max_seconds", node.max_seconds)
    value = f._raw("silence_seconds", False)
    if value is not _MISSING:  # 0: never stop on silence (RecordSpec)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 60:
            f.bad("silence_seconds", "a number of seconds (0 <= s <= 60; 0 = never stop on silence)")
        else:
            node.silence_seconds = float(value)
    for outcome in VOICEMAIL_OUTCOMES:
        f.edge(node, outcome, outcome, required=outcome == "next")
    if "no_mailbox" not in f.m and not f._misspelled("no_mailbox"):
        f.error(f.at, f"{f.what} has no 'no_mailbox' branch (the number has no mailbox)")
    node.defines.extend(Located(name, node.mark) for name in VOICEMAIL_VARIABLES)


def _voicemail_check(f: _Fields, node: VoicemailCheckNode) -> None:
    node.mailbox = f.template(node, "mailbox", required=True, allow_number=True)
    tries = f.integer("tries", node.tries, minimum=1) or node.tries
    if tries > 10:
        f.bad("tries", "a whole number from 1 to 10")
        tries = node.tries
    node.tries = tries
    for outcome in VOICEMAIL_CHECK_OUTCOMES:
        f.edge(node, outcome, outcome, required=outcome == "next")
    if "bad_pin" not in f.m and not f._misspelled("bad_pin"):
        f.error(f.at, f"{f.what} has no 'bad_pin' branch (no right PIN in 'tries'; locked falls back to it)")
    node.defines.extend(Located(name, node.mark) for name in VOICEMAIL_CHECK_VARIABLES)


def _conference(f: _Fields, node: ConferenceNode) -> None:
    node.room = f.template(node, "room", required=True, allow_number=True)
    if node.room is not None:
        # The literal text must already be a valid room name: only what `${...}` renders is left
        # to check at run time (letters, digits, '_', '.', '-'; never '@', which picks a profile).
        for part in node.room.parts:
            if isinstance(part, str) and not CONFERENCE_ROOM.fullmatch(part):
                f.error(f.m.mark_of("room"), f"{f.what}: room '{node.room.source}' may only use letters, "
                                             "digits, '_', '.' and '-' (at most 64)")
                break
    f.edge(node, "next", "next", required=True)


def _record_call(f: _Fields, node: RecordCallNode) -> None:
    action = f.text("action", required=True)
    if action is not None:
        if action in RECORD_CALL_ACTIONS:
            node.action = action
        else:
            f.error(f.m.mark_of("action"), f"{f.what}: 'action' must be one of {', '.join(RECORD_CALL_ACTIONS)}, "
                                           f"got {_describe(action)}{suggestion(action, RECORD_CALL_ACTIONS)}")
    if "name" in f.m:
        if node.action != "start":
            f.error(f.m.key_mark("name"), f"{f.what}: 'name' only applies to action 'start'")
        else:
            node.name = f.template(node, "name", allow_number=True)
    for outcome in RECORD_CALL_OUTCOMES:
        f.edge(node, outcome, outcome, required=outcome == "next")
    node.defines.extend(Located(name, node.mark) for name in RECORD_CALL_VARIABLES)


_PARSERS = {
    "answer": _answer, "play": _play, "say": _say, "collect": _collect, "menu": _menu,
    "set": _set, "route": _route, "transfer": _transfer, "hangup": _hangup, "goto": _goto,
    "call": _call, "return": _return, "dial": _dial, "prepaid": _prepaid, "number": _number,
    "voicemail": _voicemail, "voicemail_check": _voicemail_check, "conference": _conference,
    "record_call": _record_call,
}


def _generic_edges(diags: list[Diagnostic], raw: YMap, node: Node) -> None:
    """Edges of a node whose type is broken, so one typo does not cascade into 'unreachable'."""
    for key in ("next", "target", "default", "section", *DIAL_OUTCOMES[1:], *PREPAID_OUTCOMES[1:],
                *NUMBER_OUTCOMES[1:], *VOICEMAIL_OUTCOMES[1:], *VOICEMAIL_CHECK_OUTCOMES[1:], *RECORD_CALL_OUTCOMES[1:]):
        if isinstance(raw.get(key), str):
            node.edges[key] = Edge(key, raw[key], raw.mark_of(key), key == "section")
    on = raw.get("on")
    if isinstance(on, YMap):
        for outcome, target in on.items():
            if isinstance(target, str):
                node.edges[outcome] = Edge(outcome, target, on.mark_of(outcome))


def parse_node(diags: list[Diagnostic], node_id: str, raw: Any, id_mark: Mark, value_mark: Mark) -> Node:
    if not isinstance(raw, YMap):
        diags.append(Diagnostic(value_mark, f"node '{node_id}' must be a mapping with a 'type', got {_describe(raw)}"))
        return Node(node_id, id_mark)
    kind = raw.get("type", _MISSING)
    if kind is _MISSING or not isinstance(kind, str) or kind not in NODE_TYPES:
        if kind is _MISSING:
            diags.append(Diagnostic(id_mark, f"node '{node_id}' is missing required key 'type'"))
        else:
            hint = suggestion(str(kind), NODE_TYPES) or f" (types: {', '.join(NODE_TYPES)})"
            diags.append(Diagnostic(raw.mark_of("type"), f"node '{node_id}' has unknown type {_describe(kind)}{hint}"))
        node = Node(node_id, id_mark)
        _generic_edges(diags, raw, node)
        return node
    node = NODE_TYPES[kind](node_id, id_mark)
    f = _Fields(diags, raw, f"{kind} '{node_id}'", id_mark)
    f.check_keys(("type", *NODE_KEYS[kind]))
    _PARSERS[kind](f, node)
    return node


def parse_flow(data: Any, file: str, diags: list[Diagnostic]) -> Flow | None:
    """Build one flow from a loaded YAML document; None when it is too broken to check further."""
    if data is None:
        diags.append(Diagnostic(Mark(file, 1, 1), "the file is empty (a flow needs 'flow' and 'nodes')"))
        return None
    if not isinstance(data, YMap):
        diags.append(Diagnostic(getattr(data, "mark", Mark(file, 1, 1)), "a flow file must be a mapping with 'flow' and 'nodes'"))
        return None
    f = _Fields(diags, data, "flow", data.mark)
    f.check_keys(TOP_KEYS)
    name = f.text("flow", required=True)
    if name is not None and not _NAME.fullmatch(name):
        f.error(data.mark_of("flow"), f"flow name '{name}' may only use letters, digits, '_', '.' and '-'")
    if name is not None:
        f.what = f"flow '{name}'"
    f.text("description")

    numbers: list[Located] = []
    raw_numbers = data.get("numbers", _MISSING)
    if raw_numbers is not _MISSING:
        if not isinstance(raw_numbers, YList):
            f.bad("numbers", "a list of numbers (quoted, e.g. [\"9000\"])")
        else:
            for i, number in enumerate(raw_numbers):
                mark = raw_numbers.mark_of(i)
                if not isinstance(number, str) or not number or any(c.isspace() for c in number):
                    f.error(mark, f"{f.what}: a number must be quoted text without spaces (\"9000\"), got {_describe(number)}")
                elif any(n.value == number for n in numbers):
                    f.error(mark, f"{f.what}: number '{number}' is listed twice")
                else:
                    numbers.append(Located(number, mark))
    patterns: list[tuple[re.Pattern[str], Mark]] = []
    raw_patterns = data.get("patterns", _MISSING)
    if raw_patterns is not _MISSING:
        if not isinstance(raw_patterns, YList):
            f.bad("patterns", "a list of regular expressions")
        else:
            for i, text in enumerate(raw_patterns):
                mark = raw_patterns.mark_of(i)
                if not isinstance(text, str) or not text:
                    f.error(mark, f"{f.what}: a pattern must be a regular expression (text), got {_describe(text)}")
                    continue
                compiled = f.compile(text, mark)
                if compiled is not None:
                    patterns.append((compiled, mark))

    nodes: dict[str, Node] = {}
    raw_nodes = f._raw("nodes", True)
    if raw_nodes is not _MISSING and (not isinstance(raw_nodes, YMap) or not raw_nodes):
        f.bad("nodes", "a non-empty mapping of node id: node")
    elif isinstance(raw_nodes, YMap):
        for node_id, raw in raw_nodes.items():
            nodes[node_id] = parse_node(diags, node_id, raw, raw_nodes.key_mark(node_id), raw_nodes.mark_of(node_id))
    start = f.text("start")
    if start is None:
        start = next(iter(nodes), "")
    elif nodes and start not in nodes:
        f.error(data.mark_of("start"), f"{f.what}: start node '{start}' does not exist{suggestion(start, nodes)}")
    if name is None or not nodes:
        return None
    return Flow(name=name, file=file, mark=data.mark_of("flow"), start=start, nodes=nodes,
                numbers=tuple(numbers), patterns=tuple(patterns))
