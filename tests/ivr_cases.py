"""The example phone-bar IVR as one table of calls with their expected outcomes, for every backend.

Each case is a call: the number dialled, what the caller does (keys with their timing, or hanging
up), and what must come out of it: the flow steps, the flow's result and hangup cause, where a
transfer sent the call, and the prompts the caller was played, in order. Two thin runners feed every
case to their switch and assert exactly these expectations:

- tests/test_ivr_sim.py: the FreeSWITCH simulator, or a real FreeSWITCH (SWITCHCTL_FS_ESL);
- tests/test_asterisk_ivr.py: a real Asterisk (sipp callers sending RFC 2833 DTMF).

Both run the same flows, tests/sites/ivr/dialplans/ (the example's, menu timeouts 2 s and
inter-digit 1 s so a real switch gets through the table quickly). What really differs between the
switches lives in each runner's small adapter, never here.

How the runners read the caller's actions:
- the simulator/FreeSWITCH driver (switchctl.calldriver) plays one action per digit collection the
  call starts, shortly after it starts: `Keys("1005")` is one press of four digits, `Keys("")` a try
  left silent, `HangUp()` the caller hanging up during that try; tries past the list are silent.
- a real Asterisk caller is a sipp RTP stream with DTMF at fixed times: each action starts `after`
  seconds after the previous one (the first after the call is answered), the digits of one action
  `DIGIT_GAP` apart. The timings are chosen so that each action lands in the same collection as on
  the simulator (the prompt lengths are in examples/phonebar/sounds/).

Prompts are compared by name: a sound by its file stem ("welcome"), a number said digit by digit as
"digits:<number>".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE_DIR = Path(__file__).resolve().parent / "sites" / "ivr"
SITE_FILE = SITE_DIR / "site.yaml"
FLOWS_DIR = SITE_DIR / "dialplans"
EXAMPLE_FLOWS_DIR = ROOT / "examples" / "phonebar" / "dialplans"
SOUNDS_DIR = ROOT / "examples" / "phonebar" / "sounds"

DIGIT_GAP = 0.25  # seconds between the digits of one action on a timed (RTP) caller
OPERATOR = "1000"  # the site's `operator` value (tests/sites/ivr/site.yaml)

Step = tuple[str, str, str]  # (flow, node, outcome), as in FlowTrace.steps


@dataclass(frozen=True)
class Keys:
    """The caller types `digits` ("" = stays silent through one menu try)."""

    digits: str
    after: float = 1.0


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up."""

    after: float = 1.0


Action = Keys | HangUp


@dataclass(frozen=True)
class IvrCase:
    id: str
    caller: str  # different for every case: a runner tells concurrent calls apart by it
    number: str
    actions: tuple[Action, ...]
    steps: tuple[Step, ...]  # every step of the flow run, in order
    result: str  # FlowTrace.result: hangup / transferred / caller_hangup
    cause: str | None  # FlowTrace.cause (None for a transfer out of the controller)
    prompts: tuple[str, ...]  # every prompt the caller was played, in order
    transfer_to: str | None = None  # the number a `transferred` call was sent on to

    @property
    def path(self) -> list[str]:
        return [node for _flow, node, _outcome in self.steps]

    @property
    def caller_hangs_up(self) -> bool:
        return any(isinstance(a, HangUp) for a in self.actions)


def _main(*steps: tuple[str, str]) -> tuple[Step, ...]:
    return tuple(("main", node, outcome) for node, outcome in steps)


CASES: tuple[IvrCase, ...] = (
    IvrCase(
        id="menu_to_submenu_and_back_then_timeouts",
        caller="5550101",
        number="9000",
        # 1 in the main menu's greeting; 9 in the sub-menu's (welcome 0.8 s + 2 s wait, then rates_menu)
        actions=(Keys("1", after=1.2), Keys("9", after=2.0)),
        steps=_main(("answer", "next"), ("main_menu", "1"), ("rates_menu", "9"), ("main_menu", "timeout"),
                    ("goodbye", "hangup")),
        result="hangup", cause="NORMAL_CLEARING",
        # back in the main menu: its greeting, two silent retries with the short greeting, the exit sound
        prompts=("welcome", "rates_menu", "welcome", "main_short", "main_short", "goodbye"),
    ),
    IvrCase(
        id="long_greeting_first_then_short",
        caller="5550102",
        number="9000",
        actions=(),
        steps=_main(("answer", "next"), ("main_menu", "timeout"), ("goodbye", "hangup")),
        result="hangup", cause="NORMAL_CLEARING",
        prompts=("welcome", "main_short", "main_short", "goodbye"),
    ),
    IvrCase(
        id="invalid_entries_reach_invalid_outcome",
        caller="5550103",
        number="9000",
        # each wrong key ends by the 1 s inter-digit timeout, then invalid (0.65 s) + main_short play
        actions=(Keys("7", after=1.0), Keys("8", after=2.2), Keys("5", after=2.2)),
        steps=_main(("answer", "next"), ("main_menu", "invalid"), ("goodbye", "hangup")),
        result="hangup", cause="NORMAL_CLEARING",
        prompts=("welcome", "invalid", "main_short", "invalid", "main_short", "invalid", "goodbye"),
    ),
    IvrCase(
        id="direct_dial_of_a_booth_transfers_to_it",
        caller="5550104",
        number="9000",
        actions=(Keys("1005", after=1.0),),
        steps=_main(("answer", "next"), ("main_menu", "direct_dial"), ("booth", "transferred")),
        result="transferred", cause=None, transfer_to="1005",
        prompts=("welcome",),
    ),
    IvrCase(
        id="operator_option_transfers_to_site_operator",
        caller="5550105",
        number="9000",
        actions=(Keys("0", after=1.0),),
        steps=_main(("answer", "next"), ("main_menu", "0"), ("operator", "next"), ("to_operator", "transferred")),
        result="transferred", cause=None, transfer_to=OPERATOR,
        prompts=("welcome", "operator"),
    ),
    IvrCase(
        id="say_callers_number_as_digits",
        caller="5550123",
        number="9000",
        # 2 (menu done 1 s later), your_number (0.4 s) and seven digits (about 6 s on Asterisk) are
        # said by ~8.3 s; the caller hangs up in the main menu that follows (welcome 0.8 s + 2 s)
        actions=(Keys("2", after=1.0), HangUp(after=8.5)),
        steps=_main(("answer", "next"), ("main_menu", "2"), ("your_number", "next"), ("say_number", "next"),
                    ("main_menu", "caller_hangup")),
        result="caller_hangup", cause="NORMAL_CLEARING",
        prompts=("welcome", "your_number", "digits:5550123", "welcome"),
    ),
    IvrCase(
        id="transfer_to_another_flow_in_process",
        caller="5550106",
        number="9000",
        actions=(Keys("3", after=1.0),),
        steps=_main(("answer", "next"), ("main_menu", "3"), ("hours", "flow"))
        + (("hours", "answer", "next"), ("hours", "message", "next"), ("hours", "bye", "hangup")),
        result="hangup", cause="NORMAL_CLEARING",
        prompts=("welcome", "hours", "goodbye"),
    ),
    IvrCase(
        id="caller_hangs_up_in_the_middle_of_a_collect",
        caller="5550107",
        number="9000",
        actions=(HangUp(after=1.5),),
        steps=_main(("answer", "next"), ("main_menu", "caller_hangup")),
        # a BYE without a Reason header: Asterisk's cause 0, FreeSWITCH's uuid_kill NORMAL_CLEARING
        result="caller_hangup", cause="NORMAL_CLEARING",
        prompts=("welcome",),
    ),
    IvrCase(
        id="opening_hours_dialled_directly",
        caller="5550108",
        number="9001",
        actions=(),
        steps=(("hours", "answer", "next"), ("hours", "message", "next"), ("hours", "bye", "hangup")),
        result="hangup", cause="NORMAL_CLEARING",
        prompts=("hours", "goodbye"),
    ),
)

CASE_IDS = [case.id for case in CASES]
BY_ID = {case.id: case for case in CASES}


@dataclass
class Observed:
    """What a runner saw of one call, in the table's terms."""

    steps: list[Step]
    result: str
    cause: str | None
    prompts: list[str]
    transfer_to: str | None = None
    notes: list[str] = field(default_factory=list)  # backend details, shown when a check fails


def check(case: IvrCase, seen: Observed) -> None:
    """Assert that a call came out as its case says (every runner calls exactly this)."""
    where = f"{case.id} ({'; '.join(seen.notes)})" if seen.notes else case.id
    assert seen.steps == list(case.steps), f"{where}: steps {seen.steps}, expected {list(case.steps)}"
    assert (seen.result, seen.cause) == (case.result, case.cause), \
        f"{where}: result, cause {(seen.result, seen.cause)}, expected {(case.result, case.cause)}"
    assert seen.prompts == list(case.prompts), f"{where}: prompts {seen.prompts}, expected {list(case.prompts)}"
    assert seen.transfer_to == case.transfer_to, f"{where}: transferred to {seen.transfer_to}, expected {case.transfer_to}"


# The example's flows that are not part of the IVR suite: booth.yaml sells calls (prepaid, gateway);
# tests/test_example_phonebar.py covers it.
NOT_IVR_FLOWS = frozenset({"booth.yaml"})
# What a test site loading the example's whole dialplans folder needs for booth.yaml: the gateway it
# dials and the number plan it analyses with (site.yaml lines).
EXAMPLE_BOOTH_SITE_LINES = (
    "gateways:",
    "  - {name: upstream, proxy: 127.0.0.1:5090, register: false}",
    "numbering:",
    "  main:",
    '    - {prefix: "00", route: international, min_length: 6}',
    '    - {prefix: "0", route: local, length: 10}',
    '    - {prefix: "112", route: emergency, length: 3}',
    '    - {prefix: "1[578]", route: emergency, length: 2}',
)


def flows_differ_from_example() -> list[str]:
    """The suite's flows must be the example's but for the menu timeouts: the lines that differ otherwise."""
    problems: list[str] = []
    for example in sorted(EXAMPLE_FLOWS_DIR.glob("*.yaml")):
        if example.name in NOT_IVR_FLOWS:
            continue
        copy = FLOWS_DIR / example.name
        if not copy.exists():
            problems.append(f"{copy} is missing")
            continue
        ours = [line for line in copy.read_text().splitlines() if not line.startswith("# test copy:")]
        theirs = example.read_text().splitlines()
        if len(ours) != len(theirs):
            problems.append(f"{example.name}: {len(ours)} lines, the example has {len(theirs)}")
            continue
        for number, (a, b) in enumerate(zip(ours, theirs), 1):
            if a != b and not (_is_timeout(a) and _is_timeout(b)):
                problems.append(f"{example.name}:{number}: {a.strip()!r} vs the example's {b.strip()!r}")
    extra = {p.name for p in FLOWS_DIR.glob("*.yaml")} - {p.name for p in EXAMPLE_FLOWS_DIR.glob("*.yaml")} - NOT_IVR_FLOWS
    problems += [f"{name}: not in the example" for name in sorted(extra)]
    return problems


def _is_timeout(line: str) -> bool:
    key = line.strip().split(":", 1)[0]
    return key in ("timeout", "inter_digit_timeout")
