"""Typed agent errors that say whether retrying can help.

A handler raises ``PermanentError`` when the same request can never succeed (an invalid
number, a 4xx from the provider, an opted-out contact): the task fails at once with the
code. ``TransientError`` (429, 5xx, timeouts, connection errors) is retried with
exponential backoff until the task's attempts run out.
"""

from __future__ import annotations


class AgentError(Exception):
    permanent = False

    def __init__(self, message: str, *, code: str = "agent_error", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class TransientError(AgentError):
    permanent = False


class PermanentError(AgentError):
    permanent = True
