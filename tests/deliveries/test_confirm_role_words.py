"""Someone without Start deliveries is told which role Confirm send needs (page, API, banner), and
the banner shows only where Confirm send would be offered."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from deliveries.services import delivery_approve

from .conftest import approval_category

pytestmark = pytest.mark.django_db
NEEDS_ROLE = "Confirming a send needs the “Start deliveries” role. Ask an administrator."


def test_the_refusal_names_the_role_on_the_page_and_in_the_api(client, preparer, ready_delivery):
    d = ready_delivery()
    client.force_login(preparer)
    refused = client.post(reverse("deliveries:action", args=[d.pk, "confirm"]))
    assert refused.status_code == 403 and NEEDS_ROLE in refused.content.decode()
    api = APIClient()
    api.force_authenticate(preparer)
    response = api.post(f"/api/deliveries/{d.pk}/confirm/", {}, format="json")
    assert response.status_code == 403 and response.json() == {"detail": NEEDS_ROLE, "code": "permission_denied"}
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert f'data-testid="permission-banner">{NEEDS_ROLE}<' in page


def test_no_banner_on_a_draft_nor_for_an_approver_reviewing(client, preparer, approver, new_delivery, ready_delivery):
    draft = new_delivery()
    client.force_login(preparer)
    assert "permission-banner" not in client.get(reverse("deliveries:detail", args=[draft.pk])).content.decode()

    waiting = ready_delivery(category=approval_category())
    client.force_login(approver)
    page = client.get(reverse("deliveries:detail", args=[waiting.pk])).content.decode()
    assert "permission-banner" not in page and "Approve content" in page
    client.force_login(preparer)
    assert "permission-banner" not in client.get(reverse("deliveries:detail", args=[waiting.pk])).content.decode()

    delivery_approve(delivery=waiting, user=approver, part="content")
    delivery_approve(delivery=waiting, user=approver, part="target")
    assert "permission-banner" in client.get(reverse("deliveries:detail", args=[waiting.pk])).content.decode()
