"""Render a site into an Asterisk configuration folder (pjsip, dialplan, ARI, HTTP, CDR, modules).

`render_asterisk(site)` returns relative path -> bytes, byte-deterministic for the same inputs.
The files are INI (Asterisk's config syntax), so jinja2's HTML autoescape is off and every site
value passes an `ini` filter that refuses what would change the file's structure: a newline (a new
line is a new setting), `;` (starts a comment, so a password would be cut short), `[`/`]` (a
section header), control characters, and leading/trailing blanks (Asterisk strips them).

Every rendered file set carries a fingerprint (`SWITCHCTL_CONFIG`, a digest of the whole set) as a
dialplan global and on every endpoint's `set_var`: after a reload, `asterisk_reload` reads it back
over ARI to prove Asterisk loaded *these* files (a pjsip.conf that does not parse is ignored with
only a log line; ARI still answers 204).

`asterisk_sound_files(site)` gives the sound files to install under Asterisk's sounds directory at
`switchctl/<site>/`, where the Asterisk backend plays them as `sound:switchctl/<site>/<name>`.
"""

from __future__ import annotations

import hashlib
import io
import re
import wave
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

from switchctl.config.flowroutes import FlowRoutes, read_flow_routes
from switchctl.config.site import Gateway, Site, SwitchConfig
from switchctl.render.freeswitch import RenderError, pick_switch, templates_dir

__all__ = [
    "ASTERISK_MODULES",
    "CDR_CUSTOM_FIELDS",
    "CDR_CUSTOM_FILE",
    "LOOPBACK_ENDPOINT",
    "MARKER_VAR",
    "SOUND_EXTENSIONS",
    "IniSection",
    "asterisk_sound_files",
    "config_marker",
    "parse_asterisk_ini",
    "pattern_to_exten",
    "pick_asterisk_switch",
    "render_asterisk",
    "render_asterisk_to",
    "sounds_subdir",
]

# The module list of tools/asterisk-setup.sh's default config, plus what a rendered site needs:
# phones register (registrar) and are found by user name (identifier_user), behind NAT
# (res_pjsip_nat), gateways authenticate and register (outbound_authenticator_digest,
# outbound_registration), and CDRs with microseconds (cdr_custom, which needs res_cdrel_custom
# loaded first: with autoload = no the loader does not pull it in, captures 08).
ASTERISK_MODULES = (
    "res_sorcery_config", "res_sorcery_memory", "res_sorcery_astdb", "res_timing_timerfd",
    "res_pjproject", "res_pjsip", "res_pjsip_session", "res_pjsip_pubsub",
    "res_pjsip_authenticator_digest", "res_pjsip_outbound_authenticator_digest", "chan_pjsip",
    "res_pjsip_endpoint_identifier_ip", "res_pjsip_endpoint_identifier_user", "res_pjsip_registrar",
    "res_pjsip_outbound_registration", "res_pjsip_nat", "res_pjsip_sdp_rtp", "res_pjsip_caller_id",
    "res_pjsip_dtmf_info", "res_pjsip_rfc3326", "res_pjsip_refer", "res_pjsip_logger",
    "res_rtp_asterisk",
    "pbx_config", "app_stasis", "app_playback", "app_echo", "app_dial", "app_stack",
    "func_callerid", "func_channel", "func_timeout", "func_hangupcause", "func_strings", "func_cdr",
    "bridge_simple", "bridge_native_rtp", "bridge_softmix", "bridge_holding", "bridge_builtin_features",
    "chan_bridge_media", "codec_ulaw", "codec_alaw", "codec_a_mu", "codec_gsm", "codec_resample",
    "format_gsm", "format_wav", "format_wav_gsm", "format_pcm", "format_sln",
    "cdr_csv", "res_cdrel_custom", "cdr_custom",
    "res_http_websocket", "res_websocket_client",
    "res_stasis", "res_stasis_answer", "res_stasis_playback", "res_stasis_recording", "res_stasis_snoop",
    "res_stasis_device_state",
    "res_ari", "res_ari_model", "res_ari_applications", "res_ari_asterisk", "res_ari_bridges",
    "res_ari_channels", "res_ari_device_states", "res_ari_endpoints", "res_ari_events",
    "res_ari_playbacks", "res_ari_recordings", "res_ari_sounds",
)

MARKER_VAR = "SWITCHCTL_CONFIG"
_MARKER_PLACEHOLDER = "0" * 16
LOOPBACK_ENDPOINT = "sipp"  # the name tools/asterisk-setup.sh's default config and the captures use
LOOPBACK_IP = "127.0.0.1"
LOOPBACK_UAS_PORT = 5080  # where `PJSIP/sipp` without a URI rings (a sipp UAS in the tests)
# Section names the pjsip.conf template uses itself: a gateway may not take them.
# `switchctl-uri` is the endpoint SIP-URI dial targets go out through (switch/asterisk_dial.py
# URI_ENDPOINT; a test keeps the two equal).
URI_ENDPOINT = "switchctl-uri"
_RESERVED_ENDPOINTS = frozenset({LOOPBACK_ENDPOINT, URI_ENDPOINT, "global", "system", "transport-udp"})

CDR_CUSTOM_FILE = "switchctl.csv"  # in <astlogdir>/cdr-custom/
CDR_CUSTOM_FIELDS = (
    "uniqueid", "linkedid", "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
    "lastapp", "lastdata", "start(double)", "answer(double)", "end(double)", "duration", "billsec",
    "disposition", "amaflags", "userfield", "sequence",
    # CDR user variables the Asterisk backend sets with `CDR(name)` (a plain channel variable is not
    # a CDR variable): the prepaid call's caller-leg uniqueid and account (billing/callkeys.py),
    # and the call's recording file (features/recording, docs/RECORDING.md)
    "switchctl_call(uservar)", "switchctl_account(uservar)", "switchctl_recording(uservar)",
)

# Formats the module list above can play, by file extension (format_wav is 8 kHz 16-bit mono).
SOUND_EXTENSIONS = frozenset({".wav", ".gsm", ".wav49", ".ulaw", ".alaw", ".pcm", ".sln"})


def sounds_subdir(site: Site) -> str:
    """The folder under Asterisk's sounds directory that holds the site's prompts."""
    return f"switchctl/{site.name}"


# --- values -------------------------------------------------------------------------------------

_INI_BAD = re.compile(r"[\x00-\x1f\x7f;\[\]]")


def _ini(value: object, what: str) -> str:
    """A value that is safe after `key = ` in an Asterisk config file, or RenderError."""
    text = str(value)
    bad = _INI_BAD.search(text)
    if bad:
        char = bad.group()
        shown = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(char, repr(char))
        raise RenderError(
            f"{what} {text!r} contains {shown}, which would break the Asterisk config file "
            f"(newlines start a new setting, ';' a comment, brackets a section); change the value"
        )
    if text != text.strip():
        raise RenderError(f"{what} {text!r} starts or ends with a blank, which Asterisk would strip")
    return text


def _callerid_name(value: object, what: str) -> str:
    text = _ini(value, what)
    if any(ch in text for ch in '"<>'):
        raise RenderError(f"{what} {text!r} contains '\"', '<' or '>', which would break its caller ID")
    return text


def _dialplan(value: object, what: str) -> str:
    """A value inside a dialplan application's arguments: no separators, no expressions."""
    text = _ini(value, what)
    if re.search(r"[,()|$\\\"]", text):
        raise RenderError(f"{what} {text!r} contains a character the dialplan would interpret (, ( ) | $ \\ \")")
    return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "asterisk")),
        autoescape=False,  # INI, not HTML: values are checked by the filters below instead
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["ini"] = _ini
    env.filters["callerid_name"] = _callerid_name
    env.filters["dialplan"] = _dialplan
    return env


# --- routes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Route:
    kind: str  # "flow" or "phone"
    exten: str  # the extensions.conf extension: a number or an `_` pattern
    comment: str
    extension: str = ""  # the phone's extension, for Dial


_CLASS_SHORT = {"0123456789": "X", "123456789": "Z", "23456789": "N"}


def _digit_class(body: str) -> str | None:
    """`[...]` content (digits and ranges only) -> an Asterisk pattern character or class."""
    digits: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if not (lo.isdigit() and hi.isdigit() and lo <= hi):
                return None
            digits.update(str(d) for d in range(int(lo), int(hi) + 1))
            i += 3
        elif body[i].isdigit():
            digits.add(body[i])
            i += 1
        else:
            return None
    if not digits:
        return None
    ordered = "".join(sorted(digits))
    if ordered in _CLASS_SHORT:
        return _CLASS_SHORT[ordered]
    return f"[{ordered}]"


def pattern_to_exten(regex: str) -> str | None:
    """A flow's destination regex as an Asterisk extension (or `_` pattern), or None if it has none.

    Translates what fixed-length dial patterns use: optional `^`/`$`, literal digits, `*`, `#`,
    `\\+`, `\\d`, digit classes (`[0-9]` -> X, `[1-9]` -> Z, `[2-9]` -> N, `[135]`), `{n}` after
    one of those, and capture groups (dropped: the controller takes captures from its own regex).
    Anything else (`|`, `?`, `+`, `*` as a repeat, `.`) returns None: Asterisk's `.` and `!` also
    match non-digits, so there is no exact form, and the render routes such flows through a
    catch-all into Stasis instead (the controller applies the regex).
    """
    text = regex
    text = text.removeprefix("^")
    if text.endswith("$") and not text.endswith("\\$"):
        text = text[:-1]
    atoms: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "()":
            if text.startswith("(?:", i):
                i += 3
                continue
            if text.startswith("(?", i):
                return None
            i += 1
            continue
        if ch == "\\":
            if i + 1 >= len(text):
                return None
            nxt = text[i + 1]
            if nxt == "d":
                atoms.append("X")
            elif nxt in "+*#":
                atoms.append(nxt)
            else:
                return None
            i += 2
        elif ch.isdigit() or ch == "#":
            atoms.append(ch)
            i += 1
        elif ch == "[":
            end = text.find("]", i)
            if end < 0:
                return None
            cls = _digit_class(text[i + 1 : end])
            if cls is None:
                return None
            atoms.append(cls)
            i = end + 1
        elif ch == "{":
            match = re.match(r"\{(\d+)\}", text[i:])
            if not match or not atoms or atoms[-1] == ")":
                return None
            count = int(match.group(1))
            if count < 1 or count > 32:
                return None
            atoms.extend([atoms[-1]] * (count - 1))
            i += match.end()
        else:
            return None
    if not atoms:
        return None
    if all(len(a) == 1 and (a.isdigit() or a in "*#+") for a in atoms):
        return "".join(atoms)  # no wildcard: a plain extension
    return "_" + "".join(atoms)


def _routes(site: Site, flows: list[FlowRoutes]) -> tuple[list[_Route], list[str]]:
    """Flow numbers, phones, then flow patterns; plus the patterns that have no dialplan form."""
    phones = {p.extension: p for p in site.phones}
    numbers: list[_Route] = []
    patterns: list[_Route] = []
    inexact: list[str] = []
    for flow in flows:
        for number in flow.numbers:
            if number in phones:
                raise RenderError(
                    f"{flow.file.name}: flow '{flow.flow}' number {number} is also phone extension "
                    f"{number} ({phones[number].mark}); a number can only go one way"
                )
            numbers.append(_Route("flow", number, f"flow {flow.flow} ({flow.file.name}): {number}"))
        for i, regex in enumerate(flow.patterns, start=1):
            exten = pattern_to_exten(regex)
            if exten is None:
                inexact.append(f"flow {flow.flow} ({flow.file.name}) pattern {i} {regex!r}")
                continue
            patterns.append(_Route("flow", exten, f"flow {flow.flow} ({flow.file.name}): pattern {i} {regex}"))
    numbers.sort(key=lambda r: r.exten)
    phone_routes = [
        _Route("phone", p.extension, f"{'booth' if p.booth else 'phone'} {p.extension}", p.extension)
        for p in sorted(site.phones, key=lambda p: p.extension)
    ]
    seen: dict[str, str] = {}
    for route in numbers + phone_routes + patterns:
        if route.exten in seen:
            raise RenderError(f"{route.comment} and {seen[route.exten]} are the same extension {route.exten}")
        seen[route.exten] = route.comment
    for route in numbers + phone_routes + patterns:
        _ini(route.comment, "route comment")
    return numbers + phone_routes + patterns, inexact


# --- switch, gateways ---------------------------------------------------------------------------


def pick_asterisk_switch(site: Site, switch: str | None = None) -> SwitchConfig:
    """The Asterisk switch to render: the named one, or the only one."""
    return pick_switch(site, switch, kind="asterisk")


@dataclass(frozen=True, slots=True)
class _GatewayView:
    name: str
    proxy: str
    match: str  # the address its identify matches; empty: no identify (it is on the loopback address)
    register: bool
    username: str
    password: str


def _gateway_view(gw: Gateway, site: Site) -> _GatewayView:
    if gw.name in _RESERVED_ENDPOINTS or site.phone(gw.name) is not None:
        raise RenderError(
            f"gateway '{gw.name}' would share its pjsip.conf section name with "
            f"{'a phone' if site.phone(gw.name) else 'a section switchctl renders'}; rename the gateway"
        )
    # "host", "host:port", "[v6]", "[v6]:port". Asterisk's identify matches the address only (the
    # port is ignored), so a gateway on the local callers' address cannot be told apart from them:
    # it gets no identify, and its calls are local calls (endpoint sipp, context from-loopback).
    if gw.proxy.startswith("["):
        host = gw.proxy[1:].partition("]")[0]
    else:
        host = gw.proxy.rpartition(":")[0] if gw.proxy.count(":") == 1 else gw.proxy
    match = "" if host in (LOOPBACK_IP, "localhost") else host
    return _GatewayView(gw.name, gw.proxy, match, gw.register, gw.username, gw.password)


def config_marker(files: Mapping[str, bytes]) -> str:
    """The fingerprint of a rendered set: sha256 over sorted (path, content), first 16 hex digits."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel] + b"\0")
    return digest.hexdigest()[:16]


def render_asterisk(site: Site, switch: str | None = None) -> dict[str, bytes]:
    """Render the Asterisk conf_dir files for `switch` (default: the site's only Asterisk switch).

    Raises RenderError (a value that would break a file, a name collision) or SourceError (a flow
    file's routes are unreadable).
    """
    sw = pick_asterisk_switch(site, switch)
    if sw.ari is None:  # the site loader guarantees it; say so clearly if a hand-built Site lacks it
        raise RenderError(f"switch {sw.name} is an Asterisk switch without 'ari'")
    flows = read_flow_routes(site.flows_dir, display_base=site.folder)
    routes, inexact = _routes(site, flows)
    gateways = [_gateway_view(gw, site) for gw in sorted(site.gateways, key=lambda g: g.name)]
    env = _environment()
    header = f"rendered by switchctl from site {site.name}, switch {sw.name}: do not edit, re-render"
    common = {
        "site": site,
        "switch": sw,
        "ari": sw.ari,
        "app": _dialplan(sw.ari.app, "ari app"),
        "header": _ini(header, "site or switch name"),
        "marker_var": MARKER_VAR,
        "marker_comment": f"{MARKER_VAR} below is a digest of all rendered files; deploy reads it back after a reload",
    }
    sip_host = f"[{sw.sip.host}]" if ":" in sw.sip.host else sw.sip.host

    def render_all(marker: str) -> dict[str, bytes]:
        def render(template: str, **extra: object) -> bytes:
            return env.get_template(template).render(**common, marker=marker, **extra).encode("utf-8")

        out = {
            "pjsip.conf": render(
                "pjsip.conf.j2",
                sip_bind=f"{sip_host}:{sw.sip.port}",
                phones=sorted(site.phones, key=lambda p: p.extension),
                gateways=gateways,
                loopback=LOOPBACK_ENDPOINT,
                loopback_ip=LOOPBACK_IP,
                loopback_uas_port=LOOPBACK_UAS_PORT,
                media_ip=sw.sip.host,
            ),
            "extensions.conf": render("extensions.conf.j2", routes=routes, inexact=inexact),
            "ari.conf": render("ari.conf.j2"),
            "http.conf": render("http.conf.j2"),
            "cdr.conf": render("cdr.conf.j2"),
            "cdr_custom.conf": render("cdr_custom.conf.j2", cdr_file=CDR_CUSTOM_FILE, cdr_fields=CDR_CUSTOM_FIELDS),
            "modules.conf": render("modules.conf.j2", modules=ASTERISK_MODULES),
        }
        return dict(sorted(out.items()))

    # The marker is a digest of the files rendered with a placeholder, so it is stable and the
    # same inputs give the same bytes.
    files = render_all(config_marker(render_all(_MARKER_PLACEHOLDER)))
    for rel, content in files.items():
        try:
            parse_asterisk_ini(content.decode("utf-8"))
        except ValueError as exc:
            raise RenderError(f"rendered {rel} is not a valid Asterisk config file: {exc}") from None
    return files


# --- Asterisk's INI syntax (for checks and for reading a deployed conf_dir back) ------------------


@dataclass(frozen=True, slots=True)
class IniSection:
    name: str
    line: int
    entries: tuple[tuple[str, str], ...]  # (key, value) in file order; keys repeat (exten, set_var)

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.entries if k == key]


_HEADER_RE = re.compile(r"^\[([^\[\]]+)\](\([^()]*\))?$")
_ENTRY_RE = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(=>|=)\s*(.*)$")


def parse_asterisk_ini(text: str) -> list[IniSection]:
    """Asterisk config text as sections, strictly: raises ValueError naming the first bad line.

    Sections may repeat (pjsip.conf uses one name for an endpoint and its aor). `;` starts a
    comment unless escaped as `\\;`; `same => ` continuation lines are entries like any other.
    Directives (`#include`, `#exec`) are refused: switchctl never renders them.
    """
    sections: list[IniSection] = []
    current: tuple[str, int, list[tuple[str, str]]] | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        if "\r" in raw:
            raise ValueError(f"line {number}: carriage return")
        line = re.sub(r"(?<!\\);.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("#"):
            raise ValueError(f"line {number}: directive {line!r} is not allowed in a rendered file")
        if line.startswith("["):
            header = _HEADER_RE.match(line)
            if not header:
                raise ValueError(f"line {number}: bad section header {line!r}")
            if current is not None:
                sections.append(IniSection(current[0], current[1], tuple(current[2])))
            current = (header.group(1), number, [])
            continue
        entry = _ENTRY_RE.match(line)
        if not entry:
            raise ValueError(f"line {number}: expected 'key = value', got {line!r}")
        if current is None:
            raise ValueError(f"line {number}: setting {entry.group(1)!r} before any [section]")
        current[2].append((entry.group(1), entry.group(3).strip()))
    if current is not None:
        sections.append(IniSection(current[0], current[1], tuple(current[2])))
    return sections


# --- sounds -------------------------------------------------------------------------------------


def asterisk_sound_files(site: Site) -> dict[str, bytes]:
    """The site's prompts for Asterisk: relative path under `switchctl/<site>/` -> bytes.

    Every sound folder is walked recursively; files Asterisk cannot play are left out (make_sounds.py,
    READMEs). A `.wav` must be 8 kHz 16-bit mono (format_wav plays only that; anything else would
    play at the wrong speed). Two folders offering the same name with different bytes is an error:
    the backend maps `<folder>/<rel>.<ext>` to `sound:switchctl/<site>/<rel>` for every folder alike.
    """
    out: dict[str, bytes] = {}
    origin: dict[str, Path] = {}
    for folder in site.sound_dirs:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.suffix.lower() not in SOUND_EXTENSIONS or path.name.startswith("."):
                continue
            rel = PurePosixPath(*path.relative_to(folder).parts).as_posix()
            _ini(rel, f"sound file {path}")  # the name ends up in ARI media URIs: keep it plain
            if re.search(r"[,\s]", rel):
                raise RenderError(f"sound file {path}: ARI media URIs cannot carry spaces or commas in names")
            content = path.read_bytes()
            if path.suffix.lower() == ".wav":
                _check_wav(path, content)
            if rel in out and out[rel] != content:
                raise RenderError(f"sound {rel} is in both {origin[rel]} and {folder} with different content")
            out[rel] = content
            origin[rel] = folder
    return dict(sorted(out.items()))


def _check_wav(path: Path, content: bytes) -> None:
    try:
        with wave.open(io.BytesIO(content)) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    except (wave.Error, EOFError) as exc:
        raise RenderError(f"sound file {path} is not a PCM .wav file: {exc}") from None
    if (rate, channels, width) != (8000, 1, 2):
        raise RenderError(
            f"sound file {path} is {rate} Hz, {channels} channel(s), {8 * width}-bit; Asterisk's "
            f"format_wav plays 8000 Hz mono 16-bit only (convert it, e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav)"
        )


def render_asterisk_to(site: Site, out_dir: str | Path, switch: str | None = None, *, prune: bool = False) -> dict[str, bytes]:
    """Render and write the files under `out_dir` (for a folder the render owns, like asterisk-conf/)."""
    from switchctl.render.freeswitch import write_tree

    files = render_asterisk(site, switch)
    write_tree(files, Path(out_dir), prune=prune)
    return files


if __name__ == "__main__":  # python -m switchctl.render.asterisk SITE.yaml OUT_DIR (until the CLI does it)
    import sys

    from switchctl.config.site import load_site

    if len(sys.argv) != 3:
        sys.exit("usage: python -m switchctl.render.asterisk SITE.yaml OUT_DIR")
    written = render_asterisk_to(load_site(sys.argv[1]), sys.argv[2], prune=True)
    print(f"rendered {len(written)} files into {sys.argv[2]}")
