"""Fixtures shared by unit and integration tests: the two ledger backends (SQLite, a real PostgreSQL)."""

from __future__ import annotations

import os

import pytest

from tests.postgres import fresh_database, postgres_bindir, temporary_postgres


@pytest.fixture(scope="session")
def postgres_admin_url():
    if postgres_bindir() is None:
        if os.environ.get("SEE_REQUIRE_POSTGRES") == "1":
            pytest.fail("SEE_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries are installed")
        pytest.skip("no PostgreSQL server binaries (Debian package postgresql); .ci/run installs them")
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    """A fresh, empty ledger location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    return fresh_database(request.getfixturevalue("postgres_admin_url"))
