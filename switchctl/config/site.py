"""The site model: one `site.yaml` describing switches, phones, gateways and controller settings.

`load_site(path)` reads the file through `yamlsrc` (so every value keeps its `file:line:column`),
validates it completely and returns frozen dataclasses. Every error is a `SourceError` pointing at
the offending value; unknown keys are errors with a "did you mean" hint, because a misspelt
optional key silently falling back to a default is the worst kind of configuration bug.

Decisions (documented in docs/SITE.md):
- Listeners (ESL, outbound socket, SIP, web) must bind loopback unless `allow_remote: true`.
- Secrets may be written as `${env:NAME}` anywhere in a string value; an unset variable is an error.
  `${site.X}` and other `${...}` forms are left alone (flows expand them at call time).
- Phone numbers, extensions and list entries must be quoted strings: YAML would read `+15551234`
  as the integer 15551234 and `0100` as 64.
- `numbering:`, `screening:` and `holidays:` become one `switchctl.numbering.Numbering` (plain
  objects the flow runtime gets; flows never import config).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from switchctl.config.yamlsrc import Mark, SourceError, YList, YMap, load_file
from switchctl.features.transfer.options import (
    DEFAULT_CODES,
    TransferOptions,
    TransferRoute,
)
from switchctl.numbering import (
    Delete,
    HolidayCalendar,
    Insert,
    Lists,
    Numbering,
    NumberPlan,
    Rule,
    Screening,
    ScreenList,
    TenantScreening,
    expand_prefix,
    parse_date_item,
)
from switchctl.switch.asterisk_media import RECORDING_DIR  # pure constants, no I/O

__all__ = [
    "Endpoint",
    "EslConfig",
    "Gateway",
    "Phone",
    "Site",
    "SourceError",
    "SwitchConfig",
    "load_site",
]

SWITCH_KINDS = ("freeswitch", "asterisk")
MAX_RANGE = 10_000  # a phone range larger than this is almost certainly a typo

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_EXTENSION_RE = re.compile(r"^[0-9]{1,15}$")
_RANGE_RE = re.compile(r"^([0-9]{1,15})-([0-9]{1,15})$")
_ENV_RE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and port something listens on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class EslConfig:
    """FreeSWITCH's inbound event socket, which the controller connects to."""

    host: str
    port: int
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AriConfig:
    """Asterisk's REST interface (http.conf + ari.conf), which the controller connects to."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    app: str = "switchctl"  # the Stasis application calls are sent into

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    """One switch. FreeSWITCH switches have `esl` and `outbound`; Asterisk switches have `ari`."""

    name: str
    kind: str
    esl: EslConfig | None
    outbound: Endpoint | None  # where the controller listens for the switch's `socket` application
    sip: Endpoint  # the SIP listener (sofia profile / pjsip transport); RTP on the same address
    domain: str  # the directory domain phones register to (defaults to the SIP address)
    sessions_per_second: int
    max_sessions: int
    acl: tuple[str, ...]  # CIDRs allowed to use the event socket / ARI
    conf_dir: Path  # where deploy installs the rendered tree
    mark: Mark | None = field(default=None, compare=False, repr=False)
    ari: AriConfig | None = None
    # Asterisk: its sounds directory; deploy installs the site's prompts under switchctl/<site>/ there
    sounds_dir: Path | None = None
    cdr: CdrConfig | None = None  # where the controller reads the switch's own CDRs
    # Asterisk: where it records (<astspooldir>/recording, as Asterisk sees it); None: the stock
    # /var/spool/asterisk/recording. Voicemail spools and recordings must live under it.
    recording_dir: PurePosixPath | None = None


@dataclass(frozen=True, slots=True)
class CdrConfig:
    """Where a switch writes its CDRs, as the controller sees the path (same machine or a mount).

    FreeSWITCH: `json` (mod_json_cdr's log-dir, one file per leg) or `csv` (mod_cdr_csv's Master.csv);
    Asterisk: `custom` (the folder holding cdr-custom/switchctl.csv, i.e. its astlogdir).
    """

    format: str
    path: Path


@dataclass(frozen=True, slots=True)
class BillingConfig:
    """Prepaid billing settings of a site (docs/SITE.md, docs/PREPAID.md)."""

    tenant: str = "default"  # the accounts and rate tables this site's calls use
    warning_seconds: int = 10  # warn a prepaid call this long before its money runs out (0: never)
    warning_prompt: str = "tone_stream://%(500,500,1400);loops=2"
    cdr_poll_seconds: float = 1.0  # how often the switches' CDR files are read


@dataclass(frozen=True, slots=True)
class VoicemailConfig:
    """Voicemail of a site (docs/VOICEMAIL.md). `spool` is where the SWITCH writes messages (its
    own filesystem; on Asterisk inside its recording dir), `local_spool` the same folder as the
    controller sees it (None: the same path). Without `smtp` no e-mail is sent."""

    spool: Path
    local_spool: Path | None = None
    smtp: str | None = None  # host:port of a relay on loopback
    sender: str = "voicemail@localhost"
    retry_seconds: int = 60


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    """Call recording of a site (docs/RECORDING.md). `dir` is where the SWITCH writes recordings
    (its own filesystem; on Asterisk a folder under its recording dir), `local_dir` the same folder
    as the controller sees it (None: the controller does not read the files; the switch makes the
    dated folders itself)."""

    dir: PurePosixPath
    local_dir: Path | None = None
    format: str = "wav"


@dataclass(frozen=True, slots=True)
class Phone:
    """A SIP user (booth, operator, agent): one directory entry and one static route."""

    extension: str
    name: str
    password: str = field(repr=False)
    booth: bool = False
    mark: Mark | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    proxy: str  # host or host:port
    register: bool
    username: str
    password: str = field(repr=False)
    mark: Mark | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    path: Path  # the site file, absolute
    switches: tuple[SwitchConfig, ...]
    database_url: str  # relative SQLite paths already resolved against the site folder
    web_listen: tuple[str, int]
    flows_dir: Path
    sound_dirs: tuple[Path, ...]
    phones: tuple[Phone, ...]  # ranges expanded, in file order
    gateways: tuple[Gateway, ...]
    lists: Mapping[str, tuple[str, ...]]
    values: Mapping[str, str]
    allow_remote: bool = False
    numbering: Numbering = field(default_factory=Numbering)  # plans, screening, holidays
    billing: BillingConfig = field(default_factory=BillingConfig)
    voicemail: VoicemailConfig | None = None
    # The transfer feature (docs/TRANSFER.md); None without a `transfer:` section: dials are plain
    # and the transfer API answers 503. `transfer: {}` turns it on with the defaults.
    transfer: TransferOptions | None = None
    # Call recording (`record_call` nodes, the recording API); None without a `recordings:` section.
    recordings: RecordingsConfig | None = None
    web_configured: bool = False  # the file has a `web:` section (the controller then always serves the API)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def switch(self, name: str) -> SwitchConfig:
        for sw in self.switches:
            if sw.name == name:
                return sw
        raise KeyError(f"site {self.name!r} has no switch {name!r}")

    def phone(self, extension: str) -> Phone | None:
        for phone in self.phones:
            if phone.extension == extension:
                return phone
        return None


# --- small readers that turn YAML values into typed values or SourceErrors ----------------------


def _check_keys(m: YMap, allowed: tuple[str, ...], what: str) -> None:
    for key in m:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; expected one of: {', '.join(allowed)}"
            raise SourceError(m.key_mark(key), f"unknown key '{key}' in {what}{hint}")


def _require(m: YMap, key: str, what: str) -> Any:
    if key not in m or m[key] is None:
        raise SourceError(m.mark, f"{what} needs '{key}'")
    return m[key]


def _map(value: Any, mark: Mark, what: str) -> YMap:
    if not isinstance(value, YMap):
        raise SourceError(mark, f"{what} must be a mapping")
    return value


def _list(value: Any, mark: Mark, what: str) -> YList:
    if not isinstance(value, YList):
        raise SourceError(mark, f"{what} must be a list")
    return value


def _expand_env(text: str, mark: Mark) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SourceError(mark, f"environment variable {name} is not set")
        return os.environ[name]

    return _ENV_RE.sub(sub, text)


def _str(value: Any, mark: Mark, what: str, *, empty_ok: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise SourceError(mark, f"{what} must be a string{hint}, not {_kind(value)}")
    text = _expand_env(value, mark)
    if not empty_ok and not text.strip():
        raise SourceError(mark, f"{what} must not be empty")
    return text


def _int(value: Any, mark: Mark, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SourceError(mark, f"{what} must be a whole number, not {_kind(value)}")
    if not lo <= value <= hi:
        raise SourceError(mark, f"{what} must be between {lo} and {hi}, not {value}")
    return value


def _bool(value: Any, mark: Mark, what: str) -> bool:
    if not isinstance(value, bool):
        raise SourceError(mark, f"{what} must be true or false, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, YMap):
        return "a mapping"
    if isinstance(value, YList):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _name(value: Any, mark: Mark, what: str) -> str:
    text = _str(value, mark, what)
    if not _NAME_RE.match(text):
        raise SourceError(mark, f"{what} '{text}' may only use letters, digits, '_', '.', '-'")
    return text


def _secret(value: Any, mark: Mark, what: str, *, empty_ok: bool = False) -> str:
    text = _str(value, mark, what, empty_ok=empty_ok)
    # FreeSWITCH expands $${...} while preprocessing and ${...} in many params: a literal `${`
    # in a password would silently become something else on the switch.
    if "${" in text:
        raise SourceError(mark, f"{what} must not contain '${{' (FreeSWITCH would expand it)")
    return text


def _ip(value: Any, mark: Mark, what: str) -> str:
    text = _str(value, mark, what)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SourceError(mark, f"{what} must be an IP address, not '{text}'") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(value: Any, mark: Mark, what: str) -> str:
    text = _str(value, mark, what)
    if text == "localhost":
        return text
    return _ip(text, mark, what)


def _endpoint(m: YMap, host_key: str, what: str, default_port: int | None = None) -> Endpoint:
    host = _host(_require(m, host_key, what), m.mark_of(host_key), f"{what} {host_key}")
    if "port" not in m and default_port is not None:
        return Endpoint(host, default_port)
    port = _int(_require(m, "port", what), m.mark_of("port"), f"{what} port", 1, 65535)
    return Endpoint(host, port)


def _parse_listen(value: Any, mark: Mark, what: str) -> tuple[str, int]:
    text = _str(value, mark, what)
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if not match:
        raise SourceError(mark, f"{what} must look like HOST:PORT (e.g. 127.0.0.1:8080), not '{text}'")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    host = _host(host, mark, what)
    if not 1 <= port <= 65535:
        raise SourceError(mark, f"{what} port must be between 1 and 65535, not {port}")
    return host, port


# --- sections -----------------------------------------------------------------------------------

_SWITCH_KEYS = (
    "name", "kind", "esl", "outbound", "ari", "sip", "domain", "sessions_per_second", "max_sessions",
    "acl", "conf_dir", "sounds_dir", "cdr", "recording_dir",
)
# Which keys only one kind takes: the others are errors, not silently ignored.
_KIND_KEYS = {"freeswitch": ("esl", "outbound"), "asterisk": ("ari", "sounds_dir", "recording_dir")}


def _switch(m: YMap, folder: Path) -> SwitchConfig:
    _check_keys(m, _SWITCH_KEYS, "a switch")
    name = _name(_require(m, "name", "a switch"), m.mark_of("name"), "switch name")
    what = f"switch '{name}'"
    kind = _str(m.get("kind", "freeswitch"), m.mark_of("kind"), f"{what} kind")
    if kind not in SWITCH_KINDS:
        raise SourceError(
            m.mark_of("kind"),
            f"{what} kind '{kind}' is not supported yet (supported: {', '.join(SWITCH_KINDS)})",
        )

    for other_kind, keys in _KIND_KEYS.items():
        if other_kind == kind:
            continue
        for key in keys:
            if key in m and key not in _KIND_KEYS[kind]:
                raise SourceError(m.key_mark(key), f"{what} (kind {kind}) takes no '{key}': it belongs to {other_kind} switches")

    esl: EslConfig | None = None
    outbound: Endpoint | None = None
    ari: AriConfig | None = None
    if kind == "freeswitch":
        esl_map = _map(_require(m, "esl", what), m.mark_of("esl"), f"{what} esl")
        _check_keys(esl_map, ("host", "port", "password"), f"{what} esl")
        esl_ep = _endpoint(esl_map, "host", f"{what} esl", default_port=8021)
        password = _secret(
            _require(esl_map, "password", f"{what} esl"), esl_map.mark_of("password"), f"{what} esl password"
        )
        if any(ch.isspace() for ch in password):
            # `auth <password>` is one line of the ESL protocol; whitespace would be ambiguous.
            raise SourceError(esl_map.mark_of("password"), f"{what} esl password must not contain spaces")
        esl = EslConfig(esl_ep.host, esl_ep.port, password)

        out_map = _map(_require(m, "outbound", what), m.mark_of("outbound"), f"{what} outbound")
        _check_keys(out_map, ("host", "port"), f"{what} outbound")
        outbound = _endpoint(out_map, "host", f"{what} outbound", default_port=8084)
    else:
        ari_map = _map(_require(m, "ari", what), m.mark_of("ari"), f"{what} ari")
        _check_keys(ari_map, ("host", "port", "user", "password", "app"), f"{what} ari")
        ari_ep = _endpoint(ari_map, "host", f"{what} ari", default_port=8088)
        user = _str(_require(ari_map, "user", f"{what} ari"), ari_map.mark_of("user"), f"{what} ari user")
        ari_password = _secret(
            _require(ari_map, "password", f"{what} ari"), ari_map.mark_of("password"), f"{what} ari password"
        )
        app = _str(ari_map.get("app", "switchctl"), ari_map.mark_of("app"), f"{what} ari app")
        for value, key in ((user, "user"), (app, "app")):
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
                raise SourceError(ari_map.mark_of(key), f"{what} ari {key} '{value}': letters, digits, _ . - only")
        if any(ch.isspace() or ch in "[];" for ch in ari_password):
            # ari.conf is an INI file: these would end or split the value.
            raise SourceError(ari_map.mark_of("password"), f"{what} ari password must not contain spaces, ';' or brackets")
        ari = AriConfig(ari_ep.host, ari_ep.port, user, ari_password, app)

    sip_map = _map(_require(m, "sip", what), m.mark_of("sip"), f"{what} sip")
    _check_keys(sip_map, ("ip", "port"), f"{what} sip")
    sip_ip = _ip(_require(sip_map, "ip", f"{what} sip"), sip_map.mark_of("ip"), f"{what} sip ip")
    sip_port = _int(sip_map.get("port", 5060), sip_map.mark_of("port"), f"{what} sip port", 1, 65535)
    sip = Endpoint(sip_ip, sip_port)

    domain = sip_ip
    if "domain" in m:
        domain = _str(m["domain"], m.mark_of("domain"), f"{what} domain")
        if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
            raise SourceError(m.mark_of("domain"), f"{what} domain '{domain}' is not a host name")

    sps = _int(m.get("sessions_per_second", 100), m.mark_of("sessions_per_second"),
               f"{what} sessions_per_second", 1, 100_000)
    max_sessions = _int(m.get("max_sessions", 1000), m.mark_of("max_sessions"),
                        f"{what} max_sessions", 1, 1_000_000)

    acl: list[str] = []
    acl_value = m.get("acl", None)
    if acl_value is None:
        acl = ["127.0.0.1/32"]
    else:
        items = _list(acl_value, m.mark_of("acl"), f"{what} acl")
        if not items:
            raise SourceError(m.mark_of("acl"), f"{what} acl must list at least one network")
        for i, item in enumerate(items):
            text = _str(item, items.mark_of(i), f"{what} acl entry")
            try:
                acl.append(str(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                raise SourceError(items.mark_of(i), f"{what} acl entry '{text}' is not a CIDR network") from None

    default_conf = "/etc/freeswitch" if kind == "freeswitch" else "/etc/asterisk"
    conf_text = _str(m.get("conf_dir", default_conf), m.mark_of("conf_dir"), f"{what} conf_dir")
    conf_dir = (folder / conf_text).resolve() if not Path(conf_text).is_absolute() else Path(conf_text)

    sounds_dir: Path | None = None
    if kind == "asterisk":
        sounds_text = _str(m.get("sounds_dir", "/usr/share/asterisk/sounds"), m.mark_of("sounds_dir"),
                           f"{what} sounds_dir")
        sounds_dir = (folder / sounds_text).resolve() if not Path(sounds_text).is_absolute() else Path(sounds_text)

    recording_dir: PurePosixPath | None = None
    if kind == "asterisk" and "recording_dir" in m:
        # As ASTERISK sees it (<astspooldir>/recording): it records nowhere else, and plays what is
        # under it as recording:<name>. Absolute, because it is a path on the switch, not here.
        text = _str(m["recording_dir"], m.mark_of("recording_dir"), f"{what} recording_dir")
        if not text.startswith("/"):
            raise SourceError(m.mark_of("recording_dir"),
                              f"{what} recording_dir '{text}' must be absolute: it is Asterisk's own path "
                              "(<astspooldir>/recording)")
        recording_dir = PurePosixPath(text)

    cdr = _cdr(m, kind, folder, what)
    return SwitchConfig(name, kind, esl, outbound, sip, domain, sps, max_sessions, tuple(acl),
                        conf_dir, m.mark, ari, sounds_dir, cdr, recording_dir)


# Where each kind writes CDRs when the site does not say: FreeSWITCH's packaged log dir with the
# rendered json_cdr.conf (log-dir $${log_dir}/json_cdr), and tools/asterisk-setup.sh's chroot.
_CDR_FORMATS = {"freeswitch": ("json", "csv"), "asterisk": ("custom",)}
_CDR_DEFAULTS = {
    "freeswitch": ("json", "/var/log/freeswitch/json_cdr"),
    "asterisk": ("custom", "/var/lib/switchctl/asterisk/root/var/log/asterisk"),
}


def _cdr(m: YMap, kind: str, folder: Path, what: str) -> CdrConfig:
    fmt, path_text = _CDR_DEFAULTS[kind]
    if "cdr" in m:
        cdr_map = _map(m["cdr"], m.mark_of("cdr"), f"{what} cdr")
        _check_keys(cdr_map, ("format", "path"), f"{what} cdr")
        fmt = _str(cdr_map.get("format", fmt), cdr_map.mark_of("format"), f"{what} cdr format")
        if fmt not in _CDR_FORMATS[kind]:
            raise SourceError(cdr_map.mark_of("format"),
                              f"{what} cdr format '{fmt}' is not one a {kind} writes "
                              f"(one of: {', '.join(_CDR_FORMATS[kind])})")
        path_text = _str(cdr_map.get("path", path_text), cdr_map.mark_of("path"), f"{what} cdr path")
    path = Path(path_text) if Path(path_text).is_absolute() else (folder / path_text).resolve()
    return CdrConfig(fmt, path)


_VOICEMAIL_KEYS = ("spool", "local_spool", "smtp", "from", "retry_seconds")


def _check_asterisk_spool(root: YMap, switches: list[SwitchConfig], spool: Path) -> None:
    """Asterisk records nowhere but under its recording dir: a voicemail spool elsewhere would only
    fail at the first message, so it is refused here."""
    vm = root["voicemail"]
    for sw in switches:
        if sw.kind != "asterisk":
            continue
        recordings = sw.recording_dir or PurePosixPath(RECORDING_DIR)
        if not PurePosixPath(spool).is_relative_to(recordings) or PurePosixPath(spool) == recordings:
            raise SourceError(vm.mark_of("spool"),
                              f"voicemail spool '{spool}' is not a folder under {recordings}, where Asterisk "
                              f"switch '{sw.name}' records (set the switch's recording_dir if its "
                              "astspooldir differs; docs/VOICEMAIL.md)")


def _voicemail(root: YMap, folder: Path) -> VoicemailConfig | None:
    if root.get("voicemail") is None:
        return None
    m = _map(root["voicemail"], root.mark_of("voicemail"), "voicemail")
    _check_keys(m, _VOICEMAIL_KEYS, "voicemail")

    def path(key: str) -> Path:
        text = _str(m[key], m.mark_of(key), f"voicemail {key}")
        return Path(text) if Path(text).is_absolute() else (folder / text).resolve()

    spool = path("spool") if "spool" in m else None
    if spool is None:
        raise SourceError(m.mark, "voicemail needs 'spool' (where the switch writes the messages)")
    local = path("local_spool") if "local_spool" in m else None
    smtp = None
    if "smtp" in m:
        host, port = _parse_listen(m["smtp"], m.mark_of("smtp"), "voicemail smtp")
        smtp = f"{host}:{port}"
    sender = _str(m.get("from", "voicemail@localhost"), m.mark_of("from"), "voicemail from")
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", sender):
        raise SourceError(m.mark_of("from"), f"voicemail from '{sender}' is not an e-mail address")
    retry = _int(m.get("retry_seconds", 60), m.mark_of("retry_seconds"), "voicemail retry_seconds", 1, 86400)
    return VoicemailConfig(spool, local, smtp, sender, retry)


_RECORDINGS_KEYS = ("dir", "local_dir", "format")
RECORDING_FORMATS = ("wav",)


def _recordings(root: YMap, switches: list[SwitchConfig], folder: Path) -> RecordingsConfig | None:
    if root.get("recordings") is None:
        return None
    m = _map(root["recordings"], root.mark_of("recordings"), "recordings")
    _check_keys(m, _RECORDINGS_KEYS, "recordings")
    if "dir" not in m:
        raise SourceError(m.mark, "recordings needs 'dir' (where the switch writes call recordings)")
    text = _str(m["dir"], m.mark_of("dir"), "recordings dir")
    if not text.startswith("/"):
        raise SourceError(m.mark_of("dir"), f"recordings dir '{text}' must be absolute: it is a path on the switch")
    if any(ch.isspace() for ch in text):
        # uuid_record takes the path as one argument of a command line
        raise SourceError(m.mark_of("dir"), f"recordings dir '{text}' must not contain spaces")
    directory = PurePosixPath(text)
    for sw in switches:
        if sw.kind != "asterisk":
            continue
        spool = sw.recording_dir or PurePosixPath(RECORDING_DIR)
        if not directory.is_relative_to(spool) or directory == spool:
            raise SourceError(m.mark_of("dir"),
                              f"recordings dir '{directory}' is not a folder under {spool}, where Asterisk "
                              f"switch '{sw.name}' records (set the switch's recording_dir if its "
                              "astspooldir differs; docs/RECORDING.md)")
    local = None
    if "local_dir" in m:
        local_text = _str(m["local_dir"], m.mark_of("local_dir"), "recordings local_dir")
        local = Path(local_text) if Path(local_text).is_absolute() else (folder / local_text).resolve()
    fmt = _str(m.get("format", "wav"), m.mark_of("format"), "recordings format")
    if fmt not in RECORDING_FORMATS:
        raise SourceError(m.mark_of("format"),
                          f"recordings format '{fmt}' is not supported (one of: {', '.join(RECORDING_FORMATS)})")
    return RecordingsConfig(directory, local, fmt)


_TRANSFER_KEYS = ("enabled", "codes", "digit_timeout", "ring_timeout", "music", "ringback",
                  "recall_transferor", "recall_timeout", "routes")
_TRANSFER_ROUTE_KEYS = ("pattern", "kind", "gateway", "flow", "strip", "prefix")
# Codes read in the same phase of a call must not overlap: outside a consultation the transferor
# types blind/attended (then the number); during one cancel/complete/three_way.
_CODE_PHASES = (("blind", "attended"), ("cancel", "complete", "three_way"))
_CODE_RE = re.compile(r"[*#][0-9*#]{0,7}")


def _seconds(value: Any, mark: Mark, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise SourceError(mark, f"{what} must be a number of seconds between {lo:g} and {hi:g}, not {_kind(value)}")
    return float(value)


def flow_names(flows_dir: Path) -> dict[str, Path]:
    """The `flow:` name of each flow file in `flows_dir` (files that do not even load are left to
    `switchctl check`, which reports them)."""
    names: dict[str, Path] = {}
    for path in sorted(flows_dir.iterdir()):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            data = load_file(path)
        except SourceError:
            continue
        if isinstance(data, YMap) and isinstance(data.get("flow"), str):
            names.setdefault(data["flow"], path)
    return names


def _transfer_codes(value: Any, mark: Mark) -> dict[str, str]:
    m = _map(value, mark, "transfer codes")
    _check_keys(m, tuple(DEFAULT_CODES), "transfer codes")
    codes = dict(DEFAULT_CODES)
    for key in m:
        code = _str(m[key], m.mark_of(key), f"transfer code '{key}'")
        if not _CODE_RE.fullmatch(code):
            raise SourceError(m.mark_of(key), f"transfer code '{key}' is '{code}': a code is DTMF keys 0-9 * # "
                              "starting with '*' or '#' (at most 8; quote it: # starts a YAML comment)")
        codes[key] = code
    for phase in _CODE_PHASES:
        for i, a in enumerate(phase):
            for b in phase[i + 1:]:
                if codes[a].startswith(codes[b]) or codes[b].startswith(codes[a]):
                    key = b if b in m else a  # point at a code the site wrote (defaults never overlap)
                    how = "are the same" if codes[a] == codes[b] else "overlap (one starts the other)"
                    raise SourceError(m.mark_of(key), f"transfer codes {a} '{codes[a]}' and {b} '{codes[b]}' {how}: "
                                      f"{', '.join(phase)} are typed at the same time of a call")
    return codes


def _transfer_route(m: YMap, what: str, gateways: Mapping[str, Gateway], flows: Mapping[str, Path]) -> TransferRoute:
    _check_keys(m, _TRANSFER_ROUTE_KEYS, what)
    pattern = _str(_require(m, "pattern", what), m.mark_of("pattern"), f"{what} pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SourceError(m.mark_of("pattern"), f"{what}: invalid regex '{pattern}': {exc.msg} at position {exc.pos}") from None
    kind = _str(m.get("kind", "phone"), m.mark_of("kind"), f"{what} kind")
    if kind not in ("phone", "gateway", "flow"):
        raise SourceError(m.mark_of("kind"), f"{what} kind '{kind}' must be phone, gateway or flow")
    for key, owner in (("gateway", "gateway"), ("flow", "flow")):
        if key in m and kind != owner:
            raise SourceError(m.key_mark(key), f"{what}: '{key}' only applies to kind {owner} (this route is kind {kind})")
    gateway = flow = None
    if kind == "gateway":
        gateway = _str(_require(m, "gateway", f"{what} (kind gateway)"), m.mark_of("gateway"), f"{what} gateway")
        if gateway not in gateways:
            close = difflib.get_close_matches(gateway, list(gateways), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"site has: {', '.join(gateways) or 'no gateways'}"
            raise SourceError(m.mark_of("gateway"), f"{what} names unknown gateway '{gateway}' ({hint})")
    if kind == "flow":
        flow = _str(_require(m, "flow", f"{what} (kind flow)"), m.mark_of("flow"), f"{what} flow")
        if flow not in flows:
            close = difflib.get_close_matches(flow, list(flows), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"flows: {', '.join(sorted(flows)) or 'none'}"
            raise SourceError(m.mark_of("flow"), f"{what} names unknown flow '{flow}' ({hint})")
    strip = _int(m.get("strip", 0), m.mark_of("strip"), f"{what} strip", 0, 15)
    prefix = _digits_text(m.get("prefix", ""), m.mark_of("prefix"), f"{what} prefix", empty_ok=True)
    if not re.fullmatch(r"\+?[0-9*#]*", prefix):
        raise SourceError(m.mark_of("prefix"), f"{what} prefix '{prefix}' must be digits (an optional leading '+')")
    if (strip or prefix) and kind == "flow":
        key = "strip" if "strip" in m else "prefix"
        raise SourceError(m.key_mark(key), f"{what}: '{key}' does not apply to kind flow (no number is dialled)")
    return TransferRoute(pattern=pattern, kind=kind, gateway=gateway, flow=flow, strip=strip, prefix=prefix)


def _transfer(root: YMap, gateways: list[Gateway], flows_dir: Path) -> TransferOptions | None:
    if "transfer" not in root:
        return None
    value = root["transfer"]
    if value is None:  # `transfer:` alone: on, with the defaults
        return TransferOptions()
    m = _map(value, root.mark_of("transfer"), "transfer")
    _check_keys(m, _TRANSFER_KEYS, "transfer")
    default = TransferOptions()
    enabled = _bool(m.get("enabled", default.enabled), m.mark_of("enabled"), "transfer enabled")
    codes = _transfer_codes(m["codes"], m.mark_of("codes")) if "codes" in m else dict(default.codes)
    digit_timeout = _seconds(m.get("digit_timeout", default.digit_timeout), m.mark_of("digit_timeout"),
                             "transfer digit_timeout", 0.5, 30)
    ring_timeout = _seconds(m.get("ring_timeout", default.ring_timeout), m.mark_of("ring_timeout"),
                            "transfer ring_timeout", 1, 600)
    recall_timeout = _seconds(m.get("recall_timeout", default.recall_timeout), m.mark_of("recall_timeout"),
                              "transfer recall_timeout", 1, 600)
    recall = _bool(m.get("recall_transferor", default.recall_transferor), m.mark_of("recall_transferor"),
                   "transfer recall_transferor")
    music = None
    if m.get("music") is not None:
        music = _str(m["music"], m.mark_of("music"), "transfer music")
    ringback = _str(m.get("ringback", default.ringback), m.mark_of("ringback"), "transfer ringback")
    routes = default.routes
    if "routes" in m:
        items = _list(m["routes"], m.mark_of("routes"), "transfer routes")
        if not items:
            raise SourceError(m.mark_of("routes"), "transfer routes must list at least one route (or leave 'routes' out)")
        by_name = {gw.name: gw for gw in gateways}
        flows = flow_names(flows_dir)
        routes = tuple(
            _transfer_route(_map(item, items.mark_of(i), f"transfer route {i + 1}"), f"transfer route {i + 1}",
                            by_name, flows)
            for i, item in enumerate(items)
        )
    return TransferOptions(enabled=enabled, codes=codes, digit_timeout=digit_timeout, ring_timeout=ring_timeout,
                           music=music, ringback=ringback, recall_transferor=recall, recall_timeout=recall_timeout,
                           routes=routes)


_BILLING_KEYS = ("tenant", "warning_seconds", "warning_prompt", "cdr_poll_seconds")


def _billing(root: YMap) -> BillingConfig:
    if root.get("billing") is None:
        return BillingConfig()
    m = _map(root["billing"], root.mark_of("billing"), "billing")
    _check_keys(m, _BILLING_KEYS, "billing")
    default = BillingConfig()
    tenant = _name(m.get("tenant", default.tenant), m.mark_of("tenant"), "billing tenant")
    warning = _int(m.get("warning_seconds", default.warning_seconds), m.mark_of("warning_seconds"),
                   "billing warning_seconds", 0, 600)
    prompt = _str(m.get("warning_prompt", default.warning_prompt), m.mark_of("warning_prompt"),
                  "billing warning_prompt")
    poll_value = m.get("cdr_poll_seconds", default.cdr_poll_seconds)
    if isinstance(poll_value, bool) or not isinstance(poll_value, (int, float)) or not 0.1 <= poll_value <= 3600:
        raise SourceError(m.mark_of("cdr_poll_seconds"),
                          f"billing cdr_poll_seconds must be a number of seconds between 0.1 and 3600, not {_kind(poll_value)}")
    return BillingConfig(tenant, warning, prompt, float(poll_value))


_PHONE_KEYS = ("extension", "range", "name", "password", "booth")


def _fill(template: str, mark: Mark, what: str, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise SourceError(mark, f"{what}: unknown placeholder '{{{key}}}' (known: {{n}}, {{extension}})")
        return values[key]

    return _PLACEHOLDER_RE.sub(sub, template)


def _phones(m: YMap) -> list[Phone]:
    _check_keys(m, _PHONE_KEYS, "a phone")
    if ("extension" in m) == ("range" in m):
        raise SourceError(m.mark, "a phone needs exactly one of 'extension' or 'range'")
    name_t = _str(_require(m, "name", "a phone"), m.mark_of("name"), "phone name")
    pass_t = _secret(_require(m, "password", "a phone"), m.mark_of("password"), "phone password")
    booth = _bool(m.get("booth", False), m.mark_of("booth"), "phone booth")

    if "extension" in m:
        ext = _str(m["extension"], m.mark_of("extension"), "phone extension")
        if not _EXTENSION_RE.match(ext):
            raise SourceError(m.mark_of("extension"), f"phone extension '{ext}' must be 1-15 digits")
        extensions = [ext]
    else:
        text = _str(m["range"], m.mark_of("range"), "phone range")
        match = _RANGE_RE.match(text)
        if not match:
            raise SourceError(m.mark_of("range"), f"phone range '{text}' must look like 1001-1010")
        first, last = match.group(1), match.group(2)
        if len(first) != len(last) or int(first) > int(last):
            raise SourceError(
                m.mark_of("range"), f"phone range '{text}' must go up and use the same number of digits"
            )
        count = int(last) - int(first) + 1
        if count > MAX_RANGE:
            raise SourceError(m.mark_of("range"), f"phone range '{text}' has {count} phones (at most {MAX_RANGE})")
        extensions = [str(int(first) + i).zfill(len(first)) for i in range(count)]

    phones = []
    for n, ext in enumerate(extensions, start=1):
        fields = {"n": str(n), "extension": ext}
        name = _fill(name_t, m.mark_of("name"), "phone name", fields)
        password = _fill(pass_t, m.mark_of("password"), "phone password", fields)
        phones.append(Phone(ext, name, password, booth, m.mark))
    return phones


def _gateway(m: YMap) -> Gateway:
    _check_keys(m, ("name", "proxy", "register", "username", "password"), "a gateway")
    name = _name(_require(m, "name", "a gateway"), m.mark_of("name"), "gateway name")
    what = f"gateway '{name}'"
    proxy = _str(_require(m, "proxy", what), m.mark_of("proxy"), f"{what} proxy")
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", proxy):
        raise SourceError(m.mark_of("proxy"), f"{what} proxy '{proxy}' must be HOST or HOST:PORT")
    register = _bool(m.get("register", False), m.mark_of("register"), f"{what} register")
    username = _secret(m.get("username", ""), m.mark_of("username"), f"{what} username", empty_ok=True)
    password = _secret(m.get("password", ""), m.mark_of("password"), f"{what} password", empty_ok=True)
    if register and not (username and password):
        raise SourceError(m.mark, f"{what} registers, so it needs a username and a password")
    return Gateway(name, proxy, register, username, password, m.mark)


def _database_url(text: str, folder: Path) -> str:
    """Resolve a relative SQLite file path against the site folder; other URLs pass through."""
    match = re.match(r"^(sqlite(?:\+\w+)?):///(.*)$", text)
    if not match:
        return text
    scheme, rest = match.groups()
    path_part, sep, query = rest.partition("?")
    if path_part in ("", ":memory:") or path_part.startswith("/"):
        return text
    absolute = (folder / path_part).resolve()
    return f"{scheme}:///{absolute}{sep}{query}"


_SITE_KEYS = (
    "site", "allow_remote", "switches", "database", "web", "flows", "sounds", "phones", "gateways",
    "lists", "values", "numbering", "screening", "holidays", "billing", "voicemail", "transfer",
    "recordings",
)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file. Raises SourceError (`file:line:column: message`)."""
    path = Path(path)
    root = load_file(path)
    if root is None:
        raise SourceError(None, f"{path}: the site file is empty")
    if not isinstance(root, YMap):
        raise SourceError(getattr(root, "mark", None), "a site file must be a mapping (site:, switches:, ...)")
    _check_keys(root, _SITE_KEYS, "the site")
    folder = path.resolve().parent

    name = _name(_require(root, "site", "the site file"), root.mark_of("site"), "site name")
    allow_remote = _bool(root.get("allow_remote", False), root.mark_of("allow_remote"), "allow_remote")

    switch_items = _list(_require(root, "switches", "the site file"), root.mark_of("switches"), "switches")
    if not switch_items:
        raise SourceError(root.mark_of("switches"), "switches must list at least one switch")
    switches: list[SwitchConfig] = []
    for i, item in enumerate(switch_items):
        sw = _switch(_map(item, switch_items.mark_of(i), "a switch"), folder)
        for other in switches:
            if other.name == sw.name:
                raise SourceError(sw.mark, f"duplicate switch name '{sw.name}' (first at line {other.mark.line})")
        switches.append(sw)

    db_text = _str(root.get("database", "sqlite+aiosqlite:///switchctl.db"), root.mark_of("database"), "database")
    database_url = _database_url(db_text, folder)

    web_listen = ("127.0.0.1", 8080)
    if "web" in root:
        web = _map(root["web"], root.mark_of("web"), "web")
        _check_keys(web, ("listen",), "web")
        if "listen" in web:
            web_listen = _parse_listen(web["listen"], web.mark_of("listen"), "web listen")

    flows_text = _str(root.get("flows", "dialplans/"), root.mark_of("flows"), "flows")
    flows_dir = (folder / flows_text).resolve()
    if not flows_dir.is_dir():
        raise SourceError(root.mark_of("flows"), f"flows folder '{flows_text}' does not exist ({flows_dir})")

    sound_dirs: list[Path] = []
    if "sounds" in root:
        items = _list(root["sounds"], root.mark_of("sounds"), "sounds")
        for i, item in enumerate(items):
            text = _str(item, items.mark_of(i), "sounds folder")
            folder_path = (folder / text).resolve()
            if not folder_path.is_dir():
                raise SourceError(items.mark_of(i), f"sounds folder '{text}' does not exist ({folder_path})")
            sound_dirs.append(folder_path)

    phones: list[Phone] = []
    seen_ext: dict[str, Phone] = {}
    if root.get("phones") is not None:
        items = _list(root["phones"], root.mark_of("phones"), "phones")
        for i, item in enumerate(items):
            for phone in _phones(_map(item, items.mark_of(i), "a phone")):
                if phone.extension in seen_ext:
                    first = seen_ext[phone.extension].mark
                    raise SourceError(
                        phone.mark,
                        f"duplicate extension {phone.extension} (first at line {first.line if first else '?'})",
                    )
                seen_ext[phone.extension] = phone
                phones.append(phone)

    gateways: list[Gateway] = []
    if root.get("gateways") is not None:
        items = _list(root["gateways"], root.mark_of("gateways"), "gateways")
        for i, item in enumerate(items):
            gw = _gateway(_map(item, items.mark_of(i), "a gateway"))
            for other in gateways:
                if other.name == gw.name:
                    raise SourceError(gw.mark, f"duplicate gateway name '{gw.name}' (first at line {other.mark.line})")
            gateways.append(gw)

    lists: dict[str, tuple[str, ...]] = {}
    if root.get("lists") is not None:
        lists_map = _map(root["lists"], root.mark_of("lists"), "lists")
        for key, value in lists_map.items():
            _name(key, lists_map.key_mark(key), "list name")
            items = _list(value, lists_map.mark_of(key), f"list '{key}'")
            lists[key] = tuple(_str(v, items.mark_of(i), f"list '{key}' entry") for i, v in enumerate(items))

    values: dict[str, str] = {}
    if root.get("values") is not None:
        values_map = _map(root["values"], root.mark_of("values"), "values")
        for key, value in values_map.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise SourceError(values_map.key_mark(key), f"value name '{key}' must be an identifier")
            mark = values_map.mark_of(key)
            if isinstance(value, bool):
                values[key] = "true" if value else "false"
            elif isinstance(value, int):
                values[key] = str(value)
            else:
                values[key] = _str(value, mark, f"value '{key}'", empty_ok=True)

    numbering = Numbering(
        plans=MappingProxyType(_plans(root)),
        screening=_screening(root),
        holidays=MappingProxyType(_holidays(root)),
    )

    billing = _billing(root)
    voicemail = _voicemail(root, folder)
    if voicemail is not None and voicemail.spool is not None:
        _check_asterisk_spool(root, switches, voicemail.spool)
    transfer = _transfer(root, gateways, flows_dir)
    recordings = _recordings(root, switches, folder)

    _check_binds(root, switches, web_listen, allow_remote)

    return Site(
        name=name,
        path=path.resolve(),
        switches=tuple(switches),
        database_url=database_url,
        web_listen=web_listen,
        flows_dir=flows_dir,
        sound_dirs=tuple(sound_dirs),
        phones=tuple(phones),
        gateways=tuple(gateways),
        lists=MappingProxyType(lists),
        values=MappingProxyType(values),
        allow_remote=allow_remote,
        numbering=numbering,
        billing=billing,
        voicemail=voicemail,
        transfer=transfer,
        recordings=recordings,
        web_configured="web" in root,
    )


# --- numbering: plans, screening, holidays ------------------------------------------------------

_RULE_KEYS = ("prefix", "route", "length", "min_length", "max_length", "edit")
_PLUS_KEYS = ("plus",)


def _digits_text(value: Any, mark: Mark, what: str, *, empty_ok: bool = False) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise SourceError(mark, f"{what} must be a quoted string (\"{value}\"): YAML reads 0100 as 64")
    return _str(value, mark, what, empty_ok=empty_ok)


def _edit(value: Any, mark: Mark, what: str) -> Delete | Insert:
    m = _map(value, mark, f"{what} (e.g. {{delete: 1, at: 0}} or {{insert: \"33\", at: 0}})")
    _check_keys(m, ("delete", "insert", "at"), what)
    if ("delete" in m) == ("insert" in m):
        raise SourceError(m.mark, f"{what} needs exactly one of 'delete' (a count of digits) or 'insert' (digits)")
    at_value = m.get("at", 0)
    if "insert" in m:
        digits = _digits_text(m["insert"], m.mark_of("insert"), f"{what} insert")
        if at_value == "end":
            return Insert(None, digits)
        at = _int(at_value, m.mark_of("at"), f"{what} at (a position, or 'end')", -28, 28)
        return Insert(at, digits)
    count = _int(m["delete"], m.mark_of("delete"), f"{what} delete", 1, 28)
    if at_value == "end":
        raise SourceError(m.mark_of("at"), f"{what}: 'at: end' only applies to insert (delete the last digits with at: -N)")
    return Delete(_int(at_value, m.mark_of("at"), f"{what} at", -28, 28), count)


def _rule(m: YMap, what: str) -> Rule:
    _check_keys(m, _RULE_KEYS, what)
    prefix = _digits_text(_require(m, "prefix", what), m.mark_of("prefix"), f"{what} prefix", empty_ok=True)
    try:
        expand_prefix(prefix)
    except ValueError as exc:
        raise SourceError(m.mark_of("prefix"), f"{what}: {exc}") from None
    route = _str(_require(m, "route", what), m.mark_of("route"), f"{what} route")
    if "length" in m:
        for key in ("min_length", "max_length"):
            if key in m:
                raise SourceError(m.key_mark(key), f"{what}: give 'length' or 'min_length'/'max_length', not both")
        lo = hi = _int(m["length"], m.mark_of("length"), f"{what} length", 1, 28)
    else:
        lo = _int(m.get("min_length", 1), m.mark_of("min_length"), f"{what} min_length", 1, 28)
        hi = _int(m.get("max_length", 28), m.mark_of("max_length"), f"{what} max_length", 1, 28)
    edits: list[Delete | Insert] = []
    if "edit" in m:
        items = _list(m["edit"], m.mark_of("edit"), f"{what} edit")
        edits = [_edit(item, items.mark_of(i), f"edit {i + 1} of {what}") for i, item in enumerate(items)]
    try:
        return Rule(prefix, route, lo, hi, tuple(edits))
    except ValueError as exc:
        key = "route" if str(exc).startswith("route") else "edit" if str(exc).startswith("edit") else None
        raise SourceError(m.mark_of(key) if key else m.mark, f"{what}: {exc}") from None


def _plans(root: YMap) -> dict[str, NumberPlan]:
    plans: dict[str, NumberPlan] = {}
    if root.get("numbering") is None:
        return plans
    plans_map = _map(root["numbering"], root.mark_of("numbering"), "numbering (plan name: list of rules)")
    for name, value in plans_map.items():
        _name(name, plans_map.key_mark(name), "numbering plan name")
        items = _list(value, plans_map.mark_of(name), f"numbering plan '{name}' (a list of rules)")
        if not items:
            raise SourceError(plans_map.mark_of(name), f"numbering plan '{name}' has no rules")
        rules: list[Rule] = []
        plus: str | None = None
        plus_mark: Mark | None = None
        for i, item in enumerate(items):
            what = f"rule {i + 1} of plan '{name}'"
            m = _map(item, items.mark_of(i), f"{what} (e.g. {{prefix: \"00\", route: international}})")
            if "plus" in m:
                _check_keys(m, _PLUS_KEYS, f"{what} (a 'plus' rule has no other keys)")
                if plus_mark is not None:
                    raise SourceError(m.key_mark("plus"), f"plan '{name}' has two 'plus' rules (first at line {plus_mark.line})")
                plus = _digits_text(m["plus"], m.mark_of("plus"), f"{what} plus", empty_ok=True)
                if not re.fullmatch(r"[0-9]*", plus):
                    raise SourceError(m.mark_of("plus"), f"{what}: plus '{plus}' must be digits that replace a leading '+' "
                                      "(e.g. \"00\"), or \"\" to drop it")
                plus_mark = m.mark_of("plus")
                continue
            rules.append(_rule(m, what))
        if not rules:
            raise SourceError(plans_map.mark_of(name), f"numbering plan '{name}' has no routing rules (prefix, route)")
        plans[name] = NumberPlan(name, rules, plus=plus)
    return plans


def _screen_lists(value: Any, mark: Mark, what: str) -> Lists:
    m = _map(value, mark, f"{what} (black: [...], white: [...])")
    _check_keys(m, ("black", "white"), what)
    out: dict[str, ScreenList] = {}
    for key in ("black", "white"):
        entries: list[str] = []
        if m.get(key) is not None:
            items = _list(m[key], m.mark_of(key), f"{what} {key}")
            for i, item in enumerate(items):
                entry = _digits_text(item, items.mark_of(i), f"{what} {key} entry")
                try:
                    ScreenList([entry])
                except ValueError as exc:
                    raise SourceError(items.mark_of(i), f"{what} {key}: {exc}") from None
                entries.append(entry)
        out[key] = ScreenList(entries)
    return Lists(out["black"], out["white"])


def _screening(root: YMap) -> Screening:
    tenants: dict[str, TenantScreening] = {}
    if root.get("screening") is None:
        return Screening(tenants)
    tenants_map = _map(root["screening"], root.mark_of("screening"), "screening (tenant: {callers, destinations})")
    for tenant, value in tenants_map.items():
        _name(tenant, tenants_map.key_mark(tenant), "screening tenant")
        what = f"screening of tenant '{tenant}'"
        m = _map(value, tenants_map.mark_of(tenant), f"{what} (callers: ..., destinations: ...)")
        _check_keys(m, ("callers", "destinations"), what)
        sides = {key: _screen_lists(m[key], m.mark_of(key), f"{what} {key}") if m.get(key) is not None else Lists()
                 for key in ("callers", "destinations")}
        tenants[tenant] = TenantScreening(sides["callers"], sides["destinations"])
    return Screening(tenants)


def _holidays(root: YMap) -> dict[str, HolidayCalendar]:
    calendars: dict[str, HolidayCalendar] = {}
    if root.get("holidays") is None:
        return calendars
    cal_map = _map(root["holidays"], root.mark_of("holidays"), "holidays (calendar name: list of dates)")
    for name, value in cal_map.items():
        _name(name, cal_map.key_mark(name), "holiday calendar name")
        items = _list(value, cal_map.mark_of(name), f"holiday calendar '{name}' (a list of dates)")
        if not items:
            raise SourceError(cal_map.mark_of(name), f"holiday calendar '{name}' has no dates")
        days = []
        for i, item in enumerate(items):
            try:
                days.append(parse_date_item(item))
            except ValueError as exc:
                raise SourceError(items.mark_of(i), f"holiday calendar '{name}': {exc}") from None
        calendars[name] = HolidayCalendar(name, tuple(days))
    return calendars


def _check_binds(root: YMap, switches: list[SwitchConfig], web: tuple[str, int], allow_remote: bool) -> None:
    """Loopback unless allowed otherwise; no two listeners on one address."""
    web_mark = root["web"].mark_of("listen") if isinstance(root.get("web"), YMap) else root.mark
    listeners: list[tuple[str, str, int, Mark | None]] = [("web listen", web[0], web[1], web_mark)]
    for sw in switches:
        if sw.esl is not None:
            listeners.append((f"switch '{sw.name}' esl", sw.esl.host, sw.esl.port, sw.mark))
        if sw.outbound is not None:
            listeners.append((f"switch '{sw.name}' outbound", sw.outbound.host, sw.outbound.port, sw.mark))
        if sw.ari is not None:
            listeners.append((f"switch '{sw.name}' ari", sw.ari.host, sw.ari.port, sw.mark))
        listeners.append((f"switch '{sw.name}' sip", sw.sip.host, sw.sip.port, sw.mark))
    seen: dict[tuple[str, int], str] = {}
    for what, host, port, mark in listeners:
        if not allow_remote and not _is_loopback(host):
            raise SourceError(
                mark, f"{what} binds {host}, which is not loopback; set 'allow_remote: true' to allow it"
            )
        key = ("127.0.0.1" if host == "localhost" else host, port)
        if key in seen:
            raise SourceError(mark, f"{what} uses {host}:{port}, already used by {seen[key]}")
        seen[key] = what
