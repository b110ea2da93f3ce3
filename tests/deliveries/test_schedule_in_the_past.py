"""A schedule in the past is refused at save (page and API); one whose time passed after it was saved
is refused at Confirm with a sentence saying so, and the dialog offers to send now."""

from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.errors import DispatchError
from deliveries.models import Delivery, State
from deliveries.services import delivery_confirm, delivery_update
from tests.deliveries.test_editor import form_data

pytestmark = pytest.mark.django_db
PAST = "The send time is in the past: choose a later time or Send once confirmed."


def test_the_editor_refuses_a_send_time_in_the_past_next_to_the_field(client, marketer, audience):
    client.force_login(marketer)
    response = client.post(
        reverse("deliveries:create"), form_data(audience, schedule="at", scheduled_at="2020-01-01T10:00", schedule_tz="UTC")
    )
    assert response.status_code == 400
    assert response.context["form"].errors["scheduled_at"] == [PAST]
    assert not Delivery.objects.filter(label="Autumn sale").exists()


def test_the_api_refuses_it_too_and_an_edit_into_the_past(marketer, new_delivery, audience):
    api = APIClient()
    api.force_authenticate(marketer)
    body = {"label": "API message", "sender_name": "Shop", "sender_address": "news@shop.example.com", "subject": "Hi",
            "html": "<p>Hi</p>", "audience": audience.pk, "schedule": "at", "scheduled_at": "2020-01-01T10:00:00Z"}  # fmt: skip
    created = api.post("/api/deliveries/", body, format="json")
    assert created.status_code == 400 and created.json()["detail"] == PAST and created.json()["code"] == "schedule_in_the_past"

    d = new_delivery(schedule="at", scheduled_at=timezone.now() + timedelta(days=1))
    with pytest.raises(DispatchError, match="The send time is in the past"):
        delivery_update(delivery=d, user=marketer, data={"scheduled_at": timezone.now() - timedelta(minutes=1)})
    assert Delivery.objects.get(pk=d.pk).scheduled_at > timezone.now()


def test_a_time_that_passed_after_preparation_is_refused_at_confirm_then_sent_now_on_request(
    client, ready_delivery, marketer, django_capture_on_commit_callbacks
):
    d = ready_delivery(schedule="at", scheduled_at=timezone.now() + timedelta(hours=1), schedule_tz="Europe/Paris")
    passed = timezone.now() - timedelta(minutes=5)
    Delivery.objects.filter(pk=d.pk).update(scheduled_at=passed)  # the hour went by before anyone confirmed
    d.refresh_from_db()

    with pytest.raises(DispatchError, match=r"The send time, .* \(Europe/Paris\), has passed: send now, or edit"):
        delivery_confirm(delivery=d, user=marketer)
    assert Delivery.objects.get(pk=d.pk).state == State.READY

    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "has passed. Send the messages now, or cancel and edit the message" in page
    assert 'name="send_now" value="1"' in page and "Send now" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("deliveries:action", args=[d.pk, "confirm"]), {"revision": d.revision, "send_now": "1"})
    assert response.status_code == 302
    d.refresh_from_db()
    assert d.state == State.FINISHED and len(mail.outbox) == 5
    assert d.journal.filter(text__startswith="The send time, ", text__contains="had passed: sent now at the request of Mia Marketer (marketer).").exists()


def test_the_api_says_the_time_passed_and_sends_now_when_asked(marketer, ready_delivery, django_capture_on_commit_callbacks):
    d = ready_delivery(schedule="at", scheduled_at=timezone.now() + timedelta(hours=1))
    Delivery.objects.filter(pk=d.pk).update(scheduled_at=timezone.now() - timedelta(minutes=1))
    api = APIClient()
    api.force_authenticate(marketer)
    refused = api.post(f"/api/deliveries/{d.pk}/confirm/", {}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "schedule_passed"
    with django_capture_on_commit_callbacks(execute=True):
        sent = api.post(f"/api/deliveries/{d.pk}/confirm/", {"send_now": True}, format="json")
    assert sent.status_code == 200 and sent.json()["state"] == "in_progress"
