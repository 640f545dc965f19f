"""Django's PostgreSQL backend with a health check that costs no round trip.

With ``CONN_HEALTH_CHECKS`` Django runs ``SELECT 1`` before the first query of every
request on a reused connection: one more round trip to PostgreSQL on every API call and
webhook. A connection the server has ended (restart, ``pg_terminate_backend``, idle
timeout) is told so on its socket first: PostgreSQL sends a FATAL message and closes, so
the socket turns readable. A healthy idle connection has nothing to read. So the check
polls the socket without waiting, and only when something is there asks the server
(``SELECT 1``, which then fails and the connection is replaced before the request uses it).
"""

from __future__ import annotations

import select
import time

import psycopg
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            poller = select.poll()  # not select.select: descriptors above 1023 are fine
            poller.register(conn.fileno(), select.POLLIN)
            if not poller.poll(0):
                return True
        except (OSError, ValueError):
            return False
        return super().is_usable()


def execute_prepared(connection, sql: str, params) -> list[tuple] | None:
    """Run one statement of a hot path as a server-side prepared statement on PostgreSQL.

    Django's psycopg cursors bind parameters on the client, so PostgreSQL parses and plans
    the same INSERT on every request. Here psycopg prepares it once per connection and
    then sends only the parameters. Errors come out as Django's (IntegrityError…), and
    the statement joins the caller's transaction, as with ``connection.cursor()``. Returns
    the rows of a statement that returns rows. Other databases run it through Django's
    cursor.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as django_cursor:
            django_cursor.execute(sql, params)
            return django_cursor.fetchall() if django_cursor.description else None
    # What connection.cursor() does first, without building a cursor wrapper to throw away.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    started = time.monotonic()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        rows = cursor.fetchall() if cursor.description else None
    if connection.queries_logged:  # DEBUG, or a test counting queries: log it as Django would
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return rows
