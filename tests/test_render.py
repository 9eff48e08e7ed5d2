"""FreeSWITCH rendering: structure, escaping, determinism, and the committed example tree."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from switchctl.config.flowroutes import read_flow_routes
from switchctl.config.site import load_site
from switchctl.config.yamlsrc import SourceError
from switchctl.render import RenderError, render_freeswitch, render_to
from switchctl.render.freeswitch import FREESWITCH_MODULES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar" / "site.yaml"
COMMITTED = ROOT / "freeswitch-conf" / "phonebar"

SITE = """\
site: t
switches:
  - name: fs1
    esl: {host: 127.0.0.1, port: 8021, password: 'p<&"x'}
    outbound: {host: 127.0.0.1, port: 8099}
    sip: {ip: 127.0.0.1, port: 5070}
    sessions_per_second: 77
    max_sessions: 321
    acl: [127.0.0.1/32, 127.0.0.2/32]
flows: flows/
phones:
  - {extension: "2001", name: 'Booth <1> & "A"', password: 'a<&"b', booth: true}
gateways:
  - {name: up, proxy: 127.0.0.1:5090, register: true, username: u, password: 'g<&"p'}
"""


def make_site(tmp_path: Path, site_text: str = SITE, flows: dict[str, str] | None = None) -> Path:
    (tmp_path / "flows").mkdir(exist_ok=True)
    for name, text in (flows or {"a.yaml": "flow: a\nnumbers: ['500']\npatterns: ['6(\\d\\d)']\n"}).items():
        (tmp_path / "flows" / name).write_text(textwrap.dedent(text))
    path = tmp_path / "site.yaml"
    path.write_text(site_text)
    return path


def parse(files: dict[str, bytes], rel: str) -> ET.Element:
    return ET.fromstring(files[rel])


def params(elem: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in elem.iter("param")}


def test_every_file_is_well_formed_xml_and_values_are_escaped(tmp_path: Path) -> None:
    files = render_freeswitch(load_site(make_site(tmp_path)))
    for rel, content in files.items():
        ET.fromstring(content)  # raises on malformed XML
        assert content.endswith(b"\n")
    esl = params(parse(files, "autoload_configs/event_socket.conf.xml"))
    assert esl == {
        "nat-map": "false",
        "listen-ip": "127.0.0.1",
        "listen-port": "8021",
        "password": 'p<&"x',
        "apply-inbound-acl": "switchctl_esl",
    }
    assert b'p&lt;&amp;&#34;x' in files["autoload_configs/event_socket.conf.xml"]
    user = parse(files, "directory/default/2001.xml").find("user")
    assert user.get("id") == "2001"
    assert params(user) == {"password": 'a<&"b'}
    variables = {v.get("name"): v.get("value") for v in user.iter("variable")}
    assert variables["effective_caller_id_name"] == 'Booth <1> & "A"'
    gw = parse(files, "sip_profiles/internal/up.xml").find("gateway")
    assert gw.get("name") == "up"
    assert params(gw)["password"] == 'g<&"p' and params(gw)["register"] == "true"


def test_switch_acl_profile_and_modules(tmp_path: Path) -> None:
    files = render_freeswitch(load_site(make_site(tmp_path)))
    core = params(parse(files, "autoload_configs/switch.conf.xml"))
    assert core["sessions-per-second"] == "77" and core["max-sessions"] == "321"
    acl = parse(files, "autoload_configs/acl.conf.xml").find("network-lists/list")
    assert acl.get("name") == "switchctl_esl" and acl.get("default") == "deny"
    assert [(n.get("type"), n.get("cidr")) for n in acl] == [("allow", "127.0.0.1/32"), ("allow", "127.0.0.2/32")]
    profile = parse(files, "sip_profiles/internal.xml")
    assert profile.tag == "profile" and profile.get("name") == "internal"
    sofia = params(profile.find("settings"))
    assert (sofia["sip-ip"], sofia["rtp-ip"], sofia["sip-port"]) == ("127.0.0.1", "127.0.0.1", "5070")
    assert sofia["context"] == "default" and sofia["dtmf-type"] == "rfc2833"
    modules = [m.get("module") for m in parse(files, "autoload_configs/modules.conf.xml").iter("load")]
    assert modules == list(FREESWITCH_MODULES)
    assert {"mod_sofia", "mod_event_socket", "mod_dptools", "mod_dialplan_xml", "mod_commands", "mod_sndfile",
            "mod_tone_stream", "mod_say_en", "mod_loopback", "mod_console", "mod_logfile",
            "mod_json_cdr", "mod_cdr_csv", "mod_conference"} == set(modules)
    # loggers load first: a module that fails later must be able to say why
    assert modules[:2] == ["mod_console", "mod_logfile"]
    top = parse(files, "freeswitch.xml")
    includes = [e.get("data") for e in top.iter("X-PRE-PROCESS")]
    assert includes == ["vars.xml", "autoload_configs/*.xml", "dialplan/*.xml", "directory/*.xml"]
    assert top.find("section[@name='languages']/language").get("say-module") == "en"


def test_dialplan_routes(tmp_path: Path) -> None:
    files = render_freeswitch(load_site(make_site(tmp_path)))
    ctx = parse(files, "dialplan/default.xml").find("context")
    assert ctx.get("name") == "default"
    exts = parse(files, "dialplan/default/00_switchctl.xml").findall("extension")
    table = [
        (e.get("name"), e.find("condition").get("expression"),
         [(a.get("application"), a.get("data")) for a in e.iter("action")])
        for e in exts
    ]
    assert table == [
        ("switchctl_domain", "^$", [("set", "domain_name=127.0.0.1")]),
        ("switchctl_flow_a_500", "^500$", [("socket", "127.0.0.1:8099 async full")]),
        ("switchctl_phone_2001", "^2001$", [("set", "hangup_after_bridge=true"), ("set", "call_timeout=30"),
                                            ("bridge", "user/2001@${domain_name}")]),
        ("switchctl_flow_a_pattern1", r"^(?:6(\d\d))$", [("socket", "127.0.0.1:8099 async full")]),
    ]
    assert exts[0].get("continue") == "true"


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    site = load_site(make_site(tmp_path))
    first = render_freeswitch(site)
    assert first == render_freeswitch(load_site(make_site(tmp_path)))
    assert list(first) == sorted(first)


def test_empty_folders_get_a_stub(tmp_path: Path) -> None:
    text = SITE.split("phones:")[0]
    files = render_freeswitch(load_site(make_site(tmp_path, text)))
    assert "sip_profiles/internal/00_none.xml" in files and "directory/default/00_none.xml" in files
    assert not [r for r in files if r.startswith("directory/default/2")]


def test_flow_number_colliding_with_a_phone(tmp_path: Path) -> None:
    site = load_site(make_site(tmp_path, flows={"a.yaml": "flow: a\nnumbers: ['2001']\n"}))
    with pytest.raises(RenderError, match="flow 'a' number 2001 is also phone extension 2001"):
        render_freeswitch(site)


def test_flow_routes_errors(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "a.yaml").write_text("flow: a\nnumbers: ['100']\n")
    (flows / "b.yaml").write_text("flow: b\nnumbers:\n  - '100'\n")
    with pytest.raises(SourceError) as info:
        read_flow_routes(flows, display_base=tmp_path)
    assert str(info.value) == "flows/b.yaml:3:5: number 100 is already answered by flow 'a' (flows/a.yaml:2:11)"
    (flows / "b.yaml").write_text("flow: b\npatterns: ['(unclosed']\n")
    with pytest.raises(SourceError, match=r"flows/b.yaml:2:12: flow 'b' pattern is not a valid regex"):
        read_flow_routes(flows, display_base=tmp_path)


def test_several_switches_need_a_name(tmp_path: Path) -> None:
    text = SITE.replace("flows: flows/\n", """\
  - name: fs2
    esl: {host: 127.0.0.1, port: 9021, password: x}
    outbound: {host: 127.0.0.1, port: 9084}
    sip: {ip: 127.0.0.1, port: 6070}
flows: flows/
""")
    site = load_site(make_site(tmp_path, text))
    with pytest.raises(RenderError, match="has 2 FreeSWITCH switches"):
        render_freeswitch(site)
    files = render_freeswitch(site, "fs2")
    assert params(parse(files, "autoload_configs/event_socket.conf.xml"))["listen-port"] == "9021"


def test_render_to_writes_and_prunes(tmp_path: Path) -> None:
    site = load_site(make_site(tmp_path))
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "stale.xml").write_text("<x/>")
    files = render_to(site, out)
    assert (out / "old" / "stale.xml").exists()  # not pruned unless asked
    render_to(site, out, prune=True)
    on_disk = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert on_disk == files


def test_committed_example_is_up_to_date() -> None:
    """freeswitch-conf/phonebar is exactly what the templates render for examples/phonebar.

    Regenerate with: .venv/bin/switchctl render -c examples/phonebar/site.yaml --out freeswitch-conf/phonebar
    (then delete files the render no longer produces) or render_to(site, dir, prune=True).
    """
    files = render_freeswitch(load_site(EXAMPLE))
    on_disk = {str(p.relative_to(COMMITTED)): p.read_bytes() for p in COMMITTED.rglob("*") if p.is_file()}
    assert sorted(on_disk) == sorted(files)
    for rel, content in files.items():
        assert on_disk[rel] == content, f"freeswitch-conf/phonebar/{rel} is out of date"


def test_cdr_modules_config(tmp_path: Path) -> None:
    """mod_json_cdr writes every leg (B legs too) URL-encoded into the log dir; mod_cdr_csv writes
    both legs with switchctl's template, whose columns are exactly what the CSV parser maps."""
    from switchctl.billing.cdr import FS_CSV_ESL_USEC, FS_CSV_SWITCHCTL

    files = render_freeswitch(load_site(make_site(tmp_path)))
    json_cdr = params(parse(files, "autoload_configs/json_cdr.conf.xml").find("settings"))
    assert json_cdr == {"log-dir": "$${log_dir}/json_cdr", "log-b-leg": "true", "prefix-a-leg": "false"}
    assert "encode-values" not in json_cdr  # default true: values URL-encoded, as captured
    csv_conf = parse(files, "autoload_configs/cdr_csv.conf.xml")
    settings = params(csv_conf.find("settings"))
    assert (settings["legs"], settings["default-template"], settings["log-base"]) == \
        ("ab", "esl_usec", "$${log_dir}")
    template = csv_conf.find("templates/template[@name='esl_usec']").text
    assert template == ",".join(f'"${{{c}}}"' for c in FS_CSV_SWITCHCTL)
    assert FS_CSV_SWITCHCTL[:len(FS_CSV_ESL_USEC)] == FS_CSV_ESL_USEC
    assert FS_CSV_SWITCHCTL[len(FS_CSV_ESL_USEC):] == ("read_codec", "switchctl_account", "switchctl_call",
                                                         "switchctl_recording")


def test_conference_profiles_for_transfers_are_rendered(tmp_path: Path) -> None:
    # Call.bridge / Call.conference on FreeSWITCH run the caller in a mod_conference room
    # (docs/TRANSFER.md): the two profiles they name must be in the rendered configuration.
    files = render_freeswitch(load_site(make_site(tmp_path)))
    profiles = {p.get("name") for p in parse(files, "autoload_configs/conference.conf.xml").iter("profile")}
    assert {"default", "switchctl_bridge"} <= profiles
