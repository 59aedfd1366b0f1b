"""A throw-away PostgreSQL database on the machine's server, one per test.

The server is the machine's own PostgreSQL (Debian package ``postgresql``), reached at
``HEMS_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust
authentication). Each test gets a database with a unique name, dropped afterwards. Outside CI a
test that cannot reach the server is skipped, naming the package; under CI it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

ADMIN_URL = os.environ.get("HEMS_TEST_POSTGRES",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(message: str) -> None:
    message = (f"{message}: install and start PostgreSQL (`apt-get install postgresql`) or set "
               "HEMS_TEST_POSTGRES")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def database_url(name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(ADMIN_URL)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


def fresh_database() -> Iterator[str]:
    """URL of a new, empty database; dropped (with its connections) after the test. A test
    module makes it a fixture: ``pg_url = pytest.fixture(fresh_database)``."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (the 'cloud' extra)")
    name = f"hems_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL is not reachable at {ADMIN_URL} ({str(exc).strip()[:120]})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        try:
            yield database_url(name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
