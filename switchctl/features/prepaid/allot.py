"""How long each live call of one account may talk (pure): the account's money shared by its calls.

Every live call burns money at its own rate, from its own answer instant. `allot` answers, for
money `M` and the calls, the instant each call must end so that the calls' total cost never exceeds
`M` — the "sum of burn rates" model (cnxcc), exact to the µs and to each rate's blocks:

Let C_i(t) be what call i costs if it lasts until the instant t (its `Rate.cost`, a step function
that moves up right after each block boundary). Phase by phase:
1. F(t) = cost of the calls already cut + Σ C_i(t) over the calls still running. Find t*, the last
   instant with F(t*) ≤ M (binary search: F is non-decreasing).
2. At t*+1 µs at least one running call crosses a block boundary and they do not all fit any more.
   In answer order, each crossing call that still fits keeps going (its next block is paid); each
   that does not is cut at t* — exactly at the end of its last paid block.
3. Repeat with the calls still running (a cheaper call may go on with money an expensive one could
   not use) until every call has an end (or reached `ceiling_us` of talk).
So Σ C_i(end_i) ≤ M: the calls, cut at their ends, never overdraw the money. For one call this is
`Rate.max_duration` (cost(paid) ≤ M < cost(paid + 1 µs)). Cost: phases ≤ calls, each a binary search
over ≤ 2^37 µs of F (n rate evaluations): ~40·n² `Rate.cost_micros` calls, ~2 ms for 5 calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from switchctl.billing.rating import DEFAULT_CEILING_US, Rate


@dataclass(frozen=True, slots=True)
class Burn:
    """One live call as the allotment sees it."""

    rate: Rate
    answer_us: int  # the switch's answer instant (epoch µs)


def call_cost(burn: Burn, at_us: int, ceiling_us: int) -> int:
    """C_i(at_us): micro-units the call costs if it lasts until `at_us` (0 before its answer)."""
    if at_us < burn.answer_us:
        return 0
    return burn.rate.cost_micros(min(at_us - burn.answer_us, ceiling_us))


def allot(calls: Sequence[Burn], money_micros: int, *, ceiling_us: int = DEFAULT_CEILING_US) -> list[int]:
    """The instant (epoch µs) each of `calls` must end; Σ cost(end_i − answer_i) ≤ money_micros.

    An end equal to the call's answer means "not even its first block is paid": cut it now.
    A call whose talk would reach `ceiling_us` ends there (the longest call allowed).
    """
    ends: list[int | None] = [None] * len(calls)
    active = sorted(range(len(calls)), key=lambda i: (calls[i].answer_us, i))
    fixed = 0  # what the calls already cut cost

    def total(at_us: int) -> int:
        return fixed + sum(call_cost(calls[i], at_us, ceiling_us) for i in active)

    # Before the first answer nothing is spent but what earlier phases fixed (≤ money).
    low = min((c.answer_us for c in calls), default=0) - 1
    while active:
        high = max(calls[i].answer_us for i in active) + ceiling_us
        if total(low) > money_micros:
            # Only possible in the first phase when money is negative or a connect fee alone does
            # not fit: every running call ends at once (at its answer: nothing paid).
            for i in active:
                ends[i] = max(low, calls[i].answer_us)
            break
        if total(high) <= money_micros:
            for i in active:
                ends[i] = calls[i].answer_us + ceiling_us
            break
        lo, hi = low, high  # invariant: total(lo) <= money < total(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if total(mid) <= money_micros:
                lo = mid
            else:
                hi = mid
        spent = total(lo)
        still: list[int] = []
        for i in active:
            before = call_cost(calls[i], lo, ceiling_us)
            step = call_cost(calls[i], lo + 1, ceiling_us) - before
            if step == 0 or spent + step <= money_micros:
                spent += step
                still.append(i)
            else:
                ends[i] = max(lo, calls[i].answer_us)
                fixed += before
        assert len(still) < len(active), "a phase must cut at least one call"
        active = still
        low = lo
    return [e if e is not None else 0 for e in ends]
