from django.apps import AppConfig


class ContentConfig(AppConfig):
    name = "agents.content"
    label = "content"
    verbose_name = "Content agent"

    def ready(self) -> None:
        # Importing the handler module registers the handler and the payload validator.
        from agents.content import broadcast, handlers  # noqa: F401
