"""The project's real-Asterisk environment: tools/asterisk-setup.sh and the ``asterisk`` fixture.

The ``slow`` tests need root and a Debian archive on the first run (a cold setup takes ~45 s; a
warm one well under a second). Without the archive they fail with the script's message.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.asterisk_fixture import (  # noqa: F401  (asterisk is a fixture)
    EXIT_ARCHIVE_UNREACHABLE,
    SETUP_SCRIPT,
    SIPP_DIR,
    AsteriskEnv,
    asterisk,
    run_sipp,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tools/asterisk-setup.sh needs root")


def _script(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SETUP_SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


# ------------------------------------------------------------------------------------------ script, fast

def test_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SETUP_SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_unknown_command_prints_usage_and_exits_2() -> None:
    proc = _script("frobnicate")
    assert proc.returncode == 2
    assert "Commands:" in proc.stderr and "setup" in proc.stderr


@needs_root
def test_unreachable_archive_is_exit_3_with_one_clear_line(tmp_path: Path) -> None:
    # a fresh base directory needs the archive; port 9 on loopback refuses at once
    mirror = "http://127.0.0.1:9/debian"
    proc = _script("setup", env={"SWITCHCTL_ASTERISK_ROOT": str(tmp_path / "ast"),
                                 "SWITCHCTL_DEBIAN_MIRROR": mirror})
    assert proc.returncode == EXIT_ARCHIVE_UNREACHABLE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"Debian archive {mirror} (suite sid) is unreachable" in lines[0]
    assert not (tmp_path / "ast" / "root").exists()


@needs_root
def test_refuses_a_system_directory_as_base() -> None:
    proc = _script("setup", env={"SWITCHCTL_ASTERISK_ROOT": "/var"})
    assert proc.returncode == 2
    assert "refusing SWITCHCTL_ASTERISK_ROOT=/var" in proc.stderr


# ------------------------------------------------------------------------------------------ real Asterisk

@pytest.mark.slow
def test_ari_answers_with_asterisk_22(asterisk: AsteriskEnv) -> None:
    assert asterisk.version.startswith("22."), asterisk.version
    status = _script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ARI http://127.0.0.1:8088/ari answers" in status.stdout or str(asterisk.ari_port) in status.stdout


@pytest.mark.slow
def test_modules_switchctl_needs_are_running(asterisk: AsteriskEnv) -> None:
    out = asterisk.cli("module show like res_")
    for module in ("res_ari.so", "res_stasis.so", "res_websocket_client.so", "res_pjsip.so"):
        assert module in out, f"{module} not loaded:\n{out}"
    funcs = asterisk.cli("module show like func_timeout")
    assert "func_timeout.so" in funcs and "Running" in funcs


@pytest.mark.slow
def test_second_setup_reuses_the_chroot_in_seconds(asterisk: AsteriskEnv) -> None:
    marker = asterisk.base_dir / "root" / ".switchctl-debootstrap-ok"
    before = marker.stat().st_mtime_ns
    t0 = time.monotonic()
    proc = _script("setup")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 10, f"warm setup took {elapsed:.1f} s"
    assert marker.stat().st_mtime_ns == before
    assert "debootstrap" not in proc.stderr and "apt-get" not in proc.stderr
    # setup on a running Asterisk leaves it running
    assert _script("status").returncode == 0


@pytest.mark.slow
def test_config_dir_goes_over_the_default_and_default_comes_back(asterisk: AsteriskEnv, tmp_path: Path) -> None:
    etc = asterisk.base_dir / "root" / "etc" / "asterisk"
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    (rendered / "extensions.conf").write_text("; rendered by a test\n[from-loopback]\n")
    try:
        proc = _script("config", str(rendered))
        assert proc.returncode == 0, proc.stderr
        assert (etc / "extensions.conf").read_text() == "; rendered by a test\n[from-loopback]\n"
        assert "bindaddr = 127.0.0.1" in (etc / "http.conf").read_text()  # default kept under it
        # a second setup keeps a rendered config
        assert _script("setup").returncode == 0
        assert (etc / "extensions.conf").read_text().startswith("; rendered by a test")
    finally:
        restore = _script("config")
    assert restore.returncode == 0, restore.stderr
    assert f"Stasis({asterisk.app},inbound" in (etc / "extensions.conf").read_text()
    assert _script("config", str(tmp_path / "missing")).returncode == 2


class _EventLog:
    """Every ARI event of one WebSocket, kept in arrival order, so a wait never drops one."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.events.append(msg.json())
                self._changed.set()

    async def wait_for(self, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event of type ``wanted`` (in arrival order, earlier arrivals included)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if event.get("type") == wanted:
                    return event
            left = deadline - loop.time()
            if left <= 0:
                seen = [e.get("type") for e in self.events]
                raise AssertionError(f"no {wanted} event within {timeout} s; seen: {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=left)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass


@pytest.mark.slow
async def test_sipp_call_reaches_stasis_and_is_answered_and_hung_up_over_ari(asterisk: AsteriskEnv) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=asterisk.basic_auth_header, timeout=timeout) as http:
        async with http.ws_connect(asterisk.ws_url()) as ws:
            events = _EventLog(ws)
            failure: AssertionError | None = None
            sipp = asyncio.create_task(
                run_sipp(asterisk, SIPP_DIR / "uac_stasis_answer_dtmf.xml", "7001", timeout_s=25))
            try:
                start = await events.wait_for("StasisStart")
                assert start["application"] == asterisk.app
                assert start["args"] == ["inbound", "7001"]
                channel = start["channel"]
                assert channel["state"] == "Ring"
                assert channel["dialplan"]["exten"] == "7001"
                chan_id = channel["id"]

                async with http.post(f"{asterisk.ari_url}/channels/{chan_id}/answer") as resp:
                    assert resp.status == 204, await resp.text()
                state = await events.wait_for("ChannelStateChange")
                assert state["channel"]["state"] == "Up"

                # RTP reaches Asterisk over loopback: sipp's RFC 2833 '1' arrives as an ARI event
                dtmf = await events.wait_for("ChannelDtmfReceived")
                assert dtmf["digit"] == "1" and dtmf["channel"]["id"] == chan_id

                async with http.delete(f"{asterisk.ari_url}/channels/{chan_id}") as resp:
                    assert resp.status == 204, await resp.text()
                end = await events.wait_for("StasisEnd")
                assert end["channel"]["id"] == chan_id
            except AssertionError as exc:
                failure = exc
            finally:
                await events.close()
                result = await sipp  # bounded: sipp quits after its -timeout, or is killed
    sipp_report = f"sipp exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    if failure is not None:
        raise AssertionError(f"{failure}\n{sipp_report}") from failure
    assert result.returncode == 0, sipp_report
