"""A million logs: the recompute reads them once, from indexes alone, and the Deployment window's
charts are drawn from rows the worker stored with the figures, not from the logs."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deliveries.models import FailureReason, FailureType, SendingStatus
from kpis import selectors
from kpis.models import KpiSnapshot
from kpis.services import _KPI_SQL, kpis_compute
from kpis.tasks import kpis_recompute
from tracking.models import TrackingLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended_send(make_delivery, add_logs, track, tracked_url):
    d = make_delivery("Winter sale")
    start = timezone.now() - timedelta(hours=3)
    logs = []
    for minute in range(0, 90, 7):  # processed over an hour and a half
        logs += add_logs(d, 3, SendingStatus.SENT, event_at=start + timedelta(minutes=minute))
    add_logs(d, 2, SendingStatus.FAILED, FailureType.HARD, FailureReason.USER_UNKNOWN, event_at=start + timedelta(minutes=5))
    url = tracked_url(d)
    for i, log in enumerate(logs[:12]):
        track(log, TrackingLog.Kind.OPEN, at=start + timedelta(minutes=30 + 20 * i))
        if i % 3 == 0:
            track(log, TrackingLog.Kind.CLICK, url=url, at=start + timedelta(minutes=31 + 20 * i))
    return d


def log_tables(queries) -> list[str]:
    return [q["sql"] for q in queries if "deliveries_sendinglog" in q["sql"] or "tracking_trackinglog" in q["sql"]]


def test_the_window_draws_the_charts_stored_with_the_figures_without_reading_the_logs(ended_send, ops, client):
    kpis_recompute.apply(args=[ended_send.pk])  # what the worker does after a send, hourly, or on Compute stats
    snapshot = KpiSnapshot.objects.get(delivery=ended_send)
    assert snapshot.charts_as_of == snapshot.computed_at
    client.force_login(ops)
    url = reverse("kpis:deployment-charts", args=[ended_send.pk])
    with CaptureQueriesContext(connection) as queries:
        stored = client.get(url).content.decode()
    assert log_tables(queries.captured_queries) == []
    assert "As of the figures computed at" in stored and "rect" in stored and "polyline" in stored

    # The same charts as read from the logs there and then.
    KpiSnapshot.objects.filter(pk=snapshot.pk).update(charts=None)
    with CaptureQueriesContext(connection) as queries:
        live = client.get(url).content.decode()
    assert log_tables(queries.captured_queries)
    assert stored.split("<p class=\"muted small\"")[0].strip() == live.strip()


def test_charts_of_figures_replaced_since_are_read_from_the_logs_until_the_next_recompute_stores_them(ended_send, ops, client):
    kpis_recompute.apply(args=[ended_send.pk])
    kpis_compute(delivery_id=ended_send.pk)  # newer figures; their charts are not stored yet
    snapshot = KpiSnapshot.objects.get(delivery=ended_send)
    assert selectors.stored_charts(snapshot) is None
    client.force_login(ops)
    page = client.get(reverse("kpis:deployment-charts", args=[ended_send.pk])).content.decode()
    assert "As of the figures computed at" not in page and "polyline" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres_only")
def test_the_recompute_reads_the_logs_from_indexes_alone(ended_send):
    """The plan PostgreSQL can take for the recompute's statement: every part an index-only scan
    (the sending logs' (delivery, status, id) index carries failure type and first open / click)."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE deliveries_sendinglog, tracking_trackinglog")  # as autovacuum leaves them
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(
            "EXPLAIN " + _KPI_SQL,
            {"d": ended_send.pk, "optout": "optout", "mirror": "mirror", "no": False},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using sending_log_status on deliveries_sendinglog" in plan, plan
    assert "Index Only Scan using tracking_log_kind on tracking_trackinglog" in plan
    assert "Heap Scan" not in plan and "Seq Scan" not in plan


@pytest.mark.usefixtures("postgres_only")
def test_the_progress_rate_and_the_processed_chart_read_the_partial_event_time_index(ended_send):
    """(delivery, event_at) holds only rows with an event time; the queries that read it ask for one."""
    from deliveries.models import SendingLog

    now = timezone.now()
    queries = [
        SendingLog.objects.filter(delivery_id=ended_send.pk, event_at__gt=now - timedelta(minutes=1)).values("id"),
        SendingLog.objects.filter(delivery=ended_send, event_at__isnull=False).values("event_at"),
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
    for qs in queries:
        plan = qs.explain()
        assert "sending_log_event_at" in plan, plan
