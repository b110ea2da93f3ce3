"""Progress, rate and ETA during a real send: real Celery worker, real SMTP server (slowed down so the
send lasts a few seconds), then the KPIs once it ends."""

import asyncio
import time

import pytest
from django.test import Client

from deliveries.models import Delivery, State
from deliveries.services import delivery_confirm, delivery_create, delivery_prepare_run
from kpis.models import KpiSnapshot
from kpis.selectors import delivery_progress
from tests.deliveries.conftest import HTML, make_audience, make_profiles

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_progress_rate_and_eta_follow_a_real_send(celery_worker, smtp_server, marketer, ops, settings):
    settings.SEND_CHUNK, settings.SEND_CONNECTIONS = 5, 1  # one connection to a slow relay: a send of seconds
    emails = [f"reader{i:03d}@example.com" for i in range(120)]
    for address in emails[:6]:
        smtp_server.set_reply(address, "550 5.1.1 User unknown")
    accept = smtp_server.handle_DATA

    async def slow_data(server, session, envelope):  # ~40 ms a message: the send takes a few seconds
        await asyncio.sleep(0.04)
        return await accept(server, session, envelope)

    smtp_server.handle_DATA = slow_data
    profiles = make_profiles(emails)
    d = delivery_create(
        user=marketer,
        data={
            "label": "Progress",
            "sender_name": "Shop",
            "sender_address": "news@shop.example.com",
            "subject": "Hi",
            "html": HTML,
            "audience": make_audience(profiles),
        },  # fmt: skip
    )
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)
    d.refresh_from_db()
    assert d.state == State.READY and d.to_deliver_count == 120
    delivery_confirm(delivery=d, user=marketer)

    api = Client()
    api.force_login(ops)
    samples, deadline = [], time.monotonic() + 90
    while time.monotonic() < deadline:
        d.refresh_from_db()
        if d.state in (State.FINISHED, State.FAILED):
            break
        samples.append((delivery_progress(delivery=d), api.get(f"/api/deliveries/{d.pk}/progress/").json()))
        time.sleep(0.25)
    assert d.state == State.FINISHED, d.state

    moving = [(p, j) for p, j in samples if p.is_sending and 0 < p.processed < p.to_deliver]
    assert len(moving) >= 3, "the send ended before progress could be observed"
    processed = [p.processed for p, _j in moving]
    assert processed == sorted(processed) and processed[0] < processed[-1]  # the bar only moves forward
    assert all(p.to_deliver == 120 for p, _j in moving)
    with_rate = [(p, j) for p, j in moving if p.rate_per_minute > 0]
    assert with_rate, "no rate while messages were going out"
    p, j = with_rate[-1]
    assert p.eta is not None and 0 <= p.eta_seconds <= 600
    # the ETA is the remaining count at the current rate
    assert abs(p.eta_seconds - p.remaining * 60 / p.rate_per_minute) <= 2
    assert any(j["rate_per_minute"] > 0 and j["eta"] for _p, j in moving)

    # once the send ends: the live counters say it all, polling stops and the KPIs are computed
    d.refresh_from_db()
    final = delivery_progress(delivery=d)
    assert (final.processed, final.to_deliver, final.percent, final.eta) == (120, 120, 100, None)
    html = api.get(f"/deliveries/{d.pk}/kpis/").content.decode()
    assert "Finished sending" in html
    deadline = time.monotonic() + 30  # the recompute that covers the end (an earlier one may have read the logs before it)
    while time.monotonic() < deadline and not KpiSnapshot.objects.filter(
        pk=d.pk, computed_at__gte=d.finished_at, computing_since__isnull=True
    ).exists():
        time.sleep(0.2)
    snap = KpiSnapshot.objects.get(pk=d.pk)
    assert (snap.to_deliver, snap.delivered, snap.bounces, snap.hard_bounces) == (120, 114, 6, 6)
    html = api.get(f"/deliveries/{d.pk}/kpis/").content.decode()
    assert "hx-trigger" not in html and "95.0%" in html and "Computed at" in html  # delivered 114 / sent 120
