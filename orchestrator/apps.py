from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "Orchestrator"

    def ready(self) -> None:
        from orchestrator import routing  # noqa: F401  (registers the notify handler and its validator)
        from orchestrator.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
