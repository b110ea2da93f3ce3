"""The KPI API and the message list's mini KPIs."""

from django.template import Context, Template

from deliveries.models import Delivery, FailureReason, FailureType, SendingStatus, State
from kpis.models import KpiSnapshot
from kpis.services import kpis_compute
from tracking.models import TrackingLog


def test_kpis_api_gives_figures_rates_and_computed_at(client, approver, make_delivery, add_logs, track):
    d = make_delivery()
    logs = add_logs(d, 8, SendingStatus.SENT)
    add_logs(d, 2, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN)
    track(logs[0], TrackingLog.Kind.CLICK)
    kpis_compute(delivery_id=d.pk)
    client.force_login(approver)  # any role reads KPIs
    data = client.get(f"/api/deliveries/{d.pk}/kpis/").json()
    assert (data["to_deliver"], data["sent"], data["delivered"], data["bounces"]) == (10, 10, 8, 2)
    assert (data["unique_opens"], data["unique_clicks"]) == (1, 1)
    assert data["rates"]["delivered"] == 80.0 and data["rates"]["bounces"] == 20.0
    assert data["rates"]["open"] == 12.5 and data["rates"]["click_through"] == 12.5
    assert data["computed_at"] and data["computing"] is False


def test_kpis_api_of_a_message_never_computed_has_null_rates(client, ops, make_delivery):
    d = make_delivery("Draft", state=State.EDITING)
    client.force_login(ops)
    data = client.get(f"/api/deliveries/{d.pk}/kpis/").json()
    assert data["computed_at"] is None and data["rates"]["open"] is None and data["to_deliver"] == 0


def test_compute_stats_api_accepts_once_then_409_with_the_reason(
    client, ops, make_delivery, django_capture_on_commit_callbacks
):
    d = make_delivery()
    client.force_login(ops)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = client.post(f"/api/deliveries/{d.pk}/compute-stats/")
        second = client.post(f"/api/deliveries/{d.pk}/compute-stats/")
    assert first.status_code == 202 and len(callbacks) == 1
    assert second.status_code == 409
    assert second.json()["code"] == "compute_running"
    assert "already being computed" in second.json()["detail"]
    assert client.get(f"/api/deliveries/{d.pk}/kpis/").json()["computing"] is True


def test_compute_stats_api_needs_a_role_that_may(client, preparer, make_delivery):
    d = make_delivery()
    client.force_login(preparer)
    response = client.post(f"/api/deliveries/{d.pk}/compute-stats/")
    assert response.status_code == 403 and "Start deliveries" in response.json()["detail"]


def test_mini_kpis_for_fifty_messages_cost_one_query(make_delivery, add_logs, track, django_assert_num_queries):
    for i in range(50):
        d = make_delivery(f"Message {i}", to_deliver_count=4)
        if i % 2:
            logs = add_logs(d, 4, SendingStatus.SENT)
            track(logs[0], TrackingLog.Kind.OPEN)
            kpis_compute(delivery_id=d.pk)
    template = Template("{% load kpis_tags %}{% for d in deliveries %}{% mini_kpis d %}{% endfor %}")
    with django_assert_num_queries(1):
        html = template.render(Context({"deliveries": Delivery.objects.select_related("kpis")[:50]}))
    assert html.count('data-testid="mini-kpis"') == 50
    assert html.count("25.0%") == 25  # open rate of the computed ones: 1 of 4 delivered
    assert KpiSnapshot.objects.count() == 25
