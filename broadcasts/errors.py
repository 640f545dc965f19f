from __future__ import annotations


class BroadcastError(ValueError):
    """Bad input to a broadcast service: ``field`` names what is wrong (the API answers 400)."""

    def __init__(self, message: str, *, field: str = "non_field_errors") -> None:
        super().__init__(message)
        self.field = field


class IdempotencyConflict(BroadcastError):
    """The idempotency key was used before with another request (the API answers 409)."""


class IllegalBroadcastTransition(BroadcastError):
    """Pause / resume / cancel asked in a state that does not allow it (the API answers 409)."""
