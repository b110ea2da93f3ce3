"""Counts with a noun read right in the singular on the message page: "(1 warning)", not "(1 warnings)"."""

import pytest
from django.urls import reverse

from deliveries.models import State
from deliveries.services import delivery_confirm, delivery_stop

from .conftest import make_audience, make_profiles

pytestmark = pytest.mark.django_db


def message_page(client, user, d) -> str:
    client.force_login(user)
    response = client.get(reverse("deliveries:detail", args=[d.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_one_warning_and_one_excluded_profile_are_singular(ready_delivery, marketer, client):
    audience = make_audience(make_profiles(["ann@example.com", "not-an-address", "bob@example.com"]))
    d = ready_delivery(html="<p>Hello</p>", audience=audience)  # no unsubscribe link: one warning
    assert d.state == State.READY and d.warnings_count == 1
    html = message_page(client, marketer, d)
    assert " s (1 warning).</td>" in html and "warnings)" not in html
    assert "1 profile excluded: Invalid address syntax." in html


def test_one_error_is_singular(ready_delivery, marketer, client):
    d = ready_delivery(subject="")  # the one critical check: the subject is empty
    assert d.state == State.PREPARATION_FAILED
    html = message_page(client, marketer, d)
    assert " s (1 error): correct it and prepare again." in html and "errors)" not in html


def test_plurals_stay_plural(ready_delivery, marketer, client, django_capture_on_commit_callbacks):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)
    delivery_stop(delivery=d, user=marketer)
    html = message_page(client, marketer, d)
    assert "Delivery stopped by Mia Marketer (marketer): 5 messages not sent were cancelled." in html
    assert " s (0 warnings).</td>" in html


def test_one_cancelled_message_is_singular(ready_delivery, marketer, client, django_capture_on_commit_callbacks):
    d = ready_delivery(audience=make_audience(make_profiles(["solo@example.com"])))
    with django_capture_on_commit_callbacks(execute=False):
        delivery_confirm(delivery=d, user=marketer)
    delivery_stop(delivery=d, user=marketer)
    html = message_page(client, marketer, d)
    assert "Delivery stopped by Mia Marketer (marketer): 1 message not sent was cancelled." in html
