"""Reloading an Asterisk over ARI after `deploy()` installed a rendered conf_dir, and proving it took.

Asterisk does not reject a configuration as crisply as FreeSWITCH's `reloadxml`:
- `PUT /asterisk/modules/res_pjsip.so` answers 204 even when pjsip.conf does not parse; Asterisk
  logs "Contents of config file 'pjsip.conf' are invalid" and keeps every previous object. An
  object with a bad option is skipped alone ("Could not create an object of type 'endpoint'").
- `PUT /asterisk/modules/pbx_config.so` answers 409 when extensions.conf does not parse (the old
  dialplan stays); an unknown application is only found when a call runs it.
So the reload is judged by reading the result back, not by the reload's status alone:
1. every module in the conf_dir's modules.conf that is not Running is loaded (POST), in file order;
2. res_pjsip, pbx_config, res_ari, cdr_csv and cdr_custom are reloaded (PUT); an error status is a
   rejection;
3. the dialplan global `SWITCHCTL_CONFIG` must equal the fingerprint in the conf_dir's
   extensions.conf, and every pjsip.conf object (endpoint, aor, auth, identify, registration) must
   exist in Asterisk (`GET /asterisk/config/dynamic/res_pjsip/<type>/<id>`), each endpoint with
   ``set_var SWITCHCTL_CONFIG=<fingerprint>` (which ARI shows as an attribute of that name).
The expected state is read from the files in conf_dir at reload time, so the same reload judges
the restored previous configuration after a rollback. A configuration without a fingerprint (the
setup script's default one) is checked for its objects only.

`http.conf` is not reloaded: its listener carries this very connection. A changed ARI port, user or
password therefore needs an Asterisk restart (`tools/asterisk-setup.sh restart` in development).

The reload returns text in deploy()'s convention: `+OK [Success]` then one line per step when
everything checked out, `-ERR <why>` otherwise (deploy then restores the previous files).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from switchctl.ari.client import AriClient
from switchctl.ari.errors import AriError, AriHttpError, AriNotFound
from switchctl.config.site import AriConfig
from switchctl.render.asterisk import MARKER_VAR, IniSection, parse_asterisk_ini

__all__ = ["PJSIP_TYPES", "RELOAD_MODULES", "asterisk_reloader", "check_loaded", "files_only_reload"]

log = logging.getLogger("switchctl.deploy")

# Modules whose config files the render writes, reloaded in this order (pjsip before the dialplan
# that dials its endpoints). Modules that are not loaded are skipped.
RELOAD_MODULES = ("res_pjsip.so", "pbx_config.so", "res_ari.so", "cdr_csv.so", "cdr_custom.so")
# pjsip.conf object types the check reads back, as ARI's dynamic config names them.
PJSIP_TYPES = ("endpoint", "aor", "auth", "identify", "registration")


class _Rejected(Exception):
    """Asterisk did not take the configuration; the message says what differs."""


def _read_sections(conf_dir: Path, name: str) -> list[IniSection] | None:
    try:
        text = (conf_dir / name).read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        return parse_asterisk_ini(text)
    except ValueError as exc:
        raise _Rejected(f"{conf_dir / name} is not a valid Asterisk config file: {exc}") from None


def _expected_marker(extensions: list[IniSection] | None) -> str | None:
    for section in extensions or []:
        if section.name == "globals":
            value = section.get(MARKER_VAR)
            if value is not None:
                return value
    return None


def _modules_listed(modules: list[IniSection] | None) -> list[str]:
    listed: list[str] = []
    for section in modules or []:
        if section.name == "modules":
            listed.extend(v if v.endswith(".so") else f"{v}.so" for v in section.all("load"))
    return listed


async def _module_status(ari: AriClient) -> dict[str, str]:
    result = await ari.request("GET", "/asterisk/modules")
    if not isinstance(result, list):
        raise _Rejected(f"GET /asterisk/modules answered {type(result).__name__}, not a list")
    return {str(m.get("name")): str(m.get("status")) for m in result if isinstance(m, dict)}


async def check_loaded(ari: AriClient, conf_dir: Path) -> list[str]:
    """Raise _Rejected unless Asterisk runs what conf_dir holds; return what was checked."""
    notes: list[str] = []
    marker = _expected_marker(_read_sections(conf_dir, "extensions.conf"))
    if marker is not None:
        got = await ari.request("GET", "/asterisk/variable", params={"variable": MARKER_VAR})
        value = got.get("value") if isinstance(got, dict) else None
        if value != marker:
            raise _Rejected(
                f"the dialplan is not the deployed one: global {MARKER_VAR} is {value!r}, expected "
                f"{marker!r} (extensions.conf was not loaded; see Asterisk's messages.log)"
            )
        notes.append(f"dialplan {MARKER_VAR}={marker}")

    pjsip = _read_sections(conf_dir, "pjsip.conf") or []
    counts: dict[str, int] = {}
    for section in pjsip:
        kind = section.get("type")
        if kind not in PJSIP_TYPES:
            continue
        try:
            fields = await ari.request("GET", f"/asterisk/config/dynamic/res_pjsip/{kind}/{_seg(section.name)}")
        except AriNotFound:
            raise _Rejected(
                f"pjsip.conf {kind} '{section.name}' (line {section.line}) is not loaded: Asterisk "
                f"refused the file or that object (see Asterisk's messages.log)"
            ) from None
        if kind == "endpoint" and marker is not None:
            # ARI lists each `set_var = NAME=VALUE` as attribute NAME with value VALUE
            got_marker = _attribute(fields, MARKER_VAR)
            if got_marker != marker:
                raise _Rejected(
                    f"pjsip endpoint '{section.name}' is not the deployed one ({MARKER_VAR} is "
                    f"{got_marker!r}, expected {marker!r}): pjsip.conf was not loaded (see Asterisk's messages.log)"
                )
        counts[kind] = counts.get(kind, 0) + 1
    if counts:
        notes.append("pjsip " + ", ".join(f"{n} {kind}(s)" for kind, n in sorted(counts.items())))
    return notes


def _attribute(fields: Any, name: str) -> str:
    if isinstance(fields, list):
        for item in fields:
            if isinstance(item, dict) and item.get("attribute") == name:
                return str(item.get("value", ""))
    return ""


def _seg(value: str) -> str:
    return quote(value, safe="")


def asterisk_reloader(ari: AriConfig, conf_dir: Path, *, timeout: float = 10.0) -> Callable[[], Awaitable[str]]:
    """A `reload` for `deploy(files, conf_dir, reload)` on the Asterisk that `ari` reaches.

    Never raises for a rejected configuration (returns `-ERR ...`); raises AriError subclasses when
    Asterisk cannot be reached at all, which deploy() also treats as a failure and rolls back.
    """
    conf_dir = Path(conf_dir)

    async def reload() -> str:
        async with AriClient(ari.url, ari.user, ari.password, ari.app, timeout=timeout) as client:
            steps: list[str] = []
            try:
                status = await _module_status(client)
                for module in _modules_listed(_read_sections(conf_dir, "modules.conf")):
                    if status.get(module) == "Running":
                        continue
                    try:
                        await client.request("POST", f"/asterisk/modules/{_seg(module)}")
                    except AriHttpError as exc:
                        raise _Rejected(f"module {module} does not load: {exc}") from None
                    steps.append(f"loaded {module}")
                status = await _module_status(client)
                for module in RELOAD_MODULES:
                    if status.get(module) != "Running":
                        continue
                    try:
                        await client.request("PUT", f"/asterisk/modules/{_seg(module)}")
                    except AriHttpError as exc:
                        raise _Rejected(f"Asterisk refused to reload {module}: {exc}") from None
                    steps.append(f"reloaded {module}")
                steps.extend(await check_loaded(client, conf_dir))
            except _Rejected as exc:
                log.warning("asterisk rejected the configuration", extra={"why": str(exc)})
                return f"-ERR {exc}\n"
            except AriHttpError as exc:
                return f"-ERR {exc}\n"
            return "+OK [Success]\n" + "".join(f"{step}\n" for step in steps)

    return reload


async def files_only_reload() -> str:
    """The `reload` for deploying sound files: Asterisk opens them per playback, nothing to reload."""
    return "+OK [Success]\n"


# AriError is what a dead Asterisk raises out of reload(); re-exported for callers' except clauses.
__all__ += ["AriError"]
