"""Deployments, alerts and system health over the ops app's selectors and services."""

from django.http import Http404
from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ops import selectors
from ops.health import PARTS, system_health_cached
from ops.models import Alert
from ops.services import alert_acknowledge

from .queries import AlertQuery, DeploymentsQuery, validated
from .serializers import ErrorSerializer
from .views import ERRORS

RATE = {"max_digits": 5, "decimal_places": 1, "coerce_to_string": False, "allow_null": True}


class DeploymentRowSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="delivery.pk")
    human_id = serializers.CharField(source="delivery.human_id")
    label = serializers.CharField(source="delivery.label")
    channel = serializers.CharField(source="delivery.channel")
    state = serializers.CharField(source="delivery.state")
    logical_status = serializers.CharField(source="delivery.logical_status")
    owner = serializers.CharField(source="delivery.created_by.username", allow_null=True, default=None)
    scheduled_at = serializers.DateTimeField(source="delivery.scheduled_at", allow_null=True)
    started_at = serializers.DateTimeField(source="delivery.started_at", allow_null=True)
    finished_at = serializers.DateTimeField(source="delivery.finished_at", allow_null=True)
    to_deliver = serializers.IntegerField(source="delivery.to_deliver_count")
    processed = serializers.IntegerField(help_text="Delivered + bounces and errors (live counters).")
    delivered = serializers.IntegerField(source="delivery.sent_count")
    bounces = serializers.IntegerField(source="delivery.failed_count", help_text="Bounces + errors (live counter).")
    sent_rate = serializers.DecimalField(source="rates.sent", help_text="Processed / to deliver, %.", **RATE)
    delivered_rate = serializers.DecimalField(source="rates.delivered", help_text="Delivered / processed, %.", **RATE)
    bounce_rate = serializers.DecimalField(source="rates.bounces", help_text="Bounces + errors / processed, %.", **RATE)
    open_rate = serializers.DecimalField(
        source="rates.open", help_text="Unique opens / delivered from the last KPI computation, %.", **RATE
    )
    click_rate = serializers.DecimalField(
        source="rates.click", help_text="Unique clicks / delivered from the last KPI computation, %.", **RATE
    )
    has_open_alert = serializers.BooleanField(source="delivery.has_open_alert")


class SendingRowSerializer(DeploymentRowSerializer):
    percent = serializers.IntegerField(source="progress.percent")
    rate_per_minute = serializers.IntegerField(
        source="progress.rate_per_minute", help_text="Messages whose status changed during the last minute."
    )
    eta = serializers.DateTimeField(
        source="progress.eta", allow_null=True, help_text="When the first pass should end at the current rate."
    )


class TotalsSerializer(serializers.Serializer):
    messages = serializers.IntegerField()
    recipients = serializers.IntegerField(help_text="Messages to deliver, all listed sends together.")
    processed = serializers.IntegerField()
    delivered = serializers.IntegerField()
    bounces = serializers.IntegerField()
    delivered_rate = serializers.DecimalField(source="rates.delivered", **RATE)
    bounce_rate = serializers.DecimalField(source="rates.bounces", **RATE)
    open_rate = serializers.DecimalField(source="rates.open", **RATE)
    click_rate = serializers.DecimalField(source="rates.click", **RATE)


class HourSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    processed = serializers.IntegerField()


class DeploymentsSerializer(serializers.Serializer):
    period = serializers.CharField()
    unit = serializers.CharField(help_text="hour, or day for a period longer than a week.")
    now_sending = SendingRowSerializer(many=True)
    coming_up = DeploymentRowSerializer(many=True)
    recently_sent = DeploymentRowSerializer(many=True)
    recently_sent_count = serializers.IntegerField()
    totals = TotalsSerializer()
    processed_per_hour = HourSerializer(many=True)


class AlertSerializer(serializers.ModelSerializer):
    delivery_label = serializers.CharField(source="delivery.label")
    criterion_label = serializers.CharField(source="get_criterion_display")
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", allow_null=True, default=None)

    class Meta:
        model = Alert
        fields = ["id", "delivery", "delivery_label", "criterion", "criterion_label", "day", "raised_at", "summary",
                  "emailed_at", "acknowledged_at", "acknowledged_by"]  # fmt: skip


class DeploymentsView(APIView):
    """The deployment dashboard: now sending, coming up, recently sent (filtered, sorted), totals and
    messages processed per hour. Monitor deliveries or Administration."""

    access = "monitor"

    @extend_schema(parameters=[DeploymentsQuery], responses={200: DeploymentsSerializer, **ERRORS})
    def get(self, request):
        query = validated(DeploymentsQuery, request)
        filters = selectors.filters_from({k: str(v) for k, v in query.items()})
        limit = query.get("limit", 50)
        recent = selectors.recent_queryset(filters)
        unit, hours = selectors.processed_per_hour(recent, since=filters.since)
        data = {
            "period": filters.period,
            "unit": unit,
            "now_sending": selectors.now_sending(),
            "coming_up": selectors.coming_up(),
            "recently_sent": selectors.recently_sent(recent[:limit]),
            "recently_sent_count": recent.count(),
            "totals": selectors.totals(recent),
            "processed_per_hour": [{"at": at, "processed": n} for at, n in hours],
        }
        return Response(DeploymentsSerializer(data).data)


class AlertListView(generics.ListAPIView):
    """Alerts, newest first. Monitor deliveries or Administration."""

    access = "monitor"
    serializer_class = AlertSerializer

    @extend_schema(parameters=[AlertQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        p = validated(AlertQuery, self.request)
        return selectors.alert_list(
            open_only=bool(p.get("open")), delivery_id=p.get("delivery"), criterion=p.get("criterion", "")
        )


class AlertAcknowledgeView(APIView):
    """Acknowledge an alert (who, when). 409 when it was already acknowledged."""

    access = "monitor"

    @extend_schema(request=None, responses={200: AlertSerializer, **ERRORS})
    def post(self, request, pk: int):
        if not Alert.objects.filter(pk=pk).exists():
            raise Http404(f"There is no alert {pk}: check the id.")
        alert = alert_acknowledge(alert=pk, user=request.user)
        return Response(AlertSerializer(selectors.alert_list().get(pk=alert.pk)).data)


_part = inline_serializer(
    "HealthPart",
    {
        "status": serializers.CharField(help_text="ok or down"),
        "detail": serializers.CharField(),
        "count": serializers.IntegerField(required=False, help_text="workers: how many answered the ping"),
        "length": serializers.IntegerField(required=False, allow_null=True, help_text="queue: tasks waiting"),
        "last_run": serializers.DateTimeField(required=False, allow_null=True, help_text="beat: its last heartbeat"),
        "age_seconds": serializers.IntegerField(required=False, allow_null=True),
    },
)
HealthSerializer = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(help_text="ok when every part is ok, else failing"),
        "failing": serializers.ListField(
            child=serializers.CharField(), help_text=f"The parts that are down, among {', '.join(PARTS)}."
        ),
        "checked_at": serializers.DateTimeField(),
        "parts": inline_serializer("HealthParts", {name: _part for name in PARTS}),
    },
)


class HealthView(APIView):
    """System health for load balancers and monitors: public, no secrets. 200 when every part is
    well, 503 naming the failing parts (database, broker, workers, queue, beat, relay: the SMTP mail
    relay, probed with NOOP; "ok", not checked, when mail goes through a non-SMTP backend)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer, 400: ErrorSerializer})
    def get(self, request):
        health = system_health_cached()
        response = Response(
            health.as_dict(), status=status.HTTP_200_OK if health.ok else status.HTTP_503_SERVICE_UNAVAILABLE
        )
        response["Cache-Control"] = "no-store"
        return response


urlpatterns = [
    path("deployments/", DeploymentsView.as_view(), name="api-deployments"),
    path("alerts/", AlertListView.as_view(), name="api-alerts"),
    path("alerts/<int:pk>/acknowledge/", AlertAcknowledgeView.as_view(), name="api-alert-acknowledge"),
    path("health/", HealthView.as_view(), name="api-health"),
]
