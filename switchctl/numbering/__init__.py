"""Number analysis and screening: number plans, black/white lists per tenant, holiday calendars.

Pure (no I/O, no config, no flows): the site loader (`switchctl.config.site`) builds a `Numbering`
from site.yaml and the flow runtime receives it (`FlowRunner(numbering=site.numbering)`).

Public API:
- `Numbering(plans, screening, holidays)`; `.analyze_call(plan, tenant=, caller=, destination=)`
  -> `CallAnalysis` (`.outcome`: a route name, "blocked", "invalid_number" or "no_route").
- `NumberPlan(name, rules, plus=None)`: `.analyze(number) -> Analysis`, `.match(digits)`, `.routes`.
- `Rule(prefix, route, min_length=1, max_length=28, edits=(Delete(at, count) | Insert(at, digits)))`.
- `Screening({tenant: TenantScreening(callers=Lists(black, white), destinations=...)})`,
  `ScreenList(entries)`; `HolidayCalendar(name, days)`, `parse_dates(value)`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .dates import DateRange, HolidayCalendar, parse_date_item, parse_dates
from .plan import (
    INVALID_NUMBER,
    MAX_CALLEE_DIGITS,
    MAX_CALLER_DIGITS,
    MAX_PREFIX_DIGITS,
    NO_ROUTE,
    RESERVED_ROUTES,
    ROUTED,
    Analysis,
    Delete,
    Edit,
    EditError,
    Insert,
    NumberPlan,
    Rule,
    apply_edits,
    expand_prefix,
    normalize,
)
from .screening import ALL, Lists, Screening, ScreenList, TenantScreening, Verdict

BLOCKED = "blocked"
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class CallAnalysis:
    """What the `number` flow node decides for one call."""

    outcome: str  # the route name, or BLOCKED, INVALID_NUMBER, NO_ROUTE
    route: str = ""
    number_out: str = ""
    blocked_by: str = ""  # "caller" or "destination"
    blocked_entry: str = ""  # the black-list entry, e.g. "0899", "=666", "all"
    reason: str = ""  # for logs: why invalid / which rule


@dataclass(frozen=True)
class Numbering:
    plans: Mapping[str, NumberPlan] = field(default_factory=lambda: MappingProxyType({}))
    screening: Screening = field(default_factory=Screening)
    holidays: Mapping[str, HolidayCalendar] = field(default_factory=lambda: MappingProxyType({}))

    def is_holiday(self, calendar: str, day: dt.date) -> bool:
        return self.holidays[calendar].contains(day)

    def analyze_call(self, plan: str, *, tenant: str, caller: str, destination: str) -> CallAnalysis:
        """Validate both numbers, screen them for `tenant`, then route the destination.

        Order: an unusable destination or caller is `invalid_number`; then screening (a blocked
        number is `blocked` even when no rule would route it); then the plan's rules. Screening
        sees the numbers after `+` normalization, before the rule's edits (what users dial).
        """
        number_plan = self.plans[plan]
        analysis = number_plan.analyze(destination)
        if analysis.outcome == INVALID_NUMBER:
            return CallAnalysis(INVALID_NUMBER, reason=f"destination: {analysis.reason}")
        if not caller or any(c.isalpha() for c in caller):
            caller_digits: str | None = ""  # anonymous: only an `all` entry matches it
        else:
            caller_digits, why = number_plan.normalize(caller, max_digits=MAX_CALLER_DIGITS)
            if caller_digits is None:
                return CallAnalysis(INVALID_NUMBER, reason=f"caller: {why}")
        verdict = self.screening.screen(tenant, caller_digits, analysis.number)
        if verdict is not None:
            return CallAnalysis(BLOCKED, blocked_by=verdict.by, blocked_entry=verdict.entry,
                                reason=f"{verdict.by} matches black-list entry '{verdict.entry}' of tenant '{tenant}'")
        if analysis.outcome == NO_ROUTE:
            return CallAnalysis(NO_ROUTE, reason=analysis.reason)
        return CallAnalysis(analysis.route, analysis.route, analysis.number_out,
                            reason=f"rule '{analysis.rule.prefix if analysis.rule else ''}'")


__all__ = [
    "ALL", "BLOCKED", "DEFAULT_TENANT", "INVALID_NUMBER", "MAX_CALLEE_DIGITS", "MAX_CALLER_DIGITS",
    "MAX_PREFIX_DIGITS", "NO_ROUTE", "RESERVED_ROUTES", "ROUTED", "Analysis", "CallAnalysis", "DateRange",
    "Delete", "Edit", "EditError", "HolidayCalendar", "Insert", "Lists", "NumberPlan", "Numbering", "Rule",
    "ScreenList", "Screening", "TenantScreening", "Verdict", "apply_edits", "expand_prefix", "normalize",
    "parse_date_item", "parse_dates",
]
