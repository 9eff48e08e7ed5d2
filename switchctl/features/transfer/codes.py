"""In-call feature codes, read one key at a time (pure: the caller supplies the clock).

Outside a consultation the reader waits for a `blind` or `attended` code, then collects the target's
number until `#` or `digit_timeout` seconds without a key. During one (`consulting = True`) it waits
for `cancel`, `complete` or `three_way`. Keys that cannot continue a code are ignored; a partial code
left alone for `digit_timeout` is forgotten. Codes may be the same in both modes (the defaults are:
`*1` is blind outside and cancel inside a consultation), never a prefix of another of the same mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TRANSFER_ACTIONS = ("blind", "attended")  # followed by a number
CONSULT_ACTIONS = ("cancel", "complete", "three_way")
ACTIONS = TRANSFER_ACTIONS + CONSULT_ACTIONS
KEYS = frozenset("0123456789*#ABCD")
NUMBER_KEYS = frozenset("0123456789")
MAX_NUMBER = 32  # a dialled number longer than this is a stuck key: further digits are dropped


@dataclass(frozen=True, slots=True)
class CodeAction:
    """A recognised feature code: `action` (one of ACTIONS) and, for blind/attended, the number."""

    action: str
    number: str = ""


def _check_codes(codes: Mapping[str, str], actions: tuple[str, ...]) -> dict[str, str]:
    mode = {a: codes[a] for a in actions if codes.get(a)}
    for action, code in mode.items():
        if not set(code) <= KEYS:
            raise ValueError(f"feature code {action} '{code}': only 0-9 * # A-D can be pressed")
        for other, other_code in mode.items():
            if other != action and other_code.startswith(code):
                raise ValueError(f"feature code {action} '{code}' is a prefix of {other} '{other_code}'")
    return mode


class FeatureCodeReader:
    """One party's key presses -> CodeActions. Not thread-safe; one reader per leg."""

    def __init__(self, codes: Mapping[str, str], digit_timeout: float) -> None:
        unknown = set(codes) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown feature code action(s): {', '.join(sorted(unknown))}")
        if digit_timeout <= 0:
            raise ValueError("digit_timeout must be positive")
        self._modes = {False: _check_codes(codes, TRANSFER_ACTIONS), True: _check_codes(codes, CONSULT_ACTIONS)}
        self.digit_timeout = digit_timeout
        self._consulting = False
        self._buffer = ""  # a partial code
        self._action: str | None = None  # a transfer code was entered: collecting its number
        self._number = ""
        self._last: float | None = None  # time of the last key that is still pending

    @property
    def consulting(self) -> bool:
        return self._consulting

    @consulting.setter
    def consulting(self, value: bool) -> None:
        if value != self._consulting:
            self._consulting = value
            self.reset()

    def reset(self) -> None:
        self._buffer, self._action, self._number, self._last = "", None, "", None

    @property
    def deadline(self) -> float | None:
        """When `poll` must be called to act on a pause (None: nothing pending)."""
        return None if self._last is None else self._last + self.digit_timeout

    def poll(self, now: float) -> CodeAction | None:
        """Apply a pause: a number being entered is complete, a partial code is forgotten."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        action, number = self._action, self._number
        self.reset()
        return CodeAction(action, number) if action is not None and number else None

    def feed(self, key: str, now: float) -> list[CodeAction]:
        """One key pressed at `now`; returns what it completed (a pause before it may complete a
        pending number first, so at most two actions)."""
        done: list[CodeAction] = []
        timed_out = self.poll(now)
        if timed_out is not None:
            done.append(timed_out)
        if key not in KEYS:
            return done
        if self._action is not None:
            if key == "#":
                action, number = self._action, self._number
                self.reset()
                if number:
                    done.append(CodeAction(action, number))
            elif key in NUMBER_KEYS and len(self._number) < MAX_NUMBER:
                self._number += key
                self._last = now
            return done
        codes = self._modes[self._consulting]
        for candidate in (self._buffer + key, key):  # a key that breaks a code may start a new one
            if any(code.startswith(candidate) for code in codes.values()):
                self._buffer = candidate
                self._last = now
                break
        else:
            self.reset()
            return done
        for action, code in codes.items():
            if code == self._buffer:
                self.reset()
                if action in TRANSFER_ACTIONS:
                    self._action = action
                    self._last = now
                else:
                    done.append(CodeAction(action))
                break
        return done
