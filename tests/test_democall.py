"""switchctl.democall and `switchctl sipcall`: demo calls with sipp.

Fast tests: the press plan, the RTP/DTMF pcap, the scenario and the reading of sipp's log.
Slow tests (real Asterisk 22 of tests/asterisk_fixture.py, real sipp): the example phone bar's
flows on a PRIVATE copy of the example site (its own site name, so its prompts go to their own
folder under the chroot's sounds, and nothing of the shared Asterisk's config is changed: the
setup script's default dialplan already sends every number into Stasis(switchctl,inbound,<n>),
as the rendered one does). The controller runs in-process and its traces (Controller.on_trace)
say which path the flow took; `place_call` places the call the way `switchctl sipcall` does.
"""

from __future__ import annotations

import asyncio
import re
import struct
import sys
import time
from pathlib import Path

import pytest

from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.democall import (
    DTMF_EVENTS,
    DemoCallError,
    DemoCallResult,
    SipTarget,
    _read_sipp_log,
    format_result,
    place_call,
    plan_presses,
    scenario_text,
    write_dtmf_pcap,
)
from switchctl.flows import FlowTrace
from switchctl.render.asterisk import asterisk_sound_files, sounds_subdir
from switchctl.render.asterisk_reload import files_only_reload
from switchctl.render.deploy import deploy
from switchctl.sitecheck import check_site
from tests.asterisk_fixture import AsteriskEnv, asterisk  # noqa: F401
from tests.ivr_cases import EXAMPLE_BOOTH_SITE_LINES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"
SITE_NAME = "democall"


# ------------------------------------------------------------------------------------------ fast


def test_presses_one_group_every_3_s_digits_apart() -> None:
    plan = plan_presses(["1", "-", "100", "hangup", "5"])
    assert plan.groups == ((3.0, "1"), (6.0, "-"), (9.0, "100"), (12.0, "hangup"))
    assert plan.hangup_after_s == 12.0
    starts, at = [], 0.0
    for delay, digit in plan.steps:
        at += delay
        starts.append((round(at, 3), digit))
    assert starts == [(3.0, "1"), (9.0, "1"), (9.2, "0"), (9.4, "0")]


def test_presses_without_hangup_wait_for_the_switch() -> None:
    plan = plan_presses(["1", "9"])
    assert plan.hangup_after_s is None and len(plan.steps) == 2


@pytest.mark.parametrize("press", ["12x", "0 1", "hang"])
def test_a_bad_press_is_refused_with_its_name(press: str) -> None:
    with pytest.raises(DemoCallError, match=re.escape(repr(press))):
        plan_presses([press])


def _rtp_packets(pcap: bytes) -> list[tuple[float, bytes]]:
    out, offset = [], 24
    while offset < len(pcap):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", pcap, offset)
        frame = pcap[offset + 16: offset + 16 + caplen]
        out.append((sec + usec / 1e6, frame[14 + 20 + 8:]))
        offset += 16 + caplen
    return out


def test_dtmf_pcap_is_one_stream_with_the_digits_at_their_times(tmp_path: Path) -> None:
    length = write_dtmf_pcap(tmp_path / "a.pcap", [(1.0, "4"), (0.2, "4"), (1.0, "#")])
    packets = _rtp_packets((tmp_path / "a.pcap").read_bytes())
    t0 = packets[0][0]
    seqs = [struct.unpack_from(">H", rtp, 2)[0] for _, rtp in packets]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat: one stream
    assert len({rtp[8:12] for _, rtp in packets}) == 1          # one SSRC
    events = [(round(t - t0, 2), rtp[12], rtp[13] & 0x80) for t, rtp in packets if rtp[1] & 0x7F == 101]
    begins = [(round(t - t0, 2), rtp[12]) for t, rtp in packets if rtp[1] == 0x80 | 101]  # marker bit
    assert begins == [(1.0, DTMF_EVENTS["4"]), (1.2, DTMF_EVENTS["4"]), (2.2, DTMF_EVENTS["#"])]
    assert sum(1 for e in events if e[2]) == 9  # each end packet three times
    assert packets[-1][0] - t0 == pytest.approx(length, abs=0.03)


def test_scenario_fills_the_template_and_refuses_odd_callers(tmp_path: Path) -> None:
    text = scenario_text(caller="1001", caller_name="sipcall-ab", pcap=tmp_path / "x.pcap", wait_ms=9000)
    assert "@@" not in text
    assert 'timeout="9000" ontimeout="caller_bye"' in text
    assert f'play_pcap_audio="{tmp_path / "x.pcap"}"' in text
    assert '"sipcall-ab" <sip:1001@' in text and '<recv response="404" optional="true" next="rejected">' in text
    with pytest.raises(DemoCallError, match="caller"):
        scenario_text(caller="10 01", caller_name="x", pcap=None, wait_ms=1)


def test_sipp_log_lines_say_who_hung_up_and_when() -> None:
    r = DemoCallResult("9000", "1001", SipTarget("127.0.0.1", 5060), 0)
    _read_sipp_log(r, "ANSWERED 1200\nBYE_FROM_SWITCH 13700 Reason: Q.850;cause=16\n")
    assert (r.answered, r.hung_up_by, r.talk_s, r.reason) == (True, "switch", 12.5, "Q.850;cause=16")
    r = DemoCallResult("9000", "1001", SipTarget("127.0.0.1", 5060), 0)
    _read_sipp_log(r, "REJECTED 404 50\n")
    assert (r.answered, r.rejected, r.ok) == (False, 404, False)
    assert "not answered: the switch answered SIP 404" in format_result(r)
    r = DemoCallResult("9000", "1001", SipTarget("127.0.0.1", 5999), 0)
    _read_sipp_log(r, "NO_RESPONSE 5003\n")
    assert r.no_response and not r.ok
    assert "nothing came back from 127.0.0.1:5999 within 5 s (is Asterisk running?" in format_result(r)


# ------------------------------------------------------------------------------------------ slow


def _write_site(tmp: Path, env: AsteriskEnv) -> Path:
    sounds = env.base_dir / "root" / "usr" / "share" / "asterisk" / "sounds"
    site = tmp / "site.yaml"
    site.write_text("\n".join([
        f"site: {SITE_NAME}",
        "switches:",
        "  - name: ast1",
        "    kind: asterisk",
        (f"    ari: {{host: 127.0.0.1, port: {env.ari_port}, user: {env.ari_user}, "
         f"password: {env.ari_password}, app: {env.app}}}"),
        f"    sip: {{ip: 127.0.0.1, port: {env.sip_port}}}",
        f"    conf_dir: {tmp / 'conf'}",
        f"    sounds_dir: {sounds}",
        f"flows: {EXAMPLE / 'dialplans'}",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        '  - {range: "1001-1010", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
        "values:",
        '  operator: "1000"',
        *EXAMPLE_BOOTH_SITE_LINES,  # the example's booth flow: its gateway and number plan
    ]) + "\n")
    return site


@pytest.fixture
async def running(asterisk: AsteriskEnv, tmp_path: Path):  # noqa: F811 - the fixture
    """(site file, controller, traces): the private site's prompts deployed, its controller up."""
    site_file = _write_site(tmp_path, asterisk)
    site = load_site(site_file)
    checked = check_site(site)
    assert checked.ok, checked.report()
    sw = site.switches[0]
    assert sw.sounds_dir is not None
    target = sw.sounds_dir / sounds_subdir(site)
    await deploy(asterisk_sound_files(site), target, files_only_reload)  # as `switchctl deploy` does
    assert (target / "welcome.wav").is_file()
    traces: list[tuple[str, FlowTrace | None]] = []
    controller = Controller(site, checked.flows, on_trace=lambda uuid, trace: traces.append((uuid, trace)))
    await controller.start()
    await controller.asterisks["ast1"].wait_connected(10)
    try:
        yield site_file, controller, traces
    finally:
        await controller.stop(grace=2)


@pytest.mark.slow
async def test_sipcall_takes_the_ivr_path_and_reports_it(running) -> None:
    site_file, controller, traces = running
    site = load_site(site_file)
    sw = site.switches[0]
    started = time.monotonic()
    result = await place_call(SipTarget(sw.sip.host, sw.sip.port), "9000", ["1", "9", "hangup"],
                              caller="1001", timeout_s=30, ari=sw.ari)
    report = format_result(result, presses=["1", "9", "hangup"])
    assert result.ok, report
    assert result.hung_up_by == "caller" and result.talk_s == pytest.approx(9.0, abs=0.5), report
    for _ in range(40):  # the controller's trace follows the hangup closely
        if traces:
            break
        await asyncio.sleep(0.05)
    [(channel, trace)] = traces
    assert trace is not None and channel == result.channel
    assert trace.path[:4] == ["answer", "main_menu", "rates_menu", "main_menu"], trace.path
    assert [s[2] for s in trace.steps[:3]] == ["next", "1", "9"]
    assert trace.result == "caller_hangup"
    # what the watcher saw over ARI: the prompts and the digits, in order
    seen = [o.what for o in result.observed]
    assert "DTMF 1 received (100 ms)" in seen and "DTMF 9 received (100 ms)" in seen, report
    prompts = [w.removeprefix("plays ") for w in seen if w.startswith("plays ")]
    assert prompts[:3] == ["welcome", "rates_menu", "welcome"], report
    assert "the caller (sipp) hung up as pressed" in report
    assert controller.stats.active == 0
    assert time.monotonic() - started < 20


@pytest.mark.slow
async def test_sipcall_command_prints_what_happened(running) -> None:
    site_file, _controller, traces = running
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchctl.cli", "sipcall", "-c", str(site_file), "9001", "--timeout", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT)
    out, _ = await asyncio.wait_for(proc.communicate(), 40)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "call 1001 -> 9001 at 127.0.0.1:" in text
    assert "the switch hung up" in text and "plays hours" in text and "plays goodbye" in text, text
    assert "destroyed: Normal Clearing (16)" in text, text
    assert [t.result for _u, t in traces if t is not None] == ["hangup"]


@pytest.mark.slow
async def test_sipcall_to_a_number_no_flow_answers_says_it_was_rejected(running) -> None:
    site_file, _controller, _traces = running
    sw = load_site(site_file).switches[0]
    result = await place_call(SipTarget(sw.sip.host, sw.sip.port), "4321", [], timeout_s=10, ari=sw.ari)
    assert not result.answered and result.rejected == 404, format_result(result)
    assert not result.ok
