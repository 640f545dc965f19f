"""A worker whose Redis broker goes away reconnects instead of exiting (comms_platform/broker.py).

The real path is tests/faults/test_redis_restart_burst.py (a worker process, Redis restarted
under a burst); it met the crash about one run in three. This test builds the state the worker
was in — two channels holding delivered, unacknowledged messages, one of them waiting in BRPOP
— stops Redis, and runs what Celery's consumer runs on a lost connection."""

from __future__ import annotations

import contextlib

import pytest
from kombu import Exchange, Queue
from kombu.common import ignore_errors

from comms_platform.broker import Transport
from comms_platform.celery import app
from tests.support.services import redis_server, stop_process

pytestmark = pytest.mark.services


def test_redis_lost_under_a_busy_worker_is_a_connection_error_not_a_crash():
    with redis_server() as (url, _port, proc):
        connection = app.connection_for_read(url)
        assert isinstance(connection.transport, Transport)  # redis:// resolves to ours
        channel = connection.default_channel
        queue = Queue("broker-lost", Exchange("broker-lost"), "broker-lost")
        queue(channel).declare()
        producer = connection.Producer(channel)
        for n in range(2):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="broker-lost", declare=[queue])
        # A message delivered and not acknowledged on each of two channels (tasks running, acks
        # late)…
        other = connection.channel()
        assert channel.basic_get("broker-lost", no_ack=False) is not None
        assert other.basic_get("broker-lost", no_ack=False) is not None
        # …and one channel waiting for the next message, as the worker's event loop leaves it.
        channel.basic_consume("broker-lost", no_ack=False, callback=lambda message: None, consumer_tag="c1")
        connection.transport.cycle.on_poll_start()
        assert channel._in_poll
        stop_process(proc)  # Redis goes away

        # What the consumer does then (celery/worker/consumer/consumer.py,
        # on_connection_error_after_connected): collect, then close ignoring the broker's errors.
        with contextlib.suppress(Exception):  # Celery ignores any error of collect
            connection.collect(socket_timeout=1)
        assert not channel.closed  # its close stopped at the lost BRPOP: close() closes it again
        # kombu's own transport raised AttributeError ('NoneType' object has no attribute
        # 'hostname') here, which Celery does not ignore: the worker process exited.
        ignore_errors(connection, connection.close)
        assert channel.closed
