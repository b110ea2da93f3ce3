"""A stopped send: the Deployment block says what became of the messages, and the KPI tiles keep
the real figures while the recompute that follows the stop has not run yet."""

import re

import pytest
from django.urls import reverse

from deliveries.models import Delivery, SendingLog, SendingStatus, State
from deliveries.services import delivery_confirm

pytestmark = pytest.mark.django_db


def tile(html: str, key: str) -> tuple[str, str]:
    """(value, sub) of the KPI tile `key` in the Deployment block's KPI partial."""
    found = re.search(
        rf'data-kpi="{key}"><div class="label">[^<]*</div><div class="value">([^<]*)</div>(?:<div class="sub">([^<]*)</div>)?', html
    )
    assert found, f"no {key} tile in {html}"
    return found.group(1), found.group(2) or ""


def test_a_stopped_send_says_how_many_were_sent_and_cancelled_and_its_tiles_keep_the_real_figures(
    ready_delivery, marketer, smtp_server, client, django_capture_on_commit_callbacks
):
    for i in (2, 3, 4):  # refused softly: they wait for a retry pass when Stop is clicked
        smtp_server.set_reply(f"person{i}@example.com", "451 4.3.0 Try again")
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False) as confirmed:
        delivery_confirm(delivery=d, user=marketer)
    with django_capture_on_commit_callbacks(execute=False):  # the retry pass never comes
        for callback in confirmed:
            callback()
    d.refresh_from_db()
    assert d.state == State.RETRY_PENDING and d.sent_count == 2

    client.force_login(marketer)
    with django_capture_on_commit_callbacks(execute=False) as recompute:  # the worker has not recomputed yet
        client.post(reverse("deliveries:action", args=[d.pk, "stop"]))
        block = client.get(reverse("deliveries:deployment-block", args=[d.pk])).content.decode()
        kpis = client.get(reverse("kpis:deployment-kpis", args=[d.pk]) + "?embed=1").content.decode()
    d.refresh_from_db()
    assert d.state == State.STOPPED

    assert "Stopped: 2 sent, 3 cancelled" in block
    assert "5 of 5 processed" not in block and "(100%)" not in block
    assert 'aria-valuenow="40"' in block and "width: 40%" in block  # 2 of 5 went out
    assert 'hx-trigger="every' not in block  # nothing in flight: the block stops refreshing

    # just after the stop, before the recompute: the real figures, not "To deliver 0, Sent 0"
    assert tile(kpis, "to_deliver") == ("5", "")
    assert tile(kpis, "sent") == ("2", "40.0%")
    assert tile(kpis, "delivered") == ("100.0%", "2")
    assert 'data-testid="tiles-live"' in kpis  # says where these figures come from

    for callback in recompute:
        callback()  # the worker recomputes the KPIs
    kpis = client.get(reverse("kpis:deployment-kpis", args=[d.pk]) + "?embed=1").content.decode()
    assert "Computed at" in kpis and "tiles-live" not in kpis
    assert tile(kpis, "to_deliver") == ("5", "") and tile(kpis, "sent") == ("2", "40.0%")


def test_a_stopped_send_of_thousands_of_messages_groups_its_figures(ready_delivery, marketer, client):
    """The report's figures: 3,969 to deliver, 200 sent when Stop was clicked (the send itself is
    written directly here: the first test sends for real)."""
    d = ready_delivery()
    SendingLog.objects.bulk_create(
        [SendingLog(delivery=d, address=f"more{i}@example.com", status=SendingStatus.PENDING) for i in range(3969 - 5)]
    )
    ids = list(SendingLog.objects.filter(delivery=d).order_by("id").values_list("id", flat=True)[:200])
    SendingLog.objects.filter(id__in=ids).update(status=SendingStatus.SENT)
    Delivery.objects.filter(pk=d.pk).update(state=State.IN_PROGRESS, to_deliver_count=3969, sent_count=200, processed_count=200)
    client.force_login(marketer)
    client.post(reverse("deliveries:action", args=[d.pk, "stop"]))
    block = client.get(reverse("deliveries:deployment-block", args=[d.pk])).content.decode()
    assert "Stopped: 200 sent, 3,769 cancelled" in block
    assert 'aria-valuenow="5"' in block and "3969 of 3969" not in block  # 200 of 3,969 went out
