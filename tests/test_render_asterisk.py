"""Rendering a site for Asterisk: determinism, INI structure, routes, refusal of unsafe values."""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path

import pytest

from switchctl.config.site import Gateway, Phone, Site, load_site
from switchctl.render.asterisk import (
    MARKER_VAR,
    asterisk_sound_files,
    parse_asterisk_ini,
    pattern_to_exten,
    render_asterisk,
)
from switchctl.render.freeswitch import RenderError, write_tree
from switchctl.render.site import render_site

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar-asterisk" / "site.yaml"
COMMITTED = ROOT / "asterisk-conf" / "phonebar"


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(EXAMPLE)


def _sections(files: dict[str, bytes], name: str):  # type: ignore[no-untyped-def]
    return parse_asterisk_ini(files[name].decode("utf-8"))


def test_same_site_gives_the_same_bytes(site: Site) -> None:
    first = render_asterisk(site)
    assert first == render_asterisk(load_site(EXAMPLE))
    assert sorted(first) == ["ari.conf", "cdr.conf", "cdr_custom.conf", "extensions.conf", "http.conf",
                             "modules.conf", "pjsip.conf"]


def test_a_change_changes_the_fingerprint_everywhere(site: Site) -> None:
    before = render_asterisk(site)
    changed = dataclasses.replace(site, phones=site.phones[:-1])
    after = render_asterisk(changed)
    marker = lambda files: next(s for s in _sections(files, "extensions.conf") if s.name == "globals").get(MARKER_VAR)
    assert marker(before) != marker(after)
    endpoint_markers = {
        v for s in _sections(after, "pjsip.conf") if s.get("type") == "endpoint"
        for v in s.all("set_var") if v.startswith(MARKER_VAR)
    }
    assert endpoint_markers == {f"{MARKER_VAR}={marker(after)}"}


def test_every_file_parses_as_asterisk_config(site: Site) -> None:
    for rel, content in render_asterisk(site).items():
        sections = parse_asterisk_ini(content.decode("utf-8"))
        assert sections, rel


def test_parser_rejects_broken_structure() -> None:
    with pytest.raises(ValueError, match="line 2: bad section header"):
        parse_asterisk_ini("[a]\n[broken\nx = 1\n")
    with pytest.raises(ValueError, match="before any"):
        parse_asterisk_ini("x = 1\n")
    with pytest.raises(ValueError, match="expected 'key = value'"):
        parse_asterisk_ini("[a]\njust words\n")
    assert parse_asterisk_ini("[a](!)\nk = v ; comment\nk => w\\;x\n")[0].entries == (("k", "v"), ("k", "w\\;x"))


def test_pjsip_has_one_endpoint_aor_auth_per_phone(site: Site) -> None:
    sections = _sections(render_asterisk(site), "pjsip.conf")
    by_type: dict[str, dict[str, object]] = {}
    for s in sections:
        by_type.setdefault(str(s.get("type")), {})[s.name] = s
    phones = {p.extension for p in site.phones}
    assert set(by_type["endpoint"]) == phones | {"upstream", "sipp", "switchctl-uri"}  # uri dial targets
    assert set(by_type["aor"]) == phones | {"upstream", "sipp"}
    assert set(by_type["auth"]) == {f"{e}-auth" for e in phones}
    booth = by_type["endpoint"]["1001"]
    assert booth.get("dtmf_mode") == "rfc4733" and booth.get("allow") == "ulaw,alaw"  # type: ignore[attr-defined]
    assert booth.get("context") == "from-phones" and booth.get("auth") == "1001-auth"  # type: ignore[attr-defined]
    assert booth.get("callerid") == '"Booth 1" <1001>'  # type: ignore[attr-defined]
    assert by_type["auth"]["1001-auth"].get("password") == "booth-1001"  # type: ignore[attr-defined]
    assert by_type["transport"]["transport-udp"].get("bind") == "127.0.0.1:5060"  # type: ignore[attr-defined]
    # local test callers: identified by IP, no auth, into the Stasis context
    assert by_type["identify"]["sipp-identify"].get("match") == "127.0.0.1"  # type: ignore[attr-defined]
    assert by_type["endpoint"]["sipp"].get("context") == "from-loopback"  # type: ignore[attr-defined]
    # the example's gateway is on 127.0.0.1, which identify cannot tell from local callers
    assert "upstream-identify" not in by_type["identify"]


def test_remote_gateway_is_identified_and_registers(site: Site) -> None:
    gw = Gateway("carrier", "198.51.100.7:5060", True, "acct", "s3cret")
    files = render_asterisk(dataclasses.replace(site, gateways=(gw,)))
    sections = {(s.name, s.get("type")): s for s in _sections(files, "pjsip.conf")}
    assert sections[("carrier-identify", "identify")].get("match") == "198.51.100.7"
    reg = sections[("carrier-registration", "registration")]
    assert reg.get("server_uri") == "sip:198.51.100.7:5060" and reg.get("client_uri") == "sip:acct@198.51.100.7:5060"
    assert sections[("carrier-auth", "auth")].get("password") == "s3cret"
    assert sections[("carrier", "endpoint")].get("outbound_auth") == "carrier-auth"


def test_dialplan_routes_flows_into_stasis_and_phones_to_dial(site: Site) -> None:
    sections = {s.name: s for s in _sections(render_asterisk(site), "extensions.conf")}
    routes = sections["switchctl-routes"].all("exten")
    assert "9000,1,Stasis(switchctl,inbound,${EXTEN})" in routes
    assert "9001,1,Stasis(switchctl,inbound,${EXTEN})" in routes
    assert "1000,1,Dial(PJSIP/1000,30)" in routes and "1010,1,Dial(PJSIP/1010,30)" in routes
    for context in ("from-phones", "default", "from-loopback"):
        assert "switchctl-routes" in sections[context].all("include"), context
    # gateways reach the exact numbers only, never a flow pattern (a booth's outside-number route
    # would let a trunk caller spoofing a booth's caller id be billed to it and sent back out)
    trunk = sections["from-trunk"]
    assert trunk.all("include") == []
    trunk_routes = trunk.all("exten")
    assert "9000,1,Stasis(switchctl,inbound,${EXTEN})" in trunk_routes and "1001,1,Dial(PJSIP/1001,30)" in trunk_routes
    assert [r for r in routes if r.startswith("_")] and not [r for r in trunk_routes if r.startswith("_")]
    # local callers reach the app with any number; phones and trunks do not
    assert sections["from-loopback"].all("include") == ["switchctl-routes", "switchctl-any-number"]
    assert "switchctl-any-number" not in sections["switchctl-routes"].all("include")
    assert {"stasis-local", "echo"} <= set(sections)


def test_flow_number_that_is_a_phone_is_refused(site: Site) -> None:
    clash = Phone("9000", "Clash", "pw")
    with pytest.raises(RenderError, match="number 9000 is also phone extension 9000"):
        render_asterisk(dataclasses.replace(site, phones=site.phones + (clash,)))


@pytest.mark.parametrize(
    ("regex", "exten"),
    [
        (r"^92(\d\d)$", "_92XX"),
        (r"^9(\d)(\d\d)$", "_9XXX"),
        (r"^\+1[2-9]\d{9}$", "_+1NXXXXXXXXX"),
        (r"^0[1-9][135]$", "_0Z[135]"),
        (r"^\*72$", "*72"),
        (r"^9(\d+)$", None),
        (r"^(1|2)$", None),
        (r"^9.$", None),
    ],
)
def test_flow_patterns_become_dialplan_patterns(regex: str, exten: str | None) -> None:
    assert pattern_to_exten(regex) == exten


def test_untranslatable_pattern_routes_any_number_to_the_controller(site: Site, tmp_path: Path) -> None:
    flows = tmp_path / "dialplans"
    flows.mkdir()
    (flows / "a.yaml").write_text("flow: a\npatterns: ['^9(\\d+)$', '^8(\\d\\d)$']\n")
    files = render_asterisk(dataclasses.replace(site, flows_dir=flows))
    sections = {s.name: s for s in _sections(files, "extensions.conf")}
    assert "_8XX,1,Stasis(switchctl,inbound,${EXTEN})" in sections["switchctl-routes"].all("exten")
    assert sections["switchctl-routes"].all("include") == ["switchctl-any-number"]
    assert "'^9(\\\\d+)$'" in files["extensions.conf"].decode() or "^9(\\d+)$" in files["extensions.conf"].decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("password", "a;b", "contains ';'"),
        ("password", "a\nallow = all", "contains a newline"),
        ("password", "[x]", "contains '\\['"),
        ("password", " pad", "starts or ends with a blank"),
        ("name", 'Bob "the" Booth', "caller ID"),
        ("name", "Booth\r1", "carriage return"),
    ],
)
def test_values_that_would_break_the_ini_are_refused(site: Site, field: str, value: str, message: str) -> None:
    phone = dataclasses.replace(site.phones[1], **{field: value})
    bad = dataclasses.replace(site, phones=(site.phones[0], phone) + site.phones[2:])
    with pytest.raises(RenderError, match=message) as err:
        render_asterisk(bad)
    assert "phone 1001" in str(err.value)


def test_gateway_named_like_a_phone_or_reserved_section_is_refused(site: Site) -> None:
    for name in ("1000", "sipp"):
        gw = Gateway(name, "198.51.100.7", False, "", "")
        with pytest.raises(RenderError, match=f"gateway '{name}'"):
            render_asterisk(dataclasses.replace(site, gateways=(gw,)))


def test_ari_and_http_listen_where_the_site_says(site: Site) -> None:
    files = render_asterisk(site)
    http = _sections(files, "http.conf")[0]
    assert (http.get("bindaddr"), http.get("bindport")) == ("127.0.0.1", "8088")
    ari = {s.name: s for s in _sections(files, "ari.conf")}
    assert ari["general"].get("allowed_origins") == ""
    assert ari["switchctl"].get("password") == "switchctl" and ari["switchctl"].get("type") == "user"
    cdr = {s.name: s for s in _sections(files, "cdr.conf")}
    assert cdr["csv"].get("loguniqueid") == "yes" and cdr["csv"].get("usegmtime") == "yes"
    custom = _sections(files, "cdr_custom.conf")[0]
    assert "answer(double)" in str(custom.get("fields"))
    loads = _sections(files, "modules.conf")[0].all("load")
    assert loads.index("res_cdrel_custom.so") < loads.index("cdr_custom.so")


def test_render_site_dispatches_by_kind(site: Site) -> None:
    assert render_site(site) == render_asterisk(site)
    fs = render_site(load_site(ROOT / "examples" / "phonebar" / "site.yaml"))
    assert "freeswitch.xml" in fs


def test_sound_files_are_the_playable_prompts(site: Site, tmp_path: Path) -> None:
    files = asterisk_sound_files(site)
    assert "welcome.wav" in files and "make_sounds.py" not in files
    wide = tmp_path / "wide"
    wide.mkdir()
    with wave.open(str(wide / "hi.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 160)
    with pytest.raises(RenderError, match="16000 Hz"):
        asterisk_sound_files(dataclasses.replace(site, sound_dirs=(wide,)))


def test_committed_asterisk_conf_is_up_to_date(site: Site) -> None:
    """asterisk-conf/phonebar is exactly what the templates render for examples/phonebar-asterisk.

    Regenerate with: .venv/bin/python -m switchctl.render.asterisk examples/phonebar-asterisk/site.yaml asterisk-conf/phonebar
    """
    files = render_asterisk(site)
    on_disk = {p.relative_to(COMMITTED).as_posix(): p.read_bytes() for p in COMMITTED.rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(files)
    for rel, content in files.items():
        assert on_disk[rel] == content, f"asterisk-conf/phonebar/{rel} is out of date"


def test_write_tree_prunes_into_a_folder(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.conf").write_text("x")
    write_tree(render_asterisk(site), out, prune=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(render_asterisk(site))


def test_the_uri_endpoint_name_is_the_one_the_dialer_uses() -> None:
    from switchctl.render.asterisk import URI_ENDPOINT as rendered
    from switchctl.switch.asterisk_dial import URI_ENDPOINT as dialled

    assert rendered == dialled
