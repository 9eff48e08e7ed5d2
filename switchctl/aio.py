"""Running the event loop: uvloop when installed (the standard fast asyncio loop), else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # optional: everything works on the stock loop, only slower
        return asyncio.run(main)
    return uvloop.run(main)
