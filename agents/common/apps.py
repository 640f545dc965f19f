from django.apps import AppConfig


class AgentsCommonConfig(AppConfig):
    name = "agents.common"
    label = "agents_common"
    verbose_name = "Agents"

    def ready(self) -> None:
        # Importing a handler module registers its handlers (orchestrator.registry).
        from agents.common import (
            diagnostic,  # noqa: F401
            retention,
        )
        from comms_platform import purge

        purge.register(retention.HOOK)
