"""The transfer feature's settings (the site's `transfer:` section, parsed by config/site.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# In-call feature codes, the answering party's keys. Outside a consultation `blind`/`attended`
# start a transfer and are followed by the target's number and `#` (or the digit timeout). During a
# consultation the keys are Asterisk's atxfer defaults: abort, complete, three-way.
DEFAULT_CODES = {"blind": "*1", "attended": "*2", "cancel": "*1", "complete": "*2", "three_way": "*3"}
RINGBACK = "tone_stream://%(2000,4000,440,480);loops=-1"


@dataclass(frozen=True, slots=True)
class TransferRoute:
    """Where dialled transfer digits go: the first route whose `pattern` fullmatches the digits.

    kind "phone": an extension of the site; "gateway": `prefix` + digits[strip:] out of trunk
    `gateway`; "flow": the caller is sent to flow `flow` (blind only)."""

    pattern: str
    kind: str = "phone"
    gateway: str | None = None
    flow: str | None = None
    strip: int = 0
    prefix: str = ""

    def __post_init__(self) -> None:
        re.compile(self.pattern)
        if self.kind not in ("phone", "gateway", "flow"):
            raise ValueError(f"transfer route kind '{self.kind}': expected phone, gateway or flow")
        if self.kind == "gateway" and not self.gateway:
            raise ValueError("a gateway transfer route needs `gateway`")
        if self.kind == "flow" and not self.flow:
            raise ValueError("a flow transfer route needs `flow`")


@dataclass(frozen=True, slots=True)
class TransferOptions:
    enabled: bool = True  # feature codes on every dial that does not turn them off
    codes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CODES))
    digit_timeout: float = 3.0  # seconds between keys of a code or a number before it is taken as entered
    ring_timeout: float = 30.0  # a transfer target's ring time
    music: str | None = None  # what a held caller hears (None: the switch's music on hold)
    ringback: str = RINGBACK  # what the caller (blind, semi-attended) or transferor (consult) hears while the target rings
    recall_transferor: bool = True  # a failed blind/semi-attended target rings the transferor back
    recall_timeout: float = 20.0
    routes: tuple[TransferRoute, ...] = (TransferRoute(pattern=r"\d{2,6}", kind="phone"),)
