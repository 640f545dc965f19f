from django.apps import AppConfig


class EmailAgentConfig(AppConfig):
    name = "agents.email"
    label = "email_agent"
    verbose_name = "Email agent"

    def ready(self) -> None:
        import warnings

        from anymail.exceptions import AnymailNotSupportedWarning

        # anymail 13.0.1+ warns on every use of its SendGrid backend and webhook that it no
        # longer tests them against the live service; our tests pin the wire format against
        # tests/fakes/sendgrid.py and SendGrid's documented event webhook instead.
        warnings.filterwarnings(
            "ignore",
            message="django-anymail has dropped official support for SendGrid",
            category=AnymailNotSupportedWarning,
        )
        # Importing the handler module registers the handler and the payload validator.
        from agents.email import broadcast, handlers  # noqa: F401
