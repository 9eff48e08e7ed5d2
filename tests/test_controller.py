"""The controller as ops run it: several switches, a dead one, SIGTERM, deploy over ESL, flow test."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchctl import cli
from switchctl.config.site import load_site
from switchctl.controller import Controller
from switchctl.flowtest import sim_routes
from switchctl.render import render_freeswitch
from switchctl.render.deploy import DeployError, deploy
from switchctl.render.eslreload import freeswitch_reloader
from switchctl.sim import FreeSwitchSim, SimConfig
from switchctl.sitecheck import check_site
from tests.ivr_cases import EXAMPLE_BOOTH_SITE_LINES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "phonebar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site(tmp_path: Path, switches: list[dict]) -> Path:
    """The example site with its own switches (ports chosen by the test)."""
    lines = ["site: testsite", "switches:"]
    for sw in switches:
        lines += [
            f"  - name: {sw['name']}",
            "    kind: freeswitch",
            f"    esl: {{host: 127.0.0.1, port: {sw['esl']}, password: ClueCon}}",
            f"    outbound: {{host: 127.0.0.1, port: {sw['outbound']}}}",
            f"    sip: {{ip: 127.0.0.1, port: {sw['sip']}}}",
            f"    conf_dir: {tmp_path / ('conf-' + sw['name'])}",
        ]
    lines += [
        f"flows: {EXAMPLE / 'dialplans'}",
        f"sounds: [{EXAMPLE / 'sounds'}]",
        "phones:",
        '  - {extension: "1000", name: Operator, password: op-1000}',
        '  - {range: "1001-1010", name: "Booth {n}", booth: true, password: "booth-{extension}"}',
        "values:",
        '  operator: "1000"',
        *EXAMPLE_BOOTH_SITE_LINES,  # the example's booth flow: its gateway and number plan
    ]
    path = tmp_path / "site.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_dead_switch_is_retried_quietly_while_another_serves_calls(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="switchctl")
    live = {"name": "fs1", "esl": free_port(), "outbound": free_port(), "sip": free_port()}
    dead = {"name": "fs2", "esl": free_port(), "outbound": free_port(), "sip": free_port()}
    site = load_site(write_site(tmp_path, [live, dead]))
    flows = check_site(site).flows
    sim = FreeSwitchSim(SimConfig(esl_port=live["esl"], media_speed=100.0,
                                  dialplan=sim_routes(site, flows, f"127.0.0.1:{live['outbound']}")))
    await sim.start()
    controller = Controller(site, flows)
    await controller.start()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(sim.place_call("9000", script=[]).done for _ in range(5)))
        assert all(r.hangup_cause == "NORMAL_CLEARING" for r in results)
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))  # several reconnect attempts
        assert controller.clients["fs1"].connected
        assert not controller.clients["fs2"].connected
        about_fs2 = [r for r in caplog.records if r.levelno >= logging.INFO
                     and "fs2" in (getattr(r, "switch", ""), getattr(r, "esl_conn", ""), getattr(r, "client", ""))
                     or (r.levelno >= logging.INFO and "fs2" in r.getMessage())]
        assert 1 <= len(about_fs2) <= 2, [r.getMessage() for r in about_fs2]
        assert controller.stats.calls_finished == 5 and controller.stats.calls_failed == 0
    finally:
        await controller.stop(grace=1.0)
        await sim.close()


def test_sigterm_stops_the_controller_cleanly(tmp_path):
    ports = {"name": "fs1", "esl": free_port(), "outbound": free_port(), "sip": free_port()}
    site = write_site(tmp_path, [ports])
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchctl.cli", "run", "-c", str(site), "--simulator", "--grace", "1",
         "--sim-media-speed", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        seen = ""
        while "controller running" not in seen:
            assert time.monotonic() < deadline, seen
            line = proc.stdout.readline()
            assert line, f"controller exited early: {seen}"
            seen += line
        # a call through the running controller, placed the way `make call` does
        call = subprocess.run([sys.executable, "-m", "switchctl.cli", "call", "-c", str(site), "9000",
                               "--press", "2", "--press", "hangup"],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert call.returncode == 0, call.stdout + call.stderr
        assert "say en number iterated 1001" in call.stdout and "hangup: NORMAL_CLEARING" in call.stdout
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        seen += out
        assert proc.returncode == 0, seen
        assert "stopped" in seen
        assert "Traceback" not in seen
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_deploy_over_esl_installs_reloads_and_rolls_back(tmp_path):
    esl = free_port()
    conf = tmp_path / "conf-fs1"
    site_path = write_site(tmp_path, [{"name": "fs1", "esl": esl, "outbound": free_port(), "sip": free_port()}])
    site = load_site(site_path)
    sim = FreeSwitchSim(SimConfig(esl_port=esl, conf_dir=conf))
    await sim.start()
    try:
        reload = freeswitch_reloader("127.0.0.1", esl, "ClueCon")
        files = render_freeswitch(site)
        result = await deploy(files, conf, reload)
        assert result.changed and "[Success]" in result.reply
        assert (conf / "autoload_configs" / "event_socket.conf.xml").read_bytes() == \
            files["autoload_configs/event_socket.conf.xml"]
        assert not (await deploy(files, conf, reload)).changed  # nothing changed

        broken = dict(files)
        broken["dialplan/default/00_switchctl.xml"] = b"<include><context name='default'></include>\n"
        with pytest.raises(DeployError) as err:
            await deploy(broken, conf, reload)
        assert "error near line" in str(err.value) or "error near line" in err.value.reply
        # the previous, accepted tree is back
        assert (conf / "dialplan" / "default" / "00_switchctl.xml").read_bytes() == \
            files["dialplan/default/00_switchctl.xml"]
    finally:
        await sim.close()


async def test_deploy_to_a_dead_switch_restores(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "old.xml").write_text("<include/>\n")
    reload = freeswitch_reloader("127.0.0.1", free_port(), "ClueCon")
    with pytest.raises(DeployError):
        await deploy({"new.xml": b"<include/>\n"}, conf, reload)
    assert (conf / "old.xml").exists() and not (conf / "new.xml").exists()


def test_cli_flow_test_prints_path_and_commands(capsys):
    code = cli.main(["flow", "test", "-c", str(EXAMPLE / "site.yaml"), "--dial", "9000",
                     "--press", "1", "--press", "9", "--press", "hangup"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "main:main_menu -> 1" in out and "main:rates_menu -> 9" in out
    assert "execute play_and_get_digits" in out and "execute answer" in out


def test_cli_check_reports_file_line_column(tmp_path, capsys):
    flows = tmp_path / "dialplans"
    flows.mkdir()
    (flows / "bad.yaml").write_text("flow: bad\nnumbers: ['1']\nnodes:\n  a: {type: answr}\n")
    site = tmp_path / "site.yaml"
    site.write_text(write_site(tmp_path, [{"name": "fs1", "esl": 1, "outbound": 2, "sip": 3}])
                    .read_text().replace(str(EXAMPLE / "dialplans"), str(flows)))
    code = cli.main(["check", "-c", str(site)])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.yaml:4:" in err and "answr" in err


async def test_status_and_calls_commands(tmp_path):
    esl = free_port()
    site = write_site(tmp_path, [{"name": "fs1", "esl": esl, "outbound": free_port(), "sip": free_port()}])
    sim = FreeSwitchSim(SimConfig(esl_port=esl))
    await sim.start()
    try:
        status = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "switchctl.cli", "status", "-c", str(site)],
            capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "fs1 (127.0.0.1:%d): up" % esl in status.stdout and "UP" in status.stdout
        calls = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "switchctl.cli", "calls", "-c", str(site)],
            capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert calls.returncode == 0 and "fs1: 0 channel(s)" in calls.stdout, calls.stdout + calls.stderr
    finally:
        await sim.close()
    down = subprocess.run([sys.executable, "-m", "switchctl.cli", "status", "-c", str(site)],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert down.returncode == 1 and "DOWN" in down.stdout


def test_account_create_topup_show_from_the_cli(tmp_path, capsys):
    site = write_site(tmp_path, [{"name": "fs1", "esl": 1, "outbound": 2, "sip": 3}])
    site.write_text(site.read_text() + f"database: sqlite+aiosqlite:///{tmp_path / 'store.db'}\n")
    assert cli.main(["account", "create", "-c", str(site), "booth7", "--kind", "booth"]) == 0
    assert cli.main(["account", "topup", "-c", str(site), "booth7", "10.50", "--key", "k1"]) == 0
    assert cli.main(["account", "topup", "-c", str(site), "booth7", "10.50", "--key", "k1"]) == 0  # replay
    capsys.readouterr()
    assert cli.main(["account", "show", "-c", str(site), "booth7"]) == 0
    assert "balance 10.50, held 0.00, available 10.50 EUR" in capsys.readouterr().out
    assert cli.main(["account", "topup", "-c", str(site), "booth7", "1.2.3"]) == 1
    assert "not a decimal amount" in capsys.readouterr().err
