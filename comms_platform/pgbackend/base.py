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
