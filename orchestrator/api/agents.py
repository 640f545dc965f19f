"""GET /api/agents/: each agent's health, queue depth and last heartbeat."""

from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestrator.heartbeats import agent_statuses


class AgentListView(APIView):
    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response({"results": [asdict(s) for s in agent_statuses()]})
