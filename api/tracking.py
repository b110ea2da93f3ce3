"""Tracking API: a profile's message history, a message's tracking logs and tracked URLs (read-only)."""

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from audiences.selectors import profile_get
from deliveries.models import Delivery, SendingLog, TrackedUrl
from deliveries.selectors import delivery_get
from tracking import selectors
from tracking.models import TrackingLog

from .queries import TrackingLogQuery, validated
from .views import ERRORS


class HistorySerializer(serializers.ModelSerializer):
    delivery_id = serializers.IntegerField(read_only=True)
    delivery_label = serializers.CharField(source="delivery.label", read_only=True)
    delivery_human_id = serializers.CharField(source="delivery.human_id", read_only=True)
    opens = serializers.IntegerField(read_only=True, help_text="Opens and mirror-page views by the person (machines left out).")
    clicks = serializers.IntegerField(read_only=True, help_text="Clicks by the person (machines left out).")
    opted_out = serializers.SerializerMethodField()

    class Meta:
        model = SendingLog
        fields = [
            "id", "delivery_id", "delivery_label", "delivery_human_id", "address", "status", "failure_type",
            "failure_reason", "event_at", "first_open_at", "first_click_at", "opens", "clicks", "opted_out",
        ]  # fmt: skip

    def get_opted_out(self, obj) -> bool:
        return bool(obj.optouts)


class TrackingLogSerializer(serializers.ModelSerializer):
    address = serializers.CharField(source="sending_log.address", read_only=True)
    url_label = serializers.SerializerMethodField()

    class Meta:
        model = TrackingLog
        fields = ["id", "at", "sending_log", "address", "kind", "tracked_url", "url_label", "is_machine", "machine_reason", "user_agent"]

    def get_url_label(self, obj) -> str:
        return (obj.tracked_url.label or obj.tracked_url.url) if obj.tracked_url else ""


class TrackedUrlSerializer(serializers.ModelSerializer):
    clicks = serializers.IntegerField(read_only=True, help_text="Clicks by people (opt-outs / views for those kinds).")
    unique_clicks = serializers.IntegerField(read_only=True, help_text="Recipients who clicked, people only.")
    machine_clicks = serializers.IntegerField(read_only=True, help_text="Clicks flagged as scanners or proxies.")

    class Meta:
        model = TrackedUrl
        fields = ["id", "label", "kind", "url", "is_template", "clicks", "unique_clicks", "machine_clicks"]


class ProfileHistoryView(generics.ListAPIView):
    """Every message sent to the profile, newest first, with sending status, opens and clicks."""

    access = "read"
    serializer_class = HistorySerializer

    @extend_schema(responses={200: HistorySerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        profile = profile_get(pk=self.kwargs["pk"], user=self.request.user)
        return selectors.profile_history(profile_id=profile.pk)


class DeliveryTrackingLogsView(generics.ListAPIView):
    """A message's tracking logs (opens, clicks, mirror-page views, opt-outs), newest first; machine hits flagged."""

    access = "read"
    serializer_class = TrackingLogSerializer

    @extend_schema(parameters=[TrackingLogQuery], responses={200: TrackingLogSerializer(many=True), **ERRORS})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        delivery = delivery_get(pk=self.kwargs["pk"], user=self.request.user, queryset=Delivery.objects.only("id"))
        p = validated(TrackingLogQuery, self.request)
        return selectors.delivery_tracking_logs(delivery_id=delivery.pk, kind=p.get("kind", ""), machine=p.get("machine", ""))


class DeliveryTrackedUrlsView(APIView):
    """A message's tracked URLs with clicks and unique clicks (people only)."""

    access = "read"

    @extend_schema(responses={200: TrackedUrlSerializer(many=True), **ERRORS})
    def get(self, request, pk: int):
        delivery = delivery_get(pk=pk, user=request.user, queryset=Delivery.objects.only("id"))
        return Response(TrackedUrlSerializer(selectors.delivery_tracked_urls(delivery_id=delivery.pk), many=True).data)


urlpatterns = [
    path("profiles/<int:pk>/history/", ProfileHistoryView.as_view(), name="api-profile-history"),
    path("deliveries/<int:pk>/tracking-logs/", DeliveryTrackingLogsView.as_view(), name="api-delivery-tracking-logs"),
    path("deliveries/<int:pk>/tracked-urls/", DeliveryTrackedUrlsView.as_view(), name="api-delivery-tracked-urls"),
]
