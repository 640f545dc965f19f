"""Outbound requests only where they belong (comms_platform/outbound.py): remote-agent URLs
and the media/recording URLs named in provider callbacks never reach loopback, private or
link-local addresses (directly, through a name that resolves there, or through a redirect),
and the Twilio credentials go only to Twilio's API host."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from agents.messaging.inbound import media_download
from agents.voice.services import recording_fetch
from comms_platform import outbound
from dossiers.models import Artifact, Message
from orchestrator import registry
from orchestrator.errors import PermanentError
from orchestrator.models import AgentRegistration, Task
from orchestrator.remote import deliver

pytestmark = pytest.mark.django_db

ACCOUNT, TOKEN = "AC" + "0" * 31 + "1", "0123456789abcdef0123456789abcdef"
FAKE_DNS = {
    "internal.example": ["10.0.0.7"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "10.0.0.1"],
    "public.example": ["93.184.216.34"],
    "api.twilio.com": ["10.0.0.1"],  # a poisoned answer for Twilio's own name
}
REFUSED_URLS = [
    "http://127.0.0.1:8000/tasks",
    "http://10.1.2.3/tasks",
    "http://10.255.255.254/tasks",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/tasks",
    "http://[fe80::1]/tasks",
    "http://0.0.0.0/tasks",
    "http://100.64.0.1/tasks",
    "http://192.168.1.1/tasks",
    "http://localhost/tasks",  # the system resolver: loopback
    "http://agent.localhost/tasks",  # any name under .localhost is loopback
    "http://internal.example/tasks",
    "http://metadata.example/tasks",
    "http://mixed.example/tasks",  # one private answer is enough
]


def fake_resolver(host: str, port: int) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    return outbound.resolve(host, port)


@pytest.fixture(autouse=True)
def production_rules(settings):
    settings.OUTBOUND_BLOCK_PRIVATE = True
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = []
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = ACCOUNT, TOKEN
    settings.TWILIO_API_BASE_URL = ""
    outbound.set_resolver(fake_resolver)
    yield settings
    outbound.set_resolver(None)


class Trap:
    """A local HTTP server that records every request (with its Authorization header) and
    answers from ``routes``: a path → ``("redirect", location)`` or ``(status, body)``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        self.routes: dict[str, tuple] = {}
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                trap.requests.append((self.command, self.path, self.headers.get("Authorization")))
                kind, value = trap.routes.get(self.path, (200, b"content"))
                if kind == "redirect":
                    self.send_response(307)
                    self.send_header("Location", value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(kind)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(value)))
                self.end_headers()
                self.wfile.write(value)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def trap():
    server = Trap()
    yield server
    server.close()


# --- the check itself -----------------------------------------------------------------------


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_private_loopback_and_link_local_are_refused(url):
    with pytest.raises(outbound.OutboundRefused, match="private, loopback or link-local"):
        outbound.check_url(url)


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "https://public.example/hook"])
def test_public_addresses_pass(url):
    outbound.check_url(url)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://public.example/", "http://user:pw@public.example/", "http:///x"]
)
def test_other_schemes_and_credentials_in_urls_are_refused(url):
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_url(url)


def test_test_mode_default_and_the_explicit_exception(settings):
    settings.OUTBOUND_BLOCK_PRIVATE = False  # test mode's default: local simulators
    outbound.check_url("http://127.0.0.1:9/x")
    settings.OUTBOUND_BLOCK_PRIVATE = True
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = ["comms-agent", ".internal.example"]
    outbound.check_url("http://comms-agent:10000/tasks")
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_url("http://internal.example/x")  # ".internal.example" names subdomains only


# --- remote agents: at save, at send, redirects -------------------------------------------


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_remote_agent_url_is_refused_at_save(url):
    row = AgentRegistration(task_type="remote.echo", agent="far", channel="system", kind="remote",
                            queue="remote", url=url)  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        row.full_clean()
    assert "This URL is refused" in str(refused.value.message_dict["url"])


def test_the_admin_refuses_a_metadata_url(admin_client):
    response = admin_client.post("/admin/orchestrator/agentregistration/add/", {
        "task_type": "remote.echo", "agent": "far", "channel": "system", "kind": "remote", "queue": "remote",
        "url": "http://169.254.169.254/latest/meta-data/", "enabled": "on", "capabilities": "{}",
    })  # fmt: skip
    assert response.status_code == 200
    assert "This URL is refused" in response.content.decode()
    assert not AgentRegistration.objects.filter(task_type="remote.echo").exists()


def remote_task(url: str) -> Task:
    # Written directly, as an older row or a data migration would be: the send checks again.
    AgentRegistration.objects.create(task_type="remote.echo", agent="far", channel="system", kind="remote",
                                     queue="remote", url=url, dispatch_only=True)  # fmt: skip
    registry.invalidate()
    return Task.objects.create(type="remote.echo", channel="system", agent="far", payload={"secret": "x"})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_remote_agent_on_loopback_is_refused_at_send_and_receives_nothing(trap, host):
    task = remote_task(f"http://{host}:{trap.port}/tasks")
    with pytest.raises(PermanentError) as refused:
        deliver(task)
    assert refused.value.code == "agent_url_refused"
    assert trap.requests == []


def test_remote_agent_redirect_is_not_followed(trap, settings):
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]  # the agent itself is allowed…
    trap.routes["/tasks"] = ("redirect", f"http://localhost:{trap.port}/latest/meta-data/")
    task = remote_task(f"{trap.base}/tasks")
    with pytest.raises(PermanentError) as refused:
        deliver(task)
    assert refused.value.code == "agent_redirect"
    # …but the signed body went there once, and never on to the redirect's target.
    assert [(m, p) for m, p, _ in trap.requests] == [("POST", "/tasks")]


# --- media and recording downloads --------------------------------------------------------


def inbound_with_media(url: str) -> Message:
    return Message.objects.create(channel="sms", direction="inbound", from_address="+14155550100",
                                  to_address="+15005550006", body="look", occurred_at=timezone.now(),
                                  media=[{"url": url, "content_type": "image/png"}])  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://10.0.0.5/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        "http://internal.example/Media/ME1",
        "https://api.twilio.com.internal.example/Media/ME1",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",  # poisoned DNS: 10.0.0.1
    ],
)
def test_media_url_off_twilio_or_on_a_private_address_is_refused(url):
    message = inbound_with_media(url)
    assert media_download(message_id=message.id) == 0
    item = Message.objects.get(id=message.id).media[0]
    assert "artifact" not in item and item["refused"]
    assert not Artifact.objects.exists()


def test_media_on_loopback_gets_no_request_and_no_credentials(trap):
    message = inbound_with_media(f"http://localhost:{trap.port}/Media/ME1")  # not a Twilio host
    assert media_download(message_id=message.id) == 0
    assert trap.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:{port}/stolen",
        "http://metadata.example/x",
    ],
)
def test_media_redirect_to_a_private_address_is_refused(trap, settings, target):
    # The configured (fake) Twilio API host is allowed; its redirect is checked like any URL.
    settings.TWILIO_API_BASE_URL = trap.base
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    trap.routes["/Media/ME1"] = ("redirect", target.format(port=trap.port))
    message = inbound_with_media(f"{trap.base}/Media/ME1")
    assert media_download(message_id=message.id) == 0
    assert [p for _, p, _ in trap.requests] == ["/Media/ME1"]
    assert "refused" in Message.objects.get(id=message.id).media[0]


def test_credentials_go_to_the_api_host_only_never_past_a_redirect(trap, settings):
    settings.TWILIO_API_BASE_URL = trap.base
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    trap.routes["/Media/ME1"] = ("redirect", "/media-content/ME1")
    message = inbound_with_media(f"{trap.base}/Media/ME1")
    assert media_download(message_id=message.id) == 1
    (_, first, first_auth), (_, second, second_auth) = trap.requests
    assert (first, second) == ("/Media/ME1", "/media-content/ME1")
    assert first_auth and first_auth.startswith("Basic ")
    assert second_auth is None


@pytest.mark.parametrize(
    "recording_url",
    [
        "http://169.254.169.254/2010-04-01/Accounts/AC1/Recordings/RE1",
        "http://10.0.0.5/2010-04-01/Accounts/AC1/Recordings/RE1",
        "http://metadata.example/2010-04-01/Accounts/AC1/Recordings/RE1",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",  # poisoned DNS
    ],
)
def test_recording_url_on_a_private_address_is_refused(recording_url):
    artifact = Artifact.objects.create(kind="recording", storage_key="artifacts/r", content_type="audio/wav",
                                       source_url=recording_url, occurred_at=timezone.now())  # fmt: skip
    assert recording_fetch(artifact_id=artifact.id) == "refused"
    assert Artifact.objects.get(id=artifact.id).sha256 == ""


def test_recording_redirect_to_loopback_gets_no_credentials(trap, settings):
    settings.TWILIO_API_BASE_URL = trap.base
    settings.OUTBOUND_ALLOW_PRIVATE_HOSTS = ["127.0.0.1"]
    trap.routes["/2010-04-01/Accounts/AC1/Recordings/RE1.wav"] = (
        "redirect",
        f"http://localhost:{trap.port}/x",
    )
    artifact = Artifact.objects.create(
        kind="recording", storage_key="artifacts/r", content_type="audio/wav", occurred_at=timezone.now(),
        source_url="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
    )  # fmt: skip
    assert recording_fetch(artifact_id=artifact.id) == "refused"
    assert [p for _, p, _ in trap.requests] == ["/2010-04-01/Accounts/AC1/Recordings/RE1.wav"]


# --- configured URLs (start-up check) -----------------------------------------------------


def test_configured_urls_on_private_addresses_fail_the_system_check(settings):
    from comms_platform.outbound import check_configured_urls

    settings.OPENAI_BASE_URL = "http://169.254.169.254/v1"
    settings.REMOTE_AGENT_URLS = {"voice": "http://internal.example/tasks", "email": ""}
    settings.SENDGRID_API_BASE_URL = "https://public.example"
    errors = check_configured_urls()
    assert [(e.id, e.msg.split(" is refused")[0]) for e in errors] == [
        ("comms.E101", "OPENAI_BASE_URL"),
        ("comms.E101", "VOICE_AGENT_URL"),
    ]
    settings.OUTBOUND_BLOCK_PRIVATE = False  # test mode's default: local simulators and fakes
    assert check_configured_urls() == []
