"""Exact money: integer micro-units (10⁻⁶ of the currency's major unit) tagged with a currency.

Why micro-units in an `int` rather than `Decimal` or cents:
- carrier and retail rates routinely carry 4-6 decimals ("0.0125" per minute); cents cannot hold them
  and a per-second share of them, so sub-cent precision is needed *inside* a computation;
- one fixed scale means every amount in the system (rates, balances, reservations, ledger entries)
  adds and compares with plain integer arithmetic: exact, fast (the rating hot path does no Decimal
  context work) and trivially stored in an SQL BIGINT (±9.2·10¹² major units);
- text is parsed and formatted digit by digit, never through float; an input with more than six
  decimals is refused rather than silently rounded.
Rounding to the currency's minor unit (cents) happens exactly once, on a call's total (see
`divide_rounded` and `rating.Rate.cost`), by a stated rule.
"""

from __future__ import annotations

import decimal
import enum
import re
from dataclasses import dataclass
from functools import lru_cache

MICRO_DIGITS = 6
MICROS_PER_UNIT = 10**MICRO_DIGITS

# ISO 4217 currencies whose minor unit is not 1/100 (all others in active use have 2 decimals).
_ISO_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}
_CODE = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"(-?)(\d+)(?:\.(\d+))?")


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined or compared."""


@dataclass(frozen=True, slots=True)
class Currency:
    """A currency and the number of decimals of its minor unit (EUR 2, JPY 0, TND 3)."""

    code: str
    exponent: int

    def __post_init__(self) -> None:
        if not _CODE.fullmatch(self.code):
            raise ValueError(f"currency code '{self.code}' is not three capital letters (ISO 4217)")
        if not 0 <= self.exponent <= MICRO_DIGITS:
            raise ValueError(f"currency {self.code}: minor-unit exponent {self.exponent} is not in 0..6")

    @property
    def micros_per_minor(self) -> int:
        """Micro-units in one minor unit (10,000 for a cent)."""
        return 10 ** (MICRO_DIGITS - self.exponent)

    def __str__(self) -> str:
        return self.code


@lru_cache(maxsize=None)
def currency(code: str) -> Currency:
    """The ISO 4217 currency `code` with its standard minor unit (2 decimals unless listed otherwise)."""
    return Currency(code, _ISO_EXPONENTS.get(code, 2))


class Rounding(enum.Enum):
    """How an exact amount is rounded to the currency's minor unit."""

    UP = "up"  # towards +infinity: the operator never sells below the rate (default)
    HALF_EVEN = "half-even"  # banker's rounding: unbiased over many calls
    DOWN = "down"  # towards -infinity: in the customer's favour

    @classmethod
    def parse(cls, text: str) -> Rounding:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ValueError(f"rounding '{text}' is not one of: {names}") from None


def divide_rounded(numerator: int, denominator: int, rounding: Rounding) -> int:
    """numerator / denominator rounded to an integer by `rounding` (exact integer arithmetic)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)  # floor division: remainder >= 0
    if remainder == 0 or rounding is Rounding.DOWN:
        return quotient
    if rounding is Rounding.UP:
        return quotient + 1
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient


class Money:
    """An immutable amount: `micros` (int, 10⁻⁶ major units) in `currency`.

    Arithmetic and ordering between different currencies raise `CurrencyMismatch`; equality between
    them is simply False. Floats are refused everywhere.
    """

    __slots__ = ("micros", "currency")
    micros: int
    currency: Currency

    def __init__(self, micros: int, currency: Currency) -> None:
        if type(micros) is not int:
            raise TypeError(f"Money needs an int of micro-units, not {type(micros).__name__}")
        object.__setattr__(self, "micros", micros)
        object.__setattr__(self, "currency", currency)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Money is immutable")

    def __reduce__(self) -> tuple[type[Money], tuple[int, Currency]]:
        return (Money, (self.micros, self.currency))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def zero(cls, currency: Currency) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: str, currency: Currency) -> Money:
        """Exact parse of a plain decimal ("12", "0.0125", "-3.5"); no exponent, at most 6 decimals."""
        m = _AMOUNT.fullmatch(text.strip())
        if not m:
            raise ValueError(f"'{text}' is not a decimal amount (expected digits like 0.0125)")
        sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
        if len(frac) > MICRO_DIGITS:
            raise ValueError(
                f"'{text}' has {len(frac)} decimals; amounts are exact to {MICRO_DIGITS} decimals"
            )
        micros = int(whole) * MICROS_PER_UNIT + int(frac.ljust(MICRO_DIGITS, "0"))
        return cls(-micros if sign else micros, currency)

    @classmethod
    def from_decimal(cls, value: decimal.Decimal, currency: Currency) -> Money:
        """Exact conversion; refuses values that are not whole micro-units."""
        scaled = value.scaleb(MICRO_DIGITS)
        if not scaled.is_finite() or scaled != scaled.to_integral_value():
            raise ValueError(f"{value} is not a whole number of micro-units")
        return cls(int(scaled), currency)

    # -- conversion ---------------------------------------------------------------------------
    def to_decimal(self) -> decimal.Decimal:
        return decimal.Decimal(self.micros).scaleb(-MICRO_DIGITS)

    def format(self) -> str:
        """Plain decimal with at least the currency's decimals and no trailing zeros beyond them.

        0.1 EUR → "0.10", 0.0125 EUR → "0.0125", 5 JPY → "5". `Money.parse` reads it back exactly.
        """
        sign = "-" if self.micros < 0 else ""
        whole, frac = divmod(abs(self.micros), MICROS_PER_UNIT)
        digits = str(frac).rjust(MICRO_DIGITS, "0").rstrip("0")
        digits = digits.ljust(self.currency.exponent, "0")
        return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"

    def rounded(self, rounding: Rounding) -> Money:
        """This amount rounded to the currency's minor unit."""
        step = self.currency.micros_per_minor
        return Money(divide_rounded(self.micros, step, rounding) * step, self.currency)

    # -- arithmetic and comparison ------------------------------------------------------------
    def _same(self, other: Money) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return Money(self.micros + other.micros, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return Money(self.micros - other.micros, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.micros, self.currency)

    def __mul__(self, factor: int) -> Money:
        if type(factor) is not int:
            return NotImplemented  # scaling by a float or Decimal would hide a rounding decision
        return Money(self.micros * factor, self.currency)

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        return self.micros == other.micros and self.currency == other.currency

    def __hash__(self) -> int:
        return hash((self.micros, self.currency))

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return self.micros < other.micros

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return self.micros <= other.micros

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return self.micros > other.micros

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same(other)
        return self.micros >= other.micros

    def __bool__(self) -> bool:
        return self.micros != 0

    def __str__(self) -> str:
        return f"{self.format()} {self.currency.code}"

    def __repr__(self) -> str:
        return f"Money('{self.format()}', {self.currency.code})"
