"""A prepared message waiting for approvals says so (status, Deployment block, list, API) instead of
"Ready to be delivered" / "Confirm to start sending"."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from deliveries.services import delivery_approve

from .conftest import approval_category

pytestmark = pytest.mark.django_db


def test_the_words_follow_the_approvals_until_both_are_given(client, marketer, approver, ready_delivery):
    d = ready_delivery(category=approval_category())
    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert 'data-testid="state">Waiting for approval: content, target<' in page
    assert "Send preparation completed. Confirm to start sending." not in page and "Ready to be delivered" not in page
    assert "Waiting for approval: content, target" in client.get(reverse("deliveries:list")).content.decode()

    delivery_approve(delivery=d, user=approver, part="content")
    block = client.get(reverse("deliveries:deployment-block", args=[d.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "Waiting for approval: target" in block and "Confirm to start sending" not in block
    api = APIClient()
    api.force_authenticate(marketer)
    assert api.get(f"/api/deliveries/{d.pk}/").json()["state_label"] == "Waiting for approval: target"

    delivery_approve(delivery=d, user=approver, part="target")
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert 'data-testid="state">Ready to be delivered<' in page
    assert "Send preparation completed. Confirm to start sending." in page and "Waiting for approval" not in page


def test_a_message_without_approval_reads_ready(client, marketer, ready_delivery):
    d = ready_delivery()
    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert 'data-testid="state">Ready to be delivered<' in page and "Waiting for approval" not in page
