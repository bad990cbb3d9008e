"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary cluster, loopback, trust auth.

`.ci/run` installs Debian's `postgresql` package and sets SEE_REQUIRE_POSTGRES=1, so in CI a missing server
fails the tests; elsewhere they are skipped with the reason. As root the cluster runs as the `postgres` user
(PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from server.launch import free_port


def require_postgres() -> None:
    """Skip the test without PostgreSQL binaries; fail it instead where CI requires them (SEE_REQUIRE_POSTGRES)."""
    import pytest

    if postgres_bindir() is None:
        if os.environ.get("SEE_REQUIRE_POSTGRES") == "1":
            pytest.fail("SEE_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries are installed")
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql); .ci/run installs them")


def postgres_bindir() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(candidates[-1]) if candidates else None


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresCluster:
    """A temporary cluster that a test can stop (immediate: a crash to clients) and start again on its port."""

    def __init__(self, bindir: str, root: str, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.data = os.path.join(root, "data")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        log = os.path.join(self.root, "server.log")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=on"
        subprocess.run(
            _as_server_user([f"{self.bindir}/pg_ctl", "-D", self.data, "-l", log, "-o", options, "-w", "-t", "60",
                             "start"]),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            _as_server_user([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """Initialise and start a cluster; stop and delete it when the block ends."""
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb); install Debian's postgresql package")
    root = tempfile.mkdtemp(prefix="see-pg-")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    cluster = PostgresCluster(bindir, root, free_port())
    subprocess.run(
        _as_server_user([f"{bindir}/initdb", "-D", cluster.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def temporary_postgres() -> Iterator[str]:
    """Start a cluster, yield its admin URL (postgresql://postgres@127.0.0.1:PORT/postgres), stop and delete it."""
    with postgres_cluster() as cluster:
        yield cluster.url


def fresh_database(admin_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    import psycopg

    name = f"see_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
