"""Fixtures shared by unit and integration tests: the two ledger backends (SQLite, a real PostgreSQL); the test
order that keeps trainers and the session's sidecar apart."""

from __future__ import annotations

import pytest

from tests.postgres import fresh_database, require_postgres, temporary_postgres


def pytest_collection_modifyitems(items):
    """Tests marked `trains` run first. They hold several GB a process (two trainer ranks peak near 8 GB each on
    CPU), and the session-scoped sidecar (vLLM, several GB) lives from its first use to the end of the session:
    on a 24 GB host the two together ran out of memory. The sort is stable: the rest keep their order."""
    items.sort(key=lambda item: item.get_closest_marker("trains") is None)


@pytest.fixture(scope="session")
def postgres_admin_url():
    require_postgres()
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    """A fresh, empty ledger location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.sqlite3")
    return fresh_database(request.getfixturevalue("postgres_admin_url"))
