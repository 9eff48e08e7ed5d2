"""Number plans: route a dialled number on its first digits and rewrite it (pure, no I/O).

A plan is an ordered list of rules. A rule matches on a prefix of up to MAX_PREFIX_DIGITS digits
(with optional bounds on the length of the whole number), names a route (`local`, `mobile`,
`international`, ...) and lists digit edits applied in order. The longest matching prefix wins;
among rules with the same prefix, the first in file order whose length bounds fit wins.

Numbers are made of `0-9`, `*` and `#`. A callee has at most MAX_CALLEE_DIGITS, a caller at most
MAX_CALLER_DIGITS: a longer number is `invalid_number`, never truncated. A leading `+` is only
accepted when the plan has a `plus` normalization (e.g. `+` → `00`); without one a `+` number is
`invalid_number` too, so a plan never routes an international number as if it were national.

Edit positions (`at`) count the digits of the number as it is at that edit: 0 is the first digit,
-1 the last; `insert` puts its digits before that position, or at the end with `at: end` (None).
Edits are checked against the shortest number a rule can match when the plan is built, so at run
time they always apply: a rule can never silently lose or invent digits outside its number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_CALLER_DIGITS = 20
MAX_CALLEE_DIGITS = 28
MAX_PREFIX_DIGITS = 10
MAX_PREFIX_EXPANSION = 1000  # prefixes one rule's `[...]` classes may stand for
NUMBER_CHARS = frozenset("0123456789*#")
# Outcomes of the `number` flow node that are not routes: a route may not take these names.
RESERVED_ROUTES = frozenset({"next", "blocked", "invalid_number", "no_route"})

ROUTED = "routed"
INVALID_NUMBER = "invalid_number"
NO_ROUTE = "no_route"

_ROUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PREFIX_TOKEN = re.compile(r"[0-9*#]|\[[0-9*#\-]+\]")


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove `count` digits starting at position `at` (negative: from the end)."""

    at: int
    count: int

    def apply(self, digits: str) -> str:
        start = self.at if self.at >= 0 else len(digits) + self.at
        if start < 0 or start + self.count > len(digits):
            raise EditError(f"{self} does not fit a {len(digits)}-digit number")
        return digits[:start] + digits[start + self.count:]

    def __str__(self) -> str:
        return f"delete {self.count} at {self.at}"


@dataclass(frozen=True, slots=True)
class Insert:
    """Insert `digits` before position `at` (negative: from the end); `at=None` appends."""

    at: int | None
    digits: str

    def apply(self, digits: str) -> str:
        if self.at is None:
            return digits + self.digits
        start = self.at if self.at >= 0 else len(digits) + self.at
        if start < 0 or start > len(digits):
            raise EditError(f"{self} does not fit a {len(digits)}-digit number")
        return digits[:start] + self.digits + digits[start:]

    def __str__(self) -> str:
        return f"insert '{self.digits}' at {'end' if self.at is None else self.at}"


Edit = Delete | Insert


class EditError(ValueError):
    """An edit addresses digits the number does not have."""


def apply_edits(digits: str, edits: Iterable[Edit]) -> str:
    for edit in edits:
        digits = edit.apply(digits)
    return digits


def expand_prefix(prefix: str) -> tuple[str, ...]:
    """`0[67]` → ("06", "07"); `[2-9]` ranges; raises ValueError on anything else."""
    pos, options = 0, [""]
    for m in _PREFIX_TOKEN.finditer(prefix):
        if m.start() != pos:
            break
        pos = m.end()
        token = m.group()
        if token.startswith("["):
            body, chars = token[1:-1], []
            i = 0
            while i < len(body):
                if i + 2 < len(body) and body[i + 1] == "-":
                    lo, hi = body[i], body[i + 2]
                    if not (lo.isdigit() and hi.isdigit() and lo <= hi):
                        raise ValueError(f"prefix '{prefix}': '{lo}-{hi}' is not a digit range")
                    chars.extend(str(d) for d in range(int(lo), int(hi) + 1))
                    i += 3
                elif body[i] == "-":
                    raise ValueError(f"prefix '{prefix}': a '-' in [...] must be between two digits")
                else:
                    chars.append(body[i])
                    i += 1
            chars = list(dict.fromkeys(chars))
        else:
            chars = [token]
        options = [o + c for o in options for c in chars]
        if len(options) > MAX_PREFIX_EXPANSION:
            raise ValueError(f"prefix '{prefix}' stands for more than {MAX_PREFIX_EXPANSION} prefixes")
    if pos != len(prefix):
        raise ValueError(f"prefix '{prefix}' may only use digits, * and # and [...] classes such as [67] or [2-9]")
    width = len(options[0])
    if width > MAX_PREFIX_DIGITS:
        raise ValueError(f"prefix '{prefix}' has {width} digits; rules match on at most the first {MAX_PREFIX_DIGITS}")
    return tuple(options)


@dataclass(frozen=True, slots=True)
class Rule:
    prefix: str  # as written; "" matches every number
    route: str
    min_length: int = 1
    max_length: int = MAX_CALLEE_DIGITS
    edits: tuple[Edit, ...] = ()
    prefixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _ROUTE_NAME.fullmatch(self.route):
            raise ValueError(f"route '{self.route}' must be a name (letters, digits, _)")
        if self.route in RESERVED_ROUTES:
            raise ValueError(f"route '{self.route}' is an outcome of the number node; choose another name")
        object.__setattr__(self, "prefixes", expand_prefix(self.prefix))
        if not 1 <= self.min_length <= self.max_length <= MAX_CALLEE_DIGITS:
            raise ValueError(f"lengths must satisfy 1 <= min_length ({self.min_length}) <= max_length "
                             f"({self.max_length}) <= {MAX_CALLEE_DIGITS}")
        shortest = self.shortest
        if shortest > self.max_length:
            raise ValueError(f"prefix '{self.prefix}' has {shortest} digits, more than max_length "
                             f"({self.max_length}): the rule can never match")
        # Edits that fit the shortest matching number fit every longer one (positions from the
        # start stay inside, positions from the end move with the end).
        length = shortest
        for n, edit in enumerate(self.edits, start=1):
            at = edit.at
            if isinstance(edit, Delete):
                if edit.count < 1:
                    raise ValueError(f"edit {n} ({edit}): delete at least 1 digit")
                start = at if at >= 0 else length + at
                if start < 0 or start + edit.count > length:
                    raise ValueError(f"edit {n} ({edit}) needs more digits than the shortest number this rule "
                                     f"matches ({shortest}, and {length} before this edit); raise min_length")
                length -= edit.count
            else:
                if not edit.digits or set(edit.digits) - NUMBER_CHARS:
                    raise ValueError(f"edit {n} ({edit}): insert digits 0-9, * or #")
                if at is not None:
                    start = at if at >= 0 else length + at
                    if start < 0 or start > length:
                        raise ValueError(f"edit {n} ({edit}) needs more digits than the shortest number this rule "
                                         f"matches ({shortest}, and {length} before this edit); raise min_length")
                length += len(edit.digits)

    @property
    def shortest(self) -> int:
        """The fewest digits a number this rule matches can have."""
        return max(self.min_length, len(self.prefixes[0]))


@dataclass(frozen=True, slots=True)
class Analysis:
    outcome: str  # ROUTED, INVALID_NUMBER or NO_ROUTE
    number: str = ""  # the number after `+` normalization ("" when invalid)
    route: str = ""
    number_out: str = ""  # after the rule's edits
    rule: Rule | None = None
    reason: str = ""  # why a number is invalid, for logs


def normalize(text: str, *, plus: str | None, max_digits: int) -> tuple[str | None, str]:
    """(digits, "") or (None, why it is not a number this plan takes)."""
    if not text:
        return None, "the number is empty"
    digits = text
    if text.startswith("+"):
        if plus is None:
            return None, f"'{text}' starts with '+', and the plan has no 'plus' rule"
        digits = plus + text[1:]
    if set(digits) - NUMBER_CHARS:
        return None, f"'{text}' has characters other than 0-9, * and #"
    if len(digits) > max_digits:
        return None, f"'{text}' has {len(digits)} digits (at most {max_digits})"
    return digits, ""


class NumberPlan:
    """Rules indexed by prefix: analysis is one dict lookup per distinct prefix length (≤ 11)."""

    def __init__(self, name: str, rules: Sequence[Rule], *, plus: str | None = None) -> None:
        if plus is not None and set(plus) - NUMBER_CHARS:
            raise ValueError(f"plus '{plus}' must be digits (e.g. \"00\"), or \"\" to drop the '+'")
        self.name = name
        self.rules = tuple(rules)
        self.plus = plus
        self.routes = frozenset(r.route for r in self.rules)
        by_prefix: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for prefix in rule.prefixes:
                by_prefix.setdefault(prefix, []).append(rule)
        self._by_prefix = {p: tuple(rs) for p, rs in by_prefix.items()}
        self._lengths = tuple(sorted({len(p) for p in by_prefix}, reverse=True))

    def __repr__(self) -> str:
        return f"NumberPlan({self.name!r}, {len(self.rules)} rules)"

    def match(self, digits: str) -> Rule | None:
        """The rule for normalized `digits`: longest prefix first, then file order."""
        n = len(digits)
        by_prefix = self._by_prefix
        for width in self._lengths:
            if width > n:
                continue
            rules = by_prefix.get(digits[:width])
            if rules is not None:
                for rule in rules:
                    if rule.min_length <= n <= rule.max_length:
                        return rule
        return None

    def normalize(self, text: str, *, max_digits: int = MAX_CALLEE_DIGITS) -> tuple[str | None, str]:
        return normalize(text, plus=self.plus, max_digits=max_digits)

    def analyze(self, text: str) -> Analysis:
        """Route the dialled number `text` (a callee)."""
        digits, why = normalize(text, plus=self.plus, max_digits=MAX_CALLEE_DIGITS)
        if digits is None:
            return Analysis(INVALID_NUMBER, reason=why)
        rule = self.match(digits)
        if rule is None:
            return Analysis(NO_ROUTE, digits, reason=f"no rule of plan '{self.name}' matches '{digits}'")
        out = apply_edits(digits, rule.edits)
        if len(out) > MAX_CALLEE_DIGITS:
            return Analysis(INVALID_NUMBER, digits, rule.route, rule=rule,
                            reason=f"the edits of rule '{rule.prefix}' make {len(out)} digits (at most {MAX_CALLEE_DIGITS})")
        return Analysis(ROUTED, digits, rule.route, out, rule)
