from django.http import JsonResponse
from django.urls import path

from comms_platform.urls import urlpatterns as platform_urlpatterns


def bare(request):
    """The baseline: Django's request cycle and a JSON response, nothing else."""
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/bare", bare), *platform_urlpatterns]
