"""`${...}` references in flow values.

A flow value such as `"ivr/${var.lang}/welcome"` is parsed once, at load time, into literal text and
references. Nothing is ever evaluated: a reference names a value (a call variable, a flow variable,
a channel variable, a regex capture or a site value) and is replaced by its text at run time.
Unknown reference forms are load errors, so a typo cannot silently become an empty string.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

# Values every call has (see CallInfo); `digits` is the last input a collect or menu accepted.
CALL_NAMES: tuple[str, ...] = ("caller", "caller_name", "destination", "uuid", "digits")
SCOPES: tuple[str, ...] = ("var", "chan", "site")

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Channel variables and site values may carry dots or dashes (e.g. `sip_h_X-Account`).
_WIDE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class TemplateError(ValueError):
    """A value's `${...}` is malformed or names something that cannot exist."""


@dataclass(frozen=True, slots=True)
class Ref:
    scope: str  # "call", "var", "chan", "site" or "capture"
    name: str  # call value name, variable name, site name, or the capture index as text
    text: str  # as written, e.g. "${var.pin}"

    @property
    def capture_index(self) -> int:
        return int(self.name)


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | Ref, ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, Ref))

    @property
    def is_literal(self) -> bool:
        return not self.refs

    def render(self, lookup: Callable[[Ref], str]) -> str:
        return "".join(p if isinstance(p, str) else lookup(p) for p in self.parts)

    def __str__(self) -> str:
        return self.source


def literal(text: str) -> Template:
    return Template(text, (text,) if text else ())


def _classify(inner: str, text: str) -> Ref:
    if inner.isdigit():
        if int(inner) < 1:
            raise TemplateError(f"'{text}': captures are numbered from ${{1}}")
        return Ref("capture", str(int(inner)), text)
    if inner in CALL_NAMES:
        return Ref("call", inner, text)
    scope, dot, name = inner.partition(".")
    if dot and scope in SCOPES:
        pattern = _VAR_NAME if scope == "var" else _WIDE_NAME
        if not pattern.fullmatch(name):
            raise TemplateError(f"'{text}': '{name}' is not a valid {scope} name")
        return Ref(scope, name, text)
    hint = ""
    if dot:
        close = difflib.get_close_matches(scope, SCOPES, n=1)
        if close:
            hint = f" (did you mean '${{{close[0]}.{name}}}'?)"
    else:
        close = difflib.get_close_matches(inner, CALL_NAMES, n=1)
        if close:
            hint = f" (did you mean '${{{close[0]}}}'?)"
    if not hint:
        hint = (
            " (known: ${caller}, ${caller_name}, ${destination}, ${uuid}, ${digits},"
            " ${var.NAME}, ${chan.NAME}, ${site.NAME}, ${1}...)"
        )
    raise TemplateError(f"unknown reference '{text}'{hint}")


def parse_template(source: str) -> Template:
    """Split `source` into literal text and references; raise TemplateError on a bad reference."""
    parts: list[str | Ref] = []
    pos = 0
    while True:
        start = source.find("${", pos)
        if start < 0:
            break
        end = source.find("}", start + 2)
        if end < 0:
            raise TemplateError(f"unterminated '${{' in '{source}'")
        if start > pos:
            parts.append(source[pos:start])
        text = source[start : end + 1]
        parts.append(_classify(source[start + 2 : end], text))
        pos = end + 1
    if pos < len(source):
        parts.append(source[pos:])
    return Template(source, tuple(parts))
