"""Install a rendered configuration tree on a switch, with a backup and a rollback.

Steps: compare with what is installed (nothing changed -> nothing to do unless forced); copy the
whole current conf_dir to `<conf_dir.parent>/.switchctl-backups/<UTC timestamp>/` (the last
`keep` backups are kept); stage the new files beside their targets, fsync them, and rename each
over its target (a rename is atomic, so FreeSWITCH never reads a half-written file); remove the
files a previous deploy installed that the new render no longer has (tracked in a manifest); then
ask the switch to reload. FreeSWITCH answers `reloadxml` with `+OK [Success]` when it accepted
the XML and with `+OK [[error near line N]: ...]` (still +OK) when it did not; anything but
`[Success]`, or a reload that raises (dead switch), puts the previous files back, reloads again
and raises DeployError carrying the switch's words.

File I/O here is synchronous on purpose: a conf tree is a few dozen small files, and the project
does not use threads for I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["DeployError", "DeployResult", "MANIFEST", "deploy", "reload_accepted"]

MANIFEST = ".switchctl-manifest.json"  # inside conf_dir: the files the last deploy installed
BACKUP_DIR = ".switchctl-backups"  # beside conf_dir
KEEP_BACKUPS = 5


class DeployError(Exception):
    """The switch rejected the new configuration (or could not be asked); the old one is back."""

    def __init__(self, message: str, *, reply: str = "", restored: bool = True, backup: Path | None = None):
        super().__init__(message)
        self.reply = reply
        self.restored = restored
        self.backup = backup


@dataclass(frozen=True)
class DeployResult:
    changed: bool
    written: tuple[str, ...] = ()  # relative paths whose content changed or were created
    removed: tuple[str, ...] = ()  # relative paths a previous deploy installed, now gone
    backup: Path | None = None
    reply: str = ""  # the switch's answer to the reload
    conf_dir: Path = field(default_factory=Path)

    def summary(self) -> str:
        if not self.changed:
            return f"nothing to deploy: {self.conf_dir} is up to date"
        return (
            f"deployed {len(self.written)} changed file(s), removed {len(self.removed)} into {self.conf_dir}; "
            f"backup {self.backup}; switch said: {self.reply.strip()}"
        )


def reload_accepted(reply: str) -> bool:
    """True when a `reloadxml` reply says FreeSWITCH accepted the XML.

    `+OK [Success]` is the only success; a parse error also starts with +OK
    (`+OK [[error near line 6470]: unexpected closing tag </context>]`).
    """
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines or lines[0] != "+OK [Success]":
        return False
    return not any(line.startswith("-") for line in lines)


def _check_rel(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("..", ".", "") for part in p.parts):
        raise ValueError(f"refusing to deploy a file outside conf_dir: {rel!r}")
    if p.parts[0] in (MANIFEST, BACKUP_DIR):
        raise ValueError(f"{rel!r} is a name deploy reserves")
    return str(p)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(target: Path, content: bytes) -> None:
    """Write beside the target, fsync, rename over it (atomic on POSIX), fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.parent / f".{target.name}.switchctl-new"
    with open(staged, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(staged, target)
    _fsync_dir(target.parent)


def _remove(target: Path, conf_dir: Path) -> None:
    try:
        target.unlink()
    except FileNotFoundError:
        return
    # Remove folders the removal left empty, up to (not including) conf_dir.
    parent = target.parent
    while parent != conf_dir and conf_dir in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _read_manifest(conf_dir: Path) -> list[str]:
    raw = _read(conf_dir / MANIFEST)
    if raw is None:
        return []
    try:
        data = json.loads(raw)
        return [_check_rel(str(p)) for p in data["files"]]
    except (ValueError, KeyError, TypeError):
        return []  # a damaged manifest only means stale files are not cleaned up


def _manifest_bytes(files: list[str]) -> bytes:
    return (json.dumps({"files": sorted(files)}, indent=1) + "\n").encode()


def _backup(conf_dir: Path, keep: int) -> Path | None:
    if not conf_dir.exists():
        return None
    root = conf_dir.parent / BACKUP_DIR
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = root / f"{conf_dir.name}-{stamp}"
    n = 1
    while dest.exists():  # two deploys within a microsecond
        dest = root / f"{conf_dir.name}-{stamp}-{n}"
        n += 1
    shutil.copytree(conf_dir, dest, symlinks=True)
    backups = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{conf_dir.name}-"))
    for old in backups[: max(0, len(backups) - keep)]:
        shutil.rmtree(old)
    return dest


async def deploy(
    files: Mapping[str, bytes],
    conf_dir: Path,
    reload: Callable[[], Awaitable[str]],
    *,
    force: bool = False,
    keep: int = KEEP_BACKUPS,
) -> DeployResult:
    """Install `files` (relative path -> bytes) into `conf_dir` and make the switch load them.

    Returns a DeployResult (changed=False: nothing differed and `force` was not set; the switch
    was not asked). Raises DeployError after restoring the previous files when the reload is
    rejected or fails; ValueError for a path that would land outside conf_dir.
    """
    conf_dir = Path(conf_dir)
    wanted = {_check_rel(rel): bytes(content) for rel, content in files.items()}
    previous_managed = _read_manifest(conf_dir)
    stale = sorted(rel for rel in previous_managed if rel not in wanted and (conf_dir / rel).exists())

    # Everything we may touch, with its current bytes (None: absent), to put back on failure.
    touched = sorted(set(wanted) | set(stale) | {MANIFEST})
    before = {rel: _read(conf_dir / rel) for rel in touched}
    written = tuple(rel for rel in sorted(wanted) if before[rel] != wanted[rel])
    new_manifest = _manifest_bytes(list(wanted))

    if not written and not stale and not force:
        if before[MANIFEST] != new_manifest:
            _atomic_write(conf_dir / MANIFEST, new_manifest)  # adopt an identical tree
        return DeployResult(changed=False, conf_dir=conf_dir)

    backup = _backup(conf_dir, keep)

    def restore() -> None:
        for rel, content in before.items():
            if content is None:
                _remove(conf_dir / rel, conf_dir)
            else:
                _atomic_write(conf_dir / rel, content)

    try:
        conf_dir.mkdir(parents=True, exist_ok=True)
        for rel in written:
            _atomic_write(conf_dir / rel, wanted[rel])
        for rel in stale:
            _remove(conf_dir / rel, conf_dir)
        _atomic_write(conf_dir / MANIFEST, new_manifest)
    except OSError as exc:
        restore()
        raise DeployError(f"could not write {conf_dir}: {exc}", backup=backup) from exc

    try:
        reply = await reload()
    except Exception as exc:  # a dead switch: restore, then tell the caller why
        restore()
        again = await _reload_quietly(reload)
        raise DeployError(
            f"reload failed ({type(exc).__name__}: {exc}); previous configuration restored{again}",
            backup=backup,
        ) from exc

    if not reload_accepted(reply):
        restore()
        again = await _reload_quietly(reload)
        raise DeployError(
            f"switch rejected the configuration: {reply.strip() or '(empty reply)'}; "
            f"previous configuration restored{again}",
            reply=reply,
            backup=backup,
        )

    return DeployResult(True, written, tuple(stale), backup, reply, conf_dir)


async def _reload_quietly(reload: Callable[[], Awaitable[str]]) -> str:
    """Reload after a restore; the result only adds to the error message."""
    try:
        reply = await reload()
    except Exception as exc:
        return f" (reloading the previous configuration failed too: {type(exc).__name__}: {exc})"
    if reload_accepted(reply):
        return " and reloaded"
    return f" (the switch also refused the previous configuration: {reply.strip()})"
