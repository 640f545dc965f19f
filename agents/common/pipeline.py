"""The agent kit's send pipeline, in the shape of django-anymail's backends.

One order of steps for every channel that sends something:

    normalise the recipient → consent → (already sent?) → render the body → channel rules
    → pace the sender → record the attempt → ``provider.send`` (observed) → record accepted
    / refused

An agent subclasses ``SendPipeline`` and fills the hooks; ``run`` only calls them in order,
and ``observed_send`` is the one place a provider's send is called: every call is timed and counted by
``observe_provider_call`` (latency, outcome, error code: ``comms_provider_request_seconds``
and ``comms_provider_errors_total``, what the ``CommsProviderErrorRate`` alert reads).
State travels in a ``Send`` (the task, then what each step found).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import AgentError
from orchestrator.metrics import observe_provider_call


@dataclass
class Send:
    """One send in progress: the task and what the steps found so far."""

    task: Any
    recipient: str = ""
    contact: Any = None
    body: Any = None
    sender: str = ""
    record: Any = None  # the dossier row written before the provider is called
    attempt: Any = None  # the attempt row, when the agent keeps one
    extra: dict[str, Any] = field(default_factory=dict)


class SendPipeline:
    """Subclass and fill the hooks; each takes the ``Send`` and fills its part of it."""

    operation = "send"  # the provider metric's operation label, e.g. "messages.create"

    def run(self, task: Any) -> Any:
        send = Send(task=task)
        self.normalise_recipient(send)
        self.check_consent(send)
        if self.already_sent(send):
            return None
        self.render_body(send)
        self.apply_channel_rules(send)
        self.pace_sender(send)
        self.record_attempt(send)
        try:
            provider, result = self.call_provider(send)
        except AgentError as exc:
            self.record_refused(send, exc)
            raise
        self.record_accepted(send, result, provider)
        return result

    # --- hooks ------------------------------------------------------------------------------

    def normalise_recipient(self, send: Send) -> None:
        raise NotImplementedError

    def check_consent(self, send: Send) -> None:
        """Raise ``PermanentError(code="opted_out")`` for a contact who said no."""

    def already_sent(self, send: Send) -> bool:
        """True when an earlier attempt reached the provider (a worker died after its accept)."""
        return False

    def render_body(self, send: Send) -> None:
        raise NotImplementedError

    def apply_channel_rules(self, send: Send) -> None:
        """Segments, windows, sizes: raise ``PermanentError`` for what can never be delivered."""

    def pace_sender(self, send: Send) -> None:
        """Wait for (or defer to) the sender's next rate-limit slot."""

    def record_attempt(self, send: Send) -> None:
        """Write what is about to be sent, committed before the provider is called."""

    def call_provider(self, send: Send) -> tuple[Any, Any]:
        """``provider_send`` on ``provider(send)``, observed. An agent with a fallback chain
        (email) overrides this and calls ``observed_send`` once per provider it tries."""
        provider = self.provider(send)
        return provider, self.observed_send(provider, send)

    def observed_send(self, provider: Any, send: Send) -> Any:
        with observe_provider_call(provider.name, getattr(provider, "operation", "") or self.operation):
            return self.provider_send(provider, send)

    def provider(self, send: Send) -> Any:
        raise NotImplementedError

    def provider_send(self, provider: Any, send: Send) -> Any:
        raise NotImplementedError

    def record_refused(self, send: Send, error: AgentError) -> None:
        """The provider refused (or did not answer): record it; the error propagates."""

    def record_accepted(self, send: Send, result: Any, provider: Any) -> None:
        raise NotImplementedError
