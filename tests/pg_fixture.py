"""A throwaway PostgreSQL cluster for the store/ledger tests.

`initdb` into a fresh temporary directory, `pg_ctl start` listening on 127.0.0.1 and a free port
only (unix socket inside that directory), trust authentication for a `switchctl` superuser. One
cluster per test session (started on first use, stopped at exit); each test gets a new database.
Debian's server binaries live in /usr/lib/postgresql/<version>/bin (package `postgresql`): when
they are missing this installs nothing and fails, naming the package. PostgreSQL refuses to run as
root, so under root the server runs as the `postgres` system user (created by that package).
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchctl.store import Store

PG_PACKAGE = "postgresql"
USER = "switchctl"
START_TIMEOUT_S = 30


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin(root: Path = Path("/usr/lib/postgresql"), search_path: str | None = None) -> Path:
    """The newest <root>/<ver>/bin holding initdb and pg_ctl (or initdb on PATH)."""
    candidates = sorted(
        root.glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb", path=search_path)
    if on_path:
        candidates.append(Path(on_path))
    for initdb in candidates:
        if (initdb.parent / "pg_ctl").exists():
            return initdb.parent
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {root}/*/bin or on "
        f"PATH: install the Debian package '{PG_PACKAGE}' (apt-get install -y {PG_PACKAGE}); "
        "`make setup` does it"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    bin_dir: Path
    root: Path
    port: int
    as_user: str | None  # run the server as this user (we are root), else as ourselves

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S,
                              check=False) if not check else _checked(cmd)

    def start(self, *, durable: bool = False) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", USER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C")
        # Listen on loopback only; fsync off unless durable (test data is thrown away).
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                   f"-c unix_socket_directories={self.root}", "-c max_connections=60"]
        if not durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(self.data_dir),
                  "-l", str(self.root / "server.log"), "-o", " ".join(options))

    def restart(self) -> None:
        """Restart the server (same options): every open client connection is dropped."""
        self._run("pg_ctl", "restart", "-m", "fast", "-w", "-t", str(START_TIMEOUT_S),
                  "-D", str(self.data_dir), "-l", str(self.root / "server.log"))

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data_dir), check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-q", "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)


def _checked(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{' '.join(cmd)} failed ({done.returncode}): "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def start_cluster(*, durable: bool = False) -> PgCluster:
    bin_dir = find_pg_bin()
    as_user = None
    root = Path(tempfile.mkdtemp(prefix="switchctl-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(
                "running as root and there is no 'postgres' user to run the server as (PostgreSQL "
                f"refuses root); install the Debian package '{PG_PACKAGE}'") from None
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = "postgres"
    cluster = PgCluster(bin_dir, root, _free_port(), as_user)
    try:
        cluster.start(durable=durable)
    except BaseException:
        cluster.stop()
        raise
    return cluster


_shared: PgCluster | None = None
_db_names = itertools.count(1)


def shared_cluster() -> PgCluster:
    """The session's cluster, started on first use and stopped when the interpreter exits."""
    global _shared
    if _shared is None:
        try:
            _shared = start_cluster()
        except PostgresUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        atexit.register(_shared.stop)
    return _shared


def fresh_pg_url() -> str:
    """A new empty database on the session's cluster."""
    cluster = shared_cluster()
    return cluster.create_database(f"t{os.getpid()}_{next(_db_names)}")


BACKENDS = ("sqlite", "postgresql")


@asynccontextmanager
async def store_on(backend: str, tmp_path: Path, **options: object) -> AsyncIterator[Store]:
    """A new, empty store with its schema: a SQLite file in `tmp_path`, or a new database on the
    session's PostgreSQL cluster."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / f'store{next(_db_names)}.db'}"
    elif backend == "postgresql":
        url = fresh_pg_url()
    else:
        raise ValueError(f"unknown backend {backend}")
    store = Store.open(url, **options)  # type: ignore[arg-type]
    try:
        await store.create_all()
        yield store
    finally:
        await store.close()


class FakeClock:
    """Epoch µs that only move when told (entries get distinct, increasing times)."""

    def __init__(self, start_us: int = 1_700_000_000_000_000) -> None:
        self.now = start_us

    def __call__(self) -> int:
        self.now += 1
        return self.now

    def advance(self, us: int) -> None:
        self.now += us
