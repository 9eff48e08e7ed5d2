"""A scripted in-memory `Call` for unit tests of flows and features.

The caller's key presses come from `script`, one item per `collect` try:
- `"123"`: the caller typed 123 (a `#` ends the entry early, like a terminator);
- `"timeout"` or `None`: nothing pressed;
- a `CollectResult`: returned as is.
When the script runs out the caller stays silent (every further try times out).

The fake applies the spec like a switch does: input stops at `max_digits` or a terminator, fewer
than `min_digits` or a failed `pattern` is INVALID. Every operation is recorded in `ops`; the caller
`records` scripts `record`: a RecordResult or a reason ("terminator", "silence", "max_time",
"hangup"); by default the caller speaks 3 s and presses #. `dials` scripts the `dial` operations the same way, one item per dial: a `DialResult`, or an outcome
name (`"answered"`, `"busy"`, ...) from which a result with the usual cause is made; when it runs out
every dial fails with NO_ANSWER. An ANSWERED dial awaits `spec.on_answer` first. The caller
can hang up at a chosen operation (`hangup_at=("collect", 2)`: during the 2nd collect), and an
operation can fail on the switch (`fail_at=("play", 1)` raises CallError).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from switchctl.switch.call import (
    Call,
    CallError,
    CallGone,
    CallInfo,
    CollectOutcome,
    CollectResult,
    CollectSpec,
    DialAnswer,
    DialOutcome,
    DialResult,
    DialSpec,
    Leg,
    RecordResult,
    RecordSpec,
    Recording,
    SayKind,
)

ScriptItem = str | None | CollectResult
DialItem = str | DialResult

# The cause each scripted dial outcome carries by default (what the switches report, captures s3).
SCRIPTED_DIAL_CAUSE = {
    "answered": "NORMAL_CLEARING",
    "busy": "USER_BUSY",
    "no_answer": "NO_ANSWER",
    "rejected": "CALL_REJECTED",
    "failed": "NORMAL_TEMPORARY_FAILURE",
}


class ScriptedCall(Call):
    def __init__(
        self,
        script: Iterable[ScriptItem] = (),
        *,
        caller: str = "1000",
        caller_name: str = "Alice",
        destination: str = "9000",
        uuid: str = "call-1",
        variables: Mapping[str, str] | None = None,
        hangup_at: tuple[str, int] | None = None,
        fail_at: tuple[str, int] | None = None,
        caller_cause: str = "NORMAL_CLEARING",
        dials: Iterable[DialItem] = (),
        records: Iterable[str | RecordResult] = (),
    ) -> None:
        self.info = CallInfo(uuid=uuid, switch="test", caller_number=caller, caller_name=caller_name,
                             destination=destination, variables=dict(variables or {}))
        self._script = iter(script)
        self._dials = iter(dials)
        self._records = iter(records)
        self.recordings: list[ScriptedRecording] = []
        self._hangup_at = hangup_at
        self._fail_at = fail_at
        self._caller_cause = caller_cause
        self._cause: str | None = None
        self.counts: Counter[str] = Counter()
        self.ops: list[tuple] = []

    # -- helpers for assertions ---------------------------------------------------------------

    def names(self) -> list[str]:
        return [op[0] for op in self.ops]

    def played(self) -> list[str]:
        """Every prompt the caller heard, in order (plays and collect prompts)."""
        out: list[str] = []
        for op in self.ops:
            if op[0] == "play":
                out.extend(op[1])
            elif op[0] == "collect":
                out.extend(op[1].prompts)
        return out

    def collects(self) -> list[CollectSpec]:
        return [op[1] for op in self.ops if op[0] == "collect"]

    # -- Call -----------------------------------------------------------------------------------

    def _enter(self, name: str, *args: object) -> None:
        self.counts[name] += 1
        self.ops.append((name, *args))
        if self._cause is not None:
            raise CallGone(self._cause)
        if self._hangup_at == (name, self.counts[name]):
            self._cause = self._caller_cause
            raise CallGone(self._cause)
        if self._fail_at == (name, self.counts[name]):
            raise CallError(f"scripted failure of {name} #{self.counts[name]}")

    @property
    def hangup_cause(self) -> str | None:
        return self._cause

    async def answer(self) -> None:
        self._enter("answer")
        self.info.answered = True

    async def play(self, prompts: Sequence[str]) -> None:
        self._enter("play", tuple(prompts))

    async def say(self, value: str, kind: SayKind, language: str = "en") -> None:
        self._enter("say", value, kind.value, language)

    async def collect(self, spec: CollectSpec) -> CollectResult:
        self._enter("collect", spec)
        item = next(self._script, None)
        if isinstance(item, CollectResult):
            return item
        if item is None or item == "timeout":
            return CollectResult(CollectOutcome.TIMEOUT)
        return apply_spec(spec, item)

    async def dial(self, spec: DialSpec) -> DialResult:
        self._enter("dial", spec)
        item = next(self._dials, "no_answer")
        if isinstance(item, str):
            target = next((t for group in spec.groups for t in group), None)
            outcome = DialOutcome(item)
            answered = outcome is DialOutcome.ANSWERED
            item = DialResult(outcome, SCRIPTED_DIAL_CAUSE[item], target=target,
                              peer_uuid=f"{self.uuid}-b" if answered else None,
                              answered_at_us=1_700_000_000_000_000 if answered else 0,
                              ended_at_us=1_700_000_060_000_000 if answered else 0)
        if item.outcome is DialOutcome.ANSWERED and spec.on_answer is not None:
            assert item.target is not None and item.peer_uuid is not None
            await spec.on_answer(DialAnswer(item.peer_uuid, item.target, item.answered_at_us))
        if item.caller_hung_up:
            self._cause = item.cause
        return item

    async def announce(self, prompt: str) -> None:
        self._enter("announce", prompt)

    async def record(self, spec: RecordSpec) -> RecordResult:
        self._enter("record", spec)
        item = next(self._records, None)
        if isinstance(item, RecordResult):
            return item
        return RecordResult(spec.path, item or "terminator", 3_000_000, "#" if item in (None, "terminator") else None)

    async def start_recording(self, path: str) -> Recording:
        self._enter("start_recording", path)
        recording = ScriptedRecording(path, self)
        self.recordings.append(recording)
        return recording

    async def hold(self, music: str | None = None) -> None:
        self._enter("hold", music)

    async def bridge(self, leg: Leg) -> DialResult:
        self._enter("bridge", leg.uuid)
        return DialResult(DialOutcome.ANSWERED, "NORMAL_CLEARING", peer_uuid=leg.uuid)

    async def conference(self, room: str) -> str:
        self._enter("conference", room)
        return "left"

    async def transfer(self, extension: str, context: str | None = None) -> None:
        self._enter("transfer", extension, context)
        self._cause = "BLIND_TRANSFER"

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.ops.append(("hangup", cause))
        self.counts["hangup"] += 1
        if self._cause is None:
            self._cause = cause

    async def schedule_hangup(self, seconds: float, cause: str = "ALLOTTED_TIMEOUT", *,
                              at_us: int | None = None) -> None:
        self._enter("schedule_hangup", seconds, cause)

    async def set_variable(self, name: str, value: str) -> None:
        self._enter("set_variable", name, value)
        self.info.variables[name] = value

    async def get_variable(self, name: str) -> str | None:
        self._enter("get_variable", name)
        return self.info.variables.get(name)

    async def wait_hangup(self) -> str:
        if self._cause is None:
            raise AssertionError("ScriptedCall.wait_hangup: nothing will ever hang this call up")
        return self._cause


class ScriptedRecording(Recording):
    """A background recording of a ScriptedCall: its pause/resume/stop calls land in the call's ops."""

    def __init__(self, path: str, call: ScriptedCall) -> None:
        self.path = path
        self.call = call
        self.state = "recording"

    async def pause(self) -> None:
        self.call.ops.append(("recording_pause", self.path))
        self.state = "paused"

    async def resume(self) -> None:
        self.call.ops.append(("recording_resume", self.path))
        self.state = "recording"

    async def stop(self) -> None:
        self.call.ops.append(("recording_stop", self.path))
        self.state = "stopped"


def apply_spec(spec: CollectSpec, pressed: str) -> CollectResult:
    """What a switch reports for `pressed` under `spec` (one try)."""
    digits, terminator = "", None
    for key in pressed:
        if key in spec.terminators:
            terminator = key
            break
        digits += key
        if len(digits) >= spec.max_digits:
            break
    if not digits and terminator is None:
        return CollectResult(CollectOutcome.TIMEOUT)
    if len(digits) < spec.min_digits or (spec.pattern is not None and not re.fullmatch(spec.pattern, digits)):
        return CollectResult(CollectOutcome.INVALID, digits, terminator)
    return CollectResult(CollectOutcome.OK, digits, terminator)


def check_texts(directory, *texts: str, site_values: Mapping[str, str] | None = None,
                lists: Mapping[str, Sequence[str]] | None = None, known_extensions=None,
                known_gateways=None):
    """Write flow texts as files under `directory` and check them; every `ivr/...` prompt exists.

    Returns the CheckResult (tests of the runtime assert `.ok` first).
    """
    from pathlib import Path

    from switchctl.flows import check_flows

    directory = Path(directory)
    sounds = directory / "sounds"
    paths = []
    for i, text in enumerate(texts):
        for prompt in re.findall(r"\bivr/[\w/]+", text):
            (sounds / prompt).parent.mkdir(parents=True, exist_ok=True)
            (sounds / f"{prompt}.wav").write_bytes(b"RIFF")
        path = directory / f"flow{i}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return check_flows(paths, sound_dirs=[sounds], site_values=site_values or {}, lists=lists or {},
                       known_extensions=known_extensions, known_gateways=known_gateways,
                       display_root=directory)
