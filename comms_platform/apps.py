from django.apps import AppConfig


class CommsPlatformConfig(AppConfig):
    name = "comms_platform"
    verbose_name = "Platform"
