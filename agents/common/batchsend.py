"""Concurrent sends of a broadcast batch: a few threads over the provider's HTTP I/O.

A provider call is ~0.3 s of waiting on Twilio or SendGrid and almost no CPU, so one worker
process sends a batch's messages ``concurrency`` at a time (``BROADCAST_SEND_CONCURRENCY``).
The division of work keeps every guarantee of the one-by-one loop (docs/broadcasts.md):

- the **calling thread** does all the deciding: it waits for a free thread, then asks
  ``before_send(item)`` (the sender's token, the stop flag of pause / cancel / back-off) and
  hands the item to a thread at once; so a check is never older than a thread hand-off, and
  after a stop at most the calls already under way (``concurrency``) still leave;
- the **pool threads** only call the provider (``send(item)``): no database access there
  (Django's connections are per thread; the batch's own thread writes the outcomes afterwards);
- the first **transient** answer (a 429 or a 5xx: ``result["transient"]``) stops the batch:
  nothing more starts, ``throttled(retry_after)`` is told at once (from the pool thread), and
  the items not started come back ``not_sent``.

A provider client serves one thread at a time: the Twilio SDK's ``TwilioHttpClient`` keeps its
``requests.Session`` and its last request / answer on the instance, which is not thread-safe
(twilio/twilio-python#580, psf/requests#2766); ``ClientPool`` lends each call a client of its own.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)
Item = dict[str, Any]
GIL_SWITCH_SECONDS = 0.001
Result = dict[str, Any]


def send_concurrently(
    items: list[Item],
    *,
    send: Callable[[Item], Result],
    before_send: Callable[[Item], bool],
    concurrency: int,
    throttled: Callable[[float | None], None] | None = None,
) -> list[Result]:
    """One result per item, in the items' order. ``send`` returns the item's result (it must
    carry the item's ``key``); an exception out of it leaves that item ``unknown`` (it may have
    left: the reconciler asks the provider) instead of losing the batch's other outcomes."""
    if sys.getswitchinterval() > GIL_SWITCH_SECONDS:
        # The calling thread paces the sends (a sleep until the sender's next token): woken, it
        # must not wait CPython's default 5 ms for the GIL behind a sending thread.
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
    results: list[Result | None] = [None] * len(items)
    stop = threading.Event()
    slots = threading.BoundedSemaphore(max(1, concurrency))

    def run(index: int, item: Item) -> None:
        try:
            result = send(item)
        except Exception as exc:
            log.exception("broadcast send raised %s: left for the reconciler", type(exc).__name__)
            result = {"key": item["key"], "outcome": "unknown", "code": "", "reason": type(exc).__name__}
        if result.get("transient") and not stop.is_set():
            stop.set()  # before the slot is freed: the caller starts nothing more
            if throttled is not None:
                _tell(throttled, result.get("retry_after"))
        results[index] = result
        slots.release()

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="broadcast-send") as pool:
        for index, item in enumerate(items):
            slots.acquire()
            if stop.is_set() or not before_send(item) or stop.is_set():
                stop.set()
                slots.release()
                break
            # The caller's context (the Celery task's log fields) goes with the call.
            pool.submit(contextvars.copy_context().run, run, index, item)
    return [
        r if r is not None else {"key": items[i]["key"], "outcome": "not_sent"} for i, r in enumerate(results)
    ]


def _tell(throttled: Callable[[float | None], None], retry_after: Any) -> None:
    try:
        throttled(retry_after)
    except Exception:  # the batch still stops; its writer records the back-off
        log.exception("broadcast back-off could not be announced")


class ClientPool:
    """``size`` provider clients, built up front in the batch's thread, each lent to one sending
    thread at a time (``lease``). Built before the first call: a paced call must not carry a
    client's construction (imports, a new session) and reach the provider late after its token,
    which would let the next call arrive closer than the rate. ``size`` is at least the calls
    that can be under way, so a lease never waits."""

    def __init__(self, factory: Callable[[], Any], size: int) -> None:
        self.made: list[Any] = [factory() for _ in range(max(1, size))]
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for client in self.made:
            self._free.put(client)

    @contextmanager
    def lease(self) -> Iterator[Any]:
        client = self._free.get()
        try:
            yield client
        finally:
            self._free.put(client)
