"""A *private* Asterisk for slow tests: same chroot as the shared one, its own everything else.

tools/asterisk-setup.sh builds the chroot (the `asterisk_chroot` fixture makes sure it exists,
without starting the shared Asterisk). A `PrivateAsterisk` gets its own config folder inside the
chroot, its own run/log/spool/lib folders, free loopback ports and its own RTP range, so a test may
deploy broken configurations or SIGKILL it (it is started and stopped by PID here) without ever
disturbing the shared Asterisk on 8088/5060 that other tests use.

    env = create_private_asterisk(chroot, tag="restart", log_dir=tmp, rtp=(13000, 13999))
    env.write_config(render_asterisk(site))   # the caller renders a site with env's ports
    env.start()
    ... env.kill(); env.start() ...             # the same Asterisk again: same ports, same config
    env.stop(); env.remove()
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from switchctl.config.site import AriConfig
from tests.asterisk_fixture import (
    SETUP_TIMEOUT_S,
    AsteriskSetupError,
    _run_script,
    env_from_environment,
    free_udp_port,
)

ARI_USER = "switchctl"
ARI_PASSWORD = "switchctl"
ARI_APP = "switchctl"


def free_port(kind: int) -> int:
    """A port on 127.0.0.1 free now (socket.SOCK_STREAM for TCP, SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def asterisk_chroot() -> Path:
    """The chroot tools/asterisk-setup.sh built (built now if missing); nothing is started."""
    try:
        _run_script(["setup"], timeout=SETUP_TIMEOUT_S)
    except AsteriskSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    return env_from_environment().base_dir / "root"


@dataclass
class PrivateAsterisk:
    root: Path  # the chroot
    etc: str  # config folder inside the chroot
    state: str  # run/log/spool/lib folder inside the chroot
    ari: AriConfig
    sip_port: int
    rtp: tuple[int, int]
    log: Path  # Asterisk's console output (appended across restarts)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def conf_dir(self) -> Path:
        return self.root / self.etc.lstrip("/")

    @property
    def state_dir(self) -> Path:
        return self.root / self.state.lstrip("/")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- configuration ------------------------------------------------------------------------

    def prepare(self) -> None:
        """The chroot's stock files (logger, indications, ...) plus our asterisk.conf and rtp.conf."""
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.copytree(self.root / "etc" / "asterisk", self.conf_dir)
        for sub in ("run", "log/cdr-csv", "log/cdr-custom", "spool/recording", "lib", "cache"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "asterisk.conf").write_text(textwrap.dedent(f"""\
            [directories]
            astcachedir => {self.state}/cache
            astetcdir => {self.etc}
            astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
            astvarlibdir => /var/lib/asterisk
            astdbdir => {self.state}/lib
            astkeydir => {self.state}/lib
            astdatadir => /usr/share/asterisk
            astagidir => /usr/share/asterisk/agi-bin
            astspooldir => {self.state}/spool
            astrundir => {self.state}/run
            astlogdir => {self.state}/log
            astsbindir => /usr/sbin
            [options]
            documentation_language = en_US
            """))
        self.conf_dir.joinpath("rtp.conf").write_text(
            f"[general]\nrtpstart = {self.rtp[0]}\nrtpend = {self.rtp[1]}\nicesupport = no\n")

    def write_config(self, files: Mapping[str, bytes]) -> None:
        """Rendered files (render_asterisk) over the prepared folder."""
        for rel, content in files.items():
            (self.conf_dir / rel).write_bytes(content)

    # -- process --------------------------------------------------------------------------------

    def launch(self) -> None:
        """Start Asterisk in the foreground (its PID is ours: `chroot` execs it); do not wait.
        An asyncio test uses this one, so that nothing blocks its event loop."""
        if self.running:
            raise RuntimeError("the private Asterisk is already running")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{self.etc}/asterisk.conf", "-f", "-n"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1

    def check_alive(self) -> None:
        """Fail the test if Asterisk exited, with the end of its output."""
        if self.proc is None or self.proc.poll() is not None:
            pytest.fail(f"private Asterisk is not running: {self.log.read_text(errors='replace')[-2000:]}")

    def start(self, timeout: float = 30.0) -> None:
        """`launch`, then wait (blocking) until ARI answers."""
        self.launch()
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                self.ari_get("asterisk/info")
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"private Asterisk's ARI did not answer on {self.ari.port} within {timeout:g} s")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no BYE, no WebSocket close frame (a crash)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def remove(self) -> None:
        """Delete the config and state folders (after stop)."""
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        shutil.rmtree(self.conf_dir.parent / ".switchctl-backups", ignore_errors=True)

    # -- talking to it --------------------------------------------------------------------------

    def cli(self, command: str) -> str:
        out = subprocess.run(
            ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", f"{self.etc}/asterisk.conf", "-rx", command],
            capture_output=True, text=True, timeout=15, check=False,
        )
        return out.stdout + out.stderr

    def ari_get(self, path: str) -> object:
        token = base64.b64encode(f"{self.ari.user}:{self.ari.password}".encode()).decode()
        req = urllib.request.Request(f"{self.ari.url}/ari/{path}", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())


def create_private_asterisk(root: Path, *, tag: str, log_dir: Path,
                            rtp: tuple[int, int] = (12000, 12999)) -> PrivateAsterisk:
    """A prepared (not started) private Asterisk with free ARI (TCP) and SIP (UDP) ports."""
    name = f"switchctl-{tag}-{os.getpid()}"
    env = PrivateAsterisk(
        root=root,
        etc=f"/etc/asterisk-{name}",
        state=f"/var/tmp/{name}",
        ari=AriConfig("127.0.0.1", free_port(socket.SOCK_STREAM), ARI_USER, ARI_PASSWORD, ARI_APP),
        sip_port=free_udp_port(),  # never one a sipp of this run got (democall.free_udp_port)
        rtp=rtp,
        log=log_dir / "asterisk.out",
    )
    env.prepare()
    return env


def running_private_asterisk(env: PrivateAsterisk) -> Iterator[PrivateAsterisk]:
    """Start `env`, yield it, then stop and remove it whatever happened (for fixtures)."""
    try:
        env.start()
        yield env
    finally:
        env.stop()
        env.remove()


# -- far ends and readiness for rigs that dial out of a private Asterisk ----------------------------


def start_sipp_uas(scenario: Path, port: int, message_log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A sipp UAS (the far end of a dial) on 127.0.0.1:`port`, its SIP messages traced to
    `message_log`; stop it with `stop_processes`."""
    cmd = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port),
           "-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True, span=4)),
           "-cp", str(free_udp_port()), "-nostdin", *extra, "-trace_msg", "-message_file", str(message_log)]
    # sipp's own complaints (a port it could not bind...) next to the message log: a UAS that
    # "exited at once" says why there.
    with open(message_log.with_name(message_log.name + ".stderr"), "wb") as errors:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errors, start_new_session=True)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate, then kill what did not stop within 5 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_for_pjsip_endpoint(env: PrivateAsterisk, endpoint: str, timeout: float = 15.0) -> None:
    """ARI answers before PJSIP has loaded pjsip.conf: a dial then fails "Allocation failed"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            env.ari_get(f"endpoints/PJSIP/{endpoint}")
            return
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, "PJSIP endpoints did not appear"
            time.sleep(0.1)
