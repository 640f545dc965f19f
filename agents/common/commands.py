"""Management-command bases of the agent kit."""

from __future__ import annotations

from collections.abc import Callable

from django.core.management.base import BaseCommand


class PendingFetchCommand(BaseCommand):
    """Queue the downloads an agent has not fetched yet (their first request was lost while
    Redis was down, or every retry failed); beat runs the same every
    MEDIA_PICKUP_INTERVAL_SECONDS. A subclass sets ``fetch`` (the agent's service, taking
    ``min_age_seconds`` and ``window_hours``), ``noun`` and ``help``."""

    noun = "item(s)"  # what the count is of, e.g. "recording(s) for download"

    def fetch(self, *, min_age_seconds: float, window_hours: float) -> int:
        raise NotImplementedError

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, default=30.0, help="seconds since it arrived")
        parser.add_argument("--window-hours", type=float, default=48.0, help="how far back to look")

    def handle(self, *args, **options):
        queued = self.fetch(min_age_seconds=options["older_than"], window_hours=options["window_hours"])
        self.stdout.write(f"queued {queued} {self.noun}")


def pending_fetch_command(service: Callable[..., int], *, noun: str, help: str) -> type[PendingFetchCommand]:
    """A ``Command`` class for an agent's pending-fetch service."""

    class Command(PendingFetchCommand):
        def fetch(self, *, min_age_seconds: float, window_hours: float) -> int:
            return service(min_age_seconds=min_age_seconds, window_hours=window_hours)

    Command.noun, Command.help = noun, help
    return Command
