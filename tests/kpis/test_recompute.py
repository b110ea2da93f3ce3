"""The hourly recompute, Compute stats and its lock."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from deliveries.models import SendingStatus, State
from kpis.models import KpiSnapshot
from kpis.services import kpis_compute, kpis_compute_request
from kpis.tasks import kpis_recompute_recent


def test_beat_recomputes_every_interval_set_in_settings():
    entry = settings.CELERY_BEAT_SCHEDULE["kpis-recompute-recent"]
    assert entry["task"] == "kpis.recompute_recent"
    assert entry["schedule"] == float(settings.KPI_RECOMPUTE_INTERVAL) == 3600.0


def test_the_hourly_task_recomputes_only_messages_sent_in_the_last_30_days(
    make_delivery, add_logs, django_capture_on_commit_callbacks
):
    now = timezone.now()
    recent = make_delivery("Sent two days ago", started_at=now - timedelta(days=2), finished_at=now - timedelta(days=2))
    sending = make_delivery("Sending now", state=State.IN_PROGRESS, started_at=now - timedelta(minutes=5))
    old = make_delivery("Sent in spring", started_at=now - timedelta(days=40), finished_at=now - timedelta(days=40))
    draft = make_delivery("Draft", state=State.EDITING)
    ready = make_delivery("Prepared, not confirmed", state=State.READY)
    for d in (recent, sending, old, draft, ready):
        add_logs(d, 3, SendingStatus.SENT if d in (recent, old) else SendingStatus.PENDING)
    busy = make_delivery("Being recomputed", started_at=now - timedelta(days=1), finished_at=now - timedelta(days=1))
    KpiSnapshot.objects.create(delivery=busy, computing_since=now - timedelta(seconds=20))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        kpis_recompute_recent.delay()

    computed = set(KpiSnapshot.objects.filter(computed_at__isnull=False).values_list("delivery_id", flat=True))
    assert computed == {recent.pk, sending.pk}
    assert len(callbacks) == 2  # one recompute per message, none for the one already running
    assert KpiSnapshot.objects.get(pk=recent.pk).delivered == 3
    assert KpiSnapshot.objects.get(pk=busy.pk).computing_since is not None  # left to the running recompute


def test_compute_stats_clicked_twice_computes_once_and_says_so(
    client, marketer, make_delivery, add_logs, django_capture_on_commit_callbacks
):
    d = make_delivery()
    add_logs(d, 5, SendingStatus.SENT)
    client.force_login(marketer)
    url = reverse("kpis:compute-stats", args=[d.pk])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = client.post(url, {"window": "1"}, HTTP_HX_REQUEST="true")
        second = client.post(url, {"window": "1"}, HTTP_HX_REQUEST="true")
    assert len(callbacks) == 1  # one recompute enqueued
    assert "Computing…" in first.content.decode()
    assert 'hx-trigger="every' in first.content.decode()  # the block polls until the figures arrive
    text = second.content.decode()
    assert "Statistics are already being computed for this message" in text
    assert "no need to click again" in text

    callbacks[0]()  # the worker runs the recompute
    snap = KpiSnapshot.objects.get(pk=d.pk)
    assert snap.delivered == 5 and snap.computed_at and snap.computing_since is None
    html = client.get(reverse("kpis:deployment-kpis", args=[d.pk]) + "?window=1").content.decode()
    assert "Computing…" not in html and "hx-trigger" not in html and "Computed at" in html

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(url)
    assert len(callbacks) == 1  # once done, a new click computes again


def test_without_htmx_compute_stats_redirects_with_a_message(
    client, ops, make_delivery, django_capture_on_commit_callbacks
):
    d = make_delivery()
    client.force_login(ops)  # Monitor deliveries may compute stats
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("kpis:compute-stats", args=[d.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("kpis:deployment", args=[d.pk])
    assert "Computing the statistics" in response.content.decode()
    assert KpiSnapshot.objects.get(pk=d.pk).computed_at is not None


def test_a_stale_lock_does_not_block_compute_stats_forever(marketer, make_delivery, django_capture_on_commit_callbacks):
    d = make_delivery()
    stale = timezone.now() - timedelta(seconds=settings.KPI_COMPUTE_LOCK_TIMEOUT + 1)
    KpiSnapshot.objects.create(delivery=d, computing_since=stale)  # its task vanished (broker restart)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        kpis_compute_request(delivery=d, user=marketer)
    assert len(callbacks) == 1 and KpiSnapshot.objects.get(pk=d.pk).computed_at is not None


@pytest.mark.parametrize("who", ["preparer", "approver"])
def test_compute_stats_needs_start_or_monitor_deliveries(client, request, who, make_delivery):
    d = make_delivery()
    user = request.getfixturevalue(who)
    client.force_login(user)
    response = client.post(reverse("kpis:compute-stats", args=[d.pk]))
    assert response.status_code == 403
    assert "Monitor deliveries" in response.content.decode()
    with pytest.raises(Exception, match="Start deliveries"):
        kpis_compute_request(delivery=d, user=user)
    assert not KpiSnapshot.objects.filter(pk=d.pk).exists()


def test_compute_stats_is_refused_for_a_message_not_sent(marketer, make_delivery):
    d = make_delivery("Draft", state=State.EDITING)
    with pytest.raises(Exception, match="has not been sent yet"):
        kpis_compute_request(delivery=d, user=marketer)


def test_when_a_send_ends_the_block_brings_the_figures_up_to_date_once(
    client, marketer, make_delivery, add_logs, django_capture_on_commit_callbacks
):
    d = make_delivery()
    add_logs(d, 4, SendingStatus.SENT)
    kpis_compute(delivery_id=d.pk)
    KpiSnapshot.objects.filter(pk=d.pk).update(computed_at=d.finished_at - timedelta(minutes=5))  # computed mid-send
    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        html = client.get(reverse("kpis:deployment-kpis", args=[d.pk])).content.decode()
        client.get(reverse("kpis:deployment-kpis", args=[d.pk]))
    assert len(callbacks) == 1
    assert KpiSnapshot.objects.get(pk=d.pk).computed_at > d.finished_at
    assert "Computed at" in html


def test_a_broker_outage_releases_the_lock(marketer, make_delivery, monkeypatch, django_capture_on_commit_callbacks):
    from kpis import tasks

    def unreachable(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.kpis_recompute, "delay", unreachable)
    d = make_delivery()
    with pytest.raises(ConnectionError), django_capture_on_commit_callbacks(execute=True):
        kpis_compute_request(delivery=d, user=marketer)
    assert KpiSnapshot.objects.get(pk=d.pk).computing_since is None  # the next click can try again
