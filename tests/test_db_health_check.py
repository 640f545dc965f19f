"""The PostgreSQL backend's health check polls the socket instead of sending SELECT 1.

comms_platform.pgbackend replaces Django's ``is_usable`` (a ``SELECT 1`` round trip before
the first query of every request, with CONN_HEALTH_CHECKS) by a poll of the connection's
socket: a healthy idle connection has nothing to read; one the server ended has its FATAL
message waiting. These tests use the test database's own connection and put it back
(a fresh connection) whatever happens.
"""

from __future__ import annotations

import select

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections

from orchestrator.models import Task
from tests.support.services import transactional_db, unavailable

pytestmark = [transactional_db, pytest.mark.services]


@pytest.fixture
def pg_connection():
    """The test database's connection, open, on the socket-polling backend; reopened afterwards."""
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL: the socket-polling health check is PostgreSQL's backend")
    from comms_platform.pgbackend.base import DatabaseWrapper

    wrapper = connections[DEFAULT_DB_ALIAS]
    assert isinstance(wrapper, DatabaseWrapper), type(wrapper)
    wrapper.ensure_connection()
    try:
        yield wrapper
    finally:
        # Whatever the test did to it, leave a working connection for the next tests.
        wrapper.close()
        wrapper.ensure_connection()


def admin_connection() -> psycopg.Connection:
    """A separate connection to the same server, to look at and end the test's backend."""
    s = connection.settings_dict
    return psycopg.connect(host=s.get("HOST") or "127.0.0.1", port=s.get("PORT") or 5432,
                           user=s.get("USER") or "postgres", password=s.get("PASSWORD") or None,
                           dbname=s["NAME"], autocommit=True)  # fmt: skip


def last_query(admin: psycopg.Connection, pid: int) -> str:
    row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert row is not None, f"backend {pid} is not in pg_stat_activity"
    return row[0]


def wait_readable(conn, timeout: float = 5.0) -> None:
    """Until the server's goodbye (FATAL + close) reached the client's socket."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    assert poller.poll(int(timeout * 1000)), "the terminated backend's socket never turned readable"


def test_healthy_idle_connection_is_usable_without_a_query(pg_connection):
    pid = pg_connection.connection.info.backend_pid
    with pg_connection.cursor() as cursor:
        cursor.execute("SELECT 'health-check-marker'")
    with admin_connection() as admin:
        assert "health-check-marker" in last_query(admin, pid)
        assert all(pg_connection.is_usable() for _ in range(5))
        # Nothing reached the server: its last statement is still ours, not a SELECT 1
        # (Django's own is_usable sends one each time; psycopg-level, so no debug cursor sees it).
        assert "health-check-marker" in last_query(admin, pid)
    assert pg_connection.connection.info.backend_pid == pid  # the same connection, kept


def test_terminated_backend_is_not_usable_and_the_next_request_reconnects(pg_connection):
    assert pg_connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    raw = pg_connection.connection
    pid = raw.info.backend_pid
    with admin_connection() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0] is True
    wait_readable(raw)
    assert pg_connection.is_usable() is False
    # A request starts (what the request_started signal does; the test client skips it):
    # the health check runs before the first query and replaces the dead connection.
    close_old_connections()
    assert Task.objects.count() == 0
    assert pg_connection.connection is not raw
    assert pg_connection.connection.info.backend_pid != pid
    assert pg_connection.is_usable() is True


def test_close_if_health_check_failed_replaces_a_terminated_connection(pg_connection):
    raw = pg_connection.connection
    with admin_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [raw.info.backend_pid])
    wait_readable(raw)
    pg_connection.health_check_done = False
    pg_connection.close_if_health_check_failed()
    assert pg_connection.connection is None  # closed, so the next query opens a new one
    with pg_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_closed_connection_is_not_usable(pg_connection):
    raw = pg_connection.connection
    raw.close()
    assert pg_connection.is_usable() is False
