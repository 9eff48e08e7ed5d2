"""The `number` flow node (number analysis + screening) and the route `holiday` condition."""

from __future__ import annotations

import datetime as dt

import pytest

from switchctl.flows import FlowRunner, FlowSet
from switchctl.numbering import (
    Delete,
    HolidayCalendar,
    Insert,
    Lists,
    Numbering,
    NumberPlan,
    Rule,
    Screening,
    ScreenList,
    TenantScreening,
    parse_dates,
)

from .fakecall import ScriptedCall, check_texts

NUMBERING = Numbering(
    plans={"main": NumberPlan("main", [
        Rule("00", "international", min_length=6),
        Rule("0[67]", "mobile", 10, 10),
        Rule("0", "local", 10, 10, (Delete(0, 1), Insert(0, "0033"))),
        Rule("112", "emergency", 3, 3),
        Rule("1[578]", "emergency", 2, 2),
        Rule("10", "booth", 4, 4),
    ], plus="00")},
    screening=Screening({
        "default": TenantScreening(callers=Lists(black=ScreenList(["=666"])),
                                   destinations=Lists(black=ScreenList(["0899"]))),
        "kiosk": TenantScreening(destinations=Lists(black=ScreenList(["all"]), white=ScreenList(["112"]))),
    }),
    holidays={"france": HolidayCalendar("france", parse_dates(["12-25", "2026-05-14"]))},
)

OUT = """
flow: out
patterns: ['^(\\+?[0-9a-z]+)$']
nodes:
  analyze:
    type: number
    plan: main
    next: national
    on: {international: abroad, emergency: sos}
    blocked: refused
    invalid_number: bad
    no_route: unknown
  national: {type: set, vars: {r: "national ${var.number_route} ${var.number_out}"}, next: bye}
  abroad: {type: set, vars: {r: "abroad ${var.number_out}"}, next: bye}
  sos: {type: set, vars: {r: "sos ${var.number_out}"}, next: bye}
  refused: {type: set, vars: {r: "refused ${var.number_blocked_by} ${var.number_blocked_entry}"}, next: bye}
  bad: {type: set, vars: {r: "bad"}, next: bye}
  unknown: {type: set, vars: {r: "unknown"}, next: bye}
  bye: {type: hangup}
"""


def flows_of(tmp_path, *texts, numbering=NUMBERING) -> FlowSet:
    result = check_texts(tmp_path, *texts) if numbering is None else _check(tmp_path, texts, numbering)
    assert result.ok, result.report()
    return result.flows


def _check(tmp_path, texts, numbering, site_values=None):
    from switchctl.flows import check_flows

    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"flow{i}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return check_flows(paths, sound_dirs=[], site_values=site_values or {}, lists={}, numbering=numbering,
                       display_root=tmp_path)


async def run(flows: FlowSet, call: ScriptedCall, numbering=NUMBERING, **kw):
    match = flows.match(call.info.destination)
    assert match is not None
    flow, captures = match
    return await FlowRunner(flows, site_values={}, lists={}, numbering=numbering, **kw).run(call, flow, captures)


@pytest.mark.parametrize("caller, destination, result", [
    ("1001", "0612345678", "national mobile 0612345678"),  # a route without its own branch takes next
    ("1001", "0142345678", "national local 0033142345678"),
    ("1001", "1005", "national booth 1005"),
    ("1001", "+442071234567", "abroad 00442071234567"),
    ("1001", "112", "sos 112"),
    ("1001", "15", "sos 15"),
    ("1001", "0899123456", "refused destination 0899"),
    ("666", "0612345678", "refused caller =666"),
    ("1001", "1" * 29, "bad"),
    ("1" * 21, "0612345678", "bad"),
    ("1001", "12ab", "bad"),
    ("1001", "999", "unknown"),
])
async def test_number_node_outcomes(tmp_path, caller: str, destination: str, result: str) -> None:
    trace = await run(flows_of(tmp_path, OUT), ScriptedCall(caller=caller, destination=destination))
    assert trace.result == "hangup", trace.error
    assert trace.variables["r"] == result
    assert trace.steps[0][2] in ("mobile", "local", "booth", "international", "emergency", "blocked",
                                 "invalid_number", "no_route")


async def test_number_node_variables_and_trace(tmp_path) -> None:
    trace = await run(flows_of(tmp_path, OUT), ScriptedCall(destination="0899123456"))
    assert trace.steps[0] == ("out", "analyze", "blocked")
    assert {k: v for k, v in trace.variables.items() if k.startswith("number_")} == {
        "number_route": "", "number_out": "", "number_blocked_by": "destination", "number_blocked_entry": "0899"}


TENANT = """
flow: kiosk
patterns: ['^([0-9]+)$']
nodes:
  analyze:
    type: number
    plan: main
    number: "${1}"
    caller: "${var.who}"
    tenant: "${site.tenant}"
    next: ok
    blocked: refused
    no_route: unknown
  ok: {type: set, vars: {r: "ok ${var.number_out}"}, next: bye}
  refused: {type: set, vars: {r: "refused ${var.number_blocked_entry}"}, next: bye}
  unknown: {type: set, vars: {r: "unknown"}, next: bye}
  bye: {type: hangup}
"""


@pytest.mark.parametrize("tenant, destination, result", [
    ("kiosk", "112", "ok 112"),
    ("kiosk", "0612345678", "refused all"),
    ("default", "0612345678", "ok 0612345678"),
    ("kiosk", "12345678901234567890123456789", "unknown"),  # invalid_number falls back to no_route
])
async def test_tenant_number_and_caller_are_templates(tmp_path, tenant: str, destination: str, result: str) -> None:
    result_check = _check(tmp_path, [TENANT.replace("${var.who}", "${caller}")], NUMBERING, {"tenant": tenant})
    assert result_check.ok, result_check.report()
    flows = result_check.flows
    flow = flows["kiosk"]
    trace = await FlowRunner(flows, site_values={"tenant": tenant}, lists={}, numbering=NUMBERING).run(
        ScriptedCall(destination=destination), flow, (destination,))
    assert trace.variables["r"] == result, trace.error


async def test_number_node_without_numbering_is_a_flow_error(tmp_path) -> None:
    call = ScriptedCall(destination="112")
    trace = await run(flows_of(tmp_path, OUT), call, numbering=None)
    assert trace.result == "error" and "no numbering plan 'main'" in trace.error
    assert call.names()[-1] == "hangup"


HOLIDAY = """
flow: hours
numbers: ["9000"]
nodes:
  hours:
    type: route
    timezone: Europe/Paris
    rules:
      - {holiday: france, next: closed}
      - {holiday: [christmas, france], time: "08:00-09:00", next: closed}
      - {time: "08:00-18:00", next: open}
    default: closed
  open: {type: set, vars: {r: open}, next: bye}
  closed: {type: set, vars: {r: closed}, next: bye}
  bye: {type: hangup}
"""


@pytest.mark.parametrize("when, result", [
    (dt.datetime(2030, 12, 25, 10, 0, tzinfo=dt.timezone.utc), "closed"),  # yearly holiday
    (dt.datetime(2026, 5, 14, 10, 0, tzinfo=dt.timezone.utc), "closed"),  # one-off holiday
    (dt.datetime(2027, 5, 14, 10, 0, tzinfo=dt.timezone.utc), "open"),
    (dt.datetime(2030, 12, 24, 23, 30, tzinfo=dt.timezone.utc), "closed"),  # already the 25th in Paris
    (dt.datetime(2030, 12, 24, 22, 30, tzinfo=dt.timezone.utc), "closed"),  # 23:30 in Paris: after hours
    (dt.datetime(2030, 12, 24, 12, 0, tzinfo=dt.timezone.utc), "open"),
])
async def test_route_holiday_condition(tmp_path, when: dt.datetime, result: str) -> None:
    numbering = Numbering(holidays={**NUMBERING.holidays,
                                    "christmas": HolidayCalendar("christmas", parse_dates(["12-24"]))})
    flows = flows_of(tmp_path, HOLIDAY, numbering=numbering)
    trace = await run(flows, ScriptedCall(destination="9000"), numbering=numbering, clock=lambda: when)
    assert trace.variables["r"] == result, trace.error


async def test_holiday_without_calendars_is_a_flow_error(tmp_path) -> None:
    flows = check_texts(tmp_path, HOLIDAY).flows  # checked without the site: calendars not verified
    trace = await run(flows, ScriptedCall(destination="9000"), numbering=None)
    assert trace.result == "error" and "unknown holiday calendar 'france'" in trace.error


# --- check: what needs the site's numbering -------------------------------------------------------

SITE_ERRORS = """\
flow: out
numbers: ["8000"]
nodes:
  analyze:
    type: number
    plan: mian
    next: hours
    on: {mobil: bye, emergency: bye}
    blocked: bye
    no_route: bye
  hours:
    type: route
    rules:
      - {holiday: frnace, next: bye}
      - {holiday: [france, xmas], next: bye}
    default: again
  again: {type: number, plan: main, next: bye, on: {mobil: bye, international: bye}, blocked: bye, no_route: bye}
  bye: {type: hangup}
"""


def test_check_against_the_site_numbering(tmp_path) -> None:
    result = _check(tmp_path, [SITE_ERRORS], NUMBERING)
    assert result.report() == (
        "flow0.yaml:6:11: number 'analyze': unknown numbering plan 'mian' (did you mean 'main'?) (site has: main)\n"
        "flow0.yaml:14:19: route 'hours': unknown holiday calendar 'frnace' (did you mean 'france'?) (site has: france)\n"
        "flow0.yaml:15:28: route 'hours': unknown holiday calendar 'xmas' (site has: france)\n"
        "flow0.yaml:17:53: number 'again': plan 'main' has no route 'mobil' (did you mean 'mobile'?) "
        "(routes: booth, emergency, international, local, mobile)\n"
    )


def test_without_the_site_numbering_only_the_schema_is_checked(tmp_path) -> None:
    assert check_texts(tmp_path, SITE_ERRORS).ok


def test_example_flows_check_clean_with_the_site_numbering() -> None:
    from pathlib import Path

    from switchctl.config.site import load_site
    from switchctl.sitecheck import flow_files

    root = Path(__file__).resolve().parent.parent
    for name in ("phonebar", "phonebar-asterisk"):
        site = load_site(root / "examples" / name / "site.yaml")
        result = _check_paths(flow_files(site), site)
        assert result.ok, result.report()


def _check_paths(paths, site):
    from switchctl.flows import check_flows

    return check_flows(paths, sound_dirs=list(site.sound_dirs), site_values=dict(site.values),
                       lists={k: list(v) for k, v in site.lists.items()},
                       known_extensions={p.extension for p in site.phones},
                       known_gateways={g.name for g in site.gateways}, numbering=site.numbering)
