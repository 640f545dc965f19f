"""The contacts, timeline and artifacts API. Views validate and call services/selectors."""

from __future__ import annotations

from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dossiers import avatars, links, selectors, services
from dossiers.api.serializers import (
    ConsentChangeSerializer,
    ContactCreateSerializer,
    ContactSerializer,
    TimelineQuerySerializer,
)
from dossiers.exports import contact_export
from dossiers.models import Artifact, AuditAction, Contact
from orchestrator.api.permissions import DossierAccess

READ = ("dossiers.view_contact", "read")
WRITE = ("dossiers.change_contact", "write")


class DossierView(APIView):
    """Every dossier endpoint: a key needs its contacts scope, a person the permission."""

    permission_classes = [IsAuthenticated, DossierAccess]
    dossier_access = {"GET": READ}


def _text_param(value: str, name: str) -> str:
    """PostgreSQL cannot compare text containing NUL: a 400, not a 500."""
    if "\x00" in value:
        raise ValidationError({name: ["must not contain NUL characters"]})
    return value


class ContactPagination(CursorPagination):
    ordering = ("-created_at", "id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ContactListCreateView(generics.ListAPIView, DossierView):
    dossier_access = {"GET": READ, "POST": ("dossiers.add_contact", "write")}
    serializer_class = ContactSerializer
    pagination_class = ContactPagination
    filter_backends = []

    def get_queryset(self):
        search = _text_param(self.request.query_params.get("search", ""), "search")
        return selectors.contact_list(search=search).prefetch_related("consents")

    @extend_schema(
        parameters=[OpenApiParameter("search", str, description="name, email or phone contains")],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=ContactCreateSerializer, responses={201: ContactSerializer, 200: ContactSerializer}
    )
    def post(self, request: Request) -> Response:
        """Create a contact, or return the existing one with this phone or email (200)."""
        serializer = ContactCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        contact, created = services.contact_get_or_create(
            phone=data["phone"], email=data["email"], name=data["name"], whatsapp=data["whatsapp"],
            locale=data["locale"], timezone_name=data["timezone"], synthetic=data["synthetic"],
        )  # fmt: skip
        body = ContactSerializer(Contact.objects.prefetch_related("consents").get(pk=contact.pk)).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ContactDetailView(generics.RetrieveAPIView, DossierView):
    serializer_class = ContactSerializer
    queryset = Contact.objects.prefetch_related("consents")


class _TimelineView(DossierView):
    object_type = ""

    def page(self, request: Request, **scope) -> Response:
        query = TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        filters = selectors.TimelineFilters(
            channels=q["channel"],
            directions=q["direction"],
            kinds=q["kind"],
            since=q["since"],
            until=q["until"],
        )
        try:
            if "contact_id" in scope:
                page = selectors.timeline_for_contact(
                    contact_id=scope["contact_id"], filters=filters, cursor=q["cursor"] or None,
                    page_size=q["page_size"],
                )  # fmt: skip
            else:
                page = selectors.timeline_for_correlation(
                    correlation_id=scope["correlation_id"], filters=filters, cursor=q["cursor"] or None,
                    page_size=q["page_size"],
                )  # fmt: skip
        except selectors.InvalidCursor as exc:
            raise ValidationError({"cursor": [str(exc)]}) from None
        # An empty page may mean there is no such contact: only then is it worth a query.
        if (
            not page.entries
            and "contact_id" in scope
            and not Contact.objects.filter(pk=scope["contact_id"]).exists()
        ):
            raise Http404
        object_id = scope.get("contact_id") or scope.get("correlation_id")
        services.audit_record(
            actor=request.user, action=AuditAction.VIEW_DOSSIER, object_type=self.object_type,
            object_id=object_id, details={"entries": len(page.entries), "paged": bool(q["cursor"])},
        )  # fmt: skip
        urls = _UrlTemplates()
        return Response({"results": [urls.entry(e) for e in page.entries], "next": _next_url(request, page)})


class _UrlTemplates:
    """reverse() once per page, not twice per entry (it dominated the page's Python time)."""

    MARK = "00000000-0000-0000-0000-000000000000"

    def __init__(self) -> None:
        self.artifact = reverse("artifact-detail", args=[self.MARK])
        self.task = reverse("task-detail", args=[self.MARK])

    def entry(self, entry: dict) -> dict:
        entry = dict(entry)
        artifact_ids = entry.pop("artifact_ids")
        entry["id"] = str(entry["id"])
        entry["artifacts"] = [self.artifact.replace(self.MARK, str(a)) for a in artifact_ids]
        entry["task_url"] = self.task.replace(self.MARK, str(entry["task"])) if entry["task"] else None
        return entry


def _next_url(request: Request, page: selectors.TimelinePage) -> str | None:
    if page.next_cursor is None:
        return None
    params = request.query_params.copy()
    params["cursor"] = page.next_cursor
    return f"{request.path}?{params.urlencode()}"


class ContactTimelineView(_TimelineView):
    object_type = "contact"

    @extend_schema(parameters=[TimelineQuerySerializer], responses={200: dict})
    def get(self, request: Request, pk) -> Response:
        """Calls, messages, emails and artifacts of a contact, newest first."""
        return self.page(request, contact_id=pk)


class CorrelationTimelineView(_TimelineView):
    object_type = "correlation"

    @extend_schema(parameters=[TimelineQuerySerializer], responses={200: dict})
    def get(self, request: Request, correlation_id: str) -> Response:
        """Everything of one correlation id, across contacts, newest first."""
        return self.page(request, correlation_id=_text_param(correlation_id, "correlation_id"))


class ContactExportView(DossierView):
    dossier_access = {"GET": ("dossiers.export_contact", "read")}

    @extend_schema(responses={200: dict})
    def get(self, request: Request, pk) -> Response:
        """The contact's whole dossier as JSON (audited)."""
        contact = get_object_or_404(Contact, pk=pk)
        body = contact_export(contact=contact)
        services.audit_record(
            actor=request.user, action=AuditAction.EXPORT, object_type="contact", object_id=contact.pk,
            details={kind: len(rows) for kind, rows in body.items() if isinstance(rows, list)},
        )  # fmt: skip
        return Response(body)


class ContactConsentView(DossierView):
    dossier_access = {"POST": WRITE}

    @extend_schema(request=ConsentChangeSerializer, responses={200: ContactSerializer})
    def post(self, request: Request, pk) -> Response:
        """Set the contact's consent on one channel (recorded in its history and audited)."""
        contact = get_object_or_404(Contact, pk=pk)
        serializer = ConsentChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changed = services.consent_set(
            contact_id=contact.pk, channel=data["channel"], status=data["status"], source="operator",
            detail=data["detail"], actor=str(request.user),
        )  # fmt: skip
        services.audit_record(
            actor=request.user, action=AuditAction.CONSENT_CHANGE, object_type="contact", object_id=contact.pk,
            details={"channel": data["channel"], "status": data["status"], "changed": changed},
        )  # fmt: skip
        return Response(ContactSerializer(Contact.objects.prefetch_related("consents").get(pk=pk)).data)


class ContactAvatarView(DossierView):
    dossier_access = {"GET": READ, "PUT": WRITE}
    parser_classes = [MultiPartParser]

    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request: Request, pk) -> HttpResponse:
        """The uploaded avatar, or an SVG with the contact's initials."""
        contact = get_object_or_404(Contact.objects.only("id", "name", "email", "phone", "avatar"), pk=pk)
        if contact.avatar:
            return FileResponse(
                contact.avatar.open("rb"), content_type=avatars.content_type(contact.avatar.name)
            )
        response = HttpResponse(avatars.initials_svg(contact), content_type="image/svg+xml")
        response["Cache-Control"] = "private, max-age=300"
        return response

    @extend_schema(
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        responses={200: ContactSerializer},
    )
    def put(self, request: Request, pk) -> Response:
        """Upload an avatar (PNG, JPEG, GIF or WebP, at most 2 MB) as the ``file`` field."""
        contact = get_object_or_404(Contact, pk=pk)
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError({"file": ["Send the image as the multipart field 'file'."]})
        try:
            avatars.avatar_set(contact=contact, upload=upload)
        except avatars.InvalidAvatar as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        return Response(ContactSerializer(Contact.objects.prefetch_related("consents").get(pk=pk)).data)


class ArtifactDetailView(DossierView):
    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request: Request, pk) -> Response:
        """An artifact's metadata and a signed download URL that expires; 404 with
        ``code: artifact_unavailable`` when its file is not (or no longer) in storage."""
        artifact = get_object_or_404(Artifact, pk=pk)
        if not links.artifact_available(artifact):
            return Response(
                {
                    "error": {
                        "code": "artifact_unavailable",
                        "message": links.unavailable_reason(artifact),
                        "artifact": str(artifact.id),
                    }
                },
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(
            {
                "id": str(artifact.id), "kind": artifact.kind, "content_type": artifact.content_type,
                "size": artifact.size, "sha256": artifact.sha256, "contact": artifact.contact_id,
                "task": artifact.task_id, "correlation_id": artifact.correlation_id,
                "occurred_at": artifact.occurred_at, "url": links.artifact_url(artifact_id=artifact.id),
                "url_expires_at": links.artifact_url_expires_at(),
            }
        )  # fmt: skip
