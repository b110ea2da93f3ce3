"""Profiles, audiences, CSV imports and quarantine over the same services as the pages."""

from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from audiences import selectors, services
from audiences.conditions import empty_conditions
from audiences.models import Audience, ImportJob, ImportRejection, Profile, Quarantine

from .fields import JSONObjectField, NullableJSONObjectField
from .permissions import read_write
from .queries import ProfileQuery, QuarantineQuery, validated
from .serializers import ErrorSerializer

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer}


# --- serializers ---------------------------------------------------------------------------------


class ProfileSerializer(serializers.ModelSerializer):
    attributes = JSONObjectField(required=False, help_text="Free attributes used in personalization: an object of names and values.")
    resubscribe_reason = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500,
        help_text="Needed (with Administration) to set email_denylisted or sms_denylisted back to false: "
        "re-subscribing a person who opted out is recorded with this reason.",
    )  # fmt: skip

    class Meta:
        model = Profile
        fields = ["id", "email", "phone", "first_name", "last_name", "language", "time_zone", "attributes",
                  "email_denylisted", "sms_denylisted", "resubscribe_reason", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


CONDITIONS_HELP = (
    'Filters only (a list leaves it null): {"op": "and"|"or", "conditions": [{"field": "language", "operator": '
    '"equals", "value": "fr"} | a nested group]}. Fields: email, first_name, last_name, phone, '
    "language, time_zone, created_at, updated_at, email_denylisted, sms_denylisted, attributes__<name>. "
    "Operators: equals, not_equals, contains, in, is_empty, is_not_empty, before, after. A new filter without "
    "conditions matches every profile until conditions are set."
)


class AudienceSerializer(serializers.ModelSerializer):
    size = serializers.SerializerMethodField()
    conditions = NullableJSONObjectField(required=False, allow_null=True, help_text=CONDITIONS_HELP)

    class Meta:
        model = Audience
        fields = ["id", "name", "description", "kind", "conditions", "size", "created_by", "created_at", "updated_at"]
        read_only_fields = ["created_by", "created_at", "updated_at"]

    def get_size(self, obj) -> int | None:
        """Profiles in the audience (detail only; null in lists)."""
        if self.context.get("with_size"):
            return selectors.audience_count(audience=obj)
        return None


class AudienceUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200)
    description = serializers.CharField(required=False, allow_blank=True)
    conditions = NullableJSONObjectField(required=False, allow_null=True)


class MembersSerializer(serializers.Serializer):
    profile_ids = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    emails = serializers.ListField(child=serializers.CharField(), required=False, default=list)

    def validate(self, attrs):
        if not attrs["profile_ids"] and not attrs["emails"]:
            raise serializers.ValidationError("Give profile_ids or emails.")
        return attrs


class RejectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportRejection
        fields = ["line", "column", "value", "reason"]


class ImportSerializer(serializers.ModelSerializer):
    percent = serializers.IntegerField(read_only=True)
    unchanged_count = serializers.IntegerField(read_only=True)
    rejections = serializers.SerializerMethodField()
    rejections_csv = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = ["id", "status", "message", "file_name", "size", "audience", "percent", "rows_read", "created_count",
                  "updated_count", "unchanged_count", "merged_count", "rejected_count", "columns", "created_by",
                  "created_at", "started_at", "finished_at", "rejections", "rejections_csv"]

    @extend_schema_field(RejectionSerializer(many=True))
    def get_rejections(self, obj) -> list[dict]:
        """The first 1,000 problems (line, column, value, reason); all of them in `rejections_csv`."""
        return RejectionSerializer(obj.rejections.all()[:1000], many=True).data

    def get_rejections_csv(self, obj) -> str:
        request = self.context.get("request")
        url = reverse("audiences:import-rejections-csv", args=[obj.pk])
        return request.build_absolute_uri(url) if request else url


class ImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A UTF-8 CSV file with a header and an `email` column.")


class ImportAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    url = serializers.CharField()


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField()


class QuarantineStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Quarantine.Status.choices,
        error_messages={
            "invalid_choice": "“{input}” is not a quarantine status: choose one of " + ", ".join(Quarantine.Status.values) + "."
        },
    )


class QuarantineSerializer(serializers.ModelSerializer):
    class Meta:
        model = Quarantine
        fields = ["id", "address", "channel", "status", "error_count", "last_error_at", "reason", "text",
                  "last_delivery_at", "created_at", "updated_at"]
        read_only_fields = [f for f in fields if f != "status"]


# --- views ---------------------------------------------------------------------------------------


class ProfileListView(generics.ListCreateAPIView):
    """Profiles (any role reads; creating needs Prepare deliveries). `?q=` searches email and names."""

    access = read_write("prepare")
    serializer_class = ProfileSerializer

    @extend_schema(parameters=[ProfileQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.profile_list(search=validated(ProfileQuery, self.request).get("q", ""))

    @extend_schema(request=ProfileSerializer, responses={201: ProfileSerializer, **ERRORS})
    def post(self, request, *args, **kwargs):
        data = ProfileSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        profile = services.profile_create(user=request.user, **data.validated_data)
        return Response(ProfileSerializer(profile).data, status=status.HTTP_201_CREATED)


class ProfileDetailView(generics.RetrieveUpdateAPIView):
    access = read_write("prepare")
    serializer_class = ProfileSerializer

    def get_object(self):
        return selectors.profile_get(pk=self.kwargs["pk"], user=self.request.user)

    def perform_update(self, serializer):
        services.profile_update(user=self.request.user, profile=serializer.instance, source="api", **serializer.validated_data)


class AudienceListView(generics.ListCreateAPIView):
    """Audiences (any role reads; creating needs Prepare deliveries)."""

    access = read_write("prepare")
    serializer_class = AudienceSerializer

    def get_queryset(self):
        return selectors.audience_list()

    @extend_schema(request=AudienceSerializer, responses={201: AudienceSerializer, **ERRORS})
    def post(self, request, *args, **kwargs):
        data = AudienceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        audience = services.audience_create(
            user=request.user, name=v["name"], kind=v.get("kind", Audience.Kind.LIST),
            description=v.get("description", ""),
            conditions=v.get("conditions") or (empty_conditions() if v.get("kind") == Audience.Kind.FILTER else None),
        )
        return Response(AudienceSerializer(audience, context={"with_size": True}).data, status=status.HTTP_201_CREATED)


class AudienceDetailView(APIView):
    """One audience with its size; PUT/PATCH renames it or changes a filter's conditions."""

    access = read_write("prepare")

    @extend_schema(responses={200: AudienceSerializer, **ERRORS})
    def get(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        return Response(AudienceSerializer(audience, context={"with_size": True}).data)

    @extend_schema(request=AudienceUpdateSerializer, responses={200: AudienceSerializer, **ERRORS})
    def put(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        data = AudienceUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.audience_update(user=request.user, audience=audience, **data.validated_data)
        return Response(AudienceSerializer(audience, context={"with_size": True}).data)

    @extend_schema(request=AudienceUpdateSerializer, responses={200: AudienceSerializer, **ERRORS})
    def patch(self, request, pk: int):
        return self.put(request, pk)


class AudienceMembersView(APIView):
    """A list's members: GET lists them, POST adds, DELETE removes (by profile id or email)."""

    access = read_write("prepare")

    @extend_schema(responses={200: ProfileSerializer(many=True), **ERRORS})
    def get(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        paginator = generics.GenericAPIView.pagination_class()
        page = paginator.paginate_queryset(selectors.audience_profiles(audience=audience).order_by("id"), request, view=self)
        return paginator.get_paginated_response(ProfileSerializer(page, many=True).data)

    @extend_schema(request=MembersSerializer, responses={200: CountSerializer, **ERRORS})
    def post(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        data = MembersSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.audience_members_add(user=request.user, audience=audience, **data.validated_data)
        return Response({"count": selectors.audience_count(audience=audience)})

    @extend_schema(request=MembersSerializer, responses={200: CountSerializer, **ERRORS})
    def delete(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        data = MembersSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.audience_members_remove(user=request.user, audience=audience, **data.validated_data)
        return Response({"count": selectors.audience_count(audience=audience)})


class AudienceCountView(APIView):
    """How many profiles the audience holds now (a filter is evaluated in SQL)."""

    access = "read"

    @extend_schema(responses={200: CountSerializer, **ERRORS})
    def get(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        return Response({"count": selectors.audience_count(audience=audience)})


class AudienceImportView(APIView):
    """Upload a CSV into a list (Generic import). Answers 202 with the import's id; follow it at
    GET /api/imports/{id}/."""

    access = "import"
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": ImportCreateSerializer}, responses={202: ImportAcceptedSerializer, **ERRORS})
    def post(self, request, pk: int):
        audience = selectors.audience_get(pk=pk, user=request.user)
        data = ImportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = services.import_create(user=request.user, uploaded=data.validated_data["file"], audience=audience, source="api")
        url = request.build_absolute_uri(reverse("api-import-detail", args=[job.pk]))
        return Response({"id": job.pk, "status": job.status, "url": url}, status=status.HTTP_202_ACCEPTED)


class ImportDetailView(APIView):
    """An import's status, counts and rejected rows."""

    access = "read"

    @extend_schema(responses={200: ImportSerializer, **ERRORS})
    def get(self, request, pk: int):
        job = selectors.import_get(pk=pk, user=request.user)
        return Response(ImportSerializer(job, context={"request": request}).data)


class QuarantineListView(generics.ListAPIView):
    """Quarantined addresses (Administration or Monitor deliveries), filterable."""

    access = "monitor"
    serializer_class = QuarantineSerializer

    @extend_schema(parameters=[QuarantineQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        p = validated(QuarantineQuery, self.request)
        return selectors.quarantine_list(status=p.get("status", ""), channel=p.get("channel", ""), address=p.get("address", ""))


class QuarantineDetailView(APIView):
    """One quarantine row: PATCH/PUT its status (audited), DELETE it (audited)."""

    access = "monitor"

    @extend_schema(responses={200: QuarantineSerializer, **ERRORS})
    def get(self, request, pk: int):
        return Response(QuarantineSerializer(get_object_or_404(Quarantine, pk=pk)).data)

    @extend_schema(
        request=QuarantineStatusSerializer,
        responses={200: QuarantineSerializer, **ERRORS},
    )
    def patch(self, request, pk: int):
        row = get_object_or_404(Quarantine, pk=pk)
        data = QuarantineStatusSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = services.quarantine_set_status(actor=request.user, quarantine=row, status=data.validated_data["status"], source="api")
        return Response(QuarantineSerializer(row).data)

    @extend_schema(
        request=QuarantineStatusSerializer,
        responses={200: QuarantineSerializer, **ERRORS},
    )
    def put(self, request, pk: int):
        return self.patch(request, pk)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request, pk: int):
        services.quarantine_delete(actor=request.user, quarantine=get_object_or_404(Quarantine, pk=pk), source="api")
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("profiles/", ProfileListView.as_view(), name="api-profiles"),
    path("profiles/<int:pk>/", ProfileDetailView.as_view(), name="api-profile"),
    path("audiences/", AudienceListView.as_view(), name="api-audiences"),
    path("audiences/<int:pk>/", AudienceDetailView.as_view(), name="api-audience"),
    path("audiences/<int:pk>/members/", AudienceMembersView.as_view(), name="api-audience-members"),
    path("audiences/<int:pk>/count/", AudienceCountView.as_view(), name="api-audience-count"),
    path("audiences/<int:pk>/imports/", AudienceImportView.as_view(), name="api-audience-imports"),
    path("imports/<int:pk>/", ImportDetailView.as_view(), name="api-import-detail"),
    path("quarantine/", QuarantineListView.as_view(), name="api-quarantine"),
    path("quarantine/<int:pk>/", QuarantineDetailView.as_view(), name="api-quarantine-row"),
]
