"""Drive a live `Call` through a checked flow.

The runtime only uses the `Call` interface, so the same flow behaves the same on every switch. Menu
and collect retries, greetings, invalid and exit sounds are decided here, one `collect` try at a
time (a switch's own retry logic, e.g. play_and_get_digits, is never relied upon).

Safety nets that hold even if `check_flows` was skipped: a hard step limit, a call-stack depth
limit, and per-call budgets on goto/menu/collect. A hangup by the caller (`CallGone`) ends the run
cleanly; any other failure is logged with the call uuid and node, and the call is hung up.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import zoneinfo
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from switchctl.numbering import Numbering
from switchctl.switch.call import (
    Call,
    CallError,
    CallGone,
    CollectOutcome,
    CollectSpec,
    DialAnswer,
    DialOutcome,
    DialResult,
    DialSpec,
    DialTarget,
    RecordSpec,
    SayKind,
)

from . import model as vm_prompts
from .check import find_prompt
from .hooks import (
    Authorization,
    AuthorizeOutcome,
    CallBilling,
    CallRecordings,
    CallTransfers,
    DialContext,
    PinCheck,
    PrepaidRequest,
    VoicemailService,
)
from .model import (
    CONFERENCE_ROOM,
    DATA_VARIABLE_PREFIX,
    DIAL_VARIABLES,
    PREPAID_VARIABLES,
    VOICEMAIL_CHECK_VARIABLES,
    VOICEMAIL_VARIABLES,
    AnswerNode,
    CallNode,
    CollectNode,
    ConferenceNode,
    DialNode,
    Flow,
    FlowSet,
    GotoNode,
    HangupNode,
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
from .template import Ref, Template

log = logging.getLogger("switchctl.flows")

DEFAULT_STEP_LIMIT = 10_000
DEFAULT_DEPTH_LIMIT = 32
ERROR_HANGUP_CAUSE = "NORMAL_TEMPORARY_FAILURE"
NO_TARGET_CAUSE = "INVALID_NUMBER_FORMAT"  # a dial whose targets all rendered empty
MAX_MESSAGES_PLAYED = 100  # per voicemail_check: a full mailbox cannot hold a call forever


class FlowRuntimeError(Exception):
    """The flow cannot go on (step limit, missing branch or flow...): a bug check would catch."""


@dataclass
class FlowTrace:
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (flow, node id, outcome)
    result: str = ""  # "hangup", "transferred", "caller_hangup" or "error"
    error: str | None = None
    cause: str | None = None  # hangup cause for "hangup" and "caller_hangup"
    variables: dict[str, str] = field(default_factory=dict)  # flow variables at the end

    @property
    def path(self) -> list[str]:
        """Node ids in the order they ran (handy in tests and `switchctl flow test`)."""
        return [node for _, node, _ in self.steps]


@dataclass
class _Run:
    call: Call
    flow: Flow
    captures: tuple[str, ...]
    variables: dict[str, str] = field(default_factory=dict)
    digits: str = ""
    visits: Counter[tuple[str, str]] = field(default_factory=Counter)
    stack: list[tuple[Flow, str]] = field(default_factory=list)
    result: str | None = None
    cause: str | None = None
    jump: str | None = None  # next node chosen by a transfer to a flow or a return
    # Prompts waiting to be played in front of the next digit collection (a barge-in `play`, a
    # menu's invalid or exit sound): one switch application instead of two, and the caller may
    # type ahead. Any other node plays them first.
    lead_in: list[str] = field(default_factory=list)
    # Billing: the last OK authorization not yet used by a dial, and whether any prepaid node ran
    # (then every dial must be paid for by an authorization of its own).
    auth: Authorization | None = None
    prepaid_ran: bool = False
    path: list[str] = field(default_factory=list)  # node ids run so far (the IVR path), across flows


# What a node reports about its own last run is not the call's data (an agent's screen pop shows the
# caller's data, not how the previous dial went); `data_*` came back from an earlier dial already.
_NOT_CALL_DATA = frozenset(DIAL_VARIABLES + PREPAID_VARIABLES + VOICEMAIL_VARIABLES + VOICEMAIL_CHECK_VARIABLES)


def _call_data(variables: Mapping[str, str]) -> dict[str, str]:
    """The flow variables that follow the call through a transferable dial (DialContext.variables)."""
    return {key: value for key, value in variables.items()
            if key not in _NOT_CALL_DATA and not key.startswith(DATA_VARIABLE_PREFIX)}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FlowRunner:
    def __init__(
        self,
        flowset: FlowSet,
        *,
        site_values: Mapping[str, str],
        lists: Mapping[str, Sequence[str]],
        clock: Callable[[], dt.datetime] = _utc_now,
        step_limit: int = DEFAULT_STEP_LIMIT,
        depth_limit: int = DEFAULT_DEPTH_LIMIT,
        sound_dirs: Sequence[Path] = (),
        billing: CallBilling | None = None,
        numbering: Numbering | None = None,
        voicemail: VoicemailService | None = None,
        transfers: CallTransfers | None = None,
        recordings: CallRecordings | None = None,
    ) -> None:
        self.flowset = flowset
        # The recording feature; a `record_call` node without it is a flow error.
        self.recordings = recordings
        # The transfer feature: unpaid dials run through it (feature codes, API transfers); without
        # it a dial is a plain Call.dial.
        self.transfers = transfers
        self.voicemail = voicemail  # the voicemail feature; its nodes without it are a flow error
        self.billing = billing  # the prepaid feature; a `prepaid` node without it is a flow error
        # The site's number plans, screening and holiday calendars (`Site.numbering`); a `number`
        # node or a `holiday` condition without them is a flow error.
        self.numbering = numbering
        # Prompts are written relative to the site's sound folders; the switch needs a path it
        # can open. Resolved once per distinct prompt (the check proved static ones exist).
        self.sound_dirs = tuple(Path(d) for d in sound_dirs)
        self._prompt_paths: dict[str, str] = {}
        self.site_values = dict(site_values)
        self.lists = {name: frozenset(str(v) for v in values) for name, values in lists.items()}
        self.clock = clock
        self.step_limit = step_limit
        self.depth_limit = depth_limit

    async def run(self, call: Call, flow: Flow, captures: Sequence[str] = ()) -> FlowTrace:
        run = _Run(call, flow, tuple(captures))
        trace = FlowTrace()
        node_id = where = flow.start
        try:
            while run.result is None:
                where = node_id
                if len(trace.steps) >= self.step_limit:
                    raise FlowRuntimeError(f"step limit ({self.step_limit}) reached")
                node = run.flow.nodes.get(node_id)
                if node is None:
                    raise FlowRuntimeError(f"flow '{run.flow.name}' has no node '{node_id}'")
                current = run.flow
                run.path.append(node.id)
                outcome = await self._execute(run, node)
                trace.steps.append((current.name, node.id, outcome))
                log.debug("%s/%s -> %s", current.name, node.id, outcome,
                          extra={"call": call.uuid, "node": node.id})
                if run.result is None:
                    node_id = self._successor(run, current, node, outcome)
        except CallGone as gone:
            trace.steps.append((run.flow.name, where, "caller_hangup"))
            run.result, run.cause = "caller_hangup", gone.cause
            log.info("caller hung up (%s) in flow %s at node %s", gone.cause, run.flow.name, where,
                     extra={"call": call.uuid, "node": where})
        except Exception as exc:
            log.exception("flow %s failed at node %s: %s", run.flow.name, where, exc,
                          extra={"call": call.uuid, "node": where})
            trace.steps.append((run.flow.name, where, "error"))
            trace.error = f"{run.flow.name}/{where}: {type(exc).__name__}: {exc}"
            run.result, run.cause = "error", ERROR_HANGUP_CAUSE
            await self._hangup_after_error(call, where)
        finally:
            await self._release_unused(run, where)
        trace.result = run.result
        trace.cause = run.cause
        trace.variables = dict(run.variables)
        return trace

    async def _hangup_after_error(self, call: Call, where: str) -> None:
        try:
            await call.hangup(ERROR_HANGUP_CAUSE)
        except CallGone:
            pass
        except Exception:
            log.exception("hangup after a flow error failed", extra={"call": call.uuid, "node": where})

    async def _release_unused(self, run: _Run, where: str) -> None:
        """Give back the reservation of an authorization no dial used (however the run ended)."""
        auth, run.auth = run.auth, None
        if auth is None or self.billing is None:
            return
        try:
            await self.billing.release(run.call, auth)
        except Exception:
            log.exception("releasing authorization %s failed", auth.ref, extra={"call": run.call.uuid, "node": where})

    def _successor(self, run: _Run, flow: Flow, node: Node, outcome: str) -> str:
        if run.jump is not None:  # a transfer to a flow or a return chose the next node itself
            target, run.jump = run.jump, None
            return target
        edge = node.edge_for(outcome)
        if edge is None:
            raise FlowRuntimeError(f"{node.kind} '{node.id}' has no branch for outcome '{outcome}'")
        if isinstance(node, CallNode):
            if len(run.stack) >= self.depth_limit:
                raise FlowRuntimeError(f"call stack deeper than {self.depth_limit} sections")
            run.stack.append((flow, node.target("next") or ""))
        return edge.target

    # -- values ---------------------------------------------------------------------------------

    def _lookup(self, run: _Run, ref: Ref) -> str:
        if ref.scope == "call":
            info = run.call.info
            return {
                "caller": info.caller_number,
                "caller_name": info.caller_name,
                "destination": info.destination,
                "uuid": info.uuid,
                "digits": run.digits,
            }[ref.name]
        if ref.scope == "var":
            return run.variables.get(ref.name, "")
        if ref.scope == "chan":
            return run.call.variables.get(ref.name, "")
        if ref.scope == "site":
            return self.site_values.get(ref.name, "")
        index = ref.capture_index
        return run.captures[index - 1] if index <= len(run.captures) else ""

    def _render(self, run: _Run, tpl: Template) -> str:
        return tpl.render(lambda ref: self._lookup(run, ref))

    def _prompt(self, run: _Run, tpl: Template) -> str:
        return self._resolve(self._render(run, tpl))

    def _resolve(self, text: str) -> str:
        path = self._prompt_paths.get(text)
        if path is None:
            if not self.sound_dirs:
                return text
            path = find_prompt(text, self.sound_dirs) or text  # unknown: let the switch say so
            if len(self._prompt_paths) < 10_000:
                self._prompt_paths[text] = path
        return path

    # -- nodes ----------------------------------------------------------------------------------

    async def _execute(self, run: _Run, node: Node) -> str:
        """Run one node; return its outcome (the key of the edge to follow)."""
        call = run.call
        if run.lead_in and not isinstance(node, (MenuNode, CollectNode)):
            await self._flush_lead_in(run)
        if isinstance(node, AnswerNode):
            await call.answer()
            return "next"
        if isinstance(node, PlayNode):
            prompts = [self._prompt(run, p) for p in node.prompt_list]
            successor = node.target("next")
            following = run.flow.nodes.get(successor) if successor else None
            if node.barge_in and isinstance(following, (MenuNode, CollectNode)):
                run.lead_in.extend(prompts)  # played as the start of that node's first prompt
            else:
                await call.play(prompts)
            return "next"
        if isinstance(node, SayNode):
            assert node.value is not None
            await call.say(self._render(run, node.value), SayKind(node.say_kind), node.language)
            return "next"
        if isinstance(node, CollectNode):
            return await self._collect(run, node)
        if isinstance(node, MenuNode):
            return await self._menu(run, node)
        if isinstance(node, SetNode):
            for name, tpl in node.values:
                value = self._render(run, tpl)
                run.variables[name] = value
                if node.channel:
                    await call.set_variable(name, value)
            return "next"
        if isinstance(node, RouteNode):
            return self._route(run, node)
        if isinstance(node, TransferNode):
            return await self._transfer(run, node)
        if isinstance(node, HangupNode):
            await call.hangup(node.cause)
            run.result, run.cause = "hangup", node.cause
            return "hangup"
        if isinstance(node, GotoNode):
            if node.max is not None:
                run.visits[(run.flow.name, node.id)] += 1
                if run.visits[(run.flow.name, node.id)] > node.max:
                    return "exhausted"
            return "target"
        if isinstance(node, DialNode):
            return await self._dial(run, node)
        if isinstance(node, PrepaidNode):
            return await self._prepaid(run, node)
        if isinstance(node, NumberNode):
            return self._number(run, node)
        if isinstance(node, VoicemailNode):
            return await self._voicemail(run, node)
        if isinstance(node, VoicemailCheckNode):
            return await self._voicemail_check(run, node)
        if isinstance(node, ConferenceNode):
            return await self._conference(run, node)
        if isinstance(node, RecordCallNode):
            return await self._record_call(run, node)
        if isinstance(node, CallNode):
            return "section"
        if isinstance(node, ReturnNode):
            if not run.stack:
                raise FlowRuntimeError(f"return '{node.id}' reached outside a section")
            run.flow, target = run.stack.pop()
            run.jump = target
            return "return"
        raise FlowRuntimeError(f"node '{node.id}' has no runnable type")

    def _over_budget(self, run: _Run, node: CollectNode | MenuNode) -> bool:
        key = (run.flow.name, node.id)
        run.visits[key] += 1
        return run.visits[key] > node.max_visits

    async def _flush_lead_in(self, run: _Run) -> None:
        prompts, run.lead_in = run.lead_in, []
        await run.call.play(prompts)

    def _take_lead_in(self, run: _Run) -> list[str]:
        prompts, run.lead_in = run.lead_in, []
        return prompts

    async def _collect(self, run: _Run, node: CollectNode) -> str:
        if self._over_budget(run, node):
            if run.lead_in:
                await self._flush_lead_in(run)
            return node.exit_outcome or "timeout"
        prompts = [self._prompt(run, p) for p in node.prompt_list]
        spec = CollectSpec(
            prompts=prompts,
            min_digits=node.min_digits,
            max_digits=node.max_digits,
            timeout=node.timeout,
            inter_digit_timeout=node.inter_digit_timeout,
            terminators=node.terminators,
            pattern=node.pattern,
            invalid_prompt=None,  # played by us, so every switch behaves the same
        )
        outcome = "timeout"
        for _ in range(node.tries):
            lead_in = self._take_lead_in(run)
            result = await run.call.collect(replace(spec, prompts=lead_in + prompts) if lead_in else spec)
            if result.outcome is CollectOutcome.OK and self._acceptable(node, result.digits):
                run.digits = result.digits
                if node.var:
                    run.variables[node.var] = result.digits
                return "next"
            if result.outcome is CollectOutcome.TIMEOUT:
                outcome = "timeout"
            else:
                outcome = "invalid"
                if node.invalid_prompt is not None:
                    run.lead_in.append(self._prompt(run, node.invalid_prompt))
        return outcome

    @staticmethod
    def _acceptable(node: CollectNode, digits: str) -> bool:
        """Re-check what the switch accepted: backends differ in how strictly they apply a spec."""
        if not node.min_digits <= len(digits) <= node.max_digits:
            return False
        return node.pattern is None or re.fullmatch(node.pattern, digits) is not None

    async def _menu(self, run: _Run, node: MenuNode) -> str:
        if self._over_budget(run, node):
            if run.lead_in:
                await self._flush_lead_in(run)
            return node.exit_outcome or "timeout"
        terminators = "#" if node.digit_len > 1 and "#" not in node.options else ""
        failures = timeouts = 0
        first = True
        while True:
            greeting = node.greeting if first or node.short_greeting is None else node.short_greeting
            first = False
            assert greeting is not None
            result = await run.call.collect(CollectSpec(
                prompts=self._take_lead_in(run) + [self._prompt(run, greeting)],
                min_digits=1,
                max_digits=node.digit_len,
                timeout=node.timeout,
                inter_digit_timeout=node.inter_digit_timeout,
                terminators=terminators,
            ))
            if result.outcome is CollectOutcome.TIMEOUT:
                timeouts += 1
                if timeouts >= node.max_timeouts:
                    self._queue_optional(run, node.exit_sound)
                    return "timeout"
                continue
            digits = result.digits
            if result.outcome is CollectOutcome.OK:
                if digits in node.options:
                    run.digits = digits
                    return digits
                match = node.direct_dial.fullmatch(digits) if node.direct_dial is not None else None
                if match is not None:
                    run.digits = digits
                    run.captures = tuple(g or "" for g in match.groups())
                    return "direct_dial"
            failures += 1
            self._queue_optional(run, node.invalid_sound)
            if failures >= node.max_failures:
                self._queue_optional(run, node.exit_sound)
                return "invalid"

    def _queue_optional(self, run: _Run, prompt: Template | None) -> None:
        if prompt is not None:
            run.lead_in.append(self._prompt(run, prompt))

    def _route(self, run: _Run, node: RouteNode) -> str:
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        for index, rule in enumerate(node.rules, start=1):
            captures = self._rule_match(run, node, rule, now)
            if captures is not None:
                if captures:
                    run.captures = captures
                return f"rule {index}"
        return "default"

    def _rule_match(self, run: _Run, node: RouteNode, rule: RouteRule, now: dt.datetime) -> tuple[str, ...] | None:
        """The rule's captures (possibly empty) when it matches, else None."""
        info = run.call.info
        captures: tuple[str, ...] = ()
        for regex, value in ((rule.caller, info.caller_number), (rule.destination, info.destination)):
            if regex is not None:
                m = regex.fullmatch(value)
                if m is None:
                    return None
                captures = tuple(g or "" for g in m.groups()) or captures
        if rule.times or rule.days is not None or rule.dates:
            tz_name = rule.timezone or node.timezone or self.site_values.get("timezone") or "UTC"
            local = now.astimezone(zoneinfo.ZoneInfo(tz_name))
            minute = local.hour * 60 + local.minute
            if rule.times and not any(r.contains(minute) for r in rule.times):
                return None
            if rule.days is not None and local.weekday() not in rule.days:
                return None
            if rule.dates and not any(d.contains(local.date()) for d in rule.dates):
                return None
        if rule.holidays:
            tz_name = rule.timezone or node.timezone or self.site_values.get("timezone") or "UTC"
            today = now.astimezone(zoneinfo.ZoneInfo(tz_name)).date()
            holidays = self.numbering.holidays if self.numbering is not None else {}
            for name in rule.holidays:
                if name not in holidays:
                    raise FlowRuntimeError(f"route '{node.id}': unknown holiday calendar '{name}'")
            if not any(holidays[name].contains(today) for name in rule.holidays):
                return None
        for name, wanted in ((rule.in_list, True), (rule.not_in_list, False)):
            if name is not None:
                if name not in self.lists:
                    raise FlowRuntimeError(f"route '{node.id}': unknown list '{name}'")
                if (info.caller_number in self.lists[name]) != wanted:
                    return None
        return captures

    def _number(self, run: _Run, node: NumberNode) -> str:
        assert node.plan is not None and node.number is not None
        assert node.caller is not None and node.tenant is not None
        plan = node.plan.value
        if self.numbering is None or plan not in self.numbering.plans:
            raise FlowRuntimeError(f"number '{node.id}': the site has no numbering plan '{plan}' "
                                   "(FlowRunner(numbering=site.numbering))")
        result = self.numbering.analyze_call(
            plan,
            tenant=self._render(run, node.tenant),
            caller=self._render(run, node.caller),
            destination=self._render(run, node.number),
        )
        run.variables.update(
            number_route=result.route,
            number_out=result.number_out,
            number_blocked_by=result.blocked_by,
            number_blocked_entry=result.blocked_entry,
        )
        if result.route == "":
            log.info("number %s: %s (%s)", node.id, result.outcome, result.reason,
                     extra={"call": run.call.uuid, "node": node.id})
        return result.outcome

    def _enter_flow(self, run: _Run, name: str, what: str) -> str:
        target = self.flowset.get(name)
        if target is None:
            raise FlowRuntimeError(f"{what}: flow '{name}' is not loaded")
        run.stack.clear()  # a transfer replaces the running flow; it never returns
        run.flow = target
        run.jump = target.start
        return "flow"

    async def _transfer(self, run: _Run, node: TransferNode) -> str:
        if node.flow is not None:
            return self._enter_flow(run, node.flow.value, f"transfer '{node.id}'")
        assert node.extension is not None
        context = self._render(run, node.context) if node.context is not None else None
        await run.call.transfer(self._render(run, node.extension), context)
        run.result = "transferred"
        return "transferred"

    async def _conference(self, run: _Run, node: ConferenceNode) -> str:
        assert node.room is not None
        room = self._render(run, node.room)
        if not CONFERENCE_ROOM.fullmatch(room):
            raise FlowRuntimeError(f"conference '{node.id}': room {room!r} is not a room name "
                                   "(letters, digits, '_', '.', '-'; 1 to 64)")
        left = await run.call.conference(room)  # a hangup in the room raises CallGone
        if left != "left":
            raise FlowRuntimeError(f"conference '{node.id}': Call.conference returned {left!r}, not 'left'")
        return "next"

    async def _record_call(self, run: _Run, node: RecordCallNode) -> str:
        if self.recordings is None:
            raise FlowRuntimeError(f"record_call '{node.id}': no call recording is configured for this controller "
                                   "(the site's 'recordings:' section; FlowRunner(recordings=...))")
        call = run.call
        try:
            if node.action == "start":
                name = self._render(run, node.name) if node.name is not None else call.uuid
                started = await self.recordings.start(call, name)
                run.variables["recording_path"] = started.path
                return "next"
            done = await getattr(self.recordings, node.action)(call)
        except CallGone:
            raise
        except CallError as exc:  # the switch refused: the call goes on (`failed` falls back to `next`)
            log.warning("record_call %s: %s failed: %s", node.id, node.action, exc,
                        extra={"call": call.uuid, "node": node.id})
            return "failed"
        if not done:
            log.info("record_call %s: nothing to %s (no recording %s)", node.id, node.action,
                     "paused" if node.action == "resume" else "running",
                     extra={"call": call.uuid, "node": node.id})
        return "next"

    # -- dial and prepaid -----------------------------------------------------------------------

    def _dial_spec(self, run: _Run, node: DialNode) -> DialSpec:
        groups = []
        for group in node.groups:
            targets = []
            for spec in group.targets:
                address = self._render(run, spec.address).strip()
                if not address:
                    continue  # e.g. `${var.mobile}` when the caller has none: skip, ring the rest
                if spec.kind == "uri" and not address.startswith(("sip:", "sips:")):
                    log.warning("dial %s: skipping target %r, not a sip: or sips: URI", node.id, address,
                                extra={"call": run.call.uuid, "node": node.id})
                    continue
                timeout = spec.timeout if spec.timeout is not None else group.timeout
                targets.append(DialTarget(spec.kind, address, spec.gateway, timeout))
            if targets:
                groups.append(tuple(targets))
        cid_number = self._render(run, node.caller_id_number) if node.caller_id_number else None
        cid_name = self._render(run, node.caller_id_name) if node.caller_id_name else None
        spec = DialSpec(groups=tuple(groups), timeout=node.timeout,
                        caller_id_number=cid_number or None, caller_id_name=cid_name or None)
        if node.ringback_none:
            spec = replace(spec, ringback=None)
        elif node.ringback is not None:
            spec = replace(spec, ringback=self._prompt(run, node.ringback))
        return spec  # else the Call contract's default ringback tone

    async def _dial(self, run: _Run, node: DialNode) -> str:
        spec = self._dial_spec(run, node)
        auth, run.auth = run.auth, None  # an authorization pays for one dial, whatever happens
        if auth is None and run.prepaid_ran:
            raise FlowRuntimeError(f"dial '{node.id}': the last prepaid authorization was refused or already "
                                   "used by a dial; a paid dial needs a prepaid node of its own")
        if auth is not None:
            billing = self.billing
            assert billing is not None  # a prepaid node only authorizes with billing configured
            call = run.call

            async def on_answer(answer: DialAnswer) -> None:
                await billing.on_answer(call, auth, answer)

            spec = replace(spec, variables={**auth.dial_variables}, on_answer=on_answer)
        result: DialResult | None = None
        transfers, next_flow = 0, None
        try:
            if not spec.groups:
                result = DialResult(DialOutcome.FAILED, NO_TARGET_CAUSE)
            elif auth is None and self.transfers is not None:
                # Only unpaid dials are transferable: a transfer would hand the time the caller's
                # authorization pays for to someone else.
                data = _call_data(run.variables)
                context = DialContext(flow=run.flow.name, node=node.id, path=tuple(run.path),
                                      variables=data, feature_codes=node.feature_codes)
                moved = await self.transfers.dial(run.call, spec, context)
                result, transfers, next_flow = moved.result, moved.transfers, moved.flow
                for key, value in moved.data.items():
                    run.variables[f"{DATA_VARIABLE_PREFIX}{key}"] = str(value)
            else:
                result = await run.call.dial(spec)
        finally:
            if auth is not None:
                assert self.billing is not None
                await self.billing.on_dial_end(run.call, auth, result)
        assert result is not None
        run.variables.update(
            dial_outcome=result.outcome.value,
            dial_cause=result.cause,
            dial_talk_ms=str(result.talk_us // 1000),
            dial_peer=result.peer_uuid or "",
            dial_transfers=str(transfers),
        )
        if next_flow is not None:  # a blind transfer sent the caller to another flow
            return self._enter_flow(run, next_flow, f"dial '{node.id}'")
        if result.outcome is DialOutcome.ANSWERED:
            if result.caller_hung_up:  # the caller ended the bridge: nothing more to run
                run.result, run.cause = "caller_hangup", result.cause
                return "caller_hangup"
            return "next"
        return result.outcome.value

    async def _prepaid(self, run: _Run, node: PrepaidNode) -> str:
        if self.billing is None:
            raise FlowRuntimeError(f"prepaid '{node.id}': no billing is configured for this controller "
                                   "(FlowRunner(billing=...)), so no call can be authorized")
        assert node.account is not None and node.destination is not None
        request = PrepaidRequest(
            account=self._render(run, node.account),
            destination=self._render(run, node.destination),
            pin=self._render(run, node.pin) if node.pin is not None else None,
        )
        if run.auth is not None:  # authorized again before dialling: the older one is not needed
            await self._release_unused(run, node.id)
        run.prepaid_ran = True
        auth = await self.billing.authorize(run.call, request)
        if auth.outcome is AuthorizeOutcome.OK:
            run.auth = auth
        run.variables.update(
            prepaid_outcome="ok" if auth.outcome is AuthorizeOutcome.OK else auth.outcome.value,
            prepaid_max_seconds=str(auth.max_seconds if auth.outcome is AuthorizeOutcome.OK else 0),
        )
        return auth.outcome.value

    # -- voicemail ------------------------------------------------------------------------------

    def _voicemail_service(self, node: Node) -> VoicemailService:
        if self.voicemail is None:
            raise FlowRuntimeError(f"{node.kind} '{node.id}': no voicemail is configured for this controller "
                                   "(FlowRunner(voicemail=...))")
        return self.voicemail

    async def _voicemail(self, run: _Run, node: VoicemailNode) -> str:
        service = self._voicemail_service(node)
        assert node.mailbox is not None
        call = run.call
        number = self._render(run, node.mailbox).strip()
        box = await service.mailbox(number) if number else None
        if box is None:
            run.variables.update(voicemail_outcome="no_mailbox", voicemail_message="")
            return "no_mailbox"
        if box.greeting:
            await call.play([box.greeting])  # the owner's own recording, a file on the switch
        elif node.greeting:
            await call.play([self._prompt(run, p) for p in node.greeting])
        else:
            await call.play([self._resolve(vm_prompts.VM_PERSON)])
            await call.say(number, SayKind.DIGITS)
            await call.play([self._stock(run, vm_prompts.VM_NOT_AVAILABLE), self._stock(run, vm_prompts.VM_RECORD)])
        spec = RecordSpec(path=service.recording_path(box, call), max_seconds=node.max_seconds,
                          silence_seconds=node.silence_seconds)
        result = await call.record(spec)
        # Kept whatever happens next: a caller who hung up after speaking left a message.
        message = await service.store_message(call, box, spec, result)
        run.variables.update(voicemail_outcome="stored" if message is not None else "too_short",
                             voicemail_message=str(message.id) if message is not None else "")
        if result.reason == "hangup":
            raise CallGone(call.hangup_cause or "NORMAL_CLEARING")
        return "next"

    def _stock(self, run: _Run, name: str) -> str:
        """A stock voicemail sound (model.VM_*): the site's own file of that name if it has one,
        else the name for the switch to resolve against its sound prefix."""
        return self._resolve(name)

    async def _voicemail_check(self, run: _Run, node: VoicemailCheckNode) -> str:
        service = self._voicemail_service(node)
        assert node.mailbox is not None
        call = run.call
        number = self._render(run, node.mailbox).strip()
        run.variables.update(voicemail_new="0", voicemail_heard="0")
        pin_spec = CollectSpec(min_digits=1, max_digits=16, timeout=10.0, inter_digit_timeout=5.0, terminators="#")
        failed: list[str] = []
        for _ in range(node.tries):
            result = await call.collect(replace(pin_spec, prompts=[*failed, self._stock(run, vm_prompts.VM_ENTER_PASS)]))
            failed = [self._stock(run, vm_prompts.VM_FAIL_AUTH)]
            if result.outcome is CollectOutcome.TIMEOUT or not result.digits:
                continue
            # An unknown mailbox is checked like a wrong PIN: the caller cannot probe which exist.
            check = await service.check_pin(number, result.digits) if number else PinCheck.INVALID
            if check is PinCheck.OK:
                break
            if check is PinCheck.LOCKED:
                await call.play(failed)
                return "locked"
        else:
            await call.play(failed)
            return "bad_pin"
        messages = (await service.messages(number))[:MAX_MESSAGES_PLAYED]
        new = sum(1 for m in messages if m.state == "new")
        run.variables["voicemail_new"] = str(new)
        await call.play([self._stock(run, vm_prompts.VM_YOU_HAVE)])
        await call.say(str(new), SayKind.NUMBER)
        await call.play([self._stock(run, vm_prompts.VM_NEW), self._stock(run, vm_prompts.VM_MESSAGES)])
        menu = CollectSpec(min_digits=1, max_digits=1, timeout=5.0, terminators="", pattern="[179]")
        for heard, message in enumerate(messages, start=1):
            # The message is the menu's first prompt: the caller may press 7 or 9 while it plays.
            choice = await call.collect(replace(menu, prompts=[message.path, self._stock(run, vm_prompts.VM_MESSAGE_MENU)]))
            run.variables["voicemail_heard"] = str(heard)
            key = choice.digits if choice.outcome is CollectOutcome.OK else "1"  # nothing/other: next
            if key == "7":
                await service.set_state(number, message.id, "deleted")
                await call.play([self._stock(run, vm_prompts.VM_DELETED)])
            elif key == "9":
                await service.set_state(number, message.id, "saved")
                await call.play([self._stock(run, vm_prompts.VM_SAVED)])
        await call.play([self._stock(run, vm_prompts.VM_NO_MORE)])
        return "next"
