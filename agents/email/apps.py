from django.apps import AppConfig


class EmailAgentConfig(AppConfig):
    name = "agents.email"
    label = "email_agent"
    verbose_name = "Email agent"

    def ready(self) -> None:
        # Importing the handler module registers the handler and the payload validator.
        from agents.email import handlers  # noqa: F401
