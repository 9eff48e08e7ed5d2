"""Prepaid rating: exact money, block billing, cost/max_duration inverse, prefix tables, CSV."""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchctl.billing.money import (
    Currency,
    CurrencyMismatch,
    Money,
    Rounding,
    currency,
    divide_rounded,
)
from switchctl.billing.ratecsv import (
    RateCsvError,
    format_rates,
    load_rates,
    parse_rates,
    save_rates,
)
from switchctl.billing.rating import (
    DEFAULT_CEILING_US,
    NoRate,
    Rate,
    RateBook,
    RateRow,
    RateTable,
    RateTableError,
    TimeBand,
)

EUR = currency("EUR")
JPY = currency("JPY")
TND = currency("TND")
S = 1_000_000  # µs per second


def eur(text: str) -> Money:
    return Money.parse(text, EUR)


def rate(per_minute: str, initial: int, increment: int, *, connect: str = "0", minimum: int = 0,
         rounding: Rounding = Rounding.UP, cur: Currency = EUR) -> Rate:
    return Rate(Money.parse(per_minute, cur), Money.parse(connect, cur), initial, increment, minimum,
                rounding)


def row(prefix: str, r: Rate, *, band: str | None = None, tenant: str = "default",
        account_class: str = "default", description: str = "") -> RateRow:
    return RateRow(tenant, account_class, prefix, description, r, TimeBand.parse(band) if band else None)


# ------------------------------------------------------------------------------------------ money


def test_money_parses_exactly_and_formats_with_minor_digits() -> None:
    assert eur("0.0125").micros == 12_500
    assert eur("12").micros == 12_000_000
    assert eur("-3.5").micros == -3_500_000
    assert eur("0.1").format() == "0.10"
    assert eur("0.0125").format() == "0.0125"
    assert eur("-0.5").format() == "-0.50"
    assert Money.parse("5", JPY).format() == "5"
    assert Money.parse("1.5", TND).format() == "1.500"
    assert str(eur("2")) == "2.00 EUR"


@pytest.mark.parametrize("text", ["1e-3", "0.1234567", "", "1,5", "+1", "0x10", ".5", "1."])
def test_money_refuses_what_is_not_an_exact_plain_decimal(text: str) -> None:
    with pytest.raises(ValueError):
        Money.parse(text, EUR)


def test_money_refuses_float_and_mixed_currencies() -> None:
    with pytest.raises(TypeError):
        Money(0.5, EUR)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        eur("1") * 1.5  # type: ignore[operator]
    with pytest.raises(CurrencyMismatch):
        eur("1") + Money.parse("1", JPY)
    with pytest.raises(CurrencyMismatch):
        eur("1") < Money.parse("1", JPY)
    assert eur("1") != Money.parse("1", JPY)
    assert eur("1") + eur("0.25") == eur("1.25") and eur("1") * 3 == eur("3")
    with pytest.raises(AttributeError):
        eur("1").micros = 5  # type: ignore[misc]


def test_currency_minor_units() -> None:
    assert (EUR.exponent, JPY.exponent, TND.exponent) == (2, 0, 3)
    assert EUR.micros_per_minor == 10_000
    with pytest.raises(ValueError):
        currency("EURO")


@given(st.integers(-10**15, 10**15), st.sampled_from([EUR, JPY, TND]))
def test_money_format_parse_round_trip(micros: int, cur: Currency) -> None:
    value = Money(micros, cur)
    assert Money.parse(value.format(), cur) == value
    assert Money.from_decimal(value.to_decimal(), cur) == value


@given(st.integers(-10**12, 10**12), st.integers(1, 10**9), st.sampled_from(list(Rounding)))
def test_divide_rounded_matches_fraction_reference(num: int, den: int, rounding: Rounding) -> None:
    assert divide_rounded(num, den, rounding) == _round(Fraction(num, den), rounding)


# ---------------------------------------------------------------------------- billed time and cost


def test_61_seconds_on_60_60_bills_two_minutes() -> None:
    r = rate("0.10", 60, 60)
    assert r.billed_us(61 * S) == 120 * S
    assert r.cost(61 * S) == eur("0.20")
    assert r.cost(60 * S) == eur("0.10")


def test_30_6_and_1_1_blocks() -> None:
    r = rate("0.60", 30, 6)
    assert r.billed_us(1) == 30 * S
    assert r.billed_us(30 * S) == 30 * S
    assert r.billed_us(30 * S + 1) == 36 * S
    assert r.billed_us(36 * S + 1) == 42 * S
    assert r.cost(31 * S) == eur("0.36")
    assert rate("0.60", 1, 1).billed_us(7 * S + 20_000) == 8 * S


def test_zero_duration_bills_connect_fee_only_unless_minimum() -> None:
    assert rate("0.10", 60, 60, connect="0.05").cost(0) == eur("0.05")
    with_min = rate("0.60", 1, 1, connect="0.05", minimum=30)
    assert with_min.billed_us(0) == 30 * S
    assert with_min.cost(0) == eur("0.35")
    assert with_min.billed_us(31 * S) == 31 * S
    with pytest.raises(ValueError):
        with_min.cost(-1)


def test_total_is_rounded_once_by_the_rule() -> None:
    # 0.015 EUR exactly: half a cent -> up 0.02, half-even 0.02 (1 is odd), down 0.01
    assert rate("0.015", 60, 60).cost(60 * S) == eur("0.02")
    assert rate("0.015", 60, 60, rounding=Rounding.HALF_EVEN).cost(60 * S) == eur("0.02")
    assert rate("0.025", 60, 60, rounding=Rounding.HALF_EVEN).cost(60 * S) == eur("0.02")
    assert rate("0.015", 60, 60, rounding=Rounding.DOWN).cost(60 * S) == eur("0.01")
    # 7 s at 0.01/min = 0.0011666.. : per-second rounding would bill 7 cents, we bill 1
    assert rate("0.01", 1, 1).cost(7 * S) == eur("0.01")
    assert rate("1.5", 60, 60, cur=JPY).cost(60 * S) == Money.parse("2", JPY)


def test_rate_validation() -> None:
    with pytest.raises(ValueError, match="increment"):
        rate("0.1", 60, 0)
    with pytest.raises(ValueError, match="negative"):
        rate("-0.1", 60, 60)
    with pytest.raises(CurrencyMismatch):
        Rate(eur("0.1"), Money(0, JPY), 60, 60)


def test_max_duration_refuses_below_connect_fee_plus_first_block() -> None:
    r = rate("0.0125", 60, 60, connect="0.05")  # first minute: 0.0625 -> 0.07 rounded up
    assert r.max_duration(eur("0.06")) == 0
    assert r.max_duration(eur("0.0699")) == 0
    assert r.max_duration(eur("0.07")) == 60 * S
    assert r.max_duration(eur("1")) == 76 * 60 * S  # 0.05 + 76 × 0.0125 = 1.00
    assert r.max_duration(eur("-1")) == 0
    with pytest.raises(CurrencyMismatch):
        r.max_duration(Money(10**6, JPY))


def test_max_duration_is_capped_by_the_ceiling() -> None:
    assert rate("0", 60, 60).max_duration(eur("0")) == DEFAULT_CEILING_US
    assert rate("0.01", 60, 60).max_duration(eur("1000"), ceiling_us=90 * S) == 90 * S
    # ceiling inside an unaffordable block: the last paid boundary, not the ceiling
    assert rate("0.60", 60, 60).max_duration(eur("0.60"), ceiling_us=90 * S) == 60 * S


def rates_in(cur: Currency) -> st.SearchStrategy[Rate]:
    return st.builds(
        lambda per_minute, connect, initial, increment, minimum, rounding: Rate(
            Money(per_minute, cur), Money(connect, cur), initial, increment, minimum, rounding),
        st.integers(0, 5 * 10**6),
        st.integers(0, 10**6),
        st.integers(1, 120),
        st.integers(1, 120),
        st.integers(0, 300),
        st.sampled_from(list(Rounding)),
    )


RATES = st.sampled_from([EUR, JPY, TND]).flatmap(rates_in)


def _round(value: Fraction, rounding: Rounding) -> int:
    if rounding is Rounding.UP:
        return math.ceil(value)
    if rounding is Rounding.DOWN:
        return math.floor(value)
    return round(value)  # Fraction.__round__ rounds half to even


def _reference_cost(r: Rate, duration_us: int) -> Money:
    """Written independently of rating.py, with Fractions and seconds."""
    held = max(Fraction(duration_us, S), r.minimum_s)
    if held == 0:
        billed = Fraction(0)
    elif held <= r.initial_s:
        billed = Fraction(r.initial_s)
    else:
        billed = r.initial_s + math.ceil((held - r.initial_s) / r.increment_s) * r.increment_s
    exact_major = Fraction(r.connect_fee.micros, S) + Fraction(r.per_minute.micros, S) * billed / 60
    minor = _round(exact_major * 10**r.currency.exponent, r.rounding)
    return Money(minor * r.currency.micros_per_minor, r.currency)


@settings(max_examples=300)
@given(RATES, st.integers(0, 4 * 3600 * S))
def test_cost_matches_exact_reference(r: Rate, duration_us: int) -> None:
    assert r.cost(duration_us) == _reference_cost(r, duration_us)


@settings(max_examples=300)
@given(RATES, st.integers(0, 4 * 3600 * S), st.integers(0, 4 * 3600 * S))
def test_cost_is_monotonic_in_duration(r: Rate, a: int, b: int) -> None:
    short, long = sorted((a, b))
    assert r.cost(short) <= r.cost(long)
    assert r.billed_us(long) >= long


@settings(max_examples=400)
@given(RATES, st.integers(-10**6, 200 * 10**6))
def test_max_duration_is_the_inverse_of_cost(r: Rate, credit_micros: int) -> None:
    credit = Money(credit_micros, r.currency)
    d = r.max_duration(credit)
    if d == 0:
        assert credit < r.cost(1)  # refused: not even the first billed block fits
    else:
        assert r.cost(d) <= credit
        if d < DEFAULT_CEILING_US:
            assert credit < r.cost(d + 1)
            assert credit < r.cost(d + r.increment_us)


# ------------------------------------------------------------------------------------ rate tables

PEAK_OFFPEAK = [
    row("33", rate("0.02", 60, 60), description="France"),
    row("336", rate("0.05", 30, 6), description="France mobile"),
    row("336", rate("0.10", 30, 6), band="mon-fri 08:00-20:00", description="France mobile peak"),
]


def _us(year: int, month: int, day: int, hour: int, minute: int, zone: str) -> int:
    local = dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))
    return int(local.timestamp()) * S


def test_longest_prefix_wins_and_unknown_destination_has_no_rate() -> None:
    book = RateBook([RateTable.from_rows("default", "default", [
        row("3", rate("1", 60, 60)), row("33", rate("0.02", 60, 60)), row("3361", rate("0.3", 60, 60)),
    ])])
    assert book.rate("33612345", at_us=0).prefix == "3361"
    assert book.rate("+33712345", at_us=0).prefix == "33"
    assert book.rate("39", at_us=0).prefix == "3"
    assert book.find("44", at_us=0) is None
    with pytest.raises(NoRate, match="no rate for 44"):
        book.rate("44", at_us=0)
    with pytest.raises(ValueError, match="not a number"):
        book.rate("33 6", at_us=0)


def test_time_band_is_chosen_at_call_start_in_the_table_timezone_across_dst() -> None:
    book = RateBook([RateTable.from_rows("default", "default", PEAK_OFFPEAK, timezone="Europe/Paris")])

    def desc(at_us: int) -> str:
        return book.rate("33612345678", at_us=at_us).description

    assert desc(_us(2024, 3, 29, 8, 30, "Europe/Paris")) == "France mobile peak"  # Friday, CET
    assert desc(_us(2024, 4, 1, 8, 30, "Europe/Paris")) == "France mobile peak"  # Monday, CEST
    assert desc(_us(2024, 4, 1, 7, 59, "Europe/Paris")) == "France mobile"
    assert desc(_us(2024, 3, 30, 12, 0, "Europe/Paris")) == "France mobile"  # Saturday
    # 06:30 UTC is 08:30 in Paris (CEST): the table's zone decides, not UTC
    assert desc(_us(2024, 4, 1, 6, 30, "UTC")) == "France mobile peak"
    # a call started at 19:59 is rated peak for its whole duration (no split at 20:00)
    started = book.rate("33612345678", at_us=_us(2024, 4, 1, 19, 59, "Europe/Paris"))
    assert started.rate.cost(10 * 60 * S) == eur("1.00")
    assert desc(_us(2024, 4, 1, 20, 0, "Europe/Paris")) == "France mobile"


def test_time_band_syntax() -> None:
    assert TimeBand.parse("Mon-Fri  08:00-20:00").spec == "mon-fri 08:00-20:00"
    night = TimeBand.parse("fri 22:00-02:00")  # stays within Friday
    assert night.contains(4 * 1440 + 23 * 60) and night.contains(4 * 1440 + 60)
    assert not night.contains(5 * 1440 + 60)
    weekend = TimeBand.parse("fri-mon")  # wraps the week
    assert all(weekend.contains(d * 1440) for d in (4, 5, 6, 0)) and not weekend.contains(1440)
    assert TimeBand.parse("00:00-24:00").mask == TimeBand.parse("mon-sun").mask
    for bad in ["", "mon-xyz", "8:00-9:00", "09:00-09:00", "25:00-26:00", "mon tue", "10:00"]:
        with pytest.raises(ValueError):
            TimeBand.parse(bad)


def test_table_refuses_duplicates_overlaps_gaps_and_currency_mix() -> None:
    with pytest.raises(RateTableError, match="duplicate prefix 33"):
        RateTable.from_rows("default", "default", [row("33", rate("1", 60, 60))] * 2)
    with pytest.raises(RateTableError, match="overlapping time bands for prefix 33.*sat 10:00"):
        RateTable.from_rows("default", "default", [
            row("33", rate("1", 60, 60), band="sat,sun"), row("33", rate("1", 60, 60), band="10:00-11:00"),
        ])
    with pytest.raises(RateTableError, match="prefix 33 has no rate for sat 00:00"):
        RateTable.from_rows("default", "default", [row("33", rate("1", 60, 60), band="mon-fri")])
    with pytest.raises(RateTableError, match="in JPY but table"):
        RateTable.from_rows("default", "default", [
            row("33", rate("1", 60, 60)), row("34", rate("1", 60, 60, cur=JPY))])
    with pytest.raises(RateTableError, match="digits only"):
        RateTable.from_rows("default", "default", [row("+33", rate("1", 60, 60))])
    complete = RateTable.from_rows("default", "default", [
        row("33", rate("1", 60, 60), band="mon-fri"), row("33", rate("2", 60, 60), band="sat,sun")])
    assert len(complete) == 1


def test_tenant_and_class_fall_back_per_destination() -> None:
    book = RateBook([
        RateTable.from_rows("acme", "vip", [row("33", rate("0.01", 1, 1), tenant="acme", account_class="vip")]),
        RateTable.from_rows("acme", "default", [row("1", rate("0.02", 60, 60), tenant="acme")]),
        RateTable.from_rows("default", "default", [
            row("336", rate("0.10", 60, 60)), row("44", rate("0.03", 60, 60)), row("1", rate("0.05", 60, 60))]),
    ])

    def pick(number: str, tenant: str, account_class: str) -> tuple[str, str, str]:
        found = book.rate(number, at_us=0, tenant=tenant, account_class=account_class)
        return found.tenant, found.account_class, found.prefix

    # the class table lists 33: it wins even though the default table has the longer 336
    assert pick("33612", "acme", "vip") == ("acme", "vip", "33")
    assert pick("1555", "acme", "vip") == ("acme", "default", "1")
    assert pick("4420", "acme", "vip") == ("default", "default", "44")
    assert pick("1555", "other", "vip") == ("default", "default", "1")
    assert pick("33612", "other", "default") == ("default", "default", "336")
    with pytest.raises(CurrencyMismatch, match="falls back"):
        RateBook([
            RateTable.from_rows("acme", "default", [row("1", rate("1", 60, 60, cur=JPY), tenant="acme")]),
            RateTable.from_rows("default", "default", [row("1", rate("1", 60, 60))]),
        ])


@settings(max_examples=200)
@given(
    st.dictionaries(st.text("123", min_size=1, max_size=6), st.integers(0, 10**6), min_size=1, max_size=40),
    st.text("123", min_size=0, max_size=9),
)
def test_longest_prefix_wins_against_brute_force(prices: dict[str, int], number: str) -> None:
    table = RateTable.from_rows("default", "default", [
        row(p, Rate(Money(m, EUR), Money(0, EUR), 60, 60)) for p, m in prices.items()])
    matching = [p for p in prices if number.startswith(p)]
    found = table.find(number, 0)
    if not matching:
        assert found is None
    else:
        assert found is not None and found.prefix == max(matching, key=len)


# -------------------------------------------------------------------------------------------- CSV

CANONICAL = """\
tenant,class,prefix,description,currency,rate_per_minute,connect_fee,initial_block,increment,minimum,rounding,time_band,timezone
acme,vip,33,"France, fixed ""VIP"" rate",EUR,0.0125,0.05,60,60,0,up,,Europe/Paris
default,default,33,France,EUR,0.02,0.00,60,60,0,half-even,,Europe/Paris
default,default,336,France mobile,EUR,0.05,0.00,30,6,10,down,,Europe/Paris
default,default,336,France mobile peak,EUR,0.10,0.00,30,6,10,up,mon-fri 08:00-20:00,Europe/Paris
"""


def test_csv_round_trip_of_canonical_text() -> None:
    book = parse_rates(CANONICAL, "rates.csv")
    assert format_rates(book) == CANONICAL
    assert book.rate("33612", at_us=0, tenant="acme", account_class="vip").rate.per_minute == eur("0.0125")


def test_csv_defaults_and_any_column_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = "\ufeffincrement,initial_block,rate_per_minute,currency,prefix\n6,30,0.0125,EUR,44\n\n"
    path = tmp_path / "rates.csv"
    path.write_text(text, encoding="utf-8")
    book = load_rates(path)
    found = book.rate("4420", at_us=0)
    assert (found.tenant, found.account_class, found.description) == ("default", "default", "")
    assert found.rate == rate("0.0125", 30, 6)
    save_rates(book, tmp_path / "out.csv")
    assert load_rates(tmp_path / "out.csv") == book


def _errors(text: str) -> list[str]:
    with pytest.raises(RateCsvError) as info:
        parse_rates(text, "bad.csv")
    return str(info.value).splitlines()


HEADER = "prefix,currency,rate_per_minute,initial_block,increment,time_band,timezone\n"


def test_csv_errors_point_at_file_and_line() -> None:
    errors = _errors(HEADER + "\n".join([
        "33,EUR,0.01x,60,60,,",  # 2
        "3a,EUR,0.01,60,60,,",  # 3
        "34,EUR,0.01,60,60,,",  # 4
        "34,EUR,0.02,60,60,,",  # 5
        "35,EUR,0.01,60,60,mon-fri,",  # 6
        "36,EUR,0.0000001,60,60,,",  # 7
        "37,EURO,0.01,60,60,,",  # 8
        "38,EUR,0.01,60,0,,",  # 9
        "39,EUR,0.01,60,60,,Europe/Paris",  # 10
        "40,EUR,0.01,60,60,someday,",  # 11
        "41,EUR,0.01,60",  # 12
        "42,EUR,0.01,60,60,,Mars/Olympus",  # 13
    ]) + "\n")
    assert errors[0] == "bad.csv:2: rate_per_minute: '0.01x' is not a decimal amount (expected digits like 0.0125)"
    assert errors[1] == "bad.csv:3: prefix '3a' must be digits only (no '+', spaces or letters)"
    assert errors[2] == "bad.csv:5: duplicate prefix 34 (line 4)"
    assert errors[3].startswith("bad.csv:6: prefix 35 has no rate for sat 00:00")
    assert errors[4].startswith("bad.csv:7: rate_per_minute: '0.0000001' has 7 decimals")
    assert errors[5].startswith("bad.csv:8: currency code 'EURO'")
    assert errors[6].startswith("bad.csv:9: increment must be whole seconds")
    assert errors[7] == "bad.csv:10: timezone 'Europe/Paris' differs from 'UTC' set for (default, default) at line 4"
    assert errors[8].startswith("bad.csv:11: 'someday' is not a day")
    assert errors[9] == "bad.csv:12: 4 cells, the header has 7"
    assert errors[10].startswith("bad.csv:13: unknown timezone 'Mars/Olympus'")
    assert len(errors) == 11


def test_csv_header_and_multiline_cell_errors() -> None:
    assert _errors("prefix,price\n33,1\n")[0].startswith(
        "bad.csv:1: unknown column(s) price; missing column(s) currency, increment, initial_block")
    assert _errors("")[0].startswith("bad.csv:1: no header")
    # a quoted description spanning two lines: the next row's line number stays right
    errors = _errors("prefix,currency,rate_per_minute,initial_block,increment,description\n"
                     '33,EUR,0.01,60,60,"two\nlines"\n33,EUR,0.01,60,60,dup\n')
    assert errors == ["bad.csv:4: duplicate prefix 33 (line 2)"]


DESCRIPTIONS = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12
).filter(lambda s: s == s.strip())
BAND_LAYOUTS = st.sampled_from([(), ("mon-fri 08:00-20:00",), ("sat,sun", "mon-fri"), ("20:00-08:00",)])


@st.composite
def books(draw: st.DrawFn) -> RateBook:
    tables = []
    keys = draw(st.sets(st.tuples(st.sampled_from(["default", "acme", "b.2"]),
                                  st.sampled_from(["default", "vip", "x-1"])), min_size=1, max_size=4))
    keys.add(("default", "default"))
    cur = draw(st.sampled_from([EUR, JPY, TND]))
    zone = draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]))
    for tenant, account_class in sorted(keys):
        rows = []
        for prefix in draw(st.sets(st.text("0123456789", min_size=1, max_size=8), min_size=1, max_size=6)):
            layout = draw(BAND_LAYOUTS)
            complete = layout == ("sat,sun", "mon-fri")
            bands = list(layout) if complete else [None, *layout]
            for band in bands:
                r = draw(rates_in(cur))
                rows.append(row(prefix, r, band=band, tenant=tenant, account_class=account_class,
                                description=draw(DESCRIPTIONS)))
        tables.append(RateTable.from_rows(tenant, account_class, rows, timezone=zone))
    return RateBook(tables)


@settings(max_examples=60, deadline=None)
@given(books())
def test_csv_round_trip_property(book: RateBook) -> None:
    text = format_rates(book)
    again = parse_rates(text, "roundtrip.csv")
    assert again == book
    assert format_rates(again) == text
