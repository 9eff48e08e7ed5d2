"""The site's `transfer:` section: TransferOptions from YAML, and each error with its file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from switchctl.config.site import load_site
from switchctl.config.yamlsrc import SourceError
from switchctl.features.transfer.options import (
    DEFAULT_CODES,
    RINGBACK,
    TransferOptions,
    TransferRoute,
)

BASE = """\
site: test
switches:
  - name: fs1
    esl: {host: 127.0.0.1, port: 8021, password: ClueCon}
    outbound: {host: 127.0.0.1, port: 8084}
    sip: {ip: 127.0.0.1, port: 5060}
flows: flows/
gateways:
  - {name: upstream, proxy: 127.0.0.1:5090}
"""


def write_site(tmp_path: Path, transfer: str) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "sales.yaml").write_text("flow: sales\nnodes:\n  bye: {type: hangup}\n")
    (flows / "broken.yaml").write_text("flow: [unclosed\n")  # left to `switchctl check`
    path = tmp_path / "site.yaml"
    path.write_text(BASE + textwrap.dedent(transfer))
    return path


def load(tmp_path: Path, transfer: str):
    return load_site(write_site(tmp_path, transfer))


def error_of(tmp_path: Path, transfer: str) -> str:
    with pytest.raises(SourceError) as info:
        load(tmp_path, transfer)
    return str(info.value).replace(str(tmp_path) + "/", "")


def test_no_section_means_no_transfer_feature(tmp_path):
    assert load(tmp_path, "").transfer is None


@pytest.mark.parametrize("text", ["transfer:\n", "transfer: {}\n"])
def test_an_empty_section_turns_it_on_with_the_defaults(tmp_path, text):
    assert load(tmp_path, text).transfer == TransferOptions()


def test_every_setting(tmp_path):
    site = load(tmp_path, """\
        transfer:
          enabled: false
          codes: {blind: "#1", attended: "#2", three_way: "*9"}
          digit_timeout: 2.5
          ring_timeout: 25
          music: local_stream://moh
          ringback: tone_stream://%(1000,4000,425)
          recall_transferor: false
          recall_timeout: 15
          routes:
            - {pattern: '1\\d{3}'}
            - {pattern: '0(\\d+)', kind: gateway, gateway: upstream, strip: 1, prefix: "+33"}
            - {pattern: '9', kind: flow, flow: sales}
        """)
    assert site.transfer == TransferOptions(
        enabled=False,
        codes={**DEFAULT_CODES, "blind": "#1", "attended": "#2", "three_way": "*9"},
        digit_timeout=2.5, ring_timeout=25.0, music="local_stream://moh",
        ringback="tone_stream://%(1000,4000,425)", recall_transferor=False, recall_timeout=15.0,
        routes=(TransferRoute(r"1\d{3}"), TransferRoute(r"0(\d+)", "gateway", gateway="upstream", strip=1, prefix="+33"),
                TransferRoute("9", "flow", flow="sales")),
    )
    assert TransferOptions().ringback == RINGBACK


@pytest.mark.parametrize(("transfer", "message"), [
    ("transfer: {enable: true}\n",
     "site.yaml:10:12: unknown key 'enable' in transfer; did you mean 'enabled'?"),
    ("transfer: {codes: {blind: '1'}}\n",
     "site.yaml:10:27: transfer code 'blind' is '1': a code is DTMF keys 0-9 * # starting with '*' or '#' "
     "(at most 8; quote it: # starts a YAML comment)"),
    ("transfer: {codes: {blind: 11}}\n",
     "site.yaml:10:27: transfer code 'blind' must be a string (quote it), not int 11"),
    ("transfer: {codes: {attended: '*1'}}\n",
     "site.yaml:10:30: transfer codes blind '*1' and attended '*1' are the same: blind, attended are typed at "
     "the same time of a call"),
    ("transfer: {codes: {blind: '*22'}}\n",
     "site.yaml:10:27: transfer codes blind '*22' and attended '*2' overlap (one starts the other)"),
    ("transfer: {codes: {complete: '*3'}}\n",
     "site.yaml:10:30: transfer codes complete '*3' and three_way '*3' are the same: cancel, complete, three_way "
     "are typed at the same time of a call"),
    ("transfer: {codes: {transfer: '*4'}}\n",
     "site.yaml:10:20: unknown key 'transfer' in transfer codes; expected one of: blind, attended, cancel, "
     "complete, three_way"),
    ("transfer: {digit_timeout: 0}\n",
     "site.yaml:10:27: transfer digit_timeout must be a number of seconds between 0.5 and 30, not int 0"),
    ("transfer: {ring_timeout: soon}\n",
     "site.yaml:10:26: transfer ring_timeout must be a number of seconds between 1 and 600, not str 'soon'"),
    ("transfer: {recall_transferor: yes please}\n",
     "site.yaml:10:31: transfer recall_transferor must be true or false, not str 'yes please'"),
    ("transfer: {routes: []}\n",
     "site.yaml:10:20: transfer routes must list at least one route (or leave 'routes' out)"),
    ("transfer: {routes: [{pattern: '1(\\d'}]}\n",
     "site.yaml:10:31: transfer route 1: invalid regex '1(\\d': missing ), unterminated subpattern at position 1"),
    ("transfer: {routes: [{kind: phone}]}\n",
     "site.yaml:10:21: transfer route 1 needs 'pattern'"),
    ("transfer: {routes: [{pattern: '1', kind: trunk}]}\n",
     "site.yaml:10:42: transfer route 1 kind 'trunk' must be phone, gateway or flow"),
    ("transfer: {routes: [{pattern: '1', kind: gateway, gateway: upstrem}]}\n",
     "site.yaml:10:60: transfer route 1 names unknown gateway 'upstrem' (did you mean 'upstream'?)"),
    ("transfer: {routes: [{pattern: '1', kind: gateway}]}\n",
     "site.yaml:10:21: transfer route 1 (kind gateway) needs 'gateway'"),
    ("transfer: {routes: [{pattern: '1', kind: flow, flow: salse}]}\n",
     "site.yaml:10:54: transfer route 1 names unknown flow 'salse' (did you mean 'sales'?)"),
    ("transfer: {routes: [{pattern: '1', kind: flow, flow: support}]}\n",
     "site.yaml:10:54: transfer route 1 names unknown flow 'support' (flows: sales)"),
    ("transfer: {routes: [{pattern: '1', flow: sales}]}\n",
     "site.yaml:10:36: transfer route 1: 'flow' only applies to kind flow (this route is kind phone)"),
    ("transfer: {routes: [{pattern: '1', kind: flow, flow: sales, strip: 1}]}\n",
     "site.yaml:10:61: transfer route 1: 'strip' does not apply to kind flow (no number is dialled)"),
    ("transfer: {routes: [{pattern: '1', strip: 99}]}\n",
     "site.yaml:10:43: transfer route 1 strip must be between 0 and 15, not 99"),
    ("transfer: {routes: [{pattern: '1', prefix: 0033}]}\n",
     "site.yaml:10:44: transfer route 1 prefix must be a quoted string (\"27\"): YAML reads 0100 as 64"),
    ("transfer: {routes: [{pattern: '1', prefix: 'x1'}]}\n",
     "site.yaml:10:44: transfer route 1 prefix 'x1' must be digits (an optional leading '+')"),
    ("transfer: [on]\n",
     "site.yaml:10:11: transfer must be a mapping"),
])
def test_errors_point_at_the_value(tmp_path, transfer, message):
    assert error_of(tmp_path, transfer).startswith(message)
