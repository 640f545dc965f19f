"""Settings for benchmarks: the platform's own, plus a bare JSON view to compare against."""

from comms_platform.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
