"""The home page's "Waiting for you": messages to approve (approvers) and to confirm (Start deliveries)."""

import re

import pytest
from django.urls import reverse

from deliveries.models import Delivery
from deliveries.services import delivery_approve

from .conftest import approval_category

pytestmark = pytest.mark.django_db


def listed(client, testid):
    html = client.get(reverse("deliveries:waiting"), HTTP_HX_REQUEST="true").content.decode()
    table = re.search(rf'data-testid="{testid}".*?</table>', html, re.S)
    return re.findall(r'<span class="muted small">(DM\d+)</span>', table.group(0)) if table else []


def test_an_approver_sees_what_waits_for_approval_then_the_sender_sees_it_ready(client, marketer, approver, ready_delivery):
    waiting = ready_delivery(label="Needs approval", category=approval_category())
    no_approval = ready_delivery(label="Straight to send")
    changed = ready_delivery(label="Changed after preparation", category=approval_category())
    Delivery.objects.filter(pk=changed.pk).update(revision=changed.revision + 1)

    client.force_login(approver)
    assert listed(client, "to-approve") == [waiting.human_id]
    assert "content, target" in client.get(reverse("deliveries:waiting")).content.decode()
    assert "Ready to confirm" not in client.get(reverse("deliveries:waiting")).content.decode()  # not their role

    client.force_login(marketer)  # the author: prepares and confirms, does not approve
    assert listed(client, "to-confirm") == [no_approval.human_id]
    assert "Waiting for your approval" not in client.get(reverse("deliveries:waiting")).content.decode()

    delivery_approve(delivery=waiting, user=approver, part="content")
    delivery_approve(delivery=waiting, user=approver, part="target")
    assert listed(client, "to-confirm") == [waiting.human_id, no_approval.human_id]
    client.force_login(approver)
    assert listed(client, "to-approve") == []
    assert "Nothing waits for your approval." in client.get(reverse("deliveries:waiting")).content.decode()


def test_the_home_page_loads_the_waiting_part(client, approver):
    client.force_login(approver)
    html = client.get(reverse("home")).content.decode()
    assert f'hx-get="{reverse("deliveries:waiting")}"' in html
