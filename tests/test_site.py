"""The site model: loading, expansion and every validation error with its file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from switchctl.config.site import Site, load_site
from switchctl.config.yamlsrc import SourceError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar" / "site.yaml"

BASE = """\
site: test
switches:
  - name: fs1
    esl: {host: 127.0.0.1, port: 8021, password: ClueCon}
    outbound: {host: 127.0.0.1, port: 8084}
    sip: {ip: 127.0.0.1, port: 5060}
flows: flows/
"""


def write_site(tmp_path: Path, text: str) -> Path:
    (tmp_path / "flows").mkdir(exist_ok=True)
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SourceError) as info:
        load_site(write_site(tmp_path, text))
    return str(info.value)


def test_example_site_loads() -> None:
    site = load_site(EXAMPLE)
    assert isinstance(site, Site)
    assert site.name == "phonebar"
    assert site.path == EXAMPLE
    fs1 = site.switch("fs1")
    assert (fs1.esl.host, fs1.esl.port, fs1.esl.password) == ("127.0.0.1", 8021, "ClueCon")
    assert (fs1.outbound.host, fs1.outbound.port) == ("127.0.0.1", 8084)
    assert str(fs1.outbound) == "127.0.0.1:8084"
    assert fs1.sessions_per_second == 100 and fs1.max_sessions == 1000
    assert fs1.domain == "127.0.0.1"
    assert site.web_listen == ("127.0.0.1", 8080)
    assert site.flows_dir == EXAMPLE.parent / "dialplans"
    assert site.sound_dirs == (EXAMPLE.parent / "sounds",)
    assert [p.extension for p in site.phones] == ["1000"] + [str(n) for n in range(1001, 1011)]
    assert site.phone("1003").name == "Booth 3" and site.phone("1003").booth
    assert site.phone("1003").password == "booth-1003"
    assert not site.phone("1000").booth
    assert site.gateways[0].name == "upstream" and site.gateways[0].register is False
    assert site.lists["vip"] == ("+15551234",)
    assert site.values["operator"] == "1000"


def test_relative_sqlite_path_resolves_against_site_folder(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, BASE + "database: sqlite+aiosqlite:///var/x.db\n"))
    assert site.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/var/x.db"
    site = load_site(write_site(tmp_path, BASE + "database: sqlite+aiosqlite:////abs/x.db\n"))
    assert site.database_url == "sqlite+aiosqlite:////abs/x.db"
    site = load_site(write_site(tmp_path, BASE + "database: postgresql+asyncpg://u@127.0.0.1/db\n"))
    assert site.database_url == "postgresql+asyncpg://u@127.0.0.1/db"


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "phnoes: []\n")
    assert msg == f"{tmp_path}/site.yaml:8:1: unknown key 'phnoes' in the site; did you mean 'phones'?"


def test_unknown_key_in_switch(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("    sip:", "    sessions_per_secnd: 10\n    sip:"))
    assert msg.endswith("6:5: unknown key 'sessions_per_secnd' in a switch; did you mean 'sessions_per_second'?")


def test_duplicate_extension_names_both_lines(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + """\
phones:
  - {extension: "1005", name: A, password: a}
  - {range: "1001-1010", name: "B {n}", password: b}
""")
    assert msg.endswith("10:5: duplicate extension 1005 (first at line 9)")


def test_range_expands_n_and_extension(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, BASE + """\
phones:
  - {range: "098-101", name: "Booth {n}", password: "pw{extension}x"}
"""))
    assert [p.extension for p in site.phones] == ["098", "099", "100", "101"]
    assert site.phones[2].name == "Booth 3" and site.phones[2].password == "pw100x"


def test_bad_range(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + 'phones:\n  - {range: "1010-1001", name: x, password: y}\n')
    assert "phone range '1010-1001' must go up" in msg and ":9:" in msg


def test_unknown_placeholder(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + 'phones:\n  - {range: "1-2", name: "B {num}", password: y}\n')
    assert "unknown placeholder '{num}'" in msg


def test_unquoted_extension_is_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "phones:\n  - {extension: 1000, name: x, password: y}\n")
    assert msg.endswith("9:17: phone extension must be a string (quote it), not int 1000")


def test_empty_password_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + 'phones:\n  - {extension: "1000", name: x, password: ""}\n')
    assert msg.endswith("phone password must not be empty")
    msg = error_of(tmp_path, BASE.replace("password: ClueCon", 'password: ""'))
    assert msg.endswith("4:50: switch 'fs1' esl password must not be empty")


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FS_PASSWORD", "s3cret")
    site = load_site(write_site(tmp_path, BASE.replace("password: ClueCon", 'password: "${env:FS_PASSWORD}"')))
    assert site.switches[0].esl.password == "s3cret"
    monkeypatch.delenv("FS_PASSWORD")
    msg = error_of(tmp_path, BASE.replace("password: ClueCon", 'password: "${env:FS_PASSWORD}"'))
    assert msg.endswith("4:50: environment variable FS_PASSWORD is not set")


def test_password_with_freeswitch_expansion_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + 'phones:\n  - {extension: "1000", name: x, password: "a$${b}"}\n')
    assert "must not contain '${'" in msg


def test_remote_bind_needs_allow_remote(tmp_path: Path) -> None:
    text = BASE.replace("sip: {ip: 127.0.0.1", "sip: {ip: 192.0.2.10")
    msg = error_of(tmp_path, text)
    assert "switch 'fs1' sip binds 192.0.2.10, which is not loopback; set 'allow_remote: true'" in msg
    site = load_site(write_site(tmp_path, text + "allow_remote: true\n"))
    assert site.switches[0].sip.host == "192.0.2.10" and site.switches[0].domain == "192.0.2.10"


def test_web_listen_must_be_loopback(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "web: {listen: 0.0.0.0:8080}\n")
    assert msg.endswith("8:15: web listen binds 0.0.0.0, which is not loopback; set 'allow_remote: true' to allow it")


def test_two_listeners_on_one_port(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("port: 8084", "port: 8021"))
    assert "switch 'fs1' outbound uses 127.0.0.1:8021, already used by switch 'fs1' esl" in msg


def test_duplicate_switch_and_gateway_names(tmp_path: Path) -> None:
    two = BASE.replace("flows: flows/\n", "") + """\
  - name: fs1
    esl: {host: 127.0.0.1, port: 9021, password: x}
    outbound: {host: 127.0.0.1, port: 9084}
    sip: {ip: 127.0.0.1, port: 6060}
flows: flows/
"""
    assert error_of(tmp_path, two).endswith("7:5: duplicate switch name 'fs1' (first at line 3)")
    gws = BASE + "gateways:\n  - {name: up, proxy: 127.0.0.1}\n  - {name: up, proxy: 127.0.0.2}\n"
    assert error_of(tmp_path, gws).endswith("10:5: duplicate gateway name 'up' (first at line 9)")


def test_registering_gateway_needs_credentials(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "gateways:\n  - {name: up, proxy: 127.0.0.1, register: true}\n")
    assert msg.endswith("9:5: gateway 'up' registers, so it needs a username and a password")


def test_missing_flows_folder(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("flows: flows/", "flows: nowhere/"))
    assert "7:8: flows folder 'nowhere/' does not exist" in msg


def test_unsupported_kind_and_bad_acl(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE.replace("  - name: fs1\n", "  - name: fs1\n    kind: yate\n"))
    assert "kind 'yate' is not supported yet (supported: freeswitch, asterisk)" in msg
    # an asterisk switch takes `ari`, not FreeSWITCH's event socket
    msg = error_of(tmp_path, BASE.replace("  - name: fs1\n", "  - name: fs1\n    kind: asterisk\n"))
    assert "switch 'fs1' (kind asterisk) takes no 'esl': it belongs to freeswitch switches" in msg
    msg = error_of(tmp_path, BASE.replace("  - name: fs1\n", "  - name: fs1\n    acl: [nonsense]\n"))
    assert msg.endswith("4:11: switch 'fs1' acl entry 'nonsense' is not a CIDR network")


def test_unquoted_list_number_is_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "lists: {vip: [+15551234]}\n")
    assert "list 'vip' entry must be a string (quote it), not int 15551234" in msg


def test_acl_is_normalised_and_defaults_to_localhost(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, BASE))
    assert site.switches[0].acl == ("127.0.0.1/32",)
    site = load_site(write_site(tmp_path, BASE.replace("  - name: fs1\n", "  - name: fs1\n    acl: [127.0.0.1/8]\n")))
    assert site.switches[0].acl == ("127.0.0.0/8",)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("")
    with pytest.raises(SourceError, match="the site file is empty"):
        load_site(path)


ASTERISK = """site: ast
switches:
  - name: ast1
    kind: asterisk
    ari: {host: 127.0.0.1, port: 8088, user: switchctl, password: secret, app: switchctl}
    sip: {ip: 127.0.0.1, port: 5060}
flows: dialplans/
"""


def test_asterisk_switch(tmp_path: Path) -> None:
    (tmp_path / "dialplans").mkdir(exist_ok=True)
    site = load_site(write_site(tmp_path, ASTERISK))
    sw = site.switches[0]
    assert sw.kind == "asterisk" and sw.esl is None and sw.outbound is None
    assert sw.ari is not None and sw.ari.url == "http://127.0.0.1:8088" and sw.ari.app == "switchctl"
    assert str(sw.conf_dir) == "/etc/asterisk"
    msg = error_of(tmp_path, ASTERISK.replace("    ari: {", "    ari: {bogus: 1, "))
    assert "unknown key 'bogus'" in msg
    msg = error_of(tmp_path, ASTERISK.replace("password: secret", "password: 'a b'"))
    assert "ari password must not contain spaces" in msg


def test_asterisk_recording_dir_and_a_voicemail_spool_outside_it(tmp_path: Path) -> None:
    (tmp_path / "dialplans").mkdir(exist_ok=True)
    assert load_site(write_site(tmp_path, ASTERISK)).switches[0].recording_dir is None  # the stock one
    moved = ASTERISK.replace("    sip: {", "    recording_dir: /srv/ast/spool/recording\n    sip: {")
    vm_inside = moved + "voicemail: {spool: /srv/ast/spool/recording/vm}\n"
    site = load_site(write_site(tmp_path, vm_inside))
    assert str(site.switches[0].recording_dir) == "/srv/ast/spool/recording"
    # Asterisk records nowhere else: a spool outside it fails at load, not at the first message
    msg = error_of(tmp_path, ASTERISK + "voicemail: {spool: /var/spool/switchctl/voicemail}\n")
    assert "site.yaml:8:" in msg and "voicemail spool '/var/spool/switchctl/voicemail' is not a folder under " \
        "/var/spool/asterisk/recording, where Asterisk switch 'ast1' records" in msg
    msg = error_of(tmp_path, moved + "voicemail: {spool: /var/spool/asterisk/recording/vm}\n")
    assert "not a folder under /srv/ast/spool/recording" in msg
    msg = error_of(tmp_path, ASTERISK.replace("    sip: {", "    recording_dir: spool/rec\n    sip: {"))
    assert "recording_dir 'spool/rec' must be absolute" in msg
    msg = error_of(tmp_path, BASE.replace("  - name: fs1\n", "  - name: fs1\n    recording_dir: /x\n"))
    assert "takes no 'recording_dir'" in msg


# --- numbering, screening, holidays ---------------------------------------------------------------

NUMBERING_OK = BASE + """\
numbering:
  main:
    - {plus: "00"}
    - {prefix: "00", route: international, min_length: 6}
    - {prefix: "0[67]", route: mobile, length: 10}
    - {prefix: "0", route: local, length: 10, edit: [{delete: 1, at: 0}, {insert: "33"}, {insert: "#", at: end}]}
screening:
  default:
    callers: {black: ["=666"]}
    destinations: {black: ["0899", all], white: ["0899100", "=112"]}
  kiosk:
    destinations: {black: [all]}
holidays:
  france: ["01-01", "2026-04-06", "12-24..12-26", 2027-03-29]
"""


def test_numbering_sections_load(tmp_path: Path) -> None:
    import datetime as dt

    numbering = load_site(write_site(tmp_path, NUMBERING_OK)).numbering
    plan = numbering.plans["main"]
    assert plan.plus == "00" and plan.routes == {"international", "mobile", "local"}
    assert plan.analyze("+44123456").number_out == "0044123456"
    assert plan.analyze("0142345678").number_out == "33142345678#"
    assert numbering.screening.screen("default", "666", "112").by == "caller"
    assert numbering.screening.screen("default", "1001", "0899100000") is None
    assert numbering.screening.screen("default", "1001", "112") is None
    assert numbering.screening.screen("default", "1001", "0612345678").entry == "all"
    assert numbering.is_holiday("france", dt.date(2031, 12, 25))
    assert numbering.is_holiday("france", dt.date(2027, 3, 29))


def test_example_site_numbering() -> None:
    numbering = load_site(EXAMPLE).numbering
    analyze = numbering.plans["main"].analyze
    assert [analyze(n).route for n in ("0044207123456", "0612345678", "0712345678", "112", "15", "17", "18",
                                       "1005", "0142345678")] == [
        "international", "mobile", "mobile", "emergency", "emergency", "emergency", "emergency", "booth", "local"]
    assert numbering.screening.screen("default", "1001", "0899123456").entry == "0899"
    asterisk = load_site(ROOT / "examples" / "phonebar-asterisk" / "site.yaml").numbering
    assert asterisk.plans["main"].routes == numbering.plans["main"].routes


def test_a_site_without_numbering_has_empty_sections(tmp_path: Path) -> None:
    numbering = load_site(write_site(tmp_path, BASE)).numbering
    assert not numbering.plans and not numbering.holidays and not numbering.screening.tenants


@pytest.mark.parametrize("section, message", [
    ("numbering:\n  main:\n    - {prefix: \"00\", route: intl, lenght: 6}\n",
     "site.yaml:10:35: unknown key 'lenght' in rule 1 of plan 'main'; did you mean 'length'?"),
    ("numbering:\n  main:\n    - {prefix: 00, route: intl}\n",
     "site.yaml:10:16: rule 1 of plan 'main' prefix must be a quoted string (\"0\"): YAML reads 0100 as 64"),
    ("numbering:\n  main:\n    - {prefix: \"0[6\", route: mobile}\n",
     "site.yaml:10:16: rule 1 of plan 'main': prefix '0[6' may only use digits, * and # and [...] classes "
     "such as [67] or [2-9]"),
    ("numbering:\n  main:\n    - {prefix: \"01234567890\", route: x}\n",
     "site.yaml:10:16: rule 1 of plan 'main': prefix '01234567890' has 11 digits; rules match on at most the "
     "first 10"),
    ("numbering:\n  main:\n    - {prefix: \"1\", route: blocked}\n",
     "site.yaml:10:28: rule 1 of plan 'main': route 'blocked' is an outcome of the number node; choose another name"),
    ("numbering:\n  main:\n    - {prefix: \"1\", route: x, length: 3, max_length: 4}\n",
     "site.yaml:10:42: rule 1 of plan 'main': give 'length' or 'min_length'/'max_length', not both"),
    ("numbering:\n  main:\n    - {prefix: \"1\", route: x, length: 29}\n",
     "site.yaml:10:39: rule 1 of plan 'main' length must be between 1 and 28, not 29"),
    ("numbering:\n  main:\n    - {prefix: \"06\", route: x, edit: [{delete: 3}]}\n",
     "site.yaml:10:38: rule 1 of plan 'main': edit 1 (delete 3 at 0) needs more digits than the shortest number "
     "this rule matches (2, and 2 before this edit); raise min_length"),
    ("numbering:\n  main:\n    - {prefix: \"06\", route: x, edit: [{delete: 1, insert: \"3\"}]}\n",
     "site.yaml:10:39: edit 1 of rule 1 of plan 'main' needs exactly one of 'delete' (a count of digits) or "
     "'insert' (digits)"),
    ("numbering:\n  main:\n    - {prefix: \"06\", route: x, edit: [{delete: 1, at: end}]}\n",
     "site.yaml:10:55: edit 1 of rule 1 of plan 'main': 'at: end' only applies to insert (delete the last "
     "digits with at: -N)"),
    ("numbering:\n  main:\n    - {plus: \"+\"}\n    - {prefix: \"1\", route: x}\n",
     "site.yaml:10:14: rule 1 of plan 'main': plus '+' must be digits that replace a leading '+' (e.g. \"00\"), "
     "or \"\" to drop it"),
    ("numbering:\n  main:\n    - {plus: \"00\"}\n    - {plus: \"0\"}\n    - {prefix: \"1\", route: x}\n",
     "site.yaml:11:8: plan 'main' has two 'plus' rules (first at line 10)"),
    ("numbering:\n  main:\n    - {plus: \"00\", route: x}\n",
     "site.yaml:10:20: unknown key 'route' in rule 1 of plan 'main' (a 'plus' rule has no other keys); "
     "expected one of: plus"),
    ("numbering:\n  main: []\n",
     "site.yaml:9:9: numbering plan 'main' has no rules"),
    ("numbering:\n  main:\n    - {plus: \"00\"}\n",
     "site.yaml:10:5: numbering plan 'main' has no routing rules (prefix, route)"),
    ("screening:\n  default:\n    destinations: {black: [\"+33\"]}\n",
     "site.yaml:10:28: screening of tenant 'default' destinations black: '+33' is not a screening entry: digits "
     "for a prefix, '=' and digits for one exact number, or 'all' (write it as dialled after the plan's '+' "
     "normalization, e.g. 0033...)"),
    ("screening:\n  default:\n    destinations: {black: [0100]}\n",
     "site.yaml:10:28: screening of tenant 'default' destinations black entry must be a quoted string (\"64\"): "
     "YAML reads 0100 as 64"),
    ("screening:\n  default:\n    destination: {black: [\"0899\"]}\n",
     "site.yaml:10:5: unknown key 'destination' in screening of tenant 'default'; did you mean 'destinations'?"),
    ("screening:\n  default:\n    callers: {blacklist: [\"0899\"]}\n",
     "site.yaml:10:15: unknown key 'blacklist' in screening of tenant 'default' callers; did you mean 'black'?"),
    ("holidays:\n  france: [\"01-01\", \"13-01\"]\n",
     "site.yaml:9:21: holiday calendar 'france': '13-01' is not a valid date"),
    ("holidays:\n  france: []\n",
     "site.yaml:9:11: holiday calendar 'france' has no dates"),
    ("holiday:\n  france: [\"01-01\"]\n",
     "site.yaml:8:1: unknown key 'holiday' in the site; did you mean 'holidays'?"),
])
def test_numbering_errors(tmp_path: Path, section: str, message: str) -> None:
    assert error_of(tmp_path, BASE + section).endswith(message)


# --- billing and CDR locations ------------------------------------------------------------------


def test_billing_defaults_and_cdr_default_location(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, BASE))
    assert site.billing.tenant == "default" and site.billing.warning_seconds == 10
    cdr = site.switches[0].cdr
    assert cdr is not None and (cdr.format, str(cdr.path)) == ("json", "/var/log/freeswitch/json_cdr")


def test_billing_section_is_read(tmp_path: Path) -> None:
    text = BASE + "billing: {tenant: bar2, warning_seconds: 5, warning_prompt: 'tone_stream://%(200,0,800)', cdr_poll_seconds: 0.5}\n"
    site = load_site(write_site(tmp_path, text))
    assert (site.billing.tenant, site.billing.warning_seconds, site.billing.cdr_poll_seconds) == ("bar2", 5, 0.5)
    assert site.billing.warning_prompt == "tone_stream://%(200,0,800)"


def test_billing_errors_name_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, BASE + "billing: {warning_secs: 5}\n")
    assert msg.endswith(":8:11: unknown key 'warning_secs' in billing; did you mean 'warning_seconds'?")
    msg = error_of(tmp_path, BASE + "billing: {warning_seconds: 9999}\n")
    assert msg.endswith("billing warning_seconds must be between 0 and 600, not 9999")
    msg = error_of(tmp_path, BASE + "billing: {cdr_poll_seconds: fast}\n")
    assert "cdr_poll_seconds must be a number of seconds" in msg


def test_switch_cdr_location_and_format(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, BASE.replace("    sip:", "    cdr: {format: csv, path: cdr/Master.csv}\n    sip:")))
    cdr = site.switches[0].cdr
    assert cdr is not None and cdr.format == "csv" and cdr.path == tmp_path / "cdr" / "Master.csv"
    msg = error_of(tmp_path, BASE.replace("    sip:", "    cdr: {format: custom}\n    sip:"))
    assert "cdr format 'custom' is not one a freeswitch writes (one of: json, csv)" in msg


def test_voicemail_section(tmp_path: Path) -> None:
    assert load_site(write_site(tmp_path, BASE)).voicemail is None
    site = load_site(write_site(tmp_path, BASE + "voicemail: {spool: /var/spool/vm, smtp: '127.0.0.1:2525', from: vm@bar.example}\n"))
    vm = site.voicemail
    assert vm is not None and str(vm.spool) == "/var/spool/vm" and vm.smtp == "127.0.0.1:2525"
    assert vm.sender == "vm@bar.example" and vm.local_spool is None and vm.retry_seconds == 60
    msg = error_of(tmp_path, BASE + "voicemail: {smtp: '127.0.0.1:25'}\n")
    assert msg.endswith("voicemail needs 'spool' (where the switch writes the messages)")
    msg = error_of(tmp_path, BASE + "voicemail: {spool: x, from: nobody}\n")
    assert "voicemail from 'nobody' is not an e-mail address" in msg
