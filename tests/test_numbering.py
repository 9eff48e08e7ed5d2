"""Number plans, digit edits, screening and holiday calendars (switchctl/numbering, pure)."""

from __future__ import annotations

import datetime as dt
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchctl.numbering import (
    INVALID_NUMBER,
    MAX_CALLEE_DIGITS,
    MAX_CALLER_DIGITS,
    NO_ROUTE,
    ROUTED,
    Delete,
    EditError,
    HolidayCalendar,
    Insert,
    Lists,
    Numbering,
    NumberPlan,
    Rule,
    Screening,
    ScreenList,
    TenantScreening,
    apply_edits,
    expand_prefix,
    parse_dates,
)

PLAN = NumberPlan("main", [
    Rule("00", "international", min_length=6),
    Rule("0[67]", "mobile", 10, 10),
    Rule("0899", "premium", 10, 10),
    Rule("0", "local", 10, 10, (Delete(0, 1), Insert(0, "33"))),
    Rule("112", "emergency", 3, 3),
    Rule("1[578]", "emergency", 2, 2),
    Rule("10", "booth", 4, 4),
], plus="00")


@pytest.mark.parametrize("number, route, out", [
    ("0033612345678", "international", "0033612345678"),
    ("+33612345678", "international", "0033612345678"),  # '+' normalized to 00
    ("0612345678", "mobile", "0612345678"),
    ("0712345678", "mobile", "0712345678"),
    ("0899123456", "premium", "0899123456"),  # longer prefix than '0' wins
    ("0142345678", "local", "33142345678"),
    ("112", "emergency", "112"),
    ("15", "emergency", "15"),
    ("17", "emergency", "17"),
    ("18", "emergency", "18"),
    ("1005", "booth", "1005"),
])
def test_routes(number: str, route: str, out: str) -> None:
    result = PLAN.analyze(number)
    assert (result.outcome, result.route, result.number_out) == (ROUTED, route, out)


@pytest.mark.parametrize("number", ["16", "1000000", "0612", "99", "1125"])
def test_no_route(number: str) -> None:
    assert PLAN.analyze(number).outcome == NO_ROUTE


def test_longest_prefix_falls_back_when_length_bounds_do_not_fit() -> None:
    plan = NumberPlan("p", [Rule("0", "short", 1, 5), Rule("0612", "long", 10, 10)])
    assert PLAN.match("0612345678").route == "mobile"
    assert plan.match("0612345678").route == "long"
    assert plan.match("0612").route == "short"  # '0612' rule needs 10 digits: the shorter prefix takes it


def test_ties_go_to_file_order() -> None:
    plan = NumberPlan("p", [Rule("5", "first"), Rule("5", "second"), Rule("5", "third", 3, 3)])
    assert plan.match("512").route == "first"
    assert plan.routes == {"first", "second", "third"}


def test_catch_all_prefix() -> None:
    plan = NumberPlan("p", [Rule("", "other"), Rule("1", "one")])
    assert plan.match("1234").route == "one"
    assert plan.match("*21#").route == "other"


@pytest.mark.parametrize("number, why", [
    ("", "empty"),
    ("06a2345678", "characters other than"),
    ("06 12", "characters other than"),
    ("1" * (MAX_CALLEE_DIGITS + 1), f"has {MAX_CALLEE_DIGITS + 1} digits (at most {MAX_CALLEE_DIGITS})"),
    ("+" + "1" * (MAX_CALLEE_DIGITS - 1), f"has {MAX_CALLEE_DIGITS + 1} digits"),  # after + -> 00
    ("0+33", "characters other than"),
])
def test_invalid_numbers_are_never_truncated(number: str, why: str) -> None:
    result = PLAN.analyze(number)
    assert result.outcome == INVALID_NUMBER and why in result.reason
    assert result.number_out == ""


def test_callee_of_exactly_28_digits_routes() -> None:
    assert PLAN.analyze("00" + "1" * 26).number_out == "00" + "1" * 26


def test_plus_needs_an_explicit_rule() -> None:
    plan = NumberPlan("p", [Rule("33", "france")])
    result = plan.analyze("+33123")
    assert result.outcome == INVALID_NUMBER and "no 'plus' rule" in result.reason
    assert NumberPlan("p", [Rule("33", "france")], plus="").analyze("+33123").number_out == "33123"


def test_edits_that_grow_past_28_digits_are_invalid() -> None:
    plan = NumberPlan("p", [Rule("9", "long", edits=(Insert(0, "1234"),))])
    assert plan.analyze("9" * 24).outcome == ROUTED
    result = plan.analyze("9" * 25)
    assert result.outcome == INVALID_NUMBER and "29 digits" in result.reason


@pytest.mark.parametrize("edit, out", [
    (Delete(0, 1), "23456"), (Delete(2, 2), "1256"), (Delete(5, 1), "12345"),
    (Delete(-1, 1), "12345"), (Delete(-3, 2), "1236"), (Delete(-6, 6), ""),
    (Insert(0, "9"), "9123456"), (Insert(3, "9"), "1239456"), (Insert(6, "9"), "1234569"),
    (Insert(-1, "9"), "1234596"), (Insert(-6, "9"), "9123456"), (Insert(None, "#"), "123456#"),
])
def test_edits_at_every_kind_of_position(edit, out: str) -> None:
    assert edit.apply("123456") == out


@pytest.mark.parametrize("edit", [Delete(6, 1), Delete(5, 2), Delete(-7, 1), Insert(7, "1"), Insert(-7, "1")])
def test_an_edit_outside_the_number_is_an_error(edit) -> None:
    with pytest.raises(EditError):
        edit.apply("123456")


def test_edits_apply_in_order() -> None:
    assert apply_edits("0142345678", (Delete(0, 1), Insert(0, "0033"), Insert(None, "#"))) == "0033142345678#"


def test_rules_refuse_edits_that_do_not_fit_their_shortest_number() -> None:
    with pytest.raises(ValueError, match=r"edit 1 \(delete 3 at 0\) needs more digits .* \(2, and 2"):
        Rule("06", "x", edits=(Delete(0, 3),))
    Rule("06", "x", min_length=3, edits=(Delete(0, 3),))  # fits with min_length
    with pytest.raises(ValueError, match=r"edit 2 \(insert '1' at -3\)"):
        Rule("06", "x", edits=(Delete(0, 1), Insert(-3, "1")))
    with pytest.raises(ValueError, match="can never match"):
        Rule("0612", "x", 1, 3)
    with pytest.raises(ValueError, match="outcome of the number node"):
        Rule("1", "blocked")
    with pytest.raises(ValueError, match="at most the first 10"):
        Rule("01234567890", "x")


def test_prefix_classes_expand() -> None:
    assert expand_prefix("0[67]") == ("06", "07")
    assert expand_prefix("1[5-8]") == ("15", "16", "17", "18")
    assert expand_prefix("[12][34]") == ("13", "14", "23", "24")
    assert expand_prefix("") == ("",)
    for bad in ("0[", "0x", "[9-1]", "+33", "0[6-]"):
        with pytest.raises(ValueError):
            expand_prefix(bad)


@st.composite
def _number_and_span(draw):
    digits = draw(st.text("0123456789*#", min_size=1, max_size=MAX_CALLEE_DIGITS))
    start = draw(st.integers(0, len(digits) - 1))
    count = draw(st.integers(1, len(digits) - start))
    negative = draw(st.booleans())
    return digits, start, count, negative


@given(_number_and_span())
def test_delete_then_insert_the_removed_digits_restores_the_number(case) -> None:
    digits, start, count, negative = case
    removed = digits[start:start + count]
    if not negative:
        assert Insert(start, removed).apply(Delete(start, count).apply(digits)) == digits
    else:
        at = start - len(digits)  # the same digit, counted from the end
        restore_at = at + count  # after the delete the end is `count` digits nearer
        shorter = Delete(at, count).apply(digits)
        assert len(shorter) == len(digits) - count and shorter == digits[:start] + digits[start + count:]
        assert Insert(restore_at if restore_at < 0 else None, removed).apply(shorter) == digits


@given(st.text("0123456789", min_size=0, max_size=20), st.integers(-20, 20), st.text("0123456789", min_size=1, max_size=5))
def test_insert_keeps_every_original_digit_in_order(digits: str, at: int, extra: str) -> None:
    try:
        out = Insert(at, extra).apply(digits)
    except EditError:
        assert not -len(digits) <= at <= len(digits)
        return
    i = at if at >= 0 else len(digits) + at
    assert out[:i] + out[i + len(extra):] == digits and out[i:i + len(extra)] == extra


# --- screening ------------------------------------------------------------------------------------

SCREENING = Screening({
    "default": TenantScreening(
        callers=Lists(black=ScreenList(["=666", "0900"])),
        destinations=Lists(black=ScreenList(["0899", "=3615"]), white=ScreenList(["0899100"])),
    ),
    "kiosk": TenantScreening(destinations=Lists(black=ScreenList(["all"]), white=ScreenList(["112", "=15", "10"]))),
})


@pytest.mark.parametrize("tenant, caller, destination, verdict", [
    ("default", "1001", "0899123456", ("destination", "0899")),
    ("default", "1001", "0899100123", None),  # white list wins
    ("default", "1001", "3615", ("destination", "=3615")),
    ("default", "1001", "36150", None),  # '=' is exact
    ("default", "666", "0142345678", ("caller", "=666")),
    ("default", "6660", "0142345678", None),
    ("default", "0900123", "0899123456", ("caller", "0900")),  # the caller is screened first
    ("default", "", "0142345678", None),  # anonymous matches only `all`
    ("kiosk", "1001", "0142345678", ("destination", "all")),
    ("kiosk", "1001", "112", None),
    ("kiosk", "1001", "15", None),
    ("kiosk", "1001", "150", ("destination", "all")),
    ("kiosk", "1001", "1005", None),
    ("other", "666", "0899123456", None),  # a tenant without lists screens nothing
])
def test_screening(tenant: str, caller: str, destination: str, verdict) -> None:
    result = SCREENING.screen(tenant, caller, destination)
    assert (None if result is None else (result.by, result.entry)) == verdict


def test_screen_list_entries_are_validated() -> None:
    for bad in ("+33", "=", "09x", "", "ALL"):
        with pytest.raises(ValueError):
            ScreenList([bad])
    with pytest.raises(ValueError, match="0033"):
        ScreenList(["+33"])


def test_all_matches_anonymous_callers() -> None:
    lists = Lists(black=ScreenList(["all"]))
    assert lists.blocked_by("") == "all"


# --- the whole call, as the number node sees it ---------------------------------------------------

NUMBERING = Numbering(plans={"main": PLAN}, screening=SCREENING)


@pytest.mark.parametrize("caller, destination, outcome, extra", [
    ("1001", "0612345678", "mobile", {"number_out": "0612345678"}),
    ("1001", "+33612345678", "international", {"number_out": "0033612345678"}),
    ("1001", "0899123456", "blocked", {"blocked_by": "destination", "blocked_entry": "0899"}),
    ("666", "0612345678", "blocked", {"blocked_by": "caller", "blocked_entry": "=666"}),
    ("1001", "3615", "blocked", {}),  # blocked even though no rule routes it
    ("1001", "999", "no_route", {}),
    ("1001", "0612x", "invalid_number", {}),
    ("1" * MAX_CALLER_DIGITS, "0612345678", "mobile", {}),
    ("1" * (MAX_CALLER_DIGITS + 1), "0612345678", "invalid_number", {}),
    ("+" + "3" * (MAX_CALLER_DIGITS - 2), "0612345678", "mobile", {}),  # 00 + 18 = 20 digits
    ("+" + "3" * (MAX_CALLER_DIGITS - 1), "0612345678", "invalid_number", {}),
    ("anonymous", "0612345678", "mobile", {}),
    ("", "0612345678", "mobile", {}),
])
def test_analyze_call(caller: str, destination: str, outcome: str, extra: dict) -> None:
    result = NUMBERING.analyze_call("main", tenant="default", caller=caller, destination=destination)
    assert result.outcome == outcome, result.reason
    for key, value in extra.items():
        assert getattr(result, key) == value


def test_invalid_caller_says_so() -> None:
    result = NUMBERING.analyze_call("main", tenant="default", caller="1" * 21, destination="112")
    assert result.reason == f"caller: '{'1' * 21}' has 21 digits (at most {MAX_CALLER_DIGITS})"


# --- holidays -------------------------------------------------------------------------------------

def test_holiday_calendar() -> None:
    cal = HolidayCalendar("fr", parse_dates(["01-01", "2026-04-06", "12-24..12-26", "12-31..01-02",
                                             dt.date(2027, 3, 29)]))
    for day in ("2026-01-01", "2031-01-01", "2026-04-06", "2026-12-25", "2026-12-31", "2027-01-02", "2027-03-29"):
        assert cal.contains(dt.date.fromisoformat(day)), day
    for day in ("2027-04-06", "2026-12-23", "2027-01-03", "2026-03-29"):
        assert not cal.contains(dt.date.fromisoformat(day)), day
    numbering = Numbering(holidays={"fr": cal})
    assert numbering.is_holiday("fr", dt.date(2030, 12, 24))


@pytest.mark.parametrize("bad", ["13-01", "2026-02-30", "12/25", "2026-01-02..2026-01-01", "01-01..2026-01-02"])
def test_bad_holiday_dates(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_dates([bad])


# --- speed ----------------------------------------------------------------------------------------

def test_a_10000_rule_plan_analyzes_over_100000_numbers_per_second() -> None:
    rng = random.Random(5)
    rules = [Rule(str(rng.randrange(10 ** (w - 1), 10 ** w)), f"r{i % 9}", min_length=w)
             for i, w in enumerate(rng.choice((2, 4, 6, 8, 10)) for _ in range(10_000))]
    plan = NumberPlan("big", rules)
    hits = [r.prefix + "1234567" for r in rules[:5000]]
    numbers = hits + [str(rng.randrange(10 ** 13, 10 ** 14)) for _ in range(5000)]
    assert all(plan.analyze(n).outcome == ROUTED for n in hits)
    best = 0.0
    for _ in range(3):  # best of three: a loaded CI machine should not fail the test
        start = time.perf_counter()
        for n in numbers:
            plan.analyze(n)
        best = max(best, len(numbers) / (time.perf_counter() - start))
    print(f"\n{best:,.0f} numbers/s with a 10,000-rule plan")
    assert best >= 100_000
