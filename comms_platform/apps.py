from django.apps import AppConfig


class CommsPlatformConfig(AppConfig):
    name = "comms_platform"
    verbose_name = "Platform"

    def ready(self) -> None:
        # Celery signals: log context per task, heartbeats per worker (no-ops on the web).
        from comms_platform import dbhealth
        from comms_platform.logs import connect_celery_signals, connect_request_signals
        from orchestrator.heartbeats import connect_worker_signals

        dbhealth.connect_worker_signals()  # first: the others read the database
        connect_celery_signals()
        connect_request_signals()
        connect_worker_signals()

        from django.core import checks

        from comms_platform import checks as startup_checks  # noqa: F401  (registers comms.E001-E005)
        from comms_platform.outbound import check_configured_urls

        checks.register(check_configured_urls, "security")
