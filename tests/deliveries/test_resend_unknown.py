"""Resend unknown: an operator's choice (Start deliveries), named risk, journaled, page and API."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deliveries.models import Delivery, SendingLog, State
from deliveries.services import delivery_confirm, delivery_resend_unknown

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended_with_unknown(ready_delivery, marketer, smtp_server, django_capture_on_commit_callbacks):
    """A send that finished with two messages in an unknown state (the relay took their content
    and the connection was cut before its reply)."""
    smtp_server.drop_after_data("person1@example.com")
    smtp_server.drop_after_data("person3@example.com")
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=True):
        delivery_confirm(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED and SendingLog.objects.filter(delivery=d, status="unknown").count() == 2
    return d


def test_the_unknown_messages_go_once_more_and_the_journal_names_the_risk(
    ended_with_unknown, marketer, smtp_server, django_capture_on_commit_callbacks
):
    d = ended_with_unknown
    with django_capture_on_commit_callbacks(execute=True):
        delivery_resend_unknown(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.FINISHED and (d.sent_count, d.processed_count) == (5, 5)
    assert len(smtp_server.received_by("person1@example.com")) == 2  # the risk the dialog names
    assert len(smtp_server.received_by("person0@example.com")) == 1  # the others are not touched
    line = d.journal.get(text__startswith="Resend of 2 messages in an unknown state requested by Mia Marketer (marketer)")
    assert line.level == "warning" and "get it twice" in line.text
    ids = {m.message.get("Message-ID") for m in smtp_server.received_by("person1@example.com")}
    assert len(ids) == 2  # the second copy is told apart from the first


def test_only_start_deliveries_may_resend_and_only_what_is_unknown_within_the_validity(ended_with_unknown, preparer, ops, marketer):
    from django.core.exceptions import PermissionDenied

    from accounts.errors import DispatchError

    d = ended_with_unknown
    for user in (preparer, ops):
        with pytest.raises(PermissionDenied):
            delivery_resend_unknown(delivery=d, user=user)
    Delivery.objects.filter(pk=d.pk).update(started_at=timezone.now() - timedelta(days=4))
    with pytest.raises(DispatchError, match="The validity period of this send ended on .*Duplicate the message"):
        delivery_resend_unknown(delivery=d, user=marketer)
    assert SendingLog.objects.filter(delivery=d, status="unknown").count() == 2  # nothing changed


def test_the_page_offers_it_with_a_dialog_and_the_api_does_it(ended_with_unknown, marketer, ops, client, smtp_server):
    d = ended_with_unknown
    client.force_login(ops)  # supervisors watch, they do not resend
    assert 'data-testid="resend-unknown"' not in client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert "Resend unknown (2)" in page and 'id="resend-unknown-dialog"' in page
    assert "a recipient who did receive the first copy gets the message twice" in page
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(marketer)
    response = api.post(f"/api/deliveries/{d.pk}/resend-unknown/")
    assert response.status_code == 200 and response.json()["state"] in ("in_progress", "finished")
    again = api.post(f"/api/deliveries/{d.pk}/resend-unknown/")
    assert again.status_code == 409
    assert again.json() == {"detail": "No message of this send is in an unknown state: there is nothing to resend.", "code": "nothing_to_resend"}
