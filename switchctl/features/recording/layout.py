"""Where a call recording goes (pure): `<dir>/<yyyy>/<mm>/<dd>/<name>.<format>`.

Dated folders because a busy site makes thousands of recordings a day, and one flat folder of a
year's calls is slow to list and to clean up. The date is the call's local date in the site's
time zone (value `timezone`, else UTC), so a day's folder is the day people talk about.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import zoneinfo

RECORDING_FORMATS = ("wav",)
MAX_NAME = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")


def safe_name(name: str, fallback: str) -> str:
    """`name` as one file name: no folders (a `/` cannot climb out of the dated folder), no spaces
    (uuid_record takes the path as one argument), nothing but letters, digits and `_ . + -`
    (the rest becomes `_`); at most MAX_NAME characters; `fallback` (the call uuid) when empty."""
    cleaned = _UNSAFE.sub("_", name.strip())[:MAX_NAME].lstrip(".")
    if not cleaned.strip("_"):
        cleaned = _UNSAFE.sub("_", fallback)[:MAX_NAME].lstrip(".") or "recording"
    return cleaned


def day_folder(at: dt.datetime, timezone: str = "UTC") -> str:
    """`yyyy/mm/dd` of the instant `at` (aware) in `timezone`."""
    local = at.astimezone(zoneinfo.ZoneInfo(timezone))
    return f"{local.year:04d}/{local.month:02d}/{local.day:02d}"


def recording_path(directory: str, name: str, at: dt.datetime, *, timezone: str = "UTC",
                   fmt: str = "wav") -> str:
    """The switch path of recording `name` (already `safe_name`) started at `at`."""
    if fmt not in RECORDING_FORMATS:
        raise ValueError(f"recording format '{fmt}': one of {', '.join(RECORDING_FORMATS)}")
    return posixpath.join(directory, day_folder(at, timezone), f"{name}.{fmt}")


def local_path(path: str, directory: str, local_directory: str | None) -> str:
    """The same file as the controller sees it: `path` under `directory` moved to
    `local_directory` (None: the controller sees the switch's path)."""
    if local_directory is None:
        return path
    relative = posixpath.relpath(path, directory)
    if relative.startswith(".."):
        return path
    return posixpath.join(local_directory, relative)
