"""Render a site into a complete FreeSWITCH configuration folder (conf_dir).

The output is a mapping of relative path -> bytes, byte-deterministic for the same inputs (sorted
routes, no timestamps), every file well-formed XML with site values XML-escaped by jinja2's
autoescape. `render_to` writes it to a folder; `switchctl.render.deploy` installs it on a switch.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2

import switchctl
from switchctl.config.flowroutes import FlowRoutes, read_flow_routes
from switchctl.config.site import Site, SwitchConfig
from switchctl.config.yamlsrc import SourceError

__all__ = ["CDR_CSV_BASE", "CDR_JSON_DIR", "FREESWITCH_MODULES", "RenderError", "render_freeswitch",
           "render_to", "templates_dir"]

# The smallest module set the controller needs: loggers first (without them FreeSWITCH logs
# nothing, and a sofia profile that fails to start says so nowhere), SIP, the event socket, the
# dialplan and its apps, playback of .wav files and tones, `say` in English, loopback channels.
FREESWITCH_MODULES = (
    "mod_console",
    "mod_logfile",
    "mod_event_socket",
    "mod_commands",
    "mod_dptools",
    "mod_dialplan_xml",
    "mod_sofia",
    "mod_loopback",
    "mod_sndfile",
    "mod_tone_stream",
    "mod_say_en",
    # three-way calls and the caller's side of a transfer (Call.bridge/conference: docs/TRANSFER.md)
    "mod_conference",
    # CDRs the controller imports when it was not listening (billing/cdrcollect.py, docs/CDR.md)
    "mod_json_cdr",
    "mod_cdr_csv",
)
# Where the CDR modules write, until site.yaml says (a `cdr:` key per switch: see docs/CDR.md).
# FreeSWITCH expands $${log_dir} when it loads the file.
CDR_JSON_DIR = "$${log_dir}/json_cdr"  # mod_json_cdr: <dir>/<uuid>.cdr.json, one file per leg
CDR_CSV_BASE = "$${log_dir}"  # mod_cdr_csv: <base>/cdr-csv/Master.csv

ESL_ACL_NAME = "switchctl_esl"


class RenderError(Exception):
    """The site cannot be rendered (e.g. a flow number collides with a phone extension)."""


def templates_dir() -> Path:
    """Where the templates live: the repo's `templates/`, else a copy shipped inside the package."""
    package = Path(switchctl.__file__).resolve().parent
    for candidate in (package.parent / "templates", package / "templates"):
        if (candidate / "freeswitch").is_dir():
            return candidate
    raise RenderError(f"templates not found next to {package} (looked for templates/freeswitch)")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "freeswitch")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _comment(text: str) -> str:
    """Text that is safe inside an XML comment ('--' is not allowed there)."""
    return re.sub(r"-(?=-)", "- ", text).rstrip("-")


@dataclass(frozen=True, slots=True)
class _Route:
    kind: str  # "flow" or "phone"
    name: str  # the dialplan extension's name
    expression: str  # regex on destination_number
    comment: str
    extension: str = ""


def _routes(site: Site, flows: list[FlowRoutes]) -> list[_Route]:
    """Exact flow numbers, then phone extensions, then flow patterns (so exact always wins)."""
    phones = {p.extension: p for p in site.phones}
    numbers: list[_Route] = []
    patterns: list[_Route] = []
    for flow in flows:
        for number in flow.numbers:
            if number in phones:
                raise RenderError(
                    f"{flow.file.name}: flow '{flow.flow}' number {number} is also phone extension "
                    f"{number} ({phones[number].mark}); a number can only go one way"
                )
            numbers.append(_Route("flow", f"switchctl_flow_{_ident(flow.flow)}_{_ident(number)}",
                                  f"^{re.escape(number)}$", _comment(f"flow {flow.flow} ({flow.file.name}): {number}")))
        for i, pattern in enumerate(flow.patterns, start=1):
            patterns.append(_Route("flow", f"switchctl_flow_{_ident(flow.flow)}_pattern{i}",
                                   f"^(?:{pattern})$", _comment(f"flow {flow.flow} ({flow.file.name}): pattern {i}")))
    numbers.sort(key=lambda r: r.name)
    phone_routes = [
        _Route("phone", f"switchctl_phone_{p.extension}", f"^{p.extension}$",
               _comment(f"{'booth' if p.booth else 'phone'} {p.extension}: {p.name}"), p.extension)
        for p in sorted(site.phones, key=lambda p: p.extension)
    ]
    # Patterns keep file order within a flow (earlier patterns are meant to win), flows by file name.
    return numbers + phone_routes + patterns


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


_KIND_LABELS = {"freeswitch": "FreeSWITCH", "asterisk": "Asterisk"}


def pick_switch(site: Site, switch: str | None = None, *, kind: str = "freeswitch") -> SwitchConfig:
    """The switch of `kind` to render: the named one, or the site's only one of that kind."""
    label = _KIND_LABELS.get(kind, kind)
    candidates = [s for s in site.switches if s.kind == kind]
    if switch is not None:
        for s in candidates:
            if s.name == switch:
                return s
        raise RenderError(f"site {site.name} has no {label} switch named {switch!r}")
    if len(candidates) != 1:
        names = ", ".join(s.name for s in candidates) or "none"
        raise RenderError(f"site {site.name} has {len(candidates)} {label} switches ({names}); name the one to render")
    return candidates[0]


def render_freeswitch(site: Site, switch: str | None = None) -> dict[str, bytes]:
    """Render the FreeSWITCH conf_dir for `switch` (default: the site's only FreeSWITCH).

    Raises RenderError or SourceError (a flow file's routes are unreadable).
    """
    sw = pick_switch(site, switch)
    flows = read_flow_routes(site.flows_dir, display_base=site.folder)
    env = _environment()
    header = _comment(f"rendered by switchctl from site {site.name}, switch {sw.name}: do not edit, re-render")
    common = {"site": site, "switch": sw, "header": header, "esl_acl_name": ESL_ACL_NAME}

    def render(template: str, **extra: object) -> bytes:
        return env.get_template(template).render(**common, **extra).encode("utf-8")

    out: dict[str, bytes] = {
        "freeswitch.xml": render("freeswitch.xml.j2"),
        "vars.xml": render("vars.xml.j2"),
        "autoload_configs/modules.conf.xml": render("autoload_configs/modules.conf.xml.j2",
                                                    modules=FREESWITCH_MODULES),
        "autoload_configs/switch.conf.xml": render("autoload_configs/switch.conf.xml.j2"),
        "autoload_configs/console.conf.xml": render("autoload_configs/console.conf.xml.j2"),
        "autoload_configs/logfile.conf.xml": render("autoload_configs/logfile.conf.xml.j2"),
        "autoload_configs/event_socket.conf.xml": render("autoload_configs/event_socket.conf.xml.j2"),
        "autoload_configs/acl.conf.xml": render("autoload_configs/acl.conf.xml.j2"),
        "autoload_configs/json_cdr.conf.xml": render("autoload_configs/json_cdr.conf.xml.j2",
                                                     cdr_json_dir=CDR_JSON_DIR),
        "autoload_configs/cdr_csv.conf.xml": render("autoload_configs/cdr_csv.conf.xml.j2",
                                                    cdr_csv_base=CDR_CSV_BASE),
        "autoload_configs/sofia.conf.xml": render("autoload_configs/sofia.conf.xml.j2"),
        "autoload_configs/conference.conf.xml": render("autoload_configs/conference.conf.xml.j2"),
        "sip_profiles/internal.xml": render("sip_profiles/internal.xml.j2"),
        "directory/default.xml": render("directory/default.xml.j2"),
        "dialplan/default.xml": render("dialplan/default.xml.j2"),
        "dialplan/default/00_switchctl.xml": render(
            "dialplan/switchctl.xml.j2",
            routes=_routes(site, flows),
            socket_data=f"{sw.outbound} async full",
        ),
    }
    for gateway in site.gateways:
        out[f"sip_profiles/internal/{gateway.name}.xml"] = render("sip_profiles/gateway.xml.j2", gateway=gateway)
    for phone in site.phones:
        out[f"directory/default/{phone.extension}.xml"] = render("directory/user.xml.j2", phone=phone)
    # An include pattern that matches no file is reported as an error by some FreeSWITCH versions.
    if not site.gateways:
        out["sip_profiles/internal/00_none.xml"] = render("stub.xml.j2")
    if not site.phones:
        out["directory/default/00_none.xml"] = render("stub.xml.j2")

    for path, content in out.items():
        check_xml(path, content)
    return dict(sorted(out.items()))


def check_xml(path: str, content: bytes) -> None:
    """Raise RenderError unless `content` is well-formed XML (a template bug, never user input)."""
    try:
        ET.fromstring(content)
    except ET.ParseError as exc:
        raise RenderError(f"rendered {path} is not well-formed XML: {exc}") from None


def render_to(
    site: Site, out_dir: str | Path, switch: str | None = None, *, prune: bool = False
) -> dict[str, bytes]:
    """Render and write the tree under `out_dir` (created if needed); returns what was written.

    With `prune=True`, files under `out_dir` that the render no longer produces are removed, so the
    folder is exactly the rendered tree (for a folder owned by the render, like `freeswitch-conf/`;
    never point it at a live /etc/freeswitch: use deploy for that).
    """
    files = render_freeswitch(site, switch)
    write_tree(files, Path(out_dir), prune=prune)
    return files


def write_tree(files: Mapping[str, bytes], out_dir: Path, *, prune: bool = False) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
    if not prune:
        return
    wanted = {out_dir / rel for rel in files}
    for existing in sorted(out_dir.rglob("*"), reverse=True):
        if existing.is_file() and existing not in wanted:
            existing.unlink()
        elif existing.is_dir() and not any(existing.iterdir()):
            existing.rmdir()


__all__ += ["SourceError", "check_xml", "pick_switch", "write_tree"]
