"""A private PostgreSQL cluster for the tests, and a store fixture over SQLite and PostgreSQL.

No root and no system service: ``initdb`` + ``pg_ctl`` in a temp dir, listening only on a unix
socket there, once per test session. ``initdb`` refuses to run as root; when the tests run as
root (CI does), the cluster runs as the ``postgres`` user (the Debian package creates it) or
``nobody``. Where the server binaries are missing, the PostgreSQL cases skip with the reason
(``.ci/run`` installs them).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from gateway.cloud.store import CloudStore, SQLiteCloudStore

_counter = itertools.count(1)


def server_bindir() -> str | None:
    """Where ``initdb``/``pg_ctl`` are: $GATEWAY_PG_BINDIR, Debian's newest version, or PATH."""
    env = os.environ.get("GATEWAY_PG_BINDIR")
    candidates = [env] if env else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(os.path.dirname(found))
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(
            os.path.join(d, "pg_ctl"), os.X_OK
        ):
            return d
    return None


@dataclass
class PgCluster:
    """One running cluster: ``dsn(db)`` for a database on it, ``restart()`` for fault tests."""

    bindir: str
    root: Path
    fsync: bool = False
    user: tuple[int, int] | None = None  # (uid, gid) to run the server as, when we are root
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "server.log"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self.user is not None:
            kw = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        return subprocess.run(
            [os.path.join(self.bindir, args[0]), *args[1:]],
            capture_output=True, text=True, timeout=timeout, check=False, cwd="/", **kw,
        )  # fmt: skip

    def init(self) -> None:
        self.sock.mkdir()
        if self.user is not None:
            for p in (self.root, self.sock):
                os.chown(p, *self.user)
            os.chmod(self.root, 0o755)
        r = self._run("initdb", "-D", str(self.data), "-U", "gateway", "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()}")
        self.start()

    def start(self) -> None:
        opts = (
            f"-k {self.sock} -c listen_addresses='' -c fsync={'on' if self.fsync else 'off'} "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                      "-o", opts, "start")  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def dsn(self, db: str = "postgres") -> str:
        """A ``postgresql://`` URL (what ``gateway cloud --db`` takes) for database ``db``."""
        return f"postgresql://gateway@/{db}?host={quote(str(self.sock), safe='')}"

    def create_db(self, hint: str = "t") -> str:
        import psycopg

        name = f"{re.sub(r'[^a-z0-9]', '_', hint.lower())[:40]}_{next(_counter)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.dsn(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _server_user() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return (pw.pw_uid, pw.pw_gid)
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


@contextlib.contextmanager
def private_cluster(fsync: bool = False) -> Iterator[PgCluster]:
    """A new cluster for the duration of the block (tests, the chaos run, the bench)."""
    bindir = server_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    # /tmp itself, not pytest's 0700 tmp_path: the server user must reach the socket dir.
    root = Path(tempfile.mkdtemp(prefix="gw-pg-", dir="/tmp"))
    cluster = PgCluster(bindir, root, fsync=fsync, user=_server_user())
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster; skips (with the reason) where the server is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (requirements-dev.txt pins it)")
    if server_bindir() is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
            "(.ci/run does), or set GATEWAY_PG_BINDIR"
        )
    with private_cluster() as cluster:
        yield cluster


@dataclass
class StoreMaker:
    """Makes the test's cloud stores: ``make("c.db")`` twice opens the same store again."""

    kind: str
    tmp_path: Path
    cluster: PgCluster | None
    _dsns: dict[str, str] = field(default_factory=dict)

    def location(self, name: str = "cloud.db") -> str:
        """The ``--db`` argument for this store (a file path or a PostgreSQL dsn)."""
        if self.cluster is None:
            return str(self.tmp_path / name)
        if name not in self._dsns:
            self._dsns[name] = self.cluster.create_db(Path(name).stem)
        return self._dsns[name]

    def __call__(self, name: str = "cloud.db", **kw: Any) -> CloudStore:
        if self.cluster is None:
            return SQLiteCloudStore(self.tmp_path / name, **kw)
        from gateway.cloud.store_pg import PostgresCloudStore

        return PostgresCloudStore(self.location(name), **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreMaker:
    """Parametrises a test over both stores (the PostgreSQL case skips where it cannot run)."""
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    return StoreMaker(request.param, tmp_path, cluster)


StoreFactory = Callable[..., CloudStore]
