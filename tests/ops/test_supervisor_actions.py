"""Delivery supervisors can pause and stop a send themselves (the message page, the deployment
dashboard, an alert, the API), journaled with who did it; Resume and Confirm stay with Start deliveries."""

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from rest_framework.test import APIClient

from deliveries.models import Delivery, JournalEntry, SendingLog, SendingStatus, State
from deliveries.services import delivery_confirm, delivery_pause, delivery_resume, delivery_stop
from ops.models import Alert, Criterion

pytestmark = pytest.mark.django_db


def sending(ready_delivery):
    d = ready_delivery()
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS)
    d.refresh_from_db()
    return d


def test_a_supervisor_pauses_and_stops_and_the_journal_names_them_but_cannot_resume(ops, ready_delivery):
    d = sending(ready_delivery)
    delivery_pause(delivery=d, user=ops)
    assert Delivery.objects.get(pk=d.pk).state == State.PAUSED
    assert JournalEntry.objects.filter(delivery=d, user=ops, text="Delivery paused by Omar Ops (ops).").exists()
    with pytest.raises(PermissionDenied, match="Resuming a send needs the “Start deliveries” role. Ask an administrator."):
        delivery_resume(delivery=d, user=ops)
    delivery_stop(delivery=d, user=ops)
    assert Delivery.objects.get(pk=d.pk).state == State.STOPPED
    assert SendingLog.objects.filter(delivery=d, status=SendingStatus.CANCELLED).count() == 5
    assert JournalEntry.objects.filter(delivery=d, user=ops, text__startswith="Delivery stopped by Omar Ops (ops):").exists()


def test_nobody_else_without_the_roles_may_pause_and_a_supervisor_cannot_confirm(ops, approver, ready_delivery):
    d = ready_delivery()
    with pytest.raises(PermissionDenied, match="Confirming a send needs the “Start deliveries” role"):
        delivery_confirm(delivery=d, user=ops)
    d = sending(ready_delivery)
    with pytest.raises(PermissionDenied, match="Pausing a send needs the “Start deliveries” or “Monitor deliveries” role"):
        delivery_pause(delivery=d, user=approver)
    with pytest.raises(PermissionDenied, match="Stopping a send needs"):
        delivery_stop(delivery=d, user=approver)
    assert Delivery.objects.get(pk=d.pk).state == State.IN_PROGRESS


def test_the_api_lets_a_supervisor_pause_and_stop_not_resume(ops, ready_delivery):
    d = sending(ready_delivery)
    api = APIClient()
    api.force_authenticate(ops)
    assert api.post(f"/api/deliveries/{d.pk}/pause/").json()["state"] == "paused"
    refused = api.post(f"/api/deliveries/{d.pk}/resume/")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Resuming a send needs the “Start deliveries” role. Ask an administrator.", "code": "permission_denied"}
    assert api.post(f"/api/deliveries/{d.pk}/stop/").json()["state"] == "stopped"


def test_the_message_page_offers_pause_and_stop_to_a_supervisor(client, ops, ready_delivery):
    d = sending(ready_delivery)
    client.force_login(ops)
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert f'action="/deliveries/{d.pk}/pause/"' in html and 'data-open-dialog="stop-dialog"' in html
    client.post(reverse("deliveries:action", args=[d.pk, "pause"]))
    html = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert f'action="/deliveries/{d.pk}/resume/"' not in html and 'data-open-dialog="stop-dialog"' in html


def test_the_dashboard_and_an_alert_offer_pause_and_stop_and_come_back(client, ops, ready_delivery, settings):
    d = sending(ready_delivery)
    Alert.objects.create(delivery=d, criterion=Criterion.BOUNCES, day=d.created_at.date(), raised_at=d.created_at, summary="Bounces at 30%.")
    client.force_login(ops)
    html = client.get(reverse("ops:dashboard")).content.decode()
    now_sending = re.search(r'data-testid="now-sending">.*?</table>', html, re.S).group(0)
    assert f'action="/deliveries/{d.pk}/pause/"' in now_sending and f'data-dialog-action="/deliveries/{d.pk}/stop/"' in now_sending
    alerts = re.search(r'data-testid="alerts">.*?</table>', html, re.S).group(0)
    assert f'data-dialog-action="/deliveries/{d.pk}/stop/"' in alerts
    assert 'id="stop-dialog"' in html and "data-dialog-form" in html
    page = client.get(reverse("ops:alerts")).content.decode()
    assert f'action="/deliveries/{d.pk}/pause/"' in page and 'id="stop-dialog"' in page

    response = client.post(reverse("deliveries:action", args=[d.pk, "pause"]), {"next": "/deployments/"})
    assert response.status_code == 302 and response.url == "/deployments/"
    response = client.post(reverse("deliveries:action", args=[d.pk, "stop"]), {"next": "https://evil.example.com/"})
    assert response.url == reverse("deliveries:detail", args=[d.pk])  # never off the site
    assert Delivery.objects.get(pk=d.pk).state == State.STOPPED
    assert JournalEntry.objects.filter(delivery=d, user=ops, text__startswith="Delivery stopped by Omar Ops (ops)").exists()


def test_the_alert_email_says_where_to_pause_or_stop(ops, ready_delivery, settings):
    from ops.services import alert_email

    d = sending(ready_delivery)
    alert = Alert.objects.create(delivery=d, criterion=Criterion.BOUNCES, day=d.created_at.date(), raised_at=d.created_at, summary="Bounces at 30%.")
    body = alert_email([alert], to="ops@example.com").body
    assert f"Pause or stop the send from the message: {settings.SITE_URL}/deliveries/{d.pk}/" in body
