"""Messages (deliveries) over the same services as the pages."""

from datetime import timedelta

from django.http import Http404
from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from deliveries import lifecycle, selectors, services
from deliveries.models import Delivery, ExclusionLog, JournalEntry, MessageCategory, SendingLog

from .permissions import read_write
from .queries import DeliveryQuery, ExclusionQuery, SendingLogQuery, validated
from .serializers import ErrorSerializer

ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer, 409: ErrorSerializer}


class DeliverySerializer(serializers.ModelSerializer):
    human_id = serializers.CharField(read_only=True)
    logical_status = serializers.CharField(read_only=True)
    state_label = serializers.CharField(read_only=True, help_text="The state as people read it (e.g. “Waiting for approval: content, target”).")
    validity_hours = serializers.FloatField(required=False, min_value=0.01, max_value=84, help_text="At most 84 (3.5 days).")
    requires_approval = serializers.BooleanField(
        read_only=True, help_text="Set by Administration (the message's category, or every message), never by the author."
    )
    actions = serializers.SerializerMethodField(
        help_text="What you may do to this message now (the page's buttons): POST /api/deliveries/<id>/<action>/; "
        "“edit” is a PATCH, “delete” and “archive” a DELETE, “send-now” a confirm with send_now."
    )

    class Meta:
        model = Delivery
        fields = [
            "id", "human_id", "label", "channel", "sender_name", "sender_address", "reply_to", "subject", "html", "text",
            "audience", "schedule", "scheduled_at", "schedule_tz", "send_time", "send_time_attribute", "send_time_offset_hours",
            "first_due_at", "last_due_at", "validity_hours", "category", "requires_approval",
            "rate_limit_per_hour", "state", "state_label", "logical_status", "progress", "revision", "targeted_count",
            "to_deliver_count", "skipped_count", "warnings_count", "sent_count", "failed_count", "processed_count",
            "content_approved_by", "content_approved_at", "target_approved_by", "target_approved_at",
            "created_by", "created_at", "updated_at", "confirmed_by", "confirmed_at", "started_at", "finished_at",
            "archived_at", "archived_by", "actions",
        ]  # fmt: skip
        read_only_fields = [
            "archived_at", "archived_by", "first_due_at", "last_due_at",
            "state", "progress", "revision", "targeted_count", "to_deliver_count", "skipped_count", "warnings_count",
            "sent_count", "failed_count", "processed_count", "content_approved_by", "content_approved_at", "target_approved_by",
            "target_approved_at", "created_by", "created_at", "updated_at", "confirmed_by", "confirmed_at",
            "started_at", "finished_at",
        ]  # fmt: skip

    @extend_schema_field(serializers.ListField(child=serializers.ChoiceField(choices=lifecycle.USER_ACTIONS)))
    def get_actions(self, instance) -> list[str]:
        request = self.context.get("request")
        if request is None:
            return []
        actions = selectors.delivery_actions(delivery=instance, user=request.user)
        return [name for name in lifecycle.USER_ACTIONS if name in actions]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["validity_hours"] = round(instance.validity.total_seconds() / 3600, 2)
        return data

    def service_data(self) -> dict:
        data = dict(self.validated_data)
        hours = data.pop("validity_hours", None)
        if hours is not None:
            data["validity"] = timedelta(hours=hours)
        return data



class RevisionSerializer(serializers.Serializer):
    revision = serializers.IntegerField(required=False, help_text="The revision you reviewed; refused if the message changed since.")


class ConfirmSerializer(RevisionSerializer):
    send_now = serializers.BooleanField(
        required=False, default=False,
        help_text="Send now a message whose scheduled time has passed since it was saved (refused otherwise, code schedule_passed).",
    )  # fmt: skip


class ApproveSerializer(serializers.Serializer):
    part = serializers.ChoiceField(choices=["content", "target"])


class JournalSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = JournalEntry
        fields = ["at", "level", "text", "user"]


class ExclusionLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExclusionLog
        fields = ["id", "profile", "address", "cause", "found_at"]


class ExclusionCauseSerializer(serializers.Serializer):
    cause = serializers.CharField()
    label = serializers.CharField()
    count = serializers.IntegerField()


class SendingLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = SendingLog
        fields = ["id", "profile", "address", "status", "failure_type", "failure_reason", "failure_text", "exclusion_cause", "due_at", "attempts",
                  "next_attempt_at", "event_at", "message_id"]  # fmt: skip


def _get(request, pk) -> Delivery:
    return selectors.delivery_get(pk=pk, user=request.user)


@extend_schema_view(get=extend_schema(parameters=[DeliveryQuery]))
class DeliveryList(generics.ListCreateAPIView):
    """Messages, newest first (filter with ?status=<logical status>&channel=email&q=<label or DM id>;
    archived messages are left out, ?archived=1 lists them alone)."""

    access = read_write("prepare")
    serializer_class = DeliverySerializer

    def get_queryset(self):
        p = validated(DeliveryQuery, self.request)
        return selectors.delivery_list(
            status=p.get("status", ""), channel=p.get("channel", ""), search=p.get("q", ""), archived=bool(p.get("archived"))
        )

    def perform_create(self, serializer):
        serializer.instance = services.delivery_create(user=self.request.user, data=serializer.service_data())


class DeliveryDetail(generics.RetrieveUpdateDestroyAPIView):
    """A message. Updating content, audience or schedule after preparation sends it back to editing.
    DELETE removes a message never sent (204, Prepare deliveries) and archives one whose send ended
    (200 with the archived message: hidden from lists, history and KPIs kept; Prepare and Start
    deliveries); a send in progress is refused (409)."""

    access = read_write("prepare")
    serializer_class = DeliverySerializer

    def get_object(self):
        return _get(self.request, self.kwargs["pk"])

    @extend_schema(responses={200: DeliverySerializer, 204: None, **ERRORS})
    def delete(self, request, *args, **kwargs):
        d = self.get_object()
        if d.state in lifecycle.ACTIONS["delete"].sources:
            services.delivery_delete(delivery=d, user=request.user, source="api")
            return Response(status=status.HTTP_204_NO_CONTENT)
        if d.state in lifecycle.ACTIONS["archive"].sources:
            d = services.delivery_archive(delivery=d, user=request.user, source="api")
            return Response(DeliverySerializer(selectors.delivery_get(pk=d.pk, user=request.user), context={"request": request}).data)
        services.delivery_delete(delivery=d, user=request.user, source="api")  # refused with the sentence saying why

    def perform_update(self, serializer):
        serializer.instance = services.delivery_update(delivery=serializer.instance, user=self.request.user, data=serializer.service_data())


def _action(name, service, request_serializer=None, doc=""):
    class ActionView(APIView):
        access = lifecycle.ACTION_ACCESS[name]
        access_denied_message = lifecycle.ACTION_DENIED.get(name)

        @extend_schema(request=request_serializer, responses={200: DeliverySerializer, 201: DeliverySerializer, **ERRORS}, description=doc, operation_id=f"deliveries_{name.replace('-', '_')}")
        def post(self, request, pk):
            d = _get(request, pk)
            kwargs = {}
            if request_serializer is not None:
                s = request_serializer(data=request.data)
                s.is_valid(raise_exception=True)
                kwargs = dict(s.validated_data)
            result = service(delivery=d, user=request.user, **kwargs)
            code = status.HTTP_201_CREATED if name == "duplicate" else status.HTTP_200_OK
            return Response(DeliverySerializer(selectors.delivery_get(pk=result.pk, user=request.user), context={"request": request}).data, status=code)

    ActionView.__name__ = f"Delivery{name.title().replace('-', '')}"
    return ActionView.as_view()


class Paginated(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class JournalList(generics.ListAPIView):
    access = "read"
    serializer_class = JournalSerializer

    def get_queryset(self):
        return selectors.journal_list(delivery=_get(self.request, self.kwargs["pk"]), limit=None)


class ExclusionLogList(generics.ListAPIView):
    access = "read"
    serializer_class = ExclusionLogSerializer
    pagination_class = Paginated

    @extend_schema(parameters=[ExclusionQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.exclusion_logs(delivery=_get(self.request, self.kwargs["pk"]), cause=validated(ExclusionQuery, self.request).get("cause", ""))


class ExclusionCauseList(APIView):
    access = "read"

    @extend_schema(responses={200: ExclusionCauseSerializer(many=True), **ERRORS})
    def get(self, request, pk):
        return Response(ExclusionCauseSerializer(selectors.exclusion_causes(delivery=_get(request, pk)), many=True).data)


class SendingLogList(generics.ListAPIView):
    access = "read"
    serializer_class = SendingLogSerializer
    pagination_class = Paginated

    @extend_schema(parameters=[SendingLogQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        p = validated(SendingLogQuery, self.request)
        return selectors.sending_logs(delivery=_get(self.request, self.kwargs["pk"]), status=p.get("status", ""), reason=p.get("reason", ""))


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageCategory
        fields = ["id", "name", "requires_approval"]


class CategoryUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=100)
    requires_approval = serializers.BooleanField(required=False)


class ApprovalPolicySerializer(serializers.Serializer):
    require_for_all = serializers.BooleanField(help_text="Every message needs approval, whatever its category.")


class CategoryList(APIView):
    """Message categories (any role reads; Administration adds). A message has one; Administration
    decides per category whether its messages need approval. Every change is journaled."""

    access = read_write("administer")

    @extend_schema(responses={200: CategorySerializer(many=True), **ERRORS})
    def get(self, request):
        return Response(CategorySerializer(MessageCategory.objects.order_by("name"), many=True).data)

    @extend_schema(request=CategorySerializer, responses={201: CategorySerializer, **ERRORS})
    def post(self, request):
        s = CategorySerializer(data=request.data)
        s.is_valid(raise_exception=True)
        category = services.category_create(user=request.user, source="api", **s.validated_data)
        return Response(CategorySerializer(category).data, status=status.HTTP_201_CREATED)


class CategoryDetail(APIView):
    access = read_write("administer")

    def _get(self, pk) -> MessageCategory:
        category = MessageCategory.objects.filter(pk=pk).first()
        if category is None:
            raise Http404("No message category with this id.")
        return category

    @extend_schema(responses={200: CategorySerializer, **ERRORS})
    def get(self, request, pk):
        return Response(CategorySerializer(self._get(pk)).data)

    @extend_schema(request=CategoryUpdateSerializer, responses={200: CategorySerializer, **ERRORS})
    def patch(self, request, pk):
        category = self._get(pk)
        s = CategoryUpdateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        return Response(CategorySerializer(services.category_update(user=request.user, category=category, source="api", **s.validated_data)).data)


class ApprovalPolicyView(APIView):
    """Whether every message needs approval, whatever its category (any role reads; Administration sets it)."""

    access = read_write("administer")

    @extend_schema(responses={200: ApprovalPolicySerializer, **ERRORS})
    def get(self, request):
        return Response({"require_for_all": services.approval_policy_get().require_for_all})

    @extend_schema(request=ApprovalPolicySerializer, responses={200: ApprovalPolicySerializer, **ERRORS})
    def put(self, request):
        s = ApprovalPolicySerializer(data=request.data)
        s.is_valid(raise_exception=True)
        policy = services.approval_policy_set(user=request.user, require_for_all=s.validated_data["require_for_all"], source="api")
        return Response({"require_for_all": policy.require_for_all})


urlpatterns = [
    path("categories/", CategoryList.as_view(), name="api-categories"),
    path("categories/<int:pk>/", CategoryDetail.as_view(), name="api-category"),
    path("approval-policy/", ApprovalPolicyView.as_view(), name="api-approval-policy"),
    path("deliveries/", DeliveryList.as_view(), name="api-deliveries"),
    path("deliveries/<int:pk>/", DeliveryDetail.as_view(), name="api-delivery"),
    path("deliveries/<int:pk>/duplicate/", _action("duplicate", services.delivery_duplicate, doc="A copy in editing; the schedule is cleared."), name="api-delivery-duplicate"),
    path("deliveries/<int:pk>/prepare/", _action("prepare", services.delivery_prepare, doc="Start the preparation (asynchronous)."), name="api-delivery-prepare"),
    path("deliveries/<int:pk>/stop-preparation/", _action("stop-preparation", services.delivery_stop_preparation), name="api-delivery-stop-preparation"),
    path("deliveries/<int:pk>/approve/", _action("approve", services.delivery_approve, ApproveSerializer, doc="Approve the content or the target of someone else's message."), name="api-delivery-approve"),
    path("deliveries/<int:pk>/confirm/", _action("confirm", services.delivery_confirm, ConfirmSerializer, doc="Confirm send (Start deliveries)."), name="api-delivery-confirm"),
    path("deliveries/<int:pk>/pause/", _action("pause", services.delivery_pause), name="api-delivery-pause"),
    path("deliveries/<int:pk>/resume/", _action("resume", services.delivery_resume), name="api-delivery-resume"),
    path("deliveries/<int:pk>/stop/", _action("stop", services.delivery_stop), name="api-delivery-stop"),
    path("deliveries/<int:pk>/resend-unknown/", _action("resend-unknown", services.delivery_resend_unknown,
         doc="Resend the messages in an unknown state (Start deliveries): recipients who got the first copy get a second."),
         name="api-delivery-resend-unknown"),  # fmt: skip
    path("deliveries/<int:pk>/journal/", JournalList.as_view(), name="api-delivery-journal"),
    path("deliveries/<int:pk>/exclusion-logs/", ExclusionLogList.as_view(), name="api-delivery-exclusion-logs"),
    path("deliveries/<int:pk>/exclusion-causes/", ExclusionCauseList.as_view(), name="api-delivery-exclusion-causes"),
    path("deliveries/<int:pk>/sending-logs/", SendingLogList.as_view(), name="api-delivery-sending-logs"),
]
