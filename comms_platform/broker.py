"""kombu's Redis transport, with one crash on a lost broker turned into the error it means.

When Redis goes away under a busy worker, Celery 5.7 first ``collect()``s the consumer's
connection and then ``close()``s it. ``collect`` closes the channels: the one waiting in BRPOP
stops at the lost read (still open), another one's close fails to give its unacknowledged
messages back, which ends the loop over the channels — and then ``collect`` drops the
transport's link to the connection. ``close`` closes the still-open channel in full: it gives
its unacknowledged messages back to Redis, which needs the connection parameters, and the
transport no longer has them. kombu raises ``AttributeError: 'NoneType' object has no
attribute 'hostname'`` (kombu/transport/redis.py, ``_connparams``), which is not one of the
errors Celery ignores while closing, and the worker process exits ("Unrecoverable error")
instead of reconnecting. tests/faults/test_redis_restart_burst.py met it about one run in three;
tests/faults/test_broker_lost_channel_close.py builds that state.

Here that state raises redis's ``ConnectionError`` instead: Celery ignores it, as it ignores
every other failure to reach the lost broker, and reconnects. The unacknowledged messages are
not lost: Redis keeps them in its ``unacked`` hash and a worker restores them after the
visibility timeout, as after any lost connection. Celery resolves the ``redis`` and ``rediss``
URL schemes to this transport (``comms_platform/celery.py``).
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed before its channel")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
