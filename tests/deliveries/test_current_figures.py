"""The message page and list show only the figures of the current preparation: not those of a
preparation an edit made obsolete, and no "To deliver" for a failed preparation."""

import re

import pytest
from django.urls import reverse

from deliveries.models import Delivery, State
from deliveries.services import delivery_prepare, delivery_prepare_run, delivery_update

pytestmark = pytest.mark.django_db


def _block(client, d) -> str:
    return client.get(reverse("deliveries:deployment-block", args=[d.pk]), HTTP_HX_REQUEST="true").content.decode()


def _list_cell(client, d) -> str:
    html = client.get(reverse("deliveries:list")).content.decode()
    row = re.search(rf'<tr data-id="{d.human_id}">(.*?)</tr>', html, re.S).group(1)
    return re.findall(r'<td class="num">(.*?)</td>', row, re.S)[0]


def test_an_edit_after_preparation_hides_the_obsolete_figures(client, marketer, ready_delivery):
    d = ready_delivery()
    client.force_login(marketer)
    assert 'data-testid="to-deliver">5<' in _block(client, d) and _list_cell(client, d).strip() == "5"

    delivery_update(delivery=d, user=marketer, data={"subject": "A new subject"})
    d.refresh_from_db()
    assert d.state == State.EDITING and (d.targeted_count, d.to_deliver_count) == (0, 0)
    block = _block(client, d)
    assert "Targeted" not in block and "To deliver" not in block
    assert "5" not in _list_cell(client, d)


def test_a_failed_preparation_shows_its_targeted_count_but_nothing_to_deliver(client, marketer, new_delivery):
    d = new_delivery(subject="")  # a critical check fails: no subject
    Delivery.objects.filter(pk=d.pk).update(state=State.PREPARING)
    delivery_prepare_run(delivery_id=d.pk)
    d.refresh_from_db()
    assert d.state == State.PREPARATION_FAILED
    client.force_login(marketer)
    block = _block(client, d)
    assert 'data-testid="targeted">5<' in block and "To deliver" not in block
    assert "5" not in _list_cell(client, d)


def test_a_new_preparation_starts_from_no_figures(client, marketer, ready_delivery, django_capture_on_commit_callbacks):
    d = ready_delivery()
    with django_capture_on_commit_callbacks(execute=False):
        delivery_prepare(delivery=d, user=marketer)
    d.refresh_from_db()
    assert d.state == State.PREPARING and (d.targeted_count, d.to_deliver_count) == (0, 0)
    client.force_login(marketer)
    assert "To deliver" not in _block(client, d)
