"""``progress_changed``: sent after a broadcast's counts changed and the change committed
(a batch sent, callbacks applied, pause / resume / cancel). Argument: ``broadcast_id`` (str).
The console subscribes to forward live progress; receivers must be quick (they run in the
worker or web process that committed the change)."""

from __future__ import annotations

import django.dispatch

progress_changed = django.dispatch.Signal()
