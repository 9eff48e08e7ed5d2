"""pytest helpers for tests against a real Asterisk 22 (see docs/ASTERISK.md).

Use in a test module:

    from tests.asterisk_fixture import AsteriskEnv, asterisk, run_sipp  # noqa: F401

    @pytest.mark.slow
    async def test_something(asterisk: AsteriskEnv) -> None: ...

The session-scoped ``asterisk`` fixture runs ``tools/asterisk-setup.sh setup`` (a warm chroot makes
that a fraction of a second) and ``start``, waits until ARI answers ``GET /ari/asterisk/info`` and
yields an :class:`AsteriskEnv`. It stops Asterisk at the end of the session only if this session
started it. Any failure of the script, an unreachable Debian archive included (exit code 3), makes
the fixture FAIL with the script's own message: a missing real switch is never a silent skip.

Ports, credentials and the base directory follow the script's environment variables
(``SWITCHCTL_ARI_PORT``, ``SWITCHCTL_ARI_USER``, ``SWITCHCTL_ASTERISK_ROOT``, ...).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchctl import democall

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "tools" / "asterisk-setup.sh"
SIPP_DIR = Path(__file__).resolve().parent / "sipp"

# exit code of tools/asterisk-setup.sh when the Debian archive cannot be reached
EXIT_ARCHIVE_UNREACHABLE = 3

SETUP_TIMEOUT_S = 600.0   # a cold setup downloads ~100 MB; ~45 s on a good link
START_TIMEOUT_S = 60.0
ARI_WAIT_S = 30.0


class AsteriskSetupError(RuntimeError):
    """tools/asterisk-setup.sh failed; the message is the script's own last error line."""

    def __init__(self, command: str, returncode: int, message: str) -> None:
        self.command = command
        self.returncode = returncode
        self.archive_unreachable = returncode == EXIT_ARCHIVE_UNREACHABLE
        kind = "environment failure: " if self.archive_unreachable else ""
        super().__init__(f"tools/asterisk-setup.sh {command} failed (exit {returncode}): {kind}{message}")


@dataclass(frozen=True)
class AsteriskEnv:
    """How to reach the running Asterisk (everything is on 127.0.0.1)."""

    base_dir: Path
    version: str          # e.g. "22.10.1+dfsg+~cs6.17.60671434-1"
    ari_port: int
    ari_user: str
    ari_password: str
    app: str              # the Stasis application every dialled number enters
    sip_port: int         # Asterisk's PJSIP UDP transport
    sipp_port: int        # where Asterisk sends calls for endpoint 'sipp' (a sipp UAS)
    host: str = "127.0.0.1"

    @property
    def ari_url(self) -> str:
        return f"http://{self.host}:{self.ari_port}/ari"

    def ws_url(self, app: str | None = None) -> str:
        """The ARI events WebSocket for ``app`` (default: the configured one); send basic auth."""
        return f"ws://{self.host}:{self.ari_port}/ari/events?app={app or self.app}"

    @property
    def basic_auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.ari_user}:{self.ari_password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) and return its output."""
        return _run_script(["cli", command], timeout=timeout).stdout


def _script_env() -> dict[str, str]:
    return dict(os.environ)


def _last_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    return lines[-1] if lines else "(no message)"


def _run_script(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = " ".join(args)
    try:
        proc = subprocess.run(
            ["bash", str(SETUP_SCRIPT), *args],
            capture_output=True, text=True, timeout=timeout, env=_script_env(), check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AsteriskSetupError(command, -1, f"did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise AsteriskSetupError(command, proc.returncode, _last_error_line(proc.stderr))
    return proc


def ari_get(env: AsteriskEnv, path: str, timeout: float = 5.0) -> object:
    """Blocking GET of ``/ari/<path>`` returning the decoded JSON (for fixtures and setup code)."""
    req = urllib.request.Request(f"{env.ari_url}/{path.lstrip('/')}", headers=env.basic_auth_header)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_for_ari(env: AsteriskEnv, timeout: float = ARI_WAIT_S) -> dict[str, object]:
    """Poll ``GET /ari/asterisk/info`` until it answers 200; return its body."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        try:
            info = ari_get(env, "asterisk/info", timeout=2.0)
            if isinstance(info, dict):
                return info
            last_error = f"unexpected body {info!r}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise AsteriskSetupError("start", -1, f"ARI {env.ari_url}/asterisk/info did not answer in {timeout:.0f} s: {last_error}")


def env_from_environment(version: str = "") -> AsteriskEnv:
    """The AsteriskEnv the script's environment variables describe (same defaults as the script)."""
    e = os.environ
    return AsteriskEnv(
        base_dir=Path(e.get("SWITCHCTL_ASTERISK_ROOT", "/var/lib/switchctl/asterisk")),
        version=version,
        ari_port=int(e.get("SWITCHCTL_ARI_PORT", "8088")),
        ari_user=e.get("SWITCHCTL_ARI_USER", "switchctl"),
        ari_password=e.get("SWITCHCTL_ARI_PASSWORD", "switchctl"),
        app=e.get("SWITCHCTL_STASIS_APP", "switchctl"),
        sip_port=int(e.get("SWITCHCTL_SIP_PORT", "5060")),
        sipp_port=int(e.get("SWITCHCTL_SIPP_PORT", "5080")),
    )


def _is_running() -> bool:
    proc = subprocess.run(["bash", str(SETUP_SCRIPT), "status"], capture_output=True, text=True,
                          timeout=15, env=_script_env(), check=False)
    return proc.returncode == 0


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskEnv]:
    """A running real Asterisk 22 on loopback, for the whole session (fails, never skips)."""
    try:
        _run_script(["setup"], timeout=SETUP_TIMEOUT_S)
        already_running = _is_running()
        if not already_running:
            _run_script(["start"], timeout=START_TIMEOUT_S)
        env = env_from_environment()
        info = wait_for_ari(env)
    except AsteriskSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    system = info.get("system")
    version = system.get("version", "") if isinstance(system, dict) else ""
    env = env_from_environment(version=str(version))
    try:
        yield env
    finally:
        if not already_running:
            _run_script(["stop"], timeout=30)


# ------------------------------------------------------------------------------------------ sipp

def free_udp_port(even: bool = False, span: int = 1) -> int:
    """A UDP port on 127.0.0.1 that is free now, with ``span`` free ports from it (RTP needs 2-4)."""
    return democall.free_udp_port(even=even, span=span)


def sipp_command(env: AsteriskEnv, scenario: Path, service: str, *, calls: int = 1,
                 timeout_s: int = 30) -> list[str]:
    """A bounded, loopback-only sipp UAC command calling ``service`` at Asterisk."""
    sip_port = free_udp_port()
    media_port = free_udp_port(even=True, span=4)
    control_port = free_udp_port()
    return [
        "sipp", "-sf", str(scenario), "-s", service,
        "-i", env.host, "-p", str(sip_port),
        "-mi", env.host, "-mp", str(media_port),
        "-ci", env.host, "-cp", str(control_port),
        "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error",
        "-nostdin",
        f"{env.host}:{env.sip_port}",
    ]


@dataclass(frozen=True)
class SippResult:
    returncode: int
    stdout: str
    stderr: str


async def run_sipp(env: AsteriskEnv, scenario: Path, service: str, *, calls: int = 1,
                   timeout_s: int = 30) -> SippResult:
    """Run sipp to completion (killed after ``timeout_s`` + 5 s); returncode 0 = every call passed."""
    cmd = sipp_command(env, scenario, service, calls=calls, timeout_s=timeout_s)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s + 5)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        # A test that failed before awaiting its caller: reap sipp now, or its pipes outlive the
        # event loop and their __del__ fails some later, unrelated test.
        proc.kill()
        await asyncio.shield(proc.communicate())
        raise
    assert proc.returncode is not None
    return SippResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
