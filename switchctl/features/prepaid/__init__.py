"""Prepaid calls: authorization against an account, real-time cutoff, settlement (docs/PREPAID.md).

- `PrepaidService(ledger, accounts, rate_book, *, cutoff=None, tenant="default")`: the flows'
  `CallBilling`, plus `topup(account)`, `rates_changed()` and `live_calls()` for the CLI / web.
- `CutoffManager(ledger, *, warning_seconds=10, warning_prompt=..., slice_seconds=30,
  max_call_seconds=86400, safety_net=FREESWITCH_NET)`: the timers, nets and warnings.
"""

from .allot import Burn, allot
from .cutoff import (
    CREDIT_EXHAUSTED,
    CUT_CAUSE,
    DEFAULT_WARNING_PROMPT,
    CutoffManager,
    LiveCall,
)
from .safetynet import ASTERISK_NET, FREESWITCH_NET, NetArm, SafetyNetPolicy, safety_net
from .service import EndedCall, LiveCallView, PrepaidError, PrepaidService

__all__ = [
    "ASTERISK_NET",
    "CREDIT_EXHAUSTED",
    "CUT_CAUSE",
    "DEFAULT_WARNING_PROMPT",
    "FREESWITCH_NET",
    "Burn",
    "CutoffManager",
    "EndedCall",
    "LiveCall",
    "LiveCallView",
    "NetArm",
    "PrepaidError",
    "PrepaidService",
    "SafetyNetPolicy",
    "allot",
    "safety_net",
]
