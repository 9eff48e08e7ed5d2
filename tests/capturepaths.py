"""Where the recorded switch captures are: ../shared/captures beside the checkout (CI lays a copy of
shared/ there), or SWITCHCTL_CAPTURES. Missing captures fail loudly: tests never skip them silently."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _find() -> Path:
    candidates = [os.environ.get("SWITCHCTL_CAPTURES"), REPO.parent / "shared" / "captures", "/work/shared/captures"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "freeswitch").is_dir():
            return Path(candidate)
    raise RuntimeError(
        "switch captures not found: expected ../shared/captures beside the checkout "
        "(or set SWITCHCTL_CAPTURES to the captures folder)"
    )


CAPTURES = _find()
