"""The switch-side safety net: a hangup armed on the switch, so a call is cut even without us.

What the switches do (read from their sources; see docs/PREPAID.md):
- FreeSWITCH `sched_hangup +N` (app, mod_dptools; API, mod_commands) adds a task to the core
  scheduler (`switch_ivr_schedule_hangup` → `switch_scheduler_add_task`, group = the channel uuid)
  with runtime = `switch_epoch_time_now() + N`: WHOLE epoch seconds of FreeSWITCH's own clock
  (`switch_micro_time_now() / 1e6`, the core timer's cached value, 20 ms ticks). The task thread
  runs a task once `now >= runtime`, checking at least every 500 ms (`switch_queue_pop_timeout(…,
  500000)`). So `+N` armed at t fires in [floor(t) + N, floor(t) + N + 0.5 s]. A new sched_hangup
  does NOT replace an earlier one: both tasks stay and the earlier fires first. Only `sched_del
  <uuid>` (API; deletes every scheduled task of that group, i.e. the channel's sched_hangup,
  sched_transfer and sched_broadcast tasks) or `sched_del <task id>` withdraws one.
- Asterisk `TIMEOUT(absolute)=<s.fff>` (func_timeout.c): fractional seconds from when it is set;
  setting it again replaces the previous timeout.

What we arm (since the bench showed `+N` landing a second late when the command arrived in the
first ~50 ms of a second): the INSTANT, as FreeSWITCH's absolute form `sched_hangup <epoch second>`
(Call.schedule_hangup at_us), the first whole second at or after the paid end — it fires in
[deadline, deadline + 1 s + 0.5 s) whenever the command arrives. The relative fallback was:
  base = floor_s(now − margin);  N = ceil((deadline − base) / 1 s)   → fires at base + N ≥ deadline
Executed within the same FreeSWITCH second as `now − margin`, it fires in [deadline, deadline +
1 s + 0.5 s) (≤ 1.5 s late, the acceptance target with the controller down); if the command reaches
the switch a second later it fires a second later (later, never earlier). `margin` covers the
switch clock lagging ours by its 20 ms tick. (The plain `ceil(T) + 1` rule is also never early but
fires up to 2.5 s late.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from switchctl.switch.call import Call

US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class SafetyNetPolicy:
    """How one switch's `Call.schedule_hangup` behaves.

    `whole_seconds`: the switch fires on whole epoch seconds of its clock (FreeSWITCH); else it takes
    fractions, counted from when it is set (Asterisk). `replaces`: a new schedule replaces the armed
    one. `cancel`: when it does not replace, how to withdraw the armed one before arming a later one
    (FreeSWITCH: the controller passes `lambda call: switch.api(f"sched_del {call.uuid}")`); without
    it a net armed too early cannot be withdrawn (logged). `margin_us`: added safety (see module).
    """

    whole_seconds: bool
    replaces: bool
    margin_us: int
    cancel: Callable[[Call], Awaitable[object]] | None = None


# The FreeSWITCH backend runs `sched_del <uuid>` before each `sched_hangup` (switch/freeswitch.py),
# so a new net replaces the armed one there too.
FREESWITCH_NET = SafetyNetPolicy(whole_seconds=True, replaces=True, margin_us=50_000)
ASTERISK_NET = SafetyNetPolicy(whole_seconds=False, replaces=True, margin_us=250_000)


@dataclass(frozen=True, slots=True)
class NetArm:
    """What to pass to `schedule_hangup` and the earliest instant (epoch µs) the net can fire."""

    seconds: float
    fires_at_us: int


def safety_net(deadline_us: int, now_us: int, policy: SafetyNetPolicy) -> NetArm:
    """The schedule that fires no earlier than `deadline_us`, as soon after it as the switch can."""
    if policy.whole_seconds:
        # Armed as an instant (Call.schedule_hangup at_us; FreeSWITCH's absolute sched_hangup):
        # the first whole second at or after the deadline, whenever the command arrives. `seconds`
        # is the relative fallback for a switch that takes none (counted from floor(now - margin)).
        fires_s = max(-(-deadline_us // US_PER_S), now_us // US_PER_S + 1)
        base_s = (now_us - policy.margin_us) // US_PER_S
        return NetArm(float(max(1, fires_s - base_s)), fires_s * US_PER_S)
    # Fractional (Asterisk): counted from when it is set, which is after `now`; 1 ms resolution.
    left_us = max(1_000, deadline_us - now_us + policy.margin_us)
    left_ms = -(-left_us // 1_000)
    return NetArm(left_ms / 1_000, now_us + left_ms * 1_000)
