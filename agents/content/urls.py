from django.urls import path

from agents.content.links import serve_artifact

urlpatterns = [path("a/<str:token>/", serve_artifact, name="artifact")]
