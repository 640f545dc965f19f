from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "Orchestrator"

    def ready(self) -> None:
        from comms_platform import purge
        from orchestrator import (
            retention,
            routing,  # noqa: F401  (registers the notify handler and its validator)
        )
        from orchestrator.api import schema  # noqa: F401  (registers the OpenAPI auth extension)

        purge.register(retention.HOOK)
