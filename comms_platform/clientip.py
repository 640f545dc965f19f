"""The client's address, for throttling and lockouts, without trusting what it says.

Behind a proxy (Render's load balancer) ``REMOTE_ADDR`` is the proxy, and the client's own
address is the last one the trusted proxies appended to ``X-Forwarded-For``. Only
``TRUSTED_PROXY_HOPS`` entries from the right are believed: anything left of them was written
by the client and would let it change address at will (and escape a lockout).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    hops = settings.TRUSTED_PROXY_HOPS
    remote = request.META.get("REMOTE_ADDR", "") or ""
    if hops <= 0:
        return remote
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    if len(forwarded) < hops:
        return remote
    return forwarded[-hops]
