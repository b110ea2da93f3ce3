"""A message never sent is deleted with everything it has; one whose send ended is archived (hidden
from the lists, kept for history and KPIs). Both from the page and the API, in the audit trail."""

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.errors import DispatchError
from accounts.models import RoleAuditLog
from deliveries.models import Delivery, ExclusionLog, JournalEntry, SendingLog, SendingStatus, State
from deliveries.services import delivery_archive, delivery_delete

pytestmark = pytest.mark.django_db


def ended(ready_delivery, **kw):
    d = ready_delivery(**kw)
    SendingLog.objects.filter(delivery=d).update(status=SendingStatus.SENT)
    Delivery.objects.filter(pk=d.pk).update(state=State.FINISHED, sent_count=5, processed_count=5)
    d.refresh_from_db()
    return d


def test_a_prepared_message_is_deleted_from_its_page_with_its_logs_and_the_audit_keeps_it(client, preparer, admin, ready_delivery):
    d = ready_delivery(label="Spring sale")
    client.force_login(preparer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert 'data-open-dialog="delete-dialog"' in page and f'action="/deliveries/{d.pk}/delete/"' in page
    response = client.post(reverse("deliveries:action", args=[d.pk, "delete"]))
    assert response.status_code == 302 and response.url == reverse("deliveries:list")
    assert not Delivery.objects.filter(pk=d.pk).exists()
    assert not SendingLog.objects.filter(delivery_id=d.pk).exists() and not JournalEntry.objects.filter(delivery_id=d.pk).exists()
    assert not ExclusionLog.objects.filter(delivery_id=d.pk).exists()
    entry = RoleAuditLog.objects.get(action=RoleAuditLog.Action.MESSAGE_DELETED)
    assert entry.actor == preparer and entry.summary == f"Message deleted: Spring sale (DM{d.pk})."
    client.force_login(admin)
    assert f"<td>Message deleted: Spring sale (DM{d.pk}).</td>" in client.get(reverse("users")).content.decode()


def test_an_ended_message_is_archived_hidden_from_lists_and_kept(client, marketer, ready_delivery):
    from kpis.services import kpis_compute

    d = ended(ready_delivery, label="Old news")
    kpis_compute(delivery_id=d.pk)
    with pytest.raises(DispatchError, match="A message that was sent is not deleted: archive it"):
        delivery_delete(delivery=d, user=marketer)
    client.force_login(marketer)
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert 'data-open-dialog="archive-dialog"' in page and "delete-dialog" not in page
    client.post(reverse("deliveries:action", args=[d.pk, "archive"]))
    d.refresh_from_db()
    assert d.archived_at is not None and d.archived_by == marketer
    assert JournalEntry.objects.filter(delivery=d, text="Message archived by Mia Marketer (marketer).").exists()
    assert RoleAuditLog.objects.filter(action=RoleAuditLog.Action.MESSAGE_ARCHIVED, actor=marketer, target=f"Old news (DM{d.pk})").exists()
    listing = client.get(reverse("deliveries:list")).content.decode()
    assert f'data-id="{d.human_id}"' not in listing and re.search(r'data-status="archived">Archived 1</a>', listing)
    assert f'data-id="{d.human_id}"' in client.get(reverse("deliveries:list") + "?archived=1").content.decode()
    # kept: its page (saying it is archived), its logs, its KPIs
    page = client.get(reverse("deliveries:detail", args=[d.pk])).content.decode()
    assert 'data-testid="archived"' in page and "archive-dialog" not in page
    assert SendingLog.objects.filter(delivery=d).count() == 5 and d.kpis.delivered == 5


def test_archiving_needs_both_roles_and_a_running_send_is_neither_deleted_nor_archived(preparer, marketer, ops, ready_delivery):
    d = ended(ready_delivery)
    for who in (preparer, ops):
        with pytest.raises(PermissionDenied, match="Archiving a sent message needs the “Prepare deliveries” and “Start deliveries” roles"):
            delivery_archive(delivery=d, user=who)
    running = ready_delivery()
    Delivery.objects.filter(pk=running.pk).update(state=State.IN_PROGRESS)
    with pytest.raises(DispatchError, match="You cannot delete this message while it is “In progress”: stop its send first"):
        delivery_delete(delivery=running, user=marketer)
    with pytest.raises(DispatchError, match="Only a message whose send ended can be archived"):
        delivery_archive(delivery=running, user=marketer)
    assert Delivery.objects.filter(pk=running.pk, archived_at__isnull=True).exists()


def test_the_api_deletes_a_draft_archives_an_ended_send_and_refuses_a_running_one(marketer, new_delivery, ready_delivery):
    api = APIClient()
    api.force_authenticate(marketer)
    draft = new_delivery()
    assert api.delete(f"/api/deliveries/{draft.pk}/").status_code == 204
    assert not Delivery.objects.filter(pk=draft.pk).exists()
    assert RoleAuditLog.objects.get(action=RoleAuditLog.Action.MESSAGE_DELETED).source == "api"

    done = ended(ready_delivery)
    response = api.delete(f"/api/deliveries/{done.pk}/")
    assert response.status_code == 200 and response.json()["archived_at"] and response.json()["archived_by"] == marketer.pk
    listed = [m["id"] for m in api.get("/api/deliveries/").json()["results"]]
    assert done.pk not in listed and [m["id"] for m in api.get("/api/deliveries/?archived=1").json()["results"]] == [done.pk]

    running = ready_delivery()
    Delivery.objects.filter(pk=running.pk).update(state=State.PAUSED)
    refused = api.delete(f"/api/deliveries/{running.pk}/")
    assert refused.status_code == 409 and refused.json()["code"] == "invalid_state"
    assert "stop its send first" in refused.json()["detail"]
