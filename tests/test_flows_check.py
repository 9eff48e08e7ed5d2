"""Unit tests of flow checking pieces: templates, time conditions, prompt lookup, usable flow set."""

from __future__ import annotations

import datetime as dt

import pytest

from switchctl.flows import prompt_exists
from switchctl.flows.template import TemplateError, parse_template
from switchctl.flows.timecond import parse_dates, parse_days, parse_time_ranges

from .fakecall import check_texts


def test_template_parts_and_render():
    tpl = parse_template("ivr/${var.lang}/x-${1}-${caller}")
    assert [r.scope for r in tpl.refs] == ["var", "capture", "call"]
    values = {"var": "fr", "capture": "7", "call": "555"}
    assert tpl.render(lambda ref: values[ref.scope]) == "ivr/fr/x-7-555"
    assert parse_template("plain").is_literal


@pytest.mark.parametrize("bad", ["${0}", "${foo}", "${var.}", "${var.a-b}", "${x", "${ caller}"])
def test_template_rejects(bad):
    with pytest.raises(TemplateError):
        parse_template(bad)


def test_time_ranges_wrap_midnight_and_end_exclusive():
    (night,) = parse_time_ranges("22:00-06:00")
    assert night.contains(23 * 60) and night.contains(5 * 60 + 59) and not night.contains(6 * 60)
    day, evening = parse_time_ranges("08:00-12:00, 14:00-24:00")
    assert day.contains(8 * 60) and not day.contains(12 * 60) and evening.contains(23 * 60 + 59)


def test_days_and_dates():
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days(["fri-mon"]) == frozenset({4, 5, 6, 0})
    assert parse_days("Saturday,sun") == frozenset({5, 6})
    (xmas_week,) = parse_dates(["12-24..01-02"])
    assert xmas_week.contains(dt.date(2024, 12, 31)) and xmas_week.contains(dt.date(2025, 1, 2))
    assert not xmas_week.contains(dt.date(2025, 1, 3))
    (once,) = parse_dates([dt.date(2030, 5, 1)])
    assert once.contains(dt.date(2030, 5, 1)) and not once.contains(dt.date(2031, 5, 1))
    with pytest.raises(ValueError):
        parse_dates(["2030-01-05..2030-01-01"])


def test_prompt_lookup(tmp_path):
    (tmp_path / "ivr").mkdir()
    (tmp_path / "ivr" / "hello.ogg").write_bytes(b"x")
    assert prompt_exists("ivr/hello", [tmp_path]) and prompt_exists("ivr/hello.ogg", [tmp_path])
    assert prompt_exists(str(tmp_path / "ivr" / "hello"), [])
    assert not prompt_exists("ivr/bye", [tmp_path])
    assert prompt_exists("tone_stream://%(100,0,440)", []) and prompt_exists("silence_stream://5", [])


GOOD = """
flow: good
numbers: ["1"]
nodes:
  a: {type: transfer, flow: bad}
"""
BAD = """
flow: bad
nodes:
  a: {type: hangup, cause: NOPE}
"""
ALONE = """
flow: alone
numbers: ["2"]
nodes:
  a: {type: hangup}
"""


def test_only_flows_without_errors_are_usable(tmp_path):
    result = check_texts(tmp_path, GOOD, BAD, ALONE)
    assert not result.ok and len(result.errors) == 1
    # `good` has no error of its own, but it transfers into `bad`, so it is not usable either
    assert [f.name for f in result.flows] == ["alone"]
    assert result.flows.match("2")[0].name == "alone" and result.flows.match("1") is None


def test_diagnostics_are_sorted_and_formatted(tmp_path):
    result = check_texts(tmp_path, "flow: x\nnodes:\n  a: {type: goto, target: b}\n  b: {type: goto, target: a}\n",
                         "flow: y\nnodes:\n  a: {type: hangup, cause: NOPE}\n")
    lines = result.report().splitlines()
    assert lines[0].startswith("flow0.yaml:3:3: loop without a bound: a -target-> b -target-> a")
    assert lines[1].startswith("flow1.yaml:3:28: hangup 'a': unknown hangup cause 'NOPE'")
    keys = [d.sort_key() for d in result.diagnostics]
    assert keys == sorted(keys)


def test_bounded_loops_pass(tmp_path):
    result = check_texts(tmp_path, """
flow: ok
numbers: ["1"]
nodes:
  m:
    type: menu
    greeting: ivr/m
    on: {"1": sub, "9": m, timeout: again, invalid: m, exhausted: bye}
  again: {type: goto, target: m, max: 2, on: {exhausted: bye}}
  sub:
    type: collect
    prompt: ivr/pin
    next: m
    on: {timeout: m, invalid: sub}
  bye: {type: hangup}
""")
    assert result.ok, result.report()


def test_missing_file_is_a_diagnostic(tmp_path):
    from switchctl.flows import check_flows

    result = check_flows([tmp_path / "nope.yaml"], sound_dirs=[], site_values={}, lists={}, display_root=tmp_path)
    assert [str(d) for d in result.diagnostics] == ["nope.yaml:1:1: no such file"]
