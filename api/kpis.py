"""KPIs, Compute stats and live progress over the kpis app's services and selectors."""

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from deliveries import selectors as deliveries_selectors
from deliveries.models import Delivery
from kpis import selectors
from kpis.figures import RATES, kpi_rates
from kpis.services import kpis_compute_request

from .views import ERRORS


def _delivery(request, pk: int) -> Delivery:
    return selectors.delivery_get(pk=pk, user=request.user)


_FORMULAS = {key: str(formula) for key, _label, _num, _den, formula in RATES}


def _rate(key: str):
    return serializers.DecimalField(
        max_digits=5, decimal_places=1, coerce_to_string=False, allow_null=True, help_text=_FORMULAS[key]
    )


class RatesSerializer(serializers.Serializer):
    """Percentages rounded to one decimal; null when the denominator is 0 (pages show "–")."""

    sent = _rate("sent")
    delivered = _rate("delivered")
    bounces = _rate("bounces")
    hard_bounces = _rate("hard_bounces")
    soft_bounces = _rate("soft_bounces")
    open = _rate("open")
    click_through = _rate("click_through")
    unsubscribe = _rate("unsubscribe")
    mirror_page = _rate("mirror_page")


class KpiSerializer(serializers.Serializer):
    delivery = serializers.IntegerField(source="delivery_id")
    to_deliver = serializers.IntegerField(
        help_text="Sending logs created by preparation (targeted − excluded), less the recipients who left since."
    )
    skipped = serializers.IntegerField(
        help_text="Recipients who left since preparation (unsubscribed, denylisted, quarantined, deleted): not sent."
    )
    sent = serializers.IntegerField(help_text="Delivered + bounces and errors.")
    delivered = serializers.IntegerField(help_text="count(status = sent)")
    bounces = serializers.IntegerField(help_text="Bounces + errors: count(status = failed)")
    hard_bounces = serializers.IntegerField()
    soft_bounces = serializers.IntegerField()
    unknown = serializers.IntegerField(help_text="Logs whose worker died mid-send (never resent automatically).")
    cancelled = serializers.IntegerField(help_text="Logs not sent because the send was stopped.")
    pending = serializers.IntegerField(help_text="Logs not final yet (waiting, being sent, or waiting for a retry).")
    unique_opens = serializers.IntegerField(
        help_text="Sending logs with at least one human open, click, mirror-page view or opt-out."
    )
    unique_clicks = serializers.IntegerField(help_text="Sending logs with at least one human click.")
    opt_outs = serializers.IntegerField()
    mirror_pages = serializers.IntegerField()
    rates = serializers.SerializerMethodField()
    computed_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(help_text="How long the last computation took.")
    computing = serializers.SerializerMethodField()
    computing_since = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(RatesSerializer)
    def get_rates(self, obj):
        return RatesSerializer(kpi_rates(obj)).data

    @extend_schema_field(
        serializers.BooleanField(help_text="A recompute is running (Compute stats is refused meanwhile).")
    )
    def get_computing(self, obj) -> bool:
        return selectors.snapshot_is_computing(obj)


class ProgressSerializer(serializers.Serializer):
    state = serializers.CharField()
    processed = serializers.IntegerField(help_text="Logs final: sent, failed, unknown or cancelled.")
    to_deliver = serializers.IntegerField()
    percent = serializers.IntegerField()
    sent = serializers.IntegerField(help_text="Delivered so far (live counter).")
    failed = serializers.IntegerField(help_text="Bounces + errors so far (live counter).")
    rate_per_minute = serializers.IntegerField(help_text="Messages whose status changed during the last minute.")
    eta = serializers.DateTimeField(allow_null=True, help_text="When the first pass should end at the current rate.")
    eta_seconds = serializers.IntegerField(allow_null=True)


class ComputeAcceptedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()


class DeliveryKpisView(APIView):
    """The KPIs of a message (DOMAIN.md §4): figures, rates, when they were computed."""

    access = "read"

    @extend_schema(responses={200: KpiSerializer, **ERRORS})
    def get(self, request, pk: int):
        delivery = _delivery(request, pk)
        snapshot = selectors.snapshot_of(delivery)
        if snapshot is None:
            from kpis.models import KpiSnapshot

            snapshot = KpiSnapshot(delivery=delivery)  # all zero, never computed
        return Response(KpiSerializer(snapshot).data)


class DeliveryComputeStatsView(APIView):
    """Compute stats: enqueue a recompute now (202). 409 with the reason while one is running."""

    access = "compute_stats"

    @extend_schema(request=None, responses={202: ComputeAcceptedSerializer, **ERRORS})
    def post(self, request, pk: int):
        delivery = _delivery(request, pk)
        kpis_compute_request(delivery=delivery, user=request.user)
        return Response(
            {"detail": "The statistics are being computed: GET the KPIs again in a moment.", "code": "computing"},
            status=status.HTTP_202_ACCEPTED,
        )


class DeliveryProgressView(APIView):
    """Live progress of a send: processed / to deliver, the rate over the last minute, the ETA."""

    access = "read"

    @extend_schema(responses={200: ProgressSerializer, **ERRORS})
    def get(self, request, pk: int):
        delivery = deliveries_selectors.delivery_get(
            pk=pk, user=request.user,
            queryset=Delivery.objects.only("id", "state", "started_at", "to_deliver_count", "processed_count", "sent_count", "failed_count"),
        )  # fmt: skip
        return Response(ProgressSerializer(selectors.delivery_progress(delivery=delivery)).data)


urlpatterns = [
    path("deliveries/<int:pk>/kpis/", DeliveryKpisView.as_view(), name="api-delivery-kpis"),
    path("deliveries/<int:pk>/compute-stats/", DeliveryComputeStatsView.as_view(), name="api-delivery-compute-stats"),
    path("deliveries/<int:pk>/progress/", DeliveryProgressView.as_view(), name="api-delivery-progress"),
]
