from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "agents.messaging"
    label = "messaging"
    verbose_name = "Messaging (SMS, WhatsApp)"

    def ready(self) -> None:
        # Importing these registers the handlers and the intake payload validators.
        from agents.messaging import broadcast, catalogue, handlers, validators  # noqa: F401
