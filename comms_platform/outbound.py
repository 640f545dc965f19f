"""Outbound HTTP only where it belongs.

Every request the platform makes to a URL it did not write itself (a media or recording
URL named in a provider callback, a remote agent's URL from the admin) goes through here:

- the host must resolve, and **every** address it resolves to must be public: loopback,
  private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 — the cloud
  metadata service — and fe80::/10), carrier-grade NAT, multicast, reserved and unspecified
  addresses are refused when ``OUTBOUND_BLOCK_PRIVATE`` is on (the default in production);
  hosts named in ``OUTBOUND_ALLOW_PRIVATE_HOSTS`` are the deliberate exceptions (an agent
  on the deployment's private network);
- redirects are never followed by the HTTP client: ``fetch`` follows a few itself, checking
  each hop and never carrying credentials past the first request; ``post`` follows none;
- credentials go only to hosts the caller names (Twilio's: ``twilio_credential_hosts``).

The check runs on the addresses DNS gives right before the request (``resolve`` is the
seam tests replace). Between the check and the connection a hostile DNS server could still
answer differently (rebinding); the private-address refusal narrows what that can reach, and
credentials never follow a host change.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings

MAX_REDIRECTS = 3
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Twilio's documented API hosts (api.twilio.com and the regional api.<edge>.<region>.twilio.com):
# the only hosts that receive the account's credentials.
TWILIO_CREDENTIAL_SUFFIXES = (".twilio.com",)
# Where Twilio redirects a media or recording URL (short-lived storage): fetched without credentials.
TWILIO_MEDIA_SUFFIXES = (".twilio.com", ".twiliocdn.com", ".amazonaws.com")


class OutboundRefused(Exception):
    """The URL may not be requested; the message says why (safe to show an operator)."""

    code = "outbound_refused"


@dataclass(frozen=True)
class Hop:
    url: str
    status: int
    credentials_sent: bool


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the seam tests replace)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


_resolver: Callable[[str, int], list[str]] = resolve


def set_resolver(resolver: Callable[[str, int], list[str]] | None) -> None:
    """Replace DNS resolution (tests); ``None`` restores the system resolver."""
    global _resolver
    _resolver = resolver or resolve


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """``host`` equals a pattern, or ends with one that starts with a dot (``.twilio.com``)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith(".") and host.endswith(pattern)):
            return True
    return False


def _parts(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise OutboundRefused("the URL has no host")
    if parts.username or parts.password:
        raise OutboundRefused("credentials in the URL are not allowed")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def block_private() -> bool:
    return bool(getattr(settings, "OUTBOUND_BLOCK_PRIVATE", not settings.TEST_MODE))


def check_url(url: str, *, allowed_hosts: Iterable[str] | None = None, resolve_dns: bool = True) -> None:
    """Raise OutboundRefused unless ``url`` may be requested now.

    ``allowed_hosts`` limits the host names (exact, or suffixes starting with a dot);
    with ``resolve_dns`` every address the name resolves to must be public (unless private
    addresses are allowed, or the host is in OUTBOUND_ALLOW_PRIVATE_HOSTS).
    """
    _, host, port = _parts(url)
    if allowed_hosts is not None and not host_matches(host, allowed_hosts):
        raise OutboundRefused(f"host {host!r} is not one this request may go to")
    if not resolve_dns or not block_private():
        return
    if host_matches(host, getattr(settings, "OUTBOUND_ALLOW_PRIVATE_HOSTS", [])):
        return
    try:
        # RFC 6761: every name under .localhost is loopback, whatever a resolver says.
        loopback = host.lower().rstrip(".") == "localhost" or host.lower().rstrip(".").endswith(".localhost")
        addresses = ["127.0.0.1"] if loopback else _resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise OutboundRefused(f"host {host!r} does not resolve ({type(exc).__name__})") from None
    if not addresses:
        raise OutboundRefused(f"host {host!r} does not resolve")
    private = [a for a in addresses if not is_public_address(a)]
    if private:
        raise OutboundRefused(
            f"host {host!r} resolves to a private, loopback or link-local address ({private[0]})"
        )


def fetch(
    url: str,
    *,
    credential_hosts: Iterable[str],
    redirect_hosts: Iterable[str],
    auth: tuple[str, str] | None,
    timeout: float,
) -> tuple[requests.Response, list[Hop]]:
    """GET ``url`` with ``auth`` (only when its host is a credential host), following at
    most MAX_REDIRECTS redirects by hand to ``redirect_hosts`` without credentials.
    Every hop is checked (``check_url``) before it is requested."""
    credential_hosts, redirect_hosts = list(credential_hosts), list(redirect_hosts)
    hops: list[Hop] = []
    allowed = credential_hosts
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allowed_hosts=allowed)
        send_auth = auth if not hops and host_matches(_parts(url)[1], credential_hosts) else None
        response = requests.get(url, auth=send_auth, timeout=timeout, allow_redirects=False)
        hops.append(Hop(url, response.status_code, send_auth is not None))
        if response.status_code not in REDIRECT_STATUSES:
            return response, hops
        location = response.headers.get("Location", "")
        response.close()
        if not location:
            raise OutboundRefused(f"a redirect from {_parts(url)[1]!r} without a Location")
        url, allowed = urljoin(url, location), redirect_hosts
    raise OutboundRefused(f"more than {MAX_REDIRECTS} redirects")


def post(url: str, *, timeout: float, **kwargs) -> requests.Response:
    """POST after ``check_url``; a redirect is answered as it is, never followed."""
    check_url(url)
    return requests.post(url, allow_redirects=False, timeout=timeout, **kwargs)


def twilio_credential_hosts() -> list[str]:
    """Twilio's API hosts, plus the host of TWILIO_API_BASE_URL when one is configured
    (a local fake in tests, a proxy in front of Twilio)."""
    hosts = ["api.twilio.com", *TWILIO_CREDENTIAL_SUFFIXES]
    if settings.TWILIO_API_BASE_URL:
        hosts.append(urlsplit(settings.TWILIO_API_BASE_URL).hostname or "")
    return [h for h in hosts if h]


def twilio_redirect_hosts() -> list[str]:
    return [*twilio_credential_hosts(), *TWILIO_MEDIA_SUFFIXES]


# Settings that name a URL the platform sends requests to (the provider SDKs' base URLs,
# the remote agents'): checked at start-up by ``manage.py check`` / ``migrate`` (pre-deploy).
CONFIGURED_URL_SETTINGS = ("TWILIO_API_BASE_URL", "SENDGRID_API_BASE_URL", "OPENAI_BASE_URL")


def configured_urls() -> list[tuple[str, str]]:
    urls = [(name, getattr(settings, name, "")) for name in CONFIGURED_URL_SETTINGS]
    urls += [(f"{agent.upper()}_AGENT_URL", url) for agent, url in settings.REMOTE_AGENT_URLS.items()]
    return [(name, url) for name, url in urls if url]


def check_configured_urls(app_configs=None, **kwargs) -> list:
    """Django system check: a configured URL on a private address is an error where private
    addresses are refused (production); one that does not resolve now is a warning."""
    from django.core import checks

    messages = []
    if not block_private():
        return messages
    for name, url in configured_urls():
        try:
            check_url(url)
        except OutboundRefused as exc:
            level = checks.Warning if "does not resolve" in str(exc) else checks.Error
            messages.append(
                level(
                    f"{name} is refused: {exc}.",
                    hint="Use a public address, or name the host in OUTBOUND_ALLOW_PRIVATE_HOSTS.",
                    id="comms.W101" if level is checks.Warning else "comms.E101",
                )
            )
    return messages
